#!/usr/bin/python3
"""Allocation failures (issue 11, item 14): `segd serve` under the failmalloc
shim (LD_PRELOAD), which fails its Nth allocation once, for N over the
allocations of start-up and of a request mix (every route, a PNG, a
multipart of two, a bad PNG, a 404).  Each run must end in one of:
  - a clean start-up error: exit status 1 and a "segd serve: ..." line;
  - a daemon that answers every request of the mix either exactly as a run
    without failures does (status, masks, body) or 503 with a JSON error,
    and drains on SIGTERM with exit status 0.  One exception: when the
    failing allocation is libmicrohttpd's own (a connection it cannot set
    up), it closes that connection unanswered; at most one request may then
    get no answer, every other one must still be right;
never a crash (signal), a hang (bounded waits) or a wrong answer.

usage: test_oom.py SEGD_EXE LIBFAILMALLOC.so TESTS_DATA_DIR
env:   SEGD_OOM_MAX_RUNS (default 260): N values tried at most (start-up's
       all, when they fit, the request mix's evenly spaced)
Prints the runs and "N passed, N failed"; exits 1 on any failure."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

EXE, SHIM, DATA = (os.path.abspath(a) for a in sys.argv[1:4])
WEIGHTS = os.path.join(DATA, "golden-w4.safetensors")
PNG = open(os.path.join(DATA, "synthetic-37x53-grey8.png"), "rb").read()
PNG2 = open(os.path.join(DATA, "synthetic-37x53-rgb.png"), "rb").read()
MAX_RUNS = int(os.environ.get("SEGD_OOM_MAX_RUNS", "260"))
passed = failed = 0


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"  FAIL {name}: {detail}", flush=True)
    return cond


def multipart(files):
    b = "segdoomboundary"
    body = b""
    for name, data in files:
        body += (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                 f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={b}", body + f"--{b}--\r\n".encode()


MP_TYPE, MP_BODY = multipart([("a.png", PNG), ("b.png", PNG2)])
# (name, method, path, content type, body)
MIX = [("healthz", "GET", "/healthz", None, None),
       ("readyz", "GET", "/readyz", None, None),
       ("model", "GET", "/v1/model", None, None),
       ("png", "POST", "/v1/segment?id=one", "image/png", PNG),
       ("multipart", "POST", "/v1/segment", MP_TYPE, MP_BODY),
       ("bad png", "POST", "/v1/segment", "image/png", PNG[:200]),
       ("metrics", "GET", "/metrics", None, None),
       ("404", "GET", "/nope", None, None),
       ("png again", "POST", "/v1/segment?id=two", "image/png", PNG)]


def request(port, method, path, ctype, body):
    """(status, body bytes), or (None, reason) when no answer came."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
        r = c.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException) as e:
        return None, repr(e)
    finally:
        c.close()


def essence(name, status, body):
    """What must not change between runs: the status and, per route, the
    answer (masks, not timings; model document; error codes)."""
    if status is None:
        return None
    if name == "metrics":
        return (status, b"segd_http_requests_total" in body)
    try:
        doc = json.loads(body)
    except ValueError:
        return (status, body)
    if "results" in doc:
        return (status, [(d.get("id"), d.get("masks")) for d in doc["results"]])
    if "masks" in doc:
        return (status, doc.get("id"), doc["masks"], doc.get("pixels"))
    if "error" in doc:
        return (status, doc["error"].get("code"))
    return (status, doc)


class Run:
    """One daemon under the shim with FAILMALLOC_N=n (0: count only)."""

    def __init__(self, n, count_file):
        env = dict(os.environ, LD_PRELOAD=SHIM, FAILMALLOC_N=str(n), FAILMALLOC_COUNT_FILE=count_file,
                   OPENBLAS_NUM_THREADS="1")
        env.pop("SEGD_WEIGHTS", None)
        self.p = subprocess.Popen([EXE, "serve", "--bind", "127.0.0.1", "--port", "0", "--weights", WEIGHTS,
                                   "--workers", "1", "--http-threads", "1", "--queue-depth", "4",
                                   "--max-pixels", "100000", "--access-log", "on",
                                   "--drain-timeout", "20"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=env)
        self.lines, self.port = [], None
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.ready.set()
        self.ready.set()

    def start(self, timeout=60):
        """True when listening; False when it exited first."""
        self.ready.wait(timeout)
        return self.port is not None

    def stop(self):
        """SIGTERM, then the exit status (None: had to be killed: a hang)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None

    def log(self):
        return " | ".join(self.lines[-6:])


def scenario(n, mix=True):
    """Run the scenario once; (outcome, answers, allocation count)."""
    with tempfile.NamedTemporaryFile() as cf:
        r = Run(n, cf.name)
        answers = []
        if not r.start():
            rc = r.p.wait(timeout=40)
            outcome = ("startup", rc)
        else:
            for name, method, path, ctype, body in (MIX if mix else []):
                st, b = request(r.port, method, path, ctype, body)
                answers.append((name, st, b))
            outcome = ("served", r.stop())
        try:
            count = int(open(cf.name).read() or 0)
        except ValueError:
            count = 0
        return outcome, answers, count, r


def main():
    # reference: no failure; how many allocations start-up and the mix make
    (kind, rc), ref_answers, total, r = scenario(0)
    if not check(kind == "served" and rc == 0, "reference run without failures", r.log()):
        sys.exit(1)
    ref = {name: essence(name, st, b) for name, st, b in ref_answers}
    check(all(v is not None for v in ref.values()) and ref["png"][0] == 200 and ref["bad png"][0] == 400,
          "reference answers", ref)
    (kind, rc), _, startup, r = scenario(0, mix=False)
    check(kind == "served" and rc == 0 and 0 < startup < total, "start-up alone", (startup, total, r.log()))
    # every start-up allocation when they fit, the mix's evenly spaced
    ns = list(range(1, startup + 1))
    if len(ns) > MAX_RUNS // 2:
        step = len(ns) / (MAX_RUNS // 2)
        ns = sorted({1 + int(i * step) for i in range(MAX_RUNS // 2)} | {startup})
    rest = MAX_RUNS - len(ns)
    span = total - startup
    ns += sorted({startup + 1 + int(i * span / rest) for i in range(rest)} if span > rest
                 else range(startup + 1, total + 1))
    print(f"{startup} allocations at start-up, {total} with the request mix; trying {len(ns)} values of N",
          flush=True)
    outcomes = {"startup error": 0, "served": 0, "503s": 0, "unhit": 0, "closed by libmicrohttpd": 0}
    t0 = time.monotonic()
    for n in ns:
        (kind, rc), answers, _, r = scenario(n)
        hit = any(f"failing allocation {n} " in l for l in r.lines)
        outcomes["unhit"] += not hit
        if kind == "startup":
            outcomes["startup error"] += 1
            check(rc == 1 and any(l.startswith("segd serve:") for l in r.lines),
                  f"N={n}: start-up failure is a clean error (exit 1 and a message)", f"exit {rc}: {r.log()}")
            continue
        outcomes["served"] += 1
        in_mhd = any(f"failing allocation {n} " in l and "libmicrohttpd" in l for l in r.lines)
        unanswered = [name for name, st, _ in answers if st is None]
        if in_mhd and len(unanswered) == 1:
            outcomes["closed by libmicrohttpd"] += 1
            answers = [a for a in answers if a[1] is not None]
        for name, st, b in answers:
            if st == 503:
                outcomes["503s"] += 1
                check(b'"error"' in b, f"N={n}: {name}: 503 carries a JSON error", b[:100])
                continue
            got = essence(name, st, b)
            check(got == ref[name], f"N={n}: {name}: the right answer or 503",
                  f"got {str(got)[:160]}, want {str(ref[name])[:160]}; {r.log()}")
        check(rc == 0, f"N={n}: SIGTERM drains, exit 0", f"exit {rc}: {r.log()}")
    print(f"runs: {len(ns)} in {time.monotonic() - t0:.0f} s; {outcomes['startup error']} clean start-up errors, "
          f"{outcomes['served']} served ({outcomes['503s']} answers 503, "
          f"{outcomes['closed by libmicrohttpd']} connections libmicrohttpd could not set up), "
          f"{outcomes['unhit']} where the Nth allocation never came", flush=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
