"""Synthetic slices drawn from label maps alone, for pre-training UNet3+ on
the organ shapes and positions of the patients without images (the label-map
prior of issue 16).

train.csv holds the masks of 38,496 slices of 85 patients; images exist here
for 17 of them.  Following SynthSeg (Billot et al., "SynthSeg: Segmentation
of brain MRI scans of any contrast and resolution without retraining",
Medical Image Analysis 86, 2023), each label map is rendered as an image of
random contrast: every region gets a random mean grey value and texture, so
that grey values say nothing and only shape and position can tell an organ.
Our maps label three organs and nothing else, so the rest of the slice is
made up: a body (a perturbed ellipse holding every organ, with a rim of
random thickness, like the subcutaneous fat) filled with tissue regions
(the argmax of smooth random fields, a fifth to a tenth
of the slice across), on a dark background (air).  fit.augment
then adds what exports do (warp, blur, bias field, gamma, window, noise,
quantisation) as for real slices.
"""

import numpy as np
import torch
import torch.nn.functional as F

import dataset
from model import CLASSES
from preprocess import rle_decode

# the slice grids (height, width) of the Kaggle data: 266x266, 360x310 (W x H), 276x276, 234x234
KAGGLE_GRIDS = ((266, 266), (310, 360), (276, 276), (234, 234))
TISSUES = 6        # tissue regions of the made-up body
GROUP = "label-map"  # the group of label-only records (never judged: there is no image)


def vertical_edges(rles, height, width):
    """Mask pixels whose lower neighbour differs, summed over the masks
    rles decoded at height x width: small at the true grid, large at a
    wrong width, where each row's runs shift against the next."""
    return sum(int(np.abs(np.diff(rle_decode(r, height, width).astype(np.int8), axis=0)).sum())
               for r in rles)


def infer_grid(rles, grids=KAGGLE_GRIDS):
    """(height, width) of a case-day whose masks are the non-empty RLE
    strings rles (row-major, 1-based): the grid of grids that holds every
    run and makes the masks most coherent from row to row (vertical_edges
    on up to 40 of them, evenly spaced).  On the 274 case-days of train.csv
    the best grid has at most 2/3 the edges of the next one.  Raises
    ValueError when no grid holds the runs."""
    end = 0
    for r in rles:
        v = np.array(r.split(), dtype=np.int64)
        end = max(end, int((v[0::2] + v[1::2] - 1).max()))
    sample = rles[::max(1, len(rles) // 40)]
    fits = [(vertical_edges(sample, h, w), (h, w)) for h, w in grids if h * w >= end]
    if not fits:
        raise ValueError(f"RLE runs up to pixel {end}: larger than every grid of {grids}")
    return min(fits)[1]


def label_records(root, exclude_cases=(), with_images=False, max_maps=4000):
    """Slice records (as dataset.discover's, group GROUP, no "path") of the
    label maps in ROOT/train.csv, for pre-training.  By default only the
    patients with no image under ROOT (so none that a cross-validation
    fold or a figure could test on), minus exclude_cases; with_images=True
    takes every patient but exclude_cases (the full Kaggle download, where
    every patient has images: exclude the ones you will test on).  Each
    case-day's grid is its images' where it has some, else infer_grid's.
    At most max_maps slices, evenly spaced in (case-day, slice) order, empty
    ones at their natural rate.  Raises SystemExit if none is left."""
    labels = dataset.read_labels(root)
    imaged = dataset.discover(root)
    grids = {r["caseday"]: (r["height"], r["width"]) for r in imaged}
    skip = set(exclude_cases) | (set() if with_images else {r["case"] for r in imaged})
    by_day = {}
    for sid, organs in labels.items():
        caseday, sl = sid.split("_slice_")
        if caseday.split("_")[0] not in skip:
            by_day.setdefault(caseday, []).append((int(sl), sid, [organs.get(c, "") for c in CLASSES]))
    recs = []
    for caseday in sorted(by_day):
        rows = sorted(by_day[caseday])
        nonempty = [s for _, _, rles in rows for s in rles if s]
        if not nonempty:
            continue
        h, w = grids.get(caseday) or infer_grid(nonempty)
        recs += [{"id": sid, "case": caseday.split("_")[0], "caseday": caseday, "slice": sl,
                  "width": w, "height": h, "spacing": None, "group": GROUP, "rle": rles}
                 for sl, sid, rles in rows]
    if not recs:
        raise SystemExit(f"no label maps left in {root}/train.csv (every patient has images or is "
                         "excluded: pass --with-images and exclude the patients you test on)")
    return recs[::max(1, -(-len(recs) // max_maps))]


def render(y, gen):
    """Soft masks y (N, C, S, S) in [0, 1] -> synthetic slices (N, 1, S, S)
    in [0, 1], one random contrast per slice (module docstring).  The organs
    are where y > 0.5 (the later class wins an overlap); every random number
    comes from gen."""
    n, c, s, _ = y.shape
    rnd = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    organs = y > 0.5
    # body: an ellipse about the centre, perturbed, grown to hold every organ
    # pixel with a margin of s/24 (organs lie inside the abdomen)
    v = torch.linspace(-1, 1, s)
    yy, xx = torch.meshgrid(v, v, indexing="ij")
    cx, cy = ((rnd(n) - 0.5) * 0.1).view(n, 1, 1), ((rnd(n) - 0.5) * 0.1).view(n, 1, 1)
    ax, ay = (0.75 + 0.2 * rnd(n)).view(n, 1, 1), (0.6 + 0.3 * rnd(n)).view(n, 1, 1)
    wobble = F.interpolate((rnd(n, 1, 6, 6) - 0.5) * 0.3, size=(s, s), mode="bicubic", align_corners=False)[:, 0]
    body = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 < 1 + wobble
    m = max(1, s // 24)
    body |= F.max_pool2d(organs.any(1, keepdim=True).float(), 2 * m + 1, 1, m)[:, 0] > 0
    # rim: the body less its erosion by t pixels (1-4 % of the grid)
    t = max(1, int(s * (0.01 + 0.03 * float(rnd(1)))))
    inner = -F.max_pool2d(-body[:, None].float(), 2 * t + 1, 1, t)[:, 0] > 0.5
    # labels: 0 air, 1 rim, 2.. tissues, then the organs
    g = 5 + int(6 * float(rnd(1)))  # region size: a fifth to a tenth of the slice
    tissue = F.interpolate(rnd(n, TISSUES, g, g), size=(s, s), mode="bicubic", align_corners=False).argmax(1)
    lab = torch.where(body, tissue + 2, 0)
    lab = torch.where(body & ~inner, 1, lab)
    for k in range(c):
        lab = torch.where(organs[:, k], 2 + TISSUES + k, lab)
    regions = 2 + TISSUES + c
    mean = rnd(n, regions)
    mean[:, 0] *= 0.15  # air is dark in MR
    std = rnd(n, regions) * 0.08
    flat = lab.view(n, -1)
    mu = torch.gather(mean, 1, flat).view(n, 1, s, s)
    sd = torch.gather(std, 1, flat).view(n, 1, s, s)
    texture = F.avg_pool2d(torch.randn((n, 1, s, s), generator=gen), 3, 1, 1, count_include_pad=False) * 3
    x = (mu + sd * texture).clamp(0, 1)
    # partial volume at region borders
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


REFERENCE_RENDERS = 1000


def reference_images(Y, seed, y_scale):
    """Up to REFERENCE_RENDERS renders of the maps Y (N, C, S, S uint8 in
    steps of 1/y_scale, as fit.preload_masks keeps them), evenly spaced, as
    (S, S) float32 arrays: the images a pre-training's histogram-matching
    reference is taken from (it has no real images, and must not take the
    grey values of patients a fold tests on)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.arange(0, len(Y), max(1, -(-len(Y) // REFERENCE_RENDERS)))
    out = []
    for part in idx.split(64):
        out += list(render(Y[part].float() / y_scale, gen)[:, 0].numpy())
    return out
