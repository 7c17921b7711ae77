#!/usr/bin/python3
"""Upload memory budget (issue 15, fault 1): bodies are buffered whole, so
many connections each sending all but the last byte of a large body
could take the daemon past its memory limit.  With --max-body 1M and
--max-body-total 4M, 40 such connections must leave at most 4 bodies
buffered: the others are answered 503 + Retry-After before their upload,
RSS grows by about the budget (not 40 MiB; the bound is loose enough for
the sanitizer builds' shadow memory), and once the connections go
the budget is free again."""
import socket
import time

import segdtest as T

N, BODY = 40, 1 << 20
d = T.Daemon("--workers", 1, "--max-body", "1M", "--max-body-total", "4M", "--max-connections", 64)
p = d.port
png = T.read(T.SLICES[0])
T.check(T.post_png(p, png).status == 200, "a normal request before")
T.wait_for(lambda: T.workers_idle(p), 10)
rss0 = d.rss_kb()

socks, early = [], []
head = (f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: {BODY}\r\n\r\n").encode()
for i in range(N):
    s = T.raw_connect(p)
    s.sendall(head)
    socks.append(s)
time.sleep(1.0)
answered = []
for s in socks:
    s.settimeout(0.2)
    try:
        data = s.recv(4096)
    except (socket.timeout, OSError):
        data = b""
    answered.append(data)
refused = [a for a in answered if a.startswith(b"HTTP/1.1 503")]
with_retry = [a for a in refused if b"retry-after:" in a.lower()]
# the rest send all but the last byte
for s, a in zip(socks, answered):
    if a:
        continue
    s.settimeout(10)
    try:
        s.sendall(png[:1] * (BODY - 1))
    except OSError:
        pass
time.sleep(1.0)
rss1 = d.rss_kb()
m = T.metrics(p)
T.check(len(refused) >= N - 4, f"{len(refused)} of {N} uploads refused before the upload (>= {N - 4})",
        [a[:40] for a in answered])
T.check(len(with_retry) == len(refused), "each refusal is a 503 with Retry-After")
T.check(m.get("segd_upload_bytes_reserved", -1) <= 4 * BODY, "reserved bytes within the budget",
        m.get("segd_upload_bytes_reserved"))
grow = (rss1 - rss0) / 1024
T.check(grow < 20, f"RSS grew {grow:.1f} MiB (budget 4 MiB; unbounded would be {N} MiB)")
for s in socks:
    s.close()
ok = T.wait_for(lambda: T.metric(p, "segd_upload_bytes_reserved", -1) == 0, 10)
T.check(ok, "budget released when the connections go", T.metric(p, "segd_upload_bytes_reserved"))
r = T.post_png(p, png)
T.check(r.status == 200, "a normal request after", r)
T.note(f"upload budget: {N} x 1 MiB uploads against --max-body-total 4M: {len(refused)} x 503 + Retry-After "
       f"before the upload, RSS +{grow:.1f} MiB")
T.check(d.stop() == 0, "clean exit")
T.finish()
