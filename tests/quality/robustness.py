"""Robustness to how a slice was exported, through the C engine (`segd infer`).

Each 16-bit slice given is rendered seven ways, as real exports render it:
  raw       the 16-bit original
  8bit      8-bit, full range: round(255 (v - min) / (max - min))
  shift8    `raw >> 8` stretched linearly to 0-255 (19-62 grey levels: the
            coarsening of the data's derived8-coarse group).  Judged only
            where it leaves at least MIN_LEVELS grey levels: a dark original
            (maximum under 4096) keeps 2-15, down to a binary image, with
            no anatomy left to segment; such rows are printed, marked "not
            judged", and the slice is still coarsened by coarse32
  coarse32  8-bit with 32 grey levels over the slice's range (the middle of
            the derived8-coarse group's 19-62), for every slice
  resample  upscaled x2 and back (bilinear, antialiased): the blur of a
            third-party resize
  gamma07   max * (v / max) ** 0.7, 16-bit
  window    clipped at the 1st / 99th percentile and stretched to 16-bit
and every rendition's masks must agree with the raw one's at Dice >= 0.85
for each organ present in the raw masks.  The per-organ Dice of each
rendition is printed; the exit status is the verdict.

  robustness.py SEGD_BIN WEIGHTS SLICE16.png...
"""
import os
import sys
import tempfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hardening"))
import segdtest  # noqa: E402  the RLE decoder every Python test shares
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from infer_dice import infer_docs  # noqa: E402

ORGANS = ("large_bowel", "small_bowel", "stomach")
MIN_DICE = 0.85
MIN_LEVELS = 16  # shift8 with fewer grey levels is not judged (see above)


def read16(path):
    a = np.array(Image.open(path))
    if a.dtype != np.uint16 and a.dtype != np.int32:
        raise SystemExit(f"{path}: not a 16-bit grey PNG ({a.dtype})")
    return a.astype(np.int64)


def save(a, path, bits):
    if bits == 8:
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="L").save(path)
    else:
        Image.fromarray(np.clip(a, 0, 65535).astype(np.uint16)).save(path)


def renditions(raw):
    """{name: (array, bits)} for one 16-bit slice."""
    mn, mx = raw.min(), raw.max()
    out = {"raw": (raw, 16)}
    out["8bit"] = (np.round(255.0 * (raw - mn) / max(mx - mn, 1)), 8)
    sh = raw >> 8
    out["shift8"] = (np.round(255.0 * (sh - sh.min()) / max(sh.max() - sh.min(), 1)), 8)
    q = np.round(31.0 * (raw - mn) / max(mx - mn, 1))
    out["coarse32"] = (np.round(q * 255.0 / 31.0), 8)
    h, w = raw.shape
    img = Image.fromarray(raw.astype(np.float32), mode="F")
    up = img.resize((2 * w, 2 * h), Image.BILINEAR)
    out["resample"] = (np.round(np.array(up.resize((w, h), Image.BILINEAR))), 16)
    out["gamma07"] = (np.round(mx * (raw / max(mx, 1)) ** 0.7), 16)
    lo, hi = np.percentile(raw, 1), np.percentile(raw, 99)
    clipped = np.clip(raw, lo, hi)
    out["window"] = (np.round(65535.0 * (clipped - lo) / max(hi - lo, 1)), 16)
    return out


def dice(a, b):
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * float(np.logical_and(a, b).sum()) / s


def main():
    binary, weights = sys.argv[1:3]
    slices = sys.argv[3:]
    if not slices:
        raise SystemExit("no slices given")
    failures, checks, unjudged, levels = 0, 0, 0, {}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for path in slices:
            base = os.path.basename(path)[:-4]
            raw = read16(path)
            levels[base] = len(np.unique(raw >> 8))
            for name, (a, bits) in renditions(raw).items():
                p = os.path.join(tmp, f"{base}.{name}.png")
                save(a, p, bits)
                files.append((base, name, p))
        err, docs = infer_docs(binary, weights, [p for _, _, p in files])
        if docs is None:
            print(err)
            return 1
    masks = {}
    for (base, name, _), doc in zip(files, docs):
        h, w = doc["height"], doc["width"]
        masks[(base, name)] = {o: segdtest.rle_decode(doc["masks"][o], h * w).reshape(h, w) for o in ORGANS}
    print(f"{'slice':<28} {'rendition':<9} " + " ".join(f"{o:>11}" for o in ORGANS))
    for base in sorted({b for b, _, _ in files}):
        ref = masks[(base, "raw")]
        print(f"{base[:28]:<28} {'raw px':<9} " + " ".join(f"{int(ref[o].sum()):>11}" for o in ORGANS))
        for name in ("8bit", "shift8", "coarse32", "resample", "gamma07", "window"):
            if name == "shift8" and levels[base] < MIN_LEVELS:
                print(f"{base[:28]:<28} {name:<9} not judged: raw >> 8 leaves {levels[base]} grey "
                      f"level(s), under {MIN_LEVELS}")
                unjudged += 1
                continue
            cells = []
            for o in ORGANS:
                if not ref[o].any():
                    cells.append(f"{'-':>11}")
                    continue
                d = dice(ref[o], masks[(base, name)][o])
                checks += 1
                bad = d < MIN_DICE
                failures += bad
                cells.append(f"{d:>10.3f}{'!' if bad else ' '}")
            print(f"{base[:28]:<28} {name:<9} " + " ".join(cells))
    if unjudged:
        print(f"{unjudged} shift8 rendition(s) not judged (under {MIN_LEVELS} grey levels)")
    print(f"{checks - failures} passed, {failures} failed (Dice >= {MIN_DICE} against raw, organs present)")
    return 1 if failures or not checks else 0


if __name__ == "__main__":
    sys.exit(main())
