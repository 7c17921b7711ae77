#!/usr/bin/python3
"""Static checks of the deployment files: deploy/compose.yaml with
haproxy.cfg, prometheus.yml and rules.yml; deploy/kubernetes/*.yaml;
deploy/segd.service; Dockerfile and .dockerignore.

Asserts the fields that matter for operating segd (probe paths, ports,
grace periods above the drain timeout, resources, replicas, selectors that
match) and that the files agree with each other.  Prints one "ok ..." or
"FAIL ..." line per assertion and exits 1 if any failed.

    /usr/bin/python3 tests/deploy/check_manifests.py [REPO_ROOT]

Environment (check-configs.sh sets them; the defaults when unset):
SEGD_DRAIN_DEFAULT, SEGD_REQUEST_TIMEOUT_DEFAULT, SEGD_MAX_SERIES_SLICES_DEFAULT
(the daemon's defaults of --drain-timeout, --request-timeout,
--max-series-slices, read from `segd serve --help`; 30, 30, 512);
SEGD_RSS_BASE_MIB and SEGD_RSS_PER_WORKER_MIB (resident MiB of `segd serve`
= base + per worker x workers, measured by check-configs.sh as VmHWM after
one 360x310 slice with 1 and 2 workers; unset: the documented 45 and 99).
"""
import glob
import json
import os
import re
import shlex
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    print("FAIL python3-yaml is not installed (apt-get install python3-yaml)")
    sys.exit(1)

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
DRAIN_DEFAULT = float(os.environ.get("SEGD_DRAIN_DEFAULT") or 30)
REQUEST_TIMEOUT_DEFAULT = float(os.environ.get("SEGD_REQUEST_TIMEOUT_DEFAULT") or 30)
MAX_SERIES_SLICES_DEFAULT = int(os.environ.get("SEGD_MAX_SERIES_SLICES_DEFAULT") or 512)
# The memory figures README.md, Dockerfile and deploy/ state (MiB): resident
# set of `segd serve` = DOC_RSS_BASE + DOC_RSS_PER_WORKER x --workers.
DOC_RSS_BASE, DOC_RSS_PER_WORKER = 45.0, 99.0
RSS_BASE = float(os.environ.get("SEGD_RSS_BASE_MIB") or DOC_RSS_BASE)
RSS_PER_WORKER = float(os.environ.get("SEGD_RSS_PER_WORKER_MIB") or DOC_RSS_PER_WORKER)
RSS_MEASURED = bool(os.environ.get("SEGD_RSS_BASE_MIB") and os.environ.get("SEGD_RSS_PER_WORKER_MIB"))
# Room a memory limit leaves beyond resident set + --max-body-total, for
# response documents and allocator slack (MiB).
MIN_SLACK_MIB = 64
# The time a slice of a series may take on a busy or slower host, for the
# balancer's server timeout (measured: 86 ms a slice in a 512-slice series
# on one worker, haproxy.cfg).
SLICE_ALLOWANCE_S = 0.25
P95_EXPR = "histogram_quantile(0.95, sum by (le) (rate(segd_request_duration_seconds_bucket[5m])))"

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {what}")
    else:
        failed += 1
        print(f"FAIL {what}")
    return bool(cond)


def guard(what, fn):
    """Run a group of checks; an exception (missing key, bad file) is one failure."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report and go on with the next group
        check(False, f"{what}: {type(e).__name__}: {e}")


def norm(expr):
    return re.sub(r"\s+", "", str(expr))


def seconds(v):
    """'40s', '1m30s', '45', 45 -> seconds."""
    if isinstance(v, (int, float)):
        return float(v)
    s = str(v).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", s):
        if m.start() != pos:
            raise ValueError(f"bad duration {v!r}")
        total += float(m.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"bad duration {v!r}")
    return total


def cpu(v):
    s = str(v)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def rss(workers):
    return RSS_BASE + RSS_PER_WORKER * workers


def mib(v):
    """Kubernetes quantities (128Mi, 1G), segd sizes (32M) and compose's
    mem_limit (512m: binary, as Docker reads it) -> MiB."""
    s = str(v)
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20,
             "k": 1 / 1024, "m": 1, "g": 1024}
    for u, f in sorted(units.items(), key=lambda x: -len(x[0])):
        if s.endswith(u):
            return float(s[: -len(u)]) * f
    return float(s) / 2**20


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def subset(a, b):
    return bool(a) and all(b.get(k) == v for k, v in a.items())


# ---------------------------------------------------------------- compose
def compose():
    c = load(os.path.join(DEPLOY, "compose.yaml"))
    svcs = c["services"]
    segd = {n: s for n, s in svcs.items() if "segd" in str(s.get("image", "")) and n.startswith("segd")}
    check(len(segd) == 3, f"compose: 3 segd replicas ({', '.join(sorted(segd))})")
    for n, s in sorted(segd.items()):
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        drain = float(env.get("SEGD_DRAIN_TIMEOUT", DRAIN_DEFAULT))
        grace = seconds(s.get("stop_grace_period", "10s"))
        check(grace > drain, f"compose {n}: stop_grace_period {grace:g}s > drain timeout {drain:g}s")
        check(s.get("stop_signal", "SIGTERM") == "SIGTERM", f"compose {n}: stop signal SIGTERM")
        check("SEGD_WORKERS" in env, f"compose {n}: SEGD_WORKERS pinned (the default counts host CPUs)")
        check(str(env.get("SEGD_PORT", "8080")) == "8080", f"compose {n}: SEGD_PORT 8080")
        # a container health check is liveness: /healthz, which stays 200
        # while draining; readiness is HAProxy's /readyz check
        hc = s.get("healthcheck") or {}
        check(re.search(r"GET /healthz ", " ".join(map(str, hc.get("test", [])))),
              f"compose {n}: healthcheck probes /healthz (liveness, as the image's HEALTHCHECK)")
        image_hc = dockerfile_healthcheck()
        got = {k: seconds(hc[k]) if k in hc else None for k in ("interval", "timeout", "start_period")}
        got["retries"] = hc.get("retries")
        check(got == {k: v for k, v in image_hc.items() if k != "cmd"},
              f"compose {n}: healthcheck timings {got} = the Dockerfile HEALTHCHECK's")
        cmd = [str(a).replace("$$", "$") for a in hc.get("test", [])[1:]]
        check(cmd == [a.replace("${SEGD_PORT:-8080}", "8080") for a in image_hc["cmd"]],
              f"compose {n}: healthcheck command = the Dockerfile HEALTHCHECK's (port 8080)")
        limit = s.get("mem_limit") or (s.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"))
        check(limit, f"compose {n}: memory limit set")
        workers = int(env.get("SEGD_WORKERS", 0))
        body_total = env.get("SEGD_MAX_BODY_TOTAL")
        series_mem = env.get("SEGD_MAX_SERIES_MEMORY")
        check(body_total is not None, f"compose {n}: SEGD_MAX_BODY_TOTAL set (its default follows the limit)")
        check(series_mem is not None, f"compose {n}: SEGD_MAX_SERIES_MEMORY set (its default follows the limit)")
        if limit and body_total is not None and series_mem is not None and workers:
            need = rss(workers) + mib(body_total) + mib(series_mem) + MIN_SLACK_MIB
            check(mib(limit) >= need, f"compose {n}: mem_limit {limit} ({mib(limit):g} MiB) >= RSS with "
                  f"{workers} workers {rss(workers):.0f} MiB + SEGD_MAX_BODY_TOTAL {body_total} + "
                  f"SEGD_MAX_SERIES_MEMORY {series_mem} + {MIN_SLACK_MIB} MiB slack = {need:.0f} MiB")
    check(sum(1 for s in segd.values() if "build" in s) >= 1, "compose: one replica builds the image from ../Dockerfile")
    builds = [s["build"] for s in segd.values() if "build" in s]
    check(all(os.path.isfile(os.path.join(DEPLOY, b.get("context", "."), b.get("dockerfile", "Dockerfile")))
              for b in builds), "compose: build context/dockerfile exist")

    hap = svcs["haproxy"]
    check(any(str(p).startswith("8080:") for p in hap.get("ports", [])), "compose haproxy: publishes 8080")
    check(any("haproxy.cfg" in str(v) for v in hap.get("volumes", [])), "compose haproxy: mounts haproxy.cfg")
    deps = hap.get("depends_on") or {}
    check(set(segd) <= set(deps), "compose haproxy: depends on every replica")
    prom = svcs["prometheus"]
    vols = " ".join(map(str, prom.get("volumes", [])))
    check("prometheus.yml" in vols and "rules.yml" in vols, "compose prometheus: mounts prometheus.yml and rules.yml")
    for v in prom.get("volumes", []):
        src = str(v).split(":")[0]
        if src.startswith("./"):
            check(os.path.isfile(os.path.join(DEPLOY, src)), f"compose prometheus: {src} exists")

    # haproxy.cfg: every replica is a checked server, health check on /readyz
    cfg = open(os.path.join(DEPLOY, "haproxy.cfg")).read()
    servers = dict(re.findall(r"^\s*server\s+(\S+)\s+(\S+)", cfg, re.M))
    check({f"{n}:8080" for n in segd} == set(servers.values()), "haproxy.cfg: one server per replica, port 8080")
    check(re.search(r"^\s*default-server\b.*\bcheck\b", cfg, re.M) or
          all(re.search(rf"^\s*server\s+{re.escape(k)}\s+\S+.*\bcheck\b", cfg, re.M) for k in servers),
          "haproxy.cfg: servers are health checked")
    check(re.search(r"^\s*http-check\s+send\s+.*\buri\s+/readyz\b", cfg, re.M), "haproxy.cfg: http-check on /readyz")
    check(re.search(r"^\s*http-check\s+expect\s+status\s+200\b", cfg, re.M), "haproxy.cfg: expects status 200")
    check(re.search(r"^\s*bind\s+\S*:8080\b", cfg, re.M), "haproxy.cfg: frontend on :8080")
    # the server timeout must outlast the longest answer segd may give: a
    # job waits up to --request-timeout in the queue, then runs to its end;
    # the longest job is a series of --max-series-slices slices
    tserver = re.search(r"^\s*timeout\s+server\s+(\S+)", cfg, re.M)
    for n, s in sorted(segd.items()):
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        rt = float(env.get("SEGD_REQUEST_TIMEOUT", REQUEST_TIMEOUT_DEFAULT))
        slices = int(env.get("SEGD_MAX_SERIES_SLICES", MAX_SERIES_SLICES_DEFAULT))
        longest = rt + slices * SLICE_ALLOWANCE_S
        check(tserver and seconds(tserver.group(1)) > longest,
              f"haproxy.cfg: timeout server {tserver.group(1) if tserver else None} > {n}'s longest answer: "
              f"request timeout {rt:g} s + {slices} series slices x {SLICE_ALLOWANCE_S:g} s = {longest:g} s")

    # prometheus.yml: every replica scraped, rules loaded
    p = load(os.path.join(DEPLOY, "prometheus.yml"))
    targets = set()
    for job in p.get("scrape_configs", []):
        for sc in job.get("static_configs", []):
            targets.update(sc.get("targets", []))
    check({f"{n}:8080" for n in segd} <= targets, "prometheus.yml: scrapes every replica")
    check("rules.yml" in [os.path.basename(r) for r in p.get("rule_files", [])], "prometheus.yml: loads rules.yml")


def rules():
    r = load(os.path.join(DEPLOY, "rules.yml"))
    recs = {x["record"]: x["expr"] for g in r["groups"] for x in g["rules"] if "record" in x}
    check(any(norm(e) == norm(P95_EXPR) for e in recs.values()), "rules.yml: records the p95 latency from the histogram")
    # kubernetes/prometheusrule.yaml holds the same rules for the Prometheus
    # Operator: every group and rule of one is in the other, the same
    check(os.path.exists(PROMETHEUSRULE), "kubernetes/prometheusrule.yaml exists")
    a, b = rule_table(r["groups"]), rule_table(load(PROMETHEUSRULE)["spec"]["groups"])
    for key in sorted(set(a) | set(b)):
        if key not in b or key not in a:
            why = " (only in rules.yml)" if key not in b else " (only in prometheusrule.yaml)"
        else:
            why = "".join(f"; {f}: {a[key].get(f)!r} vs {b[key].get(f)!r}"
                          for f in sorted(set(a[key]) | set(b[key])) if a[key].get(f) != b[key].get(f))
        check(not why, f"rules.yml = kubernetes/prometheusrule.yaml: {' '.join(key)}{why}")
    ngroups = sum(1 for k in a if len(k) == 2)
    check(ngroups >= 1, f"rules.yml: {ngroups} groups, {len(a) - ngroups} rules compared with prometheusrule.yaml")


PROMETHEUSRULE = os.path.join(DEPLOY, "kubernetes", "prometheusrule.yaml")


def rule_table(groups):
    """Prometheus rule groups -> {("group", name): its fields, ("group",
    name, "record"|"alert", rule name): the rule's fields}, expressions with
    white space removed; a rule name twice in a group is kept as name#2."""
    t = {}
    for g in groups:
        t[("group", g["name"])] = {k: v for k, v in g.items() if k != "rules"}
        for x in g.get("rules", []):
            kind = "record" if "record" in x else "alert"
            key = ("group", g["name"], kind, str(x.get(kind)))
            n = 2
            while key in t:
                key = ("group", g["name"], kind, f"{x.get(kind)}#{n}")
                n += 1
            t[key] = {k: norm(v) if k == "expr" else v for k, v in x.items()}
    return t


# ---------------------------------------------------------------- memory
def memory():
    """The measured resident set against the figures the files state (within
    10 %): a larger arena has to reach README.md, Dockerfile and deploy/."""
    if not RSS_MEASURED:
        print(f"(memory: documented {DOC_RSS_BASE:g} + {DOC_RSS_PER_WORKER:g} MiB per worker assumed, not measured)")
        return
    for what, got, doc in (("per worker", RSS_PER_WORKER, DOC_RSS_PER_WORKER),
                           ("with 2 workers", rss(2), DOC_RSS_BASE + 2 * DOC_RSS_PER_WORKER)):
        check(abs(got - doc) <= 0.1 * doc, f"memory: measured {what} {got:.1f} MiB within 10 % of the documented "
              f"{doc:g} MiB (README.md Container, Dockerfile, deploy/, DOC_RSS_* here)")


# ---------------------------------------------------------------- kubernetes
def kubernetes():
    docs = []
    for f in sorted(glob.glob(os.path.join(DEPLOY, "kubernetes", "*.yaml"))):
        with open(f) as fh:
            for d in yaml.safe_load_all(fh):
                if d:
                    docs.append((os.path.basename(f), d))
    kinds = {}
    for f, d in docs:
        check("apiVersion" in d and "kind" in d, f"k8s {f}: has apiVersion and kind")
        kinds.setdefault(d.get("kind"), []).append(d)
    for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        check(k in kinds, f"k8s: a {k}")
    dep = kinds["Deployment"][0]
    name = dep["metadata"]["name"]
    spec = dep["spec"]
    tmpl = spec["template"]
    labels = tmpl["metadata"]["labels"]
    pod = tmpl["spec"]
    check(spec.get("replicas") == 3, "k8s Deployment: replicas 3")
    check(subset(spec["selector"]["matchLabels"], labels), "k8s Deployment: selector matches the pod labels")
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    port = int(env.get("SEGD_PORT", 8080))
    check(port in ports.values(), f"k8s Deployment: containerPort {port} = SEGD_PORT")
    pname = next((n for n, v in ports.items() if v == port), None)
    # probes on the --probe-port listener, which idle clients of the main
    # port cannot starve (issue 15)
    pport = int(env.get("SEGD_PROBE_PORT", -1))
    check(pport > 0 and pport != port and pport in ports.values(),
          f"k8s Deployment: SEGD_PROBE_PORT {pport} set, a containerPort, not SEGD_PORT")
    ppname = next((n for n, v in ports.items() if v == pport), None)

    def probe(kind, path):
        pr = c.get(kind) or {}
        g = pr.get("httpGet") or {}
        check(g.get("path") == path and g.get("port") in (pport, ppname),
              f"k8s Deployment: {kind} GET {path} on the probe port")
        return pr

    probe("readinessProbe", "/readyz")
    probe("livenessProbe", "/healthz")
    sp = probe("startupProbe", "/healthz")
    budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
    check(budget >= 30, f"k8s Deployment: startupProbe allows {budget} s for weight loading (>= 30)")
    drain = float(env.get("SEGD_DRAIN_TIMEOUT", DRAIN_DEFAULT))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace > drain, f"k8s Deployment: terminationGracePeriodSeconds {grace} > drain timeout {drain:g}")
    pre = ((c.get("lifecycle") or {}).get("preStop") or {})
    cmd = (pre.get("exec") or {}).get("command") or []
    sleep = float(cmd[-1]) if cmd and "sleep" in cmd[0] else float((pre.get("sleep") or {}).get("seconds", 0))
    check(sleep > 0, f"k8s Deployment: preStop sleep ({sleep:g} s) before SIGTERM")
    check(grace >= sleep + drain, f"k8s Deployment: grace {grace} >= preStop {sleep:g} + drain {drain:g}")
    res = c.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    check(all(k in req for k in ("cpu", "memory")) and "memory" in lim, "k8s Deployment: cpu/memory requests and memory limit set")
    workers = int(env.get("SEGD_WORKERS", 0))
    check(workers >= 1, "k8s Deployment: SEGD_WORKERS pinned (the default counts the node's CPUs)")
    r = rss(workers)
    check(mib(req["memory"]) >= r,
          f"k8s Deployment: memory request {req['memory']} >= RSS with {workers} workers {r:.0f} MiB")
    check(mib(lim["memory"]) >= mib(req["memory"]), "k8s Deployment: memory limit >= request")
    body_total, series_mem = env.get("SEGD_MAX_BODY_TOTAL"), env.get("SEGD_MAX_SERIES_MEMORY")
    need = (r + mib(body_total) + mib(series_mem) + MIN_SLACK_MIB
            if body_total is not None and series_mem is not None else None)
    check(need is not None and mib(lim["memory"]) >= need,
          f"k8s Deployment: memory limit {lim['memory']} >= RSS {r:.0f} MiB + SEGD_MAX_BODY_TOTAL {body_total}"
          f" + SEGD_MAX_SERIES_MEMORY {series_mem} + {MIN_SLACK_MIB} MiB slack" + (f" = {need:.0f} MiB" if need else ""))
    check(workers <= cpu(req["cpu"]) + 1e-9, f"k8s Deployment: SEGD_WORKERS {workers} <= cpu request {req['cpu']}")
    psc = pod.get("securityContext") or {}
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, "k8s Deployment: runs as non-root")
    ann = tmpl["metadata"].get("annotations") or {}
    has_sm = "ServiceMonitor" in kinds
    check(has_sm or ann.get("prometheus.io/scrape") == "true", "k8s: Prometheus scrape annotations or a ServiceMonitor")
    if ann:
        check(str(ann.get("prometheus.io/port")) == str(pport) and
              ann.get("prometheus.io/path", "/metrics") == "/metrics",
              "k8s Deployment: prometheus.io annotations name the probe port and /metrics")

    svc = kinds["Service"][0]
    check(subset(svc["spec"]["selector"], labels), "k8s Service: selector matches the pod labels")
    sports = svc["spec"]["ports"]
    check(all(p.get("targetPort") in (port, pname, pport, ppname) for p in sports),
          "k8s Service: every targetPort is the daemon's port or its probe port")
    check(any(p.get("targetPort") in (port, pname) for p in sports), "k8s Service: exposes the daemon's port")
    # /metrics is scraped on the probe listener, which clients of the
    # traffic port cannot starve: the Service names that port
    probe_sports = [p.get("name") for p in sports if p.get("targetPort") in (pport, ppname)]
    check(probe_sports and all(probe_sports), f"k8s Service: exposes the probe port under a name ({probe_sports})")

    hpa = kinds["HorizontalPodAutoscaler"][0]["spec"]
    ref = hpa["scaleTargetRef"]
    check(ref.get("kind") == "Deployment" and ref.get("name") == name and ref.get("apiVersion") == "apps/v1",
          "k8s HPA: scaleTargetRef is the Deployment")
    check(1 <= hpa.get("minReplicas", 1) <= hpa["maxReplicas"], "k8s HPA: minReplicas <= maxReplicas")
    check(hpa.get("minReplicas", 1) >= 2, "k8s HPA: minReplicas >= 2 (the PDB can always evict one)")
    check(hpa.get("metrics"), "k8s HPA: has metrics")

    pdb = kinds["PodDisruptionBudget"][0]["spec"]
    check(subset(pdb["selector"]["matchLabels"], labels), "k8s PDB: selector matches the pod labels")
    if "minAvailable" in pdb:
        check(int(pdb["minAvailable"]) < spec["replicas"], "k8s PDB: minAvailable < replicas (drains can proceed)")
    else:
        check(int(pdb.get("maxUnavailable", 0)) >= 1, "k8s PDB: maxUnavailable >= 1 (drains can proceed)")

    for sm in kinds.get("ServiceMonitor", []):
        s = sm["spec"]
        check(subset(s["selector"]["matchLabels"], svc["metadata"]["labels"]), "k8s ServiceMonitor: selects the Service")
        check(all(e.get("port") in [p.get("name") for p in sports] and e.get("path", "/metrics") == "/metrics"
                  for e in s["endpoints"]), "k8s ServiceMonitor: scrapes the Service's named port /metrics")
        check(all(e.get("port") in probe_sports for e in s["endpoints"]),
              "k8s ServiceMonitor: scrapes the probe port, as the prometheus.io/port annotation says")

    kz = os.path.join(DEPLOY, "kubernetes", "kustomization.yaml")
    if os.path.exists(kz):
        res_files = load(kz).get("resources", [])
        check(res_files and all(os.path.isfile(os.path.join(DEPLOY, "kubernetes", r)) for r in res_files),
              "k8s kustomization: listed resources exist")


# ---------------------------------------------------------------- systemd
def systemd():
    keys = {}
    for line in open(os.path.join(DEPLOY, "segd.service")):
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        k, _, v = line.partition("=")
        keys.setdefault(k.strip(), []).append(v.strip())

    def one(k):
        return (keys.get(k) or [""])[-1]

    exe = shlex.split(one("ExecStart"))
    check(exe[:2] in (["/usr/bin/segd", "serve"], ["/usr/local/bin/segd", "serve"]), "segd.service: ExecStart segd serve")
    env = dict(kv.split("=", 1) for e in keys.get("Environment", []) for kv in shlex.split(e))
    check(any(k.startswith("SEGD_") for k in env), "segd.service: Environment=SEGD_*")
    check(env.get("SEGD_WEIGHTS", "").endswith(".safetensors"), "segd.service: SEGD_WEIGHTS points at the installed weights")
    drain = float(env.get("SEGD_DRAIN_TIMEOUT", DRAIN_DEFAULT))
    check(one("KillSignal") == "SIGTERM", "segd.service: KillSignal=SIGTERM")
    check(seconds(one("TimeoutStopSec") or "90s") > drain, f"segd.service: TimeoutStopSec > drain timeout {drain:g}")
    for k, v in [("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                 ("PrivateTmp", "yes"), ("ProtectHome", "yes"), ("MemoryDenyWriteExecute", "yes"),
                 ("PrivateDevices", "yes"), ("ProtectKernelTunables", "yes"), ("ProtectControlGroups", "yes"),
                 ("RestrictNamespaces", "yes"), ("LockPersonality", "yes")]:
        check(one(k) == v, f"segd.service: {k}={v}")
    check("AF_INET" in one("RestrictAddressFamilies"), "segd.service: RestrictAddressFamilies")
    check(any("@system-service" in v for v in keys.get("SystemCallFilter", [])), "segd.service: SystemCallFilter=@system-service")
    check(keys.get("CapabilityBoundingSet") == [""], "segd.service: no capabilities")


# ---------------------------------------------------------------- Dockerfile
def dockerfile_healthcheck():
    """The Dockerfile's HEALTHCHECK: {"interval", "timeout", "start_period"
    (seconds), "retries", "cmd" (the exec-form CMD after the shell)}, with
    Docker's defaults for options it does not give."""
    text = re.sub(r"\\\n", " ", open(os.path.join(ROOT, "Dockerfile")).read())
    m = re.search(r"^HEALTHCHECK\s+(.*?)\bCMD\s+(\[.*\])\s*$", text, re.M)
    if not m:
        raise ValueError("no exec-form HEALTHCHECK ... CMD [...] in the Dockerfile")
    opts = dict(re.findall(r"--([a-z-]+)=(\S+)", m.group(1)))
    return {"interval": seconds(opts.get("interval", "30s")), "timeout": seconds(opts.get("timeout", "30s")),
            "start_period": seconds(opts.get("start-period", "0s")), "retries": int(opts.get("retries", 3)),
            "cmd": json.loads(m.group(2))}


def dockerfile():
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    ins = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if len(l.split(None, 1)) > 1 else "")
           for l in (x.strip() for x in lines) if l and not l.startswith("#")]
    froms = [a for i, a in ins if i == "FROM"]
    check(len(froms) >= 2, "Dockerfile: multi-stage")
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    base = [re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), f.split()[0]) for f in froms]
    check(all(b.endswith("debian:bookworm-slim") for b in base), f"Dockerfile: stages FROM debian:bookworm-slim ({base})")
    last = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    final = ins[last:]
    user = [a for k, a in final if k == "USER"]
    check(user and user[-1].split(":")[0] not in ("0", "root"), "Dockerfile: runtime stage runs as non-root USER")
    check(any(k == "EXPOSE" and "8080" in a for k, a in final), "Dockerfile: EXPOSE 8080")
    check(any(k == "STOPSIGNAL" and a.strip() == "SIGTERM" for k, a in final), "Dockerfile: STOPSIGNAL SIGTERM")
    check(any(k == "HEALTHCHECK" and "/healthz" in a for k, a in final), "Dockerfile: HEALTHCHECK on /healthz")
    envtxt = " ".join(a for k, a in final if k == "ENV")
    for v in ("SEGD_PORT", "SEGD_WORKERS", "SEGD_WEIGHTS"):
        check(re.search(rf"\b{v}=\S", envtxt), f"Dockerfile: ENV {v}")
    m = re.search(r"SEGD_WEIGHTS=(\S+)", envtxt)
    check(m and m.group(1).startswith("/usr/share/segd/"), "Dockerfile: SEGD_WEIGHTS under /usr/share/segd (meson's datadir)")
    check(not any(k == "RUN" and re.search(r"\b(gcc|meson|-dev)\b", a) for k, a in final),
          "Dockerfile: no build tools in the runtime stage")
    di = [l.strip() for l in open(os.path.join(ROOT, ".dockerignore")) if l.strip() and not l.startswith("#")]
    for pat in (".git", "build", "train/runs", "node_modules", ".devdata"):
        check(any(p.rstrip("/").lstrip("/").endswith(pat) or p.startswith(pat) for p in di), f".dockerignore: excludes {pat}")


for what, fn in [("memory", memory), ("compose", compose), ("rules", rules), ("kubernetes", kubernetes),
                 ("systemd", systemd), ("Dockerfile", dockerfile)]:
    guard(what, fn)
print(f"manifests: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
