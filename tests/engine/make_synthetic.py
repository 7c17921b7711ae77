"""Write the small synthetic PNGs of tests/data (odd sizes, every PNG colour
type the engine accepts), deterministic.  Run from the repository root:
  /usr/bin/python3 tests/engine/make_synthetic.py
"""
import numpy as np
from PIL import Image

H, W = 53, 37  # odd on purpose: ceil-mode pooling, non power-of-two resizes


def body(rng):
    """An MR-like blob: smooth disc plus a few bright ellipses plus noise."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    img = 0.6 * np.exp(-(((x - W / 2) / (W / 2.5)) ** 2 + ((y - H / 2) / (H / 2.5)) ** 2))
    for cy, cx, r in ((20, 15, 6), (35, 22, 4), (12, 28, 3)):
        img += 0.4 * (((x - cx) ** 2 + (y - cy) ** 2) < r * r)
    img += 0.05 * rng.standard_normal((H, W))
    return np.clip(img, 0, 1)


def main():
    rng = np.random.RandomState(7)
    g = body(rng)
    Image.fromarray((g * 255).astype(np.uint8), "L").save("tests/data/synthetic-37x53-grey8.png")
    rgb = np.stack([g, np.roll(g, 3, axis=1), g[::-1]], axis=-1)
    rgb8 = (rgb * 255).astype(np.uint8)
    Image.fromarray(rgb8, "RGB").save("tests/data/synthetic-37x53-rgb.png")
    Image.fromarray(rgb8, "RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT) \
        .save("tests/data/synthetic-37x53-palette.png")
    rgba = np.concatenate([rgb8, (rng.rand(H, W, 1) * 255).astype(np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save("tests/data/synthetic-37x53-rgba.png")
    # 16-bit grey (PIL reads it as mode I)
    Image.fromarray((g * 4000).astype(np.uint16)).save(
        "tests/data/synthetic-37x53-grey16.png")


if __name__ == "__main__":
    main()
