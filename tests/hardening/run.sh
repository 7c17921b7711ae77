#!/bin/bash
# Fault and load tests of `segd serve` (tests/hardening/test_*.py, standard
# library Python): each script starts its own daemon on 127.0.0.1 port 0
# and is bounded in time.  Prints each script's checks, the measured
# figures, then "N passed, N failed, N skipped" (one per script); exits
# non-zero when a script fails, 77 when none failed but one skipped (exit
# 77: valgrind missing, or SEGD_SKIP_VALGRIND set).
#
#   tests/hardening/run.sh [NAME...]          e.g. run.sh burst sigterm
#   SEGD_BIN=build-asan/segd tests/hardening/run.sh
#   SEGD_SKIP_VALGRIND=1 tests/hardening/run.sh
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=/usr/bin/python3
export SEGD_BIN=${SEGD_BIN:-$ROOT/build/segd}
case "$SEGD_BIN" in /*) ;; *) SEGD_BIN=$ROOT/$SEGD_BIN ;; esac
if [ ! -x "$SEGD_BIN" ]; then
    echo "run.sh: $SEGD_BIN not built (meson setup build && ninja -C build)"
    echo "0 passed, 1 failed"; exit 1
fi

# cheap and deterministic first, valgrind last
ORDER="bad_weights width1_model nonfinite startup exposures bad_inputs http_edge deadline_trace burst crosstalk disconnect slowloris body_budget probes log_stall signals shutdown sigterm valgrind"
names=("$@")
[ ${#names[@]} = 0 ] && names=($ORDER)
LIMIT=${SEGD_HARDENING_TIMEOUT:-420}

passed=0; failed=0; skipped=0; failures=""; skips=""; figures=""
for n in "${names[@]}"; do
    t=tests/hardening/test_$n.py
    [ -f "$t" ] || { echo "run.sh: no $t"; failed=$((failed + 1)); failures="$failures $n"; continue; }
    if [ "$n" = valgrind ] && [ -n "${SEGD_SKIP_VALGRIND:-}" ]; then
        echo "SKIP: $n: SEGD_SKIP_VALGRIND is set"; skipped=$((skipped + 1)); skips="$skips $n"; continue
    fi
    echo "== $n"
    t0=$SECONDS
    out=$(cd tests/hardening && timeout -k 10 "$LIMIT" $PY "test_$n.py" 2>&1)
    rc=$?
    echo "$out"
    figures="$figures$(echo "$out" | sed -n 's/^  figure /  /p')"$'\n'
    if [ $rc = 0 ]; then
        passed=$((passed + 1)); echo "-- $n: ok ($((SECONDS - t0)) s)"
    elif [ $rc = 77 ]; then
        skipped=$((skipped + 1)); skips="$skips $n"
        echo "$out" | grep '^SKIP:' | sed "s/^SKIP: /SKIP: $n: /"
        echo "-- $n: SKIPPED"
    else
        [ $rc = 124 ] && echo "-- $n: timed out after $LIMIT s"
        failed=$((failed + 1)); failures="$failures $n"; echo "-- $n: FAILED ($((SECONDS - t0)) s)"
    fi
done
echo
echo "figures:"
printf '%s' "$figures" | grep -v '^$'
[ -n "$failures" ] && echo "failed:$failures"
[ -n "$skips" ] && echo "skipped:$skips"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ] || exit 1
[ "$skipped" = 0 ] || exit 77
