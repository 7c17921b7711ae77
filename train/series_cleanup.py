"""Choose the series clean-up's minimum component volume (segd serve
--min-volume-ml) on patients the weights never saw, through the engine
itself, and measure the choice honestly.

  /usr/bin/python3 train/series_cleanup.py --bin build/segd \
      --weights weights/unet3p-16.safetensors --json train/thresholds/cleanup-unet3p-16.json

The series are the consecutive runs of slices (at least --min-run slices of
one case-day) among the trustworthy images of patients absent from the
weights' own split (as in thresholds.py).  Each run goes to a `segd serve`
child as one POST /v1/series (Kaggle-named PNGs, multipart/form-data,
3 mm between slices) once per candidate volume; the masks that come back
are scored per slice and organ: Dice over the slices where the organ or the
prediction is present, averaged over the three organs (cv.py's figure).

Two figures, as in thresholds.py: nested (each patient scored with the
volume best on the other patients: the honest estimate of choosing this
way) and chosen (best on all of them: the default segd ships, optimistic
on these patients, printed only beside the nested one).
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402
from model import CLASSES  # noqa: E402
from preprocess import rle_decode  # noqa: E402
from thresholds import figure, unseen_records  # noqa: E402
from weights_io import read_safetensors  # noqa: E402

VOLUMES_ML = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
HERE = os.path.dirname(os.path.abspath(__file__))


def runs(recs, min_run):
    """{case_day: [rec, ...]} of runs of >= min_run consecutive slices."""
    by_day = {}
    for r in recs:
        m = re.search(r"(case\d+_day\d+)_slice_(\d+)", r["id"])
        by_day.setdefault(m.group(1), []).append((int(m.group(2)), r))
    out = {}
    for day, items in sorted(by_day.items()):
        items.sort(key=lambda t: t[0])
        cur = [items[0]]
        for prev, it in zip(items, items[1:]):
            if it[0] == prev[0] + 1:
                cur.append(it)
            else:
                if len(cur) >= min_run:
                    out[f"{day}_{cur[0][0]:04d}"] = [r for _, r in cur]
                cur = [it]
        if len(cur) >= min_run:
            out[f"{day}_{cur[0][0]:04d}"] = [r for _, r in cur]
    return out


def post_series(port, recs, min_volume_ml):
    """The daemon's masks, (n, 3, H, W) bool, in the order of recs."""
    b = uuid.uuid4().hex
    body = b""
    for r in recs:
        with open(r["path"], "rb") as f:
            body += (f'--{b}\r\nContent-Disposition: form-data; name="file"; '
                     f'filename="{os.path.basename(r["path"])}"\r\nContent-Type: image/png\r\n\r\n'
                     ).encode() + f.read() + b"\r\n"
    body += f"--{b}--\r\n".encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/series?min_volume_ml={min_volume_ml}",
                                 data=body, headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    with urllib.request.urlopen(req, timeout=3600) as resp:
        doc = json.load(resp)
    h, w = doc["height"], doc["width"]
    return np.stack([np.stack([rle_decode(s["masks"][c], h, w).astype(bool) for c in CLASSES])
                     for s in doc["slices"]]), doc["cleanup"]["components_removed"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the segd executable")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "uwmgi"))
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--min-run", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    _, md = read_safetensors(args.weights)
    recs = unseen_records(dataset.discover(args.data), md)
    series = runs(recs, args.min_run)
    cases = sorted({rs[0]["case"] for rs in series.values()})
    print(f"{len(series)} runs ({sum(len(v) for v in series.values())} slices) of "
          f"{len(cases)} unseen patients: {', '.join(series)}", flush=True)
    port = free_port()
    proc = subprocess.Popen([args.bin, "serve", "--bind", "127.0.0.1", "--port", str(port),
                             "--weights", args.weights, "--workers", "1", "--worker-threads",
                             str(args.threads), "--access-log", "off", "--request-timeout", "3600"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
        res = {v: [] for v in VOLUMES_ML}
        removed = {v: {} for v in VOLUMES_ML}
        t0 = time.time()
        for name, rs in series.items():
            gt = np.stack([dataset.load_masks(r).astype(bool) for r in rs])
            for v in VOLUMES_ML:
                pred, rem = post_series(port, rs, v)
                removed[v][name] = rem
                for k, r in enumerate(rs):
                    for c, organ in enumerate(CLASSES):
                        p, g = pred[k, c], gt[k, c]
                        s = int(p.sum()) + int(g.sum())
                        res[v].append((r["case"], organ,
                                       None if s == 0 else 2.0 * np.logical_and(p, g).sum() / s))
            print(f"{name}: {len(rs)} slices, {len(VOLUMES_ML)} volumes ({time.time() - t0:.0f}s)",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    def choose(cs):
        return max(VOLUMES_ML, key=lambda v: (round(figure(res[v], cs)[0], 12), -v))

    nested_rows, picks = [], {}
    for case in cases:
        pick = choose(set(cases) - {case})
        picks[case] = pick
        nested_rows += [row for row in res[pick] if row[0] == case]
    nested, nested_per = figure(nested_rows, set(cases))
    chosen = choose(set(cases))
    table = {str(v): dict(zip(("mean", "per_organ"), figure(res[v], set(cases)))) for v in VOLUMES_ML}
    out = {"weights": os.path.basename(args.weights), "series": {k: len(v) for k, v in series.items()},
           "patients": cases, "grid_ml": list(VOLUMES_ML), "by_volume": table,
           "components_removed": {str(v): removed[v] for v in VOLUMES_ML},
           "nested": {"mean": nested, "per_organ": nested_per, "picks": picks},
           "chosen_ml": chosen, "chosen_optimistic": table[str(chosen)]["mean"],
           "off": table["0.0"]["mean"]}
    for v in VOLUMES_ML:
        print(f"min volume {v:5.2f} mL: mean Dice {table[str(v)]['mean']:.4f} "
              f"{ {o: round(d, 4) for o, d in table[str(v)]['per_organ'].items()} }")
    print(f"nested (leave one patient out): {nested:.4f} (picks {picks}); off: {out['off']:.4f}; "
          f"chosen {chosen} mL (optimistic {out['chosen_optimistic']:.4f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
