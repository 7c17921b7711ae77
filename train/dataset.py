"""UW-Madison GI data in the Kaggle layout: labels from train.csv (plus
train_224.csv where present, for slices stored at 224x224), images from
train/caseC/caseC_dayD/scans/slice_SSSS_W_H_sx_sy.png.  Works unchanged on
the full Kaggle download (every slice has an image) and on a partial copy
(only slices whose image exists are used).

Groups (from images.csv when present; the full download has none and every
slice is "kaggle"): derived8-gif slices have posterised organ interiors, so
they are train-only, never used to measure Dice, and are always posterised
as a whole during training so that texture cannot reveal the organs.
"""
import csv
import glob
import json
import os
import random

import numpy as np

from model import CLASSES
from preprocess import parse_slice_name, rle_decode

UNTRUSTED_FOR_EVAL = {"derived8-gif"}


def read_labels(root):
    labels = {}
    for name in ("train.csv", "train_224.csv"):
        p = os.path.join(root, name)
        if not os.path.exists(p):
            continue
        with open(p, newline="") as f:
            for row in csv.DictReader(f):
                # train_224.csv (later) overrides: it matches the stored size
                labels.setdefault(row["id"], {})[row["class"]] = row["segmentation"] or ""
    return labels


def read_groups(root):
    p = os.path.join(root, "images.csv")
    groups = {}
    if os.path.exists(p):
        with open(p, newline="") as f:
            for row in csv.DictReader(f):
                groups[os.path.normpath(row["path"])] = row["group"]
    return groups


def discover(root):
    """List of slice records that have both an image and labels."""
    labels = read_labels(root)
    groups = read_groups(root)
    recs = []
    for path in sorted(glob.glob(os.path.join(root, "train", "case*", "case*_day*", "scans", "*.png"))):
        info = parse_slice_name(path)
        if info is None:
            continue
        sl, w, h, sx, sy = info
        caseday = os.path.basename(os.path.dirname(os.path.dirname(path)))
        sid = f"{caseday}_slice_{sl:04d}"
        if sid not in labels:
            continue
        rel = os.path.normpath(os.path.relpath(path, root))
        recs.append({
            "id": sid, "path": path, "case": caseday.split("_")[0],
            "caseday": caseday, "slice": sl, "width": w, "height": h,
            "spacing": (sx, sy), "group": groups.get(rel, "kaggle"),
            "rle": [labels[sid].get(c, "") for c in CLASSES],
        })
    return recs


def discover_folder(folder):
    """Slice records for the Kaggle-named PNGs in one flat folder
    (caseC_dayD_slice_SSSS_W_H_sx_sy.png) labelled by its labels.csv
    (train.csv schema); the group is "folder"."""
    labels = {}
    with open(os.path.join(folder, "labels.csv"), newline="") as f:
        for row in csv.DictReader(f):
            labels.setdefault(row["id"], {})[row["class"]] = row["segmentation"] or ""
    recs = []
    for path in sorted(glob.glob(os.path.join(folder, "case*_day*_slice_*.png"))):
        info = parse_slice_name(path)
        base = os.path.basename(path)
        caseday = base.split("_slice_")[0]
        if info is None or f"{caseday}_slice_{info[0]:04d}" not in labels:
            continue
        sl, w, h, sx, sy = info
        sid = f"{caseday}_slice_{sl:04d}"
        recs.append({"id": sid, "path": path, "case": caseday.split("_")[0], "caseday": caseday,
                     "slice": sl, "width": w, "height": h, "spacing": (sx, sy), "group": "folder",
                     "rle": [labels[sid].get(c, "") for c in CLASSES]})
    return recs


def make_split(recs, seed=42, val_fraction=0.25):
    """Split by case: every slice of a case lands on one side."""
    eligible = sorted({r["case"] for r in recs if r["group"] not in UNTRUSTED_FOR_EVAL})
    rng = random.Random(seed)
    rng.shuffle(eligible)
    n_val = max(1, round(len(eligible) * val_fraction)) if len(eligible) > 1 else 0
    val = sorted(eligible[:n_val])
    train = sorted({r["case"] for r in recs} - set(val))
    return {"seed": seed, "val_fraction": val_fraction, "train_cases": train, "val_cases": val}


def load_or_make_split(recs, path, seed=42):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    split = make_split(recs, seed)
    if path:
        with open(path, "w") as f:
            json.dump(split, f, indent=1)
            f.write("\n")
    return split


def load_masks(rec):
    return np.stack([rle_decode(r, rec["height"], rec["width"]) for r in rec["rle"]])


def summarise(recs):
    by_group = {}
    for r in recs:
        g = by_group.setdefault(r["group"], {"slices": 0, "cases": set()})
        g["slices"] += 1
        g["cases"].add(r["case"])
    return {g: {"slices": v["slices"], "cases": sorted(v["cases"])} for g, v in by_group.items()}
