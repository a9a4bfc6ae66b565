#!/usr/bin/env bash
# Runs the desktop end-to-end test: builds the UI and the app with its real assets, then runs
# the app in a real WebKit window under Xvfb, driven by tauri-driver + WebKitWebDriver, on a
# private D-Bus session bus whose notification service records what it is asked to show.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

command -v tauri-driver >/dev/null || cargo install tauri-driver --version '^2' --locked
# With an argument (a script), runs that under the same harness instead of the tests:
# `./dev bench` uses it for the start-up and memory benchmark, on a release build.
script=${1:-}
(cd ui && npm run build)
if [ -n "$script" ]; then
  cargo build --release --features custom-protocol -p keyward-desktop -p keyward-bench
elif [ -z "${KEYWARD_E2E_PREBUILT:-}" ]; then
  # (`./dev test` sets KEYWARD_E2E_PREBUILT: its `cargo test` built these, with the real assets.)
  cargo build --features custom-protocol -p keyward-desktop -p keyward-cli -p keyward-fido-virt -p keyward-server
fi
export KEYWARD_E2E_SCRIPT=$script
# The tests take screenshots, which hang in WebKitWebDriver when the app turns compositing off
# (src-tauri/lib.rs); the benchmark measures the app as shipped.
[ -n "$script" ] || export KEYWARD_WEBKIT_COMPOSITING=on

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export KEYWARD_DATA_DIR="$work/app-data"
export NOTIFY_LOG="$work/notifications.jsonl"
export NO_AT_BRIDGE=1
# The tests start the app through this, so its own log (a web process that died, and why) is
# kept and shown when a test fails: WebKitWebDriver discards the app's output.
if [ -z "$script" ]; then
  printf '#!/bin/sh\nexec "%s" "$@" >>"%s" 2>&1\n' "$root/target/debug/keyward-desktop" "$KEYWARD_DATA_DIR.app.log" >"$work/app.sh"
  chmod +x "$work/app.sh"
  export KEYWARD_APP="$work/app.sh"
fi

# A security key on the NFC reader for the tests: pcscd with vsmartcard's vpcd reader, and a
# virtual card (Nitrokey's fido-authenticator, PIN 4321) held to it.
if [ -z "$script" ] && [ -e /usr/lib/pcsc/drivers/serial/libifdvpcd.so ]; then
  tests/start-pcscd.sh
  target/debug/virtual-nfc-key --pin 4321 >"$work/nfc-key.log" 2>&1 &
  export KEYWARD_E2E_NFC_PIN=4321
fi

display=:$((90 + RANDOM % 9))
Xvfb "$display" -screen 0 1280x900x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
export DISPLAY=$display
for _ in $(seq 50); do xdpyinfo -display "$display" >/dev/null 2>&1 && break; sleep 0.1; done

dbus-run-session -- bash -c '
  set -euo pipefail
  trap "kill \$(jobs -p) 2>/dev/null || true" EXIT
  # A real Secret Service for the session token, with its keyrings in the scratch folder.
  export XDG_DATA_HOME="$KEYWARD_DATA_DIR.xdg"; mkdir -p "$XDG_DATA_HOME"
  if command -v gnome-keyring-daemon >/dev/null; then
    eval "$(printf keyward-e2e | gnome-keyring-daemon --unlock --components=secrets)"
    export KEYWARD_E2E_SECRET_SERVICE=1
  fi
  python3 tests/e2e/notifications.py "$NOTIFY_LOG" >"$KEYWARD_DATA_DIR.notify.log" 2>&1 &
  port=$((4400 + RANDOM % 500))
  # Its WebKitWebDriver gets a port of its own too (the default, 4445, may be taken).
  tauri-driver --port "$port" --native-port $((port + 1000)) >"$KEYWARD_DATA_DIR.driver.log" 2>&1 &
  for _ in $(seq 100); do curl -s "http://127.0.0.1:$port/status" >/dev/null && break; sleep 0.1; done
  if [ -n "$KEYWARD_E2E_SCRIPT" ]; then
    WEBDRIVER_URL="http://127.0.0.1:$port" node "$KEYWARD_E2E_SCRIPT"
    exit
  fi
  WEBDRIVER_URL="http://127.0.0.1:$port" node --test tests/e2e/ || { echo "--- tauri-driver log"; tail -50 "$KEYWARD_DATA_DIR.driver.log"; echo "--- the app log"; tail -60 "$KEYWARD_DATA_DIR.app.log" 2>/dev/null; echo "--- notifications"; cat "$KEYWARD_DATA_DIR.notify.log"; exit 1; }
'
[ -n "$script" ] || echo "screenshots: $root/target/screenshots"
