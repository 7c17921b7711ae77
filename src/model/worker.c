/* segd worker: one per inference thread; its activation arena is planned
 * for the largest allowed input and its batch of slots and touched at
 * creation, and its team of threads (team.c) shares each forward pass. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "segd/engine.h"
#include "model/gemm.h"
#include "io/png.h"
#include "io/rle.h"
#include "model/unet3p.h"
#include "model/model.h"
#include "model/team.h"

#define ALIGN_UP(x) (((x) + 63) & ~(size_t)63)

int segd_worker_create(const segd_model *m, size_t max_pixels, segd_worker **out)
{
    return segd_worker_create_batch(m, max_pixels, 1, 1, out);
}

int segd_worker_create_threads(const segd_model *m, size_t max_pixels, int threads,
                               segd_worker **out)
{
    return segd_worker_create_batch(m, max_pixels, threads, 1, out);
}

/* Byte offsets of the worker's buffers in its arena, each 64-byte aligned. */
typedef struct arena_plan {
    size_t img, prob, mask, grid, logits, net, total;
} arena_plan;

static arena_plan plan_arena(const segd_model *m, size_t max_pixels, size_t prob_bytes,
                             int threads, int batch)
{
    size_t grid = (size_t)m->grid_h * m->grid_w;
    arena_plan p;
    p.img = 0;
    p.prob = ALIGN_UP(p.img + max_pixels * sizeof(float));
    p.mask = ALIGN_UP(p.prob + prob_bytes);
    p.grid = ALIGN_UP(p.mask + (size_t)m->nclass * max_pixels);
    size_t inputs = (size_t)m->tta_n * batch; /* one model input per slot and power */
    p.logits = ALIGN_UP(p.grid + inputs * grid * sizeof(float));
    p.net = ALIGN_UP(p.logits + inputs * m->nclass * grid * sizeof(float));
    p.total = ALIGN_UP(p.net + segd_unet3p_arena_floats(&m->net, m->grid_h, m->grid_w, threads,
                                                        batch) *
                                   sizeof(float));
    return p;
}

int segd_worker_create_batch(const segd_model *m, size_t max_pixels, int threads, int batch,
                             segd_worker **out)
{
    *out = NULL;
    if (max_pixels == 0 || max_pixels > ((size_t)1 << 28) || threads < 1 || threads > 256 ||
        batch < 1 || batch > SEGD_MAX_BATCH)
        return -EINVAL;
    int rc = -ENOMEM;
    segd_worker *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->m = m;
    w->threads = threads;
    w->batch = batch;
    if (!(w->slots = calloc((size_t)batch, sizeof *w->slots)))
        goto fail;
    /* Each team thread makes its own BLAS calls on its bands: OpenBLAS must
     * not fan them out again (process-wide in OpenBLAS 0.3.21). */
    if (m->net.gemm == SEGD_GEMM_OPENBLAS)
        segd_gemm_blas_serial();
    if (threads > 1 && (rc = segd_team_create(threads, &w->team)))
        goto fail;
    rc = -ENOMEM;
    w->max_pixels = max_pixels;
    size_t prob = (size_t)m->nclass * max_pixels * sizeof(float);
    size_t png = segd_png_scratch_bytes(max_pixels);
    size_t ranks = 2 * max_pixels * sizeof(uint32_t); /* histogram_match's value order */
    w->prob_bytes = prob > png ? prob : png;
    if (m->norm == SEGD_NORM_HISTOGRAM && w->prob_bytes < ranks)
        w->prob_bytes = ranks;
    arena_plan p = plan_arena(m, max_pixels, w->prob_bytes, threads, batch);
    void *a = NULL;
    if (posix_memalign(&a, 64, p.total))
        goto fail;
    memset(a, 0, p.total); /* touch every page now, not during the first request */
    w->arena = a;
    w->arena_bytes = p.total;
    w->img = (float *)(w->arena + p.img);
    w->prob = (float *)(w->arena + p.prob);
    w->mask = w->arena + p.mask;
    w->grid = (float *)(w->arena + p.grid);
    w->logits = (float *)(w->arena + p.logits);
    w->net_arena = (float *)(w->arena + p.net);
    w->rle_cap = segd_rle_max_len(max_pixels);
    if (!(w->rle = malloc(w->rle_cap)))
        goto fail;
    *out = w;
    return 0;
fail:
    segd_worker_free(w);
    return rc;
}

void segd_worker_free(segd_worker *w)
{
    if (!w)
        return;
    segd_team_free(w->team);
    free(w->rle);
    free(w->slots);
    free(w->arena);
    free(w);
}

int segd_worker_threads(const segd_worker *w) { return w->threads; }
int segd_worker_batch(const segd_worker *w) { return w->batch; }

size_t segd_worker_arena_bytes(const segd_worker *w) { return w->arena_bytes; }
size_t segd_worker_max_pixels(const segd_worker *w) { return w->max_pixels; }

const segd_model *segd_worker_model(const segd_worker *w) { return w->m; }
