#!/usr/bin/env python3
"""Measures what 300 slow clients do to a normal party (DESIGN §10).

Starts nothing itself: run `samgate init --dir D` and `samgate serve --config
D/samgate.toml` first, then

    tests/tools/slowloris.py D [seconds] [connections]

It opens N TLS connections with a pinned party certificate (af) that trickle
a request head one byte every 2 s, and meanwhile sends GET /healthz as
another party (fk) on one kept-alive connection every 10 ms. It prints the
normal party's latency percentiles over the period and how many slow
connections the gateway closed. Not part of `cargo test` (no timed
assertions there); the figures are in docs/security.md.
"""
import http.client, socket, ssl, sys, threading, time, tomllib

d = sys.argv[1]
period = float(sys.argv[2]) if len(sys.argv) > 2 else 20
n = int(sys.argv[3]) if len(sys.argv) > 3 else 300
cfg = tomllib.load(open(f"{d}/samgate.toml", "rb"))
host, port = cfg["server"]["listen"].rsplit(":", 1)
port = int(port)

def ctx(party):
    c = ssl.create_default_context(cafile=f"{d}/pki/ca.pem")
    c.load_cert_chain(f"{d}/pki/{party}.pem", f"{d}/pki/{party}.key")
    return c

closed = 0
lock = threading.Lock()
stop = time.time() + period

def slow():
    global closed
    s = ctx("af").wrap_socket(socket.create_connection((host, port)), server_hostname="localhost")
    head = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-pad: " + b"a" * 200 + b"\r\n\r\n"
    s.settimeout(2)
    for b in head:
        if time.time() > stop:
            return
        try:
            s.send(bytes([b]))
            if s.recv(1) == b"":
                raise ConnectionError
        except socket.timeout:
            continue
        except (OSError, ConnectionError):
            with lock:
                closed += 1
            return

threads = [threading.Thread(target=slow, daemon=True) for _ in range(n)]
for t in threads:
    t.start()
time.sleep(1)
conn = http.client.HTTPSConnection(host, port, context=ctx("fk"))
lat = []
errors = 0
while time.time() < stop:
    t0 = time.perf_counter()
    try:
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            errors += 1
    except OSError:
        errors += 1
        conn = http.client.HTTPSConnection(host, port, context=ctx("fk"))
        continue
    lat.append((time.perf_counter() - t0) * 1000)
    time.sleep(0.01)
for t in threads:
    t.join(timeout=5)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]
print(f"slow connections: {n}, closed by the gateway: {closed}")
print(f"normal party: {len(lat)} requests, {errors} errors, p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {lat[-1]:.1f} ms")
