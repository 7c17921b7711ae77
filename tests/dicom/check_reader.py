#!/usr/bin/python3
"""segd_dicom_read against pydicom: pixels after rescale on pydicom's MR test
files and on generated series, every lossless transfer syntax (JPEG
lossless, JPEG-LS, RLE made with DCMTK's own encoders), MONOCHROME1, and
each refusal with its errno and the reason in the message."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dicomtest as T  # noqa: E402

T.need("dcmcjpeg", "dcmcjpls", "dcmcrle")
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402


def pixels(path, ref=None):
    """The tool's pixels, and pydicom's (of ref when given: a lossless copy)."""
    raw = os.path.join(tmp, "px.f32")
    info = T.read(path, raw=raw)
    got = np.fromfile(raw, np.float32).reshape(int(info["rows"]), int(info["cols"]))
    ds = pydicom.dcmread(ref or path)
    want = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + \
        float(ds.get("RescaleIntercept", 0))
    if ds.PhotometricInterpretation == "MONOCHROME1":
        want = float(2 ** ds.BitsStored - 1) - want
    return info, got, want


def same(path, ref=None, what=None):
    info, got, want = pixels(path, ref)
    ok = got.shape == want.shape and np.array_equal(got, want.astype(np.float32))
    T.check(ok, f"{what or path}: pixels differ from pydicom "
            f"(max diff {np.abs(got - want).max() if got.shape == want.shape else 'shape'})")
    print(f"  {what or os.path.basename(path)}: {info['transfer_syntax_uid']} {got.shape} "
          f"{'equal' if ok else 'DIFFERENT'}")
    return info


def refused(path, errno, words, what):
    try:
        T.read(path, max_pixels=100 if errno == -7 else None)
        T.check(False, f"{what}: read, expected error {errno}")
    except RuntimeError as e:
        msg = str(e)
        T.check(msg.startswith(f"error {errno} ") and all(w in msg for w in words),
                f"{what}: got '{msg}', expected {errno} naming {words}")
        print(f"  {what}: {msg.split(': ', 1)[-1]}")


tmp = T.tmpdir()
try:
    D = T.PYDICOM_DATA
    mr = os.path.join(D, "MR_small.dcm")
    if not os.path.exists(mr):
        T.skip(f"{mr} missing (apt-get install python3-pydicom)")
    print("pydicom's test files:")
    info = same(mr)
    ds = pydicom.dcmread(mr)
    for key, kw in [("sop_instance_uid", "SOPInstanceUID"), ("series_instance_uid", "SeriesInstanceUID"),
                    ("study_instance_uid", "StudyInstanceUID"), ("frame_of_reference_uid", "FrameOfReferenceUID"),
                    ("sop_class_uid", "SOPClassUID"), ("patient_id", "PatientID")]:
        T.check(info[key] == str(ds.get(kw, "")), f"{kw}: {info[key]} != {ds.get(kw)}")
    T.check(np.allclose([float(v) for v in info["position"].split("\\")],
                        [float(v) for v in ds.ImagePositionPatient]), "ImagePositionPatient")
    T.check(np.allclose([float(v) for v in info["orientation"].split("\\")],
                        [float(v) for v in ds.ImageOrientationPatient]), "ImageOrientationPatient")
    T.check(np.allclose([float(v) for v in info["pixel_spacing"].split("\\")],
                        [float(v) for v in ds.PixelSpacing]), "PixelSpacing")
    same(os.path.join(D, "MR_small_implicit.dcm"))
    same(os.path.join(D, "MR_small_RLE.dcm"), mr)
    same(os.path.join(D, "MR_small_jpeg_ls_lossless.dcm"), mr)
    same(os.path.join(D, "CT_small.dcm"))  # CT with RescaleIntercept: any plain grey image

    print("DCMTK-encoded copies (lossless):")
    syntaxes = {"jpeg-lossless-sv1": ["dcmcjpeg", "+e1"], "jpeg-lossless-p14": ["dcmcjpeg", "+el"],
                "jpeg-ls": ["dcmcjpls", "+el"], "rle": ["dcmcrle"]}
    series = T.make_series(os.path.join(tmp, "s"), T.stand_in_pngs()[:2])
    real = os.path.join(tmp, "s", series["slices"][0]["file"])
    for src_name, src in [("MR_small", mr), ("UWMGI 16-bit", real)]:
        for name, cmd in syntaxes.items():
            out = os.path.join(tmp, f"{name}.dcm")
            subprocess.run(cmd + [src, out], check=True)
            ts = str(pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            same(out, src, f"{src_name} as {name} ({ts})")

    print("generated series (PNG -> DICOM):")
    png = series["slices"][0]["png"]
    raw = os.path.join(tmp, "g.f32")
    info = T.read(real, raw=raw)
    got = np.fromfile(raw, np.float32).reshape(int(info["rows"]), int(info["cols"]))
    T.check(np.array_equal(got, np.array(Image.open(png)).astype(np.float32)),
            "generated slice != its PNG")
    m1 = T.make_series(os.path.join(tmp, "m1"), T.stand_in_pngs()[:1], "--monochrome1")
    info = T.read(os.path.join(tmp, "m1", m1["slices"][0]["file"]), raw=raw)
    got = np.fromfile(raw, np.float32).reshape(int(info["rows"]), int(info["cols"]))
    T.check(np.array_equal(got, np.array(Image.open(png)).astype(np.float32)),
            "MONOCHROME1 slice not inverted back to its PNG")
    print("  PNG values equal (MONOCHROME2 and MONOCHROME1)")

    print("refusals:")
    refused(os.path.join(D, "MR_small_bigendian.dcm"), -95, ["1.2.840.10008.1.2.2", "Big Endian"],
            "big endian")
    refused(os.path.join(D, "MR_small_jp2klossless.dcm"), -95, ["1.2.840.10008.1.2.4.90", "JPEG 2000"],
            "JPEG 2000")
    refused(os.path.join(D, "JPEG-lossy.dcm"), -95, ["1.2.840.10008.1.2.4.51"], "JPEG lossy")
    refused(os.path.join(D, "MR_truncated.dcm"), -22, ["truncated"], "truncated")
    rts = pydicom.dcmread(os.path.join(D, "rtstruct.dcm"), force=True)
    rts.file_meta = pydicom.dataset.FileMetaDataset()
    rts.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    rts.file_meta.MediaStorageSOPClassUID = rts.SOPClassUID
    rts.file_meta.MediaStorageSOPInstanceUID = rts.SOPInstanceUID
    rts.is_implicit_VR, rts.is_little_endian = True, True
    rts.save_as(os.path.join(tmp, "rts.dcm"), write_like_original=False)
    refused(os.path.join(tmp, "rts.dcm"), -33, ["not an image", "PixelData"], "RTSTRUCT")
    refused(os.path.join(D, "ExplVR_LitEndNoMeta.dcm"), -22, ["Part-10"], "no Part-10 header")
    refused(os.path.join(D, "SC_rgb_small_odd.dcm"), -33, ["not greyscale", "SamplesPerPixel"], "RGB")
    refused(mr, -7, ["Rows x Columns", "100"], "over max_pixels")
    notdicom = os.path.join(tmp, "x.dcm")
    with open(notdicom, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(300))
    refused(notdicom, -22, ["not DICOM"], "a PNG")
    mf = pydicom.dcmread(mr)
    mf.NumberOfFrames = 2
    mf.PixelData = mf.PixelData * 2
    mf.save_as(os.path.join(tmp, "mf.dcm"))
    refused(os.path.join(tmp, "mf.dcm"), -33, ["multi-frame", "NumberOfFrames 2"], "multi-frame")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(T.finish("check_reader"))
