"""Write the quality figure of a held-out twin into a weights file.

The figure comes from train/compare_unseen.py's compare.json, so that
`GET /v1/model` and the file itself carry the figure that belongs to it:
metadata
`unseen_patients` = {cases, slices, mean_dice, dice per organ, hd95_mm,
thresholds, measured_with (the twin's sha256), table}.  The tensors are
copied unchanged (their `tensor_sha256` stays; the file's sha256 changes).
A `cross_validation` entry that train.py copied from a table of another
recipe is removed.

  /usr/bin/python3 train/record_figure.py weights/unet3p-16.safetensors \\
      train/cv/finetune/compare.json --twin 152b8e3747fd
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import CLASSES  # noqa: E402
from weights_io import read_safetensors, write_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="the file to annotate (rewritten in place)")
    ap.add_argument("compare", help="compare.json of train/compare_unseen.py")
    ap.add_argument("--twin", required=True, help="sha256 (or a prefix) of the held-out twin in it")
    args = ap.parse_args()
    with open(args.compare) as f:
        doc = json.load(f)
    found = [e for e in doc["files"] if e["sha256"].startswith(args.twin)]
    if len(found) != 1:
        sys.exit(f"{args.compare}: {len(found)} files match --twin {args.twin}")
    pooled = found[0]["table"]["all"]["pooled"]
    tensors, md = read_safetensors(args.weights)
    md.pop("cross_validation", None)
    md["unseen_patients"] = json.dumps({
        "cases": doc["cases"], "slices": doc["slices"],
        "mean_dice": round(pooled["mean_dice"], 4),
        "dice": {c: round(pooled[c]["dice"], 4) for c in CLASSES},
        "hd95_mm": {c: round(pooled[c]["hd95_mm"], 1) for c in CLASSES if pooled[c]["hd95_mm"] is not None},
        "thresholds": {"mask": float(md.get("threshold", 0.5)),
                       "presence": float(md.get("presence_threshold", 0.5))},
        "measured_with": found[0]["sha256"],
        "how": "the same training without these patients (its held-out twin); "
               "dice over slices where the organ or the prediction is present",
        "table": "train/cv/finetune/compare.md"})
    digest = write_safetensors({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, md,
                               args.weights)
    print(f"wrote {args.weights} (sha256 {digest}): unseen_patients mean Dice {pooled['mean_dice']:.4f}")


if __name__ == "__main__":
    main()
