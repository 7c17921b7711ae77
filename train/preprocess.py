"""Pre- and post-processing shared by training, evaluation and the reference
predictor.  The C engine implements the same steps (src/model/pipeline.c);
the policy is recorded in the weights' metadata under "preprocess".

  load:       PNG -> float32 grey (16-bit kept as is; RGB/palette via
              BT.601 luminance 0.299 R + 0.587 G + 0.114 B; alpha dropped)
  normalise:  "percentile" (default since the cross-validated weights):
              lo, hi = the order statistics of rank floor((n-1) p_lo / 100)
              and ceil((n-1) p_hi / 100) of the n pixels (no interpolation,
              so C and numpy agree bit for bit); v -> clip((v - lo) / (hi - lo),
              0, 1) in float32; where hi <= lo it falls back to minmax.
              Invariant to the bit depth, to linear rescaling and to a window
              clipped at or inside [p_lo, p_hi]; a few outlier pixels do not
              move it.  (The percentile clipping nnU-Net uses for CT,
              Isensee et al. 2021, here per image.)
              "minmax": (v - min) / (max - min), 0 where max == min (older
              weights)
  resize:     bilinear, align_corners=False, no antialias, to the model grid
  post:       sigmoid probabilities resized (same bilinear) back to the native
              height x width, mask = prob > threshold, and an organ whose
              presence probability is below presence_threshold gets no mask
"""
import math
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

FNAME_RE = re.compile(r"slice_(\d+)_(\d+)_(\d+)_([\d.]+)_([\d.]+)\.png$")

DEFAULT_POLICY = {
    "normalisation": "percentile",
    "percentiles": [1, 99],
    "luminance": "bt601",
    "resize": "bilinear-align_corners-false",
    "input_size": [256, 256],
}


def parse_slice_name(path):
    """(slice, width, height, spacing_x_mm, spacing_y_mm) or None."""
    m = FNAME_RE.search(os.path.basename(path))
    if not m:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)),
            float(m.group(4)), float(m.group(5)))


def load_png(path):
    """Grey float32 array (H, W) with raw intensities."""
    from PIL import Image

    im = Image.open(path)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    a = np.array(im)
    if a.ndim == 3:
        a = a[..., :3].astype(np.float32)
        r, g, b = a[..., 0], a[..., 1], a[..., 2]
        return (np.float32(0.299) * r + np.float32(0.587) * g) + np.float32(0.114) * b
    return a.astype(np.float32)


def normalise(img):
    """minmax: (H,W) -> float32 in [0,1]; zeros for a constant image."""
    img = img.astype(np.float32)
    mn, mx = float(img.min()), float(img.max())
    if mx <= mn:
        return np.zeros_like(img, dtype=np.float32)
    return ((img - np.float32(mn)) / np.float32(mx - mn)).astype(np.float32)


def percentile_ranks(n, p_lo, p_hi):
    """Ranks (0-based) of the low and high order statistics among n values;
    the C engine computes the same doubles (src/model pipeline)."""
    return math.floor((n - 1) * float(p_lo) / 100.0), math.ceil((n - 1) * float(p_hi) / 100.0)


def normalise_percentile(img, p_lo=1, p_hi=99):
    """(H,W) -> float32 in [0,1]: see the module docstring."""
    img = np.asarray(img, dtype=np.float32)
    flat = img.reshape(-1)
    k_lo, k_hi = percentile_ranks(flat.size, p_lo, p_hi)
    part = np.partition(flat, (k_lo, k_hi))
    lo, hi = part[k_lo], part[k_hi]
    if not hi > lo:
        return normalise(img)
    out = (img - lo) / np.float32(hi - lo)
    return np.clip(out, np.float32(0), np.float32(1)).astype(np.float32)


def normalise_policy(img, policy=DEFAULT_POLICY):
    """The normalisation the policy (weights metadata "preprocess") names."""
    if policy.get("normalisation", "minmax") == "percentile":
        lo, hi = policy.get("percentiles", (1, 99))
        return normalise_percentile(img, lo, hi)
    return normalise(img)


def resize(t, size):
    """t: (N,C,H,W) float tensor -> (N,C,size[0],size[1])."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)


def to_model_input(img, policy=DEFAULT_POLICY):
    """Raw grey (H,W) -> normalised (1,1,S,S) tensor at the model grid."""
    x = torch.from_numpy(normalise_policy(img, policy))[None, None]
    return resize(x, policy["input_size"])


def postprocess(probs, presence, height, width, threshold=0.5, presence_threshold=0.5):
    """probs (C,S,S) tensor at grid -> (native probs (C,H,W) np, masks (C,H,W) uint8)."""
    p = resize(probs[None].float(), (height, width))[0]
    p = p.numpy()
    masks = (p > threshold).astype(np.uint8)
    for c in range(masks.shape[0]):
        if float(presence[c]) < presence_threshold:
            masks[c] = 0
    return p, masks


# --- RLE: Kaggle UW-Madison GI dialect: 1-based start/length, row-major ----

def rle_encode(mask):
    flat = np.asarray(mask, dtype=np.uint8).reshape(-1)
    if flat.size == 0 or not flat.any():
        return ""
    padded = np.concatenate([[0], flat, [0]])
    changes = np.nonzero(padded[1:] != padded[:-1])[0] + 1
    starts, ends = changes[0::2], changes[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts, ends))


def rle_decode(rle, height, width):
    m = np.zeros(height * width, dtype=np.uint8)
    if isinstance(rle, str) and rle.strip():
        v = np.array(rle.split(), dtype=np.int64)
        if v.size % 2:
            raise ValueError("odd number of RLE values")
        for s, n in zip(v[0::2], v[1::2]):
            if s < 1 or n < 0 or s - 1 + n > m.size:
                raise ValueError(f"RLE run {s} {n} outside {height}x{width}")
            m[s - 1:s - 1 + n] = 1
    return m.reshape(height, width)
