#!/usr/bin/python3
"""segd_dicom_series_order: generated series handed over in shuffled orders
come back ordered along the slice normal (axial, rows/columns swapped,
coronal, oblique); instances of another series, another frame of reference,
another orientation or at a repeated position are refused naming the tag."""
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dicomtest as T  # noqa: E402

T.need()
import pydicom  # noqa: E402

tmp = T.tmpdir()
try:
    pngs = T.real_run(8) or T.stand_in_pngs()
    print(f"{len(pngs)} slices from {os.path.dirname(pngs[0])}")
    rng = random.Random(12)
    for orient in ["axial", "swapped", "coronal", "oblique"]:
        out = os.path.join(tmp, orient)
        s = T.make_series(out, pngs, "--orientation", orient)
        want = [sl["file"] for sl in s["slices"]]
        for trial in range(4):
            files = want[:]
            rng.shuffle(files)
            if trial == 0:
                files.reverse()
            rc, stdout, stderr = T.tool("order", *[os.path.join(out, f) for f in files])
            if not T.check(rc == 0, f"{orient}: order failed: {stderr}"):
                continue
            got = [files[int(i)] for i in stdout.split()]
            T.check(got == want, f"{orient} trial {trial}: order {got} != {want}")
        print(f"  {orient}: 4 shuffled orders ordered along the normal")

    # refusals: one instance changed, the error names the attribute
    base = os.path.join(tmp, "axial")
    files = [os.path.join(base, sl["file"]) for sl in T.make_series(base, pngs)["slices"]]
    cases = [("SeriesInstanceUID", -18, lambda d: setattr(d, "SeriesInstanceUID", "1.2.3.4")),
             ("FrameOfReferenceUID", -18, lambda d: setattr(d, "FrameOfReferenceUID", "1.2.3.5")),
             ("ImageOrientationPatient", -18,
              lambda d: setattr(d, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1])),
             ("PixelSpacing", -18, lambda d: setattr(d, "PixelSpacing", [0.9, 0.9])),
             ("same position", -18,
              lambda d: setattr(d, "ImagePositionPatient", pydicom.dcmread(files[0]).ImagePositionPatient)),
             ("ImagePositionPatient missing", -22, lambda d: delattr(d, "ImagePositionPatient"))]
    for what, errno, change in cases:
        d = pydicom.dcmread(files[2])
        change(d)
        d.SOPInstanceUID = pydicom.uid.generate_uid()
        odd = os.path.join(tmp, "odd.dcm")
        d.save_as(odd)
        rc, stdout, stderr = T.tool("order", files[0], files[1], odd, *files[3:])
        T.check(rc != 0 and stderr.startswith(f"error {errno} ") and what in stderr,
                f"{what}: expected error {errno} naming it, got rc {rc} '{stderr.strip()}'")
        print(f"  refused: {stderr.strip()}")
    rc, _, stderr = T.tool("order", files[0], files[0])
    T.check(rc != 0 and "SOPInstanceUID" in stderr, f"repeated instance: {stderr.strip()}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(T.finish("check_series"))
