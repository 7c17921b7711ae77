#!/usr/bin/python3
"""Start-up refusals (issue 15, faults 4 and 5): a second `segd serve` on
a port already served must fail with "address in use" (no SO_REUSEPORT:
requests would split between two processes, perhaps with other weights),
and a FIFO given as --weights must be refused at once instead of hanging
start-up for ever."""
import os
import subprocess
import tempfile
import time

import segdtest as T

a = T.Daemon("--workers", 1)
t0 = time.monotonic()
try:
    p = subprocess.run([T.SEGD_BIN, "serve", "--bind", "127.0.0.1", "--port", str(a.port),
                        "--weights", T.WEIGHTS, "--workers", "1"], capture_output=True, timeout=30)
    rc, err = p.returncode, p.stderr.decode(errors="replace")
except subprocess.TimeoutExpired as e:  # the second daemon is serving
    rc, err = None, (e.stderr or b"").decode(errors="replace")
T.check(rc not in (0, None), f"second daemon on port {a.port}: exits non-zero (exit {rc})", err[-300:])
T.check("address in use" in err, "and says 'address in use'", err.strip()[-300:])
r = T.request(a.port, "GET", "/healthz")
T.check(r.status == 200, "the first daemon still answers", r)
T.check(a.stop() == 0, "first daemon: clean exit")

tmp = tempfile.mkdtemp(prefix="segd-startup-")
fifo = os.path.join(tmp, "weights.fifo")
os.mkfifo(fifo)
t0 = time.monotonic()
try:
    p = subprocess.run([T.SEGD_BIN, "serve", "--bind", "127.0.0.1", "--port", "0", "--weights", fifo],
                       capture_output=True, timeout=20)
    rc, err = p.returncode, p.stderr.decode(errors="replace")
except subprocess.TimeoutExpired as e:
    rc, err = None, (e.stderr or b"").decode(errors="replace")
dt = time.monotonic() - t0
T.check(rc not in (0, None), f"FIFO as --weights: refused without blocking (exit {rc}, {dt:.2f} s)", err[-300:])
T.check("not a regular file" in err, "the message says it is not a regular file", err.strip()[-300:])
T.note(f"start-up refusals: second daemon on a used port exit {rc and 'non-zero'}; FIFO weights refused in {dt:.2f} s")
T.finish()
