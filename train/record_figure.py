"""Write measured figures into a weights file: a held-out twin's quality
figure, and the bf16 agreement that lets `--precision auto` pick bf16.

The figure comes from train/compare_unseen.py's compare.json, so that
`GET /v1/model` and the file itself carry the figure that belongs to it:
metadata
`unseen_patients` = {cases, slices, mean_dice, dice per organ, hd95_mm,
thresholds, measured_with (the twin's sha256), table}.  The tensors are
copied unchanged (their `tensor_sha256` stays; the file's sha256 changes).
A `cross_validation` entry that train.py copied from a table of another
recipe is removed.

--bf16 AGREEMENT.json (tests/quality/precision_agreement.py --json) writes
metadata `bf16_agreement` = that measurement; it must have been made on
these tensors (its tensor_sha256 equal to the file's).  The engine's
`--precision auto` picks bf16 only where this record says the file passed
(>= 99.9 % of mask pixels equal to fp32's, <= 0.002 mean Dice lost).

  /usr/bin/python3 train/record_figure.py weights/unet3p-16.safetensors \\
      train/cv/finetune/compare.json --twin 152b8e3747fd [--bf16 AGREEMENT.json]
  /usr/bin/python3 train/record_figure.py weights/unet3p-16.safetensors --bf16 AGREEMENT.json
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import CLASSES  # noqa: E402
from weights_io import read_safetensors, write_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", help="the file to annotate (rewritten in place)")
    ap.add_argument("compare", nargs="?", help="compare.json of train/compare_unseen.py")
    ap.add_argument("--twin", help="sha256 (or a prefix) of the held-out twin in it")
    ap.add_argument("--bf16", help="precision_agreement.py --json output for these tensors")
    args = ap.parse_args()
    if not args.compare and not args.bf16:
        ap.error("nothing to record: give COMPARE --twin SHA and/or --bf16 FILE")
    if bool(args.compare) != bool(args.twin):
        ap.error("COMPARE and --twin go together")
    tensors, md = read_safetensors(args.weights)
    if args.bf16:
        with open(args.bf16) as f:
            agree = json.load(f)
        if agree.get("tensor_sha256") != md.get("tensor_sha256"):
            sys.exit(f"{args.bf16}: measured on tensors {agree.get('tensor_sha256')}, "
                     f"{args.weights} holds {md.get('tensor_sha256')}")
        md["bf16_agreement"] = json.dumps(agree)
        print(f"bf16_agreement: {100 * agree['agreement']:.3f} % of mask pixels, "
              f"Dice cost {agree['dice_cost']:+.4f}, passed {agree['passed']}")
    if not args.compare:
        digest = write_safetensors(tensors, md, args.weights)
        print(f"wrote {args.weights} (sha256 {digest})")
        return
    with open(args.compare) as f:
        doc = json.load(f)
    found = [e for e in doc["files"] if e["sha256"].startswith(args.twin)]
    if len(found) != 1:
        sys.exit(f"{args.compare}: {len(found)} files match --twin {args.twin}")
    pooled = found[0]["table"]["all"]["pooled"]
    md.pop("cross_validation", None)
    md["unseen_patients"] = json.dumps({
        "cases": doc["cases"], "slices": doc["slices"],
        "mean_dice": round(pooled["mean_dice"], 4),
        "dice": {c: round(pooled[c]["dice"], 4) for c in CLASSES},
        "hd95_mm": {c: round(pooled[c]["hd95_mm"], 1) for c in CLASSES if pooled[c]["hd95_mm"] is not None},
        "thresholds": {"mask": float(md.get("threshold", 0.5)),
                       "presence": float(md.get("presence_threshold", 0.5))},
        "measured_with": found[0]["sha256"],
        "how": "the same training without these patients (its held-out twin); "
               "dice over slices where the organ or the prediction is present",
        "table": os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(args.compare)), "compare.md"),
                                 os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))})
    digest = write_safetensors(tensors, md, args.weights)
    print(f"wrote {args.weights} (sha256 {digest}): unseen_patients mean Dice {pooled['mean_dice']:.4f}")


if __name__ == "__main__":
    main()
