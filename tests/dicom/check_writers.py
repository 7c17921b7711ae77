#!/usr/bin/python3
"""segd_dicom_write_seg and segd_dicom_write_rtstruct, checked from the
outside: dciodvfy (dicom3tools) finds no error in either object; pydicom
reads both; every SEG frame equals its input mask pixel for pixel and sits at
its slice's position; the RTSTRUCT contours, mapped back to pixels with the
geometry computed here, rasterise (even-odd, pixel centres) to the masks at
Dice >= 0.98 per organ and slice; every contour point lies on a pixel corner
of the mask boundary at the patient position computed here independently
(P = IPP + row_dir * PixelSpacing[1] * c + col_dir * PixelSpacing[0] * r);
a rectangle gives exactly its four corners.  Series: posted out of order,
rows/columns swapped in ImageOrientationPatient, non-square pixels, coronal
and oblique planes."""
import os
import random
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dicomtest as T  # noqa: E402

T.need("dciodvfy")
import numpy as np  # noqa: E402
import pydicom  # noqa: E402

SCT = {1: ("14742008", "Large intestine"), 2: ("30315005", "Small intestine"), 3: ("69695003", "Stomach")}
SHA = "5f" * 32


def dciodvfy(path):
    p = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    lines = (p.stdout + p.stderr).splitlines()
    return [l for l in lines if l.startswith("Error")], [l for l in lines if l.startswith("Warning")]


def corner_mm(sl, r, c):
    """Patient position (mm) of pixel coordinates (r, c) (centres at integers)."""
    ipp = np.array(sl["position"])
    o = np.array(sl["orientation"])
    ps = sl["pixel_spacing"]
    return ipp + o[:3] * ps[1] * c + o[3:] * ps[0] * r


def to_pixels(sl, pts):
    """Patient points (N, 3) to (row, col) and the distance off the plane."""
    ipp = np.array(sl["position"])
    o = np.array(sl["orientation"])
    ps = sl["pixel_spacing"]
    d = pts - ipp
    c = d @ o[:3] / ps[1]
    r = d @ o[3:] / ps[0]
    off = np.abs(d @ np.cross(o[:3], o[3:]))
    return r, c, off


def check_case(name, series_dir, series, masks, shuffle_seed, rect):
    sl = series["slices"]
    n = len(sl)
    files = list(range(n))
    random.Random(shuffle_seed).shuffle(files)  # post out of order
    mpath = os.path.join(series_dir, "masks.u8")
    np.ascontiguousarray(masks[files]).tofile(mpath)
    seg, rt = os.path.join(series_dir, "seg.dcm"), os.path.join(series_dir, "rt.dcm")
    rc, out, err = T.tool("write", "--masks", mpath, "--seg", seg, "--rtstruct", rt,
                          "--name", "unet3p-16", "--version", SHA,
                          *[os.path.join(series_dir, sl[i]["file"]) for i in files])
    if not T.check(rc == 0, f"{name}: write failed: {err}"):
        return
    stats = {"name": name}
    for kind, path in [("SEG", seg), ("RTSTRUCT", rt)]:
        errors, warnings = dciodvfy(path)
        T.check(not errors, f"{name}: dciodvfy {kind}: {errors}")
        stats[kind] = (len(errors), len(warnings))
        for w in sorted(set(warnings)):
            print(f"    dciodvfy {kind} warning: {w}")
    by_uid = {s["sop_instance_uid"]: k for k, s in enumerate(sl)}

    # ---- SEG
    ds = pydicom.dcmread(seg)
    T.check(ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4", "SEG SOPClassUID")
    T.check(ds.SegmentationType == "BINARY", "SegmentationType")
    T.check(ds.FrameOfReferenceUID == series["frame_of_reference_uid"], "SEG FrameOfReferenceUID")
    T.check(ds.StudyInstanceUID == series["study_instance_uid"], "SEG StudyInstanceUID")
    T.check(len(ds.SegmentSequence) == 3, "three segments")
    for s in ds.SegmentSequence:
        code = s.SegmentedPropertyTypeCodeSequence[0]
        cat = s.SegmentedPropertyCategoryCodeSequence[0]
        T.check((code.CodeValue, code.CodeMeaning) == SCT[s.SegmentNumber] and
                code.CodingSchemeDesignator == "SCT", f"segment {s.SegmentNumber} type code")
        T.check(cat.CodeValue == "123037004" and cat.CodingSchemeDesignator == "SCT",
                "category Anatomical Structure")
        T.check(s.SegmentAlgorithmType == "AUTOMATIC" and s.SegmentAlgorithmName == "unet3p-16",
                "SegmentAlgorithmType/Name")
        T.check(len(s.RecommendedDisplayCIELabValue) == 3, "RecommendedDisplayCIELabValue")
        ai = s.SegmentationAlgorithmIdentificationSequence[0]
        T.check(ai.AlgorithmName == "unet3p-16" and ai.AlgorithmVersion == SHA, "AlgorithmVersion")
    frames = ds.pixel_array.reshape(-1, sl[0]["rows"], sl[0]["cols"])
    T.check(frames.shape[0] == 3 * n, f"{frames.shape[0]} frames, expected {3 * n}")
    shared = ds.SharedFunctionalGroupsSequence[0]
    T.check(np.allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                        sl[0]["pixel_spacing"]), "shared PixelSpacing")
    T.check(np.allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                        sl[0]["orientation"], atol=1e-6), "shared ImageOrientationPatient")
    equal = 0
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        organ = fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber - 1
        src = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = by_uid.get(src)
        if not T.check(k is not None, f"frame {f}: source {src} not in the series"):
            continue
        T.check(np.allclose([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient],
                            sl[k]["position"], atol=1e-4), f"frame {f}: ImagePositionPatient")
        ok = np.array_equal(frames[f].astype(bool), masks[k, organ].astype(bool))
        equal += ok
        T.check(ok, f"{name}: SEG frame {f} (organ {organ}, slice {k}) differs from its mask")
    stats["seg_frames_equal"] = f"{equal}/{3 * n}"

    # ---- RTSTRUCT
    ds = pydicom.dcmread(rt)
    T.check(ds.Modality == "RTSTRUCT", "Modality")
    rfr = ds.ReferencedFrameOfReferenceSequence[0]
    T.check(rfr.FrameOfReferenceUID == series["frame_of_reference_uid"], "RT FrameOfReferenceUID")
    rser = rfr.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    T.check(rser.SeriesInstanceUID == series["series_instance_uid"], "RTReferencedSeriesSequence")
    T.check(sorted(i.ReferencedSOPInstanceUID for i in rser.ContourImageSequence) ==
            sorted(by_uid), "ContourImageSequence of the series lists every slice")
    for o in ds.RTROIObservationsSequence:
        T.check(o.RTROIInterpretedType == "ORGAN", "RTROIInterpretedType ORGAN")
    for r in ds.StructureSetROISequence:
        T.check(r.ROIGenerationAlgorithm == "AUTOMATIC", "ROIGenerationAlgorithm AUTOMATIC")
    polys = {}  # (organ, slice) -> list of (col, row) polygons
    mm = {}  # (organ, slice) -> list of (N, 3) patient points
    max_err_mm = 0.0
    max_off_mm = 0.0
    for roi in ds.ROIContourSequence:
        organ = roi.ReferencedROINumber - 1
        for c in roi.get("ContourSequence", []):
            T.check(c.ContourGeometricType == "CLOSED_PLANAR", "CLOSED_PLANAR")
            k = by_uid.get(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
            if not T.check(k is not None, "contour references a slice of the series"):
                continue
            pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
            T.check(len(pts) == int(c.NumberOfContourPoints), "NumberOfContourPoints")
            r, col, off = to_pixels(sl[k], pts)
            max_off_mm = max(max_off_mm, off.max())
            # every point: a pixel corner (half-integer), on the mask boundary, where the
            # independently computed corner position says it is
            rr, cc = np.round(r - 0.5) + 0.5, np.round(col - 0.5) + 0.5
            exp = np.array([corner_mm(sl[k], a, b) for a, b in zip(rr, cc)])
            max_err_mm = max(max_err_mm, np.linalg.norm(exp - pts, axis=1).max())
            m = np.pad(masks[k, organ].astype(bool), 1)
            for a, b in zip(rr, cc):
                quad = m[int(a + 0.5):int(a + 0.5) + 2, int(b + 0.5):int(b + 0.5) + 2]
                if not (quad.any() and not quad.all()):
                    T.check(False, f"{name}: contour point ({a}, {b}) not on the boundary")
                    break
            polys.setdefault((organ, k), []).append(list(zip(col, r)))
            mm.setdefault((organ, k), []).append(pts)
    half_px = 0.5 * min(sl[0]["pixel_spacing"])
    T.check(max_err_mm < half_px, f"{name}: contour points {max_err_mm:.3g} mm off")
    T.check(max_off_mm < 1e-3, f"{name}: contour points {max_off_mm:.3g} mm off the slice plane")
    worst = 1.0
    for k in range(n):
        for organ in range(3):
            ras = T.even_odd(polys.get((organ, k), []), sl[k]["rows"], sl[k]["cols"])
            d = T.dice(ras, masks[k, organ].astype(bool))
            worst = min(worst, d)
            T.check(d >= 0.98, f"{name}: Dice {d:.4f} organ {organ} slice {k}")
    # the rectangle: exactly its four corners, computed here
    (organ, k, r0, c0, r1, c1) = rect
    got = polys.get((organ, k), [])
    T.check(len(got) == 1 and len(got[0]) == 4, f"{name}: rectangle gave {len(got)} contours")
    if got:
        want = {(r0 - 0.5, c0 - 0.5), (r0 - 0.5, c1 + 0.5), (r1 + 0.5, c1 + 0.5), (r1 + 0.5, c0 - 0.5)}
        have = {(round(rr, 6), round(cc, 6)) for cc, rr in got[0]}
        T.check(have == want, f"{name}: rectangle corners {sorted(have)} != {sorted(want)}")
        # in mm: each written point against the nearest corner computed here
        exp = np.array([corner_mm(sl[k], a, b) for a, b in want])
        pts = mm[(organ, k)][0]
        rect_err = max(np.linalg.norm(exp - p, axis=1).min() for p in pts)
        T.check(rect_err < half_px, f"{name}: rectangle corners {rect_err:.3g} mm off")
        stats["rect_corner_err_mm"] = float(f"{rect_err:.2g}")
    stats.update(min_dice=round(worst, 4), max_point_err_mm=float(f"{max_err_mm:.2g}"),
                 max_off_plane_mm=float(f"{max_off_mm:.2g}"))
    print(f"  {stats}")


tmp = T.tmpdir()
try:
    pngs = T.real_run(6) or T.stand_in_pngs()
    print(f"{len(pngs)} slices from {os.path.dirname(pngs[0])}")
    cases = [("axial out of order", []), ("rows/columns swapped", ["--orientation", "swapped"]),
             ("non-square pixels", ["--spacing", "1.25,2.1"]),
             ("coronal", ["--orientation", "coronal"]),
             ("oblique non-square", ["--orientation", "oblique", "--spacing", "0.8,1.7"])]
    for seed, (name, opts) in enumerate(cases):
        d = os.path.join(tmp, f"case{seed}")
        s = T.make_series(d, pngs, *opts)
        rows, cols = s["slices"][0]["rows"], s["slices"][0]["cols"]
        masks = T.synthetic_masks(len(pngs), rows, cols, seed)
        # a rectangle for the stomach on the first slice: rows 20..31, columns 40..69
        masks[0, 2] = 0
        masks[0, 2, 20:32, 40:70] = 1
        if name == "coronal":
            masks[:, 0] = 0  # an organ absent from the whole series: an ROI without contours
        check_case(name, d, s, masks, seed + 100, (2, 0, 20, 40, 31, 69))
finally:
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(T.finish("check_writers"))
