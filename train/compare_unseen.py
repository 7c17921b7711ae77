"""Compare exported weights on patients none of them saw (cv.py's figures).

Each file is scored with cross-validation's figures (train/cv.py: Dice
over slices where the organ or the prediction is present, pooled; the
share of both-empty slices; HD95), each at its own thresholds, as the C
engine applies them.

It answers one question honestly only when no compared file saw the
patients (not in training, not in choosing an epoch or a threshold); the
script cannot know that, the caller names the patients and says so.

  /usr/bin/python3 train/compare_unseen.py --cases case139,case146,case2,case30 \\
      weights/unet3p-16.safetensors runs/ft/unet3p-16.safetensors --out train/cv/finetune

Writes OUT/compare.json and OUT/compare.md (one table per file).
"""
import argparse
import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
from cv import markdown, slice_figures, summarise  # noqa: E402
from evaluate import weights_predictor  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def score(path, recs):
    """cv.py's fold result for one file over recs (fold -1: not a fold)."""
    predict = weights_predictor(path)
    slices = [{"id": r["id"], "case": r["case"], "group": r["group"],
               "organs": slice_figures(r, predict(r), dataset.load_masks(r))} for r in recs]
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {"fold": 0, "weights": os.path.basename(path), "sha256": sha,
            "test_cases": sorted({r["case"] for r in recs}), "slices": slices,
            "training": {"seconds": "n/a"}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", nargs="+", help="exported .safetensors files")
    ap.add_argument("--cases", required=True, help="comma-separated patients none of the files saw")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--out", required=True, help="folder for compare.json and compare.md")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = {c for c in args.cases.split(",") if c}
    recs = [r for r in dataset.discover(args.data)
            if r["case"] in cases and r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    if not recs:
        sys.exit(f"no trustworthy slices of {sorted(cases)} under {args.data}")
    os.makedirs(args.out, exist_ok=True)
    doc, md = {"cases": sorted(cases), "slices": len(recs), "files": []}, []
    for path in args.weights:
        res = score(path, recs)
        table = summarise([res])
        doc["files"].append({"weights": res["weights"], "sha256": res["sha256"], "table": table})
        md += [f"## {res['weights']} (sha256 {res['sha256'][:12]}...)", "",
               markdown(table, [res], 1).split("\n", 2)[2].split("\n| fold |")[0].rstrip(), ""]
        print(f"{path}: mean Dice {table['all']['pooled']['mean_dice']:.4f} over {len(recs)} slices "
              f"of {', '.join(sorted(cases))}", flush=True)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(f"Patients: {', '.join(sorted(cases))} ({len(recs)} trustworthy slices). "
                "Each file at its own thresholds.\n\n" + "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
