#!/bin/bash
# Build the libFuzzer harnesses (tests/fuzz/build.sh) and run each one for
# SECONDS (default 30; 0 = only replay the committed corpus, crash
# regressions included), one after the other.  Prints per target the
# executions, the time, the crashes (with the reproducer's path) and the
# coverage reached, then "N passed, N failed"; exits non-zero on a crash.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#   FUZZ_FLAGS="-dict=..." OUT=build-fuzz tests/fuzz/run.sh 60 png
#
# The committed seeds (tests/fuzz/corpus/<target>) are read only; new
# inputs go to $OUT/work/<target> and crash reproducers to
# $OUT/artifacts/<target>/.  A reproducer is replayed with
#   build-fuzz/fuzz_<target> FILE
# and, once the bug is fixed, copied to tests/fuzz/corpus/<target>/ as
# crash-<target>-<what> so that every later run replays it.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/build-fuzz}
SECONDS_PER=${1:-30}
shift $(( $# > 0 ? 1 : 0 ))
case "$SECONDS_PER" in ''|*[!0-9]*) echo "usage: tests/fuzz/run.sh [SECONDS] [TARGET...]"; exit 2;; esac

targets=("$@")
if [ ${#targets[@]} = 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do t=${f##*/fuzz_}; targets+=("${t%.c}"); done
fi

echo "== building ${#targets[@]} harnesses"
mkdir -p "$OUT"
OUT=$OUT tests/fuzz/build.sh "${targets[@]}" >"$OUT/build.log" 2>&1 || {
    cat "$OUT/build.log"; echo "0 passed, ${#targets[@]} failed, 0 skipped"; exit 1; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export OPENBLAS_NUM_THREADS=1

passed=0; failed=0
printf '%-10s %12s %8s %8s %8s %8s\n' target executions "time_s" exec/s crashes cov
for t in "${targets[@]}"; do
    bin=$OUT/fuzz_$t
    seeds=$ROOT/tests/fuzz/corpus/$t
    work=$OUT/work/$t
    art=$OUT/artifacts/$t
    log=$OUT/fuzz_$t.log
    mkdir -p "$work" "$art" "$seeds"
    if [ "$SECONDS_PER" = 0 ]; then
        mode=(-runs=0)
    else
        mode=(-max_total_time="$SECONDS_PER")
    fi
    before=$(find "$art" -type f | sort)
    t0=$(date +%s.%N)
    # -timeout: one input may take at most 10 s (a hang is a failure too)
    # shellcheck disable=SC2086
    "$bin" "${mode[@]}" -timeout=10 -rss_limit_mb=3072 -malloc_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art/" ${FUZZ_FLAGS:-} \
        "$work" "$seeds" >"$log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    new=$(comm -13 <(echo "$before") <(find "$art" -type f | sort) | grep -E '/(crash|oom|timeout|leak)-' || true)
    crashes=$(printf '%s' "$new" | grep -c . || true)
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}')
    rate=$(awk -v n="${execs:-0}" -v s="$elapsed" 'BEGIN{printf "%d", (s > 0 ? n / s : 0)}')
    if [ $rc != 0 ] && [ "$crashes" = 0 ]; then crashes=1; fi
    printf '%-10s %12s %8s %8s %8s %8s\n' "$t" "${execs:-?}" "$elapsed" "$rate" "$crashes" "${cov:-?}"
    if [ $rc = 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "   fuzz_$t failed (exit $rc); log: $log"
        grep -m3 -E 'ERROR: |runtime error|SUMMARY' "$log" | sed 's/^/   /'
        [ -n "$new" ] && printf '   reproducer: %s\n' $new
    fi
done
echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" = 0 ]
