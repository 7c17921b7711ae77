#!/usr/bin/python3
"""valgrind memcheck over a short integration scenario:

    valgrind --error-exitcode=1 --leak-check=full segd serve --workers 1 ...

then every route (healthz, readyz, model, metrics, 404, 405, OPTIONS), good
PNG and multipart segmentations, malformed PNGs, a 415, a body over
--max-body, a client vanishing mid-upload and one mid-inference, a 503 from
a full queue, and SIGTERM.  The daemon must exit 0 with "ERROR SUMMARY: 0
errors" and no definite or indirect leak.  Skipped (exit 77, never a
pass) when valgrind is not installed."""
import os
import re
import shutil
import signal
import threading
import time

import segdtest as T

if not shutil.which("valgrind"):
    T.skip("valgrind is not installed (apt-get install valgrind)")

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")  # no AVX-512 under valgrind
VG = ["valgrind", "--error-exitcode=1", "--leak-check=full", "--show-leak-kinds=definite,indirect",
      "--errors-for-leak-kinds=definite,indirect", "--num-callers=30", "--track-fds=no"]
small = T.read(T.SLICES[2])  # 37x53: cheap under valgrind
big = T.read(T.SLICES[0])
ref_small = T.infer(T.SLICES[2])

t0 = time.monotonic()
d = T.Daemon("--workers", 1, "--queue-depth", 1, "--max-body", 200000, "--debug-job-delay", 300,
             "--connection-timeout", 5, wrapper=VG, start_timeout=180, access_log=True)
p = d.port
T.check(True, f"segd serve started under valgrind in {time.monotonic() - t0:.1f} s")
for path, status in (("/healthz", 200), ("/readyz", 200), ("/v1/model", 200), ("/metrics", 200),
                     ("/nope", 404)):
    r = T.request(p, "GET", path, timeout=120)
    T.check(r.status == status, f"GET {path}: {status}", r)
T.check(T.request(p, "GET", "/v1/segment", timeout=60).status == 405, "GET /v1/segment: 405")
T.check(T.request(p, "OPTIONS", "/v1/segment", timeout=60).status == 204, "OPTIONS: 204")
r = T.post_png(p, small, timeout=300)
T.check(r.status == 200 and T.same_masks(r.json(), ref_small) == "", "PNG: 200, right masks", r)
ct, body = T.multipart([("file", "a.png", "image/png", small), ("file", "b.png", None, small)])
r = T.post_png(p, body, ctype=ct, timeout=300)
T.check(r.status == 200 and len((r.json() or {}).get("results", [])) == 2, "multipart: 200", r)
T.check(T.post_png(p, small[:300], timeout=120).status == 400, "truncated PNG: 400")
T.check(T.post_png(p, b"not a png at all", timeout=120).status == 400, "not a PNG: 400")
T.check(T.post_png(p, small, ctype="text/plain", timeout=120).status == 415, "text/plain: 415")
T.check(T.post_png(p, small, path="/v1/segment?threshold=2", timeout=120).status == 400,
        "threshold=2: 400")
try:
    r = T.post_png(p, big * 4, timeout=120)
    T.check(r.status == 413, "over --max-body: 413", r)
except OSError:
    T.check(True, "over --max-body: connection closed early (413 sent before the body)")
head = (b"POST /v1/segment HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\n\r\n" % len(small))
s = T.raw_connect(p)
s.sendall(head + small[:200])
s.close()
s = T.raw_connect(p)
s.sendall(head + small)
time.sleep(0.1)
s.close()
# queue full: one running, one queued, the third refused
res = []
ths = [threading.Thread(target=lambda: res.append(T.post_png(p, small, timeout=300).status))
       for _ in range(3)]
for t in ths:
    t.start()
    time.sleep(0.15)
for t in ths:
    t.join(300)
T.check(503 in res and 200 in res, "full queue: 200s and a 503", res)
T.wait_for(lambda: T.workers_idle(p), 60, 0.5)

d.signal(signal.SIGTERM)
try:
    rc = d.proc.wait(300)
except Exception:  # noqa: BLE001
    d.kill()
    rc = None
d._reader.join(10)
text = "\n".join(d.lines)
m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
errors = int(m.group(1)) if m else None
leaks = re.findall(r"(definitely|indirectly) lost: ([\d,]+) bytes", text)
T.check(rc == 0, "exit status 0 under valgrind (--error-exitcode=1)", f"rc {rc}")
T.check(errors == 0, "ERROR SUMMARY: 0 errors", f"{errors}\n" + "\n".join(
    [ln for ln in d.lines if ln.startswith("==")][-60:]))
T.check(all(v == "0" for _, v in leaks), "no definite or indirect leak", leaks)
T.note(f"valgrind memcheck: 20 requests + 2 disconnects + SIGTERM: {errors} errors, "
       f"leaks {leaks or 'none reported'}, exit {rc}, {time.monotonic() - t0:.0f} s")
T.finish()
