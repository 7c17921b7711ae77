"""Cross-validation by patient: the project's quality figure.

  /usr/bin/python3 train/cv.py --data ../shared/data/uwmgi          # all folds
  /usr/bin/python3 train/cv.py --folds 0,1                          # some folds
  /usr/bin/python3 train/cv.py --table-only                         # just the table

Patients with trustworthy images (every group but derived8-gif) are dealt
into K folds (default 4) by a fixed rule: sorted by slice count, largest
first, dealt in snake order (0..K-1, K-1..0, ...).
For fold k the network is trained with the fixed recipe (fit.RECIPE) on
every other patient, the GIF-derived volumes included (they are never
tested), and judged on fold k's patients at the grid an exported file runs
at (--input-size; default: the grid it trained at, the recipe's size, as
train.py exports it).  Tables before 2026-12-01 judged 192 px networks at
256 px (the then default of both); train/cv/first-run-256/ keeps one.
Nothing is chosen here: the recipe (step count, last step kept, mask and
presence thresholds 0.5) is fixed.  train/cv_choose.py then chooses the
grid and the thresholds per fold on the other folds' predictions and gives
the figure of that choice.

Per fold, OUT/foldK.json keeps every test slice's figures; the table
(OUT/cv.md and OUT/cv.json) gives, per organ and per image group:
  * Dice over the slices where the organ or the prediction is present;
  * the share of slices where both are empty (a correct "no organ");
  * HD95 in mm over the slices where both are present (one empty is a
    detection error and is counted in the Dice, not here);
as the mean over slices of all folds pooled, and mean +- sd over folds.
Training checkpoints go to RUNS/foldK (resumable; not committed; a
finished one is only judged again, so --out NEW with the same --runs
re-judges the same networks, e.g. at another --input-size or with
--tta-gamma).  --init-runs fine-tunes each fold's network of another run
(for example with --steps 200 --lr 1e-4 --consistency 1) on that fold's
training patients only.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
import fit  # noqa: E402
from evaluate import hd95, predict_record  # noqa: E402
from model import CLASSES  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def make_folds(recs, k):
    """[[case, ...] per fold]: deterministic, balanced by patients and
    slices: patients sorted by trustworthy slice count (largest first, then
    name) are dealt in a snake order (0..k-1, k-1..0, ...)."""
    count = {}
    for r in recs:
        if r["group"] not in dataset.UNTRUSTED_FOR_EVAL:
            count[r["case"]] = count.get(r["case"], 0) + 1
    folds = [[] for _ in range(k)]
    for i, case in enumerate(sorted(count, key=lambda c: (-count[c], c))):
        rnd, pos = divmod(i, k)
        folds[pos if rnd % 2 == 0 else k - 1 - pos].append(case)
    return [sorted(f) for f in folds]


def slice_figures(rec, masks, gt):
    """Per organ: dice (None when both empty), both_empty, hd95 (both present)."""
    out = {}
    for c, name in enumerate(CLASSES):
        p, g = masks[c].astype(bool), gt[c].astype(bool)
        ps, gs = int(p.sum()), int(g.sum())
        fig = {"pred_px": ps, "true_px": gs}
        if ps == 0 and gs == 0:
            fig.update(dice=None, both_empty=True, hd95=None)
        else:
            fig.update(dice=2.0 * float(np.logical_and(p, g).sum()) / (ps + gs), both_empty=False,
                       hd95=hd95(p, g, rec["spacing"]) if ps and gs else None)
        out[name] = fig
    return out


def judge_records(model, recs, policy):
    """foldK.json's "slices" entries: model's masks on recs (at the policy's
    grid, thresholds 0.5) against their labels, slice_figures per organ."""
    slices = []
    with torch.no_grad():
        for r in recs:
            _, masks, pres = predict_record(model, r, policy=policy)
            slices.append({"id": r["id"], "case": r["case"], "group": r["group"],
                           "presence": [round(float(v), 4) for v in pres],
                           "organs": slice_figures(r, masks, dataset.load_masks(r))})
    return slices


def run_fold(k, folds, recs, args, recipe):
    test_cases = set(folds[k])
    train_recs = [r for r in recs if r["case"] not in test_cases]
    test_recs = [r for r in recs if r["case"] in test_cases and r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    out = os.path.join(args.runs, f"fold{k}")
    log = lambda m: print(f"[fold {k}] {m}", flush=True)  # noqa: E731
    start = args.init or (args.init_runs and os.path.join(args.init_runs, f"fold{k}", "last.pt"))
    if start:
        start = os.path.abspath(start)
        with open(start, "rb") as f:
            recipe = dict(recipe, init=start, init_sha256=hashlib.sha256(f.read()).hexdigest())
        if not args.normalisation:  # a fine-tune keeps its network's normalisation
            recipe["normalisation"] = fit.init_normalisation(start)
    log(f"test cases {sorted(test_cases)} ({len(test_recs)} slices); train {len(train_recs)} slices")
    model, summary = fit.fit(train_recs, recipe, out, seed=args.seed, log=log, max_steps=args.max_steps)
    t = time.time()
    size = args.input_size or recipe["size"]
    policy = dict(summary.pop("preprocess"), input_size=[size, size])  # the normalisation it trained with
    if args.tta_gamma:
        policy["tta_gamma"] = args.tta_gamma
    slices = judge_records(model, test_recs, policy)
    res = {"fold": k, "test_cases": sorted(test_cases), "train_cases": sorted({r["case"] for r in train_recs}),
           "input_size": policy["input_size"], "normalisation": policy["normalisation"],
           "tta_gamma": policy.get("tta_gamma"), "recipe": recipe,
           "seed": args.seed, "training": summary, "slices": slices, "eval_seconds": round(time.time() - t, 1)}
    if not args.max_steps:
        with open(os.path.join(args.out, f"fold{k}.json"), "w") as f:
            json.dump(res, f, indent=1)
    log(f"done: {len(slices)} test slices")
    return res


def write_table(out_dir, stem, doc, lines):
    """OUT_DIR/STEM.json (doc, indented, newline-terminated) and
    OUT_DIR/STEM.md (the Markdown lines); OUT_DIR is made if needed."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def same_recipe(a, b):
    """Whether two recipes train alike (one without "normalisation" is a
    percentile one: recipes before 2026-12-02 did not name it)."""
    return dict({"normalisation": "percentile"}, **a) == dict({"normalisation": "percentile"}, **b)


def table_row(slices):
    """The table's figures pooled over these slices (foldK.json entries):
    per organ Dice (None: no slice with the organ or a prediction), both
    empty share and HD95; mean_dice over the organs that have a Dice."""
    row = {}
    for name in CLASSES:
        d = [s["organs"][name]["dice"] for s in slices if s["organs"][name]["dice"] is not None]
        h = [s["organs"][name]["hd95"] for s in slices if s["organs"][name]["hd95"] is not None]
        e = [s["organs"][name]["both_empty"] for s in slices]
        row[name] = {"dice": float(np.mean(d)) if d else None, "n_dice": len(d),
                     "both_empty": float(np.mean(e)) if e else None,
                     "hd95_mm": float(np.mean(h)) if h else None, "n_hd95": len(h)}
    ds = [row[n]["dice"] for n in CLASSES if row[n]["dice"] is not None]
    row["mean_dice"] = float(np.mean(ds)) if ds else None
    row["slices"] = len(slices)
    return row


def summarise(results):
    """Table dict: rows keyed by group ('all' first) then organ."""
    groups = sorted({s["group"] for r in results for s in r["slices"]})
    table = {}
    for g in ["all"] + groups:
        pooled = [s for r in results for s in r["slices"] if g == "all" or s["group"] == g]
        per_fold = [table_row([s for s in r["slices"] if g == "all" or s["group"] == g]) for r in results]
        entry = {"pooled": table_row(pooled), "folds": {}}
        for key in list(CLASSES) + ["mean_dice"]:
            vals = [pf["mean_dice"] if key == "mean_dice" else pf[key]["dice"] for pf in per_fold]
            vals = [v for v in vals if v is not None]
            entry["folds"][key] = {"mean": float(np.mean(vals)) if vals else None,
                                   "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                                   "n_folds": len(vals)}
        table[g] = entry
    return table


def markdown(table, results, k):
    f = lambda v, p=3: "n/a" if v is None else f"{v:.{p}f}"  # noqa: E731
    done = sorted(r["fold"] for r in results)
    lines = [f"Cross-validation by patient: folds {done} of {k} done; "
             f"{sum(len(r['slices']) for r in results)} test slices, "
             f"{len({c for r in results for c in r['test_cases']})} patients.", "",
             "Dice: over slices where the organ or the prediction is present (pooled over folds; "
             "mean +- sd over folds in brackets). Empty: share of slices where both are empty. "
             "HD95: mm, slices where both are present.", "",
             "| group | slices | organ | Dice | Dice by fold | empty | HD95 mm |",
             "|---|---|---|---|---|---|---|"]
    for g, e in table.items():
        p = e["pooled"]
        for name in CLASSES:
            fd = e["folds"][name]
            lines.append(f"| {g} | {p['slices']} | {name} | {f(p[name]['dice'])} (n={p[name]['n_dice']}) | "
                         f"{f(fd['mean'])} +- {f(fd['sd'])} | {f(p[name]['both_empty'], 2)} | "
                         f"{f(p[name]['hd95_mm'], 1)} |")
        fd = e["folds"]["mean_dice"]
        lines.append(f"| {g} | {p['slices']} | **mean** | **{f(p['mean_dice'])}** | "
                     f"{f(fd['mean'])} +- {f(fd['sd'])} | | |")
    lines += ["", "| fold | test patients | test slices | training s |", "|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["fold"]):
        lines.append(f"| {r['fold']} | {', '.join(r['test_cases'])} | {len(r['slices'])} | "
                     f"{r['training']['seconds']} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--folds", help="comma-separated fold numbers to run (default: all)")
    ap.add_argument("--out", default=os.path.join(HERE, "cv"), help="fold results and table (committed)")
    ap.add_argument("--runs", default=os.path.join(HERE, "runs", "cv"), help="checkpoints (not committed)")
    ap.add_argument("--steps", type=int, help="override the recipe's step count (smoke runs)")
    ap.add_argument("--lr", type=float, help="override the recipe's peak learning rate")
    ap.add_argument("--consistency", type=float,
                    help="weight of fit.consistency_loss (as train.py --consistency; default 0)")
    ap.add_argument("--init-runs",
                    help="fine-tune: fold k starts from INIT_RUNS/foldK/last.pt (another cv.py "
                         "run's fold networks, so each fine-tune sees only its fold's training patients)")
    ap.add_argument("--init",
                    help="every fold starts from this fit() checkpoint (e.g. train/pretrain.py's last.pt); "
                         "refused if it trained on a fold's test patients")
    ap.add_argument("--max-steps", type=int, default=0, help="smoke: stop each fold early, write nothing")
    ap.add_argument("--input-size", type=int,
                    help="grid (px) the test slices are judged at (default: the recipe's training size)")
    ap.add_argument("--tta-gamma", type=lambda v: [float(g) for g in v.split(",")],
                    help="judge with photometric test-time augmentation: comma-separated powers "
                         "(preprocess.grid_probs), e.g. 0.75,1,1.3333333333333333")
    ap.add_argument("--normalisation", choices=("percentile", "histogram_match"),
                    help="the recipe's normalisation (fit.policy_of; default: with --init-runs each "
                         "fold network's, else fit.RECIPE's, histogram_match, whose reference comes from "
                         "each fold's training patients; percentile reproduces train/cv/cv.md)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if args.init and args.init_runs:
        sys.exit("--init and --init-runs: one start per fold, choose one")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    recipe = dict(fit.RECIPE)
    if args.steps:
        recipe["steps"] = args.steps
    if args.lr:
        recipe["lr"] = args.lr
    if args.consistency:
        recipe["consistency"] = args.consistency
    if args.normalisation:
        recipe["normalisation"] = args.normalisation
    recs = dataset.discover(args.data)
    if not recs:
        sys.exit(f"no labelled images under {args.data}")
    folds = make_folds(recs, args.k)
    with open(os.path.join(args.out, "folds.json"), "w") as f:
        json.dump({"k": args.k, "folds": folds, "rule": "patients by slice count, dealt in snake order"}, f,
                  indent=1)
        f.write("\n")
    todo = range(args.k) if not args.folds else [int(v) for v in args.folds.split(",")]
    if args.init:  # before any fold trains
        seen = set(torch.load(args.init, map_location="cpu", weights_only=False).get("train_cases") or ())
        if not seen:
            sys.exit(f"--init {args.init} does not say which patients it trained on")
        for k in todo:
            if seen & set(folds[k]):
                sys.exit(f"--init {args.init} trained on fold {k}'s test patients {sorted(seen & set(folds[k]))}")
    if not args.table_only:
        for k in todo:
            done = os.path.join(args.out, f"fold{k}.json")
            if os.path.exists(done) and not args.max_steps:
                with open(done) as f:
                    if not same_recipe(json.load(f)["recipe"], recipe):
                        sys.exit(f"{done} was made with another recipe: choose another --out "
                                 "(train/cv/ is the percentile recipe's: --normalisation percentile)")
                print(f"[fold {k}] already done", flush=True)
                continue
            run_fold(k, folds, recs, args, recipe)
    results = []
    for k in range(args.k):
        p = os.path.join(args.out, f"fold{k}.json")
        if os.path.exists(p):
            with open(p) as f:
                results.append(json.load(f))
    if not results:
        print("no fold finished yet")
        return
    table = summarise(results)
    with open(os.path.join(args.out, "cv.json"), "w") as f:
        json.dump({"folds_done": [r["fold"] for r in results], "k": args.k, "table": table}, f, indent=1)
    md = markdown(table, results, args.k)
    with open(os.path.join(args.out, "cv.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
