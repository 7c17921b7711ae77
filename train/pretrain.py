"""Pre-train UNet3+ on synthetic slices rendered from label maps alone
(synth.py: the label-map prior), for train.py / cv.py --init to start from.

  /usr/bin/python3 train/pretrain.py --data ../shared/data/uwmgi --out train/runs/pretrain
  ... --resume                          # continue from OUT/last.pt
  /usr/bin/python3 train/pretrain.py --out train/runs/pretrain --judge   # the pre-trained network alone
  /usr/bin/python3 train/cv.py --init train/runs/pretrain/last.pt --out train/cv/NEW --runs train/runs/NEW

By default the maps are those of the patients with no image under --data
(68 of 85 here), so no patient that a fold or a figure tests on shaped the
prior.  On the full Kaggle download every patient has images: pass
--with-images and --exclude-cases with the patients you will test on.
The recipe is fit.RECIPE (same width, grid and normalisation as the
training it starts; the histogram-matching reference comes from the
renders) with "synthetic": true.  OUT/last.pt is the result; it records
the patients it used ("train_cases"), which cv.py --init checks.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
import fit  # noqa: E402
import synth  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def judge(path, data):
    """The pre-trained network alone on real slices: does the prior carry
    over from renders to images?  cv.py's figures, pooled, at the grid and
    with the normalisation it trained with, thresholds 0.5."""
    from cv import judge_records, table_row
    model, ck = fit.load_checkpoint(path)
    seen = set(ck.get("train_cases") or ())
    recs = [r for r in dataset.discover(data)
            if r["group"] not in dataset.UNTRUSTED_FOR_EVAL and r["case"] not in seen]
    print(json.dumps(table_row(judge_records(model, recs, fit.checkpoint_policy(ck))), indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--out", default=os.path.join(HERE, "runs", "pretrain"))
    ap.add_argument("--steps", type=int, help=f"optimiser steps (default fit.RECIPE's, {fit.RECIPE['steps']})")
    ap.add_argument("--max-maps", type=int, default=4000, help="label maps used, evenly spaced (default 4000)")
    ap.add_argument("--exclude-cases", default="", help="comma-separated patients to leave out")
    ap.add_argument("--with-images", action="store_true",
                    help="also use the maps of patients that have images (the full Kaggle download)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=0, help="smoke runs: stop after N steps")
    ap.add_argument("--judge", action="store_true",
                    help="train nothing: print OUT/last.pt's pooled figures (cv.py's) on every trusted "
                         "slice with an image under --data whose patient it did not train on")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.judge:
        judge(os.path.join(args.out, "last.pt"), args.data)
        return
    recipe = dict(fit.RECIPE, synthetic=True, max_maps=args.max_maps)
    if args.steps:
        recipe["steps"] = args.steps
    excluded = {c for c in args.exclude_cases.split(",") if c}
    recs = synth.label_records(args.data, excluded, with_images=args.with_images, max_maps=args.max_maps)
    if not args.resume and os.path.exists(os.path.join(args.out, "last.pt")):
        sys.exit(f"{args.out}/last.pt exists: pass --resume or choose another --out")
    print(f"{len(recs)} label maps of {len({r['case'] for r in recs})} patients", flush=True)
    _, summary = fit.fit(recs, recipe, args.out, seed=args.seed, resume=args.resume, max_steps=args.max_steps,
                         log=lambda m: print(m, flush=True))
    print(f"pre-trained {summary['steps']} steps in {summary['seconds']} s: {os.path.join(args.out, 'last.pt')}",
          flush=True)


if __name__ == "__main__":
    main()
