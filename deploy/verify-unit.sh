#!/usr/bin/env bash
# Checks deploy/samgate.service with systemd's own tools, as installed.
#
# `systemd-analyze verify` also checks that ExecStart's binary exists and is
# executable. Rather than pretend (or install into the host's /usr/local),
# the unit is verified inside a scratch root that holds exactly what the
# unit names: the samgate binary under test at the ExecStart path, the
# ExecReload tool, and the host's systemd units (sysinit.target & co.).
# Any message from verify fails the check (it reports unknown or misspelled
# keys as warnings with exit code 0), and `systemd-analyze security
# --offline` must rate the unit's exposure at 2.0 or lower ("OK").
#
#   deploy/verify-unit.sh [path/to/samgate]      # default target/debug/samgate
set -euo pipefail
cd "$(dirname "$0")/.."
UNIT=deploy/samgate.service
BIN=${1:-target/debug/samgate}
command -v systemd-analyze >/dev/null || { echo "FAIL: systemd-analyze is not installed" >&2; exit 1; }
[[ -x $BIN ]] || { echo "FAIL: no samgate binary at $BIN (build it first)" >&2; exit 1; }

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/samgate-unit.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
exec_path() { sed -n "s/^$1=\([^ ]*\).*/\1/p" "$UNIT" | head -n1; }
START=$(exec_path ExecStart)
RELOAD=$(exec_path ExecReload)
mkdir -p "$ROOT/etc/systemd/system" "$ROOT/usr/lib/systemd" "$ROOT$(dirname "$START")" "$ROOT$(dirname "$RELOAD")"
cp -a /usr/lib/systemd/system "$ROOT/usr/lib/systemd/"
cp "$BIN" "$ROOT$START"
cp "$(type -P "$(basename "$RELOAD")")" "$ROOT$RELOAD"

verify() { # UNIT-FILE -> the messages of systemd-analyze verify; fails on a non-zero exit
  cp "$1" "$ROOT/etc/systemd/system/samgate.service"
  systemd-analyze --root="$ROOT" verify "$ROOT/etc/systemd/system/samgate.service" 2>&1
}

# The check must be able to fail: a misspelled key has to be reported.
sed 's/^ProtectSystem=/ProtectSytem=/' "$UNIT" >"$ROOT/typo.service"
grep -q "ProtectSytem" <<<"$(verify "$ROOT/typo.service" || true)" ||
  { echo "FAIL: systemd-analyze verify did not report a misspelled key; the check is void" >&2; exit 1; }

if ! out=$(verify "$UNIT"); then
  echo "FAIL: systemd-analyze verify $UNIT:" >&2; echo "$out" >&2; exit 1
fi
if [[ -n $out ]]; then
  echo "FAIL: systemd-analyze verify $UNIT reported:" >&2; echo "$out" >&2; exit 1
fi
echo "  ok  systemd-analyze verify $UNIT (ExecStart $START is the binary under test)"

if ! systemd-analyze security --offline=true --threshold=20 --root="$ROOT" \
  "$ROOT/etc/systemd/system/samgate.service" >"$ROOT/security.txt" 2>&1; then
  echo "FAIL: systemd-analyze security rates $UNIT above 2.0:" >&2; cat "$ROOT/security.txt" >&2; exit 1
fi
echo "  ok  systemd-analyze security: $(grep -o 'Overall exposure level.*' "$ROOT/security.txt")"
