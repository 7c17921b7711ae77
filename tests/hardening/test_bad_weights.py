#!/usr/bin/python3
"""Broken weights files: `segd serve` must refuse to start, quickly, with a
non-zero exit and a message naming the problem, and never listen.
Variants of tests/data/golden-w4.safetensors: truncated (in the data, in
the header, before the header length), header length past the end,
corrupted JSON header, wrong dtype, a tensor with a wrong shape (same
element count, dims swapped; and a different count), a missing tensor, a
duplicate key, overlapping offsets, wrong metadata (format, width,
classes), an empty file, a directory, a missing file.

A flipped byte in the data section of a file that carries tensor_sha256
(the exporter's digest of the data section, issue 11 item 13) is refused
naming the mismatch; a file exported before that field (the w4 fixture)
still loads, with a warning, and only its sha256 in /v1/model differs."""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time

import segdtest as T

src = T.read(T.WEIGHTS)
hlen = struct.unpack("<Q", src[:8])[0]
header = json.loads(src[8:8 + hlen])
data = src[8 + hlen:]


def build(hdr, body=data, pad_to=None):
    h = json.dumps(hdr).encode()
    return struct.pack("<Q", len(h)) + h + body


def first_tensor(hdr, ndim=4):
    return next(k for k, v in hdr.items() if k != "__metadata__" and len(v["shape"]) == ndim)


def checksum_flipped():
    """The fixture with the exporter's tensor_sha256 added, then one data
    byte flipped."""
    h = json.loads(json.dumps(header))
    h["__metadata__"]["tensor_sha256"] = hashlib.sha256(data).hexdigest()
    body = bytearray(data)
    body[len(body) // 2] ^= 0x40
    return build(h, bytes(body))


def variant(fn):
    h = json.loads(json.dumps(header))
    fn(h)
    return build(h)


def swap_dims(h):
    k = first_tensor(h)
    s = h[k]["shape"]
    s[0], s[1] = s[1], s[0]
    if s[0] == s[1]:
        s[2], s[0] = s[0], s[2]


def shrink(h):
    k = first_tensor(h)
    h[k]["shape"][0] -= 1
    b, e = h[k]["data_offsets"]
    h[k]["data_offsets"] = [b, e - 4 * h[k]["shape"][1] * h[k]["shape"][2] * h[k]["shape"][3]]


def drop(h):
    del h[first_tensor(h)]


def dtype(h):
    h[first_tensor(h)]["dtype"] = "F16"


def overlap(h):
    ks = [k for k in h if k != "__metadata__"]
    a, b = h[ks[0]], h[ks[1]]
    n = b["data_offsets"][1] - b["data_offsets"][0]
    b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + n]


def meta(key, value):
    def f(h):
        h["__metadata__"][key] = value
    return f


dup_text = json.dumps(header).encode()
k0 = first_tensor(header)
entry = json.dumps({k0: header[k0]})[1:-1].encode()
dup_header = dup_text[:-1] + b", " + entry + b"}"
corrupt_json = bytearray(src)  # a ':' in the middle of the header becomes '#'
corrupt_json[8 + src[8:8 + hlen].index(b'":', hlen // 2) + 1] = ord("#")

cases = [
    ("truncated in the data section", src[:len(src) - 1000], "data_offsets"),
    ("truncated to half", src[:len(src) // 2], ""),
    ("truncated inside the header", src[:8 + hlen // 2], "header"),
    ("truncated before the header length (5 bytes)", src[:5], ""),
    ("empty file", b"", ""),
    ("header length past the end", struct.pack("<Q", len(src)) + src[8:], "header length"),
    ("header length 2^63", struct.pack("<Q", 1 << 63) + src[8:], "header length"),
    ("corrupted JSON header (a ':' in the middle is '#')", bytes(corrupt_json), "JSON"),
    ("JSON header is an array", build([]) if False else struct.pack("<Q", 2) + b"[]", "object"),
    ("dtype F16", variant(dtype), "F16"),
    ("tensor shape with dims swapped (same size)", variant(swap_dims), k0),
    ("tensor shape one output channel short", variant(shrink), k0),
    ("missing tensor", variant(drop), k0),
    ("duplicate tensor key", struct.pack("<Q", len(dup_header)) + dup_header + data, ""),
    ("overlapping data offsets", variant(overlap), "overlap"),
    ("metadata format unknown", variant(meta("format", "segd-unet3p-v9")), "format"),
    ("metadata width 8 for width-4 tensors", variant(meta("width", "8")), ""),
    ("metadata classes not a list", variant(meta("classes", "stomach")), "classes"),
    ("metadata classes: 4 names for 3 heads", variant(meta("classes", '["a","b","c","d"]')), ""),
    ("metadata value not a string", variant(meta("width", 4)), "__metadata__"),
    ("flipped data byte under tensor_sha256", checksum_flipped(), "tensor data checksum mismatch"),
]

tmp = tempfile.mkdtemp(prefix="segd-weights-")
start_times = []
for name, blob, must_say in cases:
    path = os.path.join(tmp, "w.safetensors")
    with open(path, "wb") as f:
        f.write(blob)
    t0 = time.monotonic()
    try:
        p = subprocess.run([T.SEGD_BIN, "serve", "--bind", "127.0.0.1", "--port", "0",
                            "--weights", path, "--workers", "1"],
                           capture_output=True, timeout=20)
        rc, err = p.returncode, p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        rc, err = None, (e.stderr or b"").decode(errors="replace")
    dt = time.monotonic() - t0
    start_times.append(dt)
    ok = (rc not in (0, None) and "listening" not in err and "cannot load weights" in err and
          (must_say.lower() in err.lower()))
    T.check(ok, f"{name}: refused (exit {rc}, {dt:.2f} s)",
            f"stderr: {err.strip()[-300:]!r}" + (f" (should mention {must_say!r})" if must_say else ""))

for name, path in (("a directory", tmp), ("a missing file", os.path.join(tmp, "nope.safetensors"))):
    p = subprocess.run([T.SEGD_BIN, "serve", "--bind", "127.0.0.1", "--port", "0", "--weights", path],
                       capture_output=True, timeout=20)
    err = p.stderr.decode(errors="replace")
    T.check(p.returncode != 0 and "cannot load weights" in err, f"{name}: refused (exit {p.returncode})",
            err[-200:])

# no checksum field (old export): a flipped data byte loads with a warning,
# visible only through the sha256
flipped = bytearray(src)
flipped[8 + hlen + len(data) // 2] ^= 0x40
path = os.path.join(tmp, "flipped.safetensors")
with open(path, "wb") as f:
    f.write(flipped)
d = T.Daemon("--workers", "1", weights=path)
sha = (T.request(d.port, "GET", "/v1/model").json() or {}).get("sha256")
d.stop()
T.check(any("no tensor_sha256" in ln and "warning" in ln for ln in d.lines),
        "a file without tensor_sha256 loads with a warning", d.log())
d = T.Daemon("--workers", "1")
sha0 = (T.request(d.port, "GET", "/v1/model").json() or {}).get("sha256")
d.stop()
T.check(sha and sha0 and sha != sha0,
        "flipped data byte in an old file (no tensor_sha256): /v1/model sha256 differs",
        f"{sha} vs {sha0}")
T.note(f"bad weights: {len(cases) + 2} corrupt files refused (max {max(start_times):.2f} s to exit), "
       "1 flipped data byte in an old file loads with a warning (no tensor_sha256; sha256 in /v1/model differs)")
shutil.rmtree(tmp, ignore_errors=True)
T.finish()
