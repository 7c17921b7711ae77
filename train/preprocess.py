"""Pre- and post-processing shared by training, evaluation and the reference
predictor.  The C engine implements the same steps (src/model/pipeline.c);
the policy is recorded in the weights' metadata under "preprocess".

  load:       PNG -> float32 grey (16-bit kept as is; RGB/palette via
              BT.601 luminance 0.299 R + 0.587 G + 0.114 B; alpha dropped),
              every PNG kind the engine reads (see load_png)
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
              "histogram_match": the image's histogram matched to a reference
              (Nyul, Udupa and Zhang, "New variants of a method of MRI scale
              standardization", IEEE TMI 19(2), 2000, with every percentile a
              landmark).  r = the pixel's mid-rank among the n pixels,
              (#smaller + (#equal - 1) / 2) / (n - 1) (0.5 where n == 1);
              v -> q(r), q the piecewise-linear function through the K
              reference quantiles policy["reference_quantiles"] at
              0, 1/(K-1), ..., 1 (reference_quantiles() below computes them
              from training images).  In double, then float32.  Invariant
              to every increasing grey-value map (bit depth, gamma, window,
              linear rescaling) up to the ties it makes.
  resize:     bilinear, align_corners=False, no antialias, to the model grid
  tta_gamma:  optional list of powers (photometric test-time augmentation):
              the network runs once on x ** g for each g (x, the normalised
              grid image in [0, 1]; g == 1 is x itself), and the mask and
              presence probabilities are the arithmetic means of the runs'
              sigmoids, summed in the list's order; absent means one run
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
    """Grey float32 array (H, W) with raw intensities, decoded as the C
    engine does (src/io/png.c) for every PNG kind it accepts:
      grey 1/2/4-bit -> expanded to 0..255 (v * 255 / (2^bits - 1)),
      grey 8/16-bit and grey+alpha 8/16-bit -> the grey sample as is,
      RGB(A) 8-bit and palette -> BT.601 luminance of the 8-bit channels,
      RGB(A) 16-bit -> the same on the high bytes; alpha and tRNS ignored.
    PIL decodes the common kinds (fast); the others, where PIL's own
    conversions differ (grey+alpha: 16-bit read as RGBA of the low bytes,
    8-bit as two channels; 1-bit as booleans; 16-bit colour), go through
    decode_png, a small reference decoder."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG file")
    bits, ctype = data[24], data[25]
    if (ctype, bits) not in _PIL_EXACT:
        return decode_png(data)
    import io
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    a = np.array(im)
    if a.ndim == 3:
        return _luminance(a[..., 0], a[..., 1], a[..., 2])
    return a.astype(np.float32)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (colour type, bit depth) that PIL decodes to exactly the engine's samples
_PIL_EXACT = {(0, 8), (0, 16), (2, 8), (6, 8), (3, 1), (3, 2), (3, 4), (3, 8)}
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # (x0, y0, dx, dy) of the seven passes


def _luminance(r, g, b):
    """BT.601 in float32, in the engine's order of operations."""
    r, g, b = (np.asarray(c, dtype=np.float32) for c in (r, g, b))
    return (np.float32(0.299) * r + np.float32(0.587) * g) + np.float32(0.114) * b


def _unfilter(raw, pos, rows, rowbytes, bpp):
    """Undo the PNG row filters of one (sub)image: (rows, rowbytes) uint8
    and the position after it in raw."""
    out = np.zeros((rows, rowbytes), dtype=np.uint8)
    prev = np.zeros(rowbytes, dtype=np.int64)
    for y in range(rows):
        ft = raw[pos]
        line = np.frombuffer(raw, dtype=np.uint8, count=rowbytes, offset=pos + 1).astype(np.int64)
        pos += 1 + rowbytes
        if ft == 0:
            cur = line
        elif ft == 1:  # Sub: running sums over each byte lane of the pixel
            cur = line.copy()
            for k in range(min(bpp, rowbytes)):
                cur[k::bpp] = np.cumsum(line[k::bpp])
            cur &= 255
        elif ft == 2:  # Up
            cur = (line + prev) & 255
        elif ft in (3, 4):  # Average, Paeth: each byte depends on its left one
            c = line.tolist()
            up = prev.tolist()
            for i in range(rowbytes):
                left = c[i - bpp] if i >= bpp else 0
                if ft == 3:
                    c[i] = (c[i] + ((left + up[i]) >> 1)) & 255
                else:
                    ul = up[i - bpp] if i >= bpp else 0
                    pa, pb, pc = abs(up[i] - ul), abs(left - ul), abs(left + up[i] - 2 * ul)
                    pred = left if pa <= pb and pa <= pc else up[i] if pb <= pc else ul
                    c[i] = (c[i] + pred) & 255
            cur = np.array(c, dtype=np.int64)
        else:
            raise ValueError(f"bad PNG filter type {ft}")
        out[y] = cur
        prev = cur
    return out, pos


def _samples(rows, width, channels, bits):
    """Unfiltered rows -> (H, width, channels) integer samples."""
    h = rows.shape[0]
    if bits == 16:
        v = rows.reshape(h, -1)[:, : width * channels * 2].reshape(h, -1, 2).astype(np.int64)
        v = v[..., 0] << 8 | v[..., 1]
    elif bits == 8:
        v = rows[:, : width * channels].astype(np.int64)
    else:
        per = 8 // bits
        shifts = np.arange(8 - bits, -1, -bits)
        v = (rows[:, :, None].astype(np.int64) >> shifts) & ((1 << bits) - 1)
        v = v.reshape(h, -1)[:, : width * channels]
        assert per * rows.shape[1] >= width * channels
    return v.reshape(h, width, channels)


def decode_png(data):
    """Reference decoder: PNG bytes -> grey float32 (H, W) as load_png
    describes; every colour type, bit depth, filter and Adam7 interlacing.
    Ancillary chunks are ignored; a malformed file raises ValueError."""
    import struct
    import zlib

    if data[:8] != PNG_SIGNATURE:
        raise ValueError("not a PNG file")
    pos, idat, palette, ihdr = 8, [], None, None
    while pos + 12 <= len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ihdr is None or not idat:
        raise ValueError("PNG without IHDR or IDAT")
    w, h, bits, ctype, _, _, interlace = ihdr
    if ctype not in _CHANNELS or (ctype == 3 and palette is None):
        raise ValueError(f"unsupported PNG colour type {ctype}")
    ch = _CHANNELS[ctype]
    bpp = max(1, ch * bits // 8)
    raw = zlib.decompress(b"".join(idat))
    s = np.zeros((h, w, ch), dtype=np.int64)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    pos = 0
    for x0, y0, dx, dy in passes:
        pw, ph = (w - x0 + dx - 1) // dx if w > x0 else 0, (h - y0 + dy - 1) // dy if h > y0 else 0
        if pw == 0 or ph == 0:
            continue
        rows, pos = _unfilter(raw, pos, ph, (pw * ch * bits + 7) // 8, bpp)
        s[y0::dy, x0::dx] = _samples(rows, pw, ch, bits)
    if ctype == 3:
        pal = np.zeros((256, 3), dtype=np.int64)  # indices past PLTE: black, as libpng
        pal[: len(palette)] = palette
        rgb = pal[s[..., 0]]
        return _luminance(rgb[..., 0], rgb[..., 1], rgb[..., 2])
    if ctype in (2, 6):
        c = s[..., :3] >> 8 if bits == 16 else s[..., :3]  # 16-bit colour: the high byte
        return _luminance(c[..., 0], c[..., 1], c[..., 2])
    g = s[..., 0]
    if bits < 8:
        g = g * (255 // ((1 << bits) - 1))
    return g.astype(np.float32)


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


def mid_ranks(img):
    """(H,W) -> float64 mid-ranks in [0,1]: (#smaller + (#equal - 1) / 2)
    / (n - 1) over the n pixels; 0.5 for a single pixel."""
    flat = np.asarray(img, dtype=np.float32).reshape(-1)
    n = flat.size
    if n < 2:
        return np.full(np.shape(img), 0.5)
    s = np.sort(flat)
    below = np.searchsorted(s, flat, side="left")
    upto = np.searchsorted(s, flat, side="right")
    return ((below + upto - 1) / (2.0 * (n - 1))).reshape(np.shape(img))


def quantile_curve(r, ref):
    """r float64 in [0,1] -> the piecewise-linear function through the K
    values ref at 0, 1/(K-1), ..., 1 (float64; the engine's arithmetic)."""
    ref = np.asarray(ref, dtype=np.float64)
    t = r * (len(ref) - 1)
    i = np.minimum(np.floor(t).astype(np.int64), len(ref) - 2)
    return ref[i] + (t - i) * (ref[i + 1] - ref[i])


def normalise_histogram(img, ref):
    """(H,W) -> float32: the histogram matched to the reference quantiles
    ref (K >= 2 non-decreasing values); see the module docstring."""
    return quantile_curve(mid_ranks(img), ref).astype(np.float32)


REFERENCE_K = 101  # reference quantiles at every percent


def reference_quantiles(images, k=REFERENCE_K):
    """The reference of "histogram_match": the mean over images (each (H,W),
    percentile-normalised as DEFAULT_POLICY does) of their quantiles at
    0, 1/(k-1), ..., 1 (numpy's linear interpolation), rounded to 6
    decimals: the histogram of a typical training slice, so that a matched
    image looks like one.  Non-decreasing, as each image's quantiles are.
    A list of k floats."""
    qs = np.linspace(0.0, 1.0, k)
    acc = np.zeros(k)
    count = 0
    for img in images:
        acc += np.quantile(normalise_percentile(img), qs)
        count += 1
    if not count:
        raise ValueError("reference_quantiles: no images")
    ref = np.round(acc / count, 6)
    return [float(v) for v in np.maximum.accumulate(ref)]


def normalise_policy(img, policy=DEFAULT_POLICY):
    """The normalisation the policy (weights metadata "preprocess") names."""
    if policy.get("normalisation") == "histogram_match":
        return normalise_histogram(img, policy["reference_quantiles"])
    if policy.get("normalisation", "minmax") == "percentile":
        lo, hi = policy.get("percentiles", (1, 99))
        return normalise_percentile(img, lo, hi)
    return normalise(img)


def resize(t, size):
    """t: (N,C,H,W) float tensor -> (N,C,size[0],size[1])."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)


def policy_for_size(size):
    """The default preprocessing at a model grid of size x size pixels.
    Exports and evaluations default to the grid the network trained on
    (fit.preload resizes to the recipe's size); train.py and cv.py
    --input-size, and cv_choose.py's grid axis, run it at another one on
    purpose, which the file's metadata then records."""
    return dict(DEFAULT_POLICY, input_size=[int(size), int(size)])


def to_model_input(img, policy=DEFAULT_POLICY):
    """Raw grey (H,W) -> normalised (1,1,S,S) tensor at the model grid."""
    x = torch.from_numpy(normalise_policy(img, policy))[None, None]
    return resize(x, policy["input_size"])


TTA_MAX = 8  # the engine's SEGD_MAX_TTA


def tta_gammas(policy):
    """The policy's test-time powers as floats; [1.0] (one plain run) when
    it names none.  ValueError where the engine would refuse the file: not
    a list of 1..TTA_MAX numbers in [0.1, 10]."""
    if "tta_gamma" not in policy:
        return [1.0]
    gammas = policy["tta_gamma"]
    if (not isinstance(gammas, list) or not 1 <= len(gammas) <= TTA_MAX
            or any(isinstance(g, bool) or not isinstance(g, (int, float)) or not 0.1 <= g <= 10
                   for g in gammas)):
        raise ValueError(f"tta_gamma {gammas!r}: 1 to {TTA_MAX} numbers in [0.1, 10]")
    return [float(g) for g in gammas]


def grid_probs(model, img, policy=DEFAULT_POLICY):
    """Raw grey (H,W) through an eval-mode network as the engine runs it:
    -> (probs (C,S,S), presence (C,)) float32 tensors at the model grid,
    the sigmoids averaged over the policy's tta_gamma (module docstring)."""
    return network_probs(model, to_model_input(img, policy), policy)


@torch.no_grad()
def network_probs(model, x, policy=DEFAULT_POLICY):
    """grid_probs from the model input x (1,1,S,S) of to_model_input."""
    gammas = tta_gammas(policy)
    x = x.to(next(model.parameters()).device)
    probs = pres = None
    for g in gammas:
        logits, plog = model(x if g == 1.0 else x ** g)
        p, q = torch.sigmoid(logits)[0].float().cpu(), torch.sigmoid(plog)[0].float().cpu()
        probs, pres = (p, q) if probs is None else (probs + p, pres + q)
    n = len(gammas)
    return (probs, pres) if n == 1 else (probs / n, pres / n)


def postprocess(probs, presence, height, width, threshold=0.5, presence_threshold=0.5):
    """probs (C,S,S) tensor at grid -> (native probs (C,H,W) np, masks (C,H,W) uint8)."""
    p = resize(probs[None].float(), (height, width))[0]
    p = p.numpy()
    masks = (p > threshold).astype(np.uint8)
    for c in range(masks.shape[0]):
        if float(presence[c]) < presence_threshold:
            masks[c] = 0
    return p, masks


def component_sizes(mask):
    """mask (H,W) -> (labels (H,W) int32, sizes): the 8-connected components
    of mask's nonzero pixels (touching by an edge or a corner), labels
    1..K in the order of each component's first pixel in row-major order
    (0 outside), sizes[j] the pixel count of label j (sizes[0] = 0)."""
    m = np.asarray(mask).astype(bool)
    h, w = m.shape
    labels = np.zeros((h, w), dtype=np.int32)
    sizes = [0]
    for start in np.flatnonzero(m):
        r0, c0 = divmod(int(start), w)
        if labels[r0, c0]:
            continue
        lab = len(sizes)
        labels[r0, c0] = lab
        stack, count = [(r0, c0)], 0
        while stack:
            r, c = stack.pop()
            count += 1
            for rr in (r - 1, r, r + 1):
                if rr < 0 or rr >= h:
                    continue
                for cc in (c - 1, c, c + 1):
                    if 0 <= cc < w and m[rr, cc] and not labels[rr, cc]:
                        labels[rr, cc] = lab
                        stack.append((rr, cc))
        sizes.append(count)
    return labels, np.array(sizes, dtype=np.int64)


def components_at_least(labels, sizes, min_pixels):
    """Boolean mask of the components (component_sizes' labels and sizes)
    with at least min_pixels pixels."""
    return (sizes >= min_pixels)[labels] & (labels > 0)


def remove_small_components(masks, share):
    """masks (C,H,W) 0/1 -> a copy without the 8-connected components of
    organ c whose pixel count is below share[c] * H * W (in double, as the
    engine compares); share[c] <= 0 keeps organ c as it is."""
    out = np.array(masks, dtype=np.uint8, copy=True)
    _, h, w = out.shape
    for c, a in enumerate(share):
        if a > 0 and out[c].any():
            labels, sizes = component_sizes(out[c])
            out[c] = components_at_least(labels, sizes, float(a) * h * w)
    return out


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
