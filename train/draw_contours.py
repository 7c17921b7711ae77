"""Draw predicted against true organ contours on slices, for the model card.

  /usr/bin/python3 train/draw_contours.py --cv --out docs/model-card/cv-contours.png ID...
  /usr/bin/python3 train/draw_contours.py --weights W.safetensors --out F.png ID...

ID is a slice id (caseC_dayD_slice_SSSS).  With --cv each slice is predicted
by the cross-validation fold model that never saw its patient (checkpoints
in train/runs/cv/foldK/last.pt, folds in train/cv/folds.json) at the grid
it trained at, so the picture shows what the card's table measures; with
--weights, by the file as the engine runs it (its grid, thresholds and
presence gate).  True contours are drawn
solid, predicted ones dashed; large bowel orange, small bowel cyan, stomach
magenta.  One panel per slice, captioned with its group and per-organ Dice.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
from evaluate import dice_scores, predict_record, weights_predictor  # noqa: E402
from fit import checkpoint_policy, load_checkpoint  # noqa: E402
from model import CLASSES  # noqa: E402
from preprocess import load_png  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
COLOURS = {"large_bowel": (255, 150, 0), "small_bowel": (0, 220, 255), "stomach": (255, 0, 200)}


def boundary(m):
    m = m.astype(bool)
    p = np.pad(m, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def panel(rec, masks, gt, scale=2):
    img = load_png(rec["path"])
    lo, hi = np.percentile(img, 1), np.percentile(img, 99)
    g = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([g] * 3, -1)
    h, w = g.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dash = ((yy + xx) // 3) % 2 == 0
    for c, name in enumerate(CLASSES):
        col = np.array(COLOURS[name], dtype=np.uint8)
        rgb[boundary(gt[c])] = col
        rgb[boundary(masks[c]) & dash] = (col * 0.55 + 255 * 0.45).astype(np.uint8)
    im = Image.fromarray(rgb).resize((w * scale, h * scale), Image.NEAREST)
    canvas = Image.new("RGB", (im.width, im.height + 30), (0, 0, 0))
    canvas.paste(im, (0, 30))
    d = ImageDraw.Draw(canvas)
    short = {"large_bowel": "LB", "small_bowel": "SB", "stomach": "St"}
    dices = "Dice " + " ".join(f"{short.get(n, n)}="
                     + (f"{dice_scores(masks[c], gt[c]):.2f}" if masks[c].any() or gt[c].any() else "-")
                     for c, n in enumerate(CLASSES))
    d.text((4, 2), f"{rec['id']} ({rec['group']})", fill=(255, 255, 255))
    d.text((4, 15), dices, fill=(255, 255, 255))
    return canvas


def fold_predictor(k, runs):
    """rec -> masks of fold k's network, at the grid it trained at and
    thresholds 0.5, as train/cv.py judges it by default."""
    model, ck = load_checkpoint(os.path.join(runs, f"fold{k}", "last.pt"))
    policy = checkpoint_policy(ck)
    return lambda rec: predict_record(model, rec, policy=policy)[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--weights")
    ap.add_argument("--cv", action="store_true")
    ap.add_argument("--runs", default=os.path.join(HERE, "runs", "cv"))
    ap.add_argument("--out", required=True)
    ap.add_argument("ids", nargs="+")
    args = ap.parse_args()
    if bool(args.cv) == bool(args.weights):
        ap.error("give --weights FILE or --cv (one of them)")
    torch.set_num_threads(2)
    recs = {r["id"]: r for r in dataset.discover(args.data)}
    panels = []
    if args.cv:
        with open(os.path.join(HERE, "cv", "folds.json")) as f:
            folds = json.load(f)["folds"]
        fold_of = {c: k for k, cs in enumerate(folds) for c in cs}
        models = {}
    else:
        predict = weights_predictor(args.weights)  # the file's grid, thresholds and gate
    for sid in args.ids:
        rec = recs[sid]
        if args.cv:
            k = fold_of[rec["case"]]
            if k not in models:
                models[k] = fold_predictor(k, args.runs)
            predict = models[k]
        masks = predict(rec)
        panels.append(panel(rec, masks, dataset.load_masks(rec)))
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    cw = max(p.width for p in panels)
    ch = max(p.height for p in panels)
    sheet = Image.new("RGB", (cols * cw, rows * ch), (0, 0, 0))
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * cw, (i // cols) * ch))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
