"""Choose a weights file's mask and presence thresholds on patients that
chose nothing else, and measure the choice honestly.

  /usr/bin/python3 train/thresholds.py --weights weights/unet3p-16.safetensors \
      --json train/thresholds/unet3p-16.json [--write OUT.safetensors]

The patients used are those with trustworthy images (every group but
derived8-gif) that the weights never saw: neither in the split's
train_cases nor in its val_cases (which chose the epoch), as recorded in
the file's own "split" metadata.  For each slice the network runs once
(PyTorch, the file's own preprocessing policy) and every pair of
  presence threshold (an organ whose presence probability is below it gets
  an empty mask; 0 turns the gate off) x mask threshold (p > t)
on the grid below is scored: Dice over the slices where the organ or the
prediction is present, averaged over the three organs (cv.py's figure).

Two figures come out:
  * nested: for each patient, the pair that scores best on the other
    patients is applied to that patient; the pooled result estimates what
    choosing this way is worth on a patient nobody has seen (the honest
    figure; the choice never sees the patient it is scored on);
  * chosen: the pair best on all these patients, the one --write puts in
    the file's metadata (threshold, presence_threshold).  Its score on the
    same patients is optimistic and is printed only beside the nested one.

--write copies the tensors unchanged (the predictions' probabilities stay
bit-identical) with the new thresholds, tensor_sha256, and a
"thresholds" metadata entry recording how they were chosen.
"""
import argparse
import itertools
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
from model import CLASSES  # noqa: E402
from preprocess import grid_probs, load_png, resize  # noqa: E402
from weights_io import load_model, read_safetensors, write_safetensors  # noqa: E402

PRESENCE = (0.0, 0.2, 0.35, 0.5)
MASK = (0.2, 0.3, 0.4, 0.5)
HERE = os.path.dirname(os.path.abspath(__file__))


def meta_json(md, key):
    v = md.get(key)
    return json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v


def unseen_records(recs, md):
    """Trustworthy slices of patients absent from the file's split."""
    split = meta_json(md, "split") or {}
    used = set(split.get("train_cases", [])) | set(split.get("val_cases", []))
    if not used:
        raise SystemExit("the weights carry no split: cannot tell which patients they saw")
    return [r for r in recs if r["group"] not in dataset.UNTRUSTED_FOR_EVAL and r["case"] not in used]


def score_slices(model, policy, recs, log=print, presence=PRESENCE, mask=MASK):
    """{(pt, mt): [(case, organ, dice or None), ...]} for every slice and
    every pair of the grid presence x mask."""
    res = {pair: [] for pair in itertools.product(presence, mask)}
    t0 = time.time()
    for i, r in enumerate(recs):
        img = load_png(r["path"])
        probs, pres = grid_probs(model, img, policy)
        p = resize(probs[None], img.shape)[0].numpy()
        pres = pres.numpy()
        gt = dataset.load_masks(r).astype(bool)
        for c, organ in enumerate(CLASSES):
            g = gt[c]
            gs = int(g.sum())
            for mt in mask:
                m = p[c] > mt
                ms, inter = int(m.sum()), int(np.logical_and(m, g).sum())
                for pt in presence:
                    qs, qi = (ms, inter) if pres[c] >= pt else (0, 0)
                    d = None if qs == 0 and gs == 0 else 2.0 * qi / (qs + gs)
                    res[(pt, mt)].append((r["case"], organ, d))
        if (i + 1) % 50 == 0:
            log(f"{i + 1}/{len(recs)} slices ({time.time() - t0:.0f}s)")
    return res


def figure(rows, cases):
    """(mean over organs, {organ: Dice}) over the rows of these cases."""
    per = {}
    for organ in CLASSES:
        d = [v for (c, o, v) in rows if o == organ and c in cases and v is not None]
        per[organ] = float(np.mean(d)) if d else 0.0
    return float(np.mean(list(per.values()))), per


def choose(res, cases):
    return max(res, key=lambda pair: (figure(res[pair], cases)[0], pair))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--write", help="copy the weights with the chosen thresholds to this path")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, md = load_model(args.weights)
    policy = meta_json(md, "preprocess")
    recs = unseen_records(dataset.discover(args.data), md)
    cases = sorted({r["case"] for r in recs})
    print(f"{len(recs)} slices of {len(cases)} unseen patients: {', '.join(cases)}", flush=True)
    res = score_slices(model, policy, recs, log=lambda m: print(m, flush=True))

    current = (float(md.get("presence_threshold", 0.5)), float(md.get("threshold", 0.5)))
    nested_rows, picks = [], {}
    for case in cases:
        pick = choose(res, set(cases) - {case})
        picks[case] = list(pick)
        nested_rows += [row for row in res[pick] if row[0] == case]
    nested, nested_per = figure(nested_rows, set(cases))
    chosen = choose(res, set(cases))
    cur_mean, cur_per = figure(res[current], set(cases)) if current in res else (None, None)
    ch_mean, ch_per = figure(res[chosen], set(cases))
    out = {
        "weights": os.path.basename(args.weights), "patients": cases, "slices": len(recs),
        "grid": {"presence_threshold": PRESENCE, "threshold": MASK},
        "current": {"presence_threshold": current[0], "threshold": current[1], "mean_dice": cur_mean,
                    "dice": cur_per},
        "nested": {"mean_dice": nested, "dice": nested_per, "picks_leaving_out": picks},
        "chosen": {"presence_threshold": chosen[0], "threshold": chosen[1], "mean_dice_optimistic": ch_mean,
                   "dice_optimistic": ch_per},
    }
    print(json.dumps(out, indent=1))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    if args.write:
        tensors, md = read_safetensors(args.weights)
        md = dict(md)
        md["threshold"] = str(chosen[1])
        md["presence_threshold"] = str(chosen[0])
        md["thresholds"] = json.dumps({
            "chosen_by": "train/thresholds.py: best mean Dice on patients the weights never saw",
            "patients": cases, "slices": len(recs), "previous": list(current),
            "nested_mean_dice": round(nested, 4), "previous_mean_dice": round(cur_mean, 4) if cur_mean else None})
        digest = write_safetensors(tensors, md, args.write)
        print(f"wrote {args.write} (sha256 {digest})")


if __name__ == "__main__":
    main()
