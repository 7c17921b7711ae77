#!/usr/bin/python3
"""Issue 12, against a real PACS: examples/pacs_roundtrip.py between Orthanc
(Debian's orthanc + orthanc-dicomweb, a throw-away instance: orthanctest.py)
and a real `segd serve`.

An MR series built from PNG slices (make_series.py: five consecutive slices
of one case-day from the UW-Madison data when it is on this machine, else
the stand-in slices committed in tests/data) is uploaded to Orthanc (REST
POST /instances); pacs_roundtrip.py fetches it (WADO-RS), posts it to segd
POST /v1/series?format=seg,rtstruct and stores the answer (STOW-RS).  Then,
in Orthanc: the study holds one new SEG series and one new RTSTRUCT series,
whose instances are the ones the tool printed; downloaded
(/instances/{id}/file) and read with pydicom, both have the source's
StudyInstanceUID, PatientID and FrameOfReferenceUID; the SEG's
ReferencedSeriesSequence lists exactly the source instances, each frame's
DerivationImageSequence names a source instance and the frame sits at that
slice's ImagePositionPatient; the RTSTRUCT's ContourImageSequence (of the
referenced series) lists exactly the source instances, each contour's names a
source instance and its points lie in that slice's plane; dciodvfy reports
no error in either (warnings are printed).  The two-request path
(--separate: format=seg and format=rtstruct, Accept: application/dicom)
gives objects that pass the same checks with the same figures.  Failures
of the tool: a series
the PACS does not have (exit 3), a series segd refuses (no
ImagePositionPatient on one instance: exit 4, segd's 422 message printed,
nothing stored).

Skips (77) only when Orthanc is not installed.  Environment: SEGD_BIN,
SEGD_WEIGHTS (required), SEGD_DATA (optional, the UW-Madison data).

  SEGD_BIN=build/segd SEGD_WEIGHTS=weights/unet3p-16.safetensors check_orthanc.py"""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dicomtest as T  # noqa: E402
import orthanctest  # noqa: E402

ROOT = T.ROOT
ROUNDTRIP = os.path.join(ROOT, "examples", "pacs_roundtrip.py")
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

why = orthanctest.installed()
if why:
    T.skip(why)


def fail(msg):
    print(f"FAIL: {msg}")
    print("check_orthanc: 1 failures")
    sys.exit(1)


try:
    import numpy as np
    import pydicom
except ImportError as e:
    fail(f"{e.name} missing (apt-get install python3-numpy python3-pydicom)")
if not shutil.which("dciodvfy"):
    fail("dciodvfy missing (apt-get install dicom3tools)")
SEGD = os.environ.get("SEGD_BIN", "")
WEIGHTS = os.environ.get("SEGD_WEIGHTS", "")
if not os.access(SEGD, os.X_OK) or not os.path.exists(WEIGHTS):
    fail(f"SEGD_BIN ({SEGD!r}) and SEGD_WEIGHTS ({WEIGHTS!r}) must name the segd binary and weights")
sys.path.insert(0, os.path.join(ROOT, "tests", "hardening"))
import segdtest  # noqa: E402


class Stop(Exception):
    """A failure after which the rest cannot run (already counted)."""


def _terminated(signum, frame):
    sys.exit(128 + signum)  # unwinds through the finally blocks: processes stopped, dirs removed


signal.signal(signal.SIGTERM, _terminated)


def series_pngs(n=5):
    """n consecutive slices from the middle of one case-day of the data set
    (organs present), or the stand-in slices in tests/data."""
    data = os.environ.get("SEGD_DATA", os.path.join(ROOT, "..", "shared", "data", "uwmgi"))
    d = os.path.join(data, "train", "case146", "case146_day25", "scans")
    pngs = sorted(glob.glob(os.path.join(d, "slice_*.png")))
    if len(pngs) >= 60:
        return pngs[55:55 + n]
    return T.stand_in_pngs()[:n]


def dciodvfy(path):
    p = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    lines = (p.stdout + p.stderr).splitlines()
    return [l for l in lines if l.startswith("Error")], [l for l in lines if l.startswith("Warning")]


def roundtrip(o, d, study, series, *opts, timeout=240):
    p = subprocess.run([sys.executable, ROUNDTRIP, "--pacs", o.dicomweb, "--segd", d.url,
                        "--study", study, "--series", series, *opts],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def study_series(o, study_uid):
    """{Modality: [series dicts (expanded)]} of a study in Orthanc."""
    status, _, body = o.request("/tools/lookup", data=study_uid.encode(), method="POST")
    hits = [h for h in (json.loads(body) if status == 200 else []) if h["Type"] == "Study"]
    if not hits:
        return {}
    out = {}
    for s in o.get_json(f"/studies/{hits[0]['ID']}/series?expand"):
        out.setdefault(s["MainDicomTags"].get("Modality"), []).append(s)
    return out


def in_plane(sl, pts):
    """Distances (mm) of patient points (N, 3) from a slice's plane."""
    o = np.array(sl["orientation"])
    return np.abs((pts - np.array(sl["position"])) @ np.cross(o[:3], o[3:]))


def check_seg(ds, src, by_uid):
    sl = src["slices"]
    T.check(ds.SOPClassUID == SEG_CLASS and ds.Modality == "SEG", "SEG: SOP class and Modality")
    T.check(ds.StudyInstanceUID == src["study_instance_uid"], "SEG: StudyInstanceUID of the source")
    T.check(ds.PatientID == src["patient_id"], f"SEG: PatientID {ds.PatientID!r}")
    T.check(ds.FrameOfReferenceUID == src["frame_of_reference_uid"], "SEG: FrameOfReferenceUID")
    T.check(ds.SeriesInstanceUID != src["series_instance_uid"], "SEG: a new SeriesInstanceUID")
    refs = ds.get("ReferencedSeriesSequence", [])
    T.check(len(refs) == 1 and refs[0].SeriesInstanceUID == src["series_instance_uid"],
            "SEG: ReferencedSeriesSequence names the source series (once)")
    listed = [i.ReferencedSOPInstanceUID for r in refs for i in r.ReferencedInstanceSequence]
    T.check(sorted(listed) == sorted(by_uid),
            f"SEG: ReferencedInstanceSequence lists exactly the {len(by_uid)} source instances "
            f"(got {len(listed)}, {len(set(listed) - set(by_uid))} foreign)")
    frames = ds.PerFrameFunctionalGroupsSequence
    T.check(len(frames) == int(ds.NumberOfFrames) and len(frames) > 0,
            f"SEG: {len(frames)} frames (NumberOfFrames {ds.NumberOfFrames})")
    used = set()
    bad = 0
    for f, fg in enumerate(frames):
        srcs = [s.ReferencedSOPInstanceUID for d in fg.get("DerivationImageSequence", [])
                for s in d.get("SourceImageSequence", [])]
        k = by_uid.get(srcs[0]) if len(srcs) == 1 else None
        if not T.check(k is not None, f"SEG frame {f}: DerivationImageSequence {srcs} is not one source instance"):
            bad += 1
            continue
        used.add(srcs[0])
        ipp = [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient]
        if not T.check(np.allclose(ipp, sl[k]["position"], atol=1e-3),
                       f"SEG frame {f}: ImagePositionPatient {ipp} is not its source's {sl[k]['position']}"):
            bad += 1
    T.check(used <= set(listed), "SEG: every frame's source is in ReferencedSeriesSequence")
    return {"frames": len(frames), "segments": len(ds.SegmentSequence),
            "slices_with_frames": len(used), "bad_frames": bad}


def check_rtstruct(ds, src, by_uid):
    sl = src["slices"]
    T.check(ds.SOPClassUID == RT_CLASS and ds.Modality == "RTSTRUCT", "RTSTRUCT: SOP class and Modality")
    T.check(ds.StudyInstanceUID == src["study_instance_uid"], "RTSTRUCT: StudyInstanceUID of the source")
    T.check(ds.PatientID == src["patient_id"], f"RTSTRUCT: PatientID {ds.PatientID!r}")
    T.check(ds.SeriesInstanceUID != src["series_instance_uid"], "RTSTRUCT: a new SeriesInstanceUID")
    rfrs = ds.get("ReferencedFrameOfReferenceSequence", [])
    T.check(len(rfrs) == 1 and rfrs[0].FrameOfReferenceUID == src["frame_of_reference_uid"],
            "RTSTRUCT: ReferencedFrameOfReferenceSequence names the source's frame of reference (once)")
    if ds.get("FrameOfReferenceUID"):
        T.check(ds.FrameOfReferenceUID == src["frame_of_reference_uid"], "RTSTRUCT: FrameOfReferenceUID")
    listed = []
    for rfr in rfrs:
        for st in rfr.get("RTReferencedStudySequence", []):
            T.check(st.ReferencedSOPInstanceUID == src["study_instance_uid"],
                    "RTSTRUCT: RTReferencedStudySequence names the source study")
            for se in st.get("RTReferencedSeriesSequence", []):
                T.check(se.SeriesInstanceUID == src["series_instance_uid"],
                        "RTSTRUCT: RTReferencedSeriesSequence names the source series")
                listed += [i.ReferencedSOPInstanceUID for i in se.get("ContourImageSequence", [])]
    T.check(sorted(listed) == sorted(by_uid),
            f"RTSTRUCT: ContourImageSequence of the series lists exactly the {len(by_uid)} source "
            f"instances (got {len(listed)}, {len(set(listed) - set(by_uid))} foreign)")
    for r in ds.get("StructureSetROISequence", []):
        T.check(r.ReferencedFrameOfReferenceUID == src["frame_of_reference_uid"],
                f"RTSTRUCT ROI {r.ROINumber}: ReferencedFrameOfReferenceUID")
    contours, off, used, bad = 0, 0.0, set(), 0
    for roi in ds.get("ROIContourSequence", []):
        for c in roi.get("ContourSequence", []):
            contours += 1
            imgs = [i.ReferencedSOPInstanceUID for i in c.get("ContourImageSequence", [])]
            k = by_uid.get(imgs[0]) if len(imgs) == 1 else None
            if not T.check(k is not None, f"RTSTRUCT contour {contours}: ContourImageSequence {imgs} "
                           "is not one source instance"):
                bad += 1
                continue
            used.add(imgs[0])
            pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
            off = max(off, float(in_plane(sl[k], pts).max()))
    T.check(contours > 0, "RTSTRUCT: at least one contour")
    T.check(off < 1e-3, f"RTSTRUCT: contour points {off:.3g} mm off their slice's plane")
    T.check(used <= set(listed), "RTSTRUCT: every contour's image is in the series' ContourImageSequence")
    return {"rois": len(ds.get("StructureSetROISequence", [])), "contours": contours,
            "slices_with_contours": len(used), "max_off_plane_mm": float(f"{off:.2g}"), "bad": bad}


tmp = T.tmpdir()
orthanc = daemon = None
try:
    pngs = series_pngs()
    print(f"{len(pngs)} slices from {os.path.dirname(pngs[0])}")
    src = T.make_series(os.path.join(tmp, "mr"), pngs)
    src["patient_id"] = pydicom.dcmread(os.path.join(tmp, "mr", src["slices"][0]["file"])).PatientID
    by_uid = {s["sop_instance_uid"]: k for k, s in enumerate(src["slices"])}

    orthanc = orthanctest.Orthanc()
    print(f"  Orthanc {orthanc.system.get('Version')} on {orthanc.url} (pid {orthanc.proc.pid})")
    for s in src["slices"]:
        orthanc.upload(os.path.join(tmp, "mr", s["file"]))
    before = study_series(orthanc, src["study_instance_uid"])
    T.check(list(before) == ["MR"] and len(before["MR"][0]["Instances"]) == len(pngs),
            f"Orthanc holds the MR series ({ {m: len(v) for m, v in before.items()} })")

    daemon = segdtest.Daemon(binary=SEGD, weights=WEIGHTS)
    print(f"  segd on {daemon.url}")
    rc, out, err = roundtrip(orthanc, daemon, src["study_instance_uid"], src["series_instance_uid"])
    print("  pacs_roundtrip.py: exit " + str(rc) + "\n    " + (err + out).strip().replace("\n", "\n    "))
    if not T.check(rc == 0, f"pacs_roundtrip.py exit status {rc}"):
        raise Stop
    printed = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 2:
            printed[f[0]] = f[1]
    T.check(sorted(printed) == ["RTSTRUCT", "SEG"], f"the tool printed one SEG and one RTSTRUCT: {out!r}")

    after = study_series(orthanc, src["study_instance_uid"])
    counts = {m: [len(s["Instances"]) for s in v] for m, v in after.items()}
    T.check(counts == {"MR": [len(pngs)], "SEG": [1], "RTSTRUCT": [1]},
            f"the study holds the MR series, one SEG series and one RTSTRUCT series: {counts}")
    stats = {}
    for kind, check in (("SEG", check_seg), ("RTSTRUCT", check_rtstruct)):
        if kind not in after:
            continue
        path = os.path.join(tmp, f"{kind}.dcm")
        with open(path, "wb") as f:
            f.write(orthanc.file(after[kind][0]["Instances"][0]))
        ds = pydicom.dcmread(path)
        T.check(ds.SOPInstanceUID == printed.get(kind), f"{kind}: the instance the tool printed")
        stats[kind] = check(ds, src, by_uid)
        errors, warnings = dciodvfy(path)
        T.check(not errors, f"dciodvfy {kind}: {errors}")
        for w in sorted(set(warnings)):
            print(f"    dciodvfy {kind} warning: {w}")
        stats[kind].update(dciodvfy_errors=len(errors), dciodvfy_warnings=len(warnings),
                           bytes=os.path.getsize(path))
        print(f"  {kind}: {stats[kind]}")

    # the two-request path (what a segd without multipart answers gets): format=seg and
    # format=rtstruct with Accept: application/dicom, written out instead of stored
    sep = os.path.join(tmp, "separate")
    rc, out, err = roundtrip(orthanc, daemon, src["study_instance_uid"], src["series_instance_uid"],
                             "--separate", "--no-store", "--out", sep)
    T.check(rc == 0 and len(out.split()) >= 4, f"--separate --no-store: exit {rc}, {err.strip()!r}")
    for kind, check in (("SEG", check_seg), ("RTSTRUCT", check_rtstruct)):
        path = os.path.join(sep, f"{kind}.dcm")
        if T.check(os.path.exists(path), f"--separate: {kind}.dcm written"):
            got = check(pydicom.dcmread(path), src, by_uid)
            errors, _ = dciodvfy(path)
            T.check(not errors, f"dciodvfy {kind} (--separate): {errors}")
            want = {k: stats.get(kind, {}).get(k) for k in got}
            T.check(got == want, f"--separate {kind}: {got}, the multipart answer's: {want}")
    print(f"  --separate (format=seg, format=rtstruct, Accept: application/dicom): exit {rc}")

    # failures: a series the PACS does not have; a series segd refuses
    rc, out, err = roundtrip(orthanc, daemon, src["study_instance_uid"], "1.2.3.4.5.6.7")
    T.check(rc == 3 and "WADO-RS" in err and "404" in err, f"unknown series: exit {rc}, {err.strip()!r}")
    print(f"  unknown series: exit {rc}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    bad = T.make_series(os.path.join(tmp, "bad"), pngs, "--slice-spacing", "2.5")
    for k, s in enumerate(bad["slices"]):
        p = os.path.join(tmp, "bad", s["file"])
        if k == 1:
            ds = pydicom.dcmread(p)
            del ds.ImagePositionPatient
            ds.save_as(p)
        orthanc.upload(p)
    rc, out, err = roundtrip(orthanc, daemon, bad["study_instance_uid"], bad["series_instance_uid"])
    msg = err.strip().splitlines()[-1] if err.strip() else ""
    T.check(rc == 4 and "HTTP 422" in msg and ": " in msg.split("HTTP 422", 1)[1],
            f"series without ImagePositionPatient: exit {rc}, segd's 422 and message: {msg!r}")
    print(f"  refused series: exit {rc}: {msg}")
    counts = {m: [len(s["Instances"]) for s in v]
              for m, v in study_series(orthanc, src["study_instance_uid"]).items()}
    T.check(counts == {"MR": [len(pngs), len(pngs)], "SEG": [1], "RTSTRUCT": [1]},
            f"nothing stored for the refused series: {counts}")
except Stop:
    pass
except Exception as e:  # noqa: BLE001 - any error is a failed check, after cleanup
    import traceback
    traceback.print_exc()
    T.check(False, f"{type(e).__name__}: {e}")
finally:
    if daemon is not None:
        rc = daemon.stop()
        T.check(rc == 0, f"segd exit status after SIGTERM: {rc}")
        if T.failures:
            print("  segd log:\n    " + daemon.log().replace("\n", "\n    "))
    if orthanc is not None:
        if T.failures:
            print("  Orthanc log:\n    " + orthanc.log().replace("\n", "\n    "))
        rc = orthanc.close()
        T.check(rc == 0, f"Orthanc exit status after SIGTERM: {rc}")
        T.check(not os.path.exists(orthanc.tmp), "Orthanc's temporary directory removed")
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(T.finish("check_orthanc"))
