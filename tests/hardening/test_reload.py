#!/usr/bin/python3
"""Weights reloaded without dropping a request.  Four clients post a slice
without pause while the weights file is replaced and SIGHUP sent three
times: a good file (golden-w4-odd), a truncated one, a good one (the
shipped unet3p-16).  Every request must succeed and name the model that
produced it, its masks must equal `segd infer` with that file, the models
must follow each other in order for every client, the truncated file must
leave the previous model serving (log, /v1/model, counter), and answers
after each good reload must come from the new file.  Then POST
/v1/admin/reload reloads on request."""
import os
import shutil
import signal
import tempfile
import threading
import time

import segdtest as T

A = os.path.join(T.DATA, "golden-w4.safetensors")
B = os.path.join(T.DATA, "golden-w4-odd.safetensors")
C = os.path.join(T.ROOT, "weights", "unet3p-16.safetensors")
slice_path = T.SLICES[0]
png = T.read(slice_path)
ref = {}
for w in (A, B, C):
    doc = T.infer(slice_path, w)
    ref[doc["model"]["sha256"]] = doc["masks"]
sha = {w: T.infer(slice_path, w)["model"]["sha256"] for w in (A, B, C)}
T.check(len(set(sha.values())) == 3, "three different weights files", str(sha))

tmp = tempfile.mkdtemp(prefix="segd-reload-")
live = os.path.join(tmp, "weights.safetensors")


def replace(src, truncate=False):
    """Replace the live file as a deployment would: write beside, rename."""
    part = live + ".new"
    with open(src, "rb") as f:
        data = f.read()
    with open(part, "wb") as f:
        f.write(data[:len(data) // 2] if truncate else data)
    os.rename(part, live)


replace(A)
d = T.Daemon("--workers", "2", "--queue-depth", "16", weights=live, access_log=False)
p = d.port
stop = threading.Event()
results = [[] for _ in range(4)]


def client(k):
    while not stop.is_set():
        try:
            r = T.post_png(p, png, timeout=60)
            doc = r.json() or {}
            results[k].append((r.status, doc.get("model", {}).get("sha256"), doc.get("masks")))
        except Exception as e:  # noqa: BLE001
            results[k].append((0, None, repr(e)))


def current():
    return (T.request(p, "GET", "/v1/model").json() or {}).get("sha256")


threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
time.sleep(1.0)
steps = []
for src, bad in ((B, False), (C, True), (C, False)):
    replace(src, truncate=bad)
    t0 = time.monotonic()
    os.kill(d.pid, signal.SIGHUP)
    if bad:
        ok = T.wait_for(lambda: T.metric(p, "segd_model_reload_failures_total", 0) >= 1, 20.0)
        info = T.request(p, "GET", "/v1/model").json() or {}
        last = info.get("reload", {}).get("last", {})
        T.check(ok and info.get("sha256") == sha[B] and last.get("ok") is False and last.get("error"),
                "truncated file: refused, the previous model keeps serving, /v1/model says why",
                f"{info.get('sha256')} {last}")
        T.check(any("weights reload failed" in line for line in d.lines), "truncated file: logged")
        steps.append(("truncated", time.monotonic() - t0))
    else:
        ok = T.wait_for(lambda: current() == sha[src], 30.0)
        T.check(ok, f"SIGHUP: {os.path.basename(src)} in service", str(current()))
        steps.append((os.path.basename(src), time.monotonic() - t0))
    n0 = sum(len(r) for r in results)
    T.wait_for(lambda: sum(len(r) for r in results) >= n0 + 8, 60.0)
stop.set()
for t in threads:
    t.join()

allr = [x for r in results for x in r]
failed = [x for x in allr if x[0] != 200]
T.check(not failed, f"{len(allr)} requests during 3 reloads: none failed", str(failed[:3]))
T.check(all(x[1] in ref for x in allr), "every answer names a model that was in service")
wrong = [x[1] for x in allr if x[1] in ref and x[2] != ref[x[1]]]
T.check(not wrong, "every answer's masks equal segd infer with the model it names", f"{len(wrong)} differ")
order = {sha[A]: 0, sha[B]: 1, sha[C]: 2}
mono = all(all(order.get(a[1], -1) <= order.get(b[1], -1) for a, b in zip(r, r[1:])) for r in results)
T.check(mono, "each client sees the models in reload order (none goes back)")
seen = {x[1] for x in allr}
T.check(seen == set(ref), "answers came from all three good files", str(len(seen)))
tail = [r[-1][1] for r in results if r]
T.check(all(t == sha[C] for t in tail), "after the last reload every client gets the new model")
T.check(T.metric(p, "segd_model_reloads_total", 0) == 2 and T.metric(p, "segd_model_reload_failures_total", 0) == 1,
        "counters: 2 reloads, 1 failure")
mi = [k for k in T.metrics(p) if k.startswith("segd_model_info{")]
T.check(len(mi) == 1 and sha[C] in mi[0], "segd_model_info names the model in service", str(mi))
T.note("reloads: " + ", ".join(f"{n} {s:.2f} s" for n, s in steps) +
       f"; {len(allr)} requests, 0 failed" if not failed else "")

# on request: POST /v1/admin/reload
replace(A)
r = T.request(p, "POST", "/v1/admin/reload", b"", {"Content-Length": "0"})
doc = r.json() or {}
T.check(r.status == 200 and doc.get("model", {}).get("sha256") == sha[A] and current() == sha[A],
        "POST /v1/admin/reload: 200, the file's model in service", r.body[:200])
replace(A, truncate=True)
r = T.request(p, "POST", "/v1/admin/reload", b"", {"Content-Length": "0"})
T.check(r.status == 422 and current() == sha[A], "POST /v1/admin/reload, bad file: 422, the model stays",
        f"{r.status} {r.body[:200]!r}")
r = T.post_png(p, png)
T.check(r.status == 200 and (r.json() or {}).get("masks") == ref[sha[A]], "still answering with A")
rc = d.stop()
T.check(rc == 0, "SIGTERM: exit 0", f"rc {rc}\n{d.log()[-400:]}")
shutil.rmtree(tmp, ignore_errors=True)
T.finish()
