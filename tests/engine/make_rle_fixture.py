"""Extract a few dozen real rows of the Kaggle UW-Madison train.csv into
tests/data/rle-train-sample.csv for test_rle.c, with each slice's native
height and width (from the images of the same case-day in images.csv; the
derived8-gif group is skipped because its images are resized) and the pixel
count of train/preprocess.py rle_decode.  Run from the repository root:
  /usr/bin/python3 tests/engine/make_rle_fixture.py [/work/shared/data/uwmgi]
"""
import csv
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "train"))
from preprocess import parse_slice_name, rle_decode  # noqa: E402

N_NONEMPTY, N_EMPTY = 36, 6


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/data/uwmgi"
    sizes = {}  # caseC_dayD -> (height, width)
    with open(os.path.join(data, "images.csv")) as f:
        for row in csv.DictReader(f):
            if row["group"] == "derived8-gif":
                continue
            parts = row["path"].split("/")
            _, w, h, _, _ = parse_slice_name(parts[-1])
            sizes[parts[2]] = (h, w)
    nonempty, empty = [], []
    with open(os.path.join(data, "train.csv")) as f:
        for row in csv.DictReader(f):
            cd = "_".join(row["id"].split("_")[:2])
            if cd not in sizes:
                continue
            (nonempty if row["segmentation"] else empty).append(row)
    rng = random.Random(2022)
    rows = rng.sample(nonempty, N_NONEMPTY) + rng.sample(empty, N_EMPTY)
    # the longest RLE string too, as a stress case
    rows.append(max(nonempty, key=lambda r: len(r["segmentation"])))
    out = os.path.join(ROOT, "tests", "data", "rle-train-sample.csv")
    with open(out, "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(["id", "class", "height", "width", "pixels", "segmentation"])
        for r in rows:
            h, w = sizes["_".join(r["id"].split("_")[:2])]
            n = int(rle_decode(r["segmentation"], h, w).sum())
            wr.writerow([r["id"], r["class"], h, w, n, r["segmentation"]])
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
