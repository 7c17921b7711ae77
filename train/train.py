"""Train UNet3+ on UW-Madison GI MRI (Kaggle layout) and export the weights
segd serves.

  /usr/bin/python3 train/train.py --data ../shared/data/uwmgi --width 16 \
      --epochs 300 --out train/runs/w16            # CPU or GPU (auto)
  ... --resume                                      # continue from last.pt

Every epoch writes OUT/last.pt (model, optimiser, schedule, RNG, epoch) and
OUT/best.pt (best validation mean Dice); a progress line per epoch goes to
stdout and OUT/log.jsonl.  At the end the best checkpoint is exported to
OUT/unet3p-<w>.safetensors with its metadata.  Stopping at any time loses at
most one epoch.
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
from evaluate import dice_scores, predict_record  # noqa: E402
from export import export_model  # noqa: E402
from model import CLASSES, UNet3Plus  # noqa: E402
from preprocess import DEFAULT_POLICY, load_png, normalise, resize  # noqa: E402


def preload(recs, size):
    """Images normalised and resized to the grid; masks resized (soft)."""
    xs, ys, pres = [], [], []
    for r in recs:
        img = torch.from_numpy(normalise(load_png(r["path"])))[None, None]
        m = torch.from_numpy(dataset.load_masks(r).astype(np.float32))[None]
        xs.append(resize(img, size)[0])
        ys.append(resize(m, size)[0])
        pres.append((m[0].flatten(1).amax(1) > 0).float())
    gif = torch.tensor([r["group"] in dataset.UNTRUSTED_FOR_EVAL for r in recs])
    return torch.stack(xs), torch.stack(ys), torch.stack(pres), gif


def augment(x, y, gif, gen, p_posterise=0.5):
    """x (N,1,S,S) in [0,1], y (N,C,S,S).  No flips: left/right and up/down
    are not symmetric in the abdomen (stomach left, liver right)."""
    n, _, s, _ = x.shape
    dev = x.device
    rnd = lambda *shape: torch.rand(*shape, generator=gen, device="cpu").to(dev)  # noqa: E731
    # posterise: always for the GIF-derived group, sometimes for the rest, so
    # quantised texture carries no information about organs
    levels = (20 + 20 * rnd(n)).floor().view(n, 1, 1, 1)
    post = (gif.to(dev) | (rnd(n) < p_posterise)).view(n, 1, 1, 1)
    x = torch.where(post, torch.round(x * levels) / levels, x)
    # affine: rotation +-12 deg, scale 0.85..1.2, shift +-8 %, slight shear
    ang = (rnd(n) - 0.5) * 2 * math.radians(12)
    sc = 0.85 + 0.35 * rnd(n)
    sh = (rnd(n) - 0.5) * 0.1
    tx, ty = (rnd(n) - 0.5) * 0.16, (rnd(n) - 0.5) * 0.16
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin + sh, tx], 1),
                         torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
    # elastic: smooth random displacement from a coarse 6x6 field
    coarse = (rnd(n, 2, 6, 6) - 0.5) * 0.06
    disp = F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=False)
    grid = grid + disp.permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # intensity: gamma, contrast/brightness, noise; then back to [0,1] range
    gamma = torch.exp((rnd(n) - 0.5) * 2 * math.log(1.6)).view(n, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    x = x * (0.8 + 0.4 * rnd(n)).view(n, 1, 1, 1) + ((rnd(n) - 0.5) * 0.1).view(n, 1, 1, 1)
    x = x + torch.randn(x.shape, generator=gen).to(dev) * 0.02 * rnd(n).view(n, 1, 1, 1)
    mn = x.amin((1, 2, 3), keepdim=True)
    mx = x.amax((1, 2, 3), keepdim=True)
    x = (x - mn) / (mx - mn).clamp_min(1e-6)
    pres = (y.flatten(2).amax(2) > 0.5).float()
    return x, y, pres


def hybrid_loss(logits, y, gamma=2.0, eps=1.0):
    """Focal + soft IoU (the paper's hybrid loss without MS-SSIM)."""
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    pt = p * y + (1 - p) * (1 - y)
    focal = ((1 - pt) ** gamma * bce).mean()
    inter = (p * y).sum((2, 3))
    union = (p + y - p * y).sum((2, 3))
    iou = 1 - (inter + eps) / (union + eps)
    return focal * 10 + iou.mean()


def evaluate_val(model, recs, device):
    model.eval()
    per = {c: [] for c in CLASSES}
    with torch.no_grad():
        for r in recs:
            _, masks, _ = predict_record(model, r, device)
            gt = dataset.load_masks(r)
            for c, name in enumerate(CLASSES):
                per[name].append(dice_scores(masks[c], gt[c]))
    model.train()
    d = {c: float(np.mean(v)) if v else float("nan") for c, v in per.items()}
    d["mean"] = float(np.mean([d[c] for c in CLASSES])) if recs else float("nan")
    return d


def calibrate_epochs(model, X, Y, G, args, dev, steps_per_epoch, n_val):
    """Epoch count that fits --time-budget, from a few timed throwaway steps
    (the model is re-initialised afterwards)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(1234)
    times = []
    for i in range(8):
        t = time.time()
        idx = torch.randint(0, len(X), (args.batch,), generator=gen)
        x, y, pres = augment(X[idx].to(dev), Y[idx].to(dev), G[idx].to(dev), gen)
        logits, plog, aux = model(x.contiguous(memory_format=torch.channels_last), deep_supervision=True)
        loss = hybrid_loss(logits, y) + sum(hybrid_loss(a, y) for a in aux)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.time() - t)
    model.load_state_dict(state)
    step = float(np.median(times[3:]))
    per_epoch = step * steps_per_epoch * 1.15 + n_val * step * 1.0
    epochs = max(1, min(args.epochs, int(args.time_budget / per_epoch)))
    print(f"calibration: {step * 1000:.0f} ms/step, ~{per_epoch:.1f} s/epoch -> {epochs} epochs", flush=True)
    return epochs


def main():
    ap = argparse.ArgumentParser(description="Train UNet3+ for segd")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--out", default="train/runs/default")
    ap.add_argument("--split", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "split.json"))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-slices", type=int, default=0, help="smoke runs: use only N slices")
    ap.add_argument("--max-steps", type=int, default=0, help="smoke runs: stop after N steps")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--time-budget", type=float, default=0,
                    help="seconds: time a few steps first and cut --epochs to fit")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else ("cpu" if args.device == "auto" else args.device))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    recs = dataset.discover(args.data)
    if args.max_slices:
        recs = recs[: args.max_slices]
    if not recs:
        sys.exit(f"no labelled images under {args.data}")
    split = dataset.load_or_make_split(recs, args.split if not args.max_slices else None)
    val_cases = set(split["val_cases"])
    tr = [r for r in recs if r["case"] not in val_cases]
    va = [r for r in recs if r["case"] in val_cases and r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    size = (args.size, args.size)
    t0 = time.time()
    X, Y, P, G = preload(tr, size)
    print(f"data: {len(recs)} slices with images; train {len(tr)} ({sorted({r['case'] for r in tr})}), "
          f"val {len(va)} ({sorted(val_cases)}); loaded in {time.time() - t0:.1f}s on {dev}", flush=True)

    model = UNet3Plus(width=args.width).to(dev).to(memory_format=torch.channels_last)
    steps_per_epoch = max(1, len(tr) // args.batch)
    if args.time_budget and not args.resume:
        args.epochs = calibrate_epochs(model, X, Y, G, args, dev, steps_per_epoch, len(va))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    total = args.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed + 1)
    start_epoch, best, history = 0, -1.0, []
    last = os.path.join(args.out, "last.pt")
    if args.resume and os.path.exists(last):
        ck = torch.load(last, map_location=dev, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        start_epoch, best, history = ck["epoch"] + 1, ck["best"], ck.get("history", [])
        args.epochs = ck["args"]["epochs"]  # the schedule was planned for this many
        print(f"resumed at epoch {start_epoch} (best val Dice {best:.4f})", flush=True)

    Xd, Yd, Gd = X.to(dev), Y.to(dev), G.to(dev)
    step = 0
    train_seconds = sum(h.get("seconds", 0) for h in history)
    for epoch in range(start_epoch, args.epochs):
        te = time.time()
        perm = torch.randperm(len(tr), generator=gen)
        losses = []
        model.train()
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch:(b + 1) * args.batch].to(dev)
            x, y, pres = augment(Xd[idx], Yd[idx], Gd[idx], gen)
            x = x.contiguous(memory_format=torch.channels_last)
            logits, plog, aux = model(x, deep_supervision=True)
            loss = hybrid_loss(logits, y)
            for a in aux:
                loss = loss + 0.25 * hybrid_loss(a, y)
            loss = loss + F.binary_cross_entropy_with_logits(plog, pres)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if args.max_steps and step >= args.max_steps:
                break
        val = evaluate_val(model, va, dev) if va else {"mean": float("nan")}
        secs = time.time() - te
        train_seconds += secs
        rec = {"epoch": epoch, "loss": float(np.mean(losses)), "val": val,
               "lr": sched.get_last_lr()[0], "seconds": secs}
        history.append(rec)
        improved = val["mean"] > best
        if improved:
            best = val["mean"]
        ck = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
              "gen": gen.get_state(), "epoch": epoch, "best": best, "history": history,
              "width": args.width, "args": vars(args)}
        torch.save(ck, last + ".tmp")
        os.replace(last + ".tmp", last)
        if improved:
            torch.save({"model": model.state_dict(), "width": args.width, "epoch": epoch, "val": val},
                       os.path.join(args.out, "best.pt"))
        with open(os.path.join(args.out, "log.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"epoch {epoch + 1}/{args.epochs} loss {rec['loss']:.4f} val dice "
              + " ".join(f"{c}={val.get(c, float('nan')):.3f}" for c in CLASSES)
              + f" mean={val['mean']:.4f} best={best:.4f} ({secs:.1f}s)", flush=True)
        if args.max_steps and step >= args.max_steps:
            break

    if args.no_export:
        return
    bestp = os.path.join(args.out, "best.pt")
    ck = torch.load(bestp if os.path.exists(bestp) else last, map_location="cpu", weights_only=False)
    final = UNet3Plus(width=args.width)
    final.load_state_dict(ck["model"])
    final.eval()
    meta = {
        "data": {"root": "uwmgi (Kaggle layout)", "slices_with_images": len(recs),
                 "groups": dataset.summarise(recs), "train_slices": len(tr), "val_slices": len(va)},
        "split": split,
        "validation": {"dice": ck.get("val", {}), "epoch": ck.get("epoch"), "slices": len(va),
                       "note": "Kaggle convention: empty prediction on empty truth scores 1"},
        "training": {"epochs": args.epochs, "batch": args.batch, "lr": args.lr, "size": args.size,
                     "device": dev.type, "seconds": round(train_seconds, 1), "seed": args.seed},
        "preprocess_check": DEFAULT_POLICY,
    }
    out = os.path.join(args.out, f"unet3p-{args.width}.safetensors")
    digest = export_model(final, out, meta)
    print(f"exported {out} sha256={digest}", flush=True)


if __name__ == "__main__":
    main()
