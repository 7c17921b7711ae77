#!/usr/bin/python3
"""Clients that vanish: mid-upload (headers + part of the body, then close)
and mid-inference (whole body, close while the job is queued or running).
The daemon must keep serving, free its worker (/metrics: no busy worker,
empty queue), release the connections promptly (not only when the idle
--connection-timeout fires), answer the next request correctly, and its
RSS must not grow over repeated rounds.  Last, "no work for nobody": 20
clients queue behind one busy worker and hang up; their jobs leave the
queue while the worker is still busy, none of them runs, and
segd_jobs_abandoned_total and the access log say so."""
import time

import segdtest as T

CONN_TIMEOUT = 6    # long enough that "released promptly" is not the idle timeout
ROUNDS = 6
PER_ROUND = 12

good_path = T.SLICES[0]
good = T.read(good_path)
ref = T.infer(good_path)
head = (b"POST /v1/segment HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\n\r\n" % len(good))


def mid_upload(port, cut):
    s = T.raw_connect(port)
    s.sendall(head + good[:cut])
    s.close()


def mid_inference(port, wait):
    s = T.raw_connect(port)
    s.sendall(head + good)
    time.sleep(wait)
    s.close()


def open_conns(port):
    """Connections other than the one asking."""
    return T.metric(port, "segd_connections_in_flight", 0) - 1


def settle(port, timeout):
    return T.wait_for(lambda: open_conns(port) <= 0 and T.workers_idle(port), timeout, 0.1)


d = T.Daemon("--workers", "1", "--queue-depth", "4", "--debug-job-delay", "50",
             "--connection-timeout", CONN_TIMEOUT)
p = d.port
for _ in range(5):  # warm-up: arenas, malloc pools, libpng
    T.post_png(p, good)

# 1. mid-upload, cut at several offsets (inside the first read, several reads in)
for cut in (0, 100, 5000, 30000, len(good) - 1):
    for _ in range(4):
        mid_upload(p, cut)
    t0 = time.monotonic()
    ok = T.wait_for(lambda: open_conns(p) <= 0, 3.0, 0.05)
    T.check(ok, f"mid-upload disconnect at byte {cut}: connections released within 3 s",
            f"{open_conns(p):.0f} still open after {time.monotonic() - t0:.1f} s "
            f"(--connection-timeout {CONN_TIMEOUT})")
    settle(p, CONN_TIMEOUT + 3)
T.check(d.alive() and T.request(p, "GET", "/healthz").status == 200, "alive after mid-upload disconnects")

# 2. mid-inference: close while the job runs, and while it is queued
for wait in (0.01, 0.03, 0.08):
    for _ in range(4):
        mid_inference(p, wait)
busy_free = T.wait_for(lambda: T.workers_idle(p), 60.0)
T.check(busy_free, "mid-inference disconnects: worker free and queue empty again (/metrics)")
T.check(T.wait_for(lambda: open_conns(p) <= 0, 3.0, 0.05),
        "mid-inference disconnects: connections released within 3 s", f"{open_conns(p):.0f} open")
r = T.post_png(p, good)
T.check(r.status == 200 and T.same_masks(r.json(), ref) == "",
        "next request answered correctly", f"{r.status} {T.same_masks(r.json(), ref)}")

# 3. RSS over repeated rounds of both kinds
settle(p, CONN_TIMEOUT + 3)
rss = []
for rnd in range(ROUNDS):
    for i in range(PER_ROUND):
        mid_upload(p, (i * 7919) % len(good))
        mid_inference(p, 0.01 * (i % 4))
    settle(p, CONN_TIMEOUT + 3)
    rss.append(d.rss_kb())
base = rss[1]  # after two rounds: the malloc arenas have their working size
growth = (rss[-1] - base) / base * 100.0
T.note(f"disconnects: {ROUNDS * PER_ROUND * 2} injected, RSS {base} -> {rss[-1]} kB ({growth:+.1f}%)")
T.check(growth < 3.0, f"RSS growth over {ROUNDS - 2} rounds of disconnects < 3%",
        f"{rss} kB")
r = T.post_png(p, good)
T.check(r.status == 200 and T.same_masks(r.json(), ref) == "", "still answering correctly")
rc = d.stop()
T.check(rc == 0, "SIGTERM: exit 0", f"rc {rc}\n{d.log()}")

# 4. no work for nobody: one worker busy for 3 s, 20 jobs queued behind it
# whose clients hang up
GHOSTS = 20
d = T.Daemon("--workers", "1", "--queue-depth", "32", "--debug-job-delay", "3000",
             "--request-timeout", "60", access_log=True)
p = d.port
runs0 = T.metric(p, "segd_inference_duration_seconds_count", 0)
busy = T.raw_connect(p)
busy.sendall(head + good)  # the worker takes it and sleeps 3 s first
T.wait_for(lambda: T.metric(p, "segd_workers_busy", 0) == 1, 5.0, 0.02)
ghosts = [T.raw_connect(p) for _ in range(GHOSTS)]
for g in ghosts:
    g.sendall(head + good)
queued = T.wait_for(lambda: T.metric(p, "segd_queue_depth", 0) == GHOSTS, 5.0, 0.02)
T.check(queued, f"{GHOSTS} jobs queued behind the busy worker", f"{T.metric(p, 'segd_queue_depth', 0)}")
t0 = time.monotonic()
for g in ghosts:
    g.close()
emptied = T.wait_for(lambda: T.metric(p, "segd_queue_depth", 0) == 0, 2.0, 0.02)
t_empty = time.monotonic() - t0
still_busy = T.metric(p, "segd_workers_busy", 0) == 1
T.check(emptied and still_busy, "hung-up clients' jobs leave the queue while the worker is still busy",
        f"queue {T.metric(p, 'segd_queue_depth', 0)}, busy {still_busy}, {t_empty:.2f} s")
abandoned = T.metric(p, "segd_jobs_abandoned_total", 0)
T.check(abandoned == GHOSTS, f"segd_jobs_abandoned_total = {GHOSTS}", f"{abandoned}")
busy.settimeout(30)
answer = busy.recv(64)  # the busy job's client stays and gets its answer
busy.close()
T.check(answer.startswith(b"HTTP/1.1 200"), "the client that stayed is answered", repr(answer[:40]))
T.wait_for(lambda: T.workers_idle(p), 10.0)
runs = T.metric(p, "segd_inference_duration_seconds_count", 0) - runs0
T.check(runs == 1, "the worker ran the busy job only, none of the abandoned ones", f"{runs} inferences")
T.wait_for(lambda: sum('"dropped":"client disconnected"' in line for line in d.lines) >= GHOSTS, 3.0)
dropped = sum('"dropped":"client disconnected"' in line for line in d.lines)
T.check(dropped == GHOSTS, f"access log: {GHOSTS} lines say dropped (client disconnected)", f"{dropped}")
T.note(f"abandoned jobs: {abandoned} of {GHOSTS} dropped {t_empty * 1000:.0f} ms after the hang-ups, "
       f"{runs} inference run")
rc = d.stop()
T.check(rc == 0, "SIGTERM after abandoned jobs: exit 0", f"rc {rc}\n{d.log()}")
T.finish()
