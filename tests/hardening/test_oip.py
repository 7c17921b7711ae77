#!/usr/bin/python3
"""The Open Inference Protocol (KServe V2 REST) routes, driven with
requests written from the protocol's specification
(https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/)
and answers checked field by field: health, server metadata, model
metadata and readiness, and inference with the image as a BYTES tensor
(PNG, base64), an FP32 tensor and a UINT16 tensor [H, W], answered with
the masks as a UINT8 tensor [3, H, W] equal to `segd infer`'s masks (and
as RLE strings when asked); errors in the protocol's {"error": "..."} form."""
import base64
import json

import numpy as np
from PIL import Image

import segdtest as T

path = T.SLICES[0]
png = T.read(path)
ref = T.infer(path)
img = np.array(Image.open(path))
H, W = img.shape
ORGANS = ["large_bowel", "small_bowel", "stomach"]


want = np.stack([T.rle_decode(ref["masks"][o], H * W).reshape(H, W) for o in ORGANS]).astype(np.uint8)


def call(port, method, path, doc=None, headers=None):
    body = json.dumps(doc).encode() if doc is not None else None
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    r = T.request(port, method, path, body, h)
    return r, r.json()


d = T.Daemon("--workers", "1")
p = d.port
r, doc = call(p, "GET", "/v2/health/live")
T.check(r.status == 200 and doc == {"live": True}, "GET /v2/health/live: 200 {live: true}", r.body)
r, doc = call(p, "GET", "/v2/health/ready")
T.check(r.status == 200 and doc == {"ready": True}, "GET /v2/health/ready: 200 {ready: true}", r.body)
r, doc = call(p, "GET", "/v2")
T.check(r.status == 200 and doc.get("name") == "segd" and isinstance(doc.get("version"), str) and
        doc.get("extensions") == [], "GET /v2: server metadata {name, version, extensions}", r.body)
_, info = call(p, "GET", "/v1/model")
name = info["name"]
r, meta = call(p, "GET", f"/v2/models/{name}")
ok = (r.status == 200 and meta.get("name") == name and isinstance(meta.get("versions"), list) and
      meta.get("platform") == "segd" and
      meta.get("inputs") == [{"name": "image", "datatype": "BYTES", "shape": [1]}] and
      meta.get("outputs") == [{"name": "masks", "datatype": "UINT8", "shape": [3, -1, -1]},
                              {"name": "rle", "datatype": "BYTES", "shape": [3]}])
T.check(ok, "GET /v2/models/{name}: model metadata field by field", r.body)
ver = meta["versions"][0]
T.check(info["sha256"].startswith(ver), "model version = the weights' sha256 prefix", ver)
for url in (f"/v2/models/{name}/ready", f"/v2/models/{name}/versions/{ver}/ready"):
    r, doc = call(p, "GET", url)
    T.check(r.status == 200 and doc == {"name": name, "ready": True}, f"GET {url}: ready", r.body)

infer = f"/v2/models/{name}/infer"
b64 = base64.b64encode(png).decode()
cases = [
    ("BYTES (PNG)", {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}),
    ("FP32 [H, W]", {"name": "image", "shape": [H, W], "datatype": "FP32",
                     "data": img.astype(np.float32).ravel().tolist()}),
    ("UINT16 [H, W] nested", {"name": "image", "shape": [H, W], "datatype": "UINT16",
                              "data": img.astype(np.uint16).tolist()}),
]
for label, tensor in cases:
    r, doc = call(p, "POST", infer, {"id": "req-42", "inputs": [tensor]})
    if not T.check(r.status == 200 and doc, f"infer {label}: 200", r.body[:300]):
        continue
    outs = {o["name"]: o for o in doc["outputs"]}
    m = outs.get("masks", {})
    T.check(doc.get("model_name") == name and doc.get("model_version") == ver and doc.get("id") == "req-42",
            f"infer {label}: model_name, model_version, id", str({k: doc.get(k) for k in ("model_name", "model_version", "id")}))
    T.check(list(outs) == ["masks"] and m.get("datatype") == "UINT8" and m.get("shape") == [3, H, W] and
            len(m.get("data", [])) == 3 * H * W, f"infer {label}: one output masks UINT8 [3, {H}, {W}]",
            str({k: m.get(k) for k in ("datatype", "shape")}))
    got = np.array(m.get("data", []), np.uint8).reshape(-1)
    T.check(got.size == want.size and np.array_equal(got.reshape(want.shape), want),
            f"infer {label}: masks equal segd infer's", f"{int((got.reshape(want.shape) != want).sum()) if got.size == want.size else 'size'} pixels differ")

# RLE output, by name and by parameter
for label, extra in [("outputs [rle]", {"outputs": [{"name": "rle"}]}),
                     ("parameters.rle", {"parameters": {"rle": True}})]:
    r, doc = call(p, "POST", infer, {"inputs": [cases[0][1]], **extra})
    outs = {o["name"]: o for o in (doc or {}).get("outputs", [])}
    rl = outs.get("rle", {})
    T.check(r.status == 200 and rl.get("datatype") == "BYTES" and rl.get("shape") == [3] and
            rl.get("data") == [ref["masks"][o] for o in ORGANS] and "id" not in doc,
            f"infer {label}: rle BYTES [3] equal to segd infer's RLE", r.body[:300])
    T.check(("masks" in outs) == (label == "parameters.rle"), f"infer {label}: masks output only when not excluded",
            str(list(outs)))

# errors: the protocol's form
bad = [
    ("unknown model", "POST", "/v2/models/nope/infer", {"inputs": [cases[0][1]]}, 404),
    ("unknown version", "GET", f"/v2/models/{name}/versions/0000/ready", None, 404),
    ("unknown model metadata", "GET", "/v2/models/nope", None, 404),
    ("no inputs", "POST", infer, {"id": "x"}, 400),
    ("two inputs", "POST", infer, {"inputs": [cases[0][1], cases[0][1]]}, 400),
    ("not base64", "POST", infer, {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["@@@"]}]}, 400),
    ("not a PNG", "POST", infer, {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                             "data": [base64.b64encode(b"GIF89a....").decode()]}]}, 400),
    ("shape and data disagree", "POST", infer, {"inputs": [{"name": "image", "shape": [4, 4], "datatype": "FP32",
                                                            "data": [1.0] * 15}]}, 400),
    ("UINT16 out of range", "POST", infer, {"inputs": [{"name": "image", "shape": [2, 2], "datatype": "UINT16",
                                                        "data": [1, 2, 3, 70000]}]}, 400),
    ("INT64 datatype", "POST", infer, {"inputs": [{"name": "image", "shape": [2, 2], "datatype": "INT64",
                                                   "data": [1, 2, 3, 4]}]}, 400),
    ("unknown output", "POST", infer, {"inputs": [cases[0][1]], "outputs": [{"name": "logits"}]}, 400),
    ("over --max-pixels", "POST", infer, {"inputs": [{"name": "image", "shape": [2000, 2000], "datatype": "FP32",
                                                      "data": [0.0]}]}, 413),
]
for label, method, url, doc_in, status in bad:
    r, doc = call(p, method, url, doc_in)
    T.check(r.status == status and isinstance(doc, dict) and list(doc) == ["error"] and
            isinstance(doc["error"], str), f"{label}: {status} {{\"error\": \"...\"}}", f"{r.status} {r.body[:160]!r}")
r = T.request(p, "POST", infer, b"{not json", {"Content-Type": "application/json"})
T.check(r.status == 400 and list(r.json() or {}) == ["error"], "malformed JSON: 400 {error}", r.body[:120])
r = T.request(p, "POST", infer, png, {"Content-Type": "image/png"})
T.check(r.status == 415 and list(r.json() or {}) == ["error"], "image/png body: 415 {error}", r.body[:120])
r = T.request(p, "POST", infer, b"x", {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "1"})
T.check(r.status == 415, "binary data extension: 415", r.body[:120])
r = T.request(p, "GET", infer)
T.check(r.status == 405 and r.headers.get("allow") == "POST, OPTIONS", "GET .../infer: 405 with Allow", str(r.status))
rc = d.stop()
T.check(rc == 0, "SIGTERM: exit 0", f"rc {rc}")
T.finish()
