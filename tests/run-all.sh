#!/bin/bash
# The one test command: installs what is missing (Debian 12, as root), builds
# segd, and runs every test: meson suite (unit, golden vs PyTorch,
# integration, viewer), training pytest suite, sanitizer builds (ASan+UBSan,
# TSan), deployment/config checks, fault tests (allocation failures
# included), container check, and short fuzz runs.
#
#   sudo tests/run-all.sh            (from the repository root)
#   SEGD_QUICK=1 tests/run-all.sh    (skip sanitizer builds, fuzzing, container)
#   CI=true tests/run-all.sh         (what .ci/run does: a skip is a failure,
#                                     except one whose only reason is "this CPU" lacks
#                                     an instruction set, e.g. AVX512-BF16)
#
# Each suite passes, fails or is SKIPPED (exit 77, or a meson test or pytest
# that skipped: a skipped test is not a passed test).  The last line is
# "N passed, N failed, N skipped"; the lines before it name each skipped
# suite and why.  Exits non-zero on any failure, and with CI=true on any skip
# except those SEGD_QUICK=1 asks for and the CPU's: the command installs everything the
# suites need, so a skip in CI means a set-up that silently did not happen.
# A failed set-up step (apt-get, the container base image, npm ci) is a
# failure, never a skip.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3
export SEGD_DATA="${SEGD_DATA:-$ROOT/../shared/data/uwmgi}"
CI_MODE=0
case "${CI:-}" in true|1|yes) CI_MODE=1 ;; esac
LOGDIR=$(mktemp -d /tmp/segd-run-all.XXXXXX)
trap 'rm -rf "$LOGDIR"' EXIT

passed=0; failed=0; skipped=0; failures=""; skips=""
count_skip() { # count_skip NAME WHY: a suite that did not run (in CI: a failure,
    # unless every reason is the CPU's: "this CPU" lacks an instruction set
    # extension, nothing CI could install; still counted and named)
    local hw=0
    if [ -n "$2" ] && ! tr ';' '\n' <<< "$2" | grep -qv 'this CPU'; then hw=1; fi
    if [ "$CI_MODE" = 1 ] && [ "${3:-}" != quick ] && [ "$hw" = 0 ]; then
        failed=$((failed + 1)); failures="$failures $1"
        echo "-- $1: SKIPPED, a failure with CI=true ($2)"
    else
        skipped=$((skipped + 1)); skips="$skips"$'\n'"  $1: $2"
        echo "-- $1: SKIPPED ($2)"
    fi
}

# Why a suite skipped: its "SKIP: ..." lines, the meson tests that skipped
# (from the testlog), pytest's "SKIPPED [n] file: reason" lines.
skip_reasons() { # skip_reasons LOG
    grep -E '^(SKIP:|SKIPPED |skipped test )' "$1" | sed -E 's/^(SKIP: |SKIPPED |skipped test )//' |
        sort -u | head -8 | paste -sd ';' -
}

step() { # step NAME CMD...: run one suite, count it (exit 77: skipped)
    local name=$1; shift
    local log="$LOGDIR/step.log"
    echo; echo "== $name"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1)); echo "-- $name: ok ($((SECONDS - t0)) s)"
    elif [ "$rc" = 77 ]; then
        count_skip "$name" "$(skip_reasons "$log")"
    else
        failed=$((failed + 1)); failures="$failures $name"; echo "-- $name: FAILED ($((SECONDS - t0)) s)"
    fi
}

PKGS="gcc meson ninja-build pkg-config libmicrohttpd-dev libjansson-dev libpng-dev
      libopenblas-dev libcurl4-openssl-dev curl python3 python3-torch python3-numpy
      python3-pil python3-pytest python3-yaml clang libclang-rt-14-dev haproxy prometheus valgrind
      chromium g++ libdcmtk-dev dcmtk dicom3tools python3-pydicom openssl
      orthanc orthanc-dicomweb"
command -v node >/dev/null && command -v npm >/dev/null || PKGS="$PKGS nodejs npm"
# the container check builds the image with podman on a debootstrapped base
[ -z "${SEGD_QUICK:-}" ] && PKGS="$PKGS podman debootstrap"
install_packages() {
    local missing="" p
    for p in $PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && { echo "all packages present"; return 0; }
    if [ "$(id -u)" != 0 ]; then
        echo "SKIP: missing packages:$missing (run as root to install them)"
        return 77
    fi
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >"$LOGDIR/apt.log" 2>&1 \
        || { tail -20 "$LOGDIR/apt.log"; echo "apt-get failed"; return 1; }
}
step "install packages" install_packages

build() { # build DIR [meson options...]
    local dir=$1; shift
    # reconfigure an existing build dir: packages installed since (libcurl for
    # the integration tests, say) must be found, or their tests go missing
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" -Dwerror=true "$@" >/dev/null || return 1
    else
        meson setup "$dir" -Dwerror=true "$@" >/dev/null || return 1
    fi
    ninja -C "$dir" >/dev/null || ninja -C "$dir"
}

mesontest() { # mesontest DIR [meson test options...]: 77 when a test skipped
    local dir=$1; shift
    if ! meson test -C "$dir" --print-errorlogs "$@"; then
        # the end of a long run is what a CI page keeps: the summary repeats
        # which tests failed and the last lines of their output
        $PY - "$dir" "$dir/meson-logs/testlog.json" >> "$LOGDIR/failed-tests.txt" <<'PY'
import json, sys
for line in open(sys.argv[2]):
    t = json.loads(line)
    if t.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL"):
        print(f"-- {sys.argv[1]}: {t['name']}: {t['result']} after {t.get('duration') or 0:.1f} s "
              f"(exit {t.get('returncode')}), last lines of its output:")
        out = ((t.get("stdout") or "") + "\n" + (t.get("stderr") or "")).strip().splitlines()
        print("\n".join("   " + l[:300] for l in out[-40:]))
PY
        return 1
    fi
    # meson counts a skipped test (exit 77) as no failure: say which, and why
    $PY - "$dir/meson-logs/testlog.json" <<'PY'
import json, sys
skips = []
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t.get("result") == "SKIP":
        why = [l for l in (t.get("stdout") or "").splitlines() if l.startswith("SKIP")]
        skips.append(f"{t['name']}: {why[-1] if why else 'skipped'}")
for s in skips:
    print("skipped test " + s)
sys.exit(77 if skips else 0)
PY
}

pytest_suite() { # pytest_suite ARGS...: 77 when a test skipped
    local out="$LOGDIR/pytest.log"
    $PY -m pytest -q -rs -p no:cacheprovider "$@" 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] && grep -q '^SKIPPED' "$out" && return 77
    return "$rc"
}

envrun() { # envrun VAR=VALUE... -- CMD...: a function with extra environment
    while [ "$1" != -- ]; do export "${1?}"; shift; done
    shift
    "$@"
}

step "build (-Werror)" build build
step "meson test" mesontest build
step "train pytest" envrun SEGD_BIN="$ROOT/build/segd" -- pytest_suite train/tests

if [ -z "${SEGD_QUICK:-}" ]; then
    step "build asan+ubsan" build build-asan -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false
    step "meson test asan+ubsan" envrun ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 -- mesontest build-asan -t 4 --no-suite viewer
    step "build tsan" build build-tsan -Dbuildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false
    # OpenBLAS's own worker threads are not instrumented, so TSan cannot see
    # the join that orders their writes before our reads (a false race in
    # sgemm_beta vs bias_act); segd's own threads stay fully checked
    step "meson test tsan" envrun TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        OPENBLAS_NUM_THREADS=1 -- \
        mesontest build-tsan -t 4 --no-suite viewer
else
    for s in "build asan+ubsan" "meson test asan+ubsan" "build tsan" "meson test tsan"; do
        count_skip "$s" "SEGD_QUICK=1" quick
    done
fi

for t in tests/deploy/check-configs.sh tests/hardening/run.sh; do
    step "$t" env SEGD_BIN="$ROOT/build/segd" bash "$t"
done
for t in tests/container/check-image.sh tests/fuzz/run.sh; do
    if [ -z "${SEGD_QUICK:-}" ]; then
        step "$t" env SEGD_BIN="$ROOT/build/segd" bash "$t"
    else
        count_skip "$t" "SEGD_QUICK=1" quick
    fi
done

echo
[ -s "$LOGDIR/failed-tests.txt" ] && cat "$LOGDIR/failed-tests.txt"
[ -n "$failures" ] && echo "failed suites:$failures"
[ -n "$skips" ] && echo "skipped suites:$skips"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
