/* UNet3+ graph: tensor table and BN folding, arena plan, forward wiring. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/kernels.h"
#include "model/unet3p.h"
#include "model/team.h"

/* ---------------------------------------------------------------- layers */

/* Visit every conv of the net with its tensor-name prefix. */
typedef int (*conv_visit)(segd_conv *c, const char *prefix, void *ctx);

static int for_each_conv(segd_unet3p *net, conv_visit fn, void *ctx)
{
    char name[64];
    int rc;
    for (int i = 0; i < SEGD_UNET3P_LEVELS; i++)
        for (int u = 0; u < 2; u++) {
            snprintf(name, sizeof name, "enc.%d.%d", i, u);
            if ((rc = fn(&net->enc[i][u], name, ctx)))
                return rc;
        }
    for (int d = 1; d <= 4; d++) {
        for (int j = 1; j <= 5; j++) {
            snprintf(name, sizeof name, "dec.%d.branch.%d", d - 1, j - 1);
            if ((rc = fn(&net->branch[d - 1][j - 1], name, ctx)))
                return rc;
        }
        snprintf(name, sizeof name, "dec.%d.fuse", d - 1);
        if ((rc = fn(&net->fuse[d - 1], name, ctx)))
            return rc;
    }
    if ((rc = fn(&net->head, "head", ctx)))
        return rc;
    return fn(&net->cls, "cls", ctx);
}

static void set_shapes(segd_unet3p *net)
{
    int w = net->width, up = 5 * w;
    int chs[5] = {w, 2 * w, 4 * w, 8 * w, 16 * w};
    int cin = net->in_ch;
    for (int i = 0; i < 5; i++) {
        net->enc[i][0] = (segd_conv){.cin = cin, .cout = chs[i], .k = 3, .bn = 1, .relu = 1};
        net->enc[i][1] = (segd_conv){.cin = chs[i], .cout = chs[i], .k = 3, .bn = 1, .relu = 1};
        cin = chs[i];
    }
    for (int d = 1; d <= 4; d++) {
        for (int j = 1; j <= 5; j++) {
            int src = (j <= d || j == 5) ? chs[j - 1] : up;
            net->branch[d - 1][j - 1] = (segd_conv){
                .cin = src, .cout = w, .k = 3, .bn = 1, .relu = 1, .resampled = j > d};
        }
        net->fuse[d - 1] = (segd_conv){.cin = up, .cout = up, .k = 3, .bn = 1, .relu = 1};
    }
    net->head = (segd_conv){.cin = up, .cout = net->nclass, .k = 3};
    net->cls = (segd_conv){.cin = chs[4], .cout = net->nclass, .k = 1};
}

/* 3x3 convs run as Winograd F(4x4,3x3), except the resampled decoder
 * branches (see run_resampled) and unpooled single-channel inputs (the
 * first conv, and enc.0.1 of a width-1 model), which run_conv sends to the
 * direct kernel. */
static int uses_wino(const segd_conv *c)
{
    return c->k == 3 && !c->resampled;
}

static size_t conv_floats(const segd_conv *c)
{
    size_t n = (size_t)c->cout * c->cin * c->k * c->k + (size_t)c->cout;
    if (uses_wino(c))
        n += segd_wino_weights_floats(c->cin, c->cout) + 16; /* +16: keep 64-byte alignment */
    if (c->resampled)
        n += segd_gemm_packed_floats(9 * c->cout, c->cin) + 16;
    return n;
}

static int count_floats(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    *(size_t *)ctx += conv_floats(c);
    return 0;
}

typedef struct load_ctx {
    const segd_weights *wt;
    float *next;     /* next free float of the block */
    float eps;
    unsigned char *seen; /* per file tensor: consumed by the architecture */
    char *err;
    size_t errlen;
} load_ctx;

/* Find name with the given shape (ndim dims); NULL with err set otherwise. */
static const segd_tensor *get(load_ctx *lc, const char *name, int ndim, const int64_t *shape)
{
    const segd_tensor *t = segd_weights_find(lc->wt, name);
    if (!t) {
        snprintf(lc->err, lc->errlen, "missing tensor '%s'", name);
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[96] = "", want[96] = "";
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "",
                     (long long)t->shape[i]);
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "",
                     (long long)shape[i]);
        snprintf(lc->err, lc->errlen, "tensor '%s': shape [%s], expected [%s]", name, got, want);
        return NULL;
    }
    lc->seen[t - segd_weights_tensor(lc->wt, 0)] = 1;
    return t;
}

static int load_conv(segd_conv *c, const char *prefix, void *ctx)
{
    load_ctx *lc = ctx;
    char name[96];
    int has_bn = c->bn;
    /* Encoder/decoder units are ConvBNReLU modules: tensors under .conv/.bn. */
    const char *cv = has_bn ? ".conv" : "";
    int64_t wshape[4] = {c->cout, c->cin, c->k, c->k}, bshape[1] = {c->cout};
    snprintf(name, sizeof name, "%s%s.weight", prefix, cv);
    const segd_tensor *tw = get(lc, name, 4, wshape);
    if (!tw)
        return -EINVAL;
    snprintf(name, sizeof name, "%s%s.bias", prefix, cv);
    const segd_tensor *tb = get(lc, name, 1, bshape);
    if (!tb)
        return -EINVAL;
    float *w = lc->next, *b = w + (size_t)c->cout * c->cin * c->k * c->k;
    lc->next = b + c->cout;
    segd_tensor_read(tw, w);
    segd_tensor_read(tb, b);
    if (has_bn) {
        static const char *parts[4] = {"weight", "bias", "running_mean", "running_var"};
        const segd_tensor *bn[4];
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof name, "%s.bn.%s", prefix, parts[i]);
            if (!(bn[i] = get(lc, name, 1, bshape)))
                return -EINVAL;
        }
        size_t per = (size_t)c->cin * c->k * c->k;
        for (int o = 0; o < c->cout; o++) {
            float g, beta, mean, var;
            segd_tensor_read(&(segd_tensor){.nelem = 1, .data = bn[0]->data + 4 * o}, &g);
            segd_tensor_read(&(segd_tensor){.nelem = 1, .data = bn[1]->data + 4 * o}, &beta);
            segd_tensor_read(&(segd_tensor){.nelem = 1, .data = bn[2]->data + 4 * o}, &mean);
            segd_tensor_read(&(segd_tensor){.nelem = 1, .data = bn[3]->data + 4 * o}, &var);
            if (!(var >= 0.0f) || !isfinite(g) || !isfinite(beta) || !isfinite(mean)) {
                snprintf(lc->err, lc->errlen, "tensor '%s.bn.*': invalid statistics at channel %d",
                         prefix, o);
                return -EINVAL;
            }
            /* Fold in double: W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta */
            double s = (double)g / sqrt((double)var + (double)lc->eps);
            for (size_t i = 0; i < per; i++)
                w[o * per + i] = (float)(w[o * per + i] * s);
            b[o] = (float)(((double)b[o] - mean) * s + beta);
        }
    }
    c->w = w;
    c->b = b;
    if (uses_wino(c)) {
        float *u = lc->next;
        while (((uintptr_t)u & 63) != 0)
            u++;
        segd_wino_weights(u, w, c->cin, c->cout);
        c->u = u;
        lc->next += segd_wino_weights_floats(c->cin, c->cout) + 16;
    }
    if (c->resampled) {
        /* A (cout*9, cin): row o*9 + tap = w[o][:][tap], packed in MR-row panels */
        float *ap = lc->next;
        while (((uintptr_t)ap & 63) != 0)
            ap++;
        int m = 9 * c->cout, mp = segd_wino_cout_pad(m), k = c->cin;
        for (int mb = 0; mb < mp / SEGD_WINO_MR; mb++)
            for (int kk = 0; kk < k; kk++)
                for (int i = 0; i < SEGD_WINO_MR; i++) {
                    int r = mb * SEGD_WINO_MR + i;
                    ap[((size_t)mb * k + kk) * SEGD_WINO_MR + i] =
                        r < m ? w[((size_t)(r / 9) * k + kk) * 9 + r % 9] : 0.0f;
                }
        c->wz = ap;
        lc->next += segd_gemm_packed_floats(m, k) + 16;
    }
    return 0;
}

int segd_unet3p_load(segd_unet3p *net, const segd_weights *wt, int width, int in_ch,
                     int nclass, float eps, int isa, char *err, size_t errlen)
{
    memset(net, 0, sizeof *net);
    if (width < 1 || width > 1024 || in_ch != 1 || nclass < 1) {
        snprintf(err, errlen, "unsupported architecture: width %d, in_channels %d, %d classes",
                 width, in_ch, nclass);
        return -EINVAL;
    }
    net->width = width;
    net->in_ch = in_ch;
    net->nclass = nclass;
    set_shapes(net);
    size_t total = 0;
    for_each_conv(net, count_floats, &total);
    net->block = aligned_alloc(64, (total * sizeof(float) + 63) / 64 * 64);
    if (!net->block) {
        snprintf(err, errlen, "out of memory for %zu weights", total);
        memset(net, 0, sizeof *net);
        return -ENOMEM;
    }
    size_t nt = segd_weights_count(wt);
    load_ctx lc = {.wt = wt, .next = net->block, .eps = eps, .err = err, .errlen = errlen,
                   .seen = calloc(nt ? nt : 1, 1)};
    int rc = lc.seen ? for_each_conv(net, load_conv, &lc) : -ENOMEM;
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    for (size_t i = 0; rc == 0 && i < nt; i++)
        if (!lc.seen[i]) {
            snprintf(err, errlen, "unexpected tensor '%s'", segd_weights_tensor(wt, i)->name);
            rc = -EINVAL;
        }
    free(lc.seen);
    if (rc) {
        segd_unet3p_finalize(net);
        return rc;
    }
    assert((size_t)(lc.next - net->block) == total);
    net->isa = isa;
    if ((rc = segd_unet3p_set_gemm(net, SEGD_GEMM_AUTO))) {
        snprintf(err, errlen, "out of memory for the OpenBLAS weights");
        segd_unet3p_finalize(net);
        return rc;
    }
    return 0;
}

void segd_unet3p_finalize(segd_unet3p *net)
{
    free(net->bf16_block);
    free(net->blas_block);
    free(net->block);
    memset(net, 0, sizeof *net);
}

/* ------------------------------------------------- OpenBLAS weight layout */

/* Floats of a conv's row-major copies (+16 each: keep 64-byte alignment). */
static size_t blas_floats(const segd_conv *c)
{
    size_t n = 0;
    if (uses_wino(c))
        n += (size_t)36 * c->cout * c->cin + 16;
    if (c->resampled)
        n += (size_t)9 * c->cout * c->cin + 16;
    return n;
}

static int count_blas_floats(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    *(size_t *)ctx += blas_floats(c);
    return 0;
}

static float *align64(float *p)
{
    return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* ctx: float ** to the next free float of blas_block. */
static int build_blas_conv(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    float **next = ctx;
    if (uses_wino(c)) {
        float *ur = align64(*next);
        segd_wino_weights_rows(ur, c->w, c->cin, c->cout);
        c->ur = ur;
        *next += (size_t)36 * c->cout * c->cin + 16;
    }
    if (c->resampled) {
        /* A (cout*9, cin): row o*9 + tap = w[o][:][tap] */
        float *a = align64(*next);
        int k = c->cin;
        for (int r = 0; r < 9 * c->cout; r++)
            for (int kk = 0; kk < k; kk++)
                a[(size_t)r * k + kk] = c->w[((size_t)(r / 9) * k + kk) * 9 + r % 9];
        c->wzr = a;
        *next += (size_t)9 * c->cout * c->cin + 16;
    }
    return 0;
}

static int clear_blas_conv(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    (void)ctx;
    c->ur = c->wzr = NULL;
    return 0;
}

int segd_unet3p_set_gemm(segd_unet3p *net, segd_gemm g)
{
    g = segd_gemm_resolve(g, net->isa);
    if (g == SEGD_GEMM_OPENBLAS && net->bf16)
        return -ENOTSUP;
    if (g == SEGD_GEMM_OPENBLAS && !net->blas_block) {
        size_t total = 0;
        for_each_conv(net, count_blas_floats, &total);
        float *block = aligned_alloc(64, (total * sizeof(float) + 63) / 64 * 64);
        if (!block)
            return -ENOMEM;
        float *next = block;
        for_each_conv(net, build_blas_conv, &next);
        assert((size_t)(next - block) == total);
        net->blas_block = block;
    } else if (g == SEGD_GEMM_NATIVE && net->blas_block) {
        for_each_conv(net, clear_blas_conv, NULL);
        free(net->blas_block);
        net->blas_block = NULL;
    }
    net->gemm = g;
    return 0;
}

/* ------------------------------------------------------ bf16 weight layout */

/* uint16 of a conv's bf16 Winograd weights (+32: keep 64-byte alignment). */
static size_t bf16_elems(const segd_conv *c)
{
    return uses_wino(c) ? segd_wino_weights_bf16_elems(c->cin, c->cout) + 32 : 0;
}

static int count_bf16_elems(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    *(size_t *)ctx += bf16_elems(c);
    return 0;
}

/* ctx: uint16_t ** to the next free element of bf16_block. */
static int build_bf16_conv(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    uint16_t **next = ctx;
    if (uses_wino(c)) {
        uint16_t *ub = (uint16_t *)(((uintptr_t)*next + 63) & ~(uintptr_t)63);
        segd_wino_weights_bf16(ub, c->u, c->cin, c->cout);
        c->ub = ub;
    }
    *next += bf16_elems(c);
    return 0;
}

static int clear_bf16_conv(segd_conv *c, const char *prefix, void *ctx)
{
    (void)prefix;
    (void)ctx;
    c->ub = NULL;
    return 0;
}

int segd_unet3p_set_bf16(segd_unet3p *net, int on)
{
    if (on && (net->gemm != SEGD_GEMM_NATIVE || net->isa < SEGD_ISA_AVX512))
        return -ENOTSUP;
    if (on && !net->bf16_block) {
        size_t total = 0;
        for_each_conv(net, count_bf16_elems, &total);
        uint16_t *block = aligned_alloc(64, (total * sizeof(uint16_t) + 63) / 64 * 64);
        if (!block)
            return -ENOMEM;
        uint16_t *next = block;
        for_each_conv(net, build_bf16_conv, &next);
        assert((size_t)(next - block) == total);
        net->bf16_block = block;
    } else if (!on && net->bf16_block) {
        for_each_conv(net, clear_bf16_conv, NULL);
        free(net->bf16_block);
        net->bf16_block = NULL;
    }
    net->bf16 = on;
    return 0;
}

/* ------------------------------------------------------------ arena plan */

#define BAND_FLOATS ((size_t)1 << 19) /* target Winograd scratch per band */

enum { SRC_DIRECT, SRC_POOL };

/* Tile rows per band of a Winograd conv at h x w: bounded by the scratch
 * target, and small enough to give every thread a few bands; then, where
 * the budget allows, a count whose tiles fill the micro-kernel's nr lanes
 * exactly (the GEMMs multiply the band's tiles rounded up to nr: one 64-
 * tile row of a 256-wide map is 96 lanes for AVX-512's nr 48, three rows
 * are 192). */
static int band_rows_nr(int cin, int cout, int h, int w, int nthreads, int nr, int isa,
                        int whole)
{
    int tx = segd_wino_tiles_x(w, SEGD_ISA_AVX512), ty = (h + 3) / 4;
    size_t per_tile = 36 * ((size_t)cin + segd_wino_cout_pad(cout) + 2);
    int r = (int)(BAND_FLOATS / per_tile / (size_t)tx);
    int share = (ty + 2 * nthreads - 1) / (2 * nthreads);
    if (nthreads > 1 && r > share)
        r = share;
    if (r > ty)
        r = ty;
    if (r < 1)
        r = 1;
    int txi = segd_wino_tiles_x(w, isa);
    /* A map of at most 2 nr lanes in all (16 x 16 and 32 x 32): one band,
     * whose output channels run_conv splits among the team; bands of a
     * row or two would each round a few tiles up to nr lanes. */
    if (whole && nr > 1 && (size_t)ty * txi <= 2 * (size_t)nr)
        return ty;
    for (int k = r; nr > 1 && k <= 4 * r && k <= ty; k++)
        if ((size_t)k * txi % (size_t)nr == 0 &&
            (nthreads == 1 || (ty + k - 1) / k >= 2 * nthreads)) {
            r = k;
            break;
        }
    return r;
}

/* Whether a conv's bands may be split by output channels among the team
 * (each part repeats the band's input transform and pooling): where the
 * GEMMs outweigh that, i.e. many output channels, and the source is not
 * pooled by more than 2 (each part would pool the whole finer map again);
 * not for OpenBLAS, whose sums may depend on the rows of a call (a result
 * must not depend on the team's size). */
static int splittable(const segd_unet3p *net, const segd_conv *c, int kind, int k)
{
    return net->gemm == SEGD_GEMM_NATIVE && c->cout >= 64 && (kind == SRC_DIRECT || k <= 2);
}

/* The rows net's kernels use (OpenBLAS multiplies the real tiles only). */
static int band_rows(const segd_unet3p *net, const segd_conv *c, int h, int w, int nthreads,
                     int kind, int k)
{
    int nr = net->gemm != SEGD_GEMM_NATIVE ? 1
             : net->bf16                  ? SEGD_GEMM_NR_MAX
                                          : segd_gemm_nr(net->isa);
    return band_rows_nr(c->cin, c->cout, h, w, nthreads, nr, net->isa,
                        splittable(net, c, kind, k));
}

/* Output rows per band of a resampled branch: one output channel's 9
 * resized tap maps of a band (9 x (rows+2) x w) stay in L2. */
#define TAP_FLOATS ((size_t)1 << 17) /* 9 resized tap maps of one band (L2) */

static int resampled_rows(const segd_conv *c, int h, int w, int nthreads)
{
    (void)c;
    long r = (long)(TAP_FLOATS / ((size_t)9 * w)) - 2;
    int share = (h + 2 * nthreads - 1) / (2 * nthreads);
    if (nthreads > 1 && r > share)
        r = share;
    if (r > h)
        r = h;
    return r < 1 ? 1 : (int)r;
}

static size_t resampled_scratch(const segd_conv *c, int h, int w, int nthreads)
{
    size_t gemm = (size_t)SEGD_GEMM_NR_MAX * (c->cin + SEGD_WINO_MR);
    size_t band = (size_t)9 * (resampled_rows(c, h, w, nthreads) + 2) * w +
                  segd_resize_tmp_floats(w) + 16;
    size_t n = gemm > band ? gemm : band;
    return (n + 15) / 16 * 16;
}

/* Per-thread scratch of one conv: Winograd band + produced source rows. */
static size_t conv_scratch(const segd_conv *c, int h, int w, int src_kind, int nthreads)
{
    if (c->resampled)
        return resampled_scratch(c, h, w, nthreads);
    /* the most rows any backend or isa picks: the arena does not depend
     * on them (segd_unet3p_set_gemm, _set_bf16) */
    static const int nrs[3] = {1, SEGD_GEMM_NR, SEGD_GEMM_NR_MAX};
    static const int isas[2] = {SEGD_ISA_AVX2, SEGD_ISA_AVX512};
    int r = 1;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 2; b++) {
            int rr = band_rows_nr(c->cin, c->cout, h, w, nthreads, nrs[a], isas[b], 1);
            r = rr > r ? rr : r;
        }
    size_t n = segd_wino_band_floats(c->cin, c->cout, r, w);
    if (src_kind != SRC_DIRECT)
        n += (size_t)c->cin * (4 * r + 2) * w + 16; /* +16: 64-byte alignment */
    return (n + 15) / 16 * 16; /* 64-byte multiples */
}

/* Activation arena of a forward pass over n images (n <= the batch it was
 * planned for).  Every map the batched layers keep alive has one copy per
 * image, `img` floats apart; the finest decoder level (d = 1) and the head
 * run image by image (their GEMMs have tiles enough to fill the cores
 * alone), so its concat buffer, hd1 and resampled-tap maps exist once.
 * Per-thread scratch comes last. */
typedef struct plan {
    int h[6], w[6];        /* level sizes, index 1..5 */
    size_t n[6];           /* h*w */
    /* per image, offsets within its block: */
    size_t e[6], hd[5];    /* encoder maps e1..e5, decoder maps hd2..hd4 (hd[1] unused) */
    size_t t1, cat, cls, z;
    size_t img;            /* floats of one image's block */
    /* shared, offsets from the arena start (after the batch's blocks): */
    size_t hd1, cat1, z1;
    size_t thr, thr_floats; /* per-thread scratch */
    size_t total;
} plan;

static size_t up16(size_t n)
{
    return (n + 15) / 16 * 16;
}

/* Floats of a resampled branch's per-tap maps (9 cout maps at each source
 * level) for decoder levels [d0, d1]. */
static size_t tap_floats(const segd_unet3p *net, const plan *p, int d0, int d1)
{
    size_t z = 0;
    for (int d = d0; d <= d1; d++)
        for (int j = d + 1; j <= 5; j++) {
            size_t zj = (size_t)9 * net->branch[d - 1][j - 1].cout * p->n[j];
            z = zj > z ? zj : z;
        }
    return z;
}

static void make_plan(const segd_unet3p *net, int h, int w, int nthreads, int batch, plan *p)
{
    memset(p, 0, sizeof *p);
    int W = net->width, up = 5 * W;
    int chs[6] = {0, W, 2 * W, 4 * W, 8 * W, 16 * W};
    p->h[1] = h;
    p->w[1] = w;
    for (int l = 2; l <= 5; l++) {
        p->h[l] = (p->h[l - 1] + 1) / 2;
        p->w[l] = (p->w[l - 1] + 1) / 2;
    }
    for (int l = 1; l <= 5; l++)
        p->n[l] = (size_t)p->h[l] * p->w[l];
    size_t off = 0, thr = 0;
    for (int l = 1; l <= 5; l++) {
        p->e[l] = off;
        off += up16(chs[l] * p->n[l]);
    }
    for (int d = 2; d <= 4; d++) {
        p->hd[d] = off;
        off += up16((size_t)up * p->n[d]);
    }
    /* scratch of every Winograd conv */
    for (int l = 1; l <= 5; l++)
        for (int u = 0; u < 2; u++) {
            const segd_conv *c = &net->enc[l - 1][u];
            if (uses_wino(c)) {
                size_t s = conv_scratch(c, p->h[l], p->w[l], (u == 0 && l > 1) ? SRC_POOL : SRC_DIRECT,
                                        nthreads);
                thr = s > thr ? s : thr;
            }
        }
    for (int d = 1; d <= 4; d++) {
        for (int j = 1; j <= 5; j++) {
            size_t s = conv_scratch(&net->branch[d - 1][j - 1], p->h[d], p->w[d],
                                    j == d ? SRC_DIRECT : SRC_POOL, nthreads);
            thr = s > thr ? s : thr;
        }
        size_t s = conv_scratch(&net->fuse[d - 1], p->h[d], p->w[d], SRC_DIRECT, nthreads);
        thr = s > thr ? s : thr;
    }
    size_t s = conv_scratch(&net->head, p->h[1], p->w[1], SRC_DIRECT, nthreads);
    thr = s > thr ? s : thr;
    size_t t1 = 0; /* output of enc.*.0, the largest encoder map */
    for (int l = 1; l <= 5; l++)
        t1 = (size_t)chs[l] * p->n[l] > t1 ? (size_t)chs[l] * p->n[l] : t1;
    p->t1 = off;
    off += up16(t1);
    p->cls = off;
    off += up16((size_t)net->nclass * p->n[5]);
    p->cat = off;
    off += up16((size_t)up * p->n[2]);
    p->z = off;
    off += up16(tap_floats(net, p, 2, 4));
    p->img = off;
    /* shared */
    off *= (size_t)batch;
    p->hd1 = off;
    off += up16((size_t)up * p->n[1]);
    p->cat1 = off;
    off += up16((size_t)up * p->n[1]);
    p->z1 = off;
    off += up16(tap_floats(net, p, 1, 1));
    p->thr = off;
    p->thr_floats = thr;
    off += thr * (size_t)nthreads;
    p->total = off;
}

size_t segd_unet3p_arena_floats(const segd_unet3p *net, int h, int w, int nthreads, int batch)
{
    plan p;
    make_plan(net, h, w, nthreads, batch, &p);
    return p.total;
}

static double conv_flops(const segd_conv *c, size_t n)
{
    return 2.0 * c->cin * c->cout * c->k * c->k * (double)n;
}

double segd_unet3p_flops(const segd_unet3p *net, int h, int w)
{
    plan p;
    make_plan(net, h, w, 1, 1, &p);
    double f = 0;
    for (int l = 1; l <= 5; l++)
        f += conv_flops(&net->enc[l - 1][0], p.n[l]) + conv_flops(&net->enc[l - 1][1], p.n[l]);
    for (int d = 1; d <= 4; d++) {
        for (int j = 1; j <= 5; j++)
            f += conv_flops(&net->branch[d - 1][j - 1], p.n[d]);
        f += conv_flops(&net->fuse[d - 1], p.n[d]);
    }
    f += conv_flops(&net->head, p.n[1]);
    f += conv_flops(&net->cls, p.n[5]);
    return f;
}

/* --------------------------------------------------------------- forward */

/* One Winograd conv over nimg images, split into bands of tile rows; the
 * team runs the (image, band) pairs.  The source is a map at the conv's
 * size (SRC_DIRECT) or one produced band by band from a finer map by max
 * pooling (k), so pooled copies never exist at full size.  Image i's
 * source and output are src + i * src_is and out + i * out_is. */
typedef struct conv_job {
    const segd_conv *c;
    float *out;
    size_t out_cs, out_is;
    int h, w;                /* conv (output) size */
    int kind, k;             /* source kind, pool factor */
    const float *src;
    size_t src_is;
    int sh, sw;              /* source map size */
    int rows, nbands;        /* tile rows per band, bands per image */
    int chunk, nparts;       /* output channels per part (a multiple of MR), parts per band */
    float *scratch;
    size_t thr_floats;
    int isa, blas, bf16;
} conv_job;

static void conv_band(void *ctx, int task, int thread)
{
    const conv_job *j = ctx;
    const segd_conv *c = j->c;
    int img = task / (j->nbands * j->nparts), band = task / j->nparts % j->nbands;
    int oc0 = task % j->nparts * j->chunk, oc1 = oc0 + j->chunk < c->cout ? oc0 + j->chunk : c->cout;
    int ty_n = (j->h + 3) / 4;
    int ty0 = band * j->rows, ty1 = ty0 + j->rows < ty_n ? ty0 + j->rows : ty_n;
    float *scr = j->scratch + (size_t)thread * j->thr_floats;
    const float *src = j->src + (size_t)img * j->src_is, *in = src;
    float *out = j->out + (size_t)img * j->out_is;
    size_t in_cs = (size_t)j->h * j->w;
    int r0 = 0, r1 = j->h;
    if (j->kind != SRC_DIRECT) {
        r0 = 4 * ty0 - 1 > 0 ? 4 * ty0 - 1 : 0;
        r1 = 4 * ty1 + 1 < j->h ? 4 * ty1 + 1 : j->h;
        float *buf = scr + segd_wino_band_floats(c->cin, c->cout, j->rows, j->w);
        buf = (float *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
        segd_maxpool_rows(buf, src, c->cin, j->sh, j->sw, j->k, r0, r1);
        in = buf;
        in_cs = (size_t)(r1 - r0) * j->w;
    }
    if (j->bf16)
        segd_wino_band_bf16(out, j->out_cs, in, in_cs, r0, r1, j->h, j->w, ty0, ty1, c->ub, c->b,
                            c->cin, c->cout, oc0, oc1, c->relu, scr);
    else if (j->blas)
        segd_wino_band_blas(out, j->out_cs, in, in_cs, r0, r1, j->h, j->w, ty0, ty1, c->ur, c->b,
                            c->cin, c->cout, oc0, oc1, c->relu, scr, j->isa);
    else
        segd_wino_band(out, j->out_cs, in, in_cs, r0, r1, j->h, j->w, ty0, ty1, c->u, c->b,
                       c->cin, c->cout, oc0, oc1, c->relu, scr, j->isa);
}

/* Where a conv reads and writes for nimg images: image i's source map is
 * src + i * src_is (src_level's size), its output out + i * out_is with
 * channel stride out_cs. */
typedef struct conv_io {
    int nimg;
    const float *src;
    size_t src_is;
    int src_level;
    float *out;
    size_t out_is, out_cs;
} conv_io;

static void run_conv(const segd_unet3p *net, const plan *p, float *arena, segd_team *team,
                     const segd_conv *c, int level, int kind, int k, const conv_io *io)
{
    int h = p->h[level], w = p->w[level];
    if (kind == SRC_DIRECT && c->cin == 1) { /* one input channel, not pooled */
        assert(c->k == 3);
        for (int i = 0; i < io->nimg; i++)
            segd_conv3x3_c1(io->out + (size_t)i * io->out_is, io->out_cs,
                            io->src + (size_t)i * io->src_is, c->w, c->b, c->cout, h, w, c->relu);
        return;
    }
    int nthreads = segd_team_size(team);
    conv_job j = {.c = c, .out = io->out, .out_cs = io->out_cs, .out_is = io->out_is, .h = h,
                  .w = w, .kind = kind, .k = k, .src = io->src, .src_is = io->src_is,
                  .sh = p->h[io->src_level], .sw = p->w[io->src_level],
                  .rows = band_rows(net, c, h, w, nthreads, kind, k),
                  .scratch = arena + p->thr, .thr_floats = p->thr_floats, .isa = net->isa,
                  .blas = net->gemm == SEGD_GEMM_OPENBLAS, .bf16 = net->bf16};
    assert(!j.blas || c->ur);
    assert(!j.bf16 || (c->ub && !j.blas));
    j.nbands = ((h + 3) / 4 + j.rows - 1) / j.rows;
    /* Too few bands for the team (the deep levels, one band of all their
     * rows: see band_rows): each band's output channels split in parts. */
    int mblocks = segd_wino_cout_pad(c->cout) / SEGD_WINO_MR, parts = 1;
    if (nthreads > 1 && splittable(net, c, kind, k) && io->nimg * j.nbands < 2 * nthreads) {
        parts = (2 * nthreads + io->nimg * j.nbands - 1) / (io->nimg * j.nbands);
        parts = parts < mblocks ? parts : mblocks;
    }
    j.chunk = (mblocks + parts - 1) / parts * SEGD_WINO_MR;
    j.nparts = (c->cout + j.chunk - 1) / j.chunk;
    assert(conv_scratch(c, h, w, kind, nthreads) <= p->thr_floats);
    segd_team_run(team, io->nimg * j.nbands * j.nparts, conv_band, &j);
}

/* conv3x3(resize(S)) for a decoder branch from a coarser level, computed as
 * resize(W_tap S) summed over the 9 shifted taps: the per-tap channel mixing
 * (cout*9 maps) runs at the coarse level, and only cout*9 maps (not cin) are
 * resampled.  Mathematically identical; far fewer FLOPs when cin >> cout.
 * Image i's tap maps are z + i * z_is. */
typedef struct resampled_job {
    const segd_conv *c;
    float *out, *z, *scratch;
    size_t out_cs, out_is, src_is, z_is, thr_floats;
    const float *src;
    int sh, sw, h, w;
    int chunk, nchunks, rows, nbands, isa, blas;
} resampled_job;

static void resampled_gemm(void *ctx, int task, int thread)
{
    const resampled_job *j = ctx;
    int img = task / j->nchunks, part = task % j->nchunks;
    int n = j->sh * j->sw, n0 = part * j->chunk, n1 = n0 + j->chunk < n ? n0 + j->chunk : n;
    float *z = j->z + (size_t)img * j->z_is;
    const float *src = j->src + (size_t)img * j->src_is;
    if (j->blas) { /* z columns [n0, n1) = A (cout*9, cin) x src columns [n0, n1) */
        segd_gemm_blas(z + n0, (size_t)n, j->c->wzr, 9 * j->c->cout, j->c->cin, src + n0,
                       (size_t)n, n1 - n0);
        return;
    }
    segd_gemm_packed(z, (size_t)n, j->c->wz, 9 * j->c->cout, j->c->cin, src, (size_t)n, n0, n1,
                     j->scratch + (size_t)thread * j->thr_floats, j->isa);
}

static void resampled_band(void *ctx, int task, int thread)
{
    const resampled_job *j = ctx;
    int img = task / j->nbands, band = task % j->nbands;
    int r0 = band * j->rows, r1 = r0 + j->rows < j->h ? r0 + j->rows : j->h;
    int z0 = r0 > 0 ? r0 - 1 : 0, z1 = r1 + 1 < j->h ? r1 + 1 : j->h;
    float *rz = j->scratch + (size_t)thread * j->thr_floats;
    float *tmp = rz + (size_t)9 * (j->rows + 2) * j->w;
    const float *z = j->z + (size_t)img * j->z_is;
    float *out = j->out + (size_t)img * j->out_is;
    size_t zs = (size_t)9 * j->sh * j->sw; /* one output channel's tap maps */
    for (int o = 0; o < j->c->cout; o++) {
        segd_resize_bilinear_rows(rz, z + o * zs, 9, j->sh, j->sw, j->h, j->w, z0, z1, tmp);
        segd_tapsum3x3(out + o * j->out_cs, j->out_cs, rz, 1, j->h, j->w, r0, r1, z0, z1 - z0,
                       j->c->b + o, j->c->relu);
    }
}

static void run_resampled(const segd_unet3p *net, const plan *p, float *arena, segd_team *team,
                          const segd_conv *c, int level, const conv_io *io, float *z,
                          size_t z_is)
{
    int nthreads = segd_team_size(team);
    resampled_job j = {.c = c, .out = io->out, .z = z, .scratch = arena + p->thr,
                       .out_cs = io->out_cs, .out_is = io->out_is, .src_is = io->src_is,
                       .z_is = z_is, .thr_floats = p->thr_floats, .src = io->src,
                       .sh = p->h[io->src_level], .sw = p->w[io->src_level], .h = p->h[level],
                       .w = p->w[level], .isa = net->isa,
                       .blas = net->gemm == SEGD_GEMM_OPENBLAS};
    assert(!j.blas || c->wzr);
    assert(resampled_scratch(c, j.h, j.w, nthreads) <= p->thr_floats);
    int n = j.sh * j.sw, nr = SEGD_GEMM_NR_MAX; /* chunks start at multiples of any isa's nr */
    int chunk = (n + 4 * nthreads - 1) / (4 * nthreads);
    j.chunk = (chunk + nr - 1) / nr * nr;
    j.nchunks = (n + j.chunk - 1) / j.chunk;
    segd_team_run(team, io->nimg * j.nchunks, resampled_gemm, &j);
    j.rows = resampled_rows(c, j.h, j.w, nthreads);
    j.nbands = (j.h + j.rows - 1) / j.rows;
    segd_team_run(team, io->nimg * j.nbands, resampled_band, &j);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Add the time since *t to prof[i] and restart *t (no-op without prof). */
static void lap(double *prof, int i, double *t)
{
    if (!prof)
        return;
    double now = now_ms();
    prof[i] += now - *t;
    *t = now;
}

/* Decoder level d, branches and fuse, for io_n images whose block-relative
 * maps start at blk (stride p->img) and whose concat / output / tap maps
 * are given (per image strides cat_is, out_is, z_is). */
static void run_decoder(const segd_unet3p *net, const plan *p, float *arena, segd_team *team,
                        int d, int nimg, float *blk, float *cat, size_t cat_is, float *out,
                        size_t out_is, float *z, size_t z_is, double *prof, double *t)
{
    int W = net->width;
    for (int j = 1; j <= 5; j++) {
        const segd_conv *c = &net->branch[d - 1][j - 1];
        /* source: e_j (j <= d, j = 5) or hd_j (d < j < 5), per image */
        const float *src = blk + (j <= d || j == 5 ? p->e[j] : p->hd[j]);
        conv_io io = {.nimg = nimg, .src = src, .src_is = p->img, .src_level = j,
                      .out = cat + (size_t)(j - 1) * W * p->n[d], .out_is = cat_is,
                      .out_cs = p->n[d]};
        if (j < d)
            run_conv(net, p, arena, team, c, d, SRC_POOL, 1 << (d - j), &io);
        else if (j == d)
            run_conv(net, p, arena, team, c, d, SRC_DIRECT, 1, &io);
        else
            run_resampled(net, p, arena, team, c, d, &io, z, z_is);
        lap(prof, 10 + 6 * (d - 1) + (j - 1), t);
    }
    conv_io io = {.nimg = nimg, .src = cat, .src_is = cat_is, .src_level = d, .out = out,
                  .out_is = out_is, .out_cs = p->n[d]};
    run_conv(net, p, arena, team, &net->fuse[d - 1], d, SRC_DIRECT, 1, &io);
    lap(prof, 10 + 6 * (d - 1) + 5, t);
}

void segd_unet3p_forward(const segd_unet3p *net, float *logits, float *presence,
                         const float *x, int n, int h, int w, float *arena, segd_team *team,
                         double *prof)
{
    plan p;
    make_plan(net, h, w, segd_team_size(team), n, &p);
    double t = prof ? now_ms() : 0;
    size_t in_is = (size_t)net->in_ch * p.n[1], out_is = (size_t)net->nclass * p.n[1];

    /* Encoder, layer by layer over the batch: conv (of the 2x2-pooled
     * previous level) then conv. */
    for (int l = 1; l <= 5; l++) {
        const segd_conv *a = &net->enc[l - 1][0], *b = &net->enc[l - 1][1];
        conv_io ia = {.nimg = n, .src = l == 1 ? x : arena + p.e[l - 1],
                      .src_is = l == 1 ? in_is : p.img, .src_level = l == 1 ? 1 : l - 1,
                      .out = arena + p.t1, .out_is = p.img, .out_cs = p.n[l]};
        run_conv(net, &p, arena, team, a, l, l == 1 ? SRC_DIRECT : SRC_POOL, l == 1 ? 1 : 2, &ia);
        lap(prof, 2 * (l - 1), &t);
        conv_io ib = {.nimg = n, .src = arena + p.t1, .src_is = p.img, .src_level = l,
                      .out = arena + p.e[l], .out_is = p.img, .out_cs = p.n[l]};
        run_conv(net, &p, arena, team, b, l, SRC_DIRECT, 1, &ib);
        lap(prof, 2 * (l - 1) + 1, &t);
    }

    /* Presence: cls 1x1 on the bottleneck, global max. */
    for (int i = 0; i < n; i++) {
        float *cl = arena + (size_t)i * p.img + p.cls;
        const float *e5 = arena + (size_t)i * p.img + p.e[5];
        if (net->gemm == SEGD_GEMM_OPENBLAS)
            segd_conv1x1_blas(cl, e5, net->cls.w, net->cls.b, net->cls.cin, net->cls.cout,
                              (int)p.n[5]);
        else
            segd_conv1x1(cl, e5, net->cls.w, net->cls.b, net->cls.cin, net->cls.cout, (int)p.n[5]);
        for (int c = 0; c < net->nclass; c++) {
            float m = cl[(size_t)c * p.n[5]];
            for (size_t k = 1; k < p.n[5]; k++)
                m = fmaxf(m, cl[(size_t)c * p.n[5] + k]);
            presence[(size_t)i * net->nclass + c] = m;
        }
    }
    lap(prof, SEGD_UNET3P_NCONV - 1, &t);

    /* Decoder levels 4..2 over the batch: each branch conv writes its slice
     * of the 5w concat buffer.  hd5 is e5. */
    for (int d = 4; d >= 2; d--)
        run_decoder(net, &p, arena, team, d, n, arena, arena + p.cat, p.img, arena + p.hd[d],
                    p.img, arena + p.z, p.img, prof, &t);

    /* Level 1 and the head, image by image in the shared buffers. */
    for (int i = 0; i < n; i++) {
        float *blk = arena + (size_t)i * p.img;
        run_decoder(net, &p, arena, team, 1, 1, blk, arena + p.cat1, 0, arena + p.hd1, 0,
                    arena + p.z1, 0, prof, &t);
        conv_io io = {.nimg = 1, .src = arena + p.hd1, .src_is = 0, .src_level = 1,
                      .out = logits + (size_t)i * out_is, .out_is = 0, .out_cs = p.n[1]};
        run_conv(net, &p, arena, team, &net->head, 1, SRC_DIRECT, 1, &io);
        lap(prof, SEGD_UNET3P_NCONV - 2, &t);
    }
}

const segd_conv *segd_unet3p_conv(const segd_unet3p *net, int i, int *level, int *gemm_level)
{
    if (i < 10) {
        *level = *gemm_level = i / 2 + 1;
        return &net->enc[i / 2][i % 2];
    }
    if (i < 34) {
        int d = (i - 10) / 6 + 1, j = (i - 10) % 6 + 1;
        *level = *gemm_level = d;
        if (j == 6)
            return &net->fuse[d - 1];
        if (j > d) /* resampled: the per-tap GEMM runs at the source's level */
            *gemm_level = j;
        return &net->branch[d - 1][j - 1];
    }
    *level = *gemm_level = i == 34 ? 1 : 5;
    return i == 34 ? &net->head : &net->cls;
}

const char *segd_unet3p_conv_name(int i, char *buf, size_t len)
{
    if (i < 0 || i >= SEGD_UNET3P_NCONV)
        snprintf(buf, len, "?");
    else if (i < 10)
        snprintf(buf, len, "enc.%d.%d", i / 2, i % 2);
    else if (i < 34 && (i - 10) % 6 == 5)
        snprintf(buf, len, "dec.%d.fuse", (i - 10) / 6);
    else if (i < 34)
        snprintf(buf, len, "dec.%d.branch.%d", (i - 10) / 6, (i - 10) % 6);
    else
        snprintf(buf, len, i == 34 ? "head" : "cls");
    return buf;
}
