#!/usr/bin/python3
"""A stalled log reader (issue 15, fault 6): with stderr on a pipe nobody
reads and the access log on, the pipe fills after a few hundred lines.
The daemon must keep answering (logging never blocks the event loop or a
worker), count the lines it drops in segd_log_lines_dropped_total, and
still drain and exit on SIGTERM while the pipe stays full."""
import os
import signal
import subprocess
import tempfile
import time

import segdtest as T

tmp = tempfile.mkdtemp(prefix="segd-logstall-")
port_file = os.path.join(tmp, "port")
proc = subprocess.Popen([T.SEGD_BIN, "serve", "--bind", "127.0.0.1", "--port", "0", "--weights", T.WEIGHTS,
                         "--workers", "1", "--access-log", "on", "--port-file", port_file],
                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        preexec_fn=T._die_with_parent)
try:
    port = None
    t0 = time.monotonic()
    while port is None and time.monotonic() - t0 < 30 and proc.poll() is None:
        try:
            with open(port_file) as f:
                port = int(f.read())
        except (OSError, ValueError):
            time.sleep(0.05)
    T.check(port is not None, "daemon started (port file written)")
    ok = fails = 0
    t0 = time.monotonic()
    # ~150 bytes per access-log line: 4000 requests are 600 KB, more than
    # the 64 KiB pipe plus the daemon's 256 KiB log buffer
    for i in range(4000):
        try:
            r = T.request(port, "GET", "/healthz", timeout=3)
            ok += r.status == 200
        except OSError:
            fails += 1
            if fails >= 3:
                break
    dt = time.monotonic() - t0
    T.check(fails == 0, f"{ok} requests answered with the log pipe full ({fails} failed)")
    png = T.read(T.SLICES[0])
    try:
        r = T.post_png(port, png, timeout=10)
        seg = r.status
    except OSError as e:
        seg = type(e).__name__
    T.check(seg == 200, "a segmentation is answered too (the worker path logs nothing blocking)", seg)
    dropped = None
    try:
        dropped = T.metric(port, "segd_log_lines_dropped_total", None)
    except OSError:
        pass
    T.check(dropped is not None and dropped > 0, f"dropped lines counted ({dropped})")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(20)
    except subprocess.TimeoutExpired:
        rc = None
    T.check(rc == 0, f"SIGTERM with the pipe still full: exit {rc} in {time.monotonic() - t0:.2f} s")
    T.note(f"stalled log reader: {ok} requests answered in {dt:.1f} s, {dropped} log lines dropped and "
           f"counted, exit {rc} on SIGTERM")
finally:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
T.finish()
