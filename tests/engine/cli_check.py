#!/usr/bin/python3
"""`segd infer` as a user runs it (issue 11, items 9 and 10).

usage: cli_check.py SEGD_EXE DATADIR DEFAULT_WEIGHTS DATA_DIR

- a slice whose file name is not UTF-8 is segmented: exit 0, one JSON line,
  the id is the stem with the bad bytes replaced by '_' (the rule of the
  server's multipart file names);
- run from a directory without weights/, with no --weights and no
  $SEGD_WEIGHTS, it finds the shipped weights beside its build tree;
- its help names the data directory of meson's prefix (DATADIR) and the
  configured default weights file.
Prints "N passed, N failed"; exits 1 on any failure."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

exe, datadir, default_weights, data = sys.argv[1:5]
SLICE = os.path.join(data, "synthetic-37x53-grey8.png")
passed = failed = 0


def check(cond, name, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"  ok   {name}")
    else:
        failed += 1
        print(f"  FAIL {name}: {detail}")


env = {k: v for k, v in os.environ.items() if k != "SEGD_WEIGHTS"}
env["OPENBLAS_NUM_THREADS"] = "1"
with tempfile.TemporaryDirectory() as tmp:
    # 9: a file name with bytes that are not UTF-8 (\xff\xfe)
    bad = os.path.join(os.fsencode(tmp), b"slice\xff\xfe-1.png")
    shutil.copyfile(SLICE, bad)
    w4 = os.fsencode(os.path.join(data, "golden-w4.safetensors"))
    r = subprocess.run([os.fsencode(exe), b"infer", b"--threads", b"1", b"--weights", w4, bad], cwd=tmp, env=env,
                       capture_output=True, timeout=120)
    lines = r.stdout.decode("utf-8", "replace").splitlines()
    doc = None
    try:
        doc = json.loads(r.stdout.decode("utf-8")) if len(lines) == 1 else None
    except ValueError:
        pass
    check(r.returncode == 0 and doc is not None, "non-UTF-8 file name: exit 0, one JSON document",
          f"exit {r.returncode}, stdout {r.stdout[:120]!r}, stderr {r.stderr[-200:]!r}")
    check(doc is not None and doc.get("id") == "slice__-1" and doc.get("width") == 37,
          "non-UTF-8 file name: id 'slice__-1' (bad bytes replaced), the slice segmented",
          doc and doc.get("id"))

    # 10: no weights/ in the working directory, no --weights, no $SEGD_WEIGHTS
    r = subprocess.run([exe, "infer", "--threads", "1", SLICE], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=300)
    check(r.returncode == 0 and '"width":37' in r.stdout,
          "run outside the checkout: the shipped weights are found beside the build tree",
          f"exit {r.returncode}: {r.stderr[-300:]}")
    if r.returncode == 0:
        model = json.loads(r.stdout)["model"]["name"]
        check(default_weights.startswith(model), f"it loaded {default_weights} (model {model})", model)

r = subprocess.run([exe, "infer", "--help"], env=env, capture_output=True, text=True, timeout=30)
check(datadir in r.stdout and default_weights in r.stdout,
      f"help names the installed data directory {datadir} and {default_weights}", r.stdout)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)
