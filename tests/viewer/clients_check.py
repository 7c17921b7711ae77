#!/usr/bin/python3
"""clients_check: the API clients of examples/ against a real `segd serve`.

examples/curl.sh and examples/segd_client.py (Kaggle layout and flat
folder) and, when node is there, examples/viewer-snippet.js segment the
sample slices of tests/data; their masks, decoded, must equal those of
`segd infer` for the same files.

usage: clients_check.py [SEGD_EXE [WEIGHTS]]   (or $SEGD_EXE, $SEGD_TEST_WEIGHTS)
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATA = os.path.join(ROOT, "tests", "data")
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, os.path.join(ROOT, "tests", "hardening"))
import segdtest  # noqa: E402  the daemon harness of every Python test
SLICES = {  # file in tests/data -> (Kaggle case, day folder, file name in scans/)
    "case110_day16_slice_0070_360_310_1.50_1.50.png": ("case110", "case110_day16", "slice_0070_360_310_1.50_1.50.png"),
    "case101_day20_slice_0090_266_266_1.50_1.50.png": ("case101", "case101_day20", "slice_0090_266_266_1.50_1.50.png"),
}
DEADLINE = time.monotonic() + 240

passed = failed = skipped = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""))
    sys.stdout.flush()
    return ok


def left():
    return max(5.0, DEADLINE - time.monotonic())


def decode_rle(rle, npix):
    m = bytearray(npix)
    v = [int(t) for t in rle.split()]
    if len(v) % 2:
        raise ValueError("odd RLE")
    for s, n in zip(v[0::2], v[1::2]):
        if s < 1 or s - 1 + n > npix:
            raise ValueError("RLE out of range")
        m[s - 1:s - 1 + n] = b"\x01" * n
    return bytes(m)


def same_masks(got, ref):
    """got: {organ: rle}; ref: an infer document. '' when equal, else why."""
    npix = ref["width"] * ref["height"]
    if set(got) != set(ref["masks"]):
        return f"organs {sorted(got)} vs {sorted(ref['masks'])}"
    for organ, rle in ref["masks"].items():
        try:
            if decode_rle(got[organ], npix) != decode_rle(rle, npix):
                return f"{organ} differs"
        except ValueError as e:
            return f"{organ}: {e}"
    return ""


def main():
    exe = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SEGD_EXE", os.path.join(ROOT, "build", "segd")))
    weights = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.environ.get(
        "SEGD_TEST_WEIGHTS", os.path.join(ROOT, "weights", "unet3p-16.safetensors")))
    files = [os.path.join(DATA, f) for f in SLICES]

    out = subprocess.run([exe, "infer", "--weights", weights] + files, capture_output=True, text=True, timeout=left())
    ref = {}
    for line in out.stdout.splitlines():
        if line.strip():
            d = json.loads(line)
            ref[d["id"]] = d
    if not check("segd infer gives reference masks", out.returncode == 0 and len(ref) == len(files), out.stderr[-300:]):
        return

    tmp = tempfile.mkdtemp(prefix="segd-clients-")
    try:
        daemon = segdtest.Daemon("--workers", "1", weights=weights, binary=exe)
    except RuntimeError as e:
        check("segd serve starts", False, str(e)[-300:])
        shutil.rmtree(tmp, ignore_errors=True)
        return
    rc = None
    try:
        url = daemon.url
        env = dict(os.environ, SEGD_URL=url)
        run_curl(env, files, ref)
        run_python_client(url, tmp, ref)
        run_snippet(url, ref)
    finally:
        rc = daemon.stop(timeout=20)
        check("daemon drains and exits 0", rc == 0, f"exit {rc}")
        shutil.rmtree(tmp, ignore_errors=True)


def run_curl(env, files, ref):
    r = subprocess.run(["sh", os.path.join(EXAMPLES, "curl.sh")] + files, capture_output=True, text=True,
                       env=env, timeout=left())
    check("curl.sh exits 0", r.returncode == 0, r.stderr[-500:])
    lines = r.stdout.splitlines()
    try:
        single, multi, model = (json.loads(x) for x in lines[:3])
    except (ValueError, TypeError) as e:
        check("curl.sh prints segment, multipart and model documents", False, f"{e}: {r.stdout[:300]}")
        return
    first = os.path.splitext(os.path.basename(files[0]))[0]
    check("curl.sh raw PNG: id from ?id=", single.get("id") == first, single.get("id"))
    why = same_masks(single.get("masks", {}), ref[first])
    check("curl.sh raw PNG: masks = segd infer", not why, why)
    ids = [x.get("id") for x in multi.get("results", [])]
    want = [os.path.splitext(os.path.basename(f))[0] for f in files]
    check("curl.sh multipart: one result per file, ids from file names", ids == want, str(ids))
    for res in multi.get("results", []):
        if res.get("id") in ref:
            why = same_masks(res["masks"], ref[res["id"]])
            check(f"curl.sh multipart {res['id']}: masks = segd infer", not why, why)
    check("curl.sh shows the model", bool(model.get("name")) and bool(model.get("classes")))
    metrics = "\n".join(lines[3:])
    check("curl.sh shows the metrics", 'segd_http_requests_total{route="/v1/segment",code="200"}' in metrics
          and "segd_jobs_accepted_total" in metrics, metrics[:300])


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def check_csv(label, path, ref, want_ids):
    header, rows = read_csv(path)
    check(f"{label}: CSV header id,class,predicted", header == ["id", "class", "predicted"], str(header))
    by_id = {}
    for sid, cls, rle in rows:
        by_id.setdefault(sid, {})[cls] = rle
    check(f"{label}: CSV ids in the submission form", sorted(by_id) == sorted(want_ids.values()), str(sorted(by_id)))
    for infer_id, sid in want_ids.items():
        why = same_masks(by_id.get(sid, {}), ref[infer_id])
        check(f"{label}: {sid} decoded = segd infer", not why, why)


def run_python_client(url, tmp, ref):
    client = os.path.join(EXAMPLES, "segd_client.py")
    want = {os.path.splitext(f)[0]: f"{day}_slice_{name.split('_')[1]}" for f, (case, day, name) in SLICES.items()}

    # Kaggle layout, plus one broken slice: the others still land in the CSV
    train = os.path.join(tmp, "kaggle", "train")
    for f, (case, day, name) in SLICES.items():
        os.makedirs(os.path.join(train, case, day, "scans"), exist_ok=True)
        shutil.copy(os.path.join(DATA, f), os.path.join(train, case, day, "scans", name))
    broken = os.path.join(train, "case101", "case101_day20", "scans", "slice_0091_266_266_1.50_1.50.png")
    with open(broken, "wb") as f:
        f.write(b"not a png at all")
    out = os.path.join(tmp, "kaggle.csv")
    r = subprocess.run([sys.executable, client, "--url", url, "--out", out, "--batch", "2", train],
                       capture_output=True, text=True, timeout=left())
    check("segd_client.py (Kaggle layout, one broken file) exits 1 and names it",
          r.returncode == 1 and "case101_day20_slice_0091" in r.stderr and "not a PNG" in r.stderr, r.stderr[-400:])
    if os.path.exists(out):
        check_csv("segd_client.py Kaggle layout", out, ref, want)
    else:
        check("segd_client.py wrote the CSV", False)
    os.remove(broken)

    # flat folder of Kaggle-named files, one slice per request
    flat = os.path.join(tmp, "flat")
    os.makedirs(flat)
    for f in SLICES:
        shutil.copy(os.path.join(DATA, f), flat)
    out = os.path.join(tmp, "flat.csv")
    r = subprocess.run([sys.executable, client, "--url", url, "--out", out, "--batch", "1", "--quiet", flat],
                       capture_output=True, text=True, timeout=left())
    check("segd_client.py (flat folder) exits 0", r.returncode == 0, r.stderr[-400:])
    if os.path.exists(out):
        check_csv("segd_client.py flat folder", out, ref, want)

    r = subprocess.run([sys.executable, client, "--url", "http://127.0.0.1:9", "--out", os.path.join(tmp, "x.csv"), flat],
                       capture_output=True, text=True, timeout=left())
    check("segd_client.py reports an unreachable server", r.returncode == 1 and "cannot reach" in r.stderr, r.stderr[-300:])


SNIPPET_RUNNER = r"""
const [snippet, base, file, id] = process.argv.slice(1);
const { segment, decodeRle } = await import(snippet);
const png = (await import('node:fs')).readFileSync(file);
const r = await segment(new Uint8Array(png), base, { id });
const out = { id: r.id, masks: r.masks, counts: {} };
for (const [k, v] of Object.entries(r.masks)) out.counts[k] = decodeRle(v, r.width, r.height).reduce((a, b) => a + b, 0);
let err = '';
try { await segment(new Uint8Array([1, 2, 3]), base); } catch (e) { err = e.message; }
out.err = err;
console.log(JSON.stringify(out));
"""


def run_snippet(url, ref):
    node = shutil.which("node")
    if not node:
        global skipped
        skipped += 1
        print("SKIP: viewer-snippet.js: node not found")
        return
    f = next(iter(SLICES))
    infer_id = os.path.splitext(f)[0]
    r = subprocess.run([node, "--input-type=module", "-e", SNIPPET_RUNNER, "file://" + os.path.join(EXAMPLES, "viewer-snippet.js"),
                        url, os.path.join(DATA, f), "snippet-1"], capture_output=True, text=True, timeout=left())
    try:
        doc = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        check("viewer-snippet.js runs in node", False, r.stderr[-400:])
        return
    why = same_masks(doc["masks"], ref[infer_id])
    check("viewer-snippet.js: segment() masks = segd infer", doc["id"] == "snippet-1" and not why, why or doc["id"])
    npix = ref[infer_id]["width"] * ref[infer_id]["height"]
    want = {k: sum(decode_rle(v, npix)) for k, v in ref[infer_id]["masks"].items()}
    check("viewer-snippet.js: decodeRle() pixel counts", doc["counts"] == want, f"{doc['counts']} vs {want}")
    check("viewer-snippet.js: errors carry the server's message", doc["err"].startswith("segd 400: not a PNG"), doc["err"])


if __name__ == "__main__":
    try:
        main()
    except subprocess.TimeoutExpired as e:
        check("time limit", False, str(e))
    except Exception as e:  # noqa: BLE001 - report, count, fail
        check("unexpected error", False, repr(e))
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed or passed == 0 else 77 if skipped else 0)
