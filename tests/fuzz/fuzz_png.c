/* libFuzzer harness: PNG decoding (segd_png_decode_gray) on arbitrary
 * bytes.  Invariants checked beyond "no sanitizer report": a success
 * returns a size within the limit and finite intensities in the range of
 * the sample depth; a failure returns one of the documented errnos with a
 * non-empty message.  Even-length inputs get their chunk CRCs fixed
 * (pngfix.h). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/png.h"
#include "pngfix.h"

#define MAX_PIXELS (512u * 512u)

static float *g_out;
static void *g_scratch;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_out) {
        g_out = malloc(MAX_PIXELS * sizeof(float));
        g_scratch = malloc(segd_png_scratch_bytes(MAX_PIXELS));
        if (!g_out || !g_scratch)
            abort();
    }
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    if (size % 2 == 0)
        png_fix_crcs(copy, size);
    int h = -1, w = -1;
    char err[256] = "";
    int rc = segd_png_decode_gray(copy, size, MAX_PIXELS, g_out, g_scratch,
                                  segd_png_scratch_bytes(MAX_PIXELS), &h, &w, err, sizeof err);
    if (rc == 0) {
        if (h <= 0 || w <= 0 || (size_t)h * (size_t)w > MAX_PIXELS) {
            fprintf(stderr, "decode ok with bad size %dx%d\n", w, h);
            abort();
        }
        for (size_t i = 0; i < (size_t)h * (size_t)w; i++)
            if (!isfinite(g_out[i]) || g_out[i] < 0.0f || g_out[i] > 65535.0f) {
                fprintf(stderr, "pixel %zu = %g out of range\n", i, g_out[i]);
                abort();
            }
    } else {
        if (rc != -EINVAL && rc != -E2BIG && rc != -EDOM && rc != -ENOMEM) {
            fprintf(stderr, "undocumented error %d: %s\n", rc, err);
            abort();
        }
        if (!err[0] || memchr(err, '\0', sizeof err) == NULL) {
            fprintf(stderr, "error %d without a message\n", rc);
            abort();
        }
    }
    free(copy);
    return 0;
}
