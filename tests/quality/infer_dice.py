"""Quality test: `segd infer` on the sample slices in tests/data/heldout/,
Dice of its masks against the Kaggle labels, compared with the figures
PyTorch computed for the same weights and slices (REFERENCE, written by
`train/evaluate.py --folder tests/data/heldout --weights W --json REFERENCE`;
its weights_sha256 must be the weights' own, so a stale reference fails).
The engine and the reference must agree within 0.005 Dice per organ.
Standard library only.

  infer_dice.py SEGD_BIN WEIGHTS HELDOUT_DIR REFERENCE
"""
import hashlib
import csv
import json
import os
import re
import subprocess
import sys

ORGANS = ("large_bowel", "small_bowel", "stomach")


def pixels(rle):
    v = [int(t) for t in rle.split()]
    out = set()
    for s, n in zip(v[0::2], v[1::2]):
        out.update(range(s, s + n))
    return out


def dice(a, b):
    if not a and not b:
        return 1.0
    return 2.0 * len(a & b) / (len(a) + len(b))


def infer_docs(binary, weights, files, *options, timeout=900):
    """`segd infer --weights WEIGHTS OPTIONS... FILES`: (its stderr, one
    document per file), or (stderr, None) when it exited non-zero."""
    out = subprocess.run([binary, "infer", "--weights", weights, *options, *files],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return out.stderr, None
    docs = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(docs) == len(files), (len(docs), len(files))
    return out.stderr, docs


def read_labels(folder):
    """{(slice id, organ): RLE} of FOLDER/labels.csv."""
    labels = {}
    with open(os.path.join(folder, "labels.csv"), newline="") as f:
        for row in csv.DictReader(f):
            labels[(row["id"], row["class"])] = row["segmentation"]
    return labels


def per_organ_dice(files, docs, labels):
    """{organ: [Dice per slice]} of segd's documents (one per file) against labels."""
    per = {o: [] for o in ORGANS}
    for path, doc in zip(files, docs):
        m = re.match(r"(case\d+_day\d+)_slice_(\d+)", os.path.basename(path))
        sid = f"{m.group(1)}_slice_{m.group(2)}"
        for o in ORGANS:
            per[o].append(dice(pixels(doc["masks"][o]), pixels(labels[(sid, o)])))
    return per


def main():
    binary, weights, folder, reference = sys.argv[1:5]
    with open(reference) as f:
        recorded = json.load(f)
    with open(weights, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    if recorded.get("weights_sha256") != sha:
        print(f"{reference} was computed for weights {recorded.get('weights_sha256')}, not {sha}: "
              "regenerate it (see this file's docstring)")
        return 1
    labels = read_labels(folder)
    files = sorted(os.path.join(folder, p) for p in os.listdir(folder) if p.endswith(".png"))
    err, docs = infer_docs(binary, weights, files, timeout=600)
    if docs is None:
        print(err)
        return 1
    per = per_organ_dice(files, docs, labels)
    failures = 0
    print(f"{'organ':<12} {'segd dice':>9} {'recorded':>9}   ({len(files)} held-out slices)")
    for o in ORGANS:
        got = sum(per[o]) / len(per[o])
        want = recorded["organs"][o]["dice"]
        ok = abs(got - want) <= 0.005
        failures += not ok
        print(f"{o:<12} {got:9.4f} {want:9.4f} {'ok' if ok else 'MISMATCH'}")
    mean = sum(sum(v) / len(v) for v in per.values()) / len(ORGANS)
    ok = abs(mean - recorded["mean_dice"]) <= 0.005
    failures += not ok
    print(f"{'mean':<12} {mean:9.4f} {recorded['mean_dice']:9.4f} {'ok' if ok else 'MISMATCH'}")
    print(f"{4 - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
