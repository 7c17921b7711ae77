#!/bin/bash
# Container image check: builds the segd image from the Dockerfile with
# podman (or takes an existing one), then checks it without a container
# runtime (this machine cannot run containers): the image configuration, its
# size, and the daemon itself, started from `podman image mount` with chroot
# as the image's user, with the image's ENTRYPOINT/CMD and ENV (loopback
# only), in its own PID namespace so that it is PID 1 as in a container:
# /healthz, /readyz, a real slice POSTed to /v1/segment, /metrics, the
# HEALTHCHECK command, and SIGTERM drain.
#
#   sudo tests/container/check-image.sh
#   SEGD_IMAGE=localhost/segd:1.0 SEGD_IMAGE_BUILD=0 tests/container/check-image.sh
#
# Environment: SEGD_IMAGE (default localhost/segd:check), SEGD_IMAGE_BUILD
# (1: build it first, the default; 0: check SEGD_IMAGE as it is),
# SEGD_BUILD_TIMEOUT (seconds, default 1200), SEGD_IMAGE_MAX_BYTES (default
# 250000000: the runtime image holds DCMTK, about 75 MB of its 208 MB).
# Prints "SKIP: ..." and exits 77 (skipped, not passed) without podman or
# without root.  A base image that cannot be built (no
# Debian mirror, debootstrap failing) is a failure.  tests/run-all.sh
# installs podman and debootstrap, so in CI this check always runs.
# Ends with "N passed, N failed, N skipped"; exits non-zero on any failure.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD

IMAGE=${SEGD_IMAGE:-localhost/segd:check}
BUILD=${SEGD_IMAGE_BUILD:-1}
BUILD_TIMEOUT=${SEGD_BUILD_TIMEOUT:-1200}
MAX_BYTES=${SEGD_IMAGE_MAX_BYTES:-250000000} # with DCMTK (see the Dockerfile)
SLICE=$ROOT/tests/data/case110_day16_slice_0070_360_310_1.50_1.50.png
BASE=docker.io/library/debian:bookworm-slim

skip() { echo "SKIP: $*"; echo "0 passed, 0 failed, 1 skipped"; exit 77; }
command -v podman >/dev/null 2>&1 || skip "podman is not installed (apt-get install podman; see Dockerfile)"
[ "$(id -u)" = 0 ] || skip "needs root (podman image mount, chroot)"
command -v curl >/dev/null 2>&1 || skip "curl is not installed"
command -v chroot >/dev/null 2>&1 || skip "chroot is not installed"
[ -f "$SLICE" ] || skip "test slice $SLICE is missing"

passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check DESCRIPTION CMD...
    local d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}
finish() {
    echo "$passed passed, $failed failed, 0 skipped"
    [ "$failed" = 0 ]
    exit $?
}

T=$(mktemp -d /tmp/segd-image-check.XXXXXX)
MNT=""
DPID=""
cleanup() {
    if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
        kill -KILL "$DPID" 2>/dev/null   # unshare --kill-child takes the daemon along
        wait "$DPID" 2>/dev/null
    fi
    [ -n "$MNT" ] && podman image umount "$IMAGE" >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------ build
if [ "$BUILD" = 1 ]; then
    if ! podman image exists "$BASE"; then
        tool=$ROOT/../shared/tools/container-base.sh
        [ -f "$tool" ] || { bad "no $BASE image and no $tool to build one"; finish; }
        echo "== building the $BASE base image with $tool"
        t0=$SECONDS
        if timeout 900 sh "$tool" >"$T/base.log" 2>&1; then
            ok "base image $BASE built ($((SECONDS - t0)) s)"
        else
            tail -20 "$T/base.log"; bad "base image $BASE builds (no Debian mirror?)"; finish
        fi
    fi
    old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    echo "== podman build --isolation chroot --format docker -t $IMAGE . (up to $BUILD_TIMEOUT s)"
    t0=$SECONDS
    if timeout "$BUILD_TIMEOUT" podman build --isolation chroot --format docker -t "$IMAGE" . >"$T/build.log" 2>&1; then
        ok "image builds ($((SECONDS - t0)) s)"
    else
        tail -40 "$T/build.log"; bad "image builds"; finish
    fi
    new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
    # drop the image this tag pointed at before, if nothing else names it
    if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ] &&
       [ -z "$(podman image inspect --format '{{join .RepoTags " "}}' "$old_id" 2>/dev/null)" ]; then
        podman rmi "$old_id" >/dev/null 2>&1 || true
    fi
else
    podman image exists "$IMAGE" || { bad "image $IMAGE exists"; finish; }
fi

# ------------------------------------------------------------------ image configuration
fmt() { podman image inspect --format "$1" "$IMAGE"; }
size=$(fmt '{{.Size}}')
echo "image $IMAGE: $size bytes ($((size / 1000000)) MB, $((size / 1048576)) MiB)"
check "image size $size < $MAX_BYTES bytes" test "$size" -lt "$MAX_BYTES"
USERSPEC=$(fmt '{{.Config.User}}')
uid=${USERSPEC%%:*}
check "runs as a non-root numeric user ($USERSPEC)" bash -c '[[ $1 =~ ^[0-9]+(:[0-9]+)?$ && $2 != 0 ]]' _ "$USERSPEC" "$uid"
check "EXPOSE 8080/tcp" bash -c '[[ $1 == *8080/tcp* ]]' _ "$(fmt '{{json .Config.ExposedPorts}}')"
check "STOPSIGNAL SIGTERM" test "$(fmt '{{.Config.StopSignal}}')" = SIGTERM
HC=$(fmt '{{json .Config.Healthcheck}}')
check "HEALTHCHECK probes /healthz (built with --format docker)" bash -c '[[ $1 == *"/healthz"* ]]' _ "$HC"
mapfile -t IENV < <(fmt '{{range .Config.Env}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t ICMD < <(fmt '{{range .Config.Entrypoint}}{{println .}}{{end}}{{range .Config.Cmd}}{{println .}}{{end}}' | sed '/^$/d')
mapfile -t HCMD < <(fmt '{{if .Config.Healthcheck}}{{range .Config.Healthcheck.Test}}{{println .}}{{end}}{{end}}' | sed '/^$/d')
echo "entrypoint+cmd: ${ICMD[*]}"
weights=""
for e in "${IENV[@]}"; do
    case $e in SEGD_WEIGHTS=*) weights=${e#SEGD_WEIGHTS=} ;; esac
done
for v in SEGD_PORT=8080 SEGD_WORKERS= SEGD_WEIGHTS=/; do
    check "ENV sets ${v%%=*}" bash -c 'printf "%s\n" "${@:2}" | grep -q "^$1"' _ "$v" "${IENV[@]}"
done
check "ENTRYPOINT/CMD is segd serve" test "${ICMD[*]}" = "/usr/bin/segd serve"

# ------------------------------------------------------------------ root file system
MNT=$(podman image mount "$IMAGE") && [ -d "$MNT/usr" ] || { MNT=""; bad "podman image mount $IMAGE"; finish; }
check "the weights \$SEGD_WEIGHTS ($weights) are in the image" test -s "$MNT$weights"
check "no compiler or -dev headers in the runtime image" \
    bash -c '! ls "$1"/usr/bin/gcc* "$1"/usr/bin/cc "$1"/usr/include/microhttpd.h >/dev/null 2>&1' _ "$MNT"
check "all shared libraries of segd resolve (ldd in the image)" \
    bash -c 'out=$(chroot "$1" /usr/bin/ldd /usr/bin/segd) && ! grep -q "not found" <<<"$out"' _ "$MNT"
RUNAS=("$(command -v chroot)" --userspec="$USERSPEC" "$MNT")
check "segd version runs as $USERSPEC" bash -c '"$@" /usr/bin/segd version >/dev/null' _ "${RUNAS[@]}"

# ------------------------------------------------------------------ the daemon
# The image's environment, then loopback only and an ephemeral port.
RUNENV=(env -i "${IENV[@]}" SEGD_BIND=127.0.0.1 SEGD_PORT=0)
PIDNS=()
if unshare --pid --fork --kill-child true 2>/dev/null; then
    PIDNS=(unshare --pid --fork --kill-child)
else
    echo "note: unshare --pid unavailable; segd runs without its own PID namespace"
fi
"${PIDNS[@]}" "${RUNENV[@]}" "${RUNAS[@]}" "${ICMD[@]}" >"$T/out.log" 2>"$T/err.log" &
DPID=$!
port=""
for _ in $(seq 300); do # 60 s: weights load before the socket opens
    port=$(sed -n 's|^segd: listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$T/err.log" | head -1)
    [ -n "$port" ] && break
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.2
done
if [ -z "$port" ]; then
    cat "$T/err.log"; bad "daemon starts from the image and listens"; finish
fi
ok "daemon starts from the image (user $USERSPEC${PIDNS:+, PID 1 of its own PID namespace}) on 127.0.0.1:$port"
SPID=$DPID
if [ ${#PIDNS[@]} -gt 0 ]; then # the daemon is unshare's child, PID 1 inside
    SPID=$(cat "/proc/$DPID/task/$DPID/children" 2>/dev/null | awk '{print $1}')
    check "segd is PID 1 of its namespace, as in a container (SIGTERM from outside must still drain)" \
        bash -c '[ "$(cat /proc/$1/comm)" = segd ] && awk "/^NSpid:/ {exit \$NF != 1}" /proc/$1/status' _ "${SPID:-0}"
fi
URL=http://127.0.0.1:$port
code() { curl -s -o "$T/body" -w '%{http_code}' --max-time 60 "$@"; }
check "GET /healthz -> 200" test "$(code "$URL/healthz")" = 200
check "GET /readyz -> 200" test "$(code "$URL/readyz")" = 200
check "GET /v1/model -> 200" test "$(code "$URL/v1/model")" = 200
c=$(code -H 'Content-Type: image/png' --data-binary @"$SLICE" "$URL/v1/segment")
cp "$T/body" "$T/segment.json"
check "POST /v1/segment (real 360x310 slice) -> 200" test "$c" = 200
check "segmentation answer has width, height and masks" bash -c \
    'grep -q "\"width\":360" "$1" && grep -q "\"height\":310" "$1" && grep -q "\"masks\":{" "$1"' _ "$T/segment.json"
head -c 160 "$T/segment.json"; echo " ..."
# the image is built with DCMTK: a DICOM MR slice is segmented, not 415
c=$(code -H 'Content-Type: application/dicom' --data-binary @"$ROOT/tests/fuzz/corpus/dicom/mr16-explicit.dcm" "$URL/v1/segment")
check "POST /v1/segment (DICOM MR, Explicit VR LE) -> 200: the image has DICOM support" \
    bash -c '[ "$1" = 200 ] && grep -q "\"dicom\":{" "$2"' _ "$c" "$T/body"
code "$URL/metrics" >/dev/null
check "/metrics has segd_request_duration_seconds histogram with the request" \
    bash -c 'grep -Eq "^segd_request_duration_seconds_count(\{[^}]*\})? [1-9]" "$1" &&
             grep -q "^segd_request_duration_seconds_bucket" "$1"' _ "$T/body"

# HEALTHCHECK, run as Docker would: the image's command, env and user.
if [ ${#HCMD[@]} -gt 1 ] && [ "${HCMD[0]}" = CMD ]; then
    check "HEALTHCHECK command succeeds against the daemon" \
        timeout 10 env -i "${IENV[@]}" SEGD_PORT="$port" "${RUNAS[@]}" "${HCMD[@]:1}"
else
    bad "HEALTHCHECK is an exec-form CMD (got: ${HCMD[*]:-none})"
fi

# SIGTERM: drain and exit 0, as `docker stop` does it (from outside, to PID 1).
kill -TERM "$SPID" 2>/dev/null
rc=124
for _ in $(seq 200); do # 40 s > SEGD_DRAIN_TIMEOUT (30 s)
    kill -0 "$DPID" 2>/dev/null || { wait "$DPID"; rc=$?; break; }
    sleep 0.2
done
check "SIGTERM drains and exits 0 (rc $rc)" bash -c '[ "$1" = 0 ] && grep -q "drained" "$2"' _ "$rc" "$T/err.log"
[ "$rc" = 124 ] || DPID=""
if [ ${#HCMD[@]} -gt 1 ] && [ "${HCMD[0]}" = CMD ]; then
    check "HEALTHCHECK command fails when nothing listens" \
        bash -c '! timeout 10 "$@" 2>/dev/null' _ env -i "${IENV[@]}" SEGD_PORT="$port" "${RUNAS[@]}" "${HCMD[@]:1}"
fi
[ "$failed" = 0 ] || { echo "-- daemon stderr:"; tail -20 "$T/err.log"; }
finish
