#!/usr/bin/env python3
"""SKETCH, NOT YET WIRED: segd has no DICOM route yet (issue 12's HTTP part
comes in a later round), so this script cannot run end to end today.  It
shows the intended round trip with a PACS that speaks DICOMweb (Orthanc with
its DICOMweb plugin): fetch an MR series (WADO-RS), post it to segd's future
`POST /v1/series`, and store the DICOM Segmentation and RT Structure Set it
returns back into the PACS (STOW-RS).  Standard library only.

    python3 examples/pacs_roundtrip.py --pacs http://127.0.0.1:8042/dicom-web \\
        --segd http://127.0.0.1:8080 --study 1.2.3... --series 1.2.3...

Assumed (to be fixed when the route exists): segd accepts the series as
multipart/related; type="application/dicom" (one part per instance, any
order: segd orders them by position along the slice normal) and answers
multipart/related with two application/dicom parts, the SEG and the
RTSTRUCT, both referencing the posted instances.
"""
import argparse
import sys
import urllib.request
import uuid


def multipart_parts(body, content_type):
    """The parts of a multipart/related body (bytes each)."""
    boundary = None
    for field in content_type.split(";"):
        k, _, v = field.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        raise ValueError(f"no boundary in {content_type}")
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        parts.append(data[:-2] if data.endswith(b"\r\n") else data)
    return parts


def multipart_body(parts):
    boundary = uuid.uuid4().hex
    out = b""
    for p in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f'multipart/related; type="application/dicom"; boundary={boundary}'


def request(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.read(), r.headers.get("Content-Type", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pacs", required=True, help="DICOMweb root, e.g. http://host:8042/dicom-web")
    ap.add_argument("--segd", required=True, help="segd base URL")
    ap.add_argument("--study", required=True)
    ap.add_argument("--series", required=True)
    a = ap.parse_args()

    # 1. WADO-RS: the whole series as Part-10 instances
    body, ctype = request(f"{a.pacs}/studies/{a.study}/series/{a.series}",
                          headers={"Accept": 'multipart/related; type="application/dicom"'})
    instances = multipart_parts(body, ctype)
    print(f"fetched {len(instances)} instances", file=sys.stderr)

    # 2. segd (NOT YET IMPLEMENTED: the route is planned, see the docstring)
    data, ctype = multipart_body(instances)
    body, rtype = request(f"{a.segd}/v1/series", data=data, headers={"Content-Type": ctype},
                          method="POST")
    results = multipart_parts(body, rtype)  # [SEG, RTSTRUCT]

    # 3. STOW-RS: store both derived objects in the same study
    data, ctype = multipart_body(results)
    request(f"{a.pacs}/studies/{a.study}", data=data,
            headers={"Content-Type": ctype, "Accept": "application/dicom+json"}, method="POST")
    print(f"stored {len(results)} objects in study {a.study}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
