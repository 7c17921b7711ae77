#!/usr/bin/python3
"""clients_check: the API clients of examples/ against a real `segd serve`.

examples/curl.sh and examples/segd_client.py (Kaggle layout and flat
folder) and, when node is there, examples/viewer-snippet.js segment the
sample slices of tests/data; their masks, decoded, must equal those of
`segd infer` for the same files.  Against a second daemon started with
--api-key-file, each client sends the key it is given (segd_client.py:
--api-key-file or SEGD_API_KEY; curl.sh: SEGD_API_KEY; the snippet: its
apiKey option or, in node, SEGD_API_KEY) and answers a missing or wrong
key with the server's 401 message.

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
    try:
        run_with_keys(exe, weights, tmp, files, ref)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


KEY = "clients-check-7d1e0b9a4c2f5e83"


def run_with_keys(exe, weights, tmp, files, ref):
    """The clients against a daemon with --api-key-file: the key given the
    way each client takes it, none, a wrong one."""
    keyfile = os.path.join(tmp, "segd.keys")
    with open(keyfile, "w") as f:  # segd's format: comments and blank lines before the key
        f.write(f"# segd API keys\n\n  {KEY}\nsecond-key-0123456789abcdef\n")
    try:
        daemon = segdtest.Daemon("--workers", "1", "--api-key-file", keyfile, weights=weights, binary=exe)
    except RuntimeError as e:
        check("segd serve --api-key-file starts", False, str(e)[-300:])
        return
    try:
        url = daemon.url
        base_env = {k: v for k, v in os.environ.items() if k != "SEGD_API_KEY"}
        first = os.path.splitext(os.path.basename(files[0]))[0]

        # curl.sh: SEGD_API_KEY, sent from a pipe: a curl in front of the
        # real one records the command lines, which must not hold the key
        shim = os.path.join(tmp, "bin")
        os.makedirs(shim)
        argv_log = os.path.join(tmp, "curl-argv")
        with open(os.path.join(shim, "curl"), "w") as f:
            f.write(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{argv_log}"\nexec {shutil.which("curl")} "$@"\n')
        os.chmod(os.path.join(shim, "curl"), 0o755)
        r = subprocess.run(["sh", os.path.join(EXAMPLES, "curl.sh"), files[0]], capture_output=True, text=True,
                           env=dict(base_env, SEGD_URL=url, SEGD_API_KEY=KEY,
                                    PATH=shim + os.pathsep + base_env.get("PATH", "")), timeout=left())
        try:
            doc = json.loads(r.stdout.splitlines()[0])
        except (ValueError, IndexError):
            doc = {}
        why = same_masks(doc.get("masks", {}), ref[first]) if doc.get("masks") else "no masks"
        check("curl.sh with SEGD_API_KEY: exit 0, masks = segd infer", r.returncode == 0 and not why,
              f"exit {r.returncode}: {why} {r.stderr[-300:]}")
        with open(argv_log) if os.path.exists(argv_log) else open(os.devnull) as f:
            argv = f.read()
        check("curl.sh: the key is on no curl command line", argv.count("\n") >= 3 and KEY not in argv, argv[-300:])
        r = subprocess.run(["sh", os.path.join(EXAMPLES, "curl.sh"), files[0]], capture_output=True, text=True,
                           env=dict(base_env, SEGD_URL=url), timeout=left())
        check("curl.sh without a key: fails with the server's 401 document",
              r.returncode != 0 and '"unauthorized"' in r.stdout, f"exit {r.returncode}: {r.stdout[-300:]}")
        r = subprocess.run(["sh", os.path.join(EXAMPLES, "curl.sh"), files[0]], capture_output=True, text=True,
                           env=dict(base_env, SEGD_URL=url, SEGD_API_KEY='x" -H "X-Evil: 1'), timeout=left())
        check("curl.sh refuses a SEGD_API_KEY that is no key (exit 2)", r.returncode == 2 and "SEGD_API_KEY" in r.stderr,
              f"exit {r.returncode}: {r.stderr[-300:]}")

        # segd_client.py: --api-key-file (the first key of a file in segd's format), SEGD_API_KEY
        client = os.path.join(EXAMPLES, "segd_client.py")
        flat = os.path.join(tmp, "flat-keys")
        os.makedirs(flat)
        for f in SLICES:
            shutil.copy(os.path.join(DATA, f), flat)
        want = {os.path.splitext(f)[0]: f"{day}_slice_{name.split('_')[1]}" for f, (case, day, name) in SLICES.items()}
        for label, args, env in [("--api-key-file", ["--api-key-file", keyfile], base_env),
                                 ("SEGD_API_KEY", [], dict(base_env, SEGD_API_KEY=KEY))]:
            out = os.path.join(tmp, f"keys-{label.strip('-')}.csv")
            r = subprocess.run([sys.executable, client, "--url", url, "--out", out, "--batch", "1", "--quiet", *args, flat],
                               capture_output=True, text=True, env=env, timeout=left())
            check(f"segd_client.py with {label}: exit 0", r.returncode == 0, r.stderr[-400:])
            if os.path.exists(out):
                check_csv(f"segd_client.py with {label}", out, ref, want)
        for label, args, env, says in [
                ("without a key", [], base_env, "--api-key-file FILE or SEGD_API_KEY"),
                ("with a wrong key", [], dict(base_env, SEGD_API_KEY="wrong-key-0123456789abcdef"), "invalid API key")]:
            out = os.path.join(tmp, "refused.csv")
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, client, "--url", url, "--out", out, "--batch", "1", "--jobs", "1",
                                *args, flat], capture_output=True, text=True, env=env, timeout=left())
            lines = [ln for ln in r.stderr.splitlines() if "401" in ln]
            check(f"segd_client.py {label}: exit 1, one line with the 401 and what to do, no CSV",
                  r.returncode == 1 and len(lines) == 1 and says in lines[0] and not os.path.exists(out),
                  f"exit {r.returncode} in {time.monotonic() - t0:.1f} s: {r.stderr[-400:]}")
        r = subprocess.run([sys.executable, client, "--url", url, "--api-key-file", os.path.join(tmp, "no-such-file"), flat],
                           capture_output=True, text=True, env=base_env, timeout=left())
        check("segd_client.py --api-key-file of a missing file: exit 2, named",
              r.returncode == 2 and "no-such-file" in r.stderr, f"exit {r.returncode}: {r.stderr[-300:]}")

        run_snippet_keys(url, ref, base_env)
    finally:
        rc = daemon.stop(timeout=20)
        check("daemon with --api-key-file drains and exits 0", rc == 0, f"exit {rc}")


SNIPPET_KEYS = r"""
const [snippet, base, file, key] = process.argv.slice(1);
const { segment } = await import(snippet);
const png = new Uint8Array((await import('node:fs')).readFileSync(file));
const out = {};
for (const [label, opts] of [['option', { apiKey: key }], ['env', {}], ['none', { apiKey: '' }]]) {
  try { out[label] = Object.keys((await segment(png, base, opts)).masks).length; } catch (e) { out[label] = e.message; }
}
console.log(JSON.stringify(out));
"""


def node_or_skip(what):
    """The node binary, or None after counting and naming the skip of what."""
    node = shutil.which("node")
    if not node:
        global skipped
        skipped += 1
        print(f"SKIP: {what}: node not found")
    return node


def run_snippet_keys(url, ref, base_env):
    node = node_or_skip("viewer-snippet.js with keys")
    if not node:
        return
    f = next(iter(SLICES))
    r = subprocess.run([node, "--input-type=module", "-e", SNIPPET_KEYS, "file://" + os.path.join(EXAMPLES, "viewer-snippet.js"),
                        url, os.path.join(DATA, f), KEY], capture_output=True, text=True,
                       env=dict(base_env, SEGD_API_KEY=KEY), timeout=left())
    try:
        doc = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        check("viewer-snippet.js with keys runs in node", False, r.stderr[-400:])
        return
    n = len(ref[os.path.splitext(f)[0]]["masks"])
    check("viewer-snippet.js: segment() with { apiKey }", doc.get("option") == n, str(doc))
    check("viewer-snippet.js: segment() with SEGD_API_KEY in node", doc.get("env") == n, str(doc))
    check("viewer-snippet.js: segment() without a key rejects with the 401 message",
          str(doc.get("none", "")).startswith("segd 401: Authorization: Bearer"), str(doc))


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
    node = node_or_skip("viewer-snippet.js")
    if not node:
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
