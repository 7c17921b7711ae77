"""Quality gate of the bf16 precision: `segd infer --precision fp32` and
`--precision bf16` on every PNG under tests/data/heldout, tests/data/robust16
and tests/data/*.png; prints the pixel agreement of the masks (all organs)
per slice and overall, and the mean Dice of both on the held-out slices
against their labels, next to PyTorch's figure in heldout/reference.json.
Fails (exit 1) if the overall agreement is under 99.9 % or bf16 costs more
than 0.002 mean Dice; skips (exit 77) where the CPU has no AVX512-BF16
(segd refuses bf16 there).  Dice code from infer_dice.py.  Standard
library only.

  precision_agreement.py SEGD_BIN WEIGHTS DATA_DIR [--json OUT]

--json OUT writes the measurement ({agreement, pixels, differ, slices,
heldout_slices, dice_fp32, dice_bf16, dice_cost, tensor_sha256, passed})
for train/record_figure.py --bf16, which puts it into the weights'
metadata: `segd --precision auto` picks bf16 only for weights that carry
a passing one.
"""
import glob
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from infer_dice import ORGANS, infer_docs, per_organ_dice, pixels, read_labels  # noqa: E402

MIN_AGREEMENT = 0.999
MAX_DICE_COST = 0.002


def infer(binary, weights, precision, files):
    """segd's documents of files, or None where bf16 cannot run here."""
    err, docs = infer_docs(binary, weights, files, "--precision", precision)
    if docs is None and precision == "bf16" and "AVX512-BF16" in err:
        return None
    if docs is None:
        sys.exit(f"segd infer --precision {precision} failed:\n{err}")
    return docs


def mean_dice(per):
    return sum(sum(v) / len(v) for v in per.values()) / len(per)


def tensor_sha256(path):
    """The tensor_sha256 a weights file's metadata declares (None if none)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
    return head.get("__metadata__", {}).get("tensor_sha256")


def main():
    args = sys.argv[1:]
    out = None
    if "--json" in args:
        i = args.index("--json")
        out = args[i + 1]
        del args[i:i + 2]
    binary, weights, data = args[:3]
    heldout = sorted(glob.glob(os.path.join(data, "heldout", "*.png")))
    files = heldout + sorted(glob.glob(os.path.join(data, "robust16", "*.png"))) + \
        sorted(glob.glob(os.path.join(data, "*.png")))
    ref = infer(binary, weights, "fp32", files)
    bf = infer(binary, weights, "bf16", files)
    if bf is None:
        print("SKIP: this CPU has no AVX512-BF16: segd refuses --precision bf16 here")
        return 77
    differ = total = 0
    print(f"{'slice':<60} {'pixels':>8} {'differ':>7} {'agreement':>10}")
    for path, a, b in zip(files, ref, bf):
        n = a["width"] * a["height"] * len(ORGANS)
        d = sum(len(pixels(a["masks"][o]) ^ pixels(b["masks"][o])) for o in ORGANS)
        differ += d
        total += n
        name = os.path.relpath(path, data)
        print(f"{name:<60} {n:8d} {d:7d} {100.0 * (1 - d / n):9.4f}%")
    agreement = 1 - differ / total
    print(f"{'overall (' + str(len(files)) + ' slices)':<60} {total:8d} {differ:7d} "
          f"{100.0 * agreement:9.4f}%  (required >= {100 * MIN_AGREEMENT:.1f}%)")
    labels = read_labels(os.path.join(data, "heldout"))
    nh = len(heldout)
    d32 = mean_dice(per_organ_dice(heldout, ref[:nh], labels))
    d16 = mean_dice(per_organ_dice(heldout, bf[:nh], labels))
    with open(os.path.join(data, "heldout", "reference.json")) as f:
        recorded = json.load(f)["mean_dice"]
    cost = d32 - d16
    print(f"mean Dice on {nh} held-out slices: fp32 {d32:.4f}  bf16 {d16:.4f}  "
          f"(PyTorch reference {recorded:.4f}); bf16 cost {cost:+.4f} (allowed <= {MAX_DICE_COST})")
    ok = agreement >= MIN_AGREEMENT and cost <= MAX_DICE_COST
    print("ok" if ok else "FAIL")
    if out:
        with open(out, "w") as f:
            json.dump({"agreement": round(agreement, 6), "pixels": total, "differ": differ,
                       "slices": len(files), "heldout_slices": nh, "dice_fp32": round(d32, 4),
                       "dice_bf16": round(d16, 4), "dice_cost": round(cost, 4),
                       "min_agreement": MIN_AGREEMENT, "max_dice_cost": MAX_DICE_COST,
                       "tensor_sha256": tensor_sha256(weights), "passed": ok}, f, indent=1)
            f.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
