"""The Python side's one daemon harness (standard library only), used by
tests/hardening, train/tests, the viewer checks (tests/viewer), bench/load,
bench/soak and the fuzz corpus: start a real `segd serve` on loopback and
read its port, plain HTTP requests, /metrics, RSS, reference documents from
`segd infer`, PNG crafting (valid, broken, bombs) and multipart bodies.

Every test script imports this module, runs its checks with check(), and
ends with finish(), which prints "N passed, N failed" for the script and
exits non-zero on a failure.  Environment:
  SEGD_BIN      the segd binary (default build/segd)
  SEGD_WEIGHTS  weights for the tests (default tests/data/golden-w4.safetensors)
"""
import atexit
import ctypes
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
SEGD_BIN = os.environ.get("SEGD_BIN") or os.path.join(ROOT, "build", "segd")
if not os.path.isabs(SEGD_BIN):
    SEGD_BIN = os.path.join(ROOT, SEGD_BIN)
WEIGHTS = os.environ.get("SEGD_WEIGHTS") or os.path.join(DATA, "golden-w4.safetensors")
SLICES = [os.path.join(DATA, f) for f in (
    "case101_day20_slice_0090_266_266_1.50_1.50.png",
    "case110_day16_slice_0070_360_310_1.50_1.50.png",
    "synthetic-37x53-grey8.png", "synthetic-37x53-grey16.png",
    "synthetic-37x53-rgb.png", "synthetic-37x53-rgba.png",
    "synthetic-37x53-palette.png")]

# ---------------------------------------------------------------- results

_passed = 0
_failed = 0


def check(cond, name, detail=""):
    """Count one check; print it.  Returns cond."""
    global _passed, _failed
    if cond:
        _passed += 1
        print(f"  ok   {name}", flush=True)
    else:
        _failed += 1
        print(f"  FAIL {name}{': ' + str(detail) if detail != '' else ''}", flush=True)
    return bool(cond)


def finish():
    print(f"{_passed} passed, {_failed} failed", flush=True)
    sys.exit(1 if _failed else 0)


def skip(why):
    """The script cannot run here: exit 77 (run.sh and run-all.sh count it
    as skipped, never as passed)."""
    print(f"SKIP: {why}", flush=True)
    print(f"{_passed} passed, {_failed} failed, 1 skipped", flush=True)
    sys.exit(77)


def note(msg):
    """A measured figure (collected by run.sh into the report)."""
    print(f"  figure {msg}", flush=True)


# ---------------------------------------------------------------- daemon

_children = []


def _die_with_parent():
    """In the child: SIGKILL when the test script dies (a timeout kill)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@atexit.register
def _kill_children():
    for d in _children:
        d.kill()


class Daemon:
    """`segd serve --bind 127.0.0.1 --port 0 ...` as a child; the port
    comes from the stderr line 'listening on http://127.0.0.1:PORT'.
    stderr is drained by a thread into self.lines.  binary: the segd to
    run (default SEGD_BIN); weights: a file (default WEIGHTS), or False for
    segd's own default-weights lookup (no --weights).  RuntimeError, with
    the log, when it does not start."""

    def __init__(self, *args, weights=None, wrapper=None, access_log=False, start_timeout=30.0,
                 binary=None):
        cmd = list(wrapper or []) + [binary or SEGD_BIN, "serve", "--bind", "127.0.0.1",
                                     "--port", "0"]
        if weights is not False:
            cmd += ["--weights", weights or WEIGHTS]
        cmd += ["--access-log", "on" if access_log else "off"]
        cmd += [str(a) for a in args]
        self.cmd = cmd
        self.lines = []
        self.port = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, cwd=ROOT, preexec_fn=_die_with_parent)
        _children.append(self)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        t0 = time.monotonic()
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() - t0 > start_timeout:
                self.kill()
                raise RuntimeError("segd did not start: " + " ".join(cmd) + "\n" + self.log())
        # the server process (not a wrapper like valgrind) owns the port
        self.pid = self.proc.pid

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(self.lines) < 200000:
                self.lines.append(line)
            m = re.search(r"listening on https?://127\.0\.0\.1:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self._ready.set()

    def log(self):
        return "\n".join(self.lines[-40:])

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return -1

    def signal(self, sig=signal.SIGTERM):
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout=60.0):
        """SIGTERM, wait; the exit status (or None when it had to be killed)."""
        self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._reader.join(5)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


# ---------------------------------------------------------------- HTTP

class Resp:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body
        self.elapsed = elapsed

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error_code(self):
        doc = self.json()
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            return doc["error"].get("code")
        return None

    def __repr__(self):
        return f"<{self.status} {self.body[:160]!r}>"


def request(port, method, path, body=None, headers=None, timeout=60.0):
    """One request on a fresh connection.  Resp, or an exception."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data,
                    time.monotonic() - t0)
    finally:
        c.close()


def post_png(port, png, path="/v1/segment", ctype="image/png", timeout=60.0, headers=None):
    h = {"Content-Type": ctype} if ctype is not None else {}
    h.update(headers or {})
    return request(port, "POST", path, png, h, timeout)


def metrics(port):
    """/metrics as {'name{labels}': value}."""
    r = request(port, "GET", "/metrics", timeout=10)
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def metric(port, name, default=None):
    return metrics(port).get(name, default)


def wait_for(pred, timeout, step=0.05):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def workers_idle(port):
    m = metrics(port)
    return m.get("segd_workers_busy", -1) == 0 and m.get("segd_queue_depth", -1) == 0


def raw_connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def multipart(parts, boundary="segdHardeningBoundary"):
    """parts: [(name, filename or None, content_type or None, bytes)] ->
    (content_type, body)."""
    out = bytearray()
    for name, filename, ctype, data in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += disp.encode() + b"\r\n"
        if ctype:
            out += b"Content-Type: " + ctype.encode() + b"\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return f"multipart/form-data; boundary={boundary}", bytes(out)


# ---------------------------------------------------------------- reference

_infer_cache = {}


def infer(path, weights=None):
    """`segd infer` document of one slice (cached)."""
    key = (path, weights or WEIGHTS)
    if key not in _infer_cache:
        out = subprocess.run([SEGD_BIN, "infer", "--weights", weights or WEIGHTS, path],
                             capture_output=True, check=True, cwd=ROOT).stdout
        _infer_cache[key] = json.loads(out.decode().splitlines()[0])
    return _infer_cache[key]


def same_masks(doc, ref):
    """'' when doc has ref's size, masks and pixel counts, else why not."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    for k in ("width", "height", "masks", "pixels"):
        if doc.get(k) != ref.get(k):
            return f"{k} differs"
    return ""


def rle_decode(rle, npix):
    """A Kaggle UW-Madison RLE ("start length" pairs, 1-based, row-major) as
    a flat numpy bool array of npix pixels (reshape to (height, width)).
    ValueError on an odd count, a run outside the image or a zero start,
    so that a malformed answer fails the test instead of decoding to
    something plausible."""
    import numpy as np
    m = np.zeros(npix, dtype=bool)
    v = [int(t) for t in rle.split()]
    if len(v) % 2:
        raise ValueError("odd number of RLE values")
    for s, n in zip(v[0::2], v[1::2]):
        if s < 1 or n < 0 or s - 1 + n > npix:
            raise ValueError(f"RLE run {s} {n} outside {npix} pixels")
        m[s - 1:s - 1 + n] = True
    return m


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------- PNGs

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def chunk(ctype, data, crc=None):
    c = zlib.crc32(ctype + data) & 0xffffffff if crc is None else crc
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", c)


def ihdr(w, h, bit_depth=8, color_type=0, interlace=0):
    return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, interlace))


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]  # (x0, y0, dx, dy) of the seven passes


def png(w, h, bit_depth=8, color_type=0, raw=None, interlace=0, extra=(), idat=None):
    """A PNG of the given layout.  raw: filtered scanlines (default: all
    zero); idat: the IDAT payload itself (overrides raw); extra: chunks
    (bytes) inserted before IDAT."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    if idat is None:
        if raw is None:
            raw = b""
            passes = ADAM7 if interlace else [(0, 0, 1, 1)]
            for x0, y0, dx, dy in passes:
                pw = (w - x0 + dx - 1) // dx if w > x0 else 0
                ph = (h - y0 + dy - 1) // dy if h > y0 else 0
                if pw == 0 or ph == 0:
                    continue
                rowbytes = (pw * channels * bit_depth + 7) // 8
                raw += b"".join(b"\x00" + bytes((x * 7 + y * 13) & 0xff for x in range(rowbytes))
                                for y in range(ph))
        idat = zlib.compress(raw, 9)
    out = PNG_SIG + ihdr(w, h, bit_depth, color_type, interlace)
    for e in extra:
        out += e
    if color_type == 3 and not any(e[4:8] == b"PLTE" for e in extra):
        out += chunk(b"PLTE", bytes(i % 256 for i in range(768)))
    return out + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def deflate_zeros(n, level=9):
    """zlib stream of n zero bytes (adler32 included), built fast: after a
    Z_FULL_FLUSH the compressor state is reset, so every further 1 MiB
    block of zeros compresses to the same bytes, which are repeated."""
    blk = 1 << 20
    co = zlib.compressobj(level)
    if n < 3 * blk:
        return co.compress(bytes(n)) + co.flush()
    first = co.compress(bytes(blk)) + co.flush(zlib.Z_FULL_FLUSH)
    mid = co.compress(bytes(blk)) + co.flush(zlib.Z_FULL_FLUSH)
    nblk, rest = divmod(n, blk)
    tail = co.compress(bytes(rest)) + co.flush()
    adler = ((n % 65521) << 16) | 1  # adler32 of n zero bytes
    return first + mid * (nblk - 1) + tail[:-4] + struct.pack(">I", adler)
