#!/usr/bin/python3
"""Probes under connection exhaustion (issue 15, fault 2): sockets that
send nothing (or part of a header) must not starve /healthz.  With
--max-connections 16 and the 30 s --connection-timeout, 16 idle sockets
held open (and reopened as soon as one is cut) must not stop:
  - the probe listener (--probe-port): every /healthz, /readyz and
    /metrics answered;
  - the main port: idle connections are evicted at the limit, so a new
    client gets through within seconds, not after 30 s."""
import re
import socket
import threading
import time

import segdtest as T

MAXC = 16
d = T.Daemon("--workers", 1, "--max-connections", MAXC, "--connection-timeout", 30, "--probe-port", 0)
p = d.port
pp = None
for line in d.lines:
    m = re.search(r"probes on http://127\.0\.0\.1:(\d+)", line)
    if m:
        pp = int(m.group(1))
T.check(pp is not None and pp != p, f"probe listener on its own port ({pp})")
r = T.request(pp, "GET", "/v1/model")
T.check(r.status == 404, "the probe port serves only the probes", r)

stop = threading.Event()
held = []
lock = threading.Lock()


def attacker(reconnect):
    """keep MAXC idle connections (a few with half a header)"""
    while not stop.is_set():
        with lock:
            live = []
            for s in held:
                try:
                    s.setblocking(False)
                    if s.recv(1) == b"":
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    continue
                live.append(s)
            held[:] = live
            while len(held) < MAXC:
                try:
                    s = socket.create_connection(("127.0.0.1", p), timeout=2)
                except OSError:
                    break
                if len(held) % 4 == 0:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
                held.append(s)
        if not reconnect:
            return
        stop.wait(0.02)


attacker(False)
time.sleep(0.5)
t0 = time.monotonic()
got = None
while time.monotonic() - t0 < 10 and got is None:
    try:
        r = T.request(p, "GET", "/healthz", timeout=2)
        if r.status == 200:
            got = time.monotonic() - t0
    except OSError:
        time.sleep(0.1)
T.check(got is not None and got < 10, f"main port: a new client served {got and round(got, 2)} s after "
        f"{MAXC} idle sockets took every slot (idle timeout 30 s)")

th = threading.Thread(target=attacker, args=(True,))
th.start()
probe_ok = main_ok = n = 0
t_end = time.monotonic() + 6
while time.monotonic() < t_end:
    n += 1
    path = ("/healthz", "/readyz", "/metrics")[n % 3]
    try:
        probe_ok += T.request(pp, "GET", path, timeout=2).status == 200
    except OSError:
        pass
    try:
        main_ok += T.request(p, "GET", "/healthz", timeout=2).status == 200
    except OSError:
        pass
    time.sleep(0.2)
stop.set()
th.join(10)
for s in held:
    s.close()
T.check(probe_ok == n, f"probe port: {probe_ok} of {n} probes answered while an attacker reconnects at once")
T.note(f"probes: {MAXC} idle sockets + immediate reconnects: probe port {probe_ok}/{n}, main port "
       f"{main_ok}/{n}; first main-port answer after {got and round(got, 2)} s with every slot held idle")
T.check(d.stop() == 0, "clean exit")
T.finish()
