#!/usr/bin/python3
"""`segd infer` as a user runs it (issue 11, items 9 and 10).

usage: cli_check.py SEGD_EXE DATADIR DEFAULT_WEIGHTS DATA_DIR

- a slice whose file name is not UTF-8 is segmented: exit 0, one JSON line,
  the id is the stem with the bad bytes replaced by '_' (the rule of the
  server's multipart file names);
- run from a directory without weights/, with no --weights and no
  $SEGD_WEIGHTS, it finds the shipped weights beside its build tree;
- its help names the data directory of meson's prefix (DATADIR) and the
  configured default weights file;
- --precision: in the help, a bad value is a usage error (exit 2), a bad
  $SEGD_PRECISION exit 1 naming it, fp32 and auto always run, and bf16
  either runs or is refused (exit 1) for lack of AVX512-BF16.
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
check("--precision fp32|bf16|auto" in r.stdout and "SEGD_PRECISION" in r.stdout,
      "help names --precision and $SEGD_PRECISION", r.stdout)

W4 = os.path.join(data, "golden-w4.safetensors")
base = [exe, "infer", "--threads", "1", "--weights", W4]
r = subprocess.run(base + ["--precision", "fp16", SLICE], env=env, capture_output=True, text=True,
                   timeout=60)
check(r.returncode == 2 and "--precision" in r.stderr, "--precision fp16: usage error (exit 2)",
      f"exit {r.returncode}: {r.stderr[-200:]}")
r = subprocess.run(base + [SLICE], env=dict(env, SEGD_PRECISION="half"), capture_output=True,
                   text=True, timeout=60)
check(r.returncode == 1 and "SEGD_PRECISION 'half'" in r.stderr,
      "SEGD_PRECISION=half: exit 1 naming it", f"exit {r.returncode}: {r.stderr[-200:]}")
for p in ("fp32", "auto"):
    r = subprocess.run(base + ["--precision", p, SLICE], env=env, capture_output=True, text=True,
                       timeout=120)
    check(r.returncode == 0 and '"width":37' in r.stdout, f"--precision {p} runs",
          f"exit {r.returncode}: {r.stderr[-200:]}")
r = subprocess.run(base + ["--precision", "bf16", SLICE], env=env, capture_output=True, text=True,
                   timeout=120)
check((r.returncode == 0 and '"width":37' in r.stdout) or
      (r.returncode == 1 and "AVX512-BF16" in r.stderr),
      "--precision bf16 runs, or is refused for lack of AVX512-BF16",
      f"exit {r.returncode}: {r.stderr[-200:]}")
r = subprocess.run(base + ["--precision", "bf16", "--gemm", "openblas", SLICE], env=env,
                   capture_output=True, text=True, timeout=120)
check(r.returncode == 1 and "bf16" in r.stderr, "--precision bf16 --gemm openblas: refused",
      f"exit {r.returncode}: {r.stderr[-200:]}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)
