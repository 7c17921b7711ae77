#!/usr/bin/python3
"""Slow clients (slowloris): connections that stall in their headers, that
send their headers a byte at a time, or their body a byte at a time.  Each
must be cut (headers: within --connection-timeout, body: within
--request-timeout, plus slack), and while they last other clients must be
served at once.  When slow clients fill every connection slot
(--max-connections), a normal client must get in again once they are cut.
"""
import socket
import threading
import time

import segdtest as T

CONN_TIMEOUT = 2
REQ_TIMEOUT = 4
SLACK = 2.0
STEP = 0.3          # seconds between trickled bytes: well under the idle timeout

good_path = T.SLICES[2]
good = T.read(good_path)
ref = T.infer(good_path)


def trickle(port, prefix, data, limit, out, key):
    """Send prefix at once, then data a byte every STEP s; out[key] = seconds
    until the server closed the connection (None: still open at limit)."""
    t0 = time.monotonic()
    try:
        s = T.raw_connect(port)
        s.sendall(prefix)
    except OSError:
        out[key] = 0.0
        return
    s.settimeout(STEP)
    i = 0
    while time.monotonic() - t0 < limit:
        try:
            if i < len(data):
                s.send(data[i:i + 1])
                i += 1
            if s.recv(4096) == b"":
                break
        except socket.timeout:
            continue
        except OSError:
            break
    else:
        out[key] = None
        s.close()
        return
    out[key] = time.monotonic() - t0
    s.close()


def stall(port, prefix, limit, out, key):
    t0 = time.monotonic()
    s = T.raw_connect(port)
    s.sendall(prefix)
    s.settimeout(limit)
    try:
        s.recv(4096)
        out[key] = time.monotonic() - t0
    except socket.timeout:
        out[key] = None
    except OSError:
        out[key] = time.monotonic() - t0
    s.close()


HEAD = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
POST_HEAD = (b"POST /v1/segment HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
             b"Content-Length: %d\r\n\r\n" % len(good))

d = T.Daemon("--workers", "1", "--connection-timeout", CONN_TIMEOUT,
             "--request-timeout", REQ_TIMEOUT, "--max-connections", 24)
p = d.port
out = {}
limit_h = CONN_TIMEOUT + SLACK
limit_b = REQ_TIMEOUT + SLACK
ths = [threading.Thread(target=stall, args=(p, HEAD[:20], limit_h + 3, out, "stall"))]
ths += [threading.Thread(target=trickle, args=(p, b"", HEAD, limit_h + 3, out, f"hdr{i}"))
        for i in range(8)]
ths += [threading.Thread(target=trickle, args=(p, POST_HEAD, good, limit_b + 3, out, f"body{i}"))
        for i in range(4)]
for t in ths:
    t.start()
time.sleep(0.5)

# others are served while the slow clients hang on
lat = []
for _ in range(5):
    r = T.request(p, "GET", "/healthz", timeout=5)
    lat.append(r.elapsed if r.status == 200 else 99)
r = T.post_png(p, good, timeout=10)
T.check(max(lat) < 1.0, "13 slow clients: /healthz still answered at once",
        f"latencies {[round(x, 3) for x in lat]}")
T.check(r.status == 200 and T.same_masks(r.json(), ref) == "" and r.elapsed < 3.0,
        "13 slow clients: a segmentation still answered correctly", f"{r.status} {r.elapsed:.2f} s")
for t in ths:
    t.join()

T.check(out["stall"] is not None and out["stall"] <= limit_h,
        f"stalled headers cut within {limit_h:g} s", f"{out['stall']}")
hdr = [out[f"hdr{i}"] for i in range(8)]
T.check(all(x is not None and x <= limit_h for x in hdr),
        f"headers sent a byte every {STEP} s: cut within {limit_h:g} s (--connection-timeout {CONN_TIMEOUT})",
        f"seconds until closed (None: still open after {limit_h + 3:g} s): "
        f"{[None if x is None else round(x, 1) for x in hdr]}")
body = [out[f"body{i}"] for i in range(4)]
T.check(all(x is not None and x <= limit_b for x in body),
        f"body sent a byte every {STEP} s: cut within {limit_b:g} s (--request-timeout {REQ_TIMEOUT})",
        f"{[None if x is None else round(x, 1) for x in body]}")
T.note(f"slowloris: 1 stalled + 8 header tricklers + 4 body tricklers; cut after "
       f"{out['stall'] and round(out['stall'], 1)} / "
       f"{[None if x is None else round(x, 1) for x in hdr]} / "
       f"{[None if x is None else round(x, 1) for x in body]} s; /healthz max {max(lat) * 1e3:.0f} ms")
T.check(d.alive(), "daemon alive")
d.stop()

# every slot taken by slow clients: a normal client gets in once they are cut
MAXC = 6
d = T.Daemon("--workers", "1", "--connection-timeout", CONN_TIMEOUT, "--max-connections", MAXC)
p = d.port
out = {}
ths = [threading.Thread(target=trickle, args=(p, b"", HEAD * 4, 3 * CONN_TIMEOUT + 6, out, i))
       for i in range(MAXC)]
for t in ths:
    t.start()
time.sleep(0.5)
t0 = time.monotonic()
served = None
while time.monotonic() - t0 < CONN_TIMEOUT + SLACK + 3:
    try:
        r = T.request(p, "GET", "/healthz", timeout=2)
        if r.status == 200:
            served = time.monotonic() - t0
            break
    except OSError:
        pass
    time.sleep(0.2)
T.check(served is not None and served <= CONN_TIMEOUT + SLACK,
        f"all {MAXC} connection slots held by header tricklers: a normal client served within "
        f"{CONN_TIMEOUT + SLACK:g} s", f"served after {served} s")
T.note(f"slowloris slot exhaustion (--max-connections {MAXC}): normal client served after "
       f"{'never' if served is None else f'{served:.1f} s'}")
for t in ths:
    t.join()
T.check(d.alive(), "daemon alive")
T.check(d.stop() == 0, "SIGTERM: exit 0")
T.finish()
