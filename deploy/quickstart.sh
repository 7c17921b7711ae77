#!/bin/bash
# Quick start on a fresh Debian 12 machine (as root or with sudo): install
# what is missing, build segd, and start the daemon on the shipped weights
# (http://localhost:8080, Ctrl-C drains and stops).  Extra arguments go to
# `segd serve` (e.g. --port 9000 --workers 2).
set -eu
cd "$(dirname "$0")/.."
# g++ and libdcmtk-dev: the DICOM routes (DICOM in, SEG and RTSTRUCT out);
# without them segd builds, but answers DICOM with 415
PKGS="gcc g++ meson ninja-build pkg-config libmicrohttpd-dev libjansson-dev libpng-dev libopenblas-dev
      libdcmtk-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || { echo "missing packages:$missing; run as root (sudo $0)"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing
fi
[ -f build/build.ninja ] || meson setup build --buildtype=release
ninja -C build
exec ./build/segd serve "$@"
