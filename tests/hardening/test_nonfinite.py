#!/usr/bin/python3
"""Non-finite weights (issue 15, fault 3): a NaN or inf in any tensor (the
presence head, an encoder convolution, the segmentation head) must stop
the daemon at load with a message naming the tensor; weights that are
finite but overflow float at run time must give a 500 naming the output,
never a 503 "out of memory" (clients would retry for ever) nor a 200 with
silently wrong masks."""
import json
import os
import struct
import subprocess
import tempfile

import segdtest as T

src = T.read(T.WEIGHTS)
hlen = struct.unpack("<Q", src[:8])[0]
header = json.loads(src[8:8 + hlen])
base = 8 + hlen
tmp = tempfile.mkdtemp(prefix="segd-nonfinite-")
enc = next(k for k in header if k.startswith("enc") and len(header[k].get("shape", [])) == 4)


def variant(name, edits):
    """edits: [(tensor, element index or None for all, float value)]"""
    b = bytearray(src)
    for tensor, idx, value in edits:
        lo, hi = header[tensor]["data_offsets"]
        rng = range(lo, hi, 4) if idx is None else [lo + 4 * idx]
        for off in rng:
            b[base + off:base + off + 4] = struct.pack("<f", value)
    path = os.path.join(tmp, name + ".safetensors")
    with open(path, "wb") as f:
        f.write(b)
    return path


for label, tensor, value in (("NaN in the presence head", "cls.weight", float("nan")),
                             ("NaN in an encoder weight", enc, float("nan")),
                             ("inf in the segmentation head bias", "head.bias", float("inf"))):
    path = variant(label.replace(" ", "_"), [(tensor, 1 if tensor != "head.bias" else 0, value)])
    try:
        p = subprocess.run([T.SEGD_BIN, "serve", "--bind", "127.0.0.1", "--port", "0", "--weights", path],
                           capture_output=True, timeout=30)
        rc, err = p.returncode, p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:  # it started serving
        rc, err = None, (e.stderr or b"").decode(errors="replace")
    T.check(rc not in (0, None) and tensor in err and "non-finite" in err,
            f"{label}: refused at load, naming '{tensor}' (exit {rc})", err.strip()[-300:])

# finite weights that overflow float at run time: the segmentation head's
# bias and weights near FLT_MAX make its logits +inf
path = variant("overflow", [("head.bias", None, 3.0e38), ("head.weight", None, 3.0e38)])
d = T.Daemon("--workers", 1, weights=path)
r = T.post_png(d.port, T.read(T.SLICES[0]))
msg = ((r.json() or {}).get("error") or {}).get("message", "")
T.check(r.status == 500, "overflowing weights: 500, not 503 or 200", r)
T.check("non-finite" in msg and "head" in msg, "the 500 names the non-finite output", msg)
T.check("retry-after" not in r.headers, "no Retry-After on the 500")
r = T.request(d.port, "GET", "/healthz")
T.check(r.status == 200, "the daemon keeps serving after it", r)
T.check(d.stop() == 0, "clean exit")
T.finish()
