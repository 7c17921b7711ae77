#!/usr/bin/python3
"""Shutdown edges (issue 15, fault 8):
  - a job already running is bounded by --drain-timeout: with 20 s jobs
    and a 1 s drain the daemon answers the running job 503 + Retry-After
    (the client is told, not reset) and exits 1 ("drain incomplete",
    documented) within seconds, not after the job;
  - a queued job whose client has gone (reset before its deadline) is
    dropped, not answered: no 504 counted as delivered, the job counted in
    segd_jobs_abandoned_total rather than segd_jobs_timed_out_total;
  - connections arriving while the daemon exits get an answer (503 while
    draining) or find the port closed (refused); none is reset."""
import signal
import socket
import threading
import time

import segdtest as T

png = T.read(T.SLICES[0])

# --- a running job and the end of the drain time
d = T.Daemon("--workers", 1, "--debug-job-delay", 20000, "--drain-timeout", 1)
out = []


def run():
    try:
        r = T.post_png(d.port, png, timeout=60)
        out.append((r.status, r.headers.get("retry-after")))
    except Exception as e:  # noqa: BLE001
        out.append((type(e).__name__, None))


t = threading.Thread(target=run)
t.start()
T.wait_for(lambda: T.metric(d.port, "segd_workers_busy", 0) >= 1, 10)
t0 = time.monotonic()
d.signal(signal.SIGTERM)
try:
    rc = d.proc.wait(30)
except Exception:  # noqa: BLE001
    rc = None
dt = time.monotonic() - t0
t.join(60)
T.check(rc == 1, f"drain incomplete: exit 1 (exit {rc})")
T.check(dt < 10, f"exit {dt:.2f} s after SIGTERM with a 1 s drain and a 20 s job (bounded by the drain, "
        "not the job)")
T.check(out and out[0][0] == 503 and out[0][1], "the running job is answered 503 + Retry-After", out)
T.check(any("drain incomplete" in x for x in d.lines), "the log says the drain was incomplete")
T.note(f"shutdown: 1 s drain with a 20 s job running: exit {rc} after {dt:.2f} s, the job answered {out[:1]}")
d.kill()

# --- a queued job whose client resets: dropped before its 504
d = T.Daemon("--workers", 1, "--queue-depth", 4, "--debug-job-delay", 2500, "--request-timeout", 1)
p = d.port
busy = []
t = threading.Thread(target=lambda: busy.append(T.post_png(p, png, timeout=60).status))
t.start()
T.wait_for(lambda: T.metric(p, "segd_workers_busy", 0) >= 1, 10)
s = T.raw_connect(p)
s.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
          f"Content-Length: {len(png)}\r\n\r\n".encode() + png)
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
s.close()  # reset: the client is gone before its deadline
t.join(60)
T.wait_for(lambda: T.workers_idle(p), 10)
time.sleep(0.5)
m = T.metrics(p)
delivered_504 = m.get('segd_http_requests_total{route="/v1/segment",code="504"}', 0)
T.check(busy == [200], "the running job is answered", busy)
T.check(delivered_504 == 0, f"no 504 counted as delivered ({delivered_504})")
T.check(m.get("segd_jobs_abandoned_total", 0) == 1 and m.get("segd_jobs_timed_out_total", 0) == 0,
        "the gone client's job is dropped (segd_jobs_abandoned_total), not timed out",
        f"abandoned {m.get('segd_jobs_abandoned_total')}, timed out {m.get('segd_jobs_timed_out_total')}")
T.check(d.stop() == 0, "clean exit")

# --- connections arriving up to the exit
resets = answered = refused = 0
kinds = set()
for attempt in range(3):
    d = T.Daemon("--workers", 1, "--debug-job-delay", 300, "--http-threads", 1)
    p = d.port
    done = threading.Event()
    seen = []

    def hammer():
        while not done.is_set():
            try:
                r = T.request(p, "GET", "/readyz", timeout=10)
                seen.append(r.status)
            except ConnectionRefusedError:
                seen.append("refused")
                return
            except Exception as e:  # noqa: BLE001 - reset, empty reply
                seen.append(type(e).__name__)

    job = threading.Thread(target=lambda: T.post_png(p, png, timeout=60))
    job.start()
    T.wait_for(lambda: T.metric(p, "segd_workers_busy", 0) >= 1, 10)
    hs = [threading.Thread(target=hammer) for _ in range(4)]
    for h in hs:
        h.start()
    d.signal(signal.SIGTERM)
    d.proc.wait(30)
    done.set()
    for h in hs:
        h.join(30)
    job.join(60)
    d.kill()
    answered += sum(1 for x in seen if isinstance(x, int))
    refused += seen.count("refused")
    resets += sum(1 for x in seen if not isinstance(x, int) and x != "refused")
    kinds.update(x for x in seen if not isinstance(x, int) and x != "refused")
# One race is left and documented (README, Reliability): a TCP handshake
# half-finished at the very instant the listener closes is reset by the
# kernel, which segd cannot answer.  That is at most about one connection per
# exit here; before the fix every exit reset several (5 in the run).
T.check(resets <= 3, f"connections during the exit: {answered} answered, {refused} refused, {resets} reset or "
        "empty (at most 1 per exit, 3 exits)", kinds)
T.note(f"exit under probe load (3 runs, 4 clients): {answered} answered, {refused} refused, {resets} reset")
T.finish()
