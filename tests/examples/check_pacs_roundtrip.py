#!/usr/bin/python3
"""examples/pacs_roundtrip.py against a stand-in DICOMweb PACS (no Orthanc
needed: tests/dicom/check_orthanc.py does the real one) and a real `segd
serve --api-key-file`.

The stand-in PACS is a small HTTP server in this process: WADO-RS GET of
the series that tests/dicom/make_series.py builds from the PNG slices of
tests/data (multipart/related application/dicom), and STOW-RS POST
/studies, which reads each stored part with pydicom and answers the store
report (ReferencedSOPSequence).  It records every request it gets.

Checks: without a key the tool exits 4 with segd's 401 and says how to give
one, nothing stored; with SEGD_API_KEY and --no-store it exits 0, stores
nothing, writes --out, and prints `not-stored KIND SOPInstanceUID
SeriesInstanceUID` lines (never the lines of stored objects); with
--api-key-file (segd's key-file format) it stores the SEG and the RTSTRUCT
and prints `KIND SOPInstanceUID SeriesInstanceUID` for exactly what the
PACS stored; the key never goes to the PACS; an unreadable key file is a
usage error (2).

Environment: SEGD_BIN, SEGD_WEIGHTS (segd and weights; the harness's
defaults otherwise).  Skips (77) without numpy, pydicom or PIL."""
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "hardening"))
sys.path.insert(0, os.path.join(ROOT, "tests", "dicom"))
import segdtest as T  # noqa: E402
import dicomtest  # noqa: E402

try:
    import pydicom
    import numpy  # noqa: F401  make_series.py's
    import PIL  # noqa: F401
except ImportError as e:
    T.skip(f"{e.name} missing (apt-get install python3-numpy python3-pydicom python3-pil)")

ROUNDTRIP = os.path.join(ROOT, "examples", "pacs_roundtrip.py")
KEY = "pacs-check-3a9f0e1d7c5b2486"


class Pacs(http.server.ThreadingHTTPServer):
    """DICOMweb root http://127.0.0.1:PORT/dicom-web holding one series."""

    def __init__(self, study, series, files):
        super().__init__(("127.0.0.1", 0), PacsHandler)
        self.study, self.series, self.files = study, series, files
        self.seen = []    # (method, path, Authorization or None)
        self.stored = []  # (SOPClassUID, SOPInstanceUID, SeriesInstanceUID)
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def root(self):
        return f"http://127.0.0.1:{self.server_address[1]}/dicom-web"


class PacsHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def record(self):
        with self.server.lock:
            self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))

    def do_GET(self):
        self.record()
        s = self.server
        if self.path != f"/dicom-web/studies/{s.study}/series/{s.series}":
            return self.answer(404, b'{"error": "no such series"}', "application/json")
        b = uuid.uuid4().hex
        body = b"".join(b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (b.encode(), open(f, "rb").read())
                        for f in s.files) + b"--%s--\r\n" % b.encode()
        self.answer(200, body, f'multipart/related; type="application/dicom"; boundary={b}')

    def do_POST(self):
        self.record()
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ctype = self.headers.get("Content-Type", "")
        if self.path != "/dicom-web/studies" or "boundary=" not in ctype:
            return self.answer(400, b'{"error": "not a STOW-RS request"}', "application/json")
        delim = b"--" + ctype.split("boundary=", 1)[1].split(";")[0].strip('"').encode()
        refs = []
        for part in data.split(delim)[1:]:
            if part.startswith(b"--"):
                break
            payload = part.split(b"\r\n\r\n", 1)[1][:-2]  # the CRLF before the next delimiter
            ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(payload))
            with self.server.lock:
                self.server.stored.append((ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID))
            refs.append({"00081150": {"vr": "UI", "Value": [ds.SOPClassUID]},
                         "00081155": {"vr": "UI", "Value": [ds.SOPInstanceUID]}})
        self.answer(200, json.dumps({"00081199": {"vr": "SQ", "Value": refs}}).encode(), "application/dicom+json")


def roundtrip(pacs, daemon, *opts, env=None):
    e = {k: v for k, v in os.environ.items() if k != "SEGD_API_KEY"}
    e.update(env or {})
    p = subprocess.run([sys.executable, ROUNDTRIP, "--pacs", pacs.root, "--segd", daemon.url,
                        "--study", pacs.study, "--series", pacs.series, *opts],
                       capture_output=True, text=True, env=e, timeout=240)
    return p.returncode, p.stdout, p.stderr


def main(tmp):
    src = dicomtest.make_series(os.path.join(tmp, "mr"), dicomtest.stand_in_pngs()[:4])
    files = [os.path.join(tmp, "mr", s["file"]) for s in src["slices"]]
    pacs = Pacs(src["study_instance_uid"], src["series_instance_uid"], files)
    keyfile = os.path.join(tmp, "segd.keys")
    with open(keyfile, "w") as f:  # segd's format: a comment and a blank line first
        f.write(f"# segd API keys\n\n{KEY}\n")
    daemon = T.Daemon("--workers", "1", "--api-key-file", keyfile)
    try:
        # no key: segd's 401, what to do, nothing stored
        rc, out, err = roundtrip(pacs, daemon)
        T.check(rc == 4 and "HTTP 401" in err and "--api-key-file FILE or SEGD_API_KEY" in err and not out,
                "no key: exit 4, segd's 401 and how to give the key", f"exit {rc}: {err.strip()[-300:]!r}")

        # SEGD_API_KEY, --no-store: made, written, not stored, and the lines say so
        outdir = os.path.join(tmp, "out")
        rc, out, err = roundtrip(pacs, daemon, "--no-store", "--out", outdir, env={"SEGD_API_KEY": KEY})
        lines = [ln.split() for ln in out.splitlines()]
        T.check(rc == 0 and [ln[:2] for ln in lines] == [["not-stored", "SEG"], ["not-stored", "RTSTRUCT"]] and
                all(len(ln) == 4 for ln in lines), "--no-store: exit 0, `not-stored KIND SOP SERIES` lines",
                f"exit {rc}: {out!r} {err.strip()[-300:]!r}")
        T.check("nothing stored" in err, "--no-store: stderr says nothing was stored", err.strip()[-300:])
        for kind, ln in zip(("SEG", "RTSTRUCT"), lines):
            path = os.path.join(outdir, f"{kind}.dcm")
            ds = pydicom.dcmread(path) if os.path.exists(path) else None
            T.check(ds is not None and len(ln) == 4 and [ds.SOPInstanceUID, ds.SeriesInstanceUID] == ln[2:],
                    f"--no-store: {kind}.dcm written, its UIDs on the line", str(ln))
        T.check(not pacs.stored and all(m == "GET" for m, _, _ in pacs.seen),
                "--no-store: no STOW-RS request", str(pacs.seen))

        # --api-key-file: stored, one line per stored object
        rc, out, err = roundtrip(pacs, daemon, "--api-key-file", keyfile)
        lines = [ln.split() for ln in out.splitlines()]
        kinds = {"1.2.840.10008.5.1.4.1.1.66.4": "SEG", "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT"}
        stored = [[kinds.get(c, c), sop, series] for c, sop, series in pacs.stored]
        T.check(rc == 0 and len(stored) == 2 and lines == stored,
                "--api-key-file: exit 0, the lines are exactly what the PACS stored",
                f"exit {rc}: {lines} vs {stored}; {err.strip()[-300:]!r}")

        T.check(pacs.seen and all(a is None for _, _, a in pacs.seen),
                "the API key never goes to the PACS", str(pacs.seen))
        rc, out, err = roundtrip(pacs, daemon, "--api-key-file", os.path.join(tmp, "no-such-file"))
        T.check(rc == 2 and "no-such-file" in err, "--api-key-file of a missing file: exit 2, named",
                f"exit {rc}: {err.strip()[-300:]!r}")
    finally:
        rc = daemon.stop()
        T.check(rc == 0, "segd exit status after SIGTERM", f"rc {rc}")
        pacs.shutdown()


tmp = tempfile.mkdtemp(prefix="segd-pacs-check-")
try:
    main(tmp)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
T.finish()
