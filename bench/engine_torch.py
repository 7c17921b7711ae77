"""PyTorch side of bench/engine: export ONNX, time the tuned PyTorch forward.

  engine_torch.py export WEIGHTS OUT.onnx SIZE [BATCH]
  engine_torch.py time WEIGHTS ITERS SLICE.png...   -> JSON line per slice
"""
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
from weights_io import load_model  # noqa: E402
from preprocess import load_png, to_model_input  # noqa: E402


def main():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    cmd, weights = sys.argv[1], sys.argv[2]
    model, md = load_model(weights)
    if cmd == "export":
        size = int(sys.argv[4])
        # fixed shapes (ONNX Runtime plans best for them; a dynamic batch
        # axis made its batch-1 forward about 30 % slower here): one file
        # per batch size bench/engine runs
        batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1
        x = torch.rand(batch, 1, size, size)
        torch.onnx.export(model, x, sys.argv[3], input_names=["image"],
                          output_names=["logits", "presence"], opset_version=13)
        return
    iters = int(sys.argv[3])
    # "tuned": the faster of the two memory formats on this build of torch
    # (channels_last helps training here but not always inference)
    for path in sys.argv[4:]:
        best = {}
        for fmt in (torch.contiguous_format, torch.channels_last):
            m = model.to(memory_format=fmt)
            x = to_model_input(load_png(path)).contiguous(memory_format=fmt)
            times = []
            with torch.no_grad():
                for i in range(iters + 3):
                    t = time.perf_counter()
                    m(x)
                    if i >= 3:
                        times.append((time.perf_counter() - t) * 1e3)
            best[str(fmt).split(".")[-1]] = statistics.median(times)
        fmt = min(best, key=best.get)
        print(json.dumps({"slice": os.path.basename(path), "median_ms": best[fmt], "format": fmt,
                          "all": best}))


if __name__ == "__main__":
    main()
