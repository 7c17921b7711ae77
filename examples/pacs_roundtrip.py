#!/usr/bin/env python3
"""Segment one MR series of a PACS with segd and store the results back.

Round trip with any PACS that speaks DICOMweb (tested against Orthanc with
its DICOMweb plugin, tests/dicom/check_orthanc.py):

 1. WADO-RS  GET  {pacs}/studies/{study}/series/{series}
             Accept: multipart/related; type="application/dicom"
    -> the series' Part-10 instances, one part each.
 2. segd     POST {segd}/v1/series?format=seg,rtstruct
             Content-Type: multipart/related; type="application/dicom" (the parts as fetched)
             Accept: multipart/related; type="application/dicom"
    -> a DICOM Segmentation and an RT Structure Set in the same study and
    frame of reference, referencing the posted instances.  When segd
    cannot answer multipart (406), two requests instead: format=seg and
    format=rtstruct, each with Accept: application/dicom.  503 is retried
    after its Retry-After (--retries times).
 3. STOW-RS  POST {pacs}/studies
             Content-Type: multipart/related; type="application/dicom"
             Accept: application/dicom+json
    -> the PACS's store report: every object must be in its
    ReferencedSOPSequence, and FailedSOPSequence must be absent.

    python3 examples/pacs_roundtrip.py --pacs http://127.0.0.1:8042/dicom-web \\
        --segd http://127.0.0.1:8080 --study 1.2.3... --series 1.2.3...

stdout: one line per stored object, `KIND SOPInstanceUID SeriesInstanceUID`
(KIND is SEG or RTSTRUCT); progress goes to stderr.  --out DIR also writes
the objects there (KIND.dcm); --no-store stops before step 3, and its
lines say so: `not-stored KIND SOPInstanceUID SeriesInstanceUID`;
--separate goes straight to the two-request form of step 2.

A segd started with --api-key-file wants "Authorization: Bearer KEY": give
the key with --api-key-file FILE (the first key of FILE, in segd's key-file
format) or in the environment variable SEGD_API_KEY, never on the command
line (shell history, ps).  The key goes to segd only, never to the PACS.

Exit status: 0 stored (with --no-store: made); 2 usage; 3 the PACS fetch
(WADO-RS) failed; 4 segd failed (its JSON error `{"error": {"code",
"message"}}` is printed; 401: the key is missing or wrong); 5 the PACS store
(STOW-RS) failed or reported a failed object.  Standard library only
(Python 3.8+).
"""
import argparse
import json
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4": "SEG", "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT"}
EXIT_FETCH, EXIT_SEGD, EXIT_STORE = 3, 4, 5
API_KEY = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # segd's key alphabet (and nothing a header could break on)


class StepError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def api_key(path):
    """segd's API key: the first key of the file at path (one key a line,
    blank lines and # comments skipped, as segd's --api-key-file) or,
    without a path, $SEGD_API_KEY; None for neither.  ValueError when the
    file cannot be read or holds no key."""
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


# ---------------------------------------------------------------- HTTP

def request(url, data=None, headers=None, method=None, timeout=300, key=None):
    """(status, headers, body); an HTTP error status is returned, not raised.
    Connection failures raise OSError (urllib's URLError is one).  key: an
    API key, sent as Authorization: Bearer."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    if key:  # not carried over to wherever a redirect points
        req.add_unredirected_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def describe_error(status, headers, body):
    """HTTP status plus the server's message: segd's {"error": {"code",
    "message"}}, another JSON body, or the start of the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        e = doc["error"]
        return f"HTTP {status} {e.get('code', '')}: {e.get('message', '')}".replace(" :", ":")
    if doc is not None:
        return f"HTTP {status}: {json.dumps(doc)[:500]}"
    return f"HTTP {status}" + (f": {text[:500]}" if text else "")


# ---------------------------------------------------------------- multipart

def content_type_params(content_type):
    """('multipart/related', {param: value}) with quotes removed."""
    fields = content_type.split(";")
    params = {}
    for f in fields[1:]:
        k, _, v = f.strip().partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        params[k.strip().lower()] = v
    return fields[0].strip().lower(), params


def multipart_parts(body, content_type):
    """[(headers dict with lower-case names, bytes)] of a multipart body
    (RFC 2046: preamble and epilogue ignored, CRLF before each delimiter
    belongs to it).  ValueError when it is not multipart or is malformed."""
    mtype, params = content_type_params(content_type or "")
    if not mtype.startswith("multipart/"):
        raise ValueError(f"not multipart: Content-Type {content_type!r}")
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError(f"no boundary in Content-Type {content_type!r}")
    delim = b"--" + boundary.encode("latin-1")
    pos = 0 if body.startswith(delim) else body.find(b"\r\n" + delim)
    if pos < 0:
        raise ValueError("no multipart delimiter in the body")
    if pos > 0 or not body.startswith(delim):
        pos += 2
    parts = []
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise ValueError("truncated multipart body")
        start = eol + 2
        end = body.find(b"\r\n" + delim, start)
        if end < 0:
            raise ValueError("multipart body without its closing delimiter")
        chunk = body[start:end]
        if chunk.startswith(b"\r\n"):
            head, data = b"", chunk[2:]
        else:
            head, sep, data = chunk.partition(b"\r\n\r\n")
            if not sep:
                raise ValueError("multipart part without a header/body separator")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        parts.append((headers, data))
        pos = end + 2


def multipart_body(parts):
    """(body, Content-Type) of multipart/related application/dicom parts."""
    boundary = "segd-" + uuid.uuid4().hex
    chunks = []
    for p in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), p, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"{DICOM_MULTIPART}; boundary={boundary}"


def dicom_parts(body, content_type, what):
    """The Part-10 instances of a multipart/related application/dicom body."""
    parts = multipart_parts(body, content_type)
    out = []
    for k, (headers, data) in enumerate(parts):
        ptype = content_type_params(headers.get("content-type", "application/dicom"))[0]
        if ptype != "application/dicom":
            raise ValueError(f"{what}: part {k + 1} is {ptype}, not application/dicom")
        if data[128:132] != b"DICM":
            raise ValueError(f"{what}: part {k + 1} is not a DICOM Part-10 file (no DICM prefix)")
        out.append(data)
    return out


# ---------------------------------------------------------------- DICOM (a few top-level UIDs)

EXPLICIT_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                 b"UT", b"UV"}
WANTED = {(0x0008, 0x0016): "SOPClassUID", (0x0008, 0x0018): "SOPInstanceUID",
          (0x0010, 0x0020): "PatientID", (0x0020, 0x000D): "StudyInstanceUID",
          (0x0020, 0x000E): "SeriesInstanceUID", (0x0020, 0x0052): "FrameOfReferenceUID"}


def _skip_items(buf, pos, explicit):
    """Past the items and the sequence delimiter of an undefined-length
    element (a sequence, or encapsulated pixel data's fragments)."""
    while True:
        group, elem, length = struct.unpack_from("<HHI", buf, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):  # sequence delimitation item
            return pos
        if (group, elem) != (0xFFFE, 0xE000):
            raise ValueError(f"({group:04X},{elem:04X}) where an item was expected")
        pos = _walk(buf, pos, explicit, None) if length == 0xFFFFFFFF else pos + length


def _walk(buf, pos, explicit, found):
    """Walk data elements from pos.  found: a dict for the top level (the
    WANTED values go there), None inside an undefined-length item (the walk
    ends after its item delimiter)."""
    while pos + 8 <= len(buf):
        group, elem = struct.unpack_from("<HH", buf, pos)
        if (group, elem) == (0xFFFE, 0xE00D):  # item delimitation item
            return pos + 8
        vr = buf[pos + 4:pos + 6]
        if explicit and vr in EXPLICIT_LONG:
            length, pos = struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
        elif explicit:
            length, pos = struct.unpack_from("<H", buf, pos + 6)[0], pos + 8
        else:
            length, pos = struct.unpack_from("<I", buf, pos + 4)[0], pos + 8
        if length == 0xFFFFFFFF:
            pos = _skip_items(buf, pos, explicit)
            continue
        if found is not None and (group, elem) in WANTED:
            found[WANTED[(group, elem)]] = buf[pos:pos + length].decode("ascii", "replace").rstrip("\0 ")
        pos += length
    if found is None:
        raise ValueError("truncated item")
    return pos


def dicom_summary(data):
    """The UIDs above (and TransferSyntaxUID) of a Part-10 file in Explicit
    or Implicit VR Little Endian; only the file meta for other syntaxes."""
    if data[128:132] != b"DICM":
        raise ValueError("not a DICOM Part-10 file")
    pos, meta = 132, {}
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        elem = struct.unpack_from("<H", data, pos + 2)[0]
        vr = data[pos + 4:pos + 6]
        if vr in EXPLICIT_LONG:
            length, hdr = struct.unpack_from("<I", data, pos + 8)[0], 12
        else:
            length, hdr = struct.unpack_from("<H", data, pos + 6)[0], 8
        meta[elem] = data[pos + hdr:pos + hdr + length].decode("ascii", "replace").rstrip("\0 ")
        pos += hdr + length
    found = {"TransferSyntaxUID": meta.get(0x0010, ""), "SOPClassUID": meta.get(0x0002, ""),
             "SOPInstanceUID": meta.get(0x0003, "")}
    ts = found["TransferSyntaxUID"]
    if ts in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
        _walk(data, pos, ts == "1.2.840.10008.1.2.1", found)
    return found


# ---------------------------------------------------------------- the three steps

def fetch_series(pacs, study, series, timeout):
    url = f"{pacs}/studies/{urllib.parse.quote(study)}/series/{urllib.parse.quote(series)}"
    try:
        status, headers, body = request(url, headers={"Accept": DICOM_MULTIPART}, timeout=timeout)
    except OSError as e:
        raise StepError(EXIT_FETCH, f"WADO-RS GET {url}: {e}")
    if status != 200:
        raise StepError(EXIT_FETCH, f"WADO-RS GET {url}: {describe_error(status, headers, body)}")
    try:
        instances = dicom_parts(body, headers.get("Content-Type", ""), "WADO-RS answer")
    except ValueError as e:
        raise StepError(EXIT_FETCH, f"WADO-RS GET {url}: {e}")
    if not instances:
        raise StepError(EXIT_FETCH, f"WADO-RS GET {url}: the series has no instances")
    return instances


def post_segd(url, body, content_type, accept, timeout, retries, key):
    """(status, headers, body) of one segd request, 503 retried after Retry-After."""
    for attempt in range(retries + 1):
        try:
            status, headers, answer = request(url, data=body, method="POST", timeout=timeout,
                                              headers={"Content-Type": content_type,
                                                       "Accept": accept}, key=key)
        except OSError as e:
            raise StepError(EXIT_SEGD, f"segd POST {url}: {e}")
        if status == 401:  # no retry, and no second request on the 406 path either
            how = "the key was refused" if key else "give its API key with --api-key-file FILE or SEGD_API_KEY"
            raise StepError(EXIT_SEGD, f"segd POST {url}: {describe_error(status, headers, answer)} ({how})")
        if status != 503 or attempt == retries:
            return status, headers, answer
        try:
            wait = min(float(headers.get("Retry-After", "1")), 60.0)
        except ValueError:
            wait = 1.0
        log(f"segd busy (503), retrying in {wait:g} s")
        time.sleep(wait)
    raise AssertionError("unreachable")


def segment(segd, instances, query, timeout, retries, separate=False, key=None):
    """[(kind, Part-10 bytes, UIDs)]: SEG then RTSTRUCT."""
    body, ctype = multipart_body(instances)
    base = f"{segd.rstrip('/')}/v1/series"
    url = f"{base}?{urllib.parse.urlencode({'format': 'seg,rtstruct', **query}, safe=',')}"
    if separate:
        status, headers, answer = 406, {}, b""
    else:
        status, headers, answer = post_segd(url, body, ctype, DICOM_MULTIPART, timeout, retries, key)
    if status == 200:
        try:
            results = dicom_parts(answer, headers.get("Content-Type", ""), "segd answer")
        except ValueError as e:
            raise StepError(EXIT_SEGD, f"segd POST {url}: {e}")
    elif status == 406:
        if not separate:
            log(f"segd cannot answer multipart ({describe_error(status, headers, answer)}); "
                "asking for the SEG and the RTSTRUCT one at a time")
        results = []
        for fmt in ("seg", "rtstruct"):
            url = f"{base}?{urllib.parse.urlencode({'format': fmt, **query})}"
            status, headers, answer = post_segd(url, body, ctype, "application/dicom", timeout,
                                                retries, key)
            if status != 200:
                raise StepError(EXIT_SEGD, f"segd POST {url}: {describe_error(status, headers, answer)}")
            if answer[128:132] != b"DICM":
                raise StepError(EXIT_SEGD, f"segd POST {url}: the answer "
                                f"({headers.get('Content-Type')}) is not a DICOM Part-10 file")
            results.append(answer)
    else:
        raise StepError(EXIT_SEGD, f"segd POST {url}: {describe_error(status, headers, answer)}")
    out = []
    for data in results:
        try:
            s = dicom_summary(data)
        except (ValueError, struct.error) as e:
            raise StepError(EXIT_SEGD, f"segd answer: unreadable DICOM object: {e}")
        kind = SOP_CLASSES.get(s["SOPClassUID"])
        if not kind:
            raise StepError(EXIT_SEGD, f"segd answer: unexpected SOP class {s['SOPClassUID']!r}")
        out.append((kind, data, s))
    kinds = sorted(k for k, _, _ in out)
    if kinds != ["RTSTRUCT", "SEG"]:
        raise StepError(EXIT_SEGD, f"segd answer: got {kinds}, want one SEG and one RTSTRUCT")
    return sorted(out, key=lambda o: o[0] != "SEG")


def store(pacs, objects, timeout):
    """STOW-RS; the stored SOPInstanceUIDs as the PACS reports them."""
    body, ctype = multipart_body([data for _, data, _ in objects])
    url = f"{pacs}/studies"
    try:
        status, headers, answer = request(url, data=body, method="POST", timeout=timeout,
                                          headers={"Content-Type": ctype,
                                                   "Accept": "application/dicom+json"})
    except OSError as e:
        raise StepError(EXIT_STORE, f"STOW-RS POST {url}: {e}")
    if status not in (200, 202):
        raise StepError(EXIT_STORE, f"STOW-RS POST {url}: {describe_error(status, headers, answer)}")
    try:
        report = json.loads(answer)
    except ValueError:
        raise StepError(EXIT_STORE, f"STOW-RS POST {url}: HTTP {status}, the store report is not "
                        f"JSON ({headers.get('Content-Type')}): {answer[:200]!r}")
    if isinstance(report, list):  # some servers wrap the dataset in an array
        report = report[0] if report else {}

    def seq(tag):
        return (report.get(tag) or {}).get("Value") or []

    def uid(item, tag):
        v = (item.get(tag) or {}).get("Value") or [""]
        return v[0]
    failed = seq("00081198")  # FailedSOPSequence
    if failed:
        why = [f"{uid(f, '00081155')} (FailureReason {uid(f, '00081197')})" for f in failed]
        raise StepError(EXIT_STORE, f"STOW-RS POST {url}: HTTP {status}, the PACS refused "
                        f"{len(failed)} object(s): {', '.join(why)}")
    stored = {uid(r, "00081155") for r in seq("00081199")}  # ReferencedSOPSequence
    missing = [s["SOPInstanceUID"] for _, _, s in objects if s["SOPInstanceUID"] not in stored]
    if missing:
        raise StepError(EXIT_STORE, f"STOW-RS POST {url}: HTTP {status}, the store report does "
                        f"not list {', '.join(missing)}")
    if status == 202:
        log("STOW-RS: HTTP 202 (stored with warnings)")
    return stored


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="exit status: 0 stored (with --no-store: made), 2 usage, 3 PACS fetch failed, "
               "4 segd failed, 5 PACS store failed")
    ap.add_argument("--pacs", required=True, help="DICOMweb root, e.g. http://host:8042/dicom-web")
    ap.add_argument("--segd", required=True, help="segd base URL, e.g. http://host:8080")
    ap.add_argument("--study", required=True, help="StudyInstanceUID")
    ap.add_argument("--series", required=True, help="SeriesInstanceUID of the MR series")
    ap.add_argument("--threshold", help="segd's ?threshold=")
    ap.add_argument("--min-volume-ml", help="segd's ?min_volume_ml=")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request (300)")
    ap.add_argument("--retries", type=int, default=3, help="segd 503 retries (3)")
    ap.add_argument("--out", help="also write SEG.dcm and RTSTRUCT.dcm into this directory")
    ap.add_argument("--no-store", action="store_true",
                    help="do not STOW the results; the lines start with not-stored")
    ap.add_argument("--separate", action="store_true",
                    help="ask segd for the SEG and the RTSTRUCT in two application/dicom requests "
                         "(what happens anyway when it answers the multipart request with 406)")
    ap.add_argument("--api-key-file", metavar="FILE",
                    help="send the first key of FILE to segd as Authorization: Bearer "
                         "(default: $SEGD_API_KEY); never sent to the PACS")
    a = ap.parse_args()
    try:
        key = api_key(a.api_key_file)
    except ValueError as e:
        ap.error(str(e))
    pacs = a.pacs.rstrip("/")
    query = {}
    if a.threshold is not None:
        query["threshold"] = a.threshold
    if a.min_volume_ml is not None:
        query["min_volume_ml"] = a.min_volume_ml
    try:
        t0 = time.monotonic()
        instances = fetch_series(pacs, a.study, a.series, a.timeout)
        log(f"WADO-RS: {len(instances)} instances, {sum(map(len, instances))} bytes "
            f"({time.monotonic() - t0:.2f} s)")
        t0 = time.monotonic()
        objects = segment(a.segd, instances, query, a.timeout, a.retries, a.separate, key)
        log(f"segd: {', '.join(f'{k} {len(d)} bytes' for k, d, _ in objects)} "
            f"({time.monotonic() - t0:.2f} s)")
        for kind, _, s in objects:
            if s.get("StudyInstanceUID") and s["StudyInstanceUID"] != a.study:
                raise StepError(EXIT_SEGD, f"segd answer: the {kind} is in study "
                                f"{s['StudyInstanceUID']}, not {a.study}; not storing it")
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            for kind, data, _ in objects:
                with open(os.path.join(a.out, f"{kind}.dcm"), "wb") as f:
                    f.write(data)
        if a.no_store:
            # a line of its own kind, so that nothing reading the stored
            # objects' lines takes these for stored ones
            log("--no-store: nothing stored in the PACS"
                + (f"; the objects are in {a.out}" if a.out else ""))
            for kind, _, s in objects:
                print("not-stored", kind, s["SOPInstanceUID"], s.get("SeriesInstanceUID", ""),
                      flush=True)
            return 0
        t0 = time.monotonic()
        store(pacs, objects, a.timeout)
        log(f"STOW-RS: stored {len(objects)} objects in study {a.study} "
            f"({time.monotonic() - t0:.2f} s)")
        for kind, _, s in objects:
            print(kind, s["SOPInstanceUID"], s.get("SeriesInstanceUID", ""), flush=True)
        return 0
    except StepError as e:
        print(f"pacs_roundtrip: error: {e}", file=sys.stderr)
        return e.status


if __name__ == "__main__":
    sys.exit(main())
