"""Choose the removal of small mask components inside the cross-validation,
and measure what the choice is worth on patients that chose nothing.

  /usr/bin/python3 train/cv_min_area.py --cv DIR --runs RUNS [--out DIR]

Needs a finished train/cv.py run (DIR/folds.json and foldK.json, the fold
networks RUNS/foldK/last.pt).  Each fold's network predicts its own test
slices once, as cv.py judges them (its training grid, thresholds 0.5,
cv.judge_records' masks).  Then, per organ and per share a of SHARES, every
8-connected component of the organ's mask with fewer than a * H * W pixels
(preprocess.remove_small_components; a share of the slice's area, so that
no pixel spacing is needed) is removed, and the slice is scored as cv.py
scores it: Dice over the slices where the organ or the prediction is
present, pooled over slices, the organs averaged.

Fold k's share, organ by organ, is the best on the other folds' test
slices: they are fold k's training patients, predicted by networks that
never trained on them (an inner validation of the same kind as
train/cv_choose.py's; ties go to the smaller share).  Fold k's test slices
are then scored with it; the pooled result is the honest figure.  The
share best over all folds is what a file trained on every patient would
carry; its score on the same slices is optimistic and printed beside.

Writes OUT/min_area.json and OUT/min_area.md.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
from cv import write_table  # noqa: E402
from cv_choose import fold_network  # noqa: E402
from evaluate import predict_record  # noqa: E402
from fit import checkpoint_policy  # noqa: E402
from model import CLASSES  # noqa: E402
from preprocess import component_sizes, components_at_least  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARES = (0.0, 0.0002, 0.0005, 0.001, 0.002, 0.004)


def organ_dice(pred, gt):
    """Dice of two boolean masks; None when both are empty."""
    ps, gs = int(pred.sum()), int(gt.sum())
    if ps == 0 and gs == 0:
        return None
    return 2.0 * float(np.logical_and(pred, gt).sum()) / (ps + gs)


def score_fold(model, policy, recs):
    """[(case, id, organ, {share: dice or None})] for every test slice."""
    rows = []
    with torch.no_grad():
        for r in recs:
            _, masks, _ = predict_record(model, r, policy=policy)
            gt = dataset.load_masks(r).astype(bool)
            h, w = masks.shape[1:]
            for c, organ in enumerate(CLASSES):
                labels, sizes = component_sizes(masks[c])
                by_share = {}
                for a in SHARES:
                    by_share[a] = organ_dice(components_at_least(labels, sizes, a * h * w), gt[c])
                rows.append((r["case"], r["id"], organ, by_share))
    return rows


def organ_figure(rows, organ, a, cases):
    """Pooled Dice of one organ with share a over the slices of these cases
    (0 when no slice has the organ or a prediction, as thresholds.figure)."""
    d = [s[a] for (c, _, o, s) in rows if o == organ and c in cases and s[a] is not None]
    return float(np.mean(d)) if d else 0.0


def best_share(rows, organ, cases):
    return max(SHARES, key=lambda a: (organ_figure(rows, organ, a, cases), -a))


def evaluate(rows, fold_cases):
    """The document of min_area.json (see the module text)."""
    everyone = set().union(*fold_cases)
    plain = {o: organ_figure(rows, o, 0.0, everyone) for o in CLASSES}
    nested_d = {o: [] for o in CLASSES}
    folds = []
    for k, cases in enumerate(fold_cases):
        pick = {o: best_share(rows, o, everyone - cases) for o in CLASSES}
        for (c, _, o, s) in rows:
            if c in cases and s[pick[o]] is not None:
                nested_d[o].append(s[pick[o]])
        fold_plain = [organ_figure(rows, o, 0.0, cases) for o in CLASSES]
        fold_pick = [organ_figure(rows, o, pick[o], cases) for o in CLASSES]
        folds.append({"fold": k, "pick": pick, "mean_dice": float(np.mean(fold_pick)),
                      "plain_mean_dice": float(np.mean(fold_plain))})
    nested = {o: float(np.mean(v)) if v else 0.0 for o, v in nested_d.items()}
    best = {o: best_share(rows, o, everyone) for o in CLASSES}
    best_d = {o: organ_figure(rows, o, best[o], everyone) for o in CLASSES}
    by_share = {str(a): {o: organ_figure(rows, o, a, everyone) for o in CLASSES} for a in SHARES}
    return {"shares": list(SHARES), "patients": sorted(everyone),
            "slices": len(rows) // len(CLASSES),
            "plain": {"dice": plain, "mean_dice": float(np.mean(list(plain.values())))},
            "nested": {"dice": nested, "mean_dice": float(np.mean(list(nested.values()))), "folds": folds},
            "chosen_on_all_folds": {"share": best, "dice_optimistic": best_d,
                                    "mean_dice_optimistic": float(np.mean(list(best_d.values())))},
            "by_share": by_share}


def markdown(doc):
    f3 = lambda v: f"{v:.3f}"  # noqa: E731
    row = lambda name, d, m: f"| {name} | " + " | ".join(f3(d[o]) for o in CLASSES) + f" | {m} |"  # noqa: E731
    best = doc["chosen_on_all_folds"]
    md = [f"Small components removed, the share chosen inside the cross-validation ({doc['slices']} test "
          f"slices, {len(doc['patients'])} patients; train/cv_min_area.py).", "",
          "| masks | " + " | ".join(CLASSES) + " | mean |", "|---|---|---|---|---|",
          row("as cv.py judges them (no removal)", doc["plain"]["dice"], f3(doc["plain"]["mean_dice"])),
          row("**share chosen per fold on the other folds (honest)**", doc["nested"]["dice"],
              f"**{f3(doc['nested']['mean_dice'])}**"),
          row("best over all folds: " + ", ".join(f"{best['share'][o]:g}" for o in CLASSES) + " (optimistic)",
              best["dice_optimistic"], f3(best["mean_dice_optimistic"])), "",
          "| share of the slice's area | " + " | ".join(CLASSES) + " |", "|---|---|---|---|"]
    md += [f"| {a} | " + " | ".join(f3(d[o]) for o in CLASSES) + " |" for a, d in doc["by_share"].items()]
    md += ["", "| fold | pick (" + ", ".join(CLASSES) + ") | mean Dice with pick | without |", "|---|---|---|---|"]
    md += [f"| {p['fold']} | " + ", ".join(f"{p['pick'][o]:g}" for o in CLASSES)
           + f" | {f3(p['mean_dice'])} | {f3(p['plain_mean_dice'])} |" for p in doc["nested"]["folds"]]
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--cv", required=True, help="cv.py's --out (folds.json, foldK.json)")
    ap.add_argument("--runs", required=True, help="cv.py's --runs (the fold networks)")
    ap.add_argument("--out", help="where min_area.json/.md go (default: --cv)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(os.path.join(args.cv, "folds.json")) as f:
        folds = json.load(f)["folds"]
    recs = dataset.discover(args.data)
    rows, fold_cases = [], []
    for k in range(len(folds)):
        with open(os.path.join(args.cv, f"fold{k}.json")) as f:
            judged = json.load(f)
        model, ck = fold_network(args.runs, k, judged["recipe"])
        policy = dict(checkpoint_policy(ck), input_size=judged["input_size"])
        test = [r for r in recs if r["case"] in set(folds[k]) and r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
        part = score_fold(model, policy, test)
        # share 0 must reproduce cv.py's own judging of the same network
        want = {(s["id"], o): s["organs"][o]["dice"] for s in judged["slices"] for o in CLASSES}
        for (_, sid, o, s) in part:
            got, ref = s[0.0], want[(sid, o)]
            if (got is None) != (ref is None) or (got is not None and abs(got - ref) > 1e-9):
                raise SystemExit(f"fold {k} {sid} {o}: Dice {got} without removal, cv.py judged {ref}")
        print(f"[fold {k}] {len(test)} test slices scored", flush=True)
        rows += part
        fold_cases.append(set(folds[k]))
    doc = evaluate(rows, fold_cases)
    md = markdown(doc)
    write_table(args.out or args.cv, "min_area", doc, md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
