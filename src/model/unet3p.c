/* UNet3+ graph: tensor table and BN folding, arena plan, forward wiring. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segd/kernels.h"
#include "segd/unet3p.h"

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
            net->branch[d - 1][j - 1] =
                (segd_conv){.cin = src, .cout = w, .k = 3, .bn = 1, .relu = 1};
        }
        net->fuse[d - 1] = (segd_conv){.cin = up, .cout = up, .k = 3, .bn = 1, .relu = 1};
    }
    net->head = (segd_conv){.cin = up, .cout = net->nclass, .k = 3};
    net->cls = (segd_conv){.cin = chs[4], .cout = net->nclass, .k = 1};
}

static size_t conv_floats(const segd_conv *c)
{
    return (size_t)c->cout * c->cin * c->k * c->k + (size_t)c->cout;
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
    return 0;
}

int segd_unet3p_load(segd_unet3p *net, const segd_weights *wt, int width, int in_ch,
                     int nclass, float eps, char *err, size_t errlen)
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
    net->block = malloc(total * sizeof(float));
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
    return 0;
}

void segd_unet3p_finalize(segd_unet3p *net)
{
    free(net->block);
    memset(net, 0, sizeof *net);
}

/* ------------------------------------------------------------ arena plan */

typedef struct plan {
    int h[6], w[6];        /* level sizes, index 1..5 */
    size_t n[6];           /* h*w */
    size_t e[6], hd[5];    /* offsets of encoder maps e1..e5, decoder maps hd1..hd4 */
    size_t t1, t2, cat, src, col, cls;
    size_t col_floats;
    size_t total;
} plan;

#define COL_BUDGET ((size_t)1 << 20) /* floats of im2col scratch (4 MiB) */

static void make_plan(const segd_unet3p *net, int h, int w, plan *p)
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
    size_t off = 0, tmax = 0, srcmax = 0, colmin = 0;
    for (int l = 1; l <= 5; l++) {
        p->e[l] = off;
        off += chs[l] * p->n[l];
        size_t t = (size_t)chs[l] * p->n[l];
        tmax = t > tmax ? t : tmax;
        if (l > 1 && (size_t)chs[l - 1] * p->n[l] > tmax)
            tmax = (size_t)chs[l - 1] * p->n[l];
    }
    for (int d = 1; d <= 4; d++) {
        p->hd[d] = off;
        off += (size_t)up * p->n[d];
        for (int j = 1; j <= 5; j++) {
            if (j == d)
                continue;
            size_t s = (size_t)net->branch[d - 1][j - 1].cin * p->n[d];
            srcmax = s > srcmax ? s : srcmax;
        }
    }
    /* Largest one-row im2col over every 3x3 conv (their widths: level widths). */
    for (int l = 1; l <= 5; l++) {
        size_t c = segd_conv3x3_min_col(16 * W > up ? 16 * W : up, p->w[l]);
        colmin = c > colmin ? c : colmin;
    }
    p->t1 = off;
    off += tmax;
    p->t2 = off;
    off += tmax;
    p->cat = off;
    off += (size_t)up * p->n[1];
    p->src = off;
    off += srcmax;
    p->col_floats = colmin > COL_BUDGET ? colmin : COL_BUDGET;
    p->col = off;
    off += p->col_floats;
    p->cls = off;
    off += (size_t)net->nclass * p->n[5];
    p->total = off;
}

size_t segd_unet3p_arena_floats(const segd_unet3p *net, int h, int w)
{
    plan p;
    make_plan(net, h, w, &p);
    return p.total;
}

static double conv_flops(const segd_conv *c, size_t n)
{
    return 2.0 * c->cin * c->cout * c->k * c->k * (double)n;
}

double segd_unet3p_flops(const segd_unet3p *net, int h, int w)
{
    plan p;
    make_plan(net, h, w, &p);
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

static void conv(const plan *p, float *arena, const segd_conv *c, float *out, size_t out_cs,
                 const float *inp, int level)
{
    segd_conv3x3(out, out_cs, inp, c->w, c->b, c->cin, c->cout, p->h[level], p->w[level],
                 c->relu, arena + p->col, p->col_floats);
}

void segd_unet3p_forward(const segd_unet3p *net, float *logits, float *presence,
                         const float *x, int h, int w, float *arena)
{
    plan p;
    make_plan(net, h, w, &p);
    int W = net->width, up = 5 * W;
    float *t1 = arena + p.t1, *t2 = arena + p.t2, *e[6], *hd[6];
    for (int l = 1; l <= 5; l++)
        e[l] = arena + p.e[l];
    for (int d = 1; d <= 4; d++)
        hd[d] = arena + p.hd[d];
    hd[5] = e[5];

    /* Encoder: (pool) conv conv per level. */
    const float *in = x;
    for (int l = 1; l <= 5; l++) {
        const segd_conv *a = &net->enc[l - 1][0], *b = &net->enc[l - 1][1];
        if (l > 1) {
            segd_maxpool(t1, e[l - 1], a->cin, p.h[l - 1], p.w[l - 1], 2);
            in = t1;
        }
        conv(&p, arena, a, t2, p.n[l], in, l);
        conv(&p, arena, b, e[l], p.n[l], t2, l);
    }

    /* Presence: cls 1x1 on the bottleneck, global max. */
    float *cl = arena + p.cls;
    segd_conv1x1(cl, e[5], net->cls.w, net->cls.b, net->cls.cin, net->cls.cout, (int)p.n[5]);
    for (int c = 0; c < net->nclass; c++) {
        float m = cl[(size_t)c * p.n[5]];
        for (size_t i = 1; i < p.n[5]; i++)
            m = fmaxf(m, cl[(size_t)c * p.n[5] + i]);
        presence[c] = m;
    }

    /* Decoder: each branch conv writes its slice of the 5w concat buffer. */
    float *cat = arena + p.cat, *src = arena + p.src;
    for (int d = 4; d >= 1; d--) {
        for (int j = 1; j <= 5; j++) {
            const segd_conv *c = &net->branch[d - 1][j - 1];
            const float *s;
            if (j < d) {
                segd_maxpool(src, e[j], c->cin, p.h[j], p.w[j], 1 << (d - j));
                s = src;
            } else if (j == d) {
                s = e[j];
            } else {
                segd_resize_bilinear(src, hd[j], c->cin, p.h[j], p.w[j], p.h[d], p.w[d]);
                s = src;
            }
            conv(&p, arena, c, cat + (size_t)(j - 1) * W * p.n[d], p.n[d], s, d);
        }
        conv(&p, arena, &net->fuse[d - 1], hd[d], p.n[d], cat, d);
    }
    (void)up;
    conv(&p, arena, &net->head, logits, p.n[1], hd[1], 1);
}
