"""Write golden fixtures for tests/engine/test_golden.c: reference native-size
probability maps and presence probabilities computed by the PyTorch reference
(train/model.py + train/preprocess.py, float32, 2 threads).

Run from the repository root with the system Python that has torch:

  /usr/bin/python3 tests/engine/make_golden.py --out tests/data/golden-w4 \
      --width 4 --seed 1234 IMAGE.png...
      (random UNet3Plus with randomised BN statistics, exported with
       train/weights_io.py to PREFIX.safetensors)
  /usr/bin/python3 tests/engine/make_golden.py --out tests/data/golden-w4-tta \
      --width 4 --seed 99 --grid 40 48 --tta-gamma 0.75,1,1.3333333333333333 IMAGE.png...
      (the same, with photometric test-time augmentation: preprocess.grid_probs)
  /usr/bin/python3 tests/engine/make_golden.py --out tests/data/golden-w4-hist \
      --width 4 --seed 5 --grid 48 40 --histogram-match IMAGE.png...
      (the same, with "histogram_match" normalisation; the reference
       quantiles are those of the images given)
  /usr/bin/python3 tests/engine/make_golden.py --weights FILE.safetensors \
      --out PREFIX IMAGE.png...
      (any exported weights file; the manifest points at it)
  /usr/bin/python3 tests/engine/make_golden.py --shipped
      (the shipped weights: the file of weights/ (the single *.safetensors,
       or --weights), on SHIPPED_SLICES, 16-bit and 8-bit real slices of
       each size, into tests/data/golden-shipped; rerun whenever the
       shipped weights change)

Writes PREFIX.json (manifest) and PREFIX.<n>.prob (float32 LE, C x H x W)
per image.  The C test reads the manifest; paths in it are relative to the
manifest's directory.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "train"))
from weights_io import export_model, load_model  # noqa: E402
from model import UNet3Plus  # noqa: E402
from preprocess import (DEFAULT_POLICY, grid_probs, load_png, postprocess, reference_quantiles,  # noqa: E402
                        to_model_input)


def random_model(width, seed, grid, images, histogram=False):
    """UNet3Plus(width) with random weights and BN statistics/affine, so that
    BN folding matters.  The BN statistics are first measured on the images
    (so every layer sees unit-scale activations and the bottleneck is alive),
    then perturbed; head and presence biases are set so that the first image
    has probabilities on both sides of 0.5 and one organ gated off.
    histogram: normalisation histogram_match, its reference quantiles those
    of the images."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    m = UNet3Plus(width=width)
    policy = dict(DEFAULT_POLICY, input_size=list(grid))
    if histogram:
        del policy["percentiles"]
        policy["normalisation"] = "histogram_match"
        policy["reference_quantiles"] = reference_quantiles(load_png(p) for p in images)
    xs = torch.cat([to_model_input(load_png(p), policy) for p in images])
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration pass
    m.train()
    with torch.no_grad():
        m(xs)
    for bn in bns:
        c = bn.num_features
        std = bn.running_var.sqrt()
        bn.running_mean.add_(0.1 * std * torch.randn(c, generator=g))
        bn.running_var.mul_(torch.rand(c, generator=g) * 0.5 + 0.8)
        bn.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.data.copy_((torch.rand(c, generator=g) - 0.5) * 0.4)
    m.eval()
    with torch.no_grad():
        logits, pres = m(xs[:1])
        # centre each class's logits on their median, spread to ~[-4, 4]
        for c in range(logits.shape[1]):
            lc = logits[0, c]
            med = lc.median()
            spread = (lc - med).abs().max().clamp_min(1e-6)
            scale = 4.0 / float(spread)
            m.head.weight[c] *= scale
            m.head.bias[c] = (m.head.bias[c] - med) * scale
        target = torch.tensor([1.0, -1.0, 0.5][: pres.shape[1]])
        m.cls.bias += target - pres[0]
    return m, policy


# Real slices for the shipped weights: 16-bit and 8-bit, each size.
SHIPPED_SLICES = [
    "tests/data/case101_day20_slice_0090_266_266_1.50_1.50.png",          # 16-bit, 266x266
    "tests/data/heldout/case118_day14_slice_0097_266_266_1.50_1.50.png",  # 8-bit, 266x266
    "tests/data/case110_day16_slice_0070_360_310_1.50_1.50.png",          # 8-bit, 360x310
]
SHIPPED_PREFIX = "tests/data/golden-shipped"


def shipped_weights():
    """The shipped weights file: the single weights/*.safetensors."""
    import glob
    found = sorted(glob.glob(os.path.join(ROOT, "weights", "*.safetensors")))
    if len(found) != 1:
        sys.exit(f"weights/ holds {len(found)} *.safetensors: name the shipped one with --weights")
    return found[0]


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", help="existing weights file (else a random model is made)")
    ap.add_argument("--shipped", action="store_true",
                    help=f"fixtures of the shipped weights: --out {SHIPPED_PREFIX}, the images "
                    "SHIPPED_SLICES, --weights the single weights/*.safetensors unless given")
    ap.add_argument("--out", help="output prefix, e.g. tests/data/golden-w4")
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--grid", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="model grid of a random model (default: the policy's)")
    ap.add_argument("--tta-gamma", type=lambda v: [float(g) for g in v.split(",")],
                    help="a random model's test-time powers (preprocess tta_gamma), e.g. 0.75,1,1.5")
    ap.add_argument("--histogram-match", action="store_true",
                    help="a random model with preprocess normalisation histogram_match (the "
                         "reference quantiles of the images given)")
    ap.add_argument("images", nargs="*")
    args = ap.parse_args()
    if args.shipped:
        os.chdir(ROOT)
        args.weights = args.weights or shipped_weights()
        args.out = args.out or SHIPPED_PREFIX
        args.images = args.images or SHIPPED_SLICES
    if not args.out or not args.images:
        ap.error("--out and at least one image are needed (or --shipped)")
    torch.set_num_threads(2)

    outdir = os.path.dirname(os.path.abspath(args.out))
    if args.weights:
        wpath = args.weights
        model, md = load_model(wpath)
        policy = json.loads(md["preprocess"])
    else:
        grid = args.grid or DEFAULT_POLICY["input_size"]
        model, policy = random_model(args.width, args.seed, grid, args.images, args.histogram_match)
        if args.tta_gamma:
            policy["tta_gamma"] = args.tta_gamma
        wpath = args.out + ".safetensors"
        extra = {"preprocess": policy, "name": f"golden-w{args.width}",
                 "git_commit": "fixture"}
        export_model(model, wpath, extra)
        model, md = load_model(wpath)  # check the round trip, use exactly the file
    thr = float(md.get("threshold", "0.5"))
    pthr = float(md.get("presence_threshold", "0.5"))

    cases = []
    for i, path in enumerate(args.images):
        img = load_png(path)
        h, w = img.shape
        probs, pres = grid_probs(model, img, policy)
        p, masks = postprocess(probs, pres, h, w, thr, pthr)
        pname = f"{os.path.basename(args.out)}.{i}.prob"
        p.astype("<f4").tofile(os.path.join(outdir, pname))
        near = int((np.abs(p - thr) < 1e-4).sum())
        cases.append({
            "png": os.path.relpath(os.path.abspath(path), outdir),
            "height": h, "width": w,
            "prob": pname,
            "presence": [float(v) for v in pres],
            "pixels": [int(v) for v in masks.reshape(masks.shape[0], -1).sum(1)],
            "near_threshold": near,
        })
        print(f"{path}: {w}x{h} presence={[round(float(v), 4) for v in pres]} "
              f"pixels={cases[-1]['pixels']} prob range [{p.min():.4f}, {p.max():.4f}] "
              f"near-threshold={near}")
    manifest = {"weights": os.path.relpath(os.path.abspath(wpath), outdir),
                "sha256": sha256_file(wpath),
                "threshold": thr, "presence_threshold": pthr, "cases": cases}
    with open(args.out + ".json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
