#!/usr/bin/python3
"""Regression (patch 001): a width-1 UNet3+ (valid metadata, loads fine)
must segment like PyTorch.  The fixture data/golden-w1.* comes from
tests/engine/make_golden.py (--width 1 --seed 7 --grid 32 32); `segd
infer` must give the reference's per-organ pixel counts, give or take the
pixels the reference marks as near the threshold.  Before the fix the
pooled single-channel conv of level 2 read the unpooled map (hundreds of
pixels off; an assertion failure in builds with assertions)."""
import json
import os
import subprocess

import segdtest as T

HERE = os.path.dirname(os.path.abspath(__file__))
man = json.load(open(os.path.join(HERE, "data", "golden-w1.json")))
weights = os.path.join(HERE, "data", man["weights"])
for case in man["cases"]:
    png = os.path.normpath(os.path.join(HERE, "data", case["png"]))
    p = subprocess.run([T.SEGD_BIN, "infer", "--weights", weights, png], capture_output=True,
                       timeout=60)
    if not T.check(p.returncode == 0, f"segd infer {os.path.basename(png)}", p.stderr[-300:]):
        continue
    doc = json.loads(p.stdout.decode().splitlines()[0])
    got = [doc["pixels"][k] for k in doc["pixels"]]
    tol = case.get("near_threshold", 0)
    diff = [abs(a - b) for a, b in zip(got, case["pixels"])]
    T.check(max(diff) <= tol, f"width-1 model pixels {os.path.basename(png)} match PyTorch",
            f"segd {got} vs PyTorch {case['pixels']} (tolerance {tol})")
T.finish()
