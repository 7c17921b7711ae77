#!/usr/bin/python3
"""Write the seed corpora of tests/fuzz/corpus/<target>/ (standard library
only; run from anywhere with /usr/bin/python3).  Seeds are small on purpose
(the whole corpus stays under 2 MB): real slices and the synthetic images of
tests/data, hand-made PNG layouts and malformations, multipart bodies,
RLE strings from the Kaggle sample, option lists, and safetensors files (a
width-1 UNet3+ exported by tests/engine/make_golden.py plus hand-made
headers).  Crash inputs found later are added next to them by hand as
crash-<target>-<what> and are never overwritten here.
"""
import csv
import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "hardening"))
import segdtest as T  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")
DATA = os.path.join(ROOT, "tests", "data")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def crafted_pngs():
    """name -> bytes: every colour type / depth libpng accepts, interlace,
    and malformed variants."""
    out = {}
    for ct, depths in ((0, (1, 2, 4, 8, 16)), (2, (8, 16)), (3, (1, 2, 4, 8)),
                       (4, (8, 16)), (6, (8, 16))):
        for bd in depths:
            out[f"ct{ct}-bd{bd}-7x5.png"] = T.png(7, 5, bd, ct)
    out["ct0-bd8-interlaced-9x11.png"] = T.png(9, 11, 8, 0, interlace=1)
    out["ct2-bd8-interlaced-3x2.png"] = T.png(3, 2, 8, 2, interlace=1)
    out["ct3-trns-4x4.png"] = T.png(4, 4, 8, 3, extra=(
        T.chunk(b"PLTE", bytes(range(48))), T.chunk(b"tRNS", b"\x00\x80\xff")))
    out["gray-1x1.png"] = T.png(1, 1)
    out["gray-1x300.png"] = T.png(1, 300)
    out["gray-300x1.png"] = T.png(300, 1)
    out["zero-size.png"] = T.png(0, 0, idat=zlib.compress(b""))
    out["huge-ihdr.png"] = T.png(100000, 100000, idat=zlib.compress(b"\x00" * 64))
    good = T.png(16, 16)
    out["truncated.png"] = good[: len(good) // 2]
    out["bad-crc.png"] = good[:29] + b"\x00\x00\x00\x00" + good[33:]
    out["no-idat.png"] = T.PNG_SIG + T.ihdr(8, 8) + T.chunk(b"IEND", b"")
    out["idat-too-short.png"] = T.png(32, 32, idat=zlib.compress(b"\x00" * 40))
    out["idat-extra-data.png"] = T.png(4, 4, idat=zlib.compress(b"\x00" * 4096))
    out["bad-filter.png"] = T.png(4, 2, raw=b"\x07abcd\x09efgh")
    out["ztxt.png"] = T.png(4, 4, extra=(T.chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"v" * 5000)),))
    out["itxt-iccp.png"] = T.png(4, 4, extra=(
        T.chunk(b"iCCP", b"p\x00\x00" + zlib.compress(b"\x00" * 300)),
        T.chunk(b"iTXt", b"k\x00\x01\x00en\x00k\x00" + zlib.compress(b"text"))))
    return out


def png_corpus():
    for f in sorted(os.listdir(DATA)):
        if f.endswith(".png"):
            data = open(os.path.join(DATA, f), "rb").read()
            put("png", f, data)
            if f.startswith("synthetic") or f.startswith("case110"):
                put("segment", f, b"\x00" + data)
    for name, data in crafted_pngs().items():
        put("png", name, data)
        put("segment", name, b"\x00" + data)
    put("segment", "thr-0.2-grey8.png", b"\x33" + open(os.path.join(DATA, "synthetic-37x53-grey8.png"), "rb").read())


def multipart_corpus():
    png = T.png(5, 5)
    ct, body = T.multipart([("file", "a.png", "image/png", png), ("file", "dir/b c.png", None, png)])
    put("multipart", "two-files", ct.encode() + b"\n" + body)
    ct, body = T.multipart([("note", None, None, b"hello"), ("file", "x.png", "image/png", png)],
                           boundary="----WebKitFormBoundary7MA4YWxkTrZu0gW")
    put("multipart", "webkit", ct.encode() + b"\n" + body)
    put("multipart", "quoted-boundary",
        b'multipart/form-data; charset=utf-8; boundary="a b:c"\n'
        b"preamble\r\n--a b:c\r\nContent-Disposition: form-data; name=\"file\"; "
        b"filename=\"C:\\dir\\f.png\"\r\nContent-Type: image/png\r\n\r\nDATA\r\n"
        b"--a b:c  \r\nContent-Disposition: form-data; name=file\r\n\r\n\r\n--a b:c--\r\nepilogue")
    put("multipart", "escaped-quotes",
        b"multipart/form-data; boundary=XyZ\n--XyZ\r\nContent-Disposition: form-data; "
        b"name=\"fi\\\"le\"; filename=\"a\\\\b\"\r\n\r\nAAAA\r\n--XyZ-not\r\nstill\r\n--XyZ--\r\n")
    put("multipart", "no-close", b"multipart/form-data; boundary=XyZ\n--XyZ\r\n"
        b"Content-Disposition: form-data; name=\"file\"\r\n\r\nAAAA")
    put("multipart", "many-parts", b"multipart/form-data; boundary=b\n" +
        b"".join(b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n" for _ in range(6))
        + b"--b--\r\n")
    put("multipart", "bad-ctype", b"multipart/mixed; boundary=abc\n--abc\r\n\r\n")


def rle_corpus():
    rows = list(csv.DictReader(open(os.path.join(DATA, "rle-train-sample.csv"))))
    for i, row in enumerate(rows[:4]):
        put("rle", f"kaggle-{i}", row["segmentation"][:600].rsplit(" ", 2)[0].encode())
    put("rle", "empty", b"")
    put("rle", "one-run", b"1 1")
    put("rle", "whitespace", b" 3 2\t\n7 1\r\n")
    put("rle", "mask-bytes", bytes([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 255, 254]))
    put("rle", "big-numbers", b"18446744073709551615 1 2 99999999999999999999")
    put("rle", "overlap", b"5 5 7 2")


def http_corpus():
    put("http", "serve-flags", b"\0".join([b"--workers", b"2", b"--queue-depth=8", b"--max-body", b"1M",
                                          b"--port", b"0", b"--bind", b"::1", b"--access-log", b"off"]))
    put("http", "env", b"\0".join([b"SEGD_WORKERS=3", b"SEGD_MAX_PIXELS=4096", b"SEGD_CORS_ORIGIN=*",
                                  b"SEGD_REQUEST_TIMEOUT=0.5"]))
    put("http", "strings", b"\0".join([b"image/png; q=1", b"multipart/form-data; boundary=x",
                                      b"0.35", b"1e-3", b"../../etc/passwd.png", b"C:\\a\\b.c.png",
                                      b"req-\x7f\x80id"]))
    put("http", "png-head", T.png(3, 3)[:40])


def weights_corpus():
    # corpus/weights/w1-grid32.safetensors (a valid model, kept in git) is
    # not written here: it comes from
    #   /usr/bin/python3 tests/engine/make_golden.py --out /tmp/w1 --width 1 --seed 7 \
    #       --grid 32 32 tests/data/synthetic-37x53-grey8.png tests/data/synthetic-37x53-rgb.png
    #   cp /tmp/w1.safetensors tests/fuzz/corpus/weights/w1-grid32.safetensors
    def st(header, data=b""):
        h = json.dumps(header).encode()
        return struct.pack("<Q", len(h)) + h + data

    meta = {"format": "segd-unet3p-v1", "width": "1", "classes": '["a"]',
            "preprocess": '{"input_size": [8, 8]}'}
    put("weights", "two-tensors", st({"__metadata__": meta,
                                      "a": {"dtype": "F32", "shape": [2, 1], "data_offsets": [0, 8]},
                                      "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}},
                                     bytes(12)))
    put("weights", "overlap", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                  "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)))
    put("weights", "f16", st({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)))
    put("weights", "empty-header", st({}))
    put("weights", "len-too-big", struct.pack("<Q", 1 << 40) + b"{}")
    put("weights", "bad-json", struct.pack("<Q", 5) + b"{\"a\":")


def main():
    os.makedirs(CORPUS, exist_ok=True)
    for t in ("png", "segment", "multipart", "rle", "http", "weights"):
        os.makedirs(os.path.join(CORPUS, t), exist_ok=True)
    png_corpus()
    multipart_corpus()
    rle_corpus()
    http_corpus()
    weights_corpus()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(CORPUS) for f in fs)
    print(f"corpus: {total} bytes in {CORPUS}")


if __name__ == "__main__":
    main()
