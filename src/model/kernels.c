/* Reference-exact kernels: conv3x3 as im2col + OpenBLAS sgemm over tiles of
 * output rows, max pooling, bilinear resampling with PyTorch's rounding. */
#include <assert.h>
#include <math.h>
#include <string.h>

#include <cblas.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "model/kernels.h"
#include "model/vec.h"

/* max as PyTorch's max_pool2d: a NaN anywhere wins. */
#define MAXN(m, v) (((v) > (m) || (v) != (v)) ? (v) : (m))

size_t segd_conv3x3_min_col(int cin, int w)
{
    return (size_t)cin * 9 * (size_t)w;
}

/* im2col of output rows [r0, r1): col (cin*9, (r1-r0)*w). */
static void im2col3x3(float *col, const float *inp, int cin, int h, int w, int r0, int r1)
{
    size_t n = (size_t)(r1 - r0) * w;
    for (int c = 0; c < cin; c++) {
        const float *src = inp + (size_t)c * h * w;
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                float *dst = col + ((size_t)c * 9 + ky * 3 + kx) * n;
                for (int y = r0; y < r1; y++) {
                    int sy = y + ky - 1;
                    float *d = dst + (size_t)(y - r0) * w;
                    if (sy < 0 || sy >= h) {
                        memset(d, 0, sizeof(float) * w);
                        continue;
                    }
                    const float *s = src + (size_t)sy * w;
                    int dx = kx - 1; /* d[x] = s[x + dx] */
                    int x0 = dx < 0 ? 1 : 0, x1 = dx > 0 ? w - 1 : w;
                    if (dx < 0)
                        d[0] = 0.0f;
                    if (dx > 0)
                        d[w - 1] = 0.0f;
                    if (x1 > x0)
                        memcpy(d + x0, s + x0 + dx, sizeof(float) * (x1 - x0));
                }
            }
    }
}

void segd_conv3x3(float *out, size_t out_cs, const float *inp, const float *wt,
                  const float *bias, int cin, int cout, int h, int w, int relu,
                  float *col, size_t col_floats)
{
    size_t row_floats = (size_t)cin * 9 * w;
    assert(col_floats >= row_floats && out_cs >= (size_t)h * w);
    int tile = (int)(col_floats / row_floats);
    if (tile > h)
        tile = h;
    int K = cin * 9;
    for (int r0 = 0; r0 < h; r0 += tile) {
        int r1 = r0 + tile < h ? r0 + tile : h;
        int n = (r1 - r0) * w;
        im2col3x3(col, inp, cin, h, w, r0, r1);
        float *o = out + (size_t)r0 * w;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, n, K, 1.0f, wt, K, col, n,
                    0.0f, o, (int)out_cs);
        for (int co = 0; co < cout; co++)
            segd_bias_act(o + (size_t)co * out_cs, n, bias[co], relu);
    }
}

/* static: clang only multiversions a function whose first declaration
 * carries target_clones, which a public header cannot */
VEC_CLONES static void bias_act(float *restrict x, int n, float b, int relu)
{
    if (relu)
        for (int t = 0; t < n; t++) {
            float v = x[t] + b;
            x[t] = v > 0.0f ? v : 0.0f;
        }
    else
        for (int t = 0; t < n; t++)
            x[t] += b;
}

void segd_bias_act(float *x, int n, float b, int relu)
{
    bias_act(x, n, b, relu);
}

void segd_conv1x1(float *out, const float *inp, const float *wt, const float *bias,
                  int cin, int cout, int n)
{
    for (int co = 0; co < cout; co++) {
        float *o = out + (size_t)co * n;
        for (int i = 0; i < n; i++)
            o[i] = 0.0f;
        for (int c = 0; c < cin; c++) {
            float wv = wt[(size_t)co * cin + c];
            const float *x = inp + (size_t)c * n;
            for (int i = 0; i < n; i++)
                o[i] += wv * x[i];
        }
        for (int i = 0; i < n; i++)
            o[i] += bias[co];
    }
}

void segd_conv3x3_c1(float *out, size_t out_cs, const float *inp, const float *wt,
                     const float *bias, int cout, int h, int w, int relu)
{
    for (int co = 0; co < cout; co++) {
        const float *k = wt + (size_t)co * 9;
        float *o = out + (size_t)co * out_cs;
        for (int y = 0; y < h; y++) {
            float *orow = o + (size_t)y * w;
            for (int x = 0; x < w; x++)
                orow[x] = bias[co];
            for (int ky = 0; ky < 3; ky++) {
                int sy = y + ky - 1;
                if (sy < 0 || sy >= h)
                    continue;
                const float *r = inp + (size_t)sy * w;
                float k0 = k[ky * 3], k1 = k[ky * 3 + 1], k2 = k[ky * 3 + 2];
                /* interior columns vectorise; the two borders are done apart */
                for (int x = 1; x < w - 1; x++)
                    orow[x] += k0 * r[x - 1] + k1 * r[x] + k2 * r[x + 1];
                if (w == 1) {
                    orow[0] += k1 * r[0];
                } else {
                    orow[0] += k1 * r[0] + k2 * r[1];
                    orow[w - 1] += k0 * r[w - 2] + k1 * r[w - 1];
                }
            }
            if (relu)
                for (int x = 0; x < w; x++)
                    orow[x] = orow[x] > 0.0f ? orow[x] : 0.0f;
        }
    }
}

/* One output row of 2x2 pooling from input rows a, b (b may equal a). */
VEC_CLONES static void pool2_row(float *restrict d, const float *restrict a,
                                 const float *restrict b, int w, int ow)
{
    int full = w / 2;
    for (int x = 0; x < full; x++) {
        float m = a[2 * x];
        m = MAXN(m, a[2 * x + 1]);
        m = MAXN(m, b[2 * x]);
        m = MAXN(m, b[2 * x + 1]);
        d[x] = m;
    }
    if (ow > full) { /* odd width: last window is one column wide */
        float m = a[w - 1];
        d[full] = MAXN(m, b[w - 1]);
    }
}

#define POOL_CHUNK 1024 /* columns per column-max pass */

/* t[x] = max over rows 0..rows-1 of src[row * w + x], x < n. */
VEC_CLONES static void colmax(float *restrict t, const float *restrict src, int w, int rows, int n)
{
    memcpy(t, src, sizeof(float) * n);
    for (int y = 1; y < rows; y++) {
        const float *r = src + (size_t)y * w;
        for (int x = 0; x < n; x++)
            t[x] = MAXN(t[x], r[x]);
    }
}

void segd_maxpool_rows(float *out, const float *inp, int c, int h, int w, int k, int r0, int r1)
{
    int ow = (w + k - 1) / k, nr = r1 - r0;
    for (int ch = 0; ch < c; ch++) {
        const float *src = inp + (size_t)ch * h * w;
        float *dst = out + (size_t)ch * nr * ow;
        for (int oy = r0; oy < r1; oy++) {
            int y0 = oy * k, y1 = y0 + k < h ? y0 + k : h;
            float *d = dst + (size_t)(oy - r0) * ow;
            if (k == 2) {
                pool2_row(d, src + (size_t)y0 * w, src + (size_t)(y1 - 1) * w, w, ow);
                continue;
            }
            /* larger windows (decoder skips, k = 4..16): column-wise max of
             * the window's rows in chunks of whole windows (vectorised), then
             * each window */
            if (k > POOL_CHUNK) {
                for (int ox = 0; ox < ow; ox++) {
                    int x0 = ox * k, x1 = x0 + k < w ? x0 + k : w;
                    float m = src[(size_t)y0 * w + x0];
                    for (int y = y0; y < y1; y++)
                        for (int x = x0; x < x1; x++)
                            m = MAXN(m, src[(size_t)y * w + x]);
                    d[ox] = m;
                }
                continue;
            }
            int chunk = POOL_CHUNK / k * k;
            for (int xc = 0; xc < w; xc += chunk) {
                float t[POOL_CHUNK];
                int n = w - xc < chunk ? w - xc : chunk;
                colmax(t, src + (size_t)y0 * w + xc, w, y1 - y0, n);
                for (int ox = xc / k; ox * k < xc + n; ox++) {
                    int x0 = ox * k - xc, x1 = x0 + k < n ? x0 + k : n;
                    float m = t[x0];
                    for (int x = x0 + 1; x < x1; x++)
                        m = MAXN(m, t[x]);
                    d[ox] = m;
                }
            }
        }
    }
}

void segd_maxpool(float *out, const float *inp, int c, int h, int w, int k)
{
    segd_maxpool_rows(out, inp, c, h, w, k, 0, (h + k - 1) / k);
}

/* Source index and weight of output coordinate i, PyTorch's
 * area_pixel_compute_source_index in float. */
static inline void src_coord(float scale, int i, int in, int *i0, int *i1, float *l0, float *l1)
{
    float r = scale * ((float)i + 0.5f) - 0.5f;
    if (r < 0.0f)
        r = 0.0f;
    int a = (int)r;
    *i0 = a;
    *i1 = a < in - 1 ? a + 1 : a;
    float lam = r - (float)a;
    if (lam > 1.0f)
        lam = 1.0f;
    *l1 = lam;
    *l0 = 1.0f - lam;
}

size_t segd_resize_tmp_floats(int ow)
{
    return (size_t)6 * ow;
}

/* Vertical blend of two horizontally resampled rows. */
VEC_CLONES static void blend_row(float *restrict d, const float *restrict ta,
                                 const float *restrict tb, float h0, float h1, int n)
{
    for (int x = 0; x < n; x++)
        d[x] = ta[x] * h0 + tb[x] * h1;
}

/* One source row resampled horizontally: t[x] = r[x0]*w0 + r[x1]*w1. */
VEC_CLONES static void hrow(float *t, const float *r, const int *x0, const int *x1, const float *w0,
                 const float *w1, int ow)
{
    for (int x = 0; x < ow; x++)
        t[x] = r[x0[x]] * w0[x] + r[x1[x]] * w1[x];
}

#if defined(__x86_64__)
/* hrow for upsampling with AVX2: each block of 8 outputs reads a window of
 * at most 8 consecutive source values, picked by lane permutes (no
 * gathers); same products and sum as hrow, so identical results.  Blocks
 * whose window does not fit (row ends, downsampling) use the scalar form. */
__attribute__((target("avx2"))) static void hrow_perm(float *t, const float *r, const int *x0,
                                                      const int *x1, const float *w0,
                                                      const float *w1, int iw, int ow)
{
    int x = 0;
    for (; x + 8 <= ow; x += 8) {
        int base = x0[x];
        if (x1[x + 7] - base > 7 || base + 8 > iw) {
            for (int k = x; k < x + 8; k++)
                t[k] = r[x0[k]] * w0[k] + r[x1[k]] * w1[k];
            continue;
        }
        __m256i b = _mm256_set1_epi32(base);
        __m256i i0 = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(x0 + x)), b);
        __m256i i1 = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(x1 + x)), b);
        __m256 rv = _mm256_loadu_ps(r + base);
        __m256 a = _mm256_permutevar8x32_ps(rv, i0), c = _mm256_permutevar8x32_ps(rv, i1);
        __m256 v = _mm256_add_ps(_mm256_mul_ps(a, _mm256_loadu_ps(w0 + x)),
                                 _mm256_mul_ps(c, _mm256_loadu_ps(w1 + x)));
        _mm256_storeu_ps(t + x, v);
    }
    for (; x < ow; x++)
        t[x] = r[x0[x]] * w0[x] + r[x1[x]] * w1[x];
}
#endif


void segd_resize_bilinear_rows(float *out, const float *inp, int c, int ih, int iw, int oh,
                               int ow, int r0, int r1, float *tmp)
{
    int nr = r1 - r0;
    if (ih == oh && iw == ow) {
        for (int ch = 0; ch < c; ch++)
            memcpy(out + (size_t)ch * nr * ow, inp + ((size_t)ch * ih + r0) * iw,
                   sizeof(float) * (size_t)nr * ow);
        return;
    }
    float sy = (float)ih / (float)oh, sx = (float)iw / (float)ow;
    if (tmp) {
        /* Column tables once; each source row resampled horizontally once
         * per channel and reused by the output rows that blend it (same
         * operations in the same order as the per-pixel path below). */
        int *x0 = (int *)tmp, *x1 = x0 + ow;
        float *w0 = tmp + 2 * (size_t)ow, *w1 = w0 + ow, *ta = w1 + ow, *tb = ta + ow;
        for (int x = 0; x < ow; x++)
            src_coord(sx, x, iw, &x0[x], &x1[x], &w0[x], &w1[x]);
#if defined(__x86_64__)
        int perm = ow > iw && __builtin_cpu_supports("avx2");
#define HROW(dst, y)                                                              \
    do {                                                                          \
        if (perm)                                                                 \
            hrow_perm(dst, src + (size_t)(y) * iw, x0, x1, w0, w1, iw, ow);       \
        else                                                                      \
            hrow(dst, src + (size_t)(y) * iw, x0, x1, w0, w1, ow);                \
    } while (0)
#else
#define HROW(dst, y) hrow(dst, src + (size_t)(y) * iw, x0, x1, w0, w1, ow)
#endif
        for (int ch = 0; ch < c; ch++) {
            const float *src = inp + (size_t)ch * ih * iw;
            float *dst = out + (size_t)ch * nr * ow;
            int ya = -1, yb = -1; /* source rows held in ta, tb */
            for (int oy = r0; oy < r1; oy++) {
                int y0, y1;
                float h0, h1;
                src_coord(sy, oy, ih, &y0, &y1, &h0, &h1);
                if (y0 != ya) {
                    if (y0 == yb) { /* moved down one source row: swap */
                        float *t = ta;
                        ta = tb;
                        tb = t;
                        yb = ya;
                    } else {
                        HROW(ta, y0);
                    }
                    ya = y0;
                }
                if (y1 != yb) {
                    HROW(tb, y1);
                    yb = y1;
                }
                blend_row(dst + (size_t)(oy - r0) * ow, ta, tb, h0, h1, ow);
            }
        }
        return;
    }
    for (int ch = 0; ch < c; ch++) {
        const float *src = inp + (size_t)ch * ih * iw;
        float *dst = out + (size_t)ch * nr * ow;
        for (int oy = r0; oy < r1; oy++) {
            int y0, y1;
            float h0, h1;
            src_coord(sy, oy, ih, &y0, &y1, &h0, &h1);
            const float *ra = src + (size_t)y0 * iw, *rb = src + (size_t)y1 * iw;
            float *d = dst + (size_t)(oy - r0) * ow;
            for (int ox = 0; ox < ow; ox++) {
                int xa, xb;
                float w0, w1;
                src_coord(sx, ox, iw, &xa, &xb, &w0, &w1);
                float t0 = ra[xa] * w0 + ra[xb] * w1;
                float t1 = rb[xa] * w0 + rb[xb] * w1;
                d[ox] = t0 * h0 + t1 * h1;
            }
        }
    }
}

#undef HROW

void segd_resize_bilinear(float *out, const float *inp, int c, int ih, int iw, int oh, int ow,
                          float *tmp)
{
    segd_resize_bilinear_rows(out, inp, c, ih, iw, oh, ow, 0, oh, tmp);
}

/* d[x] += t0[x-1] + t1[x] + t2[x+1] for the interior columns. */
VEC_CLONES static void tap_row(float *restrict d, const float *restrict t0,
                               const float *restrict t1, const float *restrict t2, int w)
{
    for (int x = 1; x < w - 1; x++)
        d[x] += t0[x - 1] + t1[x] + t2[x + 1];
}

VEC_CLONES static void bias_relu_row(float *restrict d, int w, int relu)
{
    if (relu)
        for (int x = 0; x < w; x++)
            d[x] = d[x] > 0.0f ? d[x] : 0.0f;
}

void segd_tapsum3x3(float *out, size_t out_cs, const float *z, int cout, int h, int w, int r0,
                    int r1, int z_r0, int z_rows, const float *bias, int relu)
{
    size_t zs = (size_t)z_rows * w; /* one tap map */
    for (int o = 0; o < cout; o++) {
        float *op = out + (size_t)o * out_cs;
        const float *zo = z + (size_t)o * 9 * zs;
        for (int y = r0; y < r1; y++) {
            float *d = op + (size_t)y * w;
            for (int x = 0; x < w; x++)
                d[x] = bias[o];
            for (int ky = 0; ky < 3; ky++) {
                int sy = y + ky - 1;
                if (sy < 0 || sy >= h)
                    continue;
                const float *t0 = zo + (size_t)(ky * 3) * zs + (size_t)(sy - z_r0) * w;
                const float *t1 = t0 + zs, *t2 = t1 + zs;
                /* tap kx reads column x + kx - 1 */
                tap_row(d, t0, t1, t2, w);
                if (w == 1) {
                    d[0] += t1[0];
                } else {
                    d[0] += t1[0] + t2[1];
                    d[w - 1] += t0[w - 2] + t1[w - 1];
                }
            }
            bias_relu_row(d, w, relu);
        }
    }
}

void segd_sigmoid(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 1.0f / (1.0f + expf(-x[i]));
}
