/* libFuzzer harness: DICOM reading (segd_dicom_read) on arbitrary bytes,
 * and for a small image that reads with complete geometry, the series check
 * and both writers on a mask made from it.  Invariants checked beyond "no
 * sanitizer report": a success returns a size within the limit, finite
 * pixels and NUL-terminated identity strings; a failure returns one of the
 * documented errnos with a non-empty message; the writers return 0 with a
 * Part-10 buffer or a documented errno.  DCMTK itself is not instrumented
 * (the Debian libraries), so coverage counts src/dicom only. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segd/dicom.h"

#define MAX_PIXELS (256u * 256u)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int documented(int rc)
{
    return rc == -EINVAL || rc == -EDOM || rc == -ENOTSUP || rc == -E2BIG || rc == -ENOMEM || rc == -EIO ||
           rc == -EXDEV;
}

static void check_writers(const segd_dicom_image *im)
{
    size_t n = (size_t)im->rows * (size_t)im->cols;
    uint8_t *mask = malloc(n * SEGD_DICOM_NUM_ORGANS);
    if (!mask)
        abort();
    for (size_t i = 0; i < n; i++) {
        mask[i] = im->pixels[i] > 0.0f;
        mask[n + i] = (i % 3) == 0;
        mask[2 * n + i] = 0;
    }
    const segd_dicom_image *slices[1] = {im};
    const uint8_t *masks[1] = {mask};
    segd_dicom_algorithm alg = {"fuzz", "0123", "fuzz", NULL, 1};
    char err[256] = "";
    size_t order[1];
    int rc = segd_dicom_series_order(slices, 1, order, err, sizeof err);
    if (rc != 0 && (!documented(rc) || !err[0])) {
        fprintf(stderr, "series_order: undocumented %d \"%s\"\n", rc, err);
        abort();
    }
    if (rc == 0) {
        void *out = NULL;
        size_t len = 0;
        rc = segd_dicom_write_rtstruct(slices, 1, masks, &alg, &out, &len, err, sizeof err);
        if (rc == 0 && (!out || len < 132 || memcmp((char *)out + 128, "DICM", 4))) {
            fprintf(stderr, "write_rtstruct: bad buffer\n");
            abort();
        }
        if (rc != 0 && (!documented(rc) || !err[0] || out)) {
            fprintf(stderr, "write_rtstruct: undocumented %d \"%s\"\n", rc, err);
            abort();
        }
        segd_dicom_buffer_free(out);
        out = NULL;
        rc = segd_dicom_write_seg(slices, 1, masks, &alg, &out, &len, err, sizeof err);
        if (rc != 0 && (!documented(rc) || !err[0] || out)) {
            fprintf(stderr, "write_seg: undocumented %d \"%s\"\n", rc, err);
            abort();
        }
        segd_dicom_buffer_free(out);
    }
    free(mask);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    segd_dicom_image *im = NULL;
    char err[256] = "";
    int rc = segd_dicom_read(data, size, MAX_PIXELS, &im, err, sizeof err);
    if (rc != 0) {
        if (im || !documented(rc) || rc == -EXDEV || !err[0]) {
            fprintf(stderr, "read: undocumented %d \"%s\"\n", rc, err);
            abort();
        }
        return 0;
    }
    if (!im || im->rows <= 0 || im->cols <= 0 ||
        (size_t)im->rows * (size_t)im->cols > MAX_PIXELS) {
        fprintf(stderr, "read ok with bad size\n");
        abort();
    }
    for (size_t i = 0; i < (size_t)im->rows * (size_t)im->cols; i++)
        if (!isfinite(im->pixels[i])) {
            fprintf(stderr, "pixel %zu not finite\n", i);
            abort();
        }
    if (!memchr(im->sop_instance_uid, 0, sizeof im->sop_instance_uid) ||
        !memchr(im->patient_name, 0, sizeof im->patient_name) || !im->sop_instance_uid[0]) {
        fprintf(stderr, "identity strings not terminated or empty\n");
        abort();
    }
    if (!im->geometry_missing && (size_t)im->rows * (size_t)im->cols <= 64u * 64u)
        check_writers(im);
    segd_dicom_image_free(im);
    return 0;
}
