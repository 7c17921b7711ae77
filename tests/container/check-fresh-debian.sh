#!/bin/bash
# The README's quick start, exactly as written, on a fresh Debian 12 root
# file system (debootstrap via the local debian:bookworm-slim image), in a
# chroot: the first command must start a daemon that answers /readyz and a
# real slice; the second must install what it needs and pass every test.
# Manual check (heavy: installs the full toolchain inside the chroot):
#   sudo tests/container/check-fresh-debian.sh [--quick]   (--quick: SEGD_QUICK=1 for the tests)
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 0; }
command -v podman >/dev/null || { echo "SKIP: needs podman"; exit 0; }
QUICK=""; [ "${1:-}" = "--quick" ] && QUICK="SEGD_QUICK=1"
pass=0; fail=0
ok() { echo "ok   $*"; pass=$((pass + 1)); }
bad() { echo "FAIL $*"; fail=$((fail + 1)); }

sh /work/shared/tools/container-base.sh 2>/dev/null || sh "$ROOT/../shared/tools/container-base.sh"
img=$(podman image mount docker.io/library/debian:bookworm-slim) || { echo "cannot mount base image"; exit 1; }
R=$(mktemp -d /tmp/segd-fresh.XXXXXX)
cp -a "$img/." "$R/"
podman image unmount docker.io/library/debian:bookworm-slim >/dev/null
cleanup() {
    chroot "$R" pkill -f "segd serve" 2>/dev/null
    for m in dev proc sys; do umount -R -l "$R/$m" 2>/dev/null; done
    # never follow a mount that failed to go back into the host's /dev or /sys
    if ! grep -q " $R/" /proc/mounts; then rm -rf --one-file-system "$R"; fi
}
trap cleanup EXIT
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys" && mount --make-rslave "$R/sys"
mount --rbind /dev "$R/dev" && mount --make-rslave "$R/dev"
cp /etc/resolv.conf "$R/etc/resolv.conf"
# this workplace reaches the npm registry through a proxy with its own CA:
# hand the host's bundle to node/npm in the chroot (a real fresh machine
# needs nothing of the kind)
cp /etc/ssl/certs/ca-certificates.crt "$R/etc/host-ca.crt"
export NODE_EXTRA_CA_CERTS=/etc/host-ca.crt npm_config_cafile=/etc/host-ca.crt
mkdir -p "$R/root/work"
git clone -q "$ROOT" "$R/root/work/main"
[ -d "$ROOT/../shared" ] && cp -a "$ROOT/../shared" "$R/root/work/shared"
echo "fresh root: $R ($(du -sh --one-file-system "$R" 2>/dev/null | cut -f1) before the quick start)"

# 1. the first README command, as written, in the background
chroot "$R" /bin/bash -c 'cd /root/work/main && exec deploy/quickstart.sh --port 18080 --workers 1' \
    > /tmp/segd-fresh-serve.log 2>&1 &
ready=""
for i in $(seq 1 600); do
    if curl -sf http://127.0.0.1:18080/readyz >/dev/null 2>&1; then ready=1; break; fi
    sleep 1
done
[ -n "$ready" ] && ok "quick start: daemon answers /readyz (after ${i} s, installing and building included)" \
                || { bad "quick start: no /readyz"; tail -20 /tmp/segd-fresh-serve.log; }
if [ -n "$ready" ]; then
    out=$(curl -s -H 'Content-Type: image/png' --data-binary \
        @tests/data/case110_day16_slice_0070_360_310_1.50_1.50.png http://127.0.0.1:18080/v1/segment)
    echo "$out" | grep -q '"stomach"' && ok "quick start: a real slice is segmented" || bad "segment: $out"
fi
chroot "$R" pkill -TERM -f "segd serve" 2>/dev/null; sleep 2

# 2. the second README command, as written
chroot "$R" /bin/bash -c "cd /root/work/main && $QUICK tests/run-all.sh" > /tmp/segd-fresh-tests.log 2>&1
rc=$?
tail -3 /tmp/segd-fresh-tests.log
[ $rc = 0 ] && ok "test command passes in the fresh root ($(tail -1 /tmp/segd-fresh-tests.log))" \
            || bad "test command failed (rc $rc), log /tmp/segd-fresh-tests.log"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
