#!/usr/bin/python3
"""A deadline the client sets, and traces that cross the load balancer.

X-Request-Timeout: a job queued past the client's deadline is answered 504
as soon as the deadline passes (not when a worker frees up), the header is
capped by --request-timeout, and a malformed one is 400.

traceparent (W3C Trace Context): a valid one keeps its trace id and flags,
gets segd's own span id, comes back on every answer (errors included) and
its trace id is in the access log line; an absent or invalid one starts a
new trace."""
import re
import threading

import segdtest as T

good = T.read(T.SLICES[0])
TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

d = T.Daemon("--workers", "1", "--queue-depth", "8", "--debug-job-delay", "3000",
             "--request-timeout", "2", access_log=True)
p = d.port

# one long job keeps the only worker busy for 3 s
busy = threading.Thread(target=lambda: T.post_png(p, good, timeout=30))
busy.start()
T.wait_for(lambda: T.metric(p, "segd_workers_busy", 0) == 1, 5.0, 0.02)

results = {}


def timed(name, headers):
    r = T.post_png(p, good, headers=headers, timeout=30)
    results[name] = (r.status, r.elapsed, r)


# the longer deadline is queued first: the shorter one behind it must still
# expire on time (the reaper watches every queued job, not only the head)
threads = [threading.Thread(target=timed, args=("capped", {"X-Request-Timeout": "100"})),
           threading.Thread(target=timed, args=("0.5", {"X-Request-Timeout": "0.5"}))]
threads[0].start()
T.wait_for(lambda: T.metric(p, "segd_queue_depth", 0) == 1, 5.0, 0.01)
threads[1].start()
for t in threads:
    t.join()
busy.join()
st, _, r = results["0.5"]
T.check(st == 504 and r.elapsed < 1.2, "X-Request-Timeout: 0.5: 504 after ~0.5 s, not when the worker frees up",
        f"{st} after {r.elapsed:.2f} s")
st2, _, r2 = results["capped"]
T.check(st2 == 504 and 1.8 < r2.elapsed < 2.7, "X-Request-Timeout: 100 is capped by --request-timeout 2",
        f"{st2} after {r2.elapsed:.2f} s")
T.note(f"client deadline: 504 after {r.elapsed:.2f} s (asked 0.5 s); capped: {r2.elapsed:.2f} s (server 2 s)")
for bad in ("0", "-1", "abc", "1 ", "0x10", "inf", "nan", ""):
    r = T.post_png(p, good, headers={"X-Request-Timeout": bad})
    T.check(r.status == 400 and b"X-Request-Timeout" in r.body, f"X-Request-Timeout {bad!r}: 400",
            f"{r.status} {r.body[:100]!r}")

# traceparent
T.wait_for(lambda: T.workers_idle(p), 10.0)
tid = "4bf92f3577b34da6a3ce929d0e0e4736"
sent = f"00-{tid}-00f067aa0ba902b7-01"
for path, method, body, want in [("/healthz", "GET", None, 200), ("/no/such", "GET", None, 404),
                                 ("/v1/segment", "POST", b"not a png", 400)]:
    r = T.request(p, method, path, body, {"traceparent": sent, "Content-Type": "image/png"})
    m = TP.match(r.headers.get("traceparent", ""))
    T.check(r.status == want and m and m.group(1) == tid and m.group(3) == "01" and
            m.group(2) != "00f067aa0ba902b7",
            f"traceparent kept on {method} {path} ({want}), segd's own span id", r.headers.get("traceparent"))
r = T.request(p, "GET", "/healthz")
m = TP.match(r.headers.get("traceparent", ""))
T.check(bool(m) and m.group(1) != "0" * 32, "no traceparent: a new trace", r.headers.get("traceparent"))
fresh = set()
for bad in (f"00-{'0' * 32}-00f067aa0ba902b7-01", f"00-{tid}-{'0' * 16}-01", f"ff-{tid}-00f067aa0ba902b7-01",
            f"00-{tid.upper()}-00f067aa0ba902b7-01", f"00-{tid}-00f067aa0ba902b7-01-extra", "garbage"):
    r = T.request(p, "GET", "/healthz", headers={"traceparent": bad})
    m = TP.match(r.headers.get("traceparent", ""))
    T.check(bool(m) and m.group(1) != tid, f"invalid traceparent {bad[:40]!r}: a new trace",
            r.headers.get("traceparent"))
    fresh.add(m.group(1) if m else None)
T.check(len(fresh) == 6, "every new trace id differs", str(len(fresh)))
# a later version with more fields is accepted (the spec's forward compatibility)
r = T.request(p, "GET", "/healthz", headers={"traceparent": f"01-{tid}-00f067aa0ba902b7-00-more"})
m = TP.match(r.headers.get("traceparent", ""))
T.check(bool(m) and m.group(1) == tid and m.group(3) == "00", "version 01 with extra fields: trace kept",
        r.headers.get("traceparent"))
ok = T.wait_for(lambda: any(f'"trace_id":"{tid}"' in line for line in d.lines), 3.0)
T.check(ok, "the access log line carries the trace id")
rc = d.stop()
T.check(rc == 0, "SIGTERM: exit 0", f"rc {rc}\n{d.log()}")
T.finish()
