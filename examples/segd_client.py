#!/usr/bin/env python3
"""Segment a folder of PNG slices with a segd server and write a
submission-style CSV (id,class,predicted).  Standard library only.

    python3 examples/segd_client.py --url http://127.0.0.1:8080 \\
        --out submission.csv /data/uw-madison-gi-tract/train

PATH may be the Kaggle layout (train/caseX/caseX_dayY/scans/slice_*.png:
the id is caseX_dayY_slice_SSSS), a flat folder, or PNG files (a name that
starts with caseX_dayY_slice_SSSS gives that id, any other name its stem).
Slices go to POST /v1/segment as multipart/form-data batches (--batch parts
per request, --jobs requests in flight); a busy server (503, 504) is
retried after its Retry-After.  A batch the server refuses is retried one
slice at a time so that one bad file costs only itself.

A server started with --api-key-file wants "Authorization: Bearer KEY":
give the key with --api-key-file FILE (the first key of FILE, in the
server's key-file format) or in the environment variable SEGD_API_KEY,
never on the command line (shell history, ps).  A 401 stops the run.

Exit status: 0, 1 when some slices failed (the CSV has the others) or the
server refused the key (no CSV written), 2 on bad usage.
"""
import argparse
import concurrent.futures
import csv
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

KAGGLE_PATH = re.compile(r"(case\d+)[/\\](case\d+_day\d+)[/\\]scans[/\\]slice_(\d+)[^/\\]*\.png$", re.I)
KAGGLE_NAME = re.compile(r"^(case\d+_day\d+)_slice_(\d+)", re.I)
DEFAULT_CLASSES = ["large_bowel", "small_bowel", "stomach"]
API_KEY = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # segd's key alphabet (and nothing a header could break on)


class ServerError(Exception):
    def __init__(self, status, message, retry_after=None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.retry_after = retry_after


def api_key(path):
    """The API key to send: the first key of the file at path (one key a
    line, blank lines and # comments skipped, as segd's --api-key-file)
    or, without a path, $SEGD_API_KEY; None for neither.  ValueError
    when the file cannot be read or holds no key."""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                keys = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("#")]
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--api-key-file {path}: {getattr(e, 'strerror', None) or e}") from None
        if not keys:
            raise ValueError(f"--api-key-file {path}: no key in the file")
        key, where = keys[0], f"the first key of {path}"
    else:
        key, where = os.environ.get("SEGD_API_KEY", "").strip(), "SEGD_API_KEY"
        if not key:
            return None
    if not API_KEY.fullmatch(key):
        raise ValueError(f"{where} is not an API key (letters, digits, -._~+/ and = padding)")
    return key


def slice_id(path):
    """caseX_dayY_slice_SSSS for the Kaggle layout or name, else the stem."""
    m = KAGGLE_PATH.search(path)
    if m:
        return f"{m.group(2)}_slice_{m.group(3)}"
    name = os.path.basename(path)
    m = KAGGLE_NAME.match(name)
    if m:
        return f"{m.group(1)}_slice_{m.group(2)}"
    return os.path.splitext(name)[0]


def natural_key(s):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def find_slices(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in names if n.lower().endswith(".png"))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise SystemExit(f"segd_client: no such file or folder: {p}")
    files.sort(key=natural_key)
    slices, seen = [], {}
    for f in files:
        sid = slice_id(f)
        if sid in seen:
            raise SystemExit(f"segd_client: {f} and {seen[sid]} both have the id {sid}")
        seen[sid] = f
        slices.append((sid, f))
    return slices


def multipart_body(parts):
    """parts: [(id, bytes)] -> (body, content type); the file name carries the id."""
    boundary = "segd-" + uuid.uuid4().hex
    out = []
    for sid, data in parts:
        out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                   f"filename=\"{sid}.png\"\r\nContent-Type: image/png\r\n\r\n".encode())
        out.append(data)
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def http(url, data=None, ctype=None, timeout=300, key=None):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if ctype:
        req.add_header("Content-Type", ctype)
    req.add_header("Accept", "application/json")
    if key:  # not carried over to wherever a redirect points
        req.add_unredirected_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        try:
            msg = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = body.strip()[:200] or e.reason
        raise ServerError(e.code, msg, e.headers.get("Retry-After")) from None
    except (urllib.error.URLError, OSError) as e:
        raise ServerError(0, f"cannot reach the server: {getattr(e, 'reason', e)}") from None


class Client:
    def __init__(self, url, threshold=None, retries=5, timeout=300, key=None):
        self.base = url.rstrip("/")
        self.threshold = threshold
        self.retries = retries
        self.timeout = timeout
        self.key = key

    def model(self):
        return http(self.base + "/v1/model", timeout=self.timeout, key=self.key)

    def segment(self, batch):
        """batch: [(id, path)] -> [result], in order; retries 503/504."""
        parts = []
        for sid, path in batch:
            with open(path, "rb") as f:
                parts.append((sid, f.read()))
        body, ctype = multipart_body(parts)
        url = self.base + "/v1/segment"
        if self.threshold is not None:
            url += "?" + urllib.parse.urlencode({"threshold": self.threshold})
        for attempt in range(self.retries + 1):
            try:
                doc = http(url, body, ctype, self.timeout, self.key)
                results = doc["results"]
                if [r["id"] for r in results] != [sid for sid, _ in batch]:
                    raise ServerError(0, "the answer's ids do not match the request")
                return results
            except ServerError as e:
                if e.status not in (503, 504) or attempt == self.retries:
                    raise
                try:
                    wait = float(e.retry_after or 1)
                except ValueError:
                    wait = 1.0
                time.sleep(min(30.0, wait * (attempt + 1)))
        raise AssertionError("unreachable")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", metavar="PATH", help="folder (Kaggle layout or flat) or PNG files")
    ap.add_argument("--url", default=os.environ.get("SEGD_URL", "http://127.0.0.1:8080"),
                    help="segd server (default $SEGD_URL or http://127.0.0.1:8080)")
    ap.add_argument("--out", default="submission.csv", help="CSV to write ('-' for stdout)")
    ap.add_argument("--threshold", type=float, help="mask threshold, 0 < t < 1 (default: the model's)")
    ap.add_argument("--batch", type=int, default=4, help="slices per request (<= the server's --max-parts)")
    ap.add_argument("--jobs", type=int, default=2, help="requests in flight")
    ap.add_argument("--retries", type=int, default=5, help="retries of a busy (503/504) answer")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request")
    ap.add_argument("--api-key-file", metavar="FILE",
                    help="send the first key of FILE as Authorization: Bearer (default: $SEGD_API_KEY)")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.threshold is not None and not 0 < a.threshold < 1:
        ap.error("--threshold must be between 0 and 1")
    if a.batch < 1 or a.jobs < 1:
        ap.error("--batch and --jobs must be at least 1")
    try:
        key = api_key(a.api_key_file)
    except ValueError as e:
        ap.error(str(e))

    slices = find_slices(a.paths)
    if not slices:
        print("segd_client: no PNG slices found", file=sys.stderr)
        return 1
    log = (lambda *x: None) if a.quiet else (lambda *x: print(*x, file=sys.stderr))
    client = Client(a.url, a.threshold, a.retries, a.timeout, key)
    try:
        model = client.model()
        classes = model.get("classes") or DEFAULT_CLASSES
        log(f"segd_client: {len(slices)} slices, model {model.get('name')} at {client.base}")
    except ServerError as e:
        print(f"segd_client: {client.base}: {e}", file=sys.stderr)
        return 1

    results, failed = {}, {}
    refused = []  # the 401: every other request would get one too, so the rest is skipped
    stop = threading.Event()

    def run(batch):
        if stop.is_set():
            return batch, None, None
        try:
            return batch, client.segment(batch), None
        except ServerError as e:
            if e.status == 401:
                refused.append(e)
                stop.set()
                return batch, None, None
            if len(batch) == 1 or e.status in (0, 503, 504):
                return batch, None, e
            out, errs = [], {}
            for one in batch:  # isolate the slice the server refused
                try:
                    out.extend(client.segment([one]))
                except ServerError as e1:
                    errs[one[0]] = e1
            return batch, out, errs

    batches = [slices[i:i + a.batch] for i in range(0, len(slices), a.batch)]
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for batch, res, err in pool.map(run, batches):
            for r in res or []:
                results[r["id"]] = r
            if isinstance(err, dict):
                failed.update({sid: str(e) for sid, e in err.items()})
            elif err is not None:
                failed.update({sid: str(err) for sid, _ in batch})
            if not stop.is_set():
                log(f"segd_client: {len(results) + len(failed)}/{len(slices)} "
                    f"({time.monotonic() - t0:.1f} s)")
    if refused:
        how = "the key was refused" if key else "give its API key with --api-key-file FILE or SEGD_API_KEY"
        print(f"segd_client: {client.base}: {refused[0]} ({how}); no CSV written", file=sys.stderr)
        return 1

    out = sys.stdout if a.out == "-" else open(a.out, "w", newline="")
    try:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["id", "class", "predicted"])
        for sid, _ in slices:
            r = results.get(sid)
            if r is None:
                continue
            for c in classes:
                w.writerow([sid, c, r["masks"].get(c, "")])
    finally:
        if out is not sys.stdout:
            out.close()
    for sid, msg in failed.items():
        print(f"segd_client: {sid}: {msg}", file=sys.stderr)
    log(f"segd_client: wrote {len(results)} slices to {a.out}" + (f", {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
