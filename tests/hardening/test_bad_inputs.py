#!/usr/bin/python3
"""Malformed and hostile uploads: truncated, corrupt, huge-dimension
(IHDR 100000x100000), zero-size and non-PNG bodies, decompression bombs
(IDAT or zTXt inflating to hundreds of MB, a 16-megapixel IHDR from a few
KB), wrong or missing Content-Type, bad multipart bodies, bodies over
--max-body (Content-Length or chunked), bad query values and methods.
Each must get its documented status with the JSON error document
{"error":{"code","message"}} quickly; the daemon never crashes, hangs or
balloons, and still answers a good request correctly afterwards."""
import re
import zlib

import segdtest as T

MAX_BODY = 4 << 20
good_path = T.SLICES[0]
good = T.read(good_path)
ref = T.infer(good_path)


def raw_post(port, headers, body, chunked=False, timeout=20):
    """POST with a raw socket; tolerate the server closing while we send.
    Returns (status, headers, body) or (None, {}, b'') when no answer."""
    s = T.raw_connect(port, timeout)
    head = "POST /v1/segment HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    for k, v in headers.items():
        head += f"{k}: {v}\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body)}\r\n"
    try:
        s.sendall(head.encode() + b"\r\n")
        step = 1 << 16
        for i in range(0, len(body), step):
            blk = body[i:i + step]
            s.sendall(b"%x\r\n" % len(blk) + blk + b"\r\n" if chunked else blk)
        if chunked:
            s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
            m = re.search(rb"\r\nContent-Length: (\d+)\r\n", data, re.I)
            if m and b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) >= int(m.group(1)):
                break
    except OSError:
        pass
    s.close()
    if not data.startswith(b"HTTP/1.1 "):
        return None, {}, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), hdrs, rest


def expect(name, resp, status, code, max_s=5.0):
    doc = resp.json()
    ok = (resp.status == status and resp.error_code() == code and
          isinstance(doc["error"].get("message"), str) and doc["error"]["message"] and
          "application/json" in resp.headers.get("content-type", "") and resp.elapsed <= max_s)
    T.check(ok, f"{name}: {status} {code}", f"got {resp!r} in {resp.elapsed:.2f} s")


d = T.Daemon("--workers", "1", "--max-body", MAX_BODY, "--max-parts", 4)
p = d.port
for _ in range(3):
    T.post_png(p, good)
rss0 = d.rss_kb()

# ---- PNG bodies
png_cases = [
    ("truncated PNG (half)", good[:len(good) // 2], 400, "bad_request"),
    ("truncated PNG (signature + 20 bytes)", good[:28], 400, "bad_request"),
    ("corrupt IDAT", good[:200] + bytes(300) + good[500:], 400, "bad_request"),
    ("bad IHDR CRC", good[:29] + b"\0\0\0\0" + good[33:], 400, "bad_request"),
    ("IHDR 100000x100000", T.png(100000, 100000, idat=zlib.compress(b"\0" * 64)), 413, "payload_too_large"),
    ("IHDR 4096x4096 bomb (16 Mpx of zeros in a few KB)",
     T.png(4096, 4096, idat=T.deflate_zeros(4097 * 4096)), 413, "payload_too_large"),
    ("IHDR 0x0", T.png(0, 0, idat=zlib.compress(b"")), 422, "unprocessable_image"),
    ("IHDR 0x10", T.png(0, 10, idat=zlib.compress(b"")), 422, "unprocessable_image"),
    ("zero-length body", b"", 400, "bad_request"),
    ("not a PNG (JPEG magic)", b"\xff\xd8\xff\xe0" + bytes(100), 400, "bad_request"),
    ("PNG signature only", T.PNG_SIG, 400, "bad_request"),
    ("bad bit depth", T.PNG_SIG + T.ihdr(4, 4, bit_depth=7) + T.chunk(b"IEND", b""), 400, "bad_request"),
]
for name, body, status, code in png_cases:
    expect(name, T.post_png(p, body), status, code)

# decompression bombs inside the limits: answered quickly, memory bounded
for name, body in [
        ("IDAT bomb: 16x16 image, IDAT inflating to 256 MB",
         T.png(16, 16, idat=T.deflate_zeros(256 << 20))),
        ("zTXt bomb: ancillary chunk inflating to 256 MB",
         T.png(16, 16, extra=(T.chunk(b"zTXt", b"k\0\0" + T.deflate_zeros(256 << 20)),))),
        ("iCCP bomb: profile inflating to 256 MB",
         T.png(16, 16, extra=(T.chunk(b"iCCP", b"p\0\0" + T.deflate_zeros(256 << 20)),)))]:
    r = T.post_png(p, body)
    T.check(r.status in (200, 400) and r.elapsed < 5.0 and d.rss_kb() - rss0 < 64 * 1024,
            f"{name} ({len(body)} B): answered in {r.elapsed:.2f} s, RSS +{(d.rss_kb() - rss0) // 1024} MB",
            f"{r!r}")

# regression (patch 004): libpng inflates the whole IDAT stream after the
# last row; 1 MB of deflated zeros after a 16x16 image was 1 GB of
# inflating (about 4 s of a worker; a 32 MB upload, minutes)
bomb = T.png(16, 16, idat=T.deflate_zeros(1 << 30))
r = T.post_png(p, bomb, timeout=120)
T.check(r.status in (200, 400) and r.elapsed < 1.5,
        f"IDAT bomb: 16x16 image, {len(bomb) >> 10} KB inflating to 1 GB: answered within 1.5 s",
        f"{r.status} after {r.elapsed:.2f} s")
T.note(f"IDAT bomb ({len(bomb) >> 10} KB -> 1 GB): {r.status} after {r.elapsed:.2f} s")

# the guard must not refuse legitimate layouts (interlaced ones included)
for w, h, bd, ct, il in [(37, 53, 8, 0, 1), (5, 3, 16, 2, 1), (9, 9, 1, 3, 1), (1, 1, 8, 0, 1),
                         (2, 9, 8, 6, 1), (33, 17, 4, 0, 1), (31, 7, 16, 4, 0), (64, 3, 2, 0, 0)]:
    r = T.post_png(p, T.png(w, h, bd, ct, interlace=il))
    doc = r.json() or {}
    T.check(r.status == 200 and (doc.get("width"), doc.get("height")) == (w, h),
            f"valid {w}x{h} colour type {ct}, {bd}-bit{', interlaced' if il else ''}: 200", f"{r!r}")

# ---- content types
expect("Content-Type text/plain", T.post_png(p, good, ctype="text/plain"), 415, "unsupported_media_type")
expect("Content-Type image/jpeg", T.post_png(p, good, ctype="image/jpeg"), 415, "unsupported_media_type")
expect("Content-Type image/pngx", T.post_png(p, good, ctype="image/pngx"), 415, "unsupported_media_type")
expect("no Content-Type", T.post_png(p, good, ctype=None), 415, "unsupported_media_type")
expect("multipart without boundary", T.post_png(p, good, ctype="multipart/form-data"), 400, "bad_request")
r = T.post_png(p, good, ctype="IMAGE/PNG; charset=binary")
T.check(r.status == 200 and T.same_masks(r.json(), ref) == "", "Content-Type IMAGE/PNG; params: accepted")

# ---- multipart
ct, body = T.multipart([("file", "a.png", "image/png", good)])
r = T.post_png(p, body, ctype=ct)
T.check(r.status == 200 and T.same_masks((r.json() or {}).get("results", [None])[0], ref) == "",
        "multipart with one file: 200 and the right masks")
ct, body = T.multipart([("file", "a.png", "image/png", good)])
expect("multipart with the wrong boundary", T.post_png(p, body, ctype=ct.replace("Boundary", "Other")),
       400, "bad_request")
ct, body = T.multipart([("note", None, None, b"x")])
expect("multipart without a 'file' part", T.post_png(p, body, ctype=ct), 400, "bad_request")
ct, body = T.multipart([("file", "e.png", "image/png", b"")])
expect("multipart with an empty file part", T.post_png(p, body, ctype=ct), 400, "bad_request")
ct, body = T.multipart([("file", f"{i}.png", "image/png", good[:100]) for i in range(5)])
expect("multipart with 5 parts (--max-parts 4)", T.post_png(p, body, ctype=ct), 413, "payload_too_large")
ct, body = T.multipart([("file", "t.png", "image/png", good[:1000])])
expect("multipart with a truncated PNG", T.post_png(p, body, ctype=ct), 400, "bad_request")
ct, body = T.multipart([("file", "a.png", "image/png", good)])
expect("multipart without its closing delimiter", T.post_png(p, body[:-30], ctype=ct), 400, "bad_request")

# ---- body size
big = good + bytes(MAX_BODY)  # over by 56 KB
st, h, b = raw_post(p, {"Content-Type": "image/png"}, big)
T.check(st == 413 and b"payload_too_large" in b, "body over --max-body (Content-Length): 413 JSON",
        f"{st} {b[:120]!r}")
st, h, b = raw_post(p, {"Content-Type": "image/png"}, big, chunked=True)
T.check(st == 413 and b"payload_too_large" in b, "body over --max-body (chunked): 413 JSON",
        f"{st} {b[:120]!r}")
st, h, b = raw_post(p, {"Content-Type": "image/png"}, bytes(3 * MAX_BODY), chunked=True)
T.check(st in (413, None), "chunked body over 2x --max-body: 413 or connection closed (documented)",
        f"{st}")
st, h, b = raw_post(p, {"Content-Type": "image/png", "Expect": "100-continue"}, b"")
if st == 100:  # the interim "100 Continue"; the final status line follows in b
    m = re.search(rb"HTTP/1\.[01] (\d{3}) ", b)
    st = int(m.group(1)) if m else None
T.check(st == 400 and b"bad_request" in b, "Expect: 100-continue with an empty body: 400 JSON, no hang",
        f"{st} {b[:120]!r}")

# ---- query values, methods, routes
expect("threshold=1.5", T.post_png(p, good, path="/v1/segment?threshold=1.5"), 400, "bad_request")
expect("threshold=nan", T.post_png(p, good, path="/v1/segment?threshold=nan"), 400, "bad_request")
expect("threshold=0.5x", T.post_png(p, good, path="/v1/segment?threshold=0.5x"), 400, "bad_request")
expect("id of 200 bytes", T.post_png(p, good, path="/v1/segment?id=" + "a" * 200), 400, "bad_request")
r = T.request(p, "GET", "/v1/segment")
expect("GET /v1/segment", r, 405, "method_not_allowed")
T.check("POST" in r.headers.get("allow", ""), "405 carries Allow")
expect("PUT /v1/segment", T.request(p, "PUT", "/v1/segment", good, {"Content-Type": "image/png"}),
       405, "method_not_allowed")
expect("unknown route", T.request(p, "GET", "/v2/nothing"), 404, "not_found")
expect("path traversal", T.request(p, "GET", "/../../etc/passwd"), 404, "not_found")

# ---- raw protocol garbage: no crash
for garbage in (b"\x00\x01\x02\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1/segment HTTP/1.1\r\n"
                b"Host: t\r\nContent-Type: image/png\r\nContent-Length: -5\r\n\r\n",
                b"POST /v1/segment HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                b"Content-Length: 99999999999999999999999\r\n\r\n", b"A" * 70000 + b"\r\n\r\n"):
    try:
        s = T.raw_connect(p, 5)
        s.sendall(garbage)
        s.recv(1024)
        s.close()
    except OSError:
        pass
T.check(d.alive(), "protocol garbage (NUL bytes, HTTP/9.9, negative/huge Content-Length, 70 KB line): alive")

r = T.post_png(p, good)
T.check(r.status == 200 and T.same_masks(r.json(), ref) == "", "a good request afterwards: 200, right masks")
grow = (d.rss_kb() - rss0) // 1024
T.note(f"bad inputs: {len(png_cases) + 3} hostile PNGs, 5 content types, 7 multipart, 4 size, "
       f"4 query, 4 method/route, 5 protocol garbage; RSS +{grow} MB; 0 crashes")
T.check(d.stop() == 0, "SIGTERM: exit 0")
T.finish()
