#!/bin/bash
# Build the libFuzzer harnesses of tests/fuzz with clang (not meson: the
# fuzzer runtime needs clang): every libsegd source except src/cli/main.c is
# compiled once with ASan+UBSan and coverage into an archive, then each
# fuzz_*.c is linked against it.  Objects are rebuilt only when their
# source or a header is newer.
#
#   tests/fuzz/build.sh [TARGET...]      (default: every fuzz_*.c)
#   OUT=build-fuzz CC=clang-14 tests/fuzz/build.sh
#
# Binaries: $OUT/fuzz_<target> (OUT defaults to build-fuzz in the repository
# root).  Exits non-zero when a needed harness does not build.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/build-fuzz}
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "build.sh: $CC not found (apt-get install clang)"; exit 1; }

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CFLAGS="-std=c11 -D_GNU_SOURCE -DSEGD_VERSION=\"fuzz\" -O1 -g $SAN -Iinclude -Isrc \
 $(pkg-config --cflags jansson libpng libmicrohttpd zlib)"
LIBS="$(pkg-config --libs jansson libpng libmicrohttpd zlib) -lopenblas -lm -lpthread"

mkdir -p "$OUT/obj"
newest_header=$(find include src -name '*.h' -printf '%T@\n' | sort -n | tail -1)

# 1. libsegd with coverage (fuzzer-no-link): every source must compile (a
#    source left out would let a harness link without the code it fuzzes).
objs=()
fail=0
for src in $(find src -name '*.c' ! -path src/cli/main.c | sort); do
    obj="$OUT/obj/$(echo "${src%.c}" | tr / _).o"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] ||
       awk -v h="$newest_header" -v o="$(stat -c %Y "$obj")" 'BEGIN{exit !(h > o)}'; then
        if ! $CC $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$obj" 2>"$obj.log"; then
            echo "build.sh: $src does not compile:"; head -20 "$obj.log"
            rm -f "$obj"; fail=1; continue
        fi
    fi
    objs+=("$obj")
done
[ "$fail" = 0 ] || { echo "build.sh: FAILED: libsegd does not compile for fuzzing"; exit 1; }
rm -f "$OUT/libsegd-fuzz.a"
ar rcs "$OUT/libsegd-fuzz.a" "${objs[@]}" || exit 1

# 2. harnesses
targets=("$@")
if [ ${#targets[@]} = 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do t=${f##*/fuzz_}; targets+=("${t%.c}"); done
fi
# The DICOM module is C++ over DCMTK (src/dicom/*.cc): its objects are built
# with $CXX and the same instrumentation, and fuzz_dicom links with $CXX
# against the (uninstrumented) DCMTK libraries of the system.
CXX=${CXX:-clang++}
DCMTK_LIBS="-ldcmseg -ldcmfg -ldcmiod -ldcmjpeg -ldcmjpls -ldcmimage -ldcmimgle -ldcmdata -loflog -lofstd"
dicom_objs() { # build src/dicom/*.cc; prints the objects, fails when one does not compile
    local src obj objs=()
    for src in src/dicom/*.cc; do
        obj="$OUT/obj/$(echo "${src%.cc}" | tr / _).o"
        if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] ||
           awk -v h="$newest_header" -v o="$(stat -c %Y "$obj")" 'BEGIN{exit !(h > o)}'; then
            $CXX -std=c++17 -O1 -g $SAN -Iinclude -Isrc -fsanitize=fuzzer-no-link \
                -c "$src" -o "$obj" 2>"$obj.log" || { echo "build.sh: $src does not compile:" >&2
                head -20 "$obj.log" >&2; rm -f "$obj"; return 1; }
        fi
        objs+=("$obj")
    done
    echo "${objs[@]}"
}

for t in "${targets[@]}"; do
    rm -f "$OUT/fuzz_$t" # never run a stale binary of a harness that no longer builds
    [ -f "tests/fuzz/fuzz_$t.c" ] || { echo "build.sh: no harness tests/fuzz/fuzz_$t.c"; fail=1; continue; }
    if [ "$t" = dicom ]; then
        command -v "$CXX" >/dev/null || { echo "build.sh: fuzz_dicom needs $CXX"; fail=1; continue; }
        [ -f /usr/include/dcmtk/dcmseg/segdoc.h ] || {
            echo "build.sh: fuzz_dicom needs DCMTK (apt-get install libdcmtk-dev)"; fail=1; continue; }
        if objs_cc=$(dicom_objs) && $CC $CFLAGS -fsanitize=fuzzer-no-link -c tests/fuzz/fuzz_dicom.c \
                -o "$OUT/obj/fuzz_dicom.o" &&
            $CXX $SAN -fsanitize=fuzzer "$OUT/obj/fuzz_dicom.o" $objs_cc "$OUT/libsegd-fuzz.a" \
                $DCMTK_LIBS -lm -lpthread -o "$OUT/fuzz_dicom"; then
            echo "built $OUT/fuzz_dicom"
        else
            echo "build.sh: fuzz_dicom FAILED to build"; fail=1
        fi
        continue
    fi
    if $CC $CFLAGS -fsanitize=fuzzer -DSEGD_FUZZ_WEIGHTS="\"$ROOT/tests/data/golden-w4-odd.safetensors\"" \
        "tests/fuzz/fuzz_$t.c" "$OUT/libsegd-fuzz.a" $LIBS -o "$OUT/fuzz_$t"; then
        echo "built $OUT/fuzz_$t"
    else
        echo "build.sh: fuzz_$t FAILED to build"; fail=1
    fi
done
[ "$fail" = 0 ] || echo "build.sh: FAILED: a harness does not build"
exit $fail
