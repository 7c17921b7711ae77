#!/usr/bin/python3
"""Write the seeds of tests/fuzz/corpus/dicom/ (needs pydicom and DCMTK's
dcmcjpeg, dcmcjpls, dcmcrle): small MR slices (16x16) cut from pydicom's
MR_small.dcm in every transfer syntax the reader decodes, an 8-bit
MONOCHROME1 one, and one of each refusal (big endian, multi-frame, RGB).
Crash inputs found later are added by hand as crash-dicom-<what>."""
import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "dicom")
SRC = "/usr/lib/python3/dist-packages/pydicom/data/test_files/MR_small.dcm"


def small():
    ds = pydicom.dcmread(SRC)
    px = ds.pixel_array[24:40, 24:40].copy()
    ds.Rows, ds.Columns = px.shape
    ds.PixelData = px.tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-10"
    return ds


def main():
    os.makedirs(OUT, exist_ok=True)
    base = os.path.join(OUT, "mr16-explicit.dcm")
    small().save_as(base, write_like_original=False)
    ds = small()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.is_implicit_VR, ds.is_little_endian = True, True
    ds.save_as(os.path.join(OUT, "mr16-implicit.dcm"), write_like_original=False)
    for name, cmd in [("mr16-jpeg-lossless.dcm", ["dcmcjpeg", "+e1"]),
                      ("mr16-jpeg-ls.dcm", ["dcmcjpls", "+el"]), ("mr16-rle.dcm", ["dcmcrle"])]:
        subprocess.run(cmd + [base, os.path.join(OUT, name)], check=True)
    ds = small()
    px = (ds.pixel_array.astype(np.int32) // 8).clip(0, 255).astype(np.uint8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = px.tobytes()
    ds.save_as(os.path.join(OUT, "mr8-monochrome1.dcm"), write_like_original=False)
    ds = small()
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(os.path.join(OUT, "refuse-multiframe.dcm"), write_like_original=False)
    ds = small()
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.is_implicit_VR, ds.is_little_endian = False, False
    ds.PixelData = ds.pixel_array.astype(">i2").tobytes()
    ds.save_as(os.path.join(OUT, "refuse-bigendian.dcm"), write_like_original=False)
    ds = small()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(16 * 16 * 3)
    ds.save_as(os.path.join(OUT, "refuse-rgb.dcm"), write_like_original=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
