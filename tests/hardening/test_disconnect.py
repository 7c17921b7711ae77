#!/usr/bin/python3
"""Clients that vanish: mid-upload (headers + part of the body, then close)
and mid-inference (whole body, close while the job is queued or running).
The daemon must keep serving, free its worker (/metrics: no busy worker,
empty queue), release the connections promptly (not only when the idle
--connection-timeout fires), answer the next request correctly, and its
RSS must not grow over repeated rounds."""
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
T.finish()
