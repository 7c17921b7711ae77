/* libFuzzer harness: the weights loader on arbitrary files.
 *   1. segd_weights_open_mem(): on success every tensor is read in full
 *      (ASan sees a data range outside the file) and metadata lookups work.
 *   2. segd_model_load() on the same bytes written to a memfd (opened by
 *      path through /proc/self/fd, so the mmap path of the loader runs):
 *      on success a worker is created and /v1/model's document built; on
 *      failure err must say why.  Only documented negative errnos. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "segd/engine.h"
#include "io/weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int g_fd = -1;
static char g_path[64];

static void check_weights(const uint8_t *data, size_t size)
{
    segd_weights *w = NULL;
    char err[256] = "";
    int rc = segd_weights_open_mem(data, size, &w, err, sizeof err);
    if (rc) {
        if (w || !err[0] || rc >= 0) {
            fprintf(stderr, "open_mem failed (%d) without a message or left *out set\n", rc);
            abort();
        }
        return;
    }
    size_t n = segd_weights_count(w);
    for (size_t i = 0; i < n; i++) {
        const segd_tensor *t = segd_weights_tensor(w, i);
        if (!t || !t->name || t->ndim < 0 || t->ndim > SEGD_TENSOR_MAX_DIMS) {
            fprintf(stderr, "tensor %zu malformed\n", i);
            abort();
        }
        if (segd_weights_find(w, t->name) != t) {
            fprintf(stderr, "tensor '%s' not found by name\n", t->name);
            abort();
        }
        if (t->nelem <= (1u << 22)) {
            float *buf = malloc(t->nelem ? t->nelem * sizeof(float) : 1);
            if (!buf)
                abort();
            segd_tensor_read(t, buf);
            free(buf);
        }
    }
    (void)segd_weights_meta(w, "format");
    if (!segd_weights_metadata(w) || strlen(segd_weights_sha256(w)) != 64) {
        fprintf(stderr, "metadata or sha256 missing\n");
        abort();
    }
    segd_weights_close(w);
}

static void check_model(const uint8_t *data, size_t size)
{
    if (g_fd < 0) {
        g_fd = memfd_create("segd-fuzz-weights", MFD_CLOEXEC);
        if (g_fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    }
    if (ftruncate(g_fd, 0) || pwrite(g_fd, data, size, 0) != (ssize_t)size) {
        perror("memfd write");
        abort();
    }
    segd_model *m = NULL;
    char err[256] = "";
    int rc = segd_model_load(g_path, &m, err, sizeof err);
    if (rc) {
        if (m || !err[0] || rc >= 0) {
            fprintf(stderr, "model_load failed (%d) without a message or left *out set\n", rc);
            abort();
        }
        return;
    }
    segd_worker *wk = NULL;
    if (segd_worker_create(m, 64 * 64, &wk) == 0) {
        /* a 1x1 grey image through the whole network */
        float px = 1.0f;
        segd_result r;
        int src = segd_worker_segment_gray(wk, &px, 1, 1, -1.0f, &r, err, sizeof err);
        /* Finite weights may still overflow float in the forward pass; the
         * engine must then say so (-ERANGE, a message), never answer a mask
         * made of NaN.  Any other failure is a bug. */
        if (src && !(src == -ERANGE && err[0])) {
            fprintf(stderr, "loaded model cannot segment a pixel (%d): %s\n", src, err);
            abort();
        }
        segd_worker_free(wk);
    }
    json_t *info = segd_model_info_json(m);
    json_decref(info);
    segd_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_weights(data, size);
    check_model(data, size);
    return 0;
}
