#!/usr/bin/python3
"""TLS without a terminating balancer: --tls-cert/--tls-key through
libmicrohttpd's GnuTLS.  The test makes its own CA-less self-signed
certificate for 127.0.0.1 with openssl, then curl (verifying against that
certificate) gets /healthz and segments a slice over HTTPS with the masks
`segd infer` gives; curl without the certificate refuses the server; plain
HTTP on the TLS port gets no answer; the probe port stays plain HTTP; a
lone --tls-cert, or a missing file, stops the start with a message."""
import json
import os
import shutil
import subprocess
import tempfile

import segdtest as T

for tool in ("openssl", "curl"):
    if not shutil.which(tool):
        T.skip(f"{tool} missing (apt-get install {tool})")
tmp = tempfile.mkdtemp(prefix="segd-tls-")
cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
good_path = T.SLICES[0]
ref = T.infer(good_path)


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "60", *args], capture_output=True, text=True)


d = T.Daemon("--tls-cert", cert, "--tls-key", key, "--probe-port", "0")
p = d.port
T.check(any(f"listening on https://127.0.0.1:{p}" in line for line in d.lines), "log says https://")
r = curl("--cacert", cert, f"https://127.0.0.1:{p}/healthz")
T.check(r.returncode == 0 and '"ok"' in r.stdout, "curl --cacert: GET /healthz over HTTPS", r.stderr + r.stdout)
r = curl("--cacert", cert, "-H", "Content-Type: image/png", "--data-binary", f"@{good_path}",
         f"https://127.0.0.1:{p}/v1/segment")
doc = json.loads(r.stdout) if r.returncode == 0 and r.stdout.startswith("{") else {}
T.check(doc.get("masks") == ref.get("masks"), "POST /v1/segment over HTTPS: masks as segd infer",
        r.stderr[-200:] + r.stdout[:200])
r = curl("--tls13-ciphers", "TLS_AES_128_GCM_SHA256", "--cacert", cert, "-o", "/dev/null", "-w", "%{ssl_verify_result}",
         f"https://127.0.0.1:{p}/readyz")
T.check(r.returncode == 0, "TLS 1.3 handshake", r.stderr)
r = curl(f"https://127.0.0.1:{p}/healthz")
T.check(r.returncode != 0, "curl without the certificate refuses the server (self-signed)", str(r.returncode))
r = curl(f"http://127.0.0.1:{p}/healthz")
T.check(r.returncode != 0 or '"ok"' not in r.stdout, "plain HTTP on the TLS port: no answer", r.stdout[:80])
probe = None
for line in d.lines:
    if "probes on http://127.0.0.1:" in line:
        probe = int(line.rsplit(":", 1)[1])
r = curl(f"http://127.0.0.1:{probe}/readyz") if probe else None
T.check(r is not None and '"ready"' in r.stdout, "probe port stays plain HTTP", r.stdout if r else "no probe port")
r = curl("--cacert", cert, f"https://127.0.0.1:{p}/healthz")
T.check(r.returncode == 0 and d.alive(), "still serving HTTPS after a plain-HTTP client", r.stderr)
rc = d.stop()
T.check(rc == 0, "SIGTERM: exit 0", f"rc {rc}")

for args, needle in [(["--tls-cert", cert], "go together"), (["--tls-key", key], "go together"),
                     (["--tls-cert", cert, "--tls-key", key + ".none"], "No such file")]:
    pr = subprocess.run([T.SEGD_BIN, "serve", "--port", "0", "--weights", T.WEIGHTS, *args],
                        capture_output=True, text=True, timeout=60)
    T.check(pr.returncode != 0 and needle in pr.stderr, f"{' '.join(a.split('/')[-1] for a in args)}: start refused",
            pr.stderr[-200:])
shutil.rmtree(tmp, ignore_errors=True)
T.finish()
