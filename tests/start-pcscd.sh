#!/usr/bin/env bash
# pcscd with vsmartcard's vpcd reader driver (from /etc/reader.conf.d/vpcd), which listens for
# virtual cards on loopback port 35963, for the NFC tests. Started once and left running.
#
# Under systemd, Debian's pcscd is socket-activated with --auto-exit: it quits a minute after
# its last client and takes the vpcd reader with it, so a card held to it can vanish between
# two tests. The tests want a pcscd that stays, so a socket-activated one is stopped first.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

vpcd_listening() { grep -qE '^ *[0-9]+: [0-9A-F]+:8C7B [0-9A-F]+:[0-9A-F]+ 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; }

if [ -d /run/systemd/system ] && systemctl is-enabled --quiet pcscd.socket 2>/dev/null; then
  $SUDO systemctl stop pcscd.socket pcscd.service 2>/dev/null || true
fi
if command -v pgrep >/dev/null && pgrep -f -- 'pcscd.*--auto-exit' >/dev/null; then
  $SUDO pkill -f -- 'pcscd.*--auto-exit' || true
  for _ in $(seq 50); do vpcd_listening || break; sleep 0.1; done
fi
if ! vpcd_listening; then
  $SUDO sh -c 'pcscd --foreground >/tmp/keyward-pcscd.log 2>&1 &'
  for _ in $(seq 50); do
    vpcd_listening && exit 0
    sleep 0.1
  done
  echo "pcscd did not start its vpcd reader; see /tmp/keyward-pcscd.log" >&2
  exit 1
fi
