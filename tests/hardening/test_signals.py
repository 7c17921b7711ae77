#!/usr/bin/python3
"""Signals other than TERM and INT (issue 15, fault 7): SIGUSR1 and
SIGUSR2 are ignored (the daemon keeps serving, the running job is
answered); SIGQUIT drains like SIGTERM (the accepted job is answered,
exit 0).  Neither drops an accepted job."""
import signal
import threading
import time

import segdtest as T

png = T.read(T.SLICES[0])
ref = T.infer(T.SLICES[0])


def post_in_thread(port, out):
    def run():
        try:
            r = T.post_png(port, png, timeout=60)
            out.append((r.status, T.same_masks(r.json(), ref)))
        except Exception as e:  # noqa: BLE001
            out.append((type(e).__name__, "no answer"))
    t = threading.Thread(target=run)
    t.start()
    return t


d = T.Daemon("--workers", 1, "--debug-job-delay", 1500)
for sig in (signal.SIGUSR1, signal.SIGUSR2):
    out = []
    t = post_in_thread(d.port, out)
    T.wait_for(lambda: T.metric(d.port, "segd_workers_busy", 0) >= 1, 10)
    d.signal(sig)
    t.join(60)
    time.sleep(0.2)
    T.check(d.alive(), f"{sig.name}: the daemon is still running")
    T.check(out == [(200, "")], f"{sig.name}: the running job is answered 200 with the right masks", out)
    if d.alive():
        T.check(T.request(d.port, "GET", "/readyz").status == 200, f"{sig.name}: still ready")

out = []
t = post_in_thread(d.port, out)
T.wait_for(lambda: T.metric(d.port, "segd_workers_busy", 0) >= 1, 10)
d.signal(signal.SIGQUIT)
try:
    rc = d.proc.wait(30)
except Exception:  # noqa: BLE001
    rc = None
t.join(60)
T.check(out == [(200, "")], "SIGQUIT: the accepted job is answered 200 (drained like SIGTERM)", out)
T.check(rc == 0, f"SIGQUIT: exit 0 after the drain (exit {rc})")
d.kill()
T.finish()
