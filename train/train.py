"""Train the UNet3+ that segd ships, on every patient with images, with the
recipe that cross-validation (train/cv.py) measured, and export it.

  /usr/bin/python3 train/train.py --data ../shared/data/uwmgi --out train/runs/final
  ... --resume                  # continue from OUT/last.pt (checkpoint every 50 steps)

The recipe is fit.RECIPE (flags override single fields).  Nothing is chosen
on held-out data: the last step is exported, thresholds are 0.5.  The
metadata records the data used (by group and patient), the recipe and, when
the recipe is fit.RECIPE itself (or --cv names a table), the
cross-validation figure it earned.
"""
import argparse
import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
import fit  # noqa: E402
from weights_io import data_metadata, export_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


RECIPE_CV = os.path.join(HERE, "cv", "histmatch-scratch", "candidate", "cv.json")  # fit.RECIPE's table


def cv_table_for(recipe, cv=None):
    """The CV table (a cv.json path) whose figure a file trained with recipe
    may carry: cv when the caller names one, else fit.RECIPE's table, but
    only for fit.RECIPE itself: a file of another width, grid or schedule
    was not measured by it.  None when no table applies."""
    if cv:
        return cv
    return RECIPE_CV if recipe == fit.RECIPE else None


def main():
    ap = argparse.ArgumentParser(description="Train UNet3+ for segd")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--out", default=os.path.join(HERE, "runs", "final"))
    for key in ("width", "size", "batch", "steps"):
        ap.add_argument("--" + key, type=int, help=f"recipe {key} (default {fit.RECIPE[key]})")
    ap.add_argument("--input-size", type=int,
                    help="the grid (px) the exported file runs at in the engine (default: --size, the grid "
                         "it trained at)")
    ap.add_argument("--lr", type=float, help=f"recipe lr (default {fit.RECIPE['lr']})")
    ap.add_argument("--no-bf16", action="store_true", help="train in fp32 (slower on CPU)")
    ap.add_argument("--init", help="fine-tune: start from this exported .safetensors (same width)")
    ap.add_argument("--p-coarsen", type=float, help=f"recipe p_coarsen (default {fit.RECIPE['p_coarsen']})")
    ap.add_argument("--consistency", type=float,
                    help="weight of fit.consistency_loss between two export renditions of each warped "
                         "slice (default 0: off; a batch then holds batch/2 slices, each twice)")
    ap.add_argument("--normalisation", choices=("percentile", "histogram_match"),
                    help="preprocess normalisation (fit.policy_of; default: with --init that network's, "
                         "else the recipe's, histogram_match, which matches each slice's histogram to a "
                         "reference taken from the training images; percentile: the shipped file's)")
    ap.add_argument("--exclude-cases", default="", help="comma-separated cases to leave out")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-slices", type=int, default=0, help="smoke runs: use only N slices")
    ap.add_argument("--max-steps", type=int, default=0, help="smoke runs: stop after N steps")
    ap.add_argument("--cv", help="CV table to record in the metadata, measured with this very recipe (default: "
                                 "fit.RECIPE's, recorded only when no flag changed the recipe; train/cv/cv.json is "
                                 "the percentile one's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    recipe = dict(fit.RECIPE)
    for key in ("width", "size", "batch", "steps", "lr"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    if args.no_bf16:
        recipe["bf16"] = False
    if args.p_coarsen is not None:
        recipe["p_coarsen"] = args.p_coarsen
    if args.consistency:
        recipe["consistency"] = args.consistency
    if args.normalisation:
        recipe["normalisation"] = args.normalisation
    elif args.init:  # a fine-tune keeps its network's normalisation
        recipe["normalisation"] = fit.init_normalisation(args.init)
    if args.init:
        recipe["init"] = os.path.relpath(os.path.abspath(args.init), os.path.join(HERE, ".."))
        recipe["init_sha256"] = hashlib.sha256(open(args.init, "rb").read()).hexdigest()
    recs = dataset.discover(args.data)
    excluded = {c for c in args.exclude_cases.split(",") if c}
    recs = [r for r in recs if r["case"] not in excluded]
    if args.max_slices:
        recs = recs[: args.max_slices]
    if not recs:
        sys.exit(f"no labelled images under {args.data}")
    if not args.resume and os.path.exists(os.path.join(args.out, "last.pt")):
        sys.exit(f"{args.out}/last.pt exists: pass --resume or choose another --out")
    model, summary = fit.fit(recs, recipe, args.out, device=args.device, seed=args.seed,
                             resume=args.resume, max_steps=args.max_steps,
                             log=lambda m: print(m, flush=True))
    policy = summary.pop("preprocess")  # recorded as the file's "preprocess" below
    meta = {
        "data": data_metadata(recs, len(recs), 0, excluded),  # every slice trained
        "training": {"recipe": recipe, "seed": args.seed, "device": args.device, **summary},
    }
    # the CV table measures training from nothing with this recipe: a
    # fine-tune gets its figure from its held-out twin (record_figure.py)
    cv_path = cv_table_for(recipe, args.cv)
    if cv_path and os.path.exists(cv_path) and not args.max_slices and not args.init:
        with open(cv_path) as f:
            cv = json.load(f)
        meta["cross_validation"] = {"folds_done": cv["folds_done"], "k": cv["k"],
                                    "mean_dice": cv["table"]["all"]["pooled"]["mean_dice"],
                                    "table": os.path.relpath(os.path.splitext(os.path.abspath(cv_path))[0] + ".md",
                                                             os.path.join(HERE, ".."))}
    out = os.path.join(args.out, f"unet3p-{recipe['width']}.safetensors")
    digest = export_model(model, out, meta, size=args.input_size or recipe["size"], policy=policy)
    print(f"exported {out} sha256={digest}", flush=True)


if __name__ == "__main__":
    main()
