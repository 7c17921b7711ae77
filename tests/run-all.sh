#!/bin/bash
# The one test command: installs what is missing (Debian 12, as root), builds
# segd, and runs every test: meson suite (unit, golden vs PyTorch,
# integration), training pytest suite, sanitizer builds (ASan+UBSan, TSan),
# deployment/config checks, container check, viewer/OpenAPI/client checks and
# short fuzz runs.  Ends with "N passed, N failed"; exits non-zero on failure.
#
#   sudo tests/run-all.sh            (from the repository root)
#   SEGD_QUICK=1 tests/run-all.sh    (skip sanitizer builds, fuzzing, container)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/usr/bin/python3
export SEGD_DATA="${SEGD_DATA:-$ROOT/../shared/data/uwmgi}"

PKGS="gcc meson ninja-build pkg-config libmicrohttpd-dev libjansson-dev libpng-dev
      libopenblas-dev libcurl4-openssl-dev curl python3 python3-torch python3-numpy
      python3-pil python3-pytest python3-yaml clang libclang-rt-14-dev haproxy prometheus valgrind"
PKGS="$PKGS chromium"
command -v node >/dev/null && command -v npm >/dev/null || PKGS="$PKGS nodejs npm"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/tmp/segd-apt.log 2>&1 \
            || { tail -20 /tmp/segd-apt.log; echo "apt-get failed"; exit 1; }
    else
        echo "== missing packages:$missing (run as root to install them); continuing"
    fi
fi

passed=0; failed=0; failures=""
step() { # step NAME CMD...: run one suite, count it
    local name=$1; shift
    echo; echo "== $name"
    local t0=$SECONDS
    if "$@"; then
        passed=$((passed + 1)); echo "-- $name: ok ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1)); failures="$failures $name"; echo "-- $name: FAILED ($((SECONDS - t0)) s)"
    fi
}

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

step "build (-Werror)" build build
step "meson test" meson test -C build --print-errorlogs
step "train pytest" env SEGD_BIN="$ROOT/build/segd" $PY -m pytest -q -p no:cacheprovider train/tests

if [ -z "${SEGD_QUICK:-}" ]; then
    step "build asan+ubsan" build build-asan -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false
    step "meson test asan+ubsan" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 meson test -C build-asan --print-errorlogs -t 4 --no-suite viewer
    step "build tsan" build build-tsan -Dbuildtype=debugoptimized -Db_sanitize=thread -Db_lundef=false
    step "meson test tsan" env TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
        meson test -C build-tsan --print-errorlogs -t 4 --no-suite viewer
fi

for t in tests/deploy/check-configs.sh tests/hardening/run.sh; do
    [ -f "$t" ] && step "$t" env SEGD_BIN="$ROOT/build/segd" bash "$t"
done
if [ -z "${SEGD_QUICK:-}" ]; then
    for t in tests/container/check-image.sh tests/fuzz/run.sh; do
        [ -f "$t" ] && step "$t" env SEGD_BIN="$ROOT/build/segd" bash "$t"
    done
fi

echo
[ -n "$failures" ] && echo "failed suites:$failures"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
