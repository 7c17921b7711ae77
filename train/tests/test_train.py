"""Unit tests of the training pipeline: data, RLE, model shapes, export
round trip, a two-step training run, and the daemon/PyTorch evaluation
agreement."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import HELDOUT, ROOT, TRAIN, shipped_weights
sys.path.insert(0, os.path.join(ROOT, "tests", "hardening"))
import segdtest  # noqa: E402  the daemon harness of every Python test
import dataset
import evaluate
from weights_io import export_model, load_model, read_safetensors
from model import CLASSES, UNet3Plus
from preprocess import (load_png, normalise, normalise_percentile, rle_decode, rle_encode,
                        to_model_input)

PY = sys.executable


def test_rle_round_trip_random():
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (3, 7), (31, 17), (266, 266)]:
        m = (rng.random((h, w)) > 0.7).astype(np.uint8)
        assert (rle_decode(rle_encode(m), h, w) == m).all()
    assert rle_encode(np.zeros((4, 4))) == ""
    assert rle_encode(np.ones((2, 3))) == "1 6"
    with pytest.raises(ValueError):
        rle_decode("5 10", 2, 2)


def test_rle_row_major_over_the_image():
    """Real train.csv rows (tests/data/heldout/labels.csv) decoded over their
    slices: each re-encodes to the identical string, and row-major order puts
    the organ where the image shows the body.  On the 360x310 slices a
    column-major reading of the same string (pixel p at column (p-1) div H,
    row (p-1) mod H) puts it elsewhere: the share of organ pixels on the
    body (brighter than 15% of the 99th percentile) is at least 0.6 and
    clearly above the column-major share, for every organ of every slice."""
    recs = [r for r in dataset.discover_folder(HELDOUT) if (r["width"], r["height"]) == (360, 310)]
    seen = 0
    for r in recs:
        img = load_png(r["path"])
        assert img.shape == (r["height"], r["width"])
        body = img > 0.15 * np.percentile(img, 99)
        for rle in r["rle"]:
            if not rle:
                continue
            m = rle_decode(rle, r["height"], r["width"]).astype(bool)
            assert rle_encode(m) == rle
            col = rle_decode(rle, r["width"], r["height"]).T.astype(bool)
            row_share, col_share = body[m].mean(), body[col].mean()
            assert row_share >= 0.6 and row_share > col_share + 0.05, (r["id"], row_share, col_share)
            seen += 1
    assert seen >= 8


def test_rle_round_trip_on_train_csv(data_root):
    """Every trusted train.csv row decodes over its slice's native grid and
    re-encodes to the identical string."""
    recs = {r["id"]: r for r in dataset.discover(data_root)}
    seen = 0
    with open(os.path.join(data_root, "train.csv"), newline="") as f:
        for row in csv.DictReader(f):
            r = recs.get(row["id"])
            if r is None or not row["segmentation"] or r["group"] == "derived8-gif":
                continue
            m = rle_decode(row["segmentation"], r["height"], r["width"])
            assert rle_encode(m) == row["segmentation"]
            seen += 1
    assert seen >= 30


def test_dataset_and_split(data_root):
    recs = dataset.discover(data_root)
    assert len(recs) > 0
    for r in recs[:20]:
        img = load_png(r["path"])
        assert img.shape == (r["height"], r["width"])
        assert dataset.load_masks(r).shape == (3, r["height"], r["width"])
    split = dataset.make_split(recs, seed=42)
    assert not set(split["train_cases"]) & set(split["val_cases"])
    gif_cases = {r["case"] for r in recs if r["group"] in dataset.UNTRUSTED_FOR_EVAL}
    assert not gif_cases & set(split["val_cases"])
    assert dataset.make_split(recs, seed=42) == split  # deterministic
    with open(os.path.join(TRAIN, "split.json")) as f:
        shipped = json.load(f)
    assert set(shipped["val_cases"]) <= {r["case"] for r in recs}


@pytest.mark.parametrize("h,w", [(64, 64), (37, 53), (266, 266), (310, 360), (17, 9)])
def test_model_shapes_odd_sizes(h, w):
    torch.manual_seed(0)
    m = UNet3Plus(width=4).eval()
    x = torch.rand(1, 1, h, w)
    logits, pres = m(x)
    assert logits.shape == (1, 3, h, w)
    assert pres.shape == (1, 3)
    logits, pres, aux = m.train()(x, deep_supervision=True)
    assert len(aux) == 4 and all(a.shape == (1, 3, h, w) for a in aux)


def test_export_import_round_trip(tmp_path):
    torch.manual_seed(1)
    m = UNet3Plus(width=4)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    m.eval()
    p = str(tmp_path / "w4.safetensors")
    export_model(m, p, {"validation": {"mean": 0.5}})
    tensors, md = read_safetensors(p)
    assert md["width"] == "4" and json.loads(md["classes"]) == list(CLASSES)
    assert not any(k.startswith("ds.") for k in tensors)
    with open(p, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
    assert (8 + n) % 64 == 0
    m2, _ = load_model(p)
    x = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        a, b = m(x), m2(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_export_tensor_checksum(tmp_path):
    """issue 11 item 13: the exporter records tensor_sha256 (SHA-256 of the
    data section); a flipped data byte is refused by read_safetensors and
    by the C loader (segd infer), naming the mismatch."""
    import hashlib
    torch.manual_seed(2)
    m = UNet3Plus(width=4).eval()
    p = str(tmp_path / "w4.safetensors")
    export_model(m, p)
    with open(p, "rb") as f:
        raw = bytearray(f.read())
    n = int.from_bytes(raw[:8], "little")
    md = json.loads(raw[8:8 + n])["__metadata__"]
    assert md["tensor_sha256"] == hashlib.sha256(bytes(raw[8 + n:])).hexdigest()
    read_safetensors(p)  # intact: no error
    raw[8 + n + (len(raw) - 8 - n) // 2] ^= 0x01
    bad = str(tmp_path / "w4-flipped.safetensors")
    with open(bad, "wb") as f:
        f.write(raw)
    with pytest.raises(ValueError, match="tensor data checksum mismatch"):
        read_safetensors(bad)
    binary = os.environ.get("SEGD_BIN", os.path.join(ROOT, "build", "segd"))
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no segd binary at {binary} (set SEGD_BIN)")
    png = os.path.join(ROOT, "tests", "data", "synthetic-37x53-grey8.png")
    ok = subprocess.run([binary, "infer", "--weights", p, png], capture_output=True, timeout=120)
    assert ok.returncode == 0 and b"tensor_sha256" not in ok.stderr, ok.stderr
    r = subprocess.run([binary, "infer", "--weights", bad, png], capture_output=True, timeout=120)
    assert r.returncode != 0 and b"tensor data checksum mismatch" in r.stderr, r.stderr


def test_preprocess_minmax():
    img = np.array([[0, 10], [20, 40]], dtype=np.float32)
    assert np.allclose(normalise(img), img / 40)
    assert (normalise(np.full((3, 3), 7.0)) == 0).all()
    assert to_model_input(np.random.rand(31, 45).astype(np.float32)).shape == (1, 1, 256, 256)


def test_preprocess_percentile():
    """Order statistics of rank floor/ceil((n-1) p / 100), clipped to [0,1];
    invariant to bit depth (linear rescaling) and to a window clipped at the
    normalisation's own percentiles; minmax where they coincide."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4000, (53, 37)).astype(np.float32)
    img[0, 0] = 60000  # one outlier does not move the scale
    n = img.size
    s = np.sort(img.reshape(-1))
    lo, hi = s[(n - 1) // 100], s[-(-(n - 1) * 99 // 100)]
    got = normalise_percentile(img)
    assert np.array_equal(got, np.clip((img - lo) / np.float32(hi - lo), 0, 1).astype(np.float32))
    assert np.allclose(normalise_percentile(img * 16.0), got, atol=1e-6)
    assert np.allclose(normalise_percentile(np.clip(img, lo, hi)), got, atol=1e-6)
    sparse = np.zeros((10, 10), np.float32)
    sparse[5, 5] = 9.0
    assert np.array_equal(normalise_percentile(sparse), sparse / 9.0)
    assert (normalise_percentile(np.full((4, 4), 3.0)) == 0).all()


def run_train_smoke(data_root, out, *flags):
    """train.py at width 4, 64 px into out with flags; asserts it succeeded."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="4294967296", MALLOC_TRIM_THRESHOLD_="4294967296")
    r = subprocess.run([PY, os.path.join(TRAIN, "train.py"), "--data", data_root, "--size", "64",
                        "--width", "4", "--out", str(out), *flags], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def test_preprocess_histogram_match():
    """Mid-ranks (ties share their mean rank) through the reference curve;
    blind to increasing grey maps (gamma, bit depth, window) up to ties;
    the training batch version equals it; the reference is non-decreasing."""
    import fit
    from preprocess import mid_ranks, normalise_histogram, quantile_curve, reference_quantiles
    img = np.array([[0, 5, 5], [9, 0, 5]], dtype=np.float32)
    # sorted 0 0 5 5 5 9: mid-ranks 0.5, 3, 5 over n - 1 = 5
    assert np.array_equal(mid_ranks(img), np.array([[0.1, 0.6, 0.6], [1.0, 0.1, 0.6]]))
    assert np.array_equal(mid_ranks(np.full((1, 1), 3.0)), np.full((1, 1), 0.5))
    ref = [0.0, 0.1, 0.5, 1.0]  # knots at r = 0, 1/3, 2/3, 1
    assert np.allclose(quantile_curve(np.array([0.0, 1 / 6, 0.5, 5 / 6, 1.0]), ref),
                       [0.0, 0.05, 0.3, 0.75, 1.0])
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 4000, (41, 37)).astype(np.float32)
    got = normalise_histogram(raw, ref)
    assert got.dtype == np.float32 and got.min() >= 0 and got.max() <= 1
    mx = raw.max()
    for other in (raw * 16, np.round(mx * (raw / mx) ** 0.7), np.clip(raw, 100, 3900)):
        same = (raw > 100) & (raw < 3900)  # the window ties its tails (and its ends)
        assert np.abs(normalise_histogram(other, ref) - got)[same].max() < 2e-3
    batch = fit.histogram_match_batch(torch.from_numpy(np.stack([raw, raw * 0.5]))[:, None], ref)
    assert np.array_equal(batch[0, 0].numpy(), got) and np.array_equal(batch[1, 0].numpy(), got)
    q = reference_quantiles([raw, raw ** 2], k=11)
    assert len(q) == 11 and q[0] == 0.0 and q[-1] == 1.0 and all(a <= b for a, b in zip(q, q[1:]))


def test_histogram_match_training_is_recorded(data_root, tmp_path):
    """train.py --normalisation histogram_match trains with it and the file's
    preprocess metadata carries the normalisation and the reference of the
    training images, which the C engine then applies (golden-w4-hist)."""
    r = run_train_smoke(data_root, tmp_path / "h", "--batch", "2", "--steps", "1", "--max-slices", "4",
                        "--normalisation", "histogram_match")
    assert "normalisation histogram_match" in r.stdout
    _, md = read_safetensors(str(tmp_path / "h" / "unet3p-4.safetensors"))
    pp = json.loads(md["preprocess"])
    assert pp["normalisation"] == "histogram_match" and "percentiles" not in pp
    assert pp["input_size"] == [64, 64] and len(pp["reference_quantiles"]) == 101
    assert json.loads(md["training"])["recipe"]["normalisation"] == "histogram_match"
    assert "preprocess" not in json.loads(md["training"])
    # the checkpoint runs with it too (cv_choose, draw_contours, export);
    # one written before policies were recorded runs with the percentile one
    import fit
    _, ck = fit.load_checkpoint(str(tmp_path / "h" / "last.pt"))
    assert fit.checkpoint_policy(ck) == pp
    assert fit.checkpoint_policy(ck, 96) == dict(pp, input_size=[96, 96])
    assert fit.checkpoint_policy({"recipe": {"size": 64}})["normalisation"] == "percentile"
    # a fine-tune keeps the normalisation of the network it starts from
    assert fit.init_normalisation(str(tmp_path / "h" / "last.pt")) == "histogram_match"
    assert fit.init_normalisation(str(tmp_path / "h" / "unet3p-4.safetensors")) == "histogram_match"
    assert fit.init_normalisation(os.path.join(ROOT, "tests", "data", "golden-w4.safetensors")) == "minmax"


def test_fit_augment_ranges():
    """Augmentation keeps images in [0,1], masks in [0,1], presence binary."""
    import fit
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 32, 32)
    y = (torch.rand(4, 3, 32, 32) > 0.7).float()
    xa, ya, pres = fit.augment(x, y, torch.tensor([True, False, False, False]), gen)
    assert xa.shape == x.shape and ya.shape == y.shape and pres.shape == (4, 3)
    assert xa.min() >= 0 and xa.max() <= 1 and ya.min() >= 0 and ya.max() <= 1
    assert set(pres.unique().tolist()) <= {0.0, 1.0}


def test_augment_is_geometry_then_intensity():
    """augment() = augment_geometry then augment_intensity on one generator;
    views=2 (the consistency recipe) renders one warp twice."""
    import fit
    x = torch.rand(3, 1, 32, 32)
    y = (torch.rand(3, 3, 32, 32) > 0.7).float()
    gif = torch.tensor([True, False, False])
    xa, ya, pa = fit.augment(x.clone(), y.clone(), gif, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    xg, yg = fit.augment_geometry(x.clone(), y.clone(), gen)
    assert torch.equal(fit.augment_intensity(xg, gif, gen), xa) and torch.equal(yg, ya)
    assert torch.equal(fit.presence(yg), pa)
    # views=2: one warp, two intensity draws in order, masks repeated
    x2, y2, p2 = fit.augment(x.clone(), y.clone(), gif, torch.Generator().manual_seed(5), views=2)
    gen = torch.Generator().manual_seed(5)
    xg, yg = fit.augment_geometry(x.clone(), y.clone(), gen)
    first = fit.augment_intensity(xg.clone(), gif, gen)
    assert torch.equal(x2[:3], first) and torch.equal(x2[3:], fit.augment_intensity(xg, gif, gen))
    assert torch.equal(y2, torch.cat([yg, yg])) and p2.shape == (6, 3)


def test_consistency_loss_is_zero_only_when_the_views_agree():
    """fit.consistency_loss: 0 for identical views (also for soft, unsure
    probabilities and for both-empty masks), positive when they differ."""
    import fit
    logits = torch.randn(2, 3, 16, 16)
    plog = torch.randn(2, 3)
    same = fit.consistency_loss(torch.cat([logits, logits]), torch.cat([plog, plog]))
    assert abs(float(same)) < 1e-6
    empty = torch.full((2, 3, 16, 16), -30.0)
    assert abs(float(fit.consistency_loss(torch.cat([empty, empty]), torch.cat([plog, plog])))) < 1e-6
    other = fit.consistency_loss(torch.cat([logits, -logits]), torch.cat([plog, plog]))
    assert float(other) > 0.1
    assert float(fit.consistency_loss(torch.cat([logits, logits]), torch.cat([plog, -plog]))) > 0


def test_consistency_training_runs_and_is_recorded(data_root, tmp_path):
    """train.py --consistency trains (a batch of 2 warped slices, each
    rendered twice) and records the weight in the exported recipe."""
    r = run_train_smoke(data_root, tmp_path / "c", "--batch", "4", "--steps", "2", "--max-slices", "6",
                        "--consistency", "0.5")
    assert "step 2/2" in r.stdout
    _, md = read_safetensors(str(tmp_path / "c" / "unet3p-4.safetensors"))
    assert json.loads(md["training"])["recipe"]["consistency"] == 0.5


def test_cv_folds_by_patient(data_root):
    """Folds partition the trustworthy patients; GIF patients never tested."""
    import cv
    recs = dataset.discover(data_root)
    folds = cv.make_folds(recs, 4)
    flat = [c for f in folds for c in f]
    trusted = {r["case"] for r in recs if r["group"] not in dataset.UNTRUSTED_FOR_EVAL}
    assert sorted(flat) == sorted(trusted) and len(flat) == len(set(flat))
    assert all(folds)
    gif = {r["case"] for r in recs if r["group"] in dataset.UNTRUSTED_FOR_EVAL} - trusted
    assert not gif & set(flat)


def test_export_runs_at_the_checkpoints_grid(tmp_path):
    """train/export.py: a checkpoint trained at 96 px exports a file the
    engine runs at 96 px (before 2026-12-01 every export said 256)."""
    ck = str(tmp_path / "last.pt")
    torch.save({"model": UNet3Plus(width=4).state_dict(), "width": 4, "recipe": {"size": 96}}, ck)
    out = str(tmp_path / "w.safetensors")
    r = subprocess.run([PY, os.path.join(TRAIN, "export.py"), ck, out], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(read_safetensors(out)[1]["preprocess"])["input_size"] == [96, 96]


def test_cv_judges_at_the_input_size(data_root, tmp_path, monkeypatch):
    """A fold's network is judged at --input-size, the grid an exported
    file runs at; by default at the recipe's training grid (here 64 px)."""
    import types
    import cv
    import fit
    model = UNet3Plus(width=4).eval()
    grids = []
    model.register_forward_pre_hook(lambda mod, inp: grids.append(tuple(inp[0].shape[-2:])))
    monkeypatch.setattr(fit, "fit", lambda recs, recipe, out, **kw: (model, {"steps": 0, "seconds": 0.0,
                                                                               "preprocess": fit.policy_of(recipe, recs)}))
    recs = [r for r in dataset.discover(data_root) if r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    case = recs[0]["case"]
    recs = [r for r in recs if r["case"] == case][:2] + [r for r in recs if r["case"] != case][:2]
    args = types.SimpleNamespace(runs=str(tmp_path), seed=0, max_steps=1, out=str(tmp_path), input_size=80,
                                 tta_gamma=None, init_runs=None, init=None)
    res = cv.run_fold(0, [[case]], recs, args, dict(fit.RECIPE, size=64))
    assert res["input_size"] == [80, 80] and len(res["slices"]) == 2
    assert grids == [(80, 80)] * 2
    args.input_size = None
    assert cv.run_fold(0, [[case]], recs, args, dict(fit.RECIPE, size=64))["input_size"] == [64, 64]
    assert grids[2:] == [(64, 64)] * 2
    args.tta_gamma = [0.75, 1.0, 4 / 3]  # one forward per power, recorded in the fold's result
    assert cv.run_fold(0, [[case]], recs, args, dict(fit.RECIPE, size=64))["tta_gamma"] == args.tta_gamma
    assert grids[4:] == [(64, 64)] * 6


def test_cv_fine_tunes_each_fold_from_its_own_network(data_root, tmp_path, monkeypatch):
    """cv.py --init-runs: fold k's fine-tune starts from INIT/foldK/last.pt
    (recorded with its sha256) and fit starts from that checkpoint's
    weights; the fine-tune trains on fold k's training patients only."""
    import hashlib
    import types
    import cv
    import fit
    init = tmp_path / "init"
    for k in range(2):
        (init / f"fold{k}").mkdir(parents=True)
        torch.manual_seed(k)
        torch.save({"model": UNet3Plus(width=4).state_dict(), "width": 4, "recipe": {}, "step": 1},
                   str(init / f"fold{k}" / "last.pt"))
    seen = []
    real_fit = fit.fit
    monkeypatch.setattr(fit, "fit", lambda recs, recipe, out, **kw: (
        seen.append((recipe, {r["case"] for r in recs}))
        or (UNet3Plus(width=4).eval(), {"seconds": 0.0, "preprocess": fit.policy_of(recipe, recs)})))
    recs = [r for r in dataset.discover(data_root) if r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    cases = sorted({r["case"] for r in recs})[:2]
    recs = [r for r in recs if r["case"] == cases[0]][:3] + [r for r in recs if r["case"] == cases[1]][:3]
    args = types.SimpleNamespace(runs=str(tmp_path / "runs"), seed=2, max_steps=1, out=str(tmp_path),
                                 input_size=64, tta_gamma=None, init_runs=str(init), normalisation=None,
                                 init=None)
    folds = [[cases[0]], [cases[1]]]
    for k in range(2):
        cv.run_fold(k, folds, recs, args, dict(fit.RECIPE, width=4, size=64, steps=1, lr=1e-4))
        path = str(init / f"fold{k}" / "last.pt")
        assert seen[k][0]["init"] == path
        assert seen[k][0]["init_sha256"] == hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert folds[k][0] not in seen[k][1]
        assert seen[k][0]["normalisation"] == "percentile"  # the start's (it names none)
    # fit itself: with lr 0 one step leaves the convolutions as the checkpoint had them
    start = torch.load(str(init / "fold1" / "last.pt"), weights_only=False)["model"]
    train = [r for r in recs if r["case"] == cases[0]][:2]
    model, _ = real_fit(train, dict(fit.RECIPE, width=4, size=64, steps=1, lr=0.0, batch=2,
                                    init=str(init / "fold1" / "last.pt")), str(tmp_path / "ft"),
                        log=lambda m: None)
    got = model.state_dict()
    convs = [k for k in start if k.endswith("conv.weight")]
    assert convs and all(torch.equal(got[k].cpu(), start[k]) for k in convs)


def test_cv_refuses_to_mix_recipes_in_one_table(data_root, tmp_path):
    """cv.py skips a fold already done only if it was made with the same
    recipe (a recipe without "normalisation" is a percentile one)."""
    import cv
    import fit
    assert cv.same_recipe({"steps": 1}, {"steps": 1, "normalisation": "percentile"})
    assert not cv.same_recipe({"steps": 1}, {"steps": 1, "normalisation": "histogram_match"})
    with open(tmp_path / "fold0.json", "w") as f:  # a fold of the percentile table
        json.dump({"recipe": {k: v for k, v in fit.RECIPE.items() if k != "normalisation"}}, f)
    r = subprocess.run([PY, os.path.join(TRAIN, "cv.py"), "--data", data_root, "--out", str(tmp_path),
                        "--runs", str(tmp_path / "runs"), "--folds", "0"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "another recipe" in r.stderr


def test_infer_grid_finds_each_imaged_case_days_grid(data_root):
    """synth.infer_grid, given only a case-day's RLE strings from train.csv,
    names the grid its images have, for every case-day with images stored
    at their native grid (the GIF group is stored at 224 px)."""
    import synth
    labels = dataset.read_labels(data_root)
    grids = {r["caseday"]: (r["height"], r["width"]) for r in dataset.discover(data_root)
             if r["group"] not in dataset.UNTRUSTED_FOR_EVAL}
    assert len({g for g in grids.values()}) >= 2  # the data has more than one grid to tell apart
    for caseday, grid in grids.items():
        rles = [s for sid, organs in labels.items() if sid.startswith(caseday + "_slice_")
                for s in organs.values() if s]
        assert synth.infer_grid(rles) == grid, caseday
    with pytest.raises(ValueError):
        synth.infer_grid([f"{400 * 400} 2"])


def test_label_records_leave_out_the_patients_with_images(data_root):
    """The pre-training's maps come from patients without images (minus
    those excluded); max_maps caps them evenly; none left is an error."""
    import synth
    imaged = {r["case"] for r in dataset.discover(data_root)}
    recs = synth.label_records(data_root, max_maps=500)
    cases = {r["case"] for r in recs}
    assert 450 <= len(recs) <= 500 and cases and not cases & imaged
    some = sorted(cases)[:3]
    fewer = synth.label_records(data_root, exclude_cases=some, max_maps=500)
    assert not {r["case"] for r in fewer} & set(some)
    assert all(r["group"] == synth.GROUP and dataset.load_masks(r).shape == (3, r["height"], r["width"])
               for r in recs[:50])
    with pytest.raises(SystemExit):
        synth.label_records(data_root, exclude_cases=cases | imaged, with_images=True)


def test_render_draws_each_organ_as_a_region_on_a_dark_background():
    """synth.render: one grey image per map in [0, 1], the same for the
    same generator state; the corners (outside every body) are dark air;
    an organ is a region of one random grey value (its interior varies by
    the texture only), and its grey value changes from draw to draw."""
    import synth
    s = 96
    y = torch.zeros(4, 3, s, s)
    y[:, 2, 30:60, 35:70] = 1.0  # a stomach-sized block
    x = synth.render(y, torch.Generator().manual_seed(3))
    assert x.shape == (4, 1, s, s) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, synth.render(y, torch.Generator().manual_seed(3)))
    corners = torch.cat([x[:, 0, :6, :6], x[:, 0, :6, -6:], x[:, 0, -6:, :6], x[:, 0, -6:, -6:]], 1)
    assert float(corners.mean()) < 0.2
    means = []
    for seed in range(8):
        x = synth.render(y, torch.Generator().manual_seed(seed))
        inside = x[:, 0, 34:56, 39:66]
        assert float(inside.std((1, 2)).max()) < 0.1
        means += inside.mean((1, 2)).tolist()
    assert max(means) - min(means) > 0.3


def test_pretrain_then_cv_init(data_root, tmp_path):
    """train/pretrain.py trains on rendered label maps and records the
    patients it used; cv.py --init starts a fold from it, and refuses a
    start that trained on the fold's test patients."""
    out = tmp_path / "pre"
    r = subprocess.run([PY, os.path.join(TRAIN, "pretrain.py"), "--data", data_root, "--out", str(out),
                        "--steps", "20", "--max-steps", "2", "--max-maps", "40"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ck = torch.load(str(out / "last.pt"), weights_only=False)
    imaged = {r["case"] for r in dataset.discover(data_root)}
    assert ck["recipe"]["synthetic"] and ck["step"] == 2
    assert ck["train_cases"] and not set(ck["train_cases"]) & imaged
    assert ck["preprocess"]["normalisation"] == "histogram_match"
    r = subprocess.run([PY, os.path.join(TRAIN, "pretrain.py"), "--data", data_root, "--out", str(out), "--judge"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    judged = json.loads(r.stdout)
    assert judged["slices"] == sum(1 for r in dataset.discover(data_root)
                                   if r["group"] not in dataset.UNTRUSTED_FOR_EVAL)
    cv_cmd = [PY, os.path.join(TRAIN, "cv.py"), "--data", data_root, "--out", str(tmp_path / "cv"),
              "--runs", str(tmp_path / "runs"), "--folds", "0", "--steps", "20", "--max-steps", "1"]
    r = subprocess.run(cv_cmd + ["--init", str(out / "last.pt")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "initialised from" in r.stdout, r.stderr
    tuned = torch.load(str(tmp_path / "runs" / "fold0" / "last.pt"), weights_only=False)
    assert set(ck["train_cases"]) < set(tuned["train_cases"])  # its start's patients and its own
    with open(tmp_path / "cv" / "folds.json") as f:
        test_case = json.load(f)["folds"][0][0]
    ck["train_cases"] = ck["train_cases"] + [test_case]
    torch.save(ck, str(tmp_path / "seen.pt"))
    r = subprocess.run(cv_cmd + ["--init", str(tmp_path / "seen.pt")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "test patients" in r.stderr


def test_cv_paired_compares_the_same_slices(tmp_path):
    """train/cv_paired.py: per fold and pooled figures of two judgings,
    their difference, and a refusal when the slices differ."""
    import cv_paired

    def doc(k, dices):
        organs = lambda d: {o: {"dice": d, "both_empty": d is None, "hd95": None} for o in CLASSES}  # noqa: E731
        return {"fold": k, "slices": [{"id": f"s{k}{i}", "organs": organs(d)} for i, d in enumerate(dices)]}
    a = {0: doc(0, [0.5, None]), 1: doc(1, [0.2, 0.4])}
    b = {0: doc(0, [0.6, None]), 1: doc(1, [0.2, 0.1])}
    res = cv_paired.compare(a, b)
    assert [round(r["other"] - r["base"], 6) for r in res["folds"]] == [0.1, -0.15]
    assert round(res["pooled"]["base"], 6) == round((0.5 + 0.2 + 0.4) / 3, 6)
    assert round(res["pooled"]["other"], 6) == round((0.6 + 0.2 + 0.1) / 3, 6)
    assert res["moved"] == {"better": 3, "worse": 3}
    b[1]["slices"][1]["id"] = "other"
    with pytest.raises(SystemExit):
        cv_paired.compare(a, b)
    with pytest.raises(SystemExit):
        cv_paired.compare(a, {0: b[0]})


def test_grid_probs_averages_the_tta_powers():
    """preprocess.grid_probs: one plain run without tta_gamma (and with
    [1]); with powers, the mean of the sigmoids of the runs on x ** g, in
    the list's order; lists the engine refuses raise ValueError."""
    from preprocess import DEFAULT_POLICY, grid_probs, tta_gammas
    torch.manual_seed(0)
    model = UNet3Plus(width=4).eval()
    img = np.random.default_rng(1).random((37, 41)).astype(np.float32) * 4000
    policy = dict(DEFAULT_POLICY, input_size=[48, 48])
    x = to_model_input(img, policy)
    with torch.no_grad():
        runs = {g: [torch.sigmoid(t)[0] for t in model(x if g == 1 else x ** g)] for g in (0.75, 1.0, 1.5)}
    p, q = grid_probs(model, img, policy)
    assert torch.equal(p, runs[1.0][0]) and torch.equal(q, runs[1.0][1])
    p1, q1 = grid_probs(model, img, dict(policy, tta_gamma=[1]))
    assert torch.equal(p1, p) and torch.equal(q1, q)
    pt, qt = grid_probs(model, img, dict(policy, tta_gamma=[0.75, 1, 1.5]))
    assert torch.equal(pt, (runs[0.75][0] + runs[1.0][0] + runs[1.5][0]) / 3)
    assert torch.equal(qt, (runs[0.75][1] + runs[1.0][1] + runs[1.5][1]) / 3)
    assert not torch.equal(pt, p)
    for bad in ([], [1, 0], [1, 20], ["1"], 0.75, [True], [1] * 9):
        with pytest.raises(ValueError):
            tta_gammas({"tta_gamma": bad})


def test_two_step_training_smoke(data_root, tmp_path):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="4294967296", MALLOC_TRIM_THRESHOLD_="4294967296")
    out = tmp_path / "run"
    cmd = [PY, os.path.join(TRAIN, "train.py"), "--data", data_root, "--width", "4", "--size", "64",
           "--batch", "2", "--steps", "3", "--max-slices", "8", "--max-steps", "2",
           "--out", str(out), "--device", "cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "step 2/3" in r.stdout
    assert (out / "last.pt").exists() and (out / "unet3p-4.safetensors").exists()
    _, md = read_safetensors(str(out / "unet3p-4.safetensors"))
    assert json.loads(md["preprocess"])["input_size"] == [64, 64]  # by default the grid it trained at
    resume = [a for i, a in enumerate(cmd) if a != "--max-steps" and cmd[i - 1] != "--max-steps"]
    r = subprocess.run(resume + ["--resume", "--input-size", "96"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "resumed at step 2" in r.stdout and "step 3/3" in r.stdout
    _, md = read_safetensors(str(out / "unet3p-4.safetensors"))
    assert json.loads(md["preprocess"])["input_size"] == [96, 96]


def test_daemon_and_pytorch_evaluation_agree():
    """The held-out slices of tests/data/heldout (every clone has them)
    through a running segd give PyTorch's figures within 0.005 Dice per
    organ (they should be identical: same masks)."""
    binary = os.environ.get("SEGD_BIN", os.path.join(ROOT, "build", "segd"))
    weights = shipped_weights()
    if not os.path.exists(binary):
        pytest.skip(f"no segd binary at {binary} (set SEGD_BIN)")
    recs = dataset.discover_folder(HELDOUT)
    assert len(recs) >= 8
    torch.set_num_threads(2)
    ref = evaluate.evaluate(recs, evaluate.weights_predictor(weights))  # the file's policy and thresholds
    with segdtest.Daemon("--workers", "1", weights=weights, binary=binary, start_timeout=60) as d:
        got = evaluate.evaluate(recs, lambda r: evaluate.predict_server(d.url, r))
        d.stop(30)
    for c in CLASSES:
        assert abs(ref["organs"][c]["dice"] - got["organs"][c]["dice"]) <= 0.005, c
    assert abs(ref["mean_dice"] - got["mean_dice"]) <= 0.005


def test_thresholds_choice_never_sees_the_scored_patient():
    """train/thresholds.py: figures are means over organs of per-slice Dice
    (None rows ignored), and the pair chosen for a patient depends only on
    the other patients' rows."""
    import thresholds
    rows_a = [("p1", o, 0.9) for o in CLASSES] + [("p2", o, 0.1) for o in CLASSES]
    rows_b = [("p1", o, 0.2) for o in CLASSES] + [("p2", o, 0.8) for o in CLASSES] + [("p2", "stomach", None)]
    res = {(0.5, 0.5): rows_a, (0.2, 0.2): rows_b}
    mean, per = thresholds.figure(rows_b, {"p2"})
    assert mean == pytest.approx(0.8) and set(per) == set(CLASSES)
    assert thresholds.choose(res, {"p1"}) == (0.5, 0.5)
    assert thresholds.choose(res, {"p2"}) == (0.2, 0.2)
    # best on both pooled: (0.9 + 0.1) / 2 = 0.5 against (0.2 + 0.8) / 2 = 0.5: ties go to the larger pair
    assert thresholds.choose(res, {"p1", "p2"}) == (0.5, 0.5)


def test_cv_choose_picks_each_folds_thresholds_on_the_other_folds():
    """train/cv_choose.py: fold k's pair is the best on the other folds'
    patients, whatever fold k's own rows say."""
    import cv_choose
    # pair A is best on fold 0's patients, pair B on fold 1's and fold 2's
    a = [("p0", o, 0.9) for o in CLASSES] + [("p1", o, 0.2) for o in CLASSES] + [("p2", o, 0.3) for o in CLASSES]
    b = [("p0", o, 0.1) for o in CLASSES] + [("p1", o, 0.6) for o in CLASSES] + [("p2", o, 0.7) for o in CLASSES]
    res = {(0.5, 0.5): a, (0.2, 0.3): b}
    picks, rows = cv_choose.nested_choice(res, [{"p0"}, {"p1"}, {"p2"}])
    # fold 0 gets B (its own rows favour A); folds 1 and 2 get A, best on the other two folds
    assert picks == [(0.2, 0.3), (0.5, 0.5), (0.5, 0.5)]
    assert [r[0] for r in rows[0]] == ["p0"] * 3 and rows[0][0][2] == 0.1
    picks, _ = cv_choose.nested_choice(res, [{"p0", "p1"}, {"p2"}])
    assert picks == [(0.2, 0.3), (0.5, 0.5)]  # on p0+p1 A averages 0.55 against B's 0.35


def test_cv_choose_runs_on_fold_networks(data_root, tmp_path):
    """cv_choose.py end to end on two tiny fold networks: it refuses an
    unfinished run, then writes the table with a pick per fold."""
    import fit
    recs = [r for r in dataset.discover(data_root) if r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    count = {}
    for r in recs:
        count[r["case"]] = count.get(r["case"], 0) + 1
    small = sorted(count, key=lambda c: (count[c], c))[:2]
    recipe = dict(fit.RECIPE, width=4, size=64, steps=3)
    cvdir, runs = tmp_path / "cv", tmp_path / "runs"
    cvdir.mkdir()
    (cvdir / "folds.json").write_text(json.dumps({"k": 2, "folds": [[small[0]], [small[1]]]}))
    for k in range(2):
        (cvdir / f"fold{k}.json").write_text(json.dumps({"recipe": recipe}))
        torch.manual_seed(k)
        (runs / f"fold{k}").mkdir(parents=True)
        torch.save({"model": UNet3Plus(width=4).state_dict(), "recipe": recipe, "step": 3 - k, "width": 4},
                   str(runs / f"fold{k}" / "last.pt"))
    cmd = [PY, os.path.join(TRAIN, "cv_choose.py"), "--data", data_root, "--cv", str(cvdir), "--runs", str(runs)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "fold1/last.pt: step 2" in r.stderr
    ck = torch.load(str(runs / "fold1" / "last.pt"), weights_only=False)
    ck["step"] = 3
    torch.save(ck, str(runs / "fold1" / "last.pt"))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads((cvdir / "choose.json").read_text())
    assert doc["patients"] == sorted(small) and doc["slices"] == count[small[0]] + count[small[1]]
    assert len(doc["nested"]["folds"]) == 2 and (cvdir / "choose.md").exists()
    assert doc["fixed"]["input_size"] == 64 and doc["grid"]["input_size"] == [64, 192, 224, 256, 288]
    # carried over to a file trained at 256: the chosen grid's ratio to the recipe's 64 px
    src, dst = str(tmp_path / "w.safetensors"), str(tmp_path / "w-choice.safetensors")
    export_model(UNet3Plus(width=4).eval(), src)
    r = subprocess.run(cmd + ["--apply", src, dst], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    t0, _ = read_safetensors(src)
    t1, md = read_safetensors(dst)
    best = doc["chosen_on_all_folds"]
    grid = int(round(256 * best["input_size"] / 64 / 16)) * 16
    assert json.loads(md["preprocess"])["input_size"] == [grid, grid]
    assert md["threshold"] == str(best["threshold"]) and md["presence_threshold"] == str(best["presence_threshold"])
    assert json.loads(md["cv_choice"])["previous"]["input_size"] == [256, 256]
    assert all(np.array_equal(t0[k], t1[k]) for k in t0)


def test_fine_tune_records_its_start(data_root, tmp_path):
    """train.py --init starts from an exported file of the same width and
    records it (path and sha256) in the recipe of the file it exports; a
    file of another width is refused."""
    import hashlib
    from weights_io import read_safetensors
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="4294967296", MALLOC_TRIM_THRESHOLD_="4294967296")
    init = os.path.join(ROOT, "tests", "data", "golden-w4.safetensors")
    base = [PY, os.path.join(TRAIN, "train.py"), "--data", data_root, "--size", "64", "--batch", "2",
            "--steps", "1", "--max-slices", "4", "--device", "cpu", "--init", init]
    r = subprocess.run(base + ["--width", "4", "--out", str(tmp_path / "ft")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "initialised from tests/data/golden-w4.safetensors" in r.stdout
    _, md = read_safetensors(str(tmp_path / "ft" / "unet3p-4.safetensors"))
    recipe = json.loads(md["training"])["recipe"]
    with open(init, "rb") as f:
        assert recipe["init_sha256"] == hashlib.sha256(f.read()).hexdigest()
    r = subprocess.run(base + ["--width", "8", "--out", str(tmp_path / "bad")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "has width 4, the recipe 8" in r.stderr


def test_thresholds_write_chooses_on_the_unseen_patients(data_root, tmp_path):
    """train/thresholds.py --write: scored only on the patients the file's
    split never saw; the copy carries the all-patient pick, its provenance
    and the same tensors."""
    recs = [r for r in dataset.discover(data_root) if r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    unseen = ["case107", "case125", "case2"]  # 1-2 slices each: a quick run
    w, w2, js = (str(tmp_path / n) for n in ("w.safetensors", "w2.safetensors", "t.json"))
    torch.manual_seed(0)
    export_model(UNet3Plus(width=4).eval(), w, {"split": {"train_cases": sorted(
        {r["case"] for r in recs} - set(unseen)), "val_cases": []}}, size=64)
    r = subprocess.run([PY, os.path.join(TRAIN, "thresholds.py"), "--weights", w, "--data", data_root,
                        "--json", js, "--write", w2], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(open(js).read())
    assert doc["patients"] == unseen and doc["slices"] == sum(r["case"] in unseen for r in recs)
    assert set(doc["nested"]["picks_leaving_out"]) == set(unseen)
    t0, _ = read_safetensors(w)
    t1, md = read_safetensors(w2)
    assert all(np.array_equal(t0[k], t1[k]) for k in t0)
    assert float(md["threshold"]) == doc["chosen"]["threshold"]
    assert float(md["presence_threshold"]) == doc["chosen"]["presence_threshold"]
    assert json.loads(md["thresholds"])["patients"] == unseen


def test_draw_contours_runs_each_network_at_its_grid(data_root, tmp_path, monkeypatch):
    """train/draw_contours.py: a fold network runs at the grid it trained
    at (as cv.py judges it), a file as the engine runs it; one panel per
    slice; --weights or --cv is required."""
    import draw_contours
    from PIL import Image
    runs = tmp_path / "runs"
    (runs / "fold0").mkdir(parents=True)
    torch.save({"model": UNet3Plus(width=4).state_dict(), "width": 4, "recipe": {"size": 96}, "step": 1},
               str(runs / "fold0" / "last.pt"))
    recs = [r for r in dataset.discover(data_root) if r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    seen = []
    monkeypatch.setattr(draw_contours, "predict_record",
                        lambda model, rec, **kw: seen.append(kw["policy"]["input_size"]) or (None, None, None))
    draw_contours.fold_predictor(0, str(runs))(recs[0])
    assert seen == [[96, 96]]
    w, png = str(tmp_path / "w.safetensors"), str(tmp_path / "c.png")
    export_model(UNet3Plus(width=4).eval(), w, size=64)
    ids = [recs[0]["id"], recs[-1]["id"]]
    script = os.path.join(TRAIN, "draw_contours.py")
    r = subprocess.run([PY, script, "--data", data_root, "--weights", w, "--out", png] + ids,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    width = max(rec["width"] for rec in (recs[0], recs[-1])) * 2  # panels at scale 2, side by side
    assert Image.open(png).size[0] == 2 * width
    r = subprocess.run([PY, script, "--data", data_root, "--out", png] + ids, capture_output=True, text=True)
    assert r.returncode != 0 and "--weights FILE or --cv" in r.stderr


def test_record_figure_writes_the_twins_figure(tmp_path):
    """record_figure.py puts the named twin's pooled figure into the file's
    metadata, drops a copied cross_validation entry, keeps the tensors, and
    refuses an ambiguous or unknown twin."""
    import shutil
    from weights_io import read_safetensors
    w = tmp_path / "w.safetensors"
    shutil.copy(os.path.join(ROOT, "tests", "data", "golden-w4.safetensors"), w)
    row = lambda d: {c: {"dice": d, "hd95_mm": 10.0} for c in CLASSES}  # noqa: E731
    doc = {"cases": ["p1"], "slices": 3, "files": [
        {"weights": "a", "sha256": "aa11", "table": {"all": {"pooled": {**row(0.5), "mean_dice": 0.5}}}},
        {"weights": "b", "sha256": "bb22", "table": {"all": {"pooled": {**row(0.25), "mean_dice": 0.25}}}}]}
    cmp = tmp_path / "compare.json"
    cmp.write_text(json.dumps(doc))
    t0, _ = read_safetensors(str(w))
    script = os.path.join(TRAIN, "record_figure.py")
    r = subprocess.run([PY, script, str(w), str(cmp), "--twin", "bb"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    t1, md = read_safetensors(str(w))
    fig = json.loads(md["unseen_patients"])
    assert fig["mean_dice"] == 0.25 and fig["measured_with"] == "bb22" and fig["cases"] == ["p1"]
    assert fig["table"] == os.path.relpath(str(tmp_path / "compare.md"), ROOT)  # beside compare.json
    assert "cross_validation" not in md
    assert all(np.array_equal(t0[k], t1[k]) for k in t0)
    r = subprocess.run([PY, script, str(w), str(cmp), "--twin", "cc"], capture_output=True, text=True)
    assert r.returncode != 0 and "0 files match" in r.stderr


def test_record_figure_writes_the_bf16_measurement(tmp_path):
    """record_figure.py --bf16 writes precision_agreement.py's measurement
    as metadata bf16_agreement, only for the tensors it was made on."""
    import shutil
    from weights_io import read_safetensors, write_safetensors
    w = tmp_path / "w.safetensors"
    shutil.copy(os.path.join(ROOT, "tests", "data", "golden-w4.safetensors"), w)
    t, md = read_safetensors(str(w))  # golden-w4 predates tensor_sha256: export it again
    write_safetensors({k: torch.from_numpy(np.array(v)) for k, v in t.items()}, md, str(w))
    _, md = read_safetensors(str(w))
    agree = {"agreement": 0.9998, "dice_cost": 0.0005, "passed": True,
             "tensor_sha256": md["tensor_sha256"]}
    rec = tmp_path / "agree.json"
    rec.write_text(json.dumps(agree))
    script = os.path.join(TRAIN, "record_figure.py")
    r = subprocess.run([PY, script, str(w), "--bf16", str(rec)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _, md2 = read_safetensors(str(w))
    assert json.loads(md2["bf16_agreement"]) == agree
    assert md2["tensor_sha256"] == md["tensor_sha256"]
    rec.write_text(json.dumps(dict(agree, tensor_sha256="00" * 32)))
    r = subprocess.run([PY, script, str(w), "--bf16", str(rec)], capture_output=True, text=True)
    assert r.returncode != 0 and "measured on tensors" in r.stderr
    r = subprocess.run([PY, script, str(w)], capture_output=True, text=True)
    assert r.returncode != 0 and "nothing to record" in r.stderr


def test_train_records_the_recipes_cv_table_only_for_that_recipe():
    """train.py copies fit.RECIPE's CV figure into a file's metadata only
    when the file was trained with fit.RECIPE unchanged (a width-16 file
    must not carry the width-8 table), or with an explicitly named table."""
    import fit
    import train
    assert train.cv_table_for(dict(fit.RECIPE)) == train.RECIPE_CV
    assert os.path.exists(train.RECIPE_CV)
    assert train.cv_table_for(dict(fit.RECIPE, width=16, size=256)) is None
    assert train.cv_table_for(dict(fit.RECIPE, normalisation="percentile")) is None
    assert train.cv_table_for(dict(fit.RECIPE, width=16), "x/cv.json") == "x/cv.json"


def test_remove_small_components():
    """8-connected components (a corner joins) under share * H * W pixels
    go, organ by organ; a component of exactly that size stays."""
    from preprocess import component_sizes, remove_small_components
    m = np.zeros((3, 10, 10), np.uint8)
    m[0, 1:3, 1:3] = 1           # 4 pixels
    m[0, 5, 5] = m[0, 6, 6] = 1  # 2 pixels joined by a corner
    m[0, 9, 0] = 1               # 1 pixel
    m[1, 0, 0] = 1
    m[2, 9, 9] = 1
    labels, sizes = component_sizes(m[0])
    assert sizes.tolist() == [0, 4, 2, 1] and labels[6, 6] == labels[5, 5] == 2
    out = remove_small_components(m, [0.02, 0.02, 0.0])
    assert out[0].sum() == 6 and out[0, 9, 0] == 0 and out[0, 6, 6] == 1
    assert out[1].sum() == 0 and out[2].sum() == 1
    assert remove_small_components(m, [0.03, 0, 0])[0].sum() == 4
    assert np.array_equal(remove_small_components(m, [0, 0, 0]), m)


def test_cv_min_area_chooses_on_the_other_folds():
    """A fold's share is chosen on the other folds' slices only: here fold 0
    alone gains from removing specks, fold 1 alone loses, so each fold is
    given the share its own slices would not pick."""
    import cv_min_area
    rows = []
    for case, fold_gain in (("a", 1.0), ("b", -1.0)):
        for i in range(4):
            for organ in CLASSES:
                d = {s: 0.5 for s in cv_min_area.SHARES}
                d[0.004] = 0.5 + 0.4 * fold_gain
                rows.append((case, f"{case}{i}", organ, d))
    doc = cv_min_area.evaluate(rows, [{"a"}, {"b"}])
    picks = [f["pick"]["stomach"] for f in doc["nested"]["folds"]]
    assert picks == [0.0, 0.004]
    assert doc["nested"]["mean_dice"] == pytest.approx((0.5 + 0.1) / 2)
    assert doc["plain"]["mean_dice"] == pytest.approx(0.5)
    assert doc["chosen_on_all_folds"]["share"]["stomach"] == 0.0  # 0.5 either way: ties go to the smaller


def test_cv_min_area_runs_on_fold_networks(data_root, tmp_path):
    """cv_min_area.py end to end on two tiny fold networks judged by cv.py's
    own judge_records: share 0 reproduces that judging (the script checks
    it), and the table is written."""
    import cv
    import fit
    recs = [r for r in dataset.discover(data_root) if r["group"] not in dataset.UNTRUSTED_FOR_EVAL]
    count = {}
    for r in recs:
        count[r["case"]] = count.get(r["case"], 0) + 1
    small = sorted(count, key=lambda c: (count[c], c))[:2]
    recipe = dict(fit.RECIPE, width=4, size=64, steps=3, normalisation="percentile")
    cvdir, runs = tmp_path / "cv", tmp_path / "runs"
    cvdir.mkdir()
    (cvdir / "folds.json").write_text(json.dumps({"k": 2, "folds": [[small[0]], [small[1]]]}))
    for k in range(2):
        torch.manual_seed(k)
        model = UNet3Plus(width=4).eval()
        (runs / f"fold{k}").mkdir(parents=True)
        torch.save({"model": model.state_dict(), "recipe": recipe, "step": 3, "width": 4},
                   str(runs / f"fold{k}" / "last.pt"))
        test = [r for r in recs if r["case"] == small[k]]
        slices = cv.judge_records(model, test, fit.policy_for_size(64))
        (cvdir / f"fold{k}.json").write_text(json.dumps({"recipe": recipe, "input_size": [64, 64],
                                                         "slices": slices}))
    cmd = [PY, os.path.join(TRAIN, "cv_min_area.py"), "--data", data_root, "--cv", str(cvdir), "--runs", str(runs)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads((cvdir / "min_area.json").read_text())
    assert doc["slices"] == count[small[0]] + count[small[1]] and len(doc["nested"]["folds"]) == 2
    assert (cvdir / "min_area.md").exists()
    # a judging that disagrees with the network is refused
    bad = json.loads((cvdir / "fold1.json").read_text())
    bad["slices"][0]["organs"]["stomach"]["dice"] = 0.123
    (cvdir / "fold1.json").write_text(json.dumps(bad))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "cv.py judged 0.123" in r.stderr
