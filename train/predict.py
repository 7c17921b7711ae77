"""Reference prediction in PyTorch: prints, for each PNG slice, the same JSON
document as `segd infer` (one per line), so that the C engine can be checked
against an independent implementation.

  /usr/bin/python3 train/predict.py --weights weights/unet3p-16.safetensors SLICE.png...
"""
import argparse
import hashlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from weights_io import load_model  # noqa: E402
from preprocess import load_png, network_probs, postprocess, rle_encode, to_model_input  # noqa: E402


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def predict_document(model, md, sha, path, threshold=None):
    classes = json.loads(md["classes"])
    thr = float(md.get("threshold", 0.5)) if threshold is None else threshold
    pthr = float(md.get("presence_threshold", 0.5))
    policy = json.loads(md["preprocess"])
    t0 = time.perf_counter()
    img = load_png(path)
    x = to_model_input(img, policy)  # decode, normalise, resize: the engine's "decode"
    t1 = time.perf_counter()
    probs, pres = network_probs(model, x, policy)
    t2 = time.perf_counter()
    h, w = img.shape
    _, masks = postprocess(probs, pres, h, w, thr, pthr)
    t3 = time.perf_counter()
    stem = os.path.splitext(os.path.basename(path))[0]
    return {
        "id": stem, "width": w, "height": h,
        "masks": {c: rle_encode(masks[i]) for i, c in enumerate(classes)},
        "rle": {"order": "row-major", "base": 1},
        "model": {"name": md.get("name", ""), "sha256": sha},
        "pixels": {c: int(masks[i].sum()) for i, c in enumerate(classes)},
        "presence": {c: float(pres[i]) for i, c in enumerate(classes)},
        "timing_ms": {"decode": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "weights", "unet3p-16.safetensors"))
    ap.add_argument("--threshold", type=float)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, md = load_model(args.weights)
    sha = sha256_file(args.weights)
    for p in args.files:
        print(json.dumps(predict_document(model, md, sha, p, args.threshold), separators=(",", ":")))


if __name__ == "__main__":
    main()
