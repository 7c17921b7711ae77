#!/usr/bin/python3
"""Smaller exposures (issue 15): /v1/model gives the weights' file name,
not the server's absolute path; the viewer page carries a strict
Content-Security-Policy and frame protection; every answer carries
X-Content-Type-Options: nosniff; an HTTP/1.1 request without Host is
answered 400; the viewer's CSV quotes fields per RFC 4180 and neutralises
a leading = + - @ (run with node on the served viewer.js)."""
import json
import os
import re
import shutil
import subprocess

import segdtest as T

d = T.Daemon("--workers", 1)
p = d.port
doc = T.request(p, "GET", "/v1/model").json() or {}
T.check(doc.get("path") == os.path.basename(T.WEIGHTS), "/v1/model path is the file name", doc.get("path"))
T.check(os.path.dirname(T.WEIGHTS) not in json.dumps(doc), "no server directory in /v1/model")

r = T.request(p, "GET", "/")
csp = r.headers.get("content-security-policy", "")
T.check(r.status == 200 and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        and "unsafe" not in csp, "viewer page: strict Content-Security-Policy", csp)
T.check(r.headers.get("x-frame-options") == "DENY", "viewer page: X-Frame-Options DENY")
for method, path, body in (("GET", "/", None), ("GET", "/viewer.js", None), ("GET", "/healthz", None),
                           ("GET", "/metrics", None), ("GET", "/v1/model", None), ("GET", "/nope", None),
                           ("POST", "/v1/segment", b"not a png")):
    h = {"Content-Type": "image/png"} if body else {}
    r = T.request(p, method, path, body, h)
    T.check(r.headers.get("x-content-type-options") == "nosniff", f"{method} {path} ({r.status}): nosniff")


def raw(req):
    s = T.raw_connect(p)
    s.sendall(req)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and len(data) > 200:
            break
    s.close()
    return data


a = raw(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
T.check(a.startswith(b"HTTP/1.1 400") and b"bad_request" in a, "HTTP/1.1 without Host: 400 JSON", a[:80])
a = raw(b"GET /healthz HTTP/1.0\r\n\r\n")
T.check(b" 200 " in a.split(b"\r\n")[0], "HTTP/1.0 without Host: still 200", a[:80])

js = T.request(p, "GET", "/viewer.js").body.decode()
m = re.search(r"\n(\s*)function csvField\(v\) \{\n.*?\n\1\}", js, re.S)
T.check(m is not None, "viewer.js has csvField()")
T.check(re.search(r"csvField\(s\.id\)", js) is not None, "downloadCsv quotes the id through csvField()")
node = shutil.which("node") or shutil.which("nodejs")
T.check(node is not None, "node is installed (run-all.sh installs it)")
if m and node:
    cases = {"case1_day2_slice_0003": "case1_day2_slice_0003", "a,b,c": '"a,b,c"', 'say "hi"': '"say ""hi"""',
             "=HYPERLINK(1)": "'=HYPERLINK(1)", "+1": "'+1", "-1": "'-1", "@SUM(A1)": "'@SUM(A1)",
             "=a,b": "\"'=a,b\"", "line\nbreak": '"line\nbreak"', "": ""}
    prog = m.group(0) + "\nconst cases = " + json.dumps(cases) + ";\n" + \
        "const bad = Object.entries(cases).filter(([k, v]) => csvField(k) !== v).map(([k]) => [k, csvField(k)]);\n" + \
        "console.log(JSON.stringify(bad));\n"
    res = subprocess.run([node, "-e", prog], capture_output=True, timeout=30)
    bad = res.stdout.decode().strip()
    T.check(res.returncode == 0 and bad == "[]", "CSV fields: RFC 4180 quoting, leading =+-@ neutralised",
            bad or res.stderr.decode()[-300:])
T.check(d.stop() == 0, "clean exit")
T.finish()
