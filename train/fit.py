"""One training run of UNet3+ on a list of slice records: data loading,
export-robust augmentation, the hybrid loss and a resumable loop.  Used by
train.py (one run) and cv.py (cross-validation by patient).

The recipe is fixed before training (a number of optimiser steps, last step
kept, thresholds 0.5): nothing is chosen on the data it is judged on.
"""
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import dataset
import synth
from model import UNet3Plus
from preprocess import (DEFAULT_POLICY, load_png, normalise, normalise_histogram, percentile_ranks,
                        policy_for_size, reference_quantiles, resize)

# normalisation: histogram_match since 2026-12-02 (train/cv/histmatch-scratch/: 0.236 against
# 0.216 for percentile on the CV); recipes without the key trained with percentile
RECIPE = {
    "width": 8, "size": 192, "batch": 8, "steps": 1000, "lr": 2e-3, "weight_decay": 1e-4,
    "ds_weight": 0.25, "presence_weight": 1.0, "p_coarsen": 0.5, "bf16": True,
    "normalisation": "histogram_match",
}


X_SCALE = 32767.0  # images kept as int16 steps of 1/32767 (15 bits: every 8-bit level, 16-bit to 2 ppm of range)
Y_SCALE = 255.0    # soft masks kept as uint8 steps of 1/255


def preload_masks(recs, size):
    """Masks of recs resized (soft) to the grid size (H, W): (N, C, H, W)
    uint8 steps of 1/Y_SCALE."""
    Y = None
    for i, r in enumerate(recs):
        m = torch.from_numpy(dataset.load_masks(r).astype(np.float32))[None]
        y = torch.round(resize(m, size)[0].clamp(0, 1) * Y_SCALE).to(torch.uint8)
        if Y is None:
            Y = torch.empty((len(recs),) + tuple(y.shape), dtype=torch.uint8)
        Y[i] = y
    return Y


def preload(recs, size):
    """Images min-max scaled (all information kept; the policy's percentile
    normalisation is applied after augmentation) and resized to the grid;
    masks resized (soft).  Stored compactly, so that the full Kaggle data
    (38,496 slices) fits in memory at 192 px (7 GB instead of 23 GB in
    float32); batch() turns a selection back into float32.
    Returns X (N,1,S,S) int16, Y (N,C,S,S) uint8, G (N,) bool."""
    X = torch.empty((len(recs), 1) + tuple(size), dtype=torch.int16)
    for i, r in enumerate(recs):
        img = torch.from_numpy(normalise(load_png(r["path"])))[None, None]
        X[i] = torch.round(resize(img, size)[0].clamp(0, 1) * X_SCALE).to(torch.int16)
    gif = torch.tensor([r["group"] in dataset.UNTRUSTED_FOR_EVAL for r in recs])
    return X, preload_masks(recs, size), gif


def batch(X, Y, idx):
    """float32 images (n,1,S,S) in [0,1] and soft masks (n,C,S,S) of rows idx."""
    return X[idx].float() / X_SCALE, Y[idx].float() / Y_SCALE


def percentile_normalise_batch(x, p_lo, p_hi):
    """x (N,1,H,W) -> per-image percentile clipping to [0,1], the same
    order statistics as preprocess.normalise_percentile."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    k_lo, k_hi = percentile_ranks(flat.shape[1], p_lo, p_hi)
    lo = flat.kthvalue(k_lo + 1, dim=1).values.view(n, 1, 1, 1)
    hi = flat.kthvalue(k_hi + 1, dim=1).values.view(n, 1, 1, 1)
    mn = flat.amin(1).view(n, 1, 1, 1)
    mx = flat.amax(1).view(n, 1, 1, 1)
    degenerate = hi <= lo
    lo = torch.where(degenerate, mn, lo)
    hi = torch.where(degenerate, mx, hi)
    return ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def histogram_match_batch(x, ref):
    """x (N,1,H,W) -> per-image histogram matching to the reference
    quantiles ref: preprocess.normalise_histogram on each image."""
    out = np.stack([normalise_histogram(img, ref) for img in x[:, 0].numpy()])
    return torch.from_numpy(out)[:, None]


REFERENCE_IMAGES = 1000  # a mean of 1,000 slices' quantiles is settled; the full Kaggle data has 38,496


def policy_of(recipe, train_recs=None, images=None):
    """The preprocessing policy (weights metadata "preprocess") a recipe
    trains and runs with, at its grid.  recipe["normalisation"]: absent or
    "percentile" (DEFAULT_POLICY), "minmax" (older files), or
    "histogram_match", whose reference quantiles come from the trusted
    images of train_recs (all of them if none is trusted; at most
    REFERENCE_IMAGES, evenly spaced): the network never sees its test
    patients' grey values before it is judged.  images (a list of (H,W)
    arrays), when given, replace train_recs' (the synthetic pre-training's
    renders)."""
    policy = policy_for_size(recipe["size"])
    if recipe.get("normalisation", "percentile") == "percentile":
        return policy
    if recipe["normalisation"] == "minmax":  # files of before the percentile one (a fine-tune keeps it)
        policy.pop("percentiles")
        policy["normalisation"] = "minmax"
        return policy
    if recipe["normalisation"] != "histogram_match":
        raise SystemExit(f"recipe normalisation {recipe['normalisation']!r}: percentile, histogram_match "
                         "or minmax")
    if images is None:
        trusted = [r for r in train_recs if r["group"] not in dataset.UNTRUSTED_FOR_EVAL] or train_recs
        trusted = trusted[::max(1, -(-len(trusted) // REFERENCE_IMAGES))]  # evenly spaced, at most REFERENCE_IMAGES
        images = (load_png(r["path"]) for r in trusted)
    policy.pop("percentiles")
    policy["normalisation"] = "histogram_match"
    policy["reference_quantiles"] = reference_quantiles(images)
    return policy


def augment(x, y, gif, gen, p_coarsen=0.5, policy=DEFAULT_POLICY, views=1):
    """x (N,1,S,S) min-max scaled grey, y (N,C,S,S) soft masks ->
    (augmented x normalised by the policy, warped y, presence (N,C) 0/1).
    views > 1 renders each warped slice that many times (the consistency
    recipe): rows [v*N:(v+1)*N] are view v, y and presence repeated alike.

    Covers what real exports do to a slice (issue: robust to the export):
    geometry (rotation +-12 deg, scale 0.85-1.2, shift, shear, elastic), blur
    from down/up-scaling, a smooth multiplicative bias field, gamma
    0.6-1.6, a window clipped at random low/high percentiles, Gaussian noise,
    and quantisation: always for the GIF-derived group (its organ interiors
    are posterised, so texture must say nothing) and with p_coarsen for the
    rest, to 16-64 levels of the image maximum (what `raw >> 8` stretched
    leaves) or to 256 levels (8-bit).  Finally the policy's normalisation.
    No flips: the abdomen is not left/right or up/down symmetric.
    augment_geometry then augment_intensity per view, drawing from gen in
    this order.
    """
    x, y = augment_geometry(x, y, gen)
    if views == 1:
        return augment_intensity(x, gif, gen, p_coarsen, policy), y, presence(y)
    x = torch.cat([augment_intensity(x.clone(), gif, gen, p_coarsen, policy) for _ in range(views)])
    y = y.repeat(views, 1, 1, 1)
    return x, y, presence(y)


def presence(y):
    """(N,C) 1.0 where the soft mask y (N,C,S,S) has a pixel above 0.5."""
    return (y.flatten(2).amax(2) > 0.5).float()


def augment_geometry(x, y, gen):
    """The warp of augment(): x (N,1,S,S), y (N,C,S,S) -> both warped alike."""
    n, _, s, _ = x.shape
    rnd = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    ang = (rnd(n) - 0.5) * 2 * math.radians(12)
    sc = 0.85 + 0.35 * rnd(n)
    sh = (rnd(n) - 0.5) * 0.1
    tx, ty = (rnd(n) - 0.5) * 0.16, (rnd(n) - 0.5) * 0.16
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin + sh, tx], 1),
                         torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, s, s), align_corners=False)
    coarse = (rnd(n, 2, 6, 6) - 0.5) * 0.06
    grid = grid + F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x, y


def augment_intensity(x, gif, gen, p_coarsen=0.5, policy=DEFAULT_POLICY):
    """What an export does to the grey values, augment()'s second half:
    x (N,1,S,S) >= 0 (changed in place, and returned) -> normalised."""
    n, _, s, _ = x.shape
    rnd = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    # blur from a resolution change (a third of the images, factor 0.5-0.9)
    for i in torch.nonzero(rnd(n) < 0.33).flatten().tolist():
        f = 0.5 + 0.4 * float(rnd(1))
        small = F.interpolate(x[i:i + 1], scale_factor=f, mode="bilinear", align_corners=False,
                              antialias=True)
        x[i:i + 1] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    # bias field: exp of a smooth field, +-30 %
    field = F.interpolate((rnd(n, 1, 4, 4) - 0.5) * 0.6, size=(s, s), mode="bicubic", align_corners=False)
    x = x.clamp_min(0) * torch.exp(field)
    # gamma on the image scaled to its maximum
    mx = x.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
    gamma = torch.exp((rnd(n) - 0.5) * 2 * math.log(1.6)).view(n, 1, 1, 1)
    x = (x / mx) ** gamma
    # window: clip at random percentiles (0-3 % low, 97-100 % high) for half
    flat = x.reshape(n, -1)
    qlo = torch.quantile(flat, (rnd(n) * 0.03), dim=1).diagonal().view(n, 1, 1, 1)
    qhi = torch.quantile(flat, 1 - rnd(n) * 0.03, dim=1).diagonal().view(n, 1, 1, 1)
    win = (rnd(n) < 0.5).view(n, 1, 1, 1)
    x = torch.where(win, torch.minimum(torch.maximum(x, qlo), qhi), x)
    # noise (0-3 % of the maximum)
    x = x + torch.randn(x.shape, generator=gen) * (0.03 * rnd(n)).view(n, 1, 1, 1)
    x = x.clamp_min(0)
    # quantisation relative to the maximum: coarse (16-64 levels) or 8-bit
    mx = x.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
    u = rnd(n)
    levels = torch.where(u < p_coarsen, 16 + 48 * rnd(n), torch.full((n,), 255.0)).floor().view(n, 1, 1, 1)
    levels = torch.where(gif.view(n, 1, 1, 1), (20 + 20 * rnd(n)).floor().view(n, 1, 1, 1), levels)
    quant = (gif | (u < p_coarsen + 0.25)).view(n, 1, 1, 1)
    x = torch.where(quant, torch.floor(x / mx * levels) / levels, x)
    if policy.get("normalisation") == "histogram_match":
        x = histogram_match_batch(x, policy["reference_quantiles"])
    elif policy.get("normalisation") == "percentile":
        lo, hi = policy.get("percentiles", (1, 99))
        x = percentile_normalise_batch(x, lo, hi)
    else:
        x = (x - x.amin((1, 2, 3), keepdim=True)) / (x.amax((1, 2, 3), keepdim=True)
                                                     - x.amin((1, 2, 3), keepdim=True)).clamp_min(1e-6)
    return x


def hybrid_loss(logits, y, gamma=2.0, eps=1.0):
    """Focal (Lin et al. 2017, gamma 2) x 10 + soft IoU: the UNet3+ paper's
    hybrid loss (Huang et al. 2020) without the MS-SSIM term."""
    logits = logits.float()
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    pt = p * y + (1 - p) * (1 - y)
    focal = ((1 - pt) ** gamma * bce).mean()
    inter = (p * y).sum((2, 3))
    union = (p + y - p * y).sum((2, 3))
    iou = 1 - (inter + eps) / (union + eps)
    return focal * 10 + iou.mean()


def consistency_loss(logits, plog, eps=1.0):
    """Disagreement between two renditions of the same warped slices: rows
    [:n] and [n:] of logits (2n,C,S,S) and presence logits plog (2n,C).
    1 - soft Dice between the two views' mask probabilities, per slice and
    organ, with squared terms below (Milletari et al. 2016, V-Net), so that
    it is 0 exactly when the views agree, whatever the probabilities (eps
    keeps both-empty at 0); plus the mean squared
    difference of their presence probabilities.  What robustness.py measures
    (mask Dice between renditions), as a loss: the consistency idea of
    Laine & Aila 2017 (Pi-model) and AugMix (Hendrycks et al. 2020), here
    across export renditions only (one warp, two intensity draws)."""
    n = logits.shape[0] // 2
    p = torch.sigmoid(logits.float())
    a, b = p[:n], p[n:]
    dice = (2 * (a * b).sum((2, 3)) + eps) / ((a * a + b * b).sum((2, 3)) + eps)
    q = torch.sigmoid(plog.float())
    return (1 - dice).mean() + ((q[:n] - q[n:]) ** 2).mean()


def load_checkpoint(path):
    """(eval-mode UNet3Plus on the CPU, the checkpoint dict) of a best.pt or
    last.pt that fit() wrote; the dict keeps "recipe", "step" and the rest
    for callers that check which run it is.  Raises what torch.load raises
    (FileNotFoundError, a pickle error for a damaged file)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = UNet3Plus(width=ck["width"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def init_normalisation(path):
    """The normalisation the network at path (an exported .safetensors file
    or a fit() .pt checkpoint) trained with, which a fine-tune keeps unless
    told otherwise: switching it by a short fine-tune cost 0.019 on the CV
    (train/cv/histmatch/).  Checkpoints and files that do not name one
    are percentile ones."""
    if path.endswith(".pt"):
        ck = torch.load(path, map_location="cpu", weights_only=False)
        return (ck.get("preprocess") or {}).get("normalisation", "percentile")
    from weights_io import read_safetensors
    _, md = read_safetensors(path)
    return json.loads(md.get("preprocess", "{}")).get("normalisation", "percentile")


def checkpoint_policy(ck, size=None):
    """The preprocessing a fit() checkpoint's network runs with, at grid
    size x size (default: the grid it trained at).  Checkpoints written
    before policies were recorded in them (2026-12-02) trained with the
    percentile normalisation."""
    size = int(size or ck["recipe"]["size"])
    return dict(ck.get("preprocess") or policy_for_size(size), input_size=[size, size])


def fit(train_recs, recipe, out, device="cpu", seed=0, resume=True, max_steps=0, log=print,
        checkpoint_every=50):
    """Train on train_recs with the recipe; checkpoints OUT/last.pt every
    checkpoint_every steps and resumes from it.  Returns the eval-mode model
    after the recipe's last step (the kept one) and the run summary, whose
    "preprocess" is the policy it trained with (policy_of).  With
    recipe["synthetic"], train_recs are label maps (synth.label_records)
    and each batch's images are synth.render's of them; the checkpoint's
    "train_cases" name the patients either way, with those its start
    recorded when it starts from a checkpoint (recipe["init"] a .pt)."""
    os.makedirs(out, exist_ok=True)
    dev = torch.device(device)
    size = (recipe["size"], recipe["size"])
    torch.manual_seed(seed)
    t0 = time.time()
    if recipe.get("synthetic"):
        X, Y, G = None, preload_masks(train_recs, size), torch.zeros(len(train_recs), dtype=torch.bool)
        policy = policy_of(recipe, images=synth.reference_images(Y, seed, Y_SCALE))
    else:
        X, Y, G = preload(train_recs, size)
        policy = policy_of(recipe, train_recs)
    log(f"data: {len(train_recs)} slices of {len({r['case'] for r in train_recs})} cases "
        f"loaded in {time.time() - t0:.1f}s; normalisation {policy['normalisation']}")
    model = UNet3Plus(width=recipe["width"])
    seen = {r["case"] for r in train_recs}  # and those its start (a checkpoint) trained on
    if recipe.get("init"):
        # fine-tuning: start from an exported file's tensors, or from a
        # training checkpoint's (cv.py --init-runs); same width
        from weights_io import load_model
        path = recipe["init"]  # relative to the repository root, as train.py records it
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", path)
        if path.endswith(".pt"):
            init, ck = load_checkpoint(path)
            width = ck["width"]
            seen |= set(ck.get("train_cases") or ())
        else:
            init, md = load_model(path)
            width = int(md["width"])
        if width != recipe["width"]:
            raise SystemExit(f"{recipe['init']} has width {width}, the recipe {recipe['width']}")
        model.load_state_dict(init.state_dict())
        log(f"initialised from {recipe['init']}")
    model = model.to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    total = recipe["steps"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=total, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed + 1)
    step, losses, seconds = 0, [], 0.0
    last = os.path.join(out, "last.pt")
    if resume and os.path.exists(last):
        ck = torch.load(last, map_location=dev, weights_only=False)
        if ck["recipe"] != recipe:
            raise SystemExit(f"{last} was trained with another recipe; remove it or change --out")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        step, losses, seconds = ck["step"], ck["losses"], ck["seconds"]
        log(f"resumed at step {step}")
    model.train()
    perm, pos = None, 0
    tick = time.time()
    # consistency (absent from recipes before 2026-12-02: 0): a batch is
    # batch/2 warped slices, each rendered twice (augment's views)
    cons = recipe.get("consistency", 0.0)
    take = recipe["batch"] // 2 if cons else recipe["batch"]
    while step < total:
        if perm is None or pos + take > len(perm):
            perm, pos = torch.randperm(len(Y), generator=gen), 0
        idx = perm[pos:pos + take]
        pos += take
        if X is None:
            yb = Y[idx].float() / Y_SCALE
            xb = synth.render(yb, gen)
        else:
            xb, yb = batch(X, Y, idx)
        x, y, pres = augment(xb, yb, G[idx], gen, recipe["p_coarsen"], policy, views=2 if cons else 1)
        x, y, pres = x.to(dev).contiguous(memory_format=torch.channels_last), y.to(dev), pres.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=recipe["bf16"]):
            logits, plog, aux = model(x, deep_supervision=True)
        loss = hybrid_loss(logits, y)
        for a in aux:
            loss = loss + recipe["ds_weight"] * hybrid_loss(a, y)
        loss = loss + recipe["presence_weight"] * F.binary_cross_entropy_with_logits(plog.float(), pres)
        if cons:
            loss = loss + cons * consistency_loss(logits, plog)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
        step += 1
        if step % checkpoint_every == 0 or step == total or (max_steps and step >= max_steps):
            seconds += time.time() - tick
            tick = time.time()
            ck = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                  "gen": gen.get_state(), "step": step, "losses": losses, "seconds": seconds,
                  "recipe": recipe, "width": recipe["width"], "preprocess": policy,
                  "train_cases": sorted(seen)}
            torch.save(ck, last + ".tmp")
            os.replace(last + ".tmp", last)
            recent = float(np.mean(losses[-checkpoint_every:]))
            log(f"step {step}/{total} loss {recent:.4f} lr {sched.get_last_lr()[0]:.2e} ({seconds:.0f}s)")
            with open(os.path.join(out, "log.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, "loss": recent, "seconds": round(seconds, 1)}) + "\n")
        if max_steps and step >= max_steps:
            break
    model.eval()
    return model, {"steps": step, "seconds": round(seconds, 1),
                   "final_loss": float(np.mean(losses[-50:])) if losses else None, "preprocess": policy}
