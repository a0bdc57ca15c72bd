#!/usr/bin/env bash
# The recipient kit against a live gateway (docs/recipients.md).
#
# `samgate init` in a temporary directory; the Python recipient serves
# sfk-kalmar and the Java recipient region-kalmar, each with the
# pki/<party>-server.pem/.key that init wrote and fetching the delivery key
# from GET /v1/keys with pki/<party>.pem; `samgate serve`; a consent signed
# with `samgate consent sign` and recorded with curl as the intake party; then
# sync and async exchanges to both. It checks that each recipient received,
# verified and answered (the reply comes back through the reverse route),
# that a redelivery of the same exchange_id is answered as before and not
# processed again, and that a tampered body, a message for another party
# and a mismatched Samgate-Exchange-Id are refused, live and offline.
#
#   examples/run-kit-test.sh [path/to/samgate]     # default target/debug/samgate
#   KEEP=1 examples/run-kit-test.sh                # keep the working directory
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# How `samgate consent sign` is given the personnummer: `file` (--subject-file -,
# on standard input, so the number is never in argv), `arg` (--subject PNR, the
# older form), or `auto`: `file` when the binary's --help offers it.
CONSENT_SUBJECT=${CONSENT_SUBJECT:-auto}

SAMGATE=${1:-${SAMGATE:-target/debug/samgate}}
if [[ ! -x $SAMGATE ]]; then
  echo "== building samgate (no binary at $SAMGATE)"
  cargo build --locked --quiet
  SAMGATE=target/debug/samgate
fi
SAMGATE=$(cd "$(dirname "$SAMGATE")" && pwd)/$(basename "$SAMGATE")
for tool in curl python3 java; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed" >&2; exit 1; }
done
python3 -c 'import cryptography' || { echo "FAIL: python3 lacks the cryptography package" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/samgate-kit.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $rc -ne 0 ]]; then
    for log in "$WORK"/*.log; do
      [[ -f $log ]] || continue
      echo "--- $(basename "$log") (last 30 lines)" >&2
      tail -n 30 "$log" >&2
    done
  fi
  if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "  ok  $*"; }
wait_for_file() { # FILE SECONDS WHAT
  for _ in $(seq 1 $(($2 * 10))); do [[ -s $1 ]] && return 0; sleep 0.1; done
  fail "$3 did not start within $2 s"
}

echo "== self-tests against the published vector (docs/test-vectors/delivery-signature.json)"
python3 examples/recipient-python/recipient.py self-test --vector docs/test-vectors/delivery-signature.json >"$WORK/self-test.out" ||
  { cat "$WORK/self-test.out"; fail "the Python self-test"; }
java examples/recipient-java/Recipient.java self-test --vector docs/test-vectors/delivery-signature.json >"$WORK/self-test.out" ||
  { cat "$WORK/self-test.out"; fail "the Java self-test"; }
pass "Python and Java: the vector verifies; tampered body, alg none, attached JWS, other key refused"

GW=$WORK/gw
PNR=200203149828 # Alva, DOMAIN §7 (fictional)
PY=sfk-kalmar    # the Python recipient's party
JV=region-kalmar # the Java recipient's party

echo "== samgate init"
# The recipients fetch /v1/keys from the gateway, so its port is chosen first
# (a free one, probed); the recipients take any free port and say which.
GW_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
GATEWAY=https://127.0.0.1:$GW_PORT
"$SAMGATE" init --dir "$GW" --listen "127.0.0.1:$GW_PORT" >/dev/null

echo "== recipients: Python as $PY, Java as $JV"
recipient_args() { # PARTY: sets ARGS
  ARGS=(--party "$1" --listen 127.0.0.1:0
    --cert "$GW/pki/$1-server.pem" --key "$GW/pki/$1-server.key" --client-ca "$GW/pki/ca.pem"
    --state-dir "$WORK/$1" --port-file "$WORK/$1.port"
    --gateway "$GATEWAY" --gateway-ca "$GW/pki/ca.pem"
    --party-cert "$GW/pki/$1.pem" --party-key "$GW/pki/$1.key")
}
# They fetch /v1/keys lazily (on the first delivery's kid), so they may start
# before the gateway.
recipient_args $PY
python3 "$ROOT/examples/recipient-python/recipient.py" serve "${ARGS[@]}" >"$WORK/python.log" 2>&1 &
PIDS+=($!)
recipient_args $JV
java "$ROOT/examples/recipient-java/Recipient.java" serve "${ARGS[@]}" >"$WORK/java.log" 2>&1 &
PIDS+=($!)
wait_for_file "$WORK/$PY.port" 30 "the Python recipient"
wait_for_file "$WORK/$JV.port" 60 "the Java recipient"
PY_PORT=$(cat "$WORK/$PY.port")
JV_PORT=$(cat "$WORK/$JV.port")
pass "Python on :$PY_PORT, Java on :$JV_PORT"

echo "== point the endpoints at them, add a reverse route for $JV's reply"
python3 - "$GW/samgate.toml" "$PY" "$PY_PORT" "$JV" "$JV_PORT" <<'EOF'
import sys, tomllib
path, *pairs = sys.argv[1:]
text = open(path).read()
parties = {p["id"]: p for p in tomllib.loads(text)["party"]}
for party, port in zip(pairs[::2], pairs[1::2]):
    old = parties[party]["endpoint"]
    assert text.count(f'"{old}"') == 1, old
    text = text.replace(f'"{old}"', f'"https://127.0.0.1:{port}/inbox"')
open(path, "w").write(text)
EOF
# The demo routes have a reverse route only for referrals (sfk-kalmar -> the
# referrer). The team doctor answers a rehabilitation plan with an interim
# work capacity assessment: region-kalmar -> kommun-kalmar, pseudonymised
# like the plan itself.
cat >>"$GW/samgate.toml" <<'EOF'

# Added by examples/run-kit-test.sh: the doctor's reply to a plan.
[[route]]
from = ["region-kalmar"]
to = ["kommun-kalmar"]
type = "work-capacity-assessment"
purposes = ["samordnad-rehabilitering"]
fields = ["/stage", "/assessed_by_role", "/functional_limitations", "/further_care_needed"]
subject = "pseudonymise"
consent = "required"
EOF

echo "== samgate serve"
"$SAMGATE" --log-json serve --config "$GW/samgate.toml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
for _ in $(seq 1 300); do
  grep -q '"samgate listening (mTLS)"' "$WORK/gateway.log" && break
  kill -0 $GW_PID 2>/dev/null || fail "the gateway exited (port $GW_PORT taken?)"
  sleep 0.1
done
grep -q '"samgate listening (mTLS)"' "$WORK/gateway.log" || fail "the gateway did not start"
pass "gateway on $GATEWAY"

api() { # PARTY METHOD PATH [BODYFILE] -> body on stdout, status in $WORK/status
  local party=$1 method=$2 path=$3 data=()
  [[ $# -ge 4 ]] && data=(-H 'Content-Type: application/json' --data-binary "@$4")
  curl -sS --cacert "$GW/pki/ca.pem" --cert "$GW/pki/$party.pem" --key "$GW/pki/$party.key" \
    -X "$method" "${data[@]}" -o "$WORK/response" -w '%{http_code}' "$GATEWAY$path" >"$WORK/status"
  cat "$WORK/response"
}
status() { cat "$WORK/status"; }

echo "== consent: signed by the intake issuer, recorded by $PY (intake)"
sign=("$SAMGATE" consent sign --key "$GW/keys/issuer-sfk-kalmar-intake.pem" --issuer sfk-kalmar-intake
  --key-id 2026-1 --parties "fk,sfk-kalmar,kommun-kalmar,region-kalmar"
  --purposes samordnad-rehabilitering --method written --recorded-by kit-test
  --categories "case,identity,contact,benefit,employment,education,health,social-services,outcome,free-text")
if [[ $CONSENT_SUBJECT == auto ]]; then
  if "$SAMGATE" consent sign --help | grep -q -- --subject-file; then CONSENT_SUBJECT=file; else CONSENT_SUBJECT=arg; fi
fi
case $CONSENT_SUBJECT in
  file) TOKEN=$(printf '%s\n' "$PNR" | "${sign[@]}" --subject-file -) ;;
  arg) TOKEN=$("${sign[@]}" --subject "$PNR") ;;
  *) fail "CONSENT_SUBJECT is file, arg or auto" ;;
esac
printf '{"token": "%s"}' "$TOKEN" >"$WORK/consent.json"
api $PY POST /v1/consents "$WORK/consent.json" >"$WORK/consent-summary.json"
[[ $(status) == 201 ]] || fail "POST /v1/consents answered $(status): $(cat "$WORK/response")"
CONSENT_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/consent-summary.json")
pass "consent $CONSENT_ID recorded (subject given by $CONSENT_SUBJECT)"

envelope() { # TO TYPE DELIVERY OUTFILE: the schema's example payload about Alva
  python3 - "$@" "$PNR" "$ROOT/schemas/examples/$2.json" <<'EOF'
import json, sys
to, msg_type, delivery, out, pnr, example = sys.argv[1:]
json.dump({"to": to, "type": msg_type, "purpose": "samordnad-rehabilitering",
           "subject": pnr, "delivery": delivery, "payload": json.load(open(example))}, open(out, "w"))
EOF
}
check() { # FILE PYTHON-EXPRESSION-ON-r MESSAGE
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2" || fail "$3: $(cat "$1")"
}
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

echo "== sync exchanges: delivered, verified, answered through the reverse route"
envelope $PY referral sync "$WORK/e1.json"
api fk POST /v1/exchanges "$WORK/e1.json" >"$WORK/r1.json"
[[ $(status) == 200 ]] || fail "fk -> $PY referral answered $(status): $(cat "$WORK/r1.json")"
check "$WORK/r1.json" 'r["status"] == "delivered" and r["reply"]["type"] == "referral" and r["reply"]["payload"]["decision"] == "accepted" and "/decision" in r["reply"]["forwarded"]' \
  "the Python recipient's reply did not come back"
SYNC_PY=$(field "$WORK/r1.json" exchange_id)
pass "fk -> $PY referral $SYNC_PY: delivered, reply referral/accepted forwarded to fk"

envelope $JV rehabilitation-plan sync "$WORK/e2.json"
api kommun-kalmar POST /v1/exchanges "$WORK/e2.json" >"$WORK/r2.json"
[[ $(status) == 200 ]] || fail "kommun-kalmar -> $JV plan answered $(status): $(cat "$WORK/r2.json")"
check "$WORK/r2.json" 'r["status"] == "delivered" and r["reply"]["type"] == "work-capacity-assessment" and r["reply"]["payload"]["stage"] == "interim"' \
  "the Java recipient's reply did not come back"
SYNC_JV=$(field "$WORK/r2.json" exchange_id)
pass "kommun-kalmar -> $JV rehabilitation-plan $SYNC_JV: delivered, reply work-capacity-assessment forwarded"

echo "== async exchanges: queued, then delivered by the outbox"
envelope $PY referral async "$WORK/e3.json"
api fk POST /v1/exchanges "$WORK/e3.json" >"$WORK/r3.json"
[[ $(status) == 202 ]] || fail "async to $PY answered $(status)"
ASYNC_PY=$(field "$WORK/r3.json" exchange_id)
envelope $JV rehabilitation-plan async "$WORK/e4.json"
api kommun-kalmar POST /v1/exchanges "$WORK/e4.json" >"$WORK/r4.json"
[[ $(status) == 202 ]] || fail "async to $JV answered $(status)"
ASYNC_JV=$(field "$WORK/r4.json" exchange_id)
await_delivered() { # SENDER ID
  for _ in $(seq 1 300); do
    api "$1" GET "/v1/exchanges/$2" >"$WORK/st.json"
    [[ $(field "$WORK/st.json" status) == delivered ]] && return 0
    sleep 0.1
  done
  fail "exchange $2 is not delivered: $(cat "$WORK/st.json")"
}
await_delivered fk "$ASYNC_PY"
await_delivered kommun-kalmar "$ASYNC_JV"
pass "async $ASYNC_PY and $ASYNC_JV delivered"

echo "== what the recipients hold"
for pair in "$PY:$SYNC_PY:personnummer" "$PY:$ASYNC_PY:personnummer" "$JV:$SYNC_JV:pseudonym" "$JV:$ASYNC_JV:pseudonym"; do
  IFS=: read -r party id kind <<<"$pair"
  entry=$WORK/$party/$id.json
  [[ -f $entry && -f $WORK/$party/$id.body ]] || fail "$party did not record exchange $id"
  check "$entry" "r['message']['exchange_id'] == '$id' and r['message']['to'] == '$party' and list(r['message']['subject']) == ['$kind'] and r['reply'] is not None" \
    "$party's record of $id"
  [[ ! -e $WORK/$party/$id.duplicates ]] || fail "$party processed $id twice"
done
grep -q "fetched 1 delivery key(s) from the gateway" "$WORK/python.log" || fail "the Python recipient did not fetch /v1/keys"
grep -q "fetched 1 delivery key(s) from the gateway" "$WORK/java.log" || fail "the Java recipient did not fetch /v1/keys"
[[ $(grep -c "^received .*signature verified" "$WORK/python.log") == 2 ]] || fail "the Python recipient did not verify two deliveries"
[[ $(grep -c "^received .*signature verified" "$WORK/java.log") == 2 ]] || fail "the Java recipient did not verify two deliveries"
JV_CONSENT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["message"]["consent_id"])' "$WORK/$JV/$SYNC_JV.json")
PY_CONSENT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["message"]["consent_id"])' "$WORK/$PY/$SYNC_PY.json")
[[ $PY_CONSENT == "$CONSENT_ID" ]] || fail "the reveal route's consent_id is not the consent id"
# DESIGN §10: on pseudonymise routes a per-recipient pc1_ reference (a build
# from before that change sends the consent id itself).
[[ $JV_CONSENT =~ ^pc1_[a-z2-7]{26}$ || $JV_CONSENT == "$CONSENT_ID" ]] ||
  fail "the pseudonymised route's consent_id is neither a pc1_ reference nor the consent id: $JV_CONSENT"
pass "each holds its two exchanges, verified with the key from /v1/keys (subject: $PY personnummer, $JV pseudonym)"
echo "      consent_id at $PY (reveal): $PY_CONSENT; at $JV (pseudonymise): $JV_CONSENT"

echo "== offline verification with keys/delivery.pub.pem, each language on the other's capture"
tamper() { # IN OUT [NEW_ID]: the same message with one payload field changed
  python3 - "$@" <<'EOF'
import json, sys, uuid
src, out, *new_id = sys.argv[1:]
m = json.loads(open(src, "rb").read())
m["payload"] = dict(m["payload"], **{next(iter(m["payload"])): "tampered"})
if new_id:
    m["exchange_id"] = new_id[0]
open(out, "wb").write(json.dumps(m, separators=(",", ":")).encode())
EOF
}
sig_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["signature"])' "$1"; }
PY_BODY=$WORK/$PY/$SYNC_PY.body
JV_BODY=$WORK/$JV/$SYNC_JV.body
sig_of "$WORK/$PY/$SYNC_PY.json" >"$WORK/py.sig"
sig_of "$WORK/$JV/$SYNC_JV.json" >"$WORK/jv.sig"
tamper "$PY_BODY" "$WORK/py-tampered.body"
tamper "$JV_BODY" "$WORK/jv-tampered.body"
pyverify() { python3 "$ROOT/examples/recipient-python/recipient.py" verify --delivery-key "$GW/keys/delivery.pub.pem" --body "$1" --signature "$2"; }
jvverify() { java "$ROOT/examples/recipient-java/Recipient.java" verify --delivery-key "$GW/keys/delivery.pub.pem" --body "$1" --signature "$2"; }
pyverify "$JV_BODY" "$WORK/jv.sig" >/dev/null || fail "Python does not verify the body Java received"
jvverify "$PY_BODY" "$WORK/py.sig" >/dev/null || fail "Java does not verify the body Python received"
if pyverify "$WORK/jv-tampered.body" "$WORK/jv.sig" >/dev/null; then fail "Python accepted a tampered body"; fi
if jvverify "$WORK/py-tampered.body" "$WORK/py.sig" >/dev/null; then fail "Java accepted a tampered body"; fi
pass "genuine bodies verify, tampered ones are refused (Python and Java)"

echo "== live refusals and redelivery (as the gateway would connect: its client certificate)"
deliver() { # PORT BODY SIGNATURE EXCHANGE_ID -> status; reply in $WORK/delivered
  curl -sS --cacert "$GW/pki/ca.pem" --cert "$GW/pki/gateway-client.pem" --key "$GW/pki/gateway-client.key" \
    -H 'Content-Type: application/json' -H "Samgate-Signature: $3" -H "Samgate-Exchange-Id: $4" \
    --data-binary "@$2" -o "$WORK/delivered" -w '%{http_code}' "https://127.0.0.1:$1/inbox"
}
for target in "$PY:$PY_PORT:$SYNC_PY:$PY_BODY:$WORK/py.sig" "$JV:$JV_PORT:$SYNC_JV:$JV_BODY:$WORK/jv.sig"; do
  IFS=: read -r party port id body sigfile <<<"$target"
  sig=$(cat "$sigfile")
  fresh=$(python3 -c 'import uuid; print(uuid.uuid4())')
  tamper "$body" "$WORK/t.body" "$fresh"
  code=$(deliver "$port" "$WORK/t.body" "$sig" "$fresh")
  [[ $code == 401 ]] || fail "$party answered $code to a tampered body (want 401)"
  [[ ! -e $WORK/$party/$fresh.json ]] || fail "$party stored a tampered message"
  code=$(deliver "$port" "$body" "$sig" "$fresh")
  [[ $code == 400 ]] || fail "$party answered $code to a mismatched Samgate-Exchange-Id (want 400)"
  code=$(deliver "$port" "$body" "$sig" "$id")
  [[ $code == 200 ]] || fail "$party answered $code to a redelivery (want 200)"
  python3 - "$WORK/delivered" "$WORK/$party/$id.json" <<'EOF' || fail "$party answered a redelivery differently"
import json, sys
sys.exit(0 if json.load(open(sys.argv[1])) == json.load(open(sys.argv[2]))["reply"] else 1)
EOF
  [[ $(cat "$WORK/$party/$id.duplicates") == 1 ]] || fail "$party did not count the redelivery"
  pass "$party: tampered body 401 (not stored), mismatched exchange id 400, redelivery answered as before and not processed again"
done
code=$(deliver "$JV_PORT" "$PY_BODY" "$(cat "$WORK/py.sig")" "$SYNC_PY")
[[ $code == 400 ]] || fail "$JV answered $code to a message signed for $PY (want 400)"
[[ ! -e $WORK/$JV/$SYNC_PY.json ]] || fail "$JV stored a message for $PY"
pass "$JV refuses a genuine message addressed to $PY (400)"
[[ $(grep -c "^received " "$WORK/python.log") == 2 && $(grep -c "^received " "$WORK/java.log") == 2 ]] ||
  fail "a recipient processed something more than the four deliveries"

echo "== revocation"
printf '{"reason": "the participant withdrew (kit test)"}' >"$WORK/revoke.json"
api $PY POST "/v1/consents/$CONSENT_ID/revocation" "$WORK/revoke.json" >"$WORK/revoked.json"
[[ $(status) == 200 ]] || fail "revocation answered $(status): $(cat "$WORK/revoked.json")"
api fk POST /v1/exchanges "$WORK/e1.json" >"$WORK/r5.json"
[[ $(status) == 403 ]] && check "$WORK/r5.json" 'r["type"] == "urn:samgate:problem:consent_revoked"' "after revocation" ||
  fail "an exchange after revocation answered $(status): $(cat "$WORK/r5.json")"
pass "an exchange after revocation is denied 403 consent_revoked"
# DESIGN §13: every party that received data under the consent gets a signed
# consent-revoked notice through the outbox. A build with the lifecycle has
# `history` in the consent summary; an older one sends no notice.
if python3 -c 'import json, sys; sys.exit(0 if "history" in json.load(open(sys.argv[1])) else 1)' "$WORK/revoked.json"; then
  for pair in "$PY:$SYNC_PY:$ASYNC_PY:$PY_CONSENT" "$JV:$SYNC_JV:$ASYNC_JV:$JV_CONSENT"; do
    IFS=: read -r party first second consent <<<"$pair"
    for _ in $(seq 1 300); do compgen -G "$WORK/$party/revoked-*.json" >/dev/null && break; sleep 0.1; done
    notice=$(compgen -G "$WORK/$party/revoked-*.json" | head -n1) || fail "$party got no consent-revoked notice"
    check "$notice" "r['consent_id'] == '$consent' and {'$first', '$second'} <= set(r['exchange_ids'])" \
      "$party's consent-revoked notice (its consent_id, the exchanges it received)"
  done
  pass "both recipients got a verified consent-revoked notice naming their consent_id and exchanges"
else
  echo "      (this build has no consent lifecycle, DESIGN §13: no consent-revoked notice to check)"
fi

echo "== kit test passed"
