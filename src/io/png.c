/* PNG -> float grey, row by row into caller storage, and 16-bit grey -> PNG
 * into a growing memory buffer; libpng errors come back through longjmp into
 * one place that frees libpng's structures. */
#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <zlib.h>

#include "io/png.h"

#define PNG_CHUNK_MALLOC_MAX (8u << 20) /* ancillary chunks (iCCP, zTXt, ...) */

size_t segd_png_scratch_bytes(size_t max_pixels)
{
    return max_pixels * 8; /* 16-bit RGBA is the widest row libpng hands us */
}

/* ---- decompression bomb guard ----
 * libpng inflates the whole IDAT stream, also what follows the last row
 * (png_read_finish_IDAT() swallows the rest of the stream to find its end):
 * 1 MB of deflated zeros after a 16x16 image costs 1 GB of inflating, 4 s
 * of a worker, and a --max-body upload minutes.  So the IDAT stream is
 * inflated once up front, into nothing, and refused when it produces more
 * than the image needs plus a little slack (PIL ignores trailing image
 * data, so a few stray bytes stay acceptable). */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Bytes the IDAT stream of a w x h image inflates to (one filter byte per
 * row), the seven Adam7 passes summed when interlaced. */
static uint64_t idat_raw_bytes(uint64_t w, uint64_t h, unsigned bits_per_pixel, int interlaced)
{
    if (!interlaced)
        return h * (1 + (w * bits_per_pixel + 7) / 8);
    static const unsigned x0[7] = {0, 4, 0, 2, 0, 1, 0}, dx[7] = {8, 8, 4, 4, 2, 2, 1};
    static const unsigned y0[7] = {0, 0, 4, 0, 2, 0, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
    uint64_t n = 0;
    for (int p = 0; p < 7; p++) {
        uint64_t pw = w > x0[p] ? (w - x0[p] + dx[p] - 1) / dx[p] : 0;
        uint64_t ph = h > y0[p] ? (h - y0[p] + dy[p] - 1) / dy[p] : 0;
        if (pw && ph)
            n += ph * (1 + (pw * bits_per_pixel + 7) / 8);
    }
    return n;
}

/* Inflate the IDAT chunks of data, discarding the output.  -EINVAL when
 * they produce more than limit bytes, -ENOMEM when zlib cannot start, else
 * 0 (a corrupt or truncated stream too: libpng reports those). */
static int idat_within(const unsigned char *data, size_t len, uint64_t limit)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK)
        return -ENOMEM;
    unsigned char sink[16384];
    uint64_t out = 0;
    int rc = 0, done = 0;
    for (size_t pos = 8; !done && len - pos >= 12;) {
        uint32_t n = be32(data + pos);
        if (n > len - pos - 12)
            break;
        if (memcmp(data + pos + 4, "IDAT", 4) == 0) {
            z.next_in = (Bytef *)(data + pos + 8);
            z.avail_in = n;
            while (!done && z.avail_in > 0) {
                z.next_out = sink;
                z.avail_out = sizeof sink;
                int zr = inflate(&z, Z_NO_FLUSH);
                out += sizeof sink - z.avail_out;
                if (out > limit)
                    rc = -EINVAL;
                if (out > limit || zr != Z_OK)
                    done = 1; /* over, stream end, or corrupt */
            }
        } else if (memcmp(data + pos + 4, "IEND", 4) == 0) {
            break;
        }
        pos += 12 + (size_t)n;
    }
    inflateEnd(&z);
    return rc;
}

typedef struct png_src {
    const unsigned char *data;
    size_t len, pos;
    char msg[160];   /* libpng's error message */
    int over_limit;  /* the error was a user-limit violation */
    int oom;
} png_src;

static void read_fn(png_structp png, png_bytep buf, png_size_t n)
{
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos)
        png_error(png, "truncated PNG data");
    memcpy(buf, s->data + s->pos, n);
    s->pos += n;
}

static void error_fn(png_structp png, png_const_charp msg)
{
    png_src *s = png_get_error_ptr(png);
    if (!s->over_limit)
        snprintf(s->msg, sizeof s->msg, "%s", msg);
    if (strstr(msg, "user limit"))
        s->over_limit = 1;
    /* libpng's own ("Out of memory") and zlib's, relayed by libpng
     * ("insufficient memory"): a 503, not a malformed file */
    if (strstr(msg, "of memory") || strstr(msg, "of Memory") || strstr(msg, "insufficient memory"))
        s->oom = 1;
    png_longjmp(png, 1);
}

static void warning_fn(png_structp png, png_const_charp msg)
{
    /* Warnings (bad CRC in ancillary chunks, ...) are not fatal, but libpng
     * reports a user-limit violation as a warning before "Invalid IHDR". */
    png_src *s = png_get_error_ptr(png);
    if (strstr(msg, "user limit")) {
        s->over_limit = 1;
        snprintf(s->msg, sizeof s->msg, "%s", msg);
    }
}

/* Over 80 lines on purpose: libpng reports errors by longjmp() back to the
 * setjmp() in here, so everything alive across the decode (the structs,
 * rc) has to sit in this one frame; helpers would each need their own
 * setjmp. */
int segd_png_decode_gray(const void *data, size_t len, size_t max_pixels,
                         float *out, void *scratch, size_t scratch_cap,
                         int *height, int *width, char *err, size_t errlen)
{
    png_src src = {.data = data, .len = len};
    png_structp png = NULL;
    png_infop info = NULL;
    volatile int rc = 0;
    *height = *width = 0;

    if (len < 8 || png_sig_cmp((png_const_bytep)data, 0, 8)) {
        snprintf(err, errlen, "not a PNG file");
        return -EINVAL;
    }
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, error_fn, warning_fn);
    if (!png) {
        snprintf(err, errlen, "out of memory creating PNG decoder");
        return -ENOMEM;
    }
    info = png_create_info_struct(png);
    if (!info) {
        snprintf(err, errlen, "out of memory creating PNG decoder");
        rc = -ENOMEM;
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        if (src.over_limit) {
            snprintf(err, errlen, "image larger than %zu pixels (%s)", max_pixels, src.msg);
            rc = -E2BIG;
        } else if (src.oom) {
            snprintf(err, errlen, "PNG decoder out of memory");
            rc = -ENOMEM;
        } else {
            snprintf(err, errlen, "malformed PNG: %s", src.msg);
            rc = -EINVAL;
        }
        goto done;
    }
    png_uint_32 lim = max_pixels > 0x7fffffffu ? 0x7fffffffu : (png_uint_32)max_pixels;
    png_set_user_limits(png, lim, lim);
    png_set_chunk_malloc_max(png, PNG_CHUNK_MALLOC_MAX);
    png_set_read_fn(png, &src, read_fn);
    png_read_info(png, info);

    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int ct = png_get_color_type(png, info), bd = png_get_bit_depth(png, info);
    if (w == 0 || h == 0) {
        snprintf(err, errlen, "PNG has zero size");
        rc = -EDOM;
        goto done;
    }
    if ((size_t)w * h > max_pixels) {
        snprintf(err, errlen, "image %ux%u larger than %zu pixels", (unsigned)w, (unsigned)h,
                 max_pixels);
        rc = -E2BIG;
        goto done;
    }
    static const unsigned channels[7] = {1, 0, 3, 1, 2, 0, 4}; /* by colour type */
    uint64_t need = idat_raw_bytes(w, h, channels[ct & 7] * (unsigned)bd,
                                   png_get_interlace_type(png, info) != PNG_INTERLACE_NONE);
    rc = idat_within(data, len, need + need / 8 + 4096);
    if (rc) {
        if (rc == -EINVAL)
            snprintf(err, errlen, "PNG image data inflates beyond the %ux%u image (over %llu bytes)",
                     (unsigned)w, (unsigned)h, (unsigned long long)need);
        else
            snprintf(err, errlen, "out of memory starting zlib");
        goto done;
    }
    if (ct == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && bd < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if ((ct & PNG_COLOR_MASK_COLOR) && bd == 16)
        png_set_strip_16(png); /* PIL reads 16-bit colour as its high byte */
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int ch = png_get_channels(png, info);
    int obd = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (ch < 1 || ch > 4 || (obd != 8 && obd != 16) || rowbytes != (size_t)w * ch * (obd / 8)) {
        snprintf(err, errlen, "unsupported PNG layout (%d channels, %d bits)", ch, obd);
        rc = -EDOM;
        goto done;
    }
    if (rowbytes * h > scratch_cap) {
        snprintf(err, errlen, "image %ux%u too large for the decode buffer", (unsigned)w,
                 (unsigned)h);
        rc = -E2BIG;
        goto done;
    }
    unsigned char *rows = scratch;
    for (int p = 0; p < passes; p++)
        for (png_uint_32 y = 0; y < h; y++)
            png_read_row(png, rows + y * rowbytes, NULL);
    png_read_end(png, NULL);

    size_t n = (size_t)w * h;
    int color = ch >= 3;
    if (obd == 16) {
        for (size_t i = 0; i < n; i++) {
            const unsigned char *px = rows + i * ch * 2; /* big-endian samples */
            out[i] = (float)((unsigned)px[0] << 8 | px[1]);
        }
    } else if (color) {
        for (size_t i = 0; i < n; i++) {
            const unsigned char *px = rows + i * ch;
            float r = px[0], g = px[1], b = px[2];
            out[i] = (0.299f * r + 0.587f * g) + 0.114f * b;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            out[i] = rows[i * ch];
    }
    *height = (int)h;
    *width = (int)w;
done:
    png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    return rc;
}

/* ---- encoding: 16-bit grey into memory ---- */

typedef struct png_sink {
    unsigned char *data;
    size_t len, cap;
    char msg[160]; /* libpng's error message */
    int oom;
} png_sink;

static void write_fn(png_structp png, png_bytep buf, png_size_t n)
{
    png_sink *s = png_get_io_ptr(png);
    if (n > s->cap - s->len) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap - s->len < n) {
            if (cap > SIZE_MAX / 2) {
                s->oom = 1;
                png_error(png, "out of memory");
            }
            cap *= 2;
        }
        unsigned char *p = realloc(s->data, cap);
        if (!p) {
            s->oom = 1;
            png_error(png, "out of memory");
        }
        s->data = p;
        s->cap = cap;
    }
    memcpy(s->data + s->len, buf, n);
    s->len += n;
}

static void flush_fn(png_structp png)
{
    (void)png;
}

static void write_error_fn(png_structp png, png_const_charp msg)
{
    png_sink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    if (strstr(msg, "of memory") || strstr(msg, "of Memory") || strstr(msg, "insufficient memory"))
        s->oom = 1;
    png_longjmp(png, 1);
}

static void write_warning_fn(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

int segd_png_encode_gray16(const uint16_t *pixels, int height, int width, void **out,
                           size_t *outlen, char *err, size_t errlen)
{
    /* volatile: alive across the longjmp of a libpng error */
    png_sink sink = {0};
    png_sink *volatile sp = &sink;
    png_structp png = NULL;
    png_infop info = NULL;
    unsigned char *volatile row = NULL;
    volatile int rc = 0;
    *out = NULL;
    *outlen = 0;
    if (height < 1 || width < 1) {
        snprintf(err, errlen, "image of zero size");
        return -EINVAL;
    }
    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, write_error_fn, write_warning_fn);
    if (!png) {
        snprintf(err, errlen, "out of memory creating PNG encoder");
        return -ENOMEM;
    }
    info = png_create_info_struct(png);
    row = malloc((size_t)width * 2);
    if (!info || !row) {
        snprintf(err, errlen, "out of memory creating PNG encoder");
        rc = -ENOMEM;
        goto done;
    }
    if (setjmp(png_jmpbuf(png))) {
        snprintf(err, errlen, "encoding PNG: %s", sp->msg);
        rc = sp->oom ? -ENOMEM : -EIO;
        goto done;
    }
    png_set_write_fn(png, &sink, write_fn, flush_fn);
    png_set_compression_level(png, 1); /* speed: a preview, sent once */
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 16, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) {
        const uint16_t *src = pixels + (size_t)y * (size_t)width;
        for (int x = 0; x < width; x++) { /* PNG samples are big-endian */
            row[2 * x] = (unsigned char)(src[x] >> 8);
            row[2 * x + 1] = (unsigned char)(src[x] & 0xff);
        }
        png_write_row(png, row);
    }
    png_write_end(png, NULL);
done:
    png_destroy_write_struct(&png, info ? &info : NULL);
    free(row);
    if (rc) {
        free(sp->data);
        return rc;
    }
    *out = sink.data;
    *outlen = sink.len;
    return 0;
}
