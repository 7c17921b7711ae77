"""Write a UNet3+ checkpoint (best.pt or last.pt of train.py) as the
safetensors file the C engine loads, optionally with the data summary, the
split and the validation figures of held-out cases.  The file format and
the metadata layout are train/weights_io.py's.

Usage: python3 train/export.py CHECKPOINT.pt OUT.safetensors [--data ROOT]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fit import checkpoint_policy, load_checkpoint  # noqa: E402
from weights_io import data_metadata, export_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="best.pt or last.pt written by train.py")
    ap.add_argument("out")
    ap.add_argument("--data", help="data root: record its summary and evaluate held-out cases")
    ap.add_argument("--split", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "split.json"))
    ap.add_argument("--training", help="JSON text describing the training run")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, ck = load_checkpoint(args.checkpoint)
    # the exported file runs at the grid the checkpoint trained at (train.py's recipe)
    size = int(ck.get("recipe", {}).get("size", 256))
    extra = dict(ck.get("metadata", {}))
    if args.training:
        extra["training"] = json.loads(args.training)
    if args.data:
        import dataset
        import evaluate
        recs = dataset.discover(args.data)
        with open(args.split) as f:
            split = json.load(f)
        val = [r for r in recs if r["case"] in set(split["val_cases"])
               and r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
        policy = checkpoint_policy(ck, size)
        res = evaluate.evaluate(val, lambda r: evaluate.predict_record(model, r, policy=policy)[1])
        res.pop("volumes")
        extra["data"] = data_metadata(
            recs, sum(r["case"] not in set(split["val_cases"]) for r in recs), len(val))
        extra["split"] = split
        extra["validation"] = res
        print(json.dumps(res["organs"], indent=1), "mean", res["mean_dice"])
    digest = export_model(model, args.out, extra, size=size, policy=checkpoint_policy(ck, size))
    print(f"wrote {args.out} sha256={digest}")


if __name__ == "__main__":
    main()
