/* PNG -> float grey, row by row into caller storage; libpng errors come back
 * through longjmp into one place that frees libpng's structures. */
#include <errno.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <png.h>

#include "segd/png.h"

#define PNG_CHUNK_MALLOC_MAX (8u << 20) /* ancillary chunks (iCCP, zTXt, ...) */

size_t segd_png_scratch_bytes(size_t max_pixels)
{
    return max_pixels * 8; /* 16-bit RGBA is the widest row libpng hands us */
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
    if (strstr(msg, "Out of memory") || strstr(msg, "out of memory"))
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
