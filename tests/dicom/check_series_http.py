#!/usr/bin/python3
"""The daemon's DICOM routes, end to end over HTTP against a `segd serve`
child:

- POST /v1/series with a DICOM series as multipart/related (parts shuffled,
  several orientations): slices come back in order along the slice normal,
  each slice's masks equal `segd infer` of its file (clean-up off), the
  volumes are the voxel counts times the voxel size, the 3D clean-up only
  removes voxels; ?format=seg and ?format=rtstruct give objects dciodvfy
  finds no error in, whose frames and contours give the JSON masks back
  and reference the posted instances; ?format=seg,rtstruct gives both as
  multipart/related;
- ?preview=1 adds each slice's decoded image (a base64 16-bit PNG with
  offset and scale) that gives back the values segd-dicom-tool reads
  (MONOCHROME1 too) and, for PNG slices, the PNG's grey values; absent
  without preview;
- a PNG series as multipart/form-data is ordered by its Kaggle slice numbers;
- POST /v1/segment with application/dicom answers like `segd infer`;
- bad input gets the documented status and a JSON error naming the reason,
  and the daemon goes on serving.

  SEGD_BIN=build/segd SEGD_WEIGHTS=weights/unet3p-16.safetensors check_series_http.py"""
import base64
import io
import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "hardening"))
import dicomtest as T  # noqa: E402

T.need("dciodvfy")
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402

SEGD = os.environ.get("SEGD_BIN", "")
WEIGHTS = os.environ.get("SEGD_WEIGHTS", "")
if not os.access(SEGD, os.X_OK) or not os.path.exists(WEIGHTS):
    T.skip("set SEGD_BIN and SEGD_WEIGHTS")
os.environ.setdefault("SEGD_BIN", SEGD)
import segdtest  # noqa: E402

ORGANS = ["large_bowel", "small_bowel", "stomach"]


def related(parts):
    b = uuid.uuid4().hex
    body = b"".join(f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                    for p in parts) + f"--{b}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={b}'


def form(files):
    b = uuid.uuid4().hex
    body = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                    f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
                    for name, data in files) + f"--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def post(port, path, body, ctype, accept=None):
    h = {"Content-Type": ctype}
    if accept:
        h["Accept"] = accept
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def expect_error(port, what, status, needle, path, body, ctype, accept=None):
    st, ct, data = post(port, path, body, ctype, accept)
    msg = ""
    try:
        msg = json.loads(data)["error"]["message"]
    except Exception:  # noqa: BLE001
        pass
    T.check(st == status and ct.startswith("application/json") and needle in msg,
            f"{what}: {st} {msg!r}, expected {status} naming {needle!r}")
    print(f"  {what}: {st} {msg}")


_png_docs = {}


def infer_pngs(*pngs):
    """segd infer of source PNGs, each once (the DICOM copies carry the same
    pixels: check_infer proves a DICOM image and its PNG give the same masks)."""
    todo = [q for q in pngs if q not in _png_docs]
    if todo:
        _png_docs.update(zip(todo, infer(*todo)))
    return [_png_docs.get(q, {}) for q in pngs]


def infer(*paths):
    p = subprocess.run([SEGD, "infer", "--weights", WEIGHTS, "--threads", "2", *paths],
                       capture_output=True, text=True, timeout=600)
    T.check(p.returncode == 0, f"segd infer failed: {p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines()]


def preview_values(img, h, w):
    """The values of a slice's "image" (value = stored * scale + offset)
    and the scale, or (None, None) when it is no 16-bit grey PNG of h x w."""
    pic = Image.open(io.BytesIO(base64.b64decode(img["png"], validate=True)))
    a = np.array(pic)
    if pic.format != "PNG" or a.shape != (h, w) or pic.mode not in ("I;16", "I;16B", "I"):
        return None, None
    return a.astype(np.float64) * img["scale"] + img["offset"], img["scale"]


def check_preview(port, what, body, ctype, want):
    """?preview=1: every slice's image gives `want` (list, series order)
    back within half a scale step; without preview no image."""
    st, _, data = post(port, "/v1/series?preview=1", body, ctype)
    if not T.check(st == 200, f"{what} preview: {st} {data[:200]}"):
        return
    doc = json.loads(data)
    worst, steps = 0.0, set()
    for s, ref in zip(doc["slices"], want):
        got, scale = preview_values(s.get("image", {"png": "", "offset": 0, "scale": 1}),
                                    doc["height"], doc["width"])
        if not T.check(got is not None, f"{what} preview of {s['id']}: not a {doc['width']}x"
                                        f"{doc['height']} 16-bit grey PNG"):
            return
        err = float(np.abs(got - ref).max())
        T.check(err <= scale / 2 + 1e-6 * max(1.0, float(np.abs(ref).max())),
                f"{what} preview of {s['id']}: off by {err} (scale {scale})")
        worst = max(worst, err)
        steps.add(scale)
    T.check(len(doc["slices"]) == len(want), f"{what} preview: {len(doc['slices'])} slices")
    st, _, data = post(port, "/v1/series", body, ctype)
    T.check(st == 200 and all("image" not in s for s in json.loads(data)["slices"]),
            f"{what}: image without preview")
    print(f"  {what}: preview=1 gives {len(want)} slice images back, worst difference {worst:g} "
          f"(scales {sorted(steps)}); none without preview")


def dciodvfy(data, tmp, name):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    p = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    lines = (p.stdout + p.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    T.check(not errors, f"dciodvfy {name}: {errors}")
    return pydicom.dcmread(path)


def json_masks(doc):
    """(n, 3, rows, cols) from a series answer, slices in its order."""
    h, w = doc["height"], doc["width"]
    return np.stack([np.stack([segdtest.rle_decode(s["masks"][o], h * w).reshape(h, w) for o in ORGANS])
                     for s in doc["slices"]])


def check_seg(ds, doc, series, masks):
    by_uid = {s["id"]: k for k, s in enumerate(doc["slices"])}
    T.check(ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4", "SEG class")
    T.check(ds.StudyInstanceUID == series["study_instance_uid"], "SEG StudyInstanceUID")
    T.check(ds.FrameOfReferenceUID == series["frame_of_reference_uid"], "SEG FrameOfReferenceUID")
    T.check(ds.SeriesInstanceUID != series["series_instance_uid"], "SEG: a new series")
    alg = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    T.check(alg.AlgorithmName == doc["model"]["name"] and alg.AlgorithmVersion == doc["model"]["sha256"],
            "SEG algorithm = the model that answered")
    frames = ds.pixel_array.reshape(-1, doc["height"], doc["width"])
    same = 0
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        organ = fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber - 1
        k = by_uid.get(fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if T.check(k is not None, f"SEG frame {f}: source not posted"):
            same += np.array_equal(frames[f].astype(bool), masks[k, organ].astype(bool))
    T.check(same == 3 * len(by_uid), f"SEG frames equal to the JSON masks: {same}/{3 * len(by_uid)}")
    return same


def check_rtstruct(ds, doc, series, masks):
    by_uid = {s["id"]: k for k, s in enumerate(doc["slices"])}
    T.check(ds.Modality == "RTSTRUCT", "RTSTRUCT Modality")
    rfr = ds.ReferencedFrameOfReferenceSequence[0]
    T.check(rfr.FrameOfReferenceUID == series["frame_of_reference_uid"], "RT FrameOfReferenceUID")
    h, w = doc["height"], doc["width"]
    polys = {}
    for roi in ds.ROIContourSequence:
        organ = roi.ReferencedROINumber - 1
        for c in roi.get("ContourSequence", []):
            k = by_uid.get(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
            if not T.check(k is not None, "contour references a posted slice"):
                continue
            d = doc["slices"][k]["dicom"]
            ipp, o = np.array(d["ImagePositionPatient"]), np.array(d["ImageOrientationPatient"])
            ps = d["PixelSpacing"]
            pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3) - ipp
            polys.setdefault((organ, k), []).append(
                list(zip(pts @ o[:3] / ps[1], pts @ o[3:] / ps[0])))
    same = 0
    for k in range(len(by_uid)):
        for organ in range(3):
            got = T.even_odd(polys.get((organ, k), []), h, w)
            same += np.array_equal(got, masks[k, organ].astype(bool))
    T.check(same == 3 * len(by_uid), f"RTSTRUCT contours give the JSON masks back: {same}/{3 * len(by_uid)}")
    return same


tmp = T.tmpdir()
daemon = None
try:
    pngs = T.stand_in_pngs()
    run = T.real_run(6)
    # --batch 4: series of 6 run as a batch of 4 and one of 2, so every
    # "masks = segd infer" below also checks batched against single slices
    daemon = segdtest.Daemon("--workers", "1", "--worker-threads", "2", "--batch", "4",
                             "--max-series-slices", "12")
    port = daemon.port
    print("DICOM series, multipart/related:")
    for orient, src in [("axial", run or pngs), ("oblique", pngs), ("swapped", pngs)]:
        out = os.path.join(tmp, orient)
        series = T.make_series(out, src, "--orientation", orient)
        files = [os.path.join(out, s["file"]) for s in series["slices"]]  # series order
        shuffled = files[:]
        random.Random(7).shuffle(shuffled)
        body, ctype = related([open(p, "rb").read() for p in shuffled])
        st, ct, data = post(port, "/v1/series?min_volume_ml=0", body, ctype)
        if not T.check(st == 200 and ct.startswith("application/json"), f"{orient}: {st} {data[:200]}"):
            continue
        doc = json.loads(data)
        ids = [s["id"] for s in doc["slices"]]
        T.check(ids == [s["sop_instance_uid"] for s in series["slices"]],
                f"{orient}: slices not in order along the normal")
        T.check(doc["dicom"]["SeriesInstanceUID"] == series["series_instance_uid"], "SeriesInstanceUID")
        # the DICOM files themselves once, then their source PNGs (cached)
        ref = infer(*files) if orient == "axial" else infer_pngs(*[s["png"] for s in series["slices"]])
        T.check(all(s["masks"] == r.get("masks") for s, r in zip(doc["slices"], ref)),
                f"{orient}: masks differ from segd infer of each file")
        vox = doc["voxel_spacing_mm"]
        ps = series["slices"][0]["pixel_spacing"]
        T.check(np.allclose(vox, [ps[0], ps[1], 3.0]), f"{orient}: voxel spacing {vox}")
        for o in ORGANS:
            want = sum(s["pixels"][o] for s in doc["slices"]) * vox[0] * vox[1] * vox[2] / 1000
            T.check(abs(doc["volume_ml"][o] - want) < 1e-6, f"{orient} {o}: volume {doc['volume_ml'][o]} != {want}")
        if orient != "axial":
            print(f"  {orient}: {len(ids)} slices in order, masks = segd infer, volumes = voxel counts")
            continue
        # clean-up on: only removes, and says how much
        st, _, data = post(port, "/v1/series?min_volume_ml=2", body, ctype)
        clean = json.loads(data)
        m0, m1 = json_masks(doc), json_masks(clean)
        removed = sum(clean["cleanup"]["voxels_removed"].values())
        T.check(st == 200 and not (m1 & ~m0).any() and int(m0.sum() - m1.sum()) == removed,
                f"{orient}: clean-up added voxels or miscounted")
        print(f"  {orient}: {len(ids)} slices in order, masks = segd infer; volumes (mL) "
              f"{ {o: round(v, 1) for o, v in doc['volume_ml'].items()} }; clean-up at 2 mL removed "
              f"{clean['cleanup']['components_removed']} components ({removed} voxels)")
        if orient != "axial":
            continue
        raw = os.path.join(tmp, "px.f32")
        want = []
        for p in files:
            info = T.read(p, raw=raw)
            want.append(np.fromfile(raw, np.float32).reshape(int(info["rows"]), int(info["cols"])))
        check_preview(port, f"{orient} (segd-dicom-tool values)", body, ctype, want)
        ds0 = pydicom.dcmread(files[0])
        T.check(np.array_equal(want[0], ds0.pixel_array.astype(np.float32)), "pydicom = segd-dicom-tool")
        # DICOM answers, with the clean-up's masks
        masks = m1
        st, ct, seg = post(port, "/v1/series?format=seg&min_volume_ml=2", body, ctype, "application/dicom")
        T.check(st == 200 and ct == "application/dicom", f"SEG: {st} {ct}")
        n_seg = check_seg(dciodvfy(seg, tmp, "seg.dcm"), clean, series, masks)
        st, ct, rt = post(port, "/v1/series?format=rtstruct&min_volume_ml=2", body, ctype, "application/dicom")
        T.check(st == 200 and ct == "application/dicom", f"RTSTRUCT: {st} {ct}")
        n_rt = check_rtstruct(dciodvfy(rt, tmp, "rt.dcm"), clean, series, masks)
        print(f"  SEG: dciodvfy clean, {n_seg} frames equal; RTSTRUCT: dciodvfy clean, {n_rt} "
              f"slice-organ contours equal to the masks")
        st, ct, both = post(port, "/v1/series?format=seg,rtstruct&min_volume_ml=2", body, ctype,
                            'multipart/related; type="application/dicom"')
        T.check(st == 200 and ct.startswith("multipart/related"), f"both: {st} {ct}")
        bnd = ct.split("boundary=")[1].encode()
        parts = [p.split(b"\r\n\r\n", 1)[1][:-2] for p in both.split(b"--" + bnd)[1:-1]]
        mods = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(p)).Modality for p in parts]
        T.check(mods == ["SEG", "RTSTRUCT"], f"both: parts {mods}")
        print(f"  format=seg,rtstruct: multipart/related with {mods}")

    print("preview of a MONOCHROME1 series:")
    m1 = T.make_series(os.path.join(tmp, "mono1"), pngs[:3], "--monochrome1")
    m1files = [os.path.join(tmp, "mono1", s["file"]) for s in m1["slices"]]
    raw = os.path.join(tmp, "px.f32")
    want = []
    for p in m1files:
        info = T.read(p, raw=raw)
        want.append(np.fromfile(raw, np.float32).reshape(int(info["rows"]), int(info["cols"])))
    check_preview(port, "MONOCHROME1", *related([open(p, "rb").read() for p in m1files]), want)
    # Rescale Slope/Intercept: values that are no integers take a scale
    resc, want = [], []
    for p in m1files:
        ds = pydicom.dcmread(p)
        ds.RescaleSlope, ds.RescaleIntercept = "0.37", "-12.5"
        b = pydicom.filebase.DicomBytesIO()
        ds.save_as(b)
        resc.append(b.getvalue())
        path = os.path.join(tmp, "rescaled.dcm")
        with open(path, "wb") as f:
            f.write(b.getvalue())
        info = T.read(path, raw=raw)
        want.append(np.fromfile(raw, np.float32).reshape(int(info["rows"]), int(info["cols"])))
    T.check(any((w != np.floor(w)).any() for w in want), "rescaled values are no integers")
    check_preview(port, "Rescale Slope 0.37, Intercept -12.5", *related(resc), want)
    expect_error(port, "preview with format=seg", 400, "preview", "/v1/series?format=seg&preview=1",
                 *related([open(p, "rb").read() for p in m1files]), "application/dicom")
    expect_error(port, "preview=yes", 400, "preview", "/v1/series?preview=yes",
                 *related([open(p, "rb").read() for p in m1files]))

    print("PNG series, multipart/form-data:")
    names = [(f"case9_day1_slice_{n:04d}_266_266_1.50_1.50.png", p) for n, p in zip([30, 10, 20], pngs)]
    body, ctype = form([(nm, open(p, "rb").read()) for nm, p in names])
    st, _, data = post(port, "/v1/series", body, ctype)
    if T.check(st == 200, f"PNG series: {st} {data[:200]}"):
        doc = json.loads(data)
        T.check([s["id"] for s in doc["slices"]] == [names[i][0][:-4] for i in (1, 2, 0)],
                "PNG series not ordered by slice number")
        ref = infer_pngs(*[names[i][1] for i in (1, 2, 0)])
        raw = json.loads(post(port, "/v1/series?min_volume_ml=0", body, ctype)[2])
        T.check(all(s["masks"] == r["masks"] for s, r in zip(raw["slices"], ref)), "PNG series masks")
        check_preview(port, "PNG series (the PNGs' grey values)", body, ctype,
                      [np.array(Image.open(names[i][1])).astype(np.float64) for i in (1, 2, 0)])
        print(f"  ordered by slice number: {[s['id'].split('_')[3] for s in doc['slices']]}")

    print("POST /v1/segment, application/dicom:")
    axial = T.make_series(os.path.join(tmp, "one"), pngs[:1])
    one = os.path.join(tmp, "one", axial["slices"][0]["file"])
    st, ct, data = post(port, "/v1/segment", open(one, "rb").read(), "application/dicom")
    ref = infer(one)[0]
    if T.check(st == 200, f"segment dicom: {st} {data[:200]}"):
        doc = json.loads(data)
        T.check(doc["masks"] == ref["masks"] and doc["dicom"]["SOPInstanceUID"] ==
                axial["slices"][0]["sop_instance_uid"], "segment dicom: masks or UID")
        print("  masks and UIDs as segd infer")

    print("refusals:")
    good = [open(os.path.join(tmp, "swapped", s["file"]), "rb").read()
            for s in T.make_series(os.path.join(tmp, "swapped"), pngs, "--orientation", "swapped")["slices"]]
    other = [open(os.path.join(tmp, "oblique", s["file"]), "rb").read()
             for s in json.load(open(os.path.join(tmp, "oblique", "series.json")))["slices"]]
    expect_error(port, "two series", 422, "SeriesInstanceUID", "/v1/series", *related(good[:2] + other[:1]))
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(good[1]))
    del ds.ImagePositionPatient
    nogeo = pydicom.filebase.DicomBytesIO()
    ds.save_as(nogeo)
    expect_error(port, "no ImagePositionPatient", 422, "ImagePositionPatient", "/v1/series",
                 *related([good[0], nogeo.getvalue()]))
    mf = pydicom.dcmread(pydicom.filebase.DicomBytesIO(good[0]))
    mf.NumberOfFrames = 2
    mf.PixelData = mf.PixelData * 2
    mfb = pydicom.filebase.DicomBytesIO()
    mf.save_as(mfb)
    expect_error(port, "multi-frame", 422, "multi-frame", "/v1/series", *related([mfb.getvalue()]))
    expect_error(port, "multi-frame /v1/segment", 422, "multi-frame", "/v1/segment", mfb.getvalue(),
                 "application/dicom")
    big = open(os.path.join(T.PYDICOM_DATA, "MR_small_bigendian.dcm"), "rb").read()
    expect_error(port, "big endian", 415, "1.2.840.10008.1.2.2", "/v1/series", *related([big]))
    expect_error(port, "big endian /v1/segment", 415, "1.2.840.10008.1.2.2", "/v1/segment", big,
                 "application/dicom")
    png = open(pngs[0], "rb").read()
    expect_error(port, "a PNG part", 415, "not a DICOM", "/v1/series", *related([good[0], png]))
    expect_error(port, "a PNG as application/dicom", 415, "not a DICOM", "/v1/segment", png,
                 "application/dicom")
    expect_error(port, "13 slices", 413, "--max-series-slices", "/v1/series", *related([good[0]] * 13))
    expect_error(port, "Accept", 406, "application/dicom", "/v1/series?format=seg", *related(good),
                 "application/json")
    expect_error(port, "format", 400, "format", "/v1/series?format=nifti", *related(good))
    expect_error(port, "PNG series as SEG", 422, "DICOM input", "/v1/series?format=seg",
                 *form([(names[0][0], png)]), "application/dicom")
    expect_error(port, "PNG without a Kaggle name", 422, "Kaggle", "/v1/series", *form([("x.png", png)]))
    # DICOM sent the obvious curl way (-F file=@x.dcm): told how to send it
    expect_error(port, "DICOM as form-data to /v1/series", 415, "multipart/related", "/v1/series",
                 *form([("x.dcm", good[0])]))
    expect_error(port, "DICOM as form-data to /v1/segment", 415, "application/dicom", "/v1/segment",
                 *form([("x.dcm", good[0])]))
    expect_error(port, "type=application/json", 415, "application/dicom", "/v1/series", related(good)[0],
                 "multipart/related; type=application/json; boundary=x")
    expect_error(port, "image/png to /v1/series", 415, "multipart", "/v1/series", png, "image/png")
    expect_error(port, "same position twice", 422, "", "/v1/series", *related([good[0], good[0]]))
    # one series is one patient, one study, one modality: the SEG and
    # RTSTRUCT copy instance 0's patient and study
    for kw, val in (("PatientID", "SOMEONE-ELSE"), ("StudyInstanceUID", "1.2.826.0.1.3680043.2.1125.9"),
                    ("Modality", "CT")):
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(good[1]))
        setattr(ds, kw, val)
        b = pydicom.filebase.DicomBytesIO()
        ds.save_as(b)
        expect_error(port, f"{kw} differs", 422, f"{kw} differs", "/v1/series?format=seg",
                     *related([good[0], b.getvalue()] + good[2:]), "application/dicom")
    expect_error(port, "no format, Accept admits no answer", 406, "application/json", "/v1/series",
                 *related(good), "text/html")
    st, _, _ = post(port, "/v1/series", *related(good))
    T.check(st == 200 and daemon.proc.poll() is None, "daemon still serving after the refusals")
    print("  daemon still serving")
    daemon.stop()
    daemon = None

    # A series' working memory (decoded slices and masks: 7 bytes a pixel
    # for DICOM, about 4 more for SEG and RTSTRUCT answers) comes from
    # --max-series-memory: with 2500K, 4 slices of 266 x 266 fit (1.9 MiB)
    # for JSON, not for seg,rtstruct (3.0 MiB: 413); two at once do not fit
    # together: posted at once to 2 workers, one runs, the other gets 503 +
    # Retry-After (unless the first ended before the second started: tried
    # again, up to 5 times).
    print("series working memory within --max-series-memory:")
    daemon = segdtest.Daemon("--workers", "2", "--max-series-memory", "2500K")
    port = daemon.port
    expect_error(port, "seg,rtstruct of 4 slices over the budget", 413, "--max-series-memory",
                 "/v1/series?format=seg,rtstruct", *related(good), 'multipart/related; type="application/dicom"')
    body, ctype = related(good)

    def post_status(res):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/series", data=body,
                                     headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                r.read()
                res.append((r.status, None))
        except urllib.error.HTTPError as e:
            res.append((e.code, e.headers.get("Retry-After")))

    import threading
    seen = []
    for attempt in range(5):
        res = []
        threads = [threading.Thread(target=post_status, args=(res,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen.append(sorted(res, key=lambda x: x[0]))
        T.check(all(st == 200 or (st == 503 and retry) for st, retry in res), f"two at once: {res}")
        if any(st == 503 for st, _ in res):
            break
    T.check(any(st == 503 for st, _ in seen[-1]) and any(st == 200 for st, _ in seen[-1]),
            f"two series at once over the budget: one 200, one 503 + Retry-After ({seen})")
    T.check(segdtest.wait_for(lambda: segdtest.metric(port, "segd_series_memory_bytes_reserved", -1) == 0, 10),
            "the series budget is free once both are answered")
    T.check(segdtest.metric(port, "segd_series_memory_refused_total", 0) >= 1, "503s counted")
    st, _, _ = post(port, "/v1/series", body, ctype)
    T.check(st == 200, f"one series alone: {st}")
    print(f"  seg,rtstruct of 4 slices: 413; JSON of 4 slices, two at once: {seen[-1]} "
          f"(attempt {len(seen)}); then alone: {st}")
finally:
    if daemon:
        daemon.stop()
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(T.finish("check_series_http"))
