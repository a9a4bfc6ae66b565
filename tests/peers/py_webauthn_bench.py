"""py_webauthn verifying the benchmark's assertions (one core).

Prints one JSON line: {"library", "version", "verified", "per_second"}.
"""
import base64
import json
import sys
import time
from importlib.metadata import version

from webauthn import verify_authentication_response


def b64u(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


fixture = json.load(open(sys.argv[1]))
public_key = b64u(fixture["public_key_cose"])


def verify_all():
    ok = 0
    for a in fixture["assertions"]:
        verify_authentication_response(
            credential=a["response"],
            expected_challenge=b64u(a["challenge"]),
            expected_rp_id=fixture["rp_id"],
            expected_origin=fixture["origin"],
            credential_public_key=public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )
        ok += 1
    return ok


verify_all()
start = time.perf_counter()
verified = verify_all()
seconds = time.perf_counter() - start
print(json.dumps({
    "library": "py_webauthn (CPython %d.%d)" % sys.version_info[:2],
    "version": version("webauthn"),
    "verified": verified,
    "per_second": len(fixture["assertions"]) / seconds,
}))
