#!/usr/bin/python3
"""API keys (--api-key-file): POST /v1/* needs "Authorization: Bearer
<key>" (good keys answered, a wrong or missing one 401 with
WWW-Authenticate), the probes, metrics, model document, viewer and CORS
preflight stay open, and a bad key file stops the start with a message
naming the line."""
import os
import signal
import subprocess
import tempfile

import segdtest as T

good = T.read(T.SLICES[0])
tmp = tempfile.mkdtemp(prefix="segd-keys-")
keyfile = os.path.join(tmp, "keys")
K1, K2 = "k1-3f9a0c7d5e2b4a6f8c1d", "second_key.ABCDEFGHIJ~+/=="
with open(keyfile, "w") as f:
    f.write(f"# segd API keys\n\n  {K1}  \n{K2}\r\n")

d = T.Daemon("--api-key-file", keyfile, "--cors-origin", "*")
p = d.port
for name, hdr in [("first key", f"Bearer {K1}"), ("second key", f"Bearer {K2}"),
                  ("scheme in lower case", f"bearer {K1}")]:
    r = T.post_png(p, good, headers={"Authorization": hdr})
    T.check(r.status == 200, f"{name}: 200", f"{r.status} {r.body[:120]!r}")
for name, hdr, err in [("missing", None, None), ("wrong key", "Bearer k1-3f9a0c7d5e2b4a6f8c1e", "invalid_token"),
                       ("a key's prefix", f"Bearer {K1[:-1]}", "invalid_token"),
                       ("key plus a character", f"Bearer {K1}x", "invalid_token"),
                       ("Basic scheme", "Basic azE6eA==", "invalid_token"),
                       ("empty token", "Bearer ", "invalid_token")]:
    r = T.post_png(p, good, headers={"Authorization": hdr} if hdr else {})
    wa = r.headers.get("www-authenticate", "")
    T.check(r.status == 401 and wa.startswith('Bearer realm="segd"') and
            (err is None or f'error="{err}"' in wa) and (r.json() or {}).get("error", {}).get("code") == "unauthorized",
            f"{name}: 401 with WWW-Authenticate", f"{r.status} {wa!r} {r.body[:120]!r}")
r = T.request(p, "POST", "/v1/series", b"x", {"Content-Type": "multipart/form-data; boundary=x"})
T.check(r.status == 401, "POST /v1/series without a key: 401", str(r.status))
for path in ("/healthz", "/readyz", "/metrics", "/v1/model", "/"):
    r = T.request(p, "GET", path)
    T.check(r.status == 200, f"GET {path} open without a key", str(r.status))
r = T.request(p, "OPTIONS", "/v1/segment", headers={"Origin": "http://viewer", "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "authorization, content-type"})
T.check(r.status == 204 and "Authorization" in r.headers.get("access-control-allow-headers", ""),
        "CORS preflight open, Authorization allowed", f"{r.status} {r.headers}")
n401 = T.metric(p, 'segd_http_requests_total{route="/v1/segment",code="401"}', 0)
T.check(n401 == 6, "401s counted in segd_http_requests_total", str(n401))
# keys are reloaded with the weights (SIGHUP): the old key stops working
K3 = "rotated-key-9c0e6f1a2b3d4e5f"
with open(keyfile + ".new", "w") as f:
    f.write(K3 + "\n")
os.rename(keyfile + ".new", keyfile)
os.kill(d.pid, signal.SIGHUP)
T.wait_for(lambda: T.metric(p, "segd_model_reloads_total", 0) >= 1, 20.0)
r_old = T.post_png(p, good, headers={"Authorization": f"Bearer {K1}"})
r_new = T.post_png(p, good, headers={"Authorization": f"Bearer {K3}"})
T.check(r_old.status == 401 and r_new.status == 200, "SIGHUP reloads the keys: old key 401, new key 200",
        f"{r_old.status} {r_new.status}")
rc = d.stop()
T.check(rc == 0, "SIGTERM: exit 0", f"rc {rc}")

# a bad key file stops the start, naming the line
for text, needle in [("short\n", "line 1"), ("# only a comment\n", "holds no key"),
                     (f"{K1}\nbad key with spaces in it\n", "line 2")]:
    with open(keyfile, "w") as f:
        f.write(text)
    pr = subprocess.run([T.SEGD_BIN, "serve", "--port", "0", "--weights", T.WEIGHTS, "--api-key-file", keyfile],
                        capture_output=True, text=True, timeout=60)
    T.check(pr.returncode != 0 and needle in pr.stderr, f"key file {text.strip()[:24]!r}: start refused ({needle})",
            f"rc {pr.returncode}: {pr.stderr.strip()[-200:]}")
pr = subprocess.run([T.SEGD_BIN, "serve", "--port", "0", "--weights", T.WEIGHTS, "--api-key-file", keyfile + ".none"],
                    capture_output=True, text=True, timeout=60)
T.check(pr.returncode != 0 and "No such file" in pr.stderr, "missing key file: start refused", pr.stderr[-200:])
T.finish()
