#!/bin/bash
# Fault and load tests of `segd serve` (tests/hardening/test_*.py, standard
# library Python): each script starts its own daemon on 127.0.0.1 port 0
# and is bounded in time.  Prints each script's checks, the measured
# figures, then "N passed, N failed" (one per script); exits non-zero when
# a script fails.
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
ORDER="bad_weights width1_model bad_inputs http_edge burst crosstalk disconnect slowloris sigterm valgrind"
names=("$@")
[ ${#names[@]} = 0 ] && names=($ORDER)
LIMIT=${SEGD_HARDENING_TIMEOUT:-420}

passed=0; failed=0; failures=""; figures=""
for n in "${names[@]}"; do
    t=tests/hardening/test_$n.py
    [ -f "$t" ] || { echo "run.sh: no $t"; failed=$((failed + 1)); failures="$failures $n"; continue; }
    if [ "$n" = valgrind ] && [ -n "${SEGD_SKIP_VALGRIND:-}" ]; then echo "== $n: skipped"; continue; fi
    echo "== $n"
    t0=$SECONDS
    out=$(cd tests/hardening && timeout -k 10 "$LIMIT" $PY "test_$n.py" 2>&1)
    rc=$?
    echo "$out"
    figures="$figures$(echo "$out" | sed -n 's/^  figure /  /p')"$'\n'
    if [ $rc = 0 ]; then
        passed=$((passed + 1)); echo "-- $n: ok ($((SECONDS - t0)) s)"
    else
        [ $rc = 124 ] && echo "-- $n: timed out after $LIMIT s"
        failed=$((failed + 1)); failures="$failures $n"; echo "-- $n: FAILED ($((SECONDS - t0)) s)"
    fi
done
echo
echo "figures:"
printf '%s' "$figures" | grep -v '^$'
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
