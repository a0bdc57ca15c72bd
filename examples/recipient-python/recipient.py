#!/usr/bin/env python3
"""A minimal samgate recipient: the contract of docs/recipients.md in code.

An HTTPS endpoint (mutual TLS: the gateway's client certificate must chain to
--client-ca) that, for every delivery:

1. verifies ``Samgate-Signature``, a detached JWS (RFC 7515 Appendix F) over
   the exact body bytes, with the gateway's delivery key from ``GET /v1/keys``
   (fetched over mTLS with this party's certificate) or from
   ``keys/delivery.pub.pem``;
2. only then parses the body, checks that ``exchange_id`` equals the
   ``Samgate-Exchange-Id`` header and that ``to`` names this party;
3. de-duplicates on ``exchange_id`` (delivery is at-least-once): a second
   delivery is answered as the first and not processed again;
4. answers a reply ``{"type": ..., "payload": ...}`` (see ``answer``) or 204.

Standard library plus ``cryptography`` only. Usage::

    python3 recipient.py serve --party sfk-kalmar --listen 127.0.0.1:9105 \\
        --cert pki/sfk-kalmar-server.pem --key pki/sfk-kalmar-server.key \\
        --client-ca pki/ca.pem --state-dir received \\
        --gateway https://127.0.0.1:8443 --gateway-ca pki/ca.pem \\
        --party-cert pki/sfk-kalmar.pem --party-key pki/sfk-kalmar.key
        # or, instead of --gateway...: --delivery-key keys/delivery.pub.pem

    python3 recipient.py verify --delivery-key keys/delivery.pub.pem \\
        --body FILE --signature FILE          # exit 0 valid, 1 invalid
    python3 recipient.py self-test --vector docs/test-vectors/delivery-signature.json

The log (stdout) names exchange ids, types and parties, never a subject.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import re
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

SIGNATURE_HEADER = "Samgate-Signature"
EXCHANGE_ID_HEADER = "Samgate-Exchange-Id"
JWS_TYP = "samgate-delivery"
MAX_BODY = 4 * 1024 * 1024  # the gateway's payload limit is 1 MiB by default
REFETCH_INTERVAL = 30.0  # at most one JWKS fetch per 30 s for an unknown kid
B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class Refused(Exception):
    """A delivery this recipient does not accept: (HTTP status, reason)."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


# --- keys --------------------------------------------------------------------


def key_id(raw):
    """samgate's key id: the first 16 hex characters of SHA-256(raw key)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def load_delivery_pem(path):
    """keys/delivery.pub.pem (SPKI PEM) -> {kid: Ed25519PublicKey}."""
    with open(path, "rb") as f:
        return delivery_keys_from_pem(f.read())


def delivery_keys_from_pem(data):
    key = load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return {key_id(key.public_bytes(Encoding.Raw, PublicFormat.Raw)): key}


def parse_jwks(document):
    """The delivery keys of a JWKS from GET /v1/keys -> {kid: key}.

    The JWKS also holds the audit key (``samgate_purpose: audit``), which
    signs tree heads, never deliveries: it is skipped.
    """
    keys = {}
    for jwk in document.get("keys", []):
        if not isinstance(jwk, dict):
            continue
        if (
            jwk.get("kty") != "OKP"
            or jwk.get("crv") != "Ed25519"
            or jwk.get("alg", "EdDSA") != "EdDSA"
            or jwk.get("use", "sig") != "sig"
            or jwk.get("samgate_purpose", "delivery") != "delivery"
            or not isinstance(jwk.get("kid"), str)
            or not isinstance(jwk.get("x"), str)
        ):
            continue
        raw = b64url_decode(jwk["x"])
        if len(raw) == 32:
            keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


class DeliveryKeys:
    """The gateway's delivery keys by kid: fixed, or fetched from /v1/keys.

    An unknown kid (the gateway rotated its delivery key) triggers a fresh
    fetch, at most once per REFETCH_INTERVAL.
    """

    def __init__(self, fixed=None, fetch=None):
        self._keys = dict(fixed or {})
        self._fetch = fetch
        self._fetched_at = None
        self._lock = threading.Lock()

    def get(self, kid):
        with self._lock:
            key = self._keys.get(kid)
            if key is not None or self._fetch is None:
                return key
            now = time.monotonic()
            if self._fetched_at is not None and now - self._fetched_at < REFETCH_INTERVAL:
                return None
            self._fetched_at = now
            try:
                self._keys = self._fetch()
            except Exception as e:  # the gateway is unreachable: try again later
                raise Refused(503, f"cannot fetch the gateway's keys: {e}") from e
            log(f"fetched {len(self._keys)} delivery key(s) from the gateway: {sorted(self._keys)}")
            return self._keys.get(kid)


def jwks_fetcher(gateway, gateway_ca, party_cert, party_key):
    """GET {gateway}/v1/keys over mTLS with this party's client certificate."""
    ctx = ssl.create_default_context(cafile=gateway_ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(party_cert, party_key)
    url = gateway.rstrip("/") + "/v1/keys"

    def fetch():
        with urllib.request.urlopen(url, context=ctx, timeout=10) as rsp:
            return parse_jwks(json.load(rsp))

    return fetch


# --- the signature -----------------------------------------------------------


def b64url_decode(text):
    if not B64URL.match(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def verify_signature(keys, jws, body):
    """Verifies the detached JWS ``jws`` over the exact ``body`` bytes.

    Returns the kid; raises Refused(401) for a signature that does not
    verify and Refused(400) for one that is malformed.
    """
    parts = jws.split(".") if jws else []
    if len(parts) != 3 or parts[1] != "":
        raise Refused(400, "Samgate-Signature is not a detached compact JWS (header..signature)")
    header_b64, _, sig_b64 = parts
    try:
        header = json.loads(b64url_decode(header_b64))
        signature = b64url_decode(sig_b64)
    except ValueError as e:
        raise Refused(400, f"Samgate-Signature is malformed: {e}") from e
    if not isinstance(header, dict):
        raise Refused(400, "the JWS header is not a JSON object")
    if header.get("alg") != "EdDSA" or header.get("typ") != JWS_TYP:
        raise Refused(401, "the JWS header must have alg EdDSA and typ samgate-delivery")
    if "crit" in header or header.get("b64", True) is not True:
        raise Refused(401, "the JWS header asks for extensions this recipient does not know")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise Refused(401, f"unknown delivery key id {kid!r}")
    # RFC 7515 Appendix F: the signing input is the header and the
    # base64url of the body exactly as it arrived on the wire.
    signing_input = (header_b64 + "." + b64url_encode(body)).encode("ascii")
    try:
        key.verify(signature, signing_input)
    except InvalidSignature as e:
        raise Refused(401, "Samgate-Signature does not verify over this body") from e
    return kid


# --- what this recipient does with a message ---------------------------------


def answer(message):
    """The reply to a verified, new message, or None for no reply (204).

    This is where a real recipient hands the message to its own system. The
    gateway treats a reply as a message from us back to the sender: it is
    forwarded only if a route allows it (DESIGN §9 "Replies").
    """
    payload = message.get("payload") or {}
    if message.get("type") == "referral":
        # The referral group's decision (the reverse route sfk-kalmar -> referrer).
        reply = {"decision": "accepted", "suggested_measure": "group-activity"}
        if isinstance(payload.get("referral_id"), str):
            reply["referral_id"] = payload["referral_id"]
        return {"type": "referral", "payload": reply}
    if message.get("type") == "rehabilitation-plan":
        # The team doctor's advice on a plan, as an interim assessment.
        return {
            "type": "work-capacity-assessment",
            "payload": {
                "stage": "interim",
                "assessed_by_role": "doctor",
                "functional_limitations": [{"area": "attention-and-concentration", "severity": "mild"}],
                "further_care_needed": False,
            },
        }
    return None


def consent_revoked(message, store):
    """DESIGN §13: the participant withdrew the consent this party received
    data under. A real recipient now stops using that data (and follows its
    own retention rules); this one records which exchanges are affected."""
    fields = message.get("payload") if isinstance(message.get("payload"), dict) else message
    affected = fields.get("exchange_ids") or []
    store.mark_revoked(fields.get("consent_id"), affected)
    log(f"consent revoked: consent_id {fields.get('consent_id')}, {len(affected)} exchange(s) affected")


# --- de-duplication ----------------------------------------------------------


class Store:
    """What was received, one directory entry per exchange_id, so that a
    second delivery (after a gateway crash) is recognised across restarts.

    ``<id>.json``: the verified message, its signature and our answer;
    ``<id>.body``: the body bytes exactly as received (the proof).
    """

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.lock = threading.Lock()

    def _write(self, name, data):
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.dir, name))

    def seen(self, exchange_id):
        try:
            with open(os.path.join(self.dir, exchange_id + ".json"), "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def record(self, exchange_id, body, signature, message, reply):
        self._write(exchange_id + ".body", body)
        entry = {"signature": signature, "message": message, "reply": reply,
                 "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._write(exchange_id + ".json", json.dumps(entry).encode())

    def duplicate(self, exchange_id):
        path = os.path.join(self.dir, exchange_id + ".duplicates")
        count = 0
        if os.path.exists(path):
            with open(path) as f:
                count = int(f.read() or 0)
        self._write(exchange_id + ".duplicates", str(count + 1).encode())

    def mark_revoked(self, consent_id, exchange_ids):
        self._write(f"revoked-{uuid.uuid4()}.json",
                    json.dumps({"consent_id": consent_id, "exchange_ids": exchange_ids}).encode())


def receive(party, keys, store, headers, body):
    """One delivery -> (status, reply JSON or None). Raises Refused."""
    kid = verify_signature(keys, headers.get(SIGNATURE_HEADER), body)
    # Only authenticated bytes are parsed.
    try:
        message = json.loads(body)
    except ValueError as e:
        raise Refused(400, "the body is not JSON") from e
    if not isinstance(message, dict):
        raise Refused(400, "the body is not a JSON object")
    exchange_id = message.get("exchange_id")
    try:
        canonical = str(uuid.UUID(exchange_id)) if isinstance(exchange_id, str) else None
    except ValueError:
        canonical = None
    if canonical is None or canonical != exchange_id:
        raise Refused(400, "exchange_id is not a UUID")
    if headers.get(EXCHANGE_ID_HEADER) != exchange_id:
        raise Refused(400, "Samgate-Exchange-Id does not match the body's exchange_id")
    if message.get("to") != party:
        # A genuine message for another party, replayed to us.
        raise Refused(400, f"the message is addressed to {message.get('to')!r}, not {party!r}")
    with store.lock:
        earlier = store.seen(exchange_id)
        if earlier is not None:
            store.duplicate(exchange_id)
            log(f"duplicate {exchange_id}: answered as before, not processed again")
            return earlier["reply"]
        if message.get("type") == "consent-revoked":
            consent_revoked(message, store)
            reply = None
        else:
            reply = answer(message)
        store.record(exchange_id, body, headers.get(SIGNATURE_HEADER), message, reply)
    subject = message.get("subject")
    subject_kind = next(iter(subject), "none") if isinstance(subject, dict) else "none"
    log(f"received {exchange_id}: {message.get('type')} from {message.get('from')}, "
        f"subject as {subject_kind}, consent_id {message.get('consent_id')}, "
        f"signature verified (kid {kid}), reply {reply['type'] if reply else 'none'}")
    return reply


# --- HTTPS -------------------------------------------------------------------


def log(line):
    print(line, flush=True)


def make_handler(party, keys, store, path):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30  # a slow or silent client is dropped
        server_version = "samgate-recipient-python"

        def log_message(self, *args):  # the default log names client addresses only
            pass

        def send(self, status, document=None):
            data = b"" if document is None else json.dumps(document).encode()
            self.send_response(status)
            if document is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            if self.path != path:
                return self.send(404, {"error": "not found"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self.send(411, {"error": "Content-Length required"})
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                return self.send(413, {"error": "body too large"})
            body = self.rfile.read(length)
            try:
                reply = receive(party, keys, store, self.headers, body)
            except Refused as e:
                log(f"refused ({e.status}): {e.reason}")
                return self.send(e.status, {"error": e.reason})
            except Exception as e:  # our own fault: the gateway retries async deliveries
                log(f"internal error: {type(e).__name__}")
                return self.send(500, {"error": "internal error"})
            if reply is None:
                self.send(204)
            else:
                self.send(200, reply)

    return Handler


def serve(args):
    if args.delivery_key:
        keys = DeliveryKeys(fixed=load_delivery_pem(args.delivery_key))
    else:
        if not (args.gateway and args.party_cert and args.party_key):
            sys.exit("serve needs --delivery-key, or --gateway with --party-cert and --party-key")
        keys = DeliveryKeys(fetch=jwks_fetcher(args.gateway, args.gateway_ca or args.client_ca,
                                               args.party_cert, args.party_key))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED  # only the gateway (a client cert from client-ca)
    host, _, port = args.listen.rpartition(":")
    handler = make_handler(args.party, keys, Store(args.state_dir), args.path)
    server = http.server.ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    # The handshake runs in the connection's thread, not in accept().
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    bound = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{bound}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    log(f"recipient {args.party} listening on https://{host}:{bound}{args.path}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def verify(args):
    """Offline: does this signature verify over this body with this key?"""
    keys = DeliveryKeys(fixed=load_delivery_pem(args.delivery_key))
    with open(args.body, "rb") as f:
        body = f.read()
    signature = args.signature
    if os.path.exists(signature):
        with open(signature) as f:
            signature = f.read().strip()
    try:
        kid = verify_signature(keys, signature, body)
    except Refused as e:
        print(f"signature invalid: {e.reason}")
        return 1
    print(f"signature valid (kid {kid})")
    return 0


def self_test(args):
    """The published vector (docs/test-vectors/delivery-signature.json): the
    genuine body verifies with the key from PEM and from the JWK; a tampered
    body, a changed header and the audit key's JWK do not pass."""
    with open(args.vector, encoding="utf-8") as f:
        v = json.load(f)
    body = v["body"].encode("utf-8")
    from_pem = delivery_keys_from_pem(v["public_key_pem"].encode())
    audit_jwk = dict(v["jwk"], samgate_purpose="audit", kid="audit-key")
    from_jwks = parse_jwks({"keys": [v["jwk"], audit_jwk]})
    failures = []

    def expect(what, ok):
        print(f"  {'ok' if ok else 'FAILED'}  {what}")
        if not ok:
            failures.append(what)

    def refused(keys, jws, data):
        try:
            verify_signature(DeliveryKeys(fixed=keys), jws, data)
        except Refused as e:
            return e.status
        return None

    expect("the PEM key's kid is the vector's", list(from_pem) == [v["kid"]])
    expect("the JWKS yields the delivery key only", list(from_jwks) == [v["kid"]])
    for name, keys in (("PEM", from_pem), ("JWKS", from_jwks)):
        expect(f"the genuine body verifies ({name})", refused(keys, v["samgate_signature"], body) is None)
    expect("a tampered body is refused (401)",
           refused(from_pem, v["samgate_signature"], v["tampered_body"].encode("utf-8")) == 401)
    header_b64, _, sig_b64 = v["samgate_signature"].split(".")
    none_header = b64url_encode(json.dumps({"alg": "none", "kid": v["kid"], "typ": JWS_TYP}).encode())
    expect("alg none is refused (401)", refused(from_pem, none_header + ".." + sig_b64, body) == 401)
    attached = header_b64 + "." + b64url_encode(body) + "." + sig_b64
    expect("an attached (non-detached) JWS is refused (400)", refused(from_pem, attached, body) == 400)
    other = Ed25519PrivateKey.generate().public_key()
    expect("a signature by another key is refused (401)",
           refused({v["kid"]: other}, v["samgate_signature"], body) == 401)
    print("self-test " + ("passed" if not failures else f"FAILED: {len(failures)} check(s)"))
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the HTTPS endpoint")
    s.add_argument("--party", required=True, help="this party's id (messages must be addressed to it)")
    s.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    s.add_argument("--path", default="/inbox", help="the path of the endpoint URL")
    s.add_argument("--cert", required=True, help="server certificate (pki/<party>-server.pem)")
    s.add_argument("--key", required=True, help="its private key (pki/<party>-server.key)")
    s.add_argument("--client-ca", required=True, help="CA of the gateway's client certificate")
    s.add_argument("--state-dir", required=True, help="where received exchanges are kept")
    s.add_argument("--port-file", help="write the bound port here once listening")
    s.add_argument("--delivery-key", help="keys/delivery.pub.pem instead of fetching /v1/keys")
    s.add_argument("--gateway", help="the gateway's base URL, for GET /v1/keys")
    s.add_argument("--gateway-ca", help="CA of the gateway's server certificate (default: --client-ca)")
    s.add_argument("--party-cert", help="this party's client certificate (pki/<party>.pem)")
    s.add_argument("--party-key", help="its private key (pki/<party>.key)")
    v = sub.add_parser("verify", help="check a signature over a body offline")
    v.add_argument("--delivery-key", required=True)
    v.add_argument("--body", required=True)
    v.add_argument("--signature", required=True, help="the header value, or a file holding it")
    t = sub.add_parser("self-test", help="check this recipient against the published test vector")
    t.add_argument("--vector", required=True, help="docs/test-vectors/delivery-signature.json")
    args = p.parse_args()
    if args.command == "serve":
        serve(args)
        return 0
    if args.command == "self-test":
        return self_test(args)
    return verify(args)


if __name__ == "__main__":
    sys.exit(main())
