#!/usr/bin/env bash
# Installs the packages packaging/build.sh made, uses them as an operator and a person would,
# and removes them again (`./dev test` runs it; it needs root or sudo, and installs system-wide):
#
#   keywardd's .deb   dpkg -i; its user, state folder, conffile and unit are there; the unit
#                     passes `systemd-analyze verify` (and `security` is reported);
#                     check-config accepts the shipped config. Where systemd is the running
#                     init the service is started by systemctl; otherwise the binary is started
#                     as the unit says (its user, umask, working folder, ExecStartPre, ExecStart,
#                     no new privileges, no capabilities). Then real requests: /healthz, the
#                     web UI, and a sign-up and a sign-in with the `keyward` command line's
#                     virtual key; the database and log key are the service user's, owner-only.
#                     dpkg -r keeps the config and the accounts, --purge removes both, and
#                     nothing of the service's user is left running.
#   the desktop .deb  dpkg -i (apt-get -f for what it depends on, if missing), the installed
#                     binary started under Xvfb paints its first screen (a screenshot, checked
#                     not blank, kept in target/screenshots/), dpkg -r removes it.
#   the desktop .rpm  its payload holds the same binary and desktop entry (rpm2cpio).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
out=$target/packages
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
shots=$root/target/screenshots
mkdir -p "$shots"

fail() {
  echo "packages: FAILED: $*" >&2
  exit 1
}
step() { echo "-- $*"; }

deb=$(ls "$out"/keywardd_*.deb)
app_deb=$(ls "$out"/Keyward_*.deb)
app_rpm=$(ls "$out"/Keyward-*.rpm 2>/dev/null || ls "$out"/*.rpm)
cli=$target/debug/keyward
[ -x "$cli" ] || fail "$cli is not built (cargo build -p keyward-cli)"

# Never touch a real installation: this test purges what it installs.
for p in keywardd "$(dpkg-deb -f "$app_deb" Package)"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    fail "$p is installed on this machine; the test would purge it (and its accounts): remove it first"
  fi
done

work=$(mktemp -d)
chmod 0755 "$work"
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || $SUDO kill "$server_pid" 2>/dev/null || true
  kill $(jobs -p) 2>/dev/null || true
  $SUDO dpkg --purge keywardd >/dev/null 2>&1 || true
  $SUDO dpkg --purge "$(dpkg-deb -f "$app_deb" Package)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# ---- keywardd ------------------------------------------------------------------------------
step "dpkg -i $(basename "$deb")"
$SUDO dpkg -i "$deb" >/dev/null
unit=/lib/systemd/system/keywardd.service
conf=/etc/keyward/keywardd.toml
for f in /usr/bin/keywardd "$conf" "$unit" /usr/share/doc/keywardd/copyright \
  /usr/share/keyward/web-ui/index.html; do
  [ -f "$f" ] || fail "$f is not installed"
done
dpkg-query -W -f='${Conffiles}\n' keywardd | grep -q " $conf " || fail "$conf is not a conffile"
getent passwd keyward >/dev/null || fail "postinst made no keyward user"
[ "$(stat -c '%U:%G %a' /var/lib/keyward)" = "keyward:keyward 700" ] ||
  fail "/var/lib/keyward is $(stat -c '%U:%G %a' /var/lib/keyward), not keyward's, 0700"
[ -L /etc/systemd/system/multi-user.target.wants/keywardd.service ] ||
  fail "postinst did not enable keywardd.service"

step "systemd-analyze verify $unit"
systemd-analyze verify "$unit" || fail "systemd-analyze verify refuses the unit"
if score=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null | tail -1); then
  echo "   systemd-analyze security: ${score#→ }"
fi

# A line of the unit ([Service] keys are unique in it but for SystemCallFilter).
unit_key() { sed -n "s/^$1=//p" "$unit" | head -1; }
user=$(unit_key User)
as_unit=(setpriv --reuid="$user" --regid="$(unit_key Group)" --init-groups --no-new-privs
  --bounding-set=-all --inh-caps=-all)
# MemoryDenyWriteExecute=yes as newer systemd applies it: prctl(PR_SET_MDWE,
# PR_MDWE_REFUSE_EXEC_GAIN), kept across exec, where the kernel has it (Linux 6.3 and later).
mdwe='import ctypes, os, sys
if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0: sys.exit(3)
os.execvp(sys.argv[1], sys.argv[1:])'
if grep -qx 'MemoryDenyWriteExecute=yes' "$unit" && /usr/bin/python3 -c "${mdwe%%os.execvp*}"; then
  as_unit+=(/usr/bin/python3 -c "$mdwe")
  echo "   keywardd runs with memory writable or executable, never both (PR_SET_MDWE)"
else
  echo "   (this kernel has no PR_SET_MDWE: MemoryDenyWriteExecute is left to systemd)"
fi

step "keywardd check-config, as $user"
(cd "$(unit_key WorkingDirectory)" && $SUDO "${as_unit[@]}" keywardd --config "$conf" check-config) ||
  fail "check-config refuses the shipped $conf"

if [ -d /run/systemd/system ]; then
  step "systemd runs here: postinst started keywardd.service"
  systemctl is-active --quiet keywardd.service || $SUDO systemctl start keywardd.service
else
  step "no systemd as init here: starting keywardd as the unit would"
  if curl -s -o /dev/null http://127.0.0.1:8443/healthz; then
    fail "something already listens on 127.0.0.1:8443, the shipped config's address"
  fi
  # Its ExecStartPre= and ExecStart=, with its user, umask and working folder.
  umask_=$(unit_key UMask)
  pre=$(unit_key ExecStartPre)
  start=$(unit_key ExecStart)
  # shellcheck disable=SC2086 # the unit's command lines, split as systemd splits plain words
  (cd "$(unit_key WorkingDirectory)" && umask "$umask_" && $SUDO "${as_unit[@]}" $pre >/dev/null) ||
    fail "the unit's ExecStartPre ($pre) fails"
  # shellcheck disable=SC2086
  (cd "$(unit_key WorkingDirectory)" && umask "$umask_" && exec $SUDO "${as_unit[@]}" $start) \
    >"$work/keywardd.log" 2>&1 &
  server_pid=$!
fi
for _ in $(seq 300); do
  curl -sf -o /dev/null http://127.0.0.1:8443/healthz && break
  [ -z "$server_pid" ] || kill -0 "$server_pid" 2>/dev/null || { cat "$work/keywardd.log" >&2; fail "keywardd exited"; }
  sleep 0.1
done
curl -sf http://127.0.0.1:8443/healthz >/dev/null || fail "keywardd does not answer /healthz"
pgrep -u "$user" -x keywardd >/dev/null || fail "keywardd does not run as $user"

step "requests: the server's settings, the web UI, a sign-up and a sign-in"
curl -sf http://localhost:8443/api/v1/server | grep -q '"localhost"' || fail "/api/v1/server does not name the RP ID"
curl -sf http://localhost:8443/ | grep -qi '<!doctype html' || fail "the web UI is not served at /"
key=$work/virtual-key.json
"$cli" --server http://localhost:8443 sign-up packaged-ada --key-file "$key" >"$work/sign-up.json" ||
  fail "sign-up against the installed keywardd"
"$cli" --server http://localhost:8443 sign-in --key-file "$key" >"$work/sign-in.json" ||
  fail "sign-in against the installed keywardd"
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$work/sign-in.json")
KEYWARD_TOKEN=$token "$cli" --server http://localhost:8443 account | grep -q packaged-ada ||
  fail "the signed-in session is not packaged-ada's"
for f in /var/lib/keyward/keyward.db /var/lib/keyward/keyward.db.log-key; do
  [ "$(stat -c '%U %a' "$f")" = "$user 600" ] || fail "$f is $(stat -c '%U %a' "$f"), not $user's, 0600"
done

step "dpkg -r keywardd keeps the config and the accounts; --purge removes them"
if [ -n "$server_pid" ]; then
  $SUDO kill -TERM "$server_pid"
  wait "$server_pid" || true
  server_pid=""
fi
$SUDO dpkg -r keywardd >/dev/null
[ ! -e /usr/bin/keywardd ] || fail "dpkg -r left /usr/bin/keywardd"
if [ -d /run/systemd/system ] && systemctl is-active --quiet keywardd.service; then
  fail "keywardd.service still runs after dpkg -r"
fi
[ -f "$conf" ] && [ -f /var/lib/keyward/keyward.db ] || fail "dpkg -r removed the config or the accounts"
$SUDO dpkg --purge keywardd >/dev/null
[ ! -e /etc/keyward ] && [ ! -e /var/lib/keyward ] || fail "dpkg --purge left /etc/keyward or /var/lib/keyward"
[ ! -e /etc/systemd/system/multi-user.target.wants/keywardd.service ] || fail "purge left the unit enabled"
! pgrep -u "$user" >/dev/null || fail "a process of $user still runs after purge"

# ---- the desktop app -----------------------------------------------------------------------
app=$(dpkg-deb -f "$app_deb" Package)
step "dpkg -i $(basename "$app_deb") (Depends: $(dpkg-deb -f "$app_deb" Depends))"
$SUDO dpkg -i "$app_deb" >/dev/null 2>"$work/dpkg.err" || {
  # What it depends on, from the archive, then configured.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -f -y -qq >/dev/null
}
dpkg-query -W -f='${Status}' "$app" | grep -q "ok installed" || { cat "$work/dpkg.err" >&2; fail "$app did not install"; }
app_bin=$(dpkg -L "$app" | grep '^/usr/bin/' | head -1)
[ -x "$app_bin" ] || fail "$app installs no program in /usr/bin"
dpkg -L "$app" | grep -q '\.desktop$' || fail "$app installs no desktop entry"

step "the .rpm holds the same program and desktop entry"
# (Debian's rpm2cpio 4.18 exits 1 after writing all of a Tauri .rpm's payload: the files are
# what is checked.)
mkdir "$work/rpm"
{ rpm2cpio "$app_rpm" || true; } | (cd "$work/rpm" && cpio -idm --quiet)
[ -x "$work/rpm$app_bin" ] || fail "the .rpm has no $app_bin"
ls "$work"/rpm/usr/share/applications/*.desktop >/dev/null || fail "the .rpm has no desktop entry"

step "$app_bin under Xvfb paints its first screen"
display=:$((80 + RANDOM % 9))
Xvfb "$display" -screen 0 1280x900x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
for _ in $(seq 50); do xdpyinfo -display "$display" >/dev/null 2>&1 && break; sleep 0.1; done
export DISPLAY=$display NO_AT_BRIDGE=1 KEYWARD_DATA_DIR=$work/app-data APP_BIN=$app_bin WORK=$work
shot=$shots/package-desktop-first-screen.png
export SHOT=$shot
# A session bus with a Secret Service (where the app keeps its session token), as a desktop has.
dbus-run-session -- bash -c '
  set -euo pipefail
  export XDG_DATA_HOME=$WORK/xdg; mkdir -p "$XDG_DATA_HOME"
  if command -v gnome-keyring-daemon >/dev/null; then
    eval "$(printf keyward-pkg | gnome-keyring-daemon --unlock --components=secrets)"
  fi
  "$APP_BIN" >"$WORK/app.log" 2>&1 &
  app=$!
  # Painted: the Keyward window is mapped and the screen holds the UI text and colours,
  # not one or two flat colours of an empty window (checked each second, up to two minutes).
  colours=0
  for _ in $(seq 120); do
    kill -0 $app 2>/dev/null || { cat "$WORK/app.log" >&2; exit 1; }
    if xwininfo -root -tree | grep -q "\"Keyward\""; then
      import -window root "$SHOT"
      colours=$(identify -format %k "$SHOT")
      [ "$colours" -gt 400 ] && break
    fi
    sleep 1
  done
  kill $app
  wait $app || true
  echo "   first screen: $colours colours, $SHOT"
  [ "$colours" -gt 400 ]
' || { tail -20 "$work/app.log" >&2; fail "the installed desktop app painted no first screen"; }

step "dpkg -r $app"
$SUDO dpkg -r "$app" >/dev/null
[ ! -e "$app_bin" ] || fail "dpkg -r left $app_bin"
echo "packages: all fine"
