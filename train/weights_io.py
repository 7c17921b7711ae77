"""The one reader and writer of segd's weights files (safetensors) and the
one layout of their metadata: what train.py and export.py write and what
evaluate.py, predict.py, the tests and the benchmarks read.

Layout (the safetensors format): u64 little-endian header length N, N bytes
of JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}},
then the raw little-endian F32 tensors, each 64-byte aligned.  Metadata
values are strings (the format's rule); nested values are JSON text.
"tensor_sha256" is the hex SHA-256 of the data section (every byte after
the header, padding included): the C loader refuses a file whose data does
not hash to it, so that a flipped byte is caught by name, not only as a
different file sha256 (files exported before it load with a warning).

Use: export_model(model, path, extra_metadata), load_model(path),
read_safetensors(path); data_metadata() for the "data" entry.
"""
import hashlib
import json
import os
import struct
import subprocess
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import CLASSES, UNet3Plus  # noqa: E402
from preprocess import policy_for_size  # noqa: E402

FORMAT = "segd-unet3p-v1"
ALIGN = 64


def git_commit():
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            stderr=subprocess.DEVNULL).decode().strip()
    except Exception:
        return "unknown"


def inference_tensors(model):
    """state_dict entries the engine needs: F32 only, no deep-supervision
    heads (training only) and no BN step counters."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("ds.") or k.endswith("num_batches_tracked"):
            continue
        out[k] = v.detach().cpu().float().contiguous()
    return out


def build_metadata(model, extra=None, size=256, policy=None):
    """size: the grid (pixels) the network was trained on; the engine runs it
    there.  policy: the preprocessing it trained with (fit.policy_of; default
    preprocess.DEFAULT_POLICY), recorded at that grid."""
    md = {
        "format": FORMAT,
        "architecture": "unet3plus",
        "name": f"unet3p-{model.width}",
        "width": str(model.width),
        "in_channels": str(model.in_channels),
        "classes": json.dumps(list(CLASSES)),
        "preprocess": json.dumps(dict(policy or policy_for_size(size), input_size=[int(size), int(size)])),
        "threshold": "0.5",
        "presence_threshold": "0.5",
        "bn_eps": "1e-05",
        "git_commit": git_commit(),
    }
    for k, v in (extra or {}).items():
        md[k] = v if isinstance(v, str) else json.dumps(v)
    return md


TENSOR_SHA256 = "tensor_sha256"


def write_safetensors(tensors, metadata, path):
    """Write PATH (atomically, through PATH.tmp) and return its sha256 hex.
    tensors: {name: torch.Tensor or numpy array}, stored as F32 (so the
    output of read_safetensors goes back unchanged: a new metadata dict over
    the same tensors); metadata: {str: str}, tensor_sha256 is recomputed."""
    header = {"__metadata__": dict(metadata)}
    off = 0
    blobs = []
    for name in sorted(tensors):
        t = tensors[name]
        a = (t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t)).astype("<f4", copy=False)
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        pad = (-len(b)) % ALIGN
        blobs.append(b + b"\0" * pad)
        off += len(b) + pad
    data = hashlib.sha256()
    for b in blobs:
        data.update(b)
    header["__metadata__"][TENSOR_SHA256] = data.hexdigest()
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((-(8 + len(hj))) % ALIGN)  # data starts 64-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_model(model, path, extra=None, size=256, policy=None):
    return write_safetensors(inference_tensors(model), build_metadata(model, extra, size, policy), path)


def read_safetensors(path):
    """(tensors dict name->np.ndarray, metadata dict); used by tests and
    tools.  Raises ValueError when the data section does not match the
    file's tensor_sha256 (as the C loader refuses it)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    md = header.pop("__metadata__", {})
    want = md.get(TENSOR_SHA256)
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise ValueError(f"{path}: tensor data checksum mismatch: {TENSOR_SHA256} is {want[:16]}..., "
                         f"the data section hashes to {hashlib.sha256(data).hexdigest()[:16]}...")
    out = {}
    for k, v in header.items():
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(data[s:e], dtype="<f4").reshape(v["shape"])
    return out, md


def load_model(path):
    """Rebuild an eval-mode UNet3Plus from an exported file."""
    tensors, md = read_safetensors(path)
    model = UNet3Plus(width=int(md["width"]), in_channels=int(md["in_channels"]),
                      n_classes=len(json.loads(md["classes"])))
    sd = model.state_dict()
    for k in sd:
        if k in tensors:
            sd[k] = torch.from_numpy(tensors[k].copy())
    model.load_state_dict(sd)
    model.eval()
    return model, md


def data_metadata(recs, train_slices, val_slices, excluded_cases=()):
    """The "data" entry of the metadata, in its one layout: slices with
    images, slices and cases per group, how many slices trained and how many
    validated, and the cases left out (when any)."""
    import dataset
    md = {"slices_with_images": len(recs), "groups": dataset.summarise(recs),
          "train_slices": train_slices, "val_slices": val_slices}
    if excluded_cases:
        md["excluded_cases"] = sorted(excluded_cases)
    return md
