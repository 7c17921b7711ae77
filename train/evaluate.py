"""Evaluate segd weights on held-out cases (per-organ Dice, HD95 in mm).

Empty-vs-empty slices are counted separately, and the competition score is
given wherever a complete case-day volume is available.

  /usr/bin/python3 train/evaluate.py --weights weights/unet3p-16.safetensors
  /usr/bin/python3 train/evaluate.py --server http://127.0.0.1:8080   # via segd

The PyTorch path and the daemon path share everything but the prediction, so
the two sets of figures describe the same thing.
"""
import argparse
import json
import math
import os
import sys
import urllib.request

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
from model import CLASSES  # noqa: E402
from preprocess import DEFAULT_POLICY, grid_probs, load_png, postprocess, rle_decode  # noqa: E402


def predict_record(model, rec, threshold=0.5, presence_threshold=0.5, policy=None):
    """Full pipeline for one slice: (native probs, masks (C,H,W), presence).
    policy: the weights' "preprocess" metadata (default: the current one)."""
    img = load_png(rec["path"])
    probs, pres = grid_probs(model, img, policy or DEFAULT_POLICY)
    h, w = img.shape
    p, masks = postprocess(probs, pres, h, w, threshold, presence_threshold)
    return p, masks, pres.numpy()


def weights_predictor(path):
    """rec -> masks (C,H,W) with an exported file's network, preprocessing
    policy and thresholds, as the engine applies them."""
    from weights_io import load_model
    model, md = load_model(path)
    policy = json.loads(md["preprocess"])
    thr, pthr = float(md.get("threshold", 0.5)), float(md.get("presence_threshold", 0.5))
    return lambda r: predict_record(model, r, threshold=thr, presence_threshold=pthr, policy=policy)[1]


def predict_server(url, rec):
    with open(rec["path"], "rb") as f:
        body = f.read()
    req = urllib.request.Request(url.rstrip("/") + "/v1/segment?id=" + rec["id"], data=body,
                                 headers={"Content-Type": "image/png"}, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        doc = json.load(resp)
    h, w = doc["height"], doc["width"]
    masks = np.stack([rle_decode(doc["masks"][c], h, w) for c in CLASSES])
    return masks


def dice_scores(pred, gt):
    ps, gs = int(pred.sum()), int(gt.sum())
    if ps == 0 and gs == 0:
        return 1.0
    return 2.0 * float(np.logical_and(pred, gt).sum()) / (ps + gs)


def _surface(m):
    m = m.astype(bool)
    if not m.any():
        return np.zeros((0, 2))
    pad = np.pad(m, 1)
    inner = pad[1:-1, 1:-1] & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return np.argwhere(m & ~inner).astype(np.float64)


def hd95(pred, gt, spacing):
    """95th-percentile symmetric Hausdorff distance in mm, or None when
    both are empty.  One empty: the image diagonal (the worst case)."""
    a, b = _surface(pred), _surface(gt)
    sy, sx = spacing[1], spacing[0]
    if len(a) == 0 and len(b) == 0:
        return None
    if len(a) == 0 or len(b) == 0:
        h, w = pred.shape
        return math.hypot(h * sy, w * sx)
    scale = torch.tensor([sy, sx], dtype=torch.float64)
    ta, tb = torch.from_numpy(a) * scale, torch.from_numpy(b) * scale
    d = torch.cdist(ta, tb)
    return float(np.percentile(np.concatenate([d.min(1).values.numpy(), d.min(0).values.numpy()]), 95))


def hausdorff3d_normalised(pred_vol, gt_vol, spacing, slice_mm=3.0):
    """Kaggle-style 3D Hausdorff normalised by the volume diagonal (0 best)."""
    def pts(v):
        idx = np.argwhere(v)
        return torch.from_numpy(idx * np.array([slice_mm, spacing[1], spacing[0]]))
    a, b = pts(pred_vol), pts(gt_vol)
    d, h, w = pred_vol.shape
    diag = math.sqrt((d * slice_mm) ** 2 + (h * spacing[1]) ** 2 + (w * spacing[0]) ** 2)
    if len(a) == 0 and len(b) == 0:
        return 0.0
    if len(a) == 0 or len(b) == 0:
        return 1.0
    dd = torch.cdist(a.float(), b.float())
    return min(1.0, float(max(dd.min(1).values.max(), dd.min(0).values.max())) / diag)


def evaluate(recs, predict):
    per = {c: {"dice": [], "dice_nonempty": [], "hd95": [], "empty_empty": 0, "false_pos_empty": 0,
               "missed": 0, "slices": 0} for c in CLASSES}
    vols = {}
    for r in recs:
        masks = predict(r)
        gt = dataset.load_masks(r)
        for c, name in enumerate(CLASSES):
            s = per[name]
            s["slices"] += 1
            d = dice_scores(masks[c], gt[c])
            s["dice"].append(d)
            ge, pe = gt[c].sum() == 0, masks[c].sum() == 0
            if ge and pe:
                s["empty_empty"] += 1
            elif ge:
                s["false_pos_empty"] += 1
            else:
                s["dice_nonempty"].append(d)
                if pe:
                    s["missed"] += 1
            h = hd95(masks[c], gt[c], r["spacing"])
            if h is not None:
                s["hd95"].append(h)
        vols.setdefault(r["caseday"], []).append((r, masks, gt))
    out = {"slices": len(recs), "organs": {}}
    for name, s in per.items():
        out["organs"][name] = {
            "dice": float(np.mean(s["dice"])) if s["dice"] else None,
            "dice_nonempty": float(np.mean(s["dice_nonempty"])) if s["dice_nonempty"] else None,
            "nonempty_slices": len(s["dice_nonempty"]),
            "hd95_mm": float(np.mean(s["hd95"])) if s["hd95"] else None,
            "hd95_slices": len(s["hd95"]),
            "empty_empty": s["empty_empty"], "false_positive_on_empty": s["false_pos_empty"],
            "missed_organ": s["missed"], "slices": s["slices"],
        }
    ds = [v["dice"] for v in out["organs"].values() if v["dice"] is not None]
    out["mean_dice"] = float(np.mean(ds)) if ds else None
    out["volumes"] = vols
    return out


def complete_volumes(recs, root):
    """case-days whose every labelled slice has an image here."""
    labels = dataset.read_labels(root)
    n_labelled = {}
    for sid in labels:
        n_labelled[sid.rsplit("_slice_", 1)[0]] = n_labelled.get(sid.rsplit("_slice_", 1)[0], 0) + 1
    have = {}
    for r in recs:
        have[r["caseday"]] = have.get(r["caseday"], 0) + 1
    return {cd for cd, n in have.items() if n == n_labelled.get(cd, -1)}


def competition_score(result, complete):
    scores = []
    for cd, items in result["volumes"].items():
        if cd not in complete:
            continue
        items.sort(key=lambda t: t[0]["slice"])
        sp = items[0][0]["spacing"]
        dices, hds = [], []
        for c in range(len(CLASSES)):
            pv = np.stack([m[c] for _, m, _ in items])
            gv = np.stack([g[c] for _, _, g in items])
            dices.append(dice_scores(pv, gv))
            hds.append(hausdorff3d_normalised(pv, gv, sp))
        scores.append(0.4 * np.mean(dices) + 0.6 * (1 - np.mean(hds)))
    return (float(np.mean(scores)), len(scores)) if scores else (None, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--weights", help="safetensors file (PyTorch path)")
    ap.add_argument("--server", help="segd base URL (daemon path)")
    ap.add_argument("--split", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "split.json"))
    ap.add_argument("--all", action="store_true", help="evaluate every trusted slice, not only held-out cases")
    ap.add_argument("--folder", help="evaluate the Kaggle-named PNGs of this folder against its "
                    "labels.csv instead (e.g. tests/data/heldout)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.folder:
        recs = dataset.discover_folder(args.folder)
    else:
        recs = dataset.discover(args.data)
        with open(args.split) as f:
            split = json.load(f)
        recs = [r for r in recs if r["group"] not in dataset.UNTRUSTED_FOR_EVAL
                and (args.all or r["case"] in set(split["val_cases"]))]
    if args.server:
        predict = lambda r: predict_server(args.server, r)  # noqa: E731
        source = args.server
    else:
        predict = weights_predictor(args.weights)
        source = args.weights
    res = evaluate(recs, predict)
    score, nvol = competition_score(res, complete_volumes(recs, args.data))
    res.pop("volumes")
    res["competition_score"] = score
    res["complete_volumes"] = nvol
    res["cases"] = sorted({r["case"] for r in recs})
    res["source"] = source
    if args.weights:
        import hashlib
        with open(args.weights, "rb") as f:
            res["weights_sha256"] = hashlib.sha256(f.read()).hexdigest()
    print(f"held-out slices: {res['slices']} from cases {', '.join(res['cases'])} ({source})")
    print(f"{'organ':<12} {'dice':>6} {'dice(gt>0)':>10} {'n(gt>0)':>7} {'hd95 mm':>8} {'empty/empty':>11} {'FP on empty':>11}")
    for name, o in res["organs"].items():
        f = lambda v: "   n/a" if v is None else f"{v:6.3f}"  # noqa: E731
        print(f"{name:<12} {f(o['dice'])} {f(o['dice_nonempty']):>10} {o['nonempty_slices']:>7} "
              f"{f(o['hd95_mm']):>8} {o['empty_empty']:>11} {o['false_positive_on_empty']:>11}")
    print(f"mean dice: {res['mean_dice']:.4f}")
    print("competition score: " + (f"{score:.4f} over {nvol} volumes" if score is not None
                                   else "n/a (no complete held-out case-day volume)"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
