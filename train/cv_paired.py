"""Paired comparison of two judgings of the same cross-validation networks
(e.g. without and with test-time augmentation): the figure of each, fold by
fold and organ by organ, and their difference on the same slices.

  /usr/bin/python3 train/cv_paired.py --base DIR_A --other DIR_B [--labels A B] [--folds 2,3] [--json OUT]

DIR_A and DIR_B are train/cv.py --out directories whose foldK.json were
judged from the same networks (cv.py --runs) and the same test slices; a
fold present in only one is refused (unless --folds names the ones to
compare), as is a fold whose slices differ.
Figures are cv.py's (cv.table_row): Dice over the slices where the organ
or the prediction is present, pooled over slices, the organs averaged.
"Slices better / worse" counts (slice, organ) pairs whose Dice moved by
more than 0.01 either way (a pair counted in one judging only, because
both masks were empty in the other, is left out of that count).
Prints a Markdown table; --json writes the figures.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cv import table_row  # noqa: E402
from model import CLASSES  # noqa: E402


def load_folds(d):
    """{fold: foldK.json document} of a cv.py --out directory."""
    out = {}
    for name in sorted(os.listdir(d)):
        if name.startswith("fold") and name.endswith(".json") and name[4:-5].isdigit():
            with open(os.path.join(d, name)) as f:
                out[int(name[4:-5])] = json.load(f)
    return out


def figure(slices):
    """(mean over organs, {organ: Dice}) pooled over these slices, as
    cv.py's table computes them (cv.table_row)."""
    row = table_row(slices)
    return row["mean_dice"], {o: row[o]["dice"] for o in CLASSES}


def compare(base, other):
    """base, other {fold: doc} -> comparison document (see the module text)."""
    if sorted(base) != sorted(other) or not base:
        raise SystemExit(f"folds differ: {sorted(base)} against {sorted(other)}")
    rows, moved = [], {"better": 0, "worse": 0}
    for k in sorted(base):
        a, b = base[k]["slices"], other[k]["slices"]
        if [s["id"] for s in a] != [s["id"] for s in b]:
            raise SystemExit(f"fold {k}: the two judgings cover different slices")
        (ma, pa), (mb, pb) = figure(a), figure(b)
        rows.append({"fold": k, "slices": len(a), "base": ma, "other": mb, "base_dice": pa, "other_dice": pb})
        for sa, sb in zip(a, b):
            for o in CLASSES:
                da, db = sa["organs"][o]["dice"], sb["organs"][o]["dice"]
                if da is not None and db is not None and abs(db - da) > 0.01:
                    moved["better" if db > da else "worse"] += 1
    all_a = [s for k in sorted(base) for s in base[k]["slices"]]
    all_b = [s for k in sorted(other) for s in other[k]["slices"]]
    (ma, pa), (mb, pb) = figure(all_a), figure(all_b)
    return {"folds": rows, "pooled": {"slices": len(all_a), "base": ma, "other": mb,
                                      "base_dice": pa, "other_dice": pb}, "moved": moved}


def markdown(doc, label_a, label_b):
    f3 = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    d3 = lambda a, b: "n/a" if a is None or b is None else f"{b - a:+.3f}"  # noqa: E731
    p = doc["pooled"]
    lines = [f"| | slices | {label_a} | {label_b} | difference |", "|---|---|---|---|---|"]
    for r in doc["folds"]:
        lines.append(f"| fold {r['fold']} | {r['slices']} | {f3(r['base'])} | {f3(r['other'])} | "
                     f"{d3(r['base'], r['other'])} |")
    for o in CLASSES:
        lines.append(f"| all: {o} | {p['slices']} | {f3(p['base_dice'][o])} | {f3(p['other_dice'][o])} | "
                     f"{d3(p['base_dice'][o], p['other_dice'][o])} |")
    lines.append(f"| **all: mean** | {p['slices']} | **{f3(p['base'])}** | **{f3(p['other'])}** | "
                 f"**{d3(p['base'], p['other'])}** |")
    lines += ["", f"(slice, organ) pairs whose Dice moved by more than 0.01: {doc['moved']['better']} better, "
              f"{doc['moved']['worse']} worse."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="cv.py --out of the first judging")
    ap.add_argument("--other", required=True, help="cv.py --out of the second, same networks")
    ap.add_argument("--labels", nargs=2, default=("base", "other"), metavar=("A", "B"))
    ap.add_argument("--folds", help="comma-separated folds to compare (default: all of both)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    base, other = load_folds(args.base), load_folds(args.other)
    if args.folds:
        keep = [int(v) for v in args.folds.split(",")]
        missing = [k for k in keep if k not in base or k not in other]
        if missing:
            raise SystemExit(f"folds {missing} are not in both directories")
        base, other = {k: base[k] for k in keep}, {k: other[k] for k in keep}
    doc = compare(base, other)
    doc["base"], doc["other"] = args.base, args.other
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    print(markdown(doc, *args.labels), end="")


if __name__ == "__main__":
    main()
