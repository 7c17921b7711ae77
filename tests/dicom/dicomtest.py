"""Shared helpers of the DICOM checks (tests/dicom/check_*.py): skips, the
segd-dicom-tool driver, series generation, synthetic masks, rasterising."""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOL = os.environ.get("SEGD_DICOM_TOOL", os.path.join(ROOT, "build", "tests", "dicom", "segd-dicom-tool"))
TEST_DATA = os.environ.get("SEGD_TEST_DATA", os.path.join(ROOT, "tests", "data"))
PYDICOM_DATA = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
failures = []


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


def need(*tools):
    """Skip (77) unless numpy, pydicom, PIL and every tool named are present."""
    try:
        import numpy  # noqa: F401
        import pydicom  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as e:
        skip(f"{e.name} missing (apt-get install python3-numpy python3-pydicom python3-pil)")
    for t in tools:
        if not shutil.which(t):
            skip(f"{t} missing (apt-get install {'dicom3tools' if t == 'dciodvfy' else 'dcmtk'})")
    if not os.access(TOOL, os.X_OK):
        skip(f"{TOOL} not built")


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")
    return cond


def finish(name):
    if failures:
        print(f"{name}: {len(failures)} failures")
        return 1
    print(f"{name}: ok")
    return 0


def tool(*args):
    """(returncode, stdout, stderr) of segd-dicom-tool."""
    p = subprocess.run([TOOL, *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def read(path, raw=None, max_pixels=None):
    """The tool's key=value output as a dict, or raises with its error."""
    args = ["read"]
    if raw:
        args += ["--raw", raw]
    if max_pixels:
        args += ["--max-pixels", str(max_pixels)]
    rc, out, err = tool(*args, path)
    if rc != 0:
        raise RuntimeError(err.strip())
    return dict(line.split("=", 1) for line in out.splitlines())


def tmpdir():
    d = tempfile.mkdtemp(prefix="segd-dicom-")
    return d


def stand_in_pngs():
    """16-bit 266x266 slices committed in tests/data (case101): a stand-in
    series when the UW-Madison data is not on this machine."""
    pngs = [os.path.join(TEST_DATA, "case101_day20_slice_0090_266_266_1.50_1.50.png")]
    pngs += sorted(glob.glob(os.path.join(TEST_DATA, "robust16", "*.png")))
    return [p for p in pngs if os.path.exists(p)]


def real_run(n=8):
    """n consecutive slices of one case-day from $SEGD_DATA (or the shared
    data directory), or [] when absent."""
    data = os.environ.get("SEGD_DATA", os.path.join(ROOT, "..", "shared", "data", "uwmgi"))
    d = os.path.join(data, "train", "case146", "case146_day25", "scans")
    pngs = sorted(glob.glob(os.path.join(d, "slice_*.png")))
    return pngs[10:10 + n] if len(pngs) >= 10 + n else []


def make_series(out, pngs, *opts):
    import json
    subprocess.run([sys.executable, os.path.join(HERE, "make_series.py"), "--out", out, *opts,
                    *pngs], check=True)
    with open(os.path.join(out, "series.json")) as f:
        return json.load(f)


def synthetic_masks(n, rows, cols, seed=0):
    """(n, 3, rows, cols) uint8: a disc (large bowel), a ring with a hole
    (small bowel), an L shape (stomach), moving from slice to slice; one
    organ absent on slice 1, one touching the image border on the last."""
    import numpy as np
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    m = np.zeros((n, 3, rows, cols), np.uint8)
    for i in range(n):
        cy, cx = rows * 0.35 + 2 * i, cols * 0.4 + rng.integers(-3, 4)
        m[i, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 < (rows * 0.12 + i) ** 2
        r = np.hypot(yy - rows * 0.62, xx - cols * 0.6 - i)
        m[i, 1] = (r < rows * 0.16) & (r > rows * 0.06)
        m[i, 1][(np.abs(yy - rows * 0.62) < 2) & (xx > cols * 0.6)] = 0  # a notch
        y0, x0 = int(rows * 0.15) + i, int(cols * 0.65)
        m[i, 2, y0:y0 + rows // 6, x0:x0 + cols // 14] = 1
        m[i, 2, y0 + rows // 9:y0 + rows // 6, x0:x0 + cols // 5] = 1
    if n > 1:
        m[1, 2] = 0
        m[n - 1, 0, : rows // 5, : cols // 6] = 1  # at the border
    return m


def even_odd(polys, rows, cols):
    """Rasterise closed polygons (lists of (col, row) float vertices) with
    the even-odd rule at pixel centres (c, r): a small numpy scanline."""
    import numpy as np
    out = np.zeros((rows, cols), bool)
    cx = np.arange(cols, dtype=float)
    for poly in polys:
        p = np.asarray(poly, float)
        q = np.roll(p, -1, axis=0)
        for (x0, y0), (x1, y1) in zip(p, q):
            if y0 == y1:
                continue
            lo, hi = min(y0, y1), max(y0, y1)
            r0 = int(np.ceil(lo)) if np.ceil(lo) != lo else int(lo)
            for r in range(max(r0, 0), min(int(np.ceil(hi)), rows)):
                if not (lo <= r < hi):
                    continue
                x = x0 + (r - y0) * (x1 - x0) / (y1 - y0)
                out[r, cx > x] ^= True
    return out


def dice(a, b):
    import numpy as np
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s
