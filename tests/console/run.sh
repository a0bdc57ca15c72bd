#!/usr/bin/env bash
# Browser tests of the console: `samgate init` + `samgate serve` in a temp
# dir, then console.test.mjs (playwright-core + Debian's Chromium, axe-core).
# Usage: tests/console/run.sh [path/to/samgate]   (default: target/debug/samgate)
# SCREENSHOTS=docs/console (the default) keeps the page screenshots.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/target/debug/samgate}"
[ -x "$bin" ] || { echo "no samgate binary at $bin (cargo build first)" >&2; exit 2; }
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "Chromium is missing (apt-get install -y chromium)" >&2; exit 2; }
[ -d "$here/node_modules/playwright-core" ] || (cd "$here" && npm ci --no-audit --no-fund)

tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
inbox="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$bin" init --dir "$tmp/gw" --listen "127.0.0.1:$port" >/dev/null
# fk's inbox on a free port (the other recipients stay unreachable).
python3 - "$tmp/gw/samgate.toml" "$inbox" <<'PY'
import sys, tomllib
path, port = sys.argv[1:]
text = open(path).read()
old = next(p for p in tomllib.loads(text)["party"] if p["id"] == "fk")["endpoint"]
assert text.count(f'"{old}"') == 1, old
open(path, "w").write(text.replace(f'"{old}"', f'"https://127.0.0.1:{port}/inbox"'))
PY
node "$here/recipient.mjs" "$tmp/gw" "$inbox" &
rpid=$!
"$bin" serve --config "$tmp/gw/samgate.toml" >"$tmp/gateway.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" "$rpid" 2>/dev/null || true
  wait "$pid" "$rpid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
pki="$tmp/gw/pki"
for _ in $(seq 1 100); do
  if curl -fsS --cert "$pki/af.pem" --key "$pki/af.key" --cacert "$pki/ca.pem" \
      "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/gateway.log" >&2; exit 1; }
  sleep 0.2
done
shots="${SCREENSHOTS-$root/docs/console}"
[ -z "$shots" ] || mkdir -p "$shots"
SAMGATE_DIR="$tmp/gw" SAMGATE_URL="https://127.0.0.1:$port" SAMGATE_LOG="$tmp/gateway.log" \
  SCREENSHOTS="$shots" node "$here/console.test.mjs"
