#!/bin/bash
# Deployment configuration checks (deploy/, Dockerfile, .dockerignore):
#   - haproxy -c -f deploy/haproxy.cfg
#   - HAProxy for real, when SEGD_BIN is built: three `segd serve` replicas on
#     loopback behind deploy/haproxy.cfg (addresses and check interval
#     rewritten), all UP via /readyz, requests balanced, and a draining
#     replica (SIGTERM with a job in flight) taken out by the /readyz check
#     while its accepted job is still answered
#   - promtool check config / check rules / test rules (tests/deploy/rules-test.yml),
#     on deploy/rules.yml and on the copy in kubernetes/prometheusrule.yaml
#   - the resident memory of `segd serve` with 1 and 2 workers (VmHWM after
#     one 360x310 slice, shipped weights), when SEGD_BIN is built
#   - compose.yaml, kubernetes/*.yaml, segd.service, Dockerfile: fields that
#     matter, with python3-yaml (tests/deploy/check_manifests.py): memory
#     limits against the measured memory, the balancer's timeout against the
#     longest answer, rules.yml = prometheusrule.yaml, the compose
#     healthcheck = the image's HEALTHCHECK, ...
#   - systemd-analyze verify and security --offline on deploy/segd.service
# A missing tool skips its checks with a "SKIP: ..." line.  Prints "N passed,
# N failed, N skipped"; exits 1 on any failure, else 77 when a check was
# skipped (run-all.sh counts the suite as skipped, not passed).
#
#   tests/deploy/check-configs.sh                 (SEGD_BIN=build/segd by default)
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=/usr/bin/python3
SEGD_BIN=${SEGD_BIN:-$ROOT/build/segd}

passed=0; failed=0; skipped=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP: $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

T=$(mktemp -d /tmp/segd-deploy-check.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The daemon's defaults that the manifests rely on, from its own --help.
DRAIN_DEFAULT=30 REQUEST_TIMEOUT_DEFAULT=30 MAX_SERIES_SLICES_DEFAULT=512
if [ -x "$SEGD_BIN" ]; then
    "$SEGD_BIN" serve --help >"$T/help" 2>&1
    default_of() { sed -n "s/.*$1, default: \([0-9.]*\)\].*/\1/p" "$T/help"; }
    d=$(default_of SEGD_DRAIN_TIMEOUT); [ -n "$d" ] && DRAIN_DEFAULT=$d
    d=$(default_of SEGD_REQUEST_TIMEOUT); [ -n "$d" ] && REQUEST_TIMEOUT_DEFAULT=$d
    d=$(default_of SEGD_MAX_SERIES_SLICES); [ -n "$d" ] && MAX_SERIES_SLICES_DEFAULT=$d
    echo "segd serve --help: default drain timeout $DRAIN_DEFAULT s, request timeout" \
        "$REQUEST_TIMEOUT_DEFAULT s, max series slices $MAX_SERIES_SLICES_DEFAULT"
fi

# ------------------------------------------------------------------ HAProxy
echo "== haproxy"
if have haproxy; then
    # Outside compose the replica names do not resolve; HAProxy warns and
    # starts them unresolved (init-addr ...,none).  Any other warning fails.
    if haproxy -c -f deploy/haproxy.cfg >"$T/hc.log" 2>&1; then
        ok "haproxy -c -f deploy/haproxy.cfg"
    else
        cat "$T/hc.log"; bad "haproxy -c -f deploy/haproxy.cfg"
    fi
    other=$(grep -E '\[(WARNING|ALERT)\]' "$T/hc.log" | grep -v "could not resolve address 'segd[0-9]*'")
    if [ -z "$other" ]; then ok "haproxy.cfg: no warnings besides the unresolvable compose names"
    else echo "$other"; bad "haproxy.cfg: warnings"; fi
else
    skip "haproxy not installed (apt-get install haproxy): haproxy.cfg not checked"
fi

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
stat_of() { # stat_of SERVER -> "STATUS CHECK_STATUS" from the stats CSV
    curl -s --max-time 5 "http://127.0.0.1:$SP/stats;csv" |
        awk -F, -v s="$1" '$1 == "segd" && $2 == s { print $18, $37 }'
}
wait_for() { # wait_for SECONDS CMD...: poll every 0.1 s
    local n=$(($1 * 10)); shift
    for _ in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
    return 1
}
lb_test() {
    local weights=$ROOT/tests/data/golden-w4.safetensors
    local slice=$ROOT/tests/data/case101_day20_slice_0090_266_266_1.50_1.50.png
    [ -f "$weights" ] && [ -f "$slice" ] || { skip "HAProxy live test: test data missing"; return; }
    echo "== HAProxy live: deploy/haproxy.cfg in front of three segd replicas on loopback"
    local i port ports=()
    for i in 1 2 3; do
        # replica 1 holds each job 3 s so that it can be caught draining
        local delay=0; [ "$i" = 1 ] && delay=3000
        "$SEGD_BIN" serve --bind 127.0.0.1 --port 0 --port-file "$T/port$i" --workers 1 \
            --weights "$weights" --max-pixels 131072 --drain-timeout 20 --access-log off \
            --debug-job-delay $delay 2>"$T/segd$i.log" &
        PIDS+=($!)
    done
    for i in 1 2 3; do
        if ! wait_for 30 test -s "$T/port$i"; then
            cat "$T/segd$i.log"; bad "HAProxy live: replica $i starts"; return
        fi
        ports+=("$(cat "$T/port$i")")
    done
    FP=$(free_port); SP=$(free_port)
    # the compose configuration with loopback addresses and a fast check interval
    sed -e "s|^\(\s*bind\s*\):8080|\1127.0.0.1:$FP|" -e "s|^\(\s*bind\s*\):8404|\1127.0.0.1:$SP|" \
        -e "s|segd1:8080|127.0.0.1:${ports[0]}|" -e "s|segd2:8080|127.0.0.1:${ports[1]}|" \
        -e "s|segd3:8080|127.0.0.1:${ports[2]}|" -e "s|inter 2s|inter 200ms|" \
        -e "s|log stdout .*|log stderr format raw local0 info|" deploy/haproxy.cfg >"$T/haproxy.cfg"
    haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
    PIDS+=($!)
    local hpid=$!
    all_up() { for s in segd1 segd2 segd3; do [[ $(stat_of $s) == "UP "* ]] || return 1; done; }
    if wait_for 20 all_up; then ok "HAProxy live: all three replicas UP by the /readyz check"
    else cat "$T/haproxy.log"; bad "HAProxy live: replicas UP"; return; fi
    # compose.yaml's healthcheck command, as the runtime would run it ($$ is
    # compose's escape for $), against replica 2
    if $PY - "${ports[1]}" >"$T/hc-compose.log" 2>&1 <<'PYEOF'
import subprocess, sys, yaml
t = yaml.safe_load(open("deploy/compose.yaml"))["services"]["segd2"]["healthcheck"]["test"]
assert t[0] == "CMD", t
cmd = [a.replace("$$", "$").replace("8080", sys.argv[1]) for a in t[1:]]
sys.exit(subprocess.run(cmd, timeout=10).returncode)
PYEOF
    then ok "HAProxy live: compose.yaml healthcheck command passes against a replica"
    else cat "$T/hc-compose.log"; bad "HAProxy live: compose.yaml healthcheck command"; fi
    local codes=""
    for i in 1 2 3 4 5 6; do
        codes="$codes $(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -H 'Content-Type: image/png' \
            --data-binary @"$slice" "http://127.0.0.1:$FP/v1/segment")"
    done
    [ "$codes" = " 200 200 200 200 200 200" ] && ok "HAProxy live: POST /v1/segment through the balancer ->$codes" ||
        bad "HAProxy live: POST /v1/segment through the balancer ->$codes"
    local served=0
    for i in 0 1 2; do
        curl -s --max-time 5 "http://127.0.0.1:${ports[$i]}/metrics" | grep -Eq '^segd_jobs_accepted_total [1-9]' &&
            served=$((served + 1))
    done
    [ "$served" -ge 2 ] && ok "HAProxy live: requests spread over $served replicas" ||
        bad "HAProxy live: requests spread over replicas ($served)"
    # Drain: a job in flight on replica 1, then SIGTERM.  /readyz turns 503,
    # HAProxy takes it out (L7STS), traffic goes on, the job is answered.
    curl -s -o "$T/inflight" -w '%{http_code}' --max-time 30 -H 'Content-Type: image/png' \
        --data-binary @"$slice" "http://127.0.0.1:${ports[0]}/v1/segment" >"$T/inflight.code" &
    local cpid=$!
    sleep 0.5
    kill -TERM "${PIDS[0]}"
    draining() { [[ $(stat_of segd1) == DOWN*L7STS* ]]; }
    if wait_for 3 draining; then ok "HAProxy live: draining replica DOWN by /readyz 503 ($(stat_of segd1))"
    else bad "HAProxy live: draining replica taken out by /readyz (stat: $(stat_of segd1))"; fi
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -H 'Content-Type: image/png' \
        --data-binary @"$slice" "http://127.0.0.1:$FP/v1/segment")
    [ "$c" = 200 ] && ok "HAProxy live: balancer answers 200 while a replica drains" ||
        bad "HAProxy live: balancer during drain -> $c"
    wait "$cpid"
    [ "$(cat "$T/inflight.code")" = 200 ] && ok "HAProxy live: the job accepted before SIGTERM answered 200" ||
        bad "HAProxy live: in-flight job during drain -> $(cat "$T/inflight.code")"
    local rc=1
    wait_for 25 bash -c '! kill -0 "$1" 2>/dev/null' _ "${PIDS[0]}" && { wait "${PIDS[0]}"; rc=$?; }
    [ "$rc" = 0 ] && grep -q drained "$T/segd1.log" && ok "HAProxy live: drained replica exits 0" ||
        { cat "$T/segd1.log"; bad "HAProxy live: drained replica exit ($rc)"; }
    kill -TERM "$hpid" 2>/dev/null
}
if have haproxy && have curl && [ -x "$SEGD_BIN" ]; then
    lb_test
else
    skip "HAProxy live test: needs haproxy, curl and a built segd (SEGD_BIN=$SEGD_BIN)"
fi

# ------------------------------------------------------------------ Prometheus
echo "== promtool"
if have promtool; then
    for c in "check config deploy/prometheus.yml" "check rules deploy/rules.yml" \
             "test rules tests/deploy/rules-test.yml"; do
        # shellcheck disable=SC2086
        if promtool $c >"$T/p.log" 2>&1; then ok "promtool $c"; else cat "$T/p.log"; bad "promtool $c"; fi
    done
    # The PrometheusRule's groups as a rules file, checked and tested the
    # same way (check_manifests.py compares the two files rule by rule).
    mkdir -p "$T/pr"
    if $PY -c 'import sys, yaml
yaml.safe_dump({"groups": yaml.safe_load(open(sys.argv[1]))["spec"]["groups"]}, open(sys.argv[2], "w"))' \
        deploy/kubernetes/prometheusrule.yaml "$T/pr/rules.yml" 2>"$T/p.log"; then
        sed "s|\.\./\.\./deploy/rules\.yml|rules.yml|" tests/deploy/rules-test.yml >"$T/pr/rules-test.yml"
        if promtool check rules "$T/pr/rules.yml" >"$T/p.log" 2>&1; then
            ok "promtool check rules: kubernetes/prometheusrule.yaml's spec.groups"
        else cat "$T/p.log"; bad "promtool check rules: kubernetes/prometheusrule.yaml's spec.groups"; fi
        if promtool test rules "$T/pr/rules-test.yml" >"$T/p.log" 2>&1; then
            ok "promtool test rules tests/deploy/rules-test.yml on kubernetes/prometheusrule.yaml"
        else cat "$T/p.log"; bad "promtool test rules tests/deploy/rules-test.yml on kubernetes/prometheusrule.yaml"; fi
    else
        cat "$T/p.log"; bad "kubernetes/prometheusrule.yaml: spec.groups not readable"
    fi
else
    skip "promtool not installed (apt-get install prometheus): prometheus.yml and rules.yml not checked"
fi

# ------------------------------------------------------------------ memory
# VmHWM of `segd serve --workers N` (shipped weights, default --max-pixels)
# after one 360x310 slice, in kB; the manifests' memory limits are checked
# against base + per worker x workers from N = 1 and 2.
echo "== memory of segd serve"
RSS_BASE_MIB="" RSS_PER_WORKER_MIB=""
rss_kb() { # rss_kb N: the kB into $T/rss-N
    local n=$1 p
    rm -f "$T/rss-port" "$T/rss-$n"
    OPENBLAS_NUM_THREADS=1 "$SEGD_BIN" serve --bind 127.0.0.1 --port 0 --port-file "$T/rss-port" --workers "$n" \
        --weights "$ROOT/weights/unet3p-16.safetensors" --access-log off 2>"$T/rss.log" &
    p=$!
    PIDS+=("$p")
    if wait_for 30 test -s "$T/rss-port" &&
        curl -s -f -o /dev/null --max-time 30 -H 'Content-Type: image/png' --data-binary @"$RSS_SLICE" \
            "http://127.0.0.1:$(cat "$T/rss-port")/v1/segment"; then
        awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" >"$T/rss-$n"
    fi
    kill -TERM "$p" 2>/dev/null
    wait "$p" 2>/dev/null
}
RSS_SLICE=$ROOT/tests/data/case110_day16_slice_0070_360_310_1.50_1.50.png
if ! [ -x "$SEGD_BIN" ] || ! have curl || ! [ -f "$ROOT/weights/unet3p-16.safetensors" ] || ! [ -f "$RSS_SLICE" ]; then
    skip "memory: needs a built segd (SEGD_BIN=$SEGD_BIN), curl, the shipped weights and the 360x310 slice"
elif ldd "$SEGD_BIN" 2>/dev/null | grep -q 'lib[almt]san'; then
    skip "memory: $SEGD_BIN is a sanitizer build, its memory is not the daemon's"
else
    rss_kb 1; rss_kb 2
    k1=$(cat "$T/rss-1" 2>/dev/null); k2=$(cat "$T/rss-2" 2>/dev/null)
    if [ -n "$k1" ] && [ -n "$k2" ]; then
        RSS_PER_WORKER_MIB=$(awk -v a="$k1" -v b="$k2" 'BEGIN { printf "%.1f", (b - a) / 1024 }')
        RSS_BASE_MIB=$(awk -v a="$k1" -v b="$k2" 'BEGIN { printf "%.1f", (2 * a - b) / 1024 }')
        ok "memory: VmHWM after one 360x310 slice: 1 worker $k1 kB, 2 workers $k2 kB" \
            "= $RSS_BASE_MIB MiB + $RSS_PER_WORKER_MIB MiB per worker"
    else
        cat "$T/rss.log"; bad "memory: segd serve did not start or answer the 360x310 slice"
    fi
fi

# ------------------------------------------------------------------ manifests
echo "== compose / kubernetes / systemd / Dockerfile fields (python3-yaml)"
if [ -x "$PY" ] && $PY -c 'import yaml' 2>/dev/null; then
    SEGD_DRAIN_DEFAULT=$DRAIN_DEFAULT SEGD_REQUEST_TIMEOUT_DEFAULT=$REQUEST_TIMEOUT_DEFAULT \
        SEGD_MAX_SERIES_SLICES_DEFAULT=$MAX_SERIES_SLICES_DEFAULT \
        SEGD_RSS_BASE_MIB=$RSS_BASE_MIB SEGD_RSS_PER_WORKER_MIB=$RSS_PER_WORKER_MIB \
        $PY tests/deploy/check_manifests.py "$ROOT" >"$T/m.log" 2>&1
    cat "$T/m.log"
    passed=$((passed + $(grep -c '^ok ' "$T/m.log")))
    failed=$((failed + $(grep -c '^FAIL ' "$T/m.log")))
    grep -q '^manifests: ' "$T/m.log" || bad "check_manifests.py did not finish"
else
    skip "$PY with yaml not available (apt-get install python3-yaml): manifests not parsed"
fi

# ------------------------------------------------------------------ systemd
echo "== systemd"
if have systemd-analyze; then
    # verify wants ExecStart's binary to exist: point it at the built one if
    # segd is not installed here.
    unit=$T/segd.service
    exe=/usr/bin/segd
    [ -x "$exe" ] || exe=$SEGD_BIN
    [ -x "$exe" ] || exe=$(command -v true)
    sed "s|^ExecStart=/usr/bin/segd|ExecStart=$exe|" deploy/segd.service >"$unit"
    if systemd-analyze verify "$unit" >"$T/v.log" 2>&1 && ! grep -q . "$T/v.log"; then
        ok "systemd-analyze verify deploy/segd.service"
    else
        cat "$T/v.log"; bad "systemd-analyze verify deploy/segd.service"
    fi
    if systemd-analyze security --offline=true --threshold=20 "$unit" >"$T/s.log" 2>&1; then
        ok "systemd-analyze security: $(grep -o 'Overall exposure level.*' "$T/s.log" | sed 's/for [^:]*: //') (<= 2.0)"
    elif grep -qi "unrecognized option\|unknown option" "$T/s.log"; then
        skip "systemd-analyze security --offline unsupported by this systemd"
    else
        tail -3 "$T/s.log"; bad "systemd-analyze security: exposure above 2.0"
    fi
else
    skip "systemd-analyze not available: segd.service not verified"
fi

echo
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ] || exit 1
[ "$skipped" = 0 ] || exit 77 # some checks did not run: not a pass
