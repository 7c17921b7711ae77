#!/usr/bin/python3
"""Build a DICOM MR series (one Part-10 file per slice) from Kaggle PNG slices.

The slices come from the UW-Madison GI tract data; the files carry realistic
patient, study, series, MR image and image plane modules, for the DICOM
tests.

    make_series.py --out DIR [--orientation axial|swapped|coronal|oblique]
                   [--spacing ROW,COL] [--slice-spacing 3] [--syntax explicit|implicit]
                   [--monochrome1] PNG...

The PNGs are the slices in order (file names caseC_dayD_slice_NNNN_W_H_sx_sy.png,
or .../caseC/caseC_dayD/scans/slice_NNNN_W_H_sx_sy.png as in the data set):
PixelSpacing is (sy, sx) from the name unless --spacing overrides it, slices
are --slice-spacing mm apart (3 mm, the data set's) along the normal of the
chosen orientation:
    axial    row direction +x, column direction +y (the usual)
    swapped  row direction +y, column direction +x (rows and columns swapped)
    coronal  row direction +x, column direction -z
    oblique  the axial plane turned 20 degrees about x, then 15 about z
UIDs derive deterministically from case, day and options (pydicom's
generate_uid with entropy sources).  The files get names unrelated to their
order (a hash), so nothing can order them by name.  Writes DIR/series.json:
the files in slice order with their geometry, for the tests.
"""
import argparse
import hashlib
import json
import math
import os
import re
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage,
                         PYDICOM_IMPLEMENTATION_UID, generate_uid)

NAME_RE = re.compile(r"case(\d+)_day(\d+).*slice_(\d+)_(\d+)_(\d+)_([\d.]+)_([\d.]+)\.png$")


def orientation(kind):
    """(row direction, column direction) as unit vectors."""
    if kind == "axial":
        return np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    if kind == "swapped":
        return np.array([0, 1.0, 0]), np.array([1.0, 0, 0])
    if kind == "coronal":
        return np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
    if kind == "oblique":
        a, b = math.radians(20), math.radians(15)
        rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
        m = rz @ rx
        return m @ np.array([1.0, 0, 0]), m @ np.array([0, 1.0, 0])
    raise SystemExit(f"unknown orientation {kind}")


def ds_str(v):
    """A DS value of at most 16 characters."""
    for prec in range(12, 0, -1):
        s = f"{v:.{prec}g}"
        if len(s) <= 16:
            return s
    return "0"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--orientation", default="axial")
    ap.add_argument("--spacing", help="PixelSpacing ROW,COL in mm (default: from the name)")
    ap.add_argument("--slice-spacing", type=float, default=3.0)
    ap.add_argument("--syntax", default="explicit", choices=["explicit", "implicit"])
    ap.add_argument("--monochrome1", action="store_true")
    ap.add_argument("pngs", nargs="+")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    rowdir, coldir = orientation(a.orientation)
    normal = np.cross(rowdir, coldir)
    first = NAME_RE.search(a.pngs[0].replace(os.sep, "_"))
    if not first:
        raise SystemExit(f"{a.pngs[0]}: name is not caseC_dayD_slice_NNNN_W_H_sx_sy.png")
    case, day = int(first.group(1)), int(first.group(2))
    tag = f"{case}/{day}/{a.orientation}/{a.spacing}/{a.slice_spacing}/{a.syntax}/{a.monochrome1}"
    study_uid = generate_uid(entropy_srcs=["segd-test", "study", str(case), str(day)])
    series_uid = generate_uid(entropy_srcs=["segd-test", "series", tag])
    for_uid = generate_uid(entropy_srcs=["segd-test", "for", tag])
    listing = []
    shape = None
    for k, png in enumerate(a.pngs):
        m = NAME_RE.search(png.replace(os.sep, "_"))
        if not m:
            raise SystemExit(f"{png}: name is not caseC_dayD_slice_NNNN_W_H_sx_sy.png")
        img = np.array(Image.open(png))
        if img.ndim == 3:
            img = img[..., :3].mean(axis=2).round()
        img = img.astype(np.uint16)
        if shape is None:
            shape = img.shape
        elif img.shape != shape:
            raise SystemExit(f"{png}: {img.shape} differs from the first slice's {shape}")
        rows, cols = img.shape
        sx, sy = float(m.group(6)), float(m.group(7))
        spacing = [sy, sx] if not a.spacing else [float(v) for v in a.spacing.split(",")]
        # centre the image on the isocentre (x, y) as scanners roughly do
        centre = -0.5 * ((cols - 1) * spacing[1] * rowdir + (rows - 1) * spacing[0] * coldir)
        ipp = centre + normal * (a.slice_spacing * k - 60.0)
        sop_uid = generate_uid(entropy_srcs=["segd-test", "sop", tag, str(k), m.group(3)])

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if a.syntax == "explicit" else ImplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = f"2019{(day % 12) + 1:02d}{(case % 28) + 1:02d}"
        ds.SeriesDate = ds.StudyDate
        ds.ContentDate = ds.StudyDate
        ds.StudyTime = "101500"
        ds.SeriesTime = "102000"
        ds.ContentTime = "102000"
        ds.AccessionNumber = f"A{case:04d}{day:03d}"
        ds.Modality = "MR"
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "ABDOMEN"
        ds.Manufacturer = "UW-Madison GI tract (Kaggle PNG)"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MR abdomen, GI tract"
        ds.SeriesDescription = f"T2 {a.orientation} (from PNG)"
        ds.PatientName = f"UWMGI^Case{case}"
        ds.PatientID = f"case{case}"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = ds_str(a.slice_spacing)
        ds.RepetitionTime = "1000"
        ds.EchoTime = "80"
        ds.EchoTrainLength = "1"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = f"day{day}"
        ds.SeriesNumber = "3"
        ds.InstanceNumber = str(k + 1)
        ds.ImagePositionPatient = [ds_str(v) for v in ipp]
        ds.ImageOrientationPatient = [ds_str(v) for v in np.concatenate([rowdir, coldir])]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = ds_str(float(np.dot(normal, ipp)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME1" if a.monochrome1 else "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [ds_str(v) for v in spacing]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        stored = (65535 - img) if a.monochrome1 else img
        ds.PixelData = stored.astype("<u2").tobytes()
        name = hashlib.sha1(sop_uid.encode()).hexdigest()[:12] + ".dcm"
        path = os.path.join(a.out, name)
        ds.is_little_endian = True
        ds.is_implicit_VR = a.syntax == "implicit"
        pydicom.dcmwrite(path, ds, write_like_original=False)
        listing.append({"file": name, "png": png, "sop_instance_uid": sop_uid,
                        "position": [float(v) for v in ds.ImagePositionPatient],
                        "orientation": [float(v) for v in ds.ImageOrientationPatient],
                        "pixel_spacing": [float(v) for v in ds.PixelSpacing],
                        "rows": rows, "cols": cols})
    with open(os.path.join(a.out, "series.json"), "w") as f:
        json.dump({"series_instance_uid": series_uid, "frame_of_reference_uid": for_uid,
                   "study_instance_uid": study_uid, "slices": listing}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
