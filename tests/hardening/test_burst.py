#!/usr/bin/python3
"""A burst at 10x the queue capacity: --workers 1 --queue-depth 4 (capacity
5: one running, four waiting) and 50 requests released at once by a
barrier.  Beyond capacity only 503 + Retry-After (JSON error
"unavailable"); every accepted request answered 200 with the masks of
`segd infer` on the same file; /metrics agrees with what the clients saw;
nothing else (no resets, no 5xx other than 503, no hang)."""
import threading
import time

import segdtest as T

N = 50
WORKERS, QUEUE = 1, 4
files = T.SLICES
bodies = [T.read(f) for f in files]
refs = [T.infer(f) for f in files]

# --debug-job-delay makes each job last >= 150 ms so that the whole burst
# arrives while the first five are still held
d = T.Daemon("--workers", WORKERS, "--queue-depth", QUEUE, "--debug-job-delay", 150,
             "--max-connections", 128)
p = d.port
before = T.metrics(p)
barrier = threading.Barrier(N)
res = [None] * N


def client(i):
    k = i % len(files)
    barrier.wait()
    try:
        res[i] = (k, T.post_png(p, bodies[k], timeout=60,
                                headers={"X-Request-Id": f"burst-{i}"}))
    except Exception as e:  # noqa: BLE001 - any client-side failure counts
        res[i] = (k, e)


ths = [threading.Thread(target=client, args=(i,)) for i in range(N)]
t0 = time.monotonic()
for t in ths:
    t.start()
for t in ths:
    t.join(120)
elapsed = time.monotonic() - t0

ok = [r for _, r in res if isinstance(r, T.Resp) and r.status == 200]
busy = [r for _, r in res if isinstance(r, T.Resp) and r.status == 503]
other = [(k, r) for k, r in res if not (isinstance(r, T.Resp) and r.status in (200, 503))]
T.check(not other, "every response is 200 or 503", other[:3])
T.check(len(ok) >= WORKERS + QUEUE, f"at least capacity ({WORKERS + QUEUE}) accepted", len(ok))
T.check(len(busy) > 0, "the burst was over capacity (some 503)", len(busy))
bad503 = [r for r in busy if r.headers.get("retry-after") is None or r.error_code() != "unavailable"
          or "json" not in r.headers.get("content-type", "")]
T.check(not bad503, "every 503 has Retry-After and a JSON 'unavailable' error", bad503[:2])
wrong = [(k, T.same_masks(r.json(), refs[k])) for k, r in res
         if isinstance(r, T.Resp) and r.status == 200 and T.same_masks(r.json(), refs[k])]
T.check(not wrong, "every 200 has the masks of segd infer on its file", wrong[:3])
ids = [i for i, (k, r) in enumerate(res)
       if isinstance(r, T.Resp) and r.headers.get("x-request-id") != f"burst-{i}"]
T.check(not ids, "every response carries its own X-Request-Id", ids[:5])

after = T.metrics(p)
acc = after.get("segd_jobs_accepted_total", 0) - before.get("segd_jobs_accepted_total", 0)
rej = after.get("segd_jobs_rejected_total", 0) - before.get("segd_jobs_rejected_total", 0)
T.check(acc == len(ok) and rej == len(busy), "/metrics: accepted and rejected match the clients",
        f"accepted {acc} vs {len(ok)}, rejected {rej} vs {len(busy)}")
T.check(T.wait_for(lambda: T.workers_idle(p), 60), "worker free, queue empty afterwards")
T.note(f"burst: {N} concurrent requests at capacity {WORKERS + QUEUE} (workers {WORKERS}, "
       f"queue {QUEUE}): {len(ok)} x 200 (all correct), {len(busy)} x 503 + Retry-After, "
       f"{len(other)} other, {elapsed:.1f} s")

# a second burst with clients that retry after Retry-After: all served
res2 = [None] * 20
barrier = threading.Barrier(20)


def retrying(i):
    k = i % len(files)
    barrier.wait()
    for attempt in range(60):
        r = T.post_png(p, bodies[k], timeout=60)
        if r.status != 503:
            res2[i] = (k, r, attempt)
            return
        time.sleep(float(r.headers.get("retry-after", "1")) * 0.2)
    res2[i] = (k, r, attempt)


ths = [threading.Thread(target=retrying, args=(i,)) for i in range(20)]
for t in ths:
    t.start()
for t in ths:
    t.join(180)
good = [x for x in res2 if x and x[1].status == 200 and T.same_masks(x[1].json(), refs[x[0]]) == ""]
T.check(len(good) == 20, "20 clients honouring Retry-After: all eventually served correctly",
        [(x[1].status, x[2]) for x in res2 if x and x not in good][:3])
T.note(f"burst with retries: 20 clients, all served, max {max(x[2] for x in res2 if x)} retries each")
T.check(d.stop() == 0, "SIGTERM: exit 0")
T.finish()
