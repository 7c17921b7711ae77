#!/usr/bin/python3
"""`segd infer` on DICOM images: a 16-bit slice written as DICOM (Explicit
and Implicit VR Little Endian, MONOCHROME2 and MONOCHROME1) gets exactly
the masks of the same slice as PNG (min-max normalisation makes the
stored-value mapping irrelevant), and its document names the instance
(UIDs, PixelSpacing) as the file says; broken or unsupported files fail
with a message and exit status 1, and do not stop the other files.

  SEGD_BIN=build/segd SEGD_WEIGHTS=weights/unet3p-16.safetensors check_infer.py"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dicomtest as T  # noqa: E402

T.need()
SEGD = os.environ.get("SEGD_BIN", "")
WEIGHTS = os.environ.get("SEGD_WEIGHTS", "")
if not os.access(SEGD, os.X_OK) or not os.path.exists(WEIGHTS):
    T.skip("set SEGD_BIN and SEGD_WEIGHTS")


def infer(*paths):
    p = subprocess.run([SEGD, "infer", "--weights", WEIGHTS, "--threads", "2", *paths],
                       capture_output=True, text=True, timeout=300)
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines()], p.stderr


tmp = T.tmpdir()
try:
    pngs = T.stand_in_pngs()  # 16-bit originals committed in tests/data
    rc, want, err = infer(*pngs)
    T.check(rc == 0 and len(want) == len(pngs), f"PNG reference run failed: {err}")
    for opts in ([], ["--syntax", "implicit"], ["--monochrome1"]):
        out = os.path.join(tmp, "-".join(o.strip("-") for o in opts) or "explicit")
        s = T.make_series(out, pngs, *opts)
        files = [os.path.join(out, sl["file"]) for sl in s["slices"]]
        rc, got, err = infer(*files)
        if not T.check(rc == 0 and len(got) == len(files), f"{opts}: infer failed: {err}"):
            continue
        for sl, doc, ref in zip(s["slices"], got, want):
            name = os.path.basename(sl["png"])
            T.check(doc["masks"] == ref["masks"], f"{opts} {name}: masks differ from the PNG's")
            T.check((doc["width"], doc["height"]) == (ref["width"], ref["height"]), f"{opts}: size")
            d = doc.get("dicom", {})
            T.check(d.get("SOPInstanceUID") == sl["sop_instance_uid"], f"{opts} {name}: SOPInstanceUID {d}")
            T.check(d.get("SeriesInstanceUID") == s["series_instance_uid"], f"{opts}: SeriesInstanceUID")
            T.check(d.get("FrameOfReferenceUID") == s["frame_of_reference_uid"], f"{opts}: FrameOfReferenceUID")
            T.check(d.get("SOPClassUID") == "1.2.840.10008.5.1.4.1.1.4", f"{opts}: SOPClassUID (MR)")
            T.check(d.get("PixelSpacing") == [1.5, 1.5], f"{opts}: PixelSpacing {d.get('PixelSpacing')}")
        print(f"  {out.rsplit('/', 1)[1]}: {len(files)} DICOM images, masks equal to the PNGs'")

    # failures: one message each, the good file between them still answered
    good = os.path.join(tmp, "explicit", T.make_series(os.path.join(tmp, "explicit"), pngs)["slices"][0]["file"])
    with open(good, "rb") as f:
        raw = f.read()
    trunc = os.path.join(tmp, "truncated.dcm")
    with open(trunc, "wb") as f:
        f.write(raw[:len(raw) // 2])
    notdcm = os.path.join(tmp, "text.dcm")
    with open(notdcm, "w") as f:
        f.write("not a DICOM file\n")
    rc, got, err = infer(trunc, good, notdcm)
    T.check(rc == 1, f"broken files: exit status {rc}, want 1")
    T.check(len(got) == 1 and got[0].get("dicom", {}).get("SOPInstanceUID"), "the good file was not answered")
    T.check("truncated.dcm" in err and "text.dcm" in err, f"messages name both files: {err!r}")
    print(f"  broken files refused: {err.strip()}")
    # a folder: each PNG or DICOM file in name order, other files skipped
    # and named (series.json here), DICOM files found by content, not name
    folder = os.path.join(tmp, "explicit")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".dcm"))
    rc, got, err = infer(folder)
    T.check(rc == 0 and "skipped" in err and "series.json" in err,
            f"folder: exit {rc}, the JSON file skipped and named: {err!r}")
    bare = os.path.join(tmp, "bare")
    os.mkdir(bare)
    shutil.copy(good, os.path.join(bare, "IM0001"))
    with open(os.path.join(bare, "notes.txt"), "w") as f:
        f.write("exported by hand\n")
    rc2, got2, err2 = infer(bare)
    T.check(rc2 == 0 and len(got2) == 1 and got2[0].get("dicom") and "notes.txt" in err2,
            f"folder: an extensionless DICOM file read, notes skipped: {rc2} {len(got2)} {err2!r}")
    rc2, _, err2 = infer(os.path.join(bare, "notes.txt"))
    T.check(rc2 == 1 and "notes.txt" in err2, f"a non-image file named on the command line fails: {rc2}")
    T.check([d["dicom"]["SOPInstanceUID"] for d in got] ==
            [d["dicom"]["SOPInstanceUID"] for d in infer(*[os.path.join(folder, n) for n in names])[1]],
            "folder: not the files in name order")
    print(f"  folder: {len(got)} images in name order")
    rc, got, err = infer("--max-pixels", "1000", good)
    T.check(rc == 1 and not got and "1000" in err or "pixel" in err.lower(), f"--max-pixels: {rc} {err!r}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(T.finish("check_infer"))
