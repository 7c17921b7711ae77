"""Choose the input grid and the mask and presence thresholds inside the
cross-validation, and measure what choosing them is worth on patients that
chose nothing.

  /usr/bin/python3 train/cv_choose.py --cv train/cv --runs train/runs/cv

Needs the fold networks of a finished train/cv.py run (RUNS/foldK/last.pt at
the recipe's last step; cv.py keeps them).  Each fold's network runs over
its own test patients once per input grid (the square the slice is resized
to before the network: preprocess.input_size, what the engine reads from a
file's metadata), and every triple
  input grid x presence threshold (an organ whose presence probability is
  below it gets an empty mask; 0 turns the gate off) x mask threshold (p > t)
below is scored as cv.py scores it: Dice over the slices where the organ or
the prediction is present, per organ, pooled over slices, the three organs
averaged.

Fold k's triple is the best on the other folds' test patients.  They are
fold k's training patients, and their predictions come from networks that
never trained on them, so the triple is chosen on an inner validation of
fold k's training patients and never sees fold k's test patients.  (Their
networks did train on fold k's patients: a choice of three numbers from
out-of-fold predictions, not a nested re-training, which would cost K x K
runs.)  Fold k's test patients are then scored with that triple: the pooled
result is the honest figure of "grid and thresholds chosen by
cross-validation".

Written to OUT/choose.json and OUT/choose.md: the recipe's fixed choice
(its training grid, 0.5/0.5: cv.py's table), the nested figure with each
fold's pick, and the triple that is best over all folds (what a file
trained on every patient would carry; its score on the same slices is
optimistic and is printed beside the nested one only).

  /usr/bin/python3 train/cv_choose.py --cv DIR --apply IN.safetensors OUT.safetensors

copies a weights file with the triple chosen over all folds carried over:
the thresholds as they are, the grid as a ratio (a file trained at S px
runs at S x chosen grid / the CV recipe's grid, to a multiple of 16).
The tensors are unchanged; a "cv_choice" metadata entry says where the
numbers come from.  Whether the choice carries over to a network of
another recipe is a question for patients that network never saw.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
from cv import write_table  # noqa: E402
from fit import checkpoint_policy, load_checkpoint  # noqa: E402
from model import CLASSES  # noqa: E402
from thresholds import choose, figure, score_slices  # noqa: E402
from weights_io import read_safetensors, write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GRIDS = (192, 224, 256, 288)  # and the recipe's own
PRESENCE = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8)
MASK = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def fold_network(runs, k, recipe):
    """(eval-mode network of RUNS/foldK/last.pt, its checkpoint); refuses an
    unfinished run or one trained with another recipe than the table's."""
    model, ck = load_checkpoint(os.path.join(runs, f"fold{k}", "last.pt"))
    if ck["recipe"] != recipe or ck["step"] != recipe["steps"]:
        raise SystemExit(f"{runs}/fold{k}/last.pt: step {ck['step']} of {ck['recipe']}, "
                         f"not the finished run of the table's recipe {recipe}")
    return model, ck


def nested_choice(res, fold_cases):
    """res {choice: [(case, organ, dice or None), ...]}, fold_cases [set of
    cases per fold] -> (pick per fold, rows of each fold under its pick).
    Fold k's pick is the best choice on every other fold's cases only."""
    everyone = set().union(*fold_cases)
    picks, rows = [], []
    for cases in fold_cases:
        pick = choose(res, everyone - cases)
        picks.append(pick)
        rows.append([row for row in res[pick] if row[0] in cases])
    return picks, rows


def apply_choice(cv_dir, choose_dir, src, dst):
    """Write dst: src's tensors and metadata with the all-fold triple of
    CHOOSE_DIR/choose.json carried over (see the module text); the CV
    recipe's grid comes from CV_DIR/fold0.json.  Returns dst's metadata."""
    with open(os.path.join(choose_dir, "choose.json")) as f:
        doc = json.load(f)
    with open(os.path.join(cv_dir, "fold0.json")) as f:
        cv_size = json.load(f)["recipe"]["size"]
    best = doc["chosen_on_all_folds"]
    tensors, md = read_safetensors(src)
    md = dict(md)
    policy = json.loads(md["preprocess"])
    trained = json.loads(md.get("training", "{}")).get("recipe", {}).get("size", policy["input_size"][0])
    ratio = best["input_size"] / cv_size
    grid = int(round(trained * ratio / 16.0)) * 16
    previous = {"input_size": policy["input_size"], "threshold": md.get("threshold"),
                "presence_threshold": md.get("presence_threshold")}
    policy["input_size"] = [grid, grid]
    md["preprocess"] = json.dumps(policy)
    md["threshold"] = str(best["threshold"])
    md["presence_threshold"] = str(best["presence_threshold"])
    md["cv_choice"] = json.dumps({
        "chosen_by": "train/cv_choose.py: best over all folds of the CV recipe's networks",
        "cv_recipe_size": cv_size, "cv_input_size": best["input_size"], "grid_ratio": round(ratio, 4),
        "trained_at": trained, "nested_mean_dice": round(doc["nested"]["mean_dice"], 4),
        "fixed_mean_dice": round(doc["fixed"]["mean_dice"], 4), "previous": previous})
    write_safetensors(tensors, md, dst)
    return md


def markdown(doc, n_folds):
    """choose.md's lines from choose.json's document."""
    f3 = lambda v: f"{v:.3f}"  # noqa: E731
    row = lambda name, dice, mean: (f"| {name} | " + " | ".join(f3(dice[c]) for c in CLASSES)  # noqa: E731
                                    + f" | {mean} |")
    fixed, nested, best = doc["fixed"], doc["nested"], doc["chosen_on_all_folds"]
    md = [f"Input grid and thresholds chosen inside the cross-validation ({doc['slices']} test slices, "
          f"{len(doc['patients'])} patients, {n_folds} folds; train/cv_choose.py).", "",
          "| grid px, thresholds (presence / mask) | " + " | ".join(CLASSES) + " | mean |", "|---|---|---|---|---|",
          row(f"fixed {fixed['input_size']}, 0.5 / 0.5 (cv.py's table)", fixed["dice"], f3(fixed["mean_dice"])),
          row("**chosen per fold on the other folds (honest)**", nested["dice"],
              f"**{f3(nested['mean_dice'])}**"),
          row(f"best over all folds: {best['input_size']}, {best['presence_threshold']} / {best['threshold']} "
              "(optimistic)", best["dice_optimistic"], f3(best["mean_dice_optimistic"])), "",
          "Each grid at 0.5 / 0.5, all folds: "
          + ", ".join(f"{g} px {f3(v)}" for g, v in doc["by_grid_at_0.5"].items()) + ".", "",
          "| fold | pick (grid, presence / mask) | mean Dice with pick | fixed |", "|---|---|---|---|"]
    md += [f"| {p['fold']} | {p['pick']['input_size']}, {p['pick']['presence_threshold']} / "
           f"{p['pick']['threshold']} | {f3(p['mean_dice'])} | {f3(p['fixed_mean_dice'])} |" for p in nested["folds"]]
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--cv", default=os.path.join(HERE, "cv"), help="cv.py's --out (folds.json, foldK.json)")
    ap.add_argument("--runs", default=os.path.join(HERE, "runs", "cv"), help="cv.py's --runs (fold networks)")
    ap.add_argument("--out", help="where choose.json/.md go (default: --cv)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--apply", nargs=2, metavar=("IN", "OUT"),
                    help="copy weights IN to OUT with the all-fold choice of --cv/choose.json (no scoring)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = args.out or args.cv
    if args.apply:
        md = apply_choice(args.cv, out_dir, *args.apply)
        print(f"wrote {args.apply[1]}: input_size {json.loads(md['preprocess'])['input_size']}, "
              f"presence_threshold {md['presence_threshold']}, threshold {md['threshold']}")
        return
    with open(os.path.join(args.cv, "folds.json")) as f:
        folds = json.load(f)["folds"]
    recs = dataset.discover(args.data)
    recipes = []
    for k in range(len(folds)):
        with open(os.path.join(args.cv, f"fold{k}.json")) as f:
            recipes.append(json.load(f)["recipe"])
    recipe = recipes[0]
    if any(r != recipe for r in recipes):
        raise SystemExit(f"{args.cv}: the folds were trained with different recipes")
    grids = sorted(set(GRIDS) | {recipe["size"]})
    res, fold_cases = {}, []
    for k in range(len(folds)):
        model, ck = fold_network(args.runs, k, recipe)
        test = [r for r in recs if r["case"] in set(folds[k]) and r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
        print(f"[fold {k}] {len(test)} test slices, trained at {recipe['size']} px", flush=True)
        for grid in grids:
            with torch.no_grad():
                part = score_slices(model, checkpoint_policy(ck, grid), test, log=lambda m: None,
                                    presence=PRESENCE, mask=MASK)
            for pair, rows in part.items():
                res.setdefault((grid,) + pair, []).extend(rows)
        fold_cases.append(set(folds[k]))
    everyone = set().union(*fold_cases)
    fixed_choice = (recipe["size"], 0.5, 0.5)  # cv.py's: the grid it trained at, thresholds 0.5

    picks, fold_rows = nested_choice(res, fold_cases)
    nested_rows = [row for rows in fold_rows for row in rows]
    per_fold = [{"fold": k, "pick": {"input_size": pick[0], "presence_threshold": pick[1], "threshold": pick[2]},
                 "mean_dice": figure(rows, cases)[0], "fixed_mean_dice": figure(res[fixed_choice], cases)[0]}
                for k, (pick, rows, cases) in enumerate(zip(picks, fold_rows, fold_cases))]
    nested, nested_per = figure(nested_rows, everyone)
    fixed, fixed_per = figure(res[fixed_choice], everyone)
    best = choose(res, everyone)
    best_mean, best_per = figure(res[best], everyone)
    doc = {"grid": {"input_size": grids, "presence_threshold": PRESENCE, "threshold": MASK},
           "patients": sorted(everyone), "slices": len(res[fixed_choice]) // len(CLASSES),
           "fixed": {"input_size": fixed_choice[0], "presence_threshold": 0.5, "threshold": 0.5,
                     "mean_dice": fixed, "dice": fixed_per},
           "nested": {"mean_dice": nested, "dice": nested_per, "folds": per_fold},
           "chosen_on_all_folds": {"input_size": best[0], "presence_threshold": best[1], "threshold": best[2],
                                   "mean_dice_optimistic": best_mean, "dice_optimistic": best_per},
           "by_grid_at_0.5": {g: figure(res[(g, 0.5, 0.5)], everyone)[0] for g in grids}}
    md = markdown(doc, len(folds))
    write_table(out_dir, "choose", doc, md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
