"""Draw the README figure: a held-out MRI slice, segd's predicted masks and
the ground truth side by side.  Masks come from `segd infer` (the C engine),
ground truth from train.csv.

  /usr/bin/python3 docs/make_overlay.py [SEGD_BIN] [SLICE.png] [OUT.png]
"""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "train"))
from preprocess import load_png, rle_decode  # noqa: E402

COLOURS = {"large_bowel": (255, 170, 0), "small_bowel": (0, 200, 255), "stomach": (255, 60, 140)}


def overlay(grey, masks, title):
    g = grey.astype(np.float32)
    g = (255 * (g - g.min()) / max(1e-6, g.max() - g.min())).astype(np.uint8)
    rgb = np.stack([g] * 3, -1).astype(np.float32)
    for name, m in masks.items():
        c = np.array(COLOURS[name], np.float32)
        rgb[m > 0] = 0.55 * rgb[m > 0] + 0.45 * c
        pad = np.pad(m, 1)
        edge = (m > 0) & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]).astype(bool)
        rgb[edge] = c
    im = Image.fromarray(rgb.astype(np.uint8)).resize((grey.shape[1] * 2, grey.shape[0] * 2), Image.NEAREST)
    ImageDraw.Draw(im).text((8, 8), title, fill=(255, 255, 255))
    return im


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "segd")
    slice_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        ROOT, "tests", "data", "case110_day16_slice_0070_360_310_1.50_1.50.png")
    out = sys.argv[3] if len(sys.argv) > 3 else os.path.join(ROOT, "docs", "overlay.png")
    doc = json.loads(subprocess.check_output([binary, "infer", slice_path], cwd=ROOT))
    h, w = doc["height"], doc["width"]
    pred = {k: rle_decode(v, h, w) for k, v in doc["masks"].items()}
    stem = os.path.basename(slice_path)
    sid = "_".join(stem.split("_")[:4])  # caseX_dayY_slice_SSSS
    truth = {}
    csv_path = os.path.join(ROOT, "..", "shared", "data", "uwmgi", "train.csv")
    if os.path.exists(csv_path):
        import csv
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                if row["id"] == sid:
                    truth[row["class"]] = rle_decode(row["segmentation"], h, w)
    grey = load_png(slice_path)
    panels = [overlay(grey, pred, f"segd {doc['model']['name']}")]
    if truth:
        panels.append(overlay(grey, truth, "ground truth"))
    fig = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), panels[0].height + 28), (20, 20, 20))
    x = 0
    for p in panels:
        fig.paste(p, (x, 0))
        x += p.width + 8
    d = ImageDraw.Draw(fig)
    lx = 8
    for name, c in COLOURS.items():
        d.rectangle([lx, panels[0].height + 8, lx + 12, panels[0].height + 20], fill=c)
        d.text((lx + 18, panels[0].height + 8), name.replace("_", " "), fill=(230, 230, 230))
        lx += 140
    fig.save(out)
    print(f"wrote {out} ({sid})")


if __name__ == "__main__":
    main()
