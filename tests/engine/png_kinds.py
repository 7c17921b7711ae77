#!/usr/bin/python3
"""Every PNG kind the engine decodes, decoded by the PyTorch reference
(train/preprocess.load_png) and by the engine (png_dump: segd_png_decode_gray)
must give identical grey samples (issue 11, item 11): grey 1/2/4/8/16-bit,
grey+alpha 8/16, RGB 8/16, RGBA 8/16, palette 1/2/4/8 (with and without
tRNS), grey with tRNS; each plain and Adam7-interlaced, every row filter.

usage: png_kinds.py PNG_DUMP
Prints one line per kind and "N passed, N failed"; exits 1 on any failure."""
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "train"))
from preprocess import _ADAM7, _CHANNELS, decode_png, load_png  # noqa: E402

DUMP = sys.argv[1]
W, H = 13, 11  # odd: partial bytes at the row ends of low bit depths, short Adam7 passes
passed = failed = 0


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"  ok   {name}")
    else:
        failed += 1
        print(f"  FAIL {name}: {detail}")


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def filter_rows(rows, bpp, rng):
    """Filter each row with a random filter type (0..4): the encoder side."""
    out = []
    prev = np.zeros(rows.shape[1], dtype=np.int64)
    for r in rows.astype(np.int64):
        left = np.concatenate([np.zeros(bpp, np.int64), r[:-bpp]])[: len(r)]
        ul = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])[: len(r)]
        ft = int(rng.integers(0, 5))
        pred = [0 * r, left, prev, (left + prev) >> 1, paeth(left, prev, ul)][ft]
        out.append(bytes([ft]) + ((r - pred) & 255).astype(np.uint8).tobytes())
        prev = r
    return b"".join(out)


def pack(samples, bits):
    """(h, w*ch) samples -> (h, rowbytes) uint8 rows."""
    h = samples.shape[0]
    if bits == 16:
        return samples.astype(">u2").view(np.uint8).reshape(h, -1)
    if bits == 8:
        return samples.astype(np.uint8)
    per = 8 // bits
    n = samples.shape[1]
    padded = np.zeros((h, -(-n // per) * per), dtype=np.int64)
    padded[:, :n] = samples
    g = padded.reshape(h, -1, per)
    shifts = np.arange(8 - bits, -1, -bits)
    return (g << shifts).sum(-1).astype(np.uint8)


def encode(samples, ctype, bits, interlace, rng, palette=None, trns=None):
    """samples: (H, W, ch) ints -> PNG bytes."""
    ch = _CHANNELS[ctype]
    bpp = max(1, ch * bits // 8)
    raw = b""
    for x0, y0, dx, dy in (_ADAM7 if interlace else ((0, 0, 1, 1),)):
        sub = samples[y0::dy, x0::dx]
        if sub.size:
            raw += filter_rows(pack(sub.reshape(sub.shape[0], -1), bits), bpp, rng)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, bits, ctype, 0, 0,
                                                               int(interlace)))
    if palette is not None:
        png += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        png += chunk(b"tRNS", trns)
    return png + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


KINDS = [(0, b) for b in (1, 2, 4, 8, 16)] + [(4, 8), (4, 16), (2, 8), (2, 16), (6, 8), (6, 16)] + \
        [(3, b) for b in (1, 2, 4, 8)]


def engine(path, tmp):
    out = os.path.join(tmp, "out.f32")
    r = subprocess.run([DUMP, path, out], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return None, r.stderr.strip()
    h, w = map(int, r.stdout.split())
    return np.fromfile(out, dtype=np.float32).reshape(h, w), ""


def main():
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory() as tmp:
        for ctype, bits in KINDS:
            for interlace in (0, 1):
                for trns in (False, True):
                    if trns and ctype not in (0, 3):
                        continue
                    ch = _CHANNELS[ctype]
                    top = (1 << bits) - 1
                    samples = rng.integers(0, top + 1, size=(H, W, ch))
                    samples[0, 0, 0], samples[0, 1, 0] = 0, top  # both ends of the range
                    palette = tr = None
                    if ctype == 3:
                        palette = rng.integers(0, 256, size=(top + 1, 3))
                        tr = bytes(rng.integers(0, 256, size=top + 1).astype(np.uint8)) if trns else None
                    elif trns:
                        tr = struct.pack(">H", int(samples[2, 2, 0]))
                    name = (f"colour type {ctype}, {bits}-bit{', interlaced' if interlace else ''}"
                            f"{', tRNS' if trns else ''}")
                    path = os.path.join(tmp, f"k{ctype}-{bits}-{interlace}-{int(trns)}.png")
                    with open(path, "wb") as f:
                        f.write(encode(samples, ctype, bits, interlace, rng, palette, tr))
                    want, why = engine(path, tmp)
                    if want is None:
                        check(False, name, f"the engine refused it: {why}")
                        continue
                    try:
                        got = load_png(path)
                        ref = decode_png(open(path, "rb").read())
                    except Exception as e:  # noqa: BLE001 - a kind the reference cannot read fails
                        check(False, name, repr(e))
                        continue
                    same = got.dtype == np.float32 and got.shape == want.shape and np.array_equal(got, want)
                    check(same and np.array_equal(ref, want),
                          f"{name}: load_png = decode_png = engine ({len(np.unique(want))} grey levels)",
                          f"shape {got.shape} vs {want.shape}, max |diff| "
                          f"{np.abs(got - want).max() if got.shape == want.shape else '-'}")
        # the shipped sample slices too (16-bit and 8-bit grey exports)
        for f in sorted(os.listdir(os.path.join(ROOT, "tests", "data"))):
            if f.endswith(".png"):
                path = os.path.join(ROOT, "tests", "data", f)
                want, why = engine(path, tmp)
                got = load_png(path)
                check(want is not None and np.array_equal(got, want), f"tests/data/{f}", why)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
