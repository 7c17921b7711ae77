#!/usr/bin/python3
"""Concurrent identical and different requests on several workers: each
response must be `segd infer`'s document for its own input (size, masks,
pixel counts), carry its own X-Request-Id and ?id=, and multipart
responses must keep their parts in order.  Threads mix single PNG posts,
multipart posts of several slices, different thresholds, and keep-alive
connections reused across requests."""
import http.client
import random
import subprocess
import threading

import segdtest as T

THREADS = 12
PER_THREAD = 8
files = T.SLICES
bodies = [T.read(f) for f in files]
refs = [T.infer(f) for f in files]
# a second threshold: the reference comes from `segd infer --threshold`
ref_t = {}
for i, f in enumerate(files[:3]):
    out = subprocess.run([T.SEGD_BIN, "infer", "--weights", T.WEIGHTS, "--threshold", "0.3", f],
                         capture_output=True, check=True).stdout
    ref_t[i] = __import__("json").loads(out.decode().splitlines()[0])

d = T.Daemon("--workers", 3, "--queue-depth", 64, "--max-connections", 64)
p = d.port
problems = []
counts = {"single": 0, "multipart": 0, "threshold": 0}  # right answers by kind
statuses = {}  # every status seen: a run of 503s must not pass
lock = threading.Lock()


def bad(what):
    with lock:
        problems.append(what)


def worker(t):
    try:
        requests(t)
    except Exception as e:  # noqa: BLE001 - a thread that dies is a failed request, not a silent one
        bad((f"t{t}", "exception", repr(e)))


def requests(t):
    rnd = random.Random(t)
    conn = http.client.HTTPConnection("127.0.0.1", p, timeout=60)  # keep-alive
    for n in range(PER_THREAD):
        rid = f"t{t}-n{n}"
        kind = rnd.choice(["single", "single", "multipart", "threshold"])
        if t % 3 == 0:
            k = 0  # these threads all send the same slice at once
        else:
            k = rnd.randrange(len(files))
        if kind == "single":
            conn.request("POST", f"/v1/segment?id={rid}", bodies[k],
                         {"Content-Type": "image/png", "X-Request-Id": rid})
        elif kind == "threshold":
            k = k % 3
            conn.request("POST", f"/v1/segment?id={rid}&threshold=0.3", bodies[k],
                         {"Content-Type": "image/png", "X-Request-Id": rid})
        else:
            ks = [rnd.randrange(len(files)) for _ in range(3)]
            ct, body = T.multipart([("file", f"{rid}-{j}.png", "image/png", bodies[kk])
                                    for j, kk in enumerate(ks)])
            conn.request("POST", "/v1/segment", body, {"Content-Type": ct, "X-Request-Id": rid})
        r = conn.getresponse()
        raw = r.read()
        doc = T.Resp(r.status, {}, raw, 0).json()
        with lock:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.status != 200 or r.getheader("X-Request-Id") != rid:
            bad((rid, r.status, r.getheader("X-Request-Id")))
            continue
        if kind == "multipart":
            res = (doc or {}).get("results", [])
            if len(res) != 3:
                bad((rid, "parts", len(res)))
            for j, (kk, part) in enumerate(zip(ks, res)):
                why = T.same_masks(part, refs[kk])
                if why or part.get("id") != f"{rid}-{j}":
                    bad((rid, j, why, part.get("id")))
        else:
            ref = ref_t[k] if kind == "threshold" else refs[k]
            why = T.same_masks(doc, ref)
            if why or doc.get("id") != rid:
                bad((rid, kind, files[k], why, doc.get("id")))
        with lock:
            counts[kind] += 1
    conn.close()


ths = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
for t in ths:
    t.start()
for t in ths:
    t.join(300)
total = sum(counts.values())
T.check(not any(t.is_alive() for t in ths), "every client thread finished")
T.check(statuses == {200: THREADS * PER_THREAD}, f"all {THREADS * PER_THREAD} requests answered 200 "
        "(the queue is deep enough: a 503 here is a fault)", statuses)
T.check(not problems, f"{total} concurrent requests: each answer is its own input's document",
        problems[:5])
T.check(total == THREADS * PER_THREAD and all(counts.values()),
        "every request answered with its own document, each kind exercised", f"{total} {counts}")
T.note(f"cross-talk: {THREADS} threads x {PER_THREAD} requests on 3 workers ({counts['single']} single, "
       f"{counts['multipart']} multipart x 3 slices, {counts['threshold']} with threshold 0.3; "
       f"4 threads on the same slice): {len(problems)} mismatches")
T.check(d.stop() == 0, "SIGTERM: exit 0")
T.finish()
