#!/usr/bin/env python3
"""Writes keywardd's debian/copyright (machine-readable format 1.0) to stdout: Keyward's own
licence, then every crate statically linked into keywardd (its normal dependencies on this
platform, from Cargo.lock via `cargo metadata`) with the licence its manifest declares."""

import json
import subprocess
import sys

ROOT_PACKAGE = "keyward-server"


def linked_crates(metadata):
    """The packages keywardd's binary links: normal (not dev, not build) dependencies, walked
    from keyward-server through the resolved graph."""
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    start = next(p["id"] for p in metadata["packages"] if p["name"] == ROOT_PACKAGE)
    seen, todo = set(), [start]
    while todo:
        node = nodes[todo.pop()]
        for dep in node["deps"]:
            if any(k["kind"] is None for k in dep["dep_kinds"]) and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
    return sorted(
        (packages[i] for i in seen if packages[i]["source"] is not None),
        key=lambda p: (p["name"], p["version"]),
    )


def main():
    triple = subprocess.run(
        ["rustc", "-vV"], check=True, capture_output=True, text=True
    ).stdout
    host = next(l.split(": ")[1] for l in triple.splitlines() if l.startswith("host: "))
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--locked", "--format-version", "1",
             "--filter-platform", host],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    out = sys.stdout
    out.write(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: keyward\n\n"
        "Files: *\n"
        "Copyright: the Keyward developers\n"
        "License: Apache-2.0\n\n"
        "Files: usr/share/keyward/web-ui/*\n"
        "Copyright: the Keyward developers, and the authors of the npm packages it bundles\n"
        "License: Apache-2.0 and MIT\n"
        "Comment: the built Svelte UI (ui/ in the source); its bundled packages are listed\n"
        " in ui/package-lock.json with their licences.\n\n"
    )
    crates = linked_crates(metadata)
    out.write(
        "Files: usr/bin/keywardd\n"
        "Copyright: the Keyward developers, and the authors of the Rust crates below\n"
        "License: Apache-2.0 and the licences below\n"
        "Comment: keywardd links these crates statically (name version: licence as its\n"
        " manifest declares it; SQLite, bundled by libsqlite3-sys, is in the public domain):\n"
    )
    for p in crates:
        licence = p["license"] or "see the crate's licence file"
        out.write(f" {p['name']} {p['version']}: {licence}\n")
    out.write("\n")
    out.write(
        "License: Apache-2.0\n"
        " On Debian systems the full text of the Apache License 2.0 is in\n"
        " /usr/share/common-licenses/Apache-2.0.\n"
    )


if __name__ == "__main__":
    main()
