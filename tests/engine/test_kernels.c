/* Kernels against naive loops (double accumulation) on small random shapes,
 * odd sizes included: conv3x3 (tiled, into a channel slice), conv1x1,
 * maxpool ceil_mode, bilinear resize; the Winograd bands and the packed GEMM
 * on every native instruction set the CPU has (SEGD_ISA_*), each also
 * against the portable one. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "model/cpu.h"
#include "model/kernels.h"

static uint64_t rs = 88172645463325252ull;

static float frand(void) /* uniform [-1, 1) */
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 40) / (double)(1 << 24) * 2.0 - 1.0);
}

static float *rand_buf(size_t n)
{
    float *p = malloc(n * sizeof *p);
    TEST_REQUIRE(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static void test_conv3x3(int cin, int cout, int h, int w, int relu, size_t col_floats)
{
    size_t cs = (size_t)h * w + 7; /* slice of a wider buffer */
    float *inp = rand_buf((size_t)cin * h * w), *wt = rand_buf((size_t)cout * cin * 9),
          *b = rand_buf((size_t)cout), *out = rand_buf(cs * cout), *col = malloc(col_floats * 4);
    TEST_REQUIRE(col);
    float guard = out[h * w]; /* padding between channel planes must stay untouched */
    segd_conv3x3(out, cs, inp, wt, b, cin, cout, h, w, relu, col, col_floats);
    double maxd = 0;
    for (int o = 0; o < cout; o++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double s = b[o];
                for (int c = 0; c < cin; c++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int sy = y + ky - 1, sx = x + kx - 1;
                            if (sy < 0 || sy >= h || sx < 0 || sx >= w)
                                continue;
                            s += (double)wt[((size_t)o * cin + c) * 9 + ky * 3 + kx] *
                                 inp[((size_t)c * h + sy) * w + sx];
                        }
                if (relu && s < 0)
                    s = 0;
                double d = fabs(s - out[o * cs + (size_t)y * w + x]);
                maxd = d > maxd ? d : maxd;
            }
    if (maxd > 1e-4)
        fprintf(stderr, "conv3x3 %dx%d c%d->%d: max diff %g\n", h, w, cin, cout, maxd);
    TEST_CHECK(maxd <= 1e-4);
    TEST_CHECK(out[h * w] == guard);
    free(inp), free(wt), free(b), free(out), free(col);
}

/* Winograd band conv against the im2col conv, in bands of `rows` tile rows,
 * reading input through a row window as the graph code does; blas: the
 * OpenBLAS GEMM backend (row-major weights). */
static void test_wino(int cin, int cout, int h, int w, int relu, int rows, int isa, int blas)
{
    size_t cs = (size_t)h * w + 5;
    float *inp = rand_buf((size_t)cin * h * w), *wt = rand_buf((size_t)cout * cin * 9),
          *b = rand_buf((size_t)cout), *out = rand_buf(cs * cout), *ref = rand_buf(cs * cout);
    float *u = aligned_alloc(64, (segd_wino_weights_floats(cin, cout) * 4 + 63) / 64 * 64);
    float *ur = malloc((size_t)36 * cout * cin * 4);
    int ty = (h + 3) / 4;
    size_t sf = segd_wino_band_floats(cin, cout, rows, w);
    float *scr = aligned_alloc(64, (sf * 4 + 63) / 64 * 64);
    size_t colf = segd_conv3x3_min_col(cin, w);
    float *col = malloc(colf * 4);
    TEST_REQUIRE(u && ur && scr && col);
    segd_wino_weights(u, wt, cin, cout);
    segd_wino_weights_rows(ur, wt, cin, cout);
    segd_conv3x3(ref, cs, inp, wt, b, cin, cout, h, w, relu, col, colf);
    for (int t0 = 0; t0 < ty; t0 += rows) {
        int t1 = t0 + rows < ty ? t0 + rows : ty;
        int r0 = 4 * t0 - 1 > 0 ? 4 * t0 - 1 : 0, r1 = 4 * t1 + 1 < h ? 4 * t1 + 1 : h;
        /* output channels in two parts where cout allows (run_conv's
         * split of the deep levels), the second starting at a multiple of MR */
        int part = cout >= 2 * SEGD_WINO_MR ? (cout / 2 + SEGD_WINO_MR - 1) / SEGD_WINO_MR * SEGD_WINO_MR
                                           : cout;
        for (int oc0 = 0; oc0 < cout; oc0 += part) {
            int oc1 = oc0 + part < cout ? oc0 + part : cout;
            if (blas)
                segd_wino_band_blas(out, cs, inp + (size_t)r0 * w, (size_t)h * w, r0, r1, h, w,
                                    t0, t1, ur, b, cin, cout, oc0, oc1, relu, scr, isa);
            else
                segd_wino_band(out, cs, inp + (size_t)r0 * w, (size_t)h * w, r0, r1, h, w, t0,
                               t1, u, b, cin, cout, oc0, oc1, relu, scr, isa);
        }
    }
    double maxd = 0;
    for (int o = 0; o < cout; o++)
        for (size_t i = 0; i < (size_t)h * w; i++) {
            double d = fabs((double)ref[o * cs + i] - out[o * cs + i]);
            maxd = d > maxd ? d : maxd;
        }
    if (maxd > 1e-4)
        fprintf(stderr, "wino %dx%d c%d->%d rows %d isa %d blas %d: max diff %g\n", h, w, cin,
                cout, rows, isa, blas, maxd);
    TEST_CHECK(maxd <= 1e-4);
    free(inp), free(wt), free(b), free(out), free(ref), free(u), free(ur), free(scr), free(col);
}

/* segd_gemm_packed (the resampled branches' GEMM) on columns [n0, n1) of
 * C (m, n) against double loops; the columns outside are left alone. */
static void test_gemm_packed(int m, int k, int n, int n0, int n1, int isa)
{
    float *a = rand_buf((size_t)m * k), *b = rand_buf((size_t)k * n),
          *c = rand_buf((size_t)m * n), *c0 = malloc(sizeof(float) * m * n);
    float *ap = aligned_alloc(64, (segd_gemm_packed_floats(m, k) * 4 + 63) / 64 * 64);
    size_t tf = (size_t)SEGD_GEMM_NR_MAX * (k + SEGD_GEMM_MR);
    float *tmp = aligned_alloc(64, (tf * 4 + 63) / 64 * 64);
    TEST_REQUIRE(c0 && ap && tmp);
    memcpy(c0, c, sizeof(float) * m * n);
    segd_gemm_pack_a(ap, a, m, k);
    segd_gemm_packed(c, (size_t)n, ap, m, k, b, (size_t)n, n0, n1, tmp, isa);
    double maxd = 0;
    int outside = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            if (j < n0 || j >= n1) {
                outside += c[i * n + j] != c0[i * n + j];
                continue;
            }
            double s = 0;
            for (int kk = 0; kk < k; kk++)
                s += (double)a[i * k + kk] * b[(size_t)kk * n + j];
            double d = fabs(s - c[i * n + j]);
            maxd = d > maxd ? d : maxd;
        }
    if (maxd > 1e-4 || outside)
        fprintf(stderr, "gemm_packed %dx%dx%d [%d, %d) isa %d: max diff %g, %d written outside\n",
                m, k, n, n0, n1, isa, maxd, outside);
    TEST_CHECK(maxd <= 1e-4);
    TEST_EQ_INT(outside, 0);
    free(a), free(b), free(c), free(c0), free(ap), free(tmp);
}

static void test_conv1x1(int cin, int cout, int n, int blas)
{
    float *inp = rand_buf((size_t)cin * n), *wt = rand_buf((size_t)cout * cin),
          *b = rand_buf(cout), *out = rand_buf((size_t)cout * n);
    if (blas)
        segd_conv1x1_blas(out, inp, wt, b, cin, cout, n);
    else
        segd_conv1x1(out, inp, wt, b, cin, cout, n);
    double maxd = 0;
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < n; i++) {
            double s = b[o];
            for (int c = 0; c < cin; c++)
                s += (double)wt[o * cin + c] * inp[(size_t)c * n + i];
            double d = fabs(s - out[(size_t)o * n + i]);
            maxd = d > maxd ? d : maxd;
        }
    TEST_CHECK(maxd <= 1e-4);
    free(inp), free(wt), free(b), free(out);
}

static void test_maxpool(int c, int h, int w, int k)
{
    int oh = (h + k - 1) / k, ow = (w + k - 1) / k;
    float *inp = rand_buf((size_t)c * h * w), *out = rand_buf((size_t)c * oh * ow);
    segd_maxpool(out, inp, c, h, w, k);
    int bad = 0;
    for (int ch = 0; ch < c; ch++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float m = -INFINITY;
                for (int y = oy * k; y < oy * k + k && y < h; y++)
                    for (int x = ox * k; x < ox * k + k && x < w; x++)
                        m = fmaxf(m, inp[((size_t)ch * h + y) * w + x]);
                bad += m != out[((size_t)ch * oh + oy) * ow + ox];
            }
    if (bad)
        fprintf(stderr, "maxpool %dx%d k%d: %d wrong\n", h, w, k, bad);
    TEST_EQ_INT(bad, 0);
    free(inp), free(out);
}

/* PyTorch's upsample_bilinear2d (align_corners=False): source coordinates in
 * float as PyTorch computes them, interpolation in double. */
static double ref_coord(int in, int out, int i, int *i0, int *i1)
{
    float r = (float)in / (float)out * ((float)i + 0.5f) - 0.5f;
    if (r < 0)
        r = 0;
    *i0 = (int)r;
    *i1 = *i0 < in - 1 ? *i0 + 1 : *i0;
    return (double)(r - (float)*i0);
}

static void test_resize(int c, int ih, int iw, int oh, int ow)
{
    float *inp = rand_buf((size_t)c * ih * iw), *out = rand_buf((size_t)c * oh * ow);
    float *tmp = malloc(segd_resize_tmp_floats(ow) * sizeof(float)),
          *fast = rand_buf((size_t)c * oh * ow);
    TEST_REQUIRE(tmp);
    segd_resize_bilinear(out, inp, c, ih, iw, oh, ow, NULL);
    segd_resize_bilinear(fast, inp, c, ih, iw, oh, ow, tmp);
    TEST_CHECK(memcmp(out, fast, sizeof(float) * (size_t)c * oh * ow) == 0);
    /* a band of rows equals the same rows of the whole */
    if (oh > 2) {
        segd_resize_bilinear_rows(fast, inp, c, ih, iw, oh, ow, 1, oh - 1, tmp);
        int same = 1;
        for (int ch = 0; ch < c; ch++)
            same &= memcmp(fast + (size_t)ch * (oh - 2) * ow, out + ((size_t)ch * oh + 1) * ow,
                           sizeof(float) * (size_t)(oh - 2) * ow) == 0;
        TEST_CHECK(same);
    }
    free(tmp);
    free(fast);
    double maxd = 0;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                int y0, y1, x0, x1;
                double ly = ref_coord(ih, oh, y, &y0, &y1), lx = ref_coord(iw, ow, x, &x0, &x1);
                const float *p = inp + (size_t)ch * ih * iw;
                double v = (1 - ly) * ((1 - lx) * p[y0 * iw + x0] + lx * p[y0 * iw + x1]) +
                           ly * ((1 - lx) * p[y1 * iw + x0] + lx * p[y1 * iw + x1]);
                double d = fabs(v - out[((size_t)ch * oh + y) * ow + x]);
                maxd = d > maxd ? d : maxd;
            }
    if (maxd > 1e-5)
        fprintf(stderr, "resize %dx%d -> %dx%d: max diff %g\n", ih, iw, oh, ow, maxd);
    TEST_CHECK(maxd <= 1e-5);
    free(inp), free(out);
}

int main(void)
{
    static const int sizes[][2] = {{1, 1}, {1, 7}, {5, 1}, {3, 3}, {7, 5}, {13, 11}, {16, 16}, {37, 53}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int h = sizes[s][0], w = sizes[s][1];
        test_conv3x3(1, 4, h, w, 1, segd_conv3x3_min_col(1, w));       /* one row per tile */
        test_conv3x3(3, 5, h, w, 0, segd_conv3x3_min_col(3, w) * 2 + 1);
        test_conv3x3(8, 3, h, w, 1, (size_t)8 * 9 * h * w);             /* one tile */
        test_conv3x3(20, 20, h, w, 1, segd_conv3x3_min_col(20, w) * 3);
        test_conv1x1(6, 3, h * w, 0);
        test_conv1x1(6, 3, h * w, 1);
        for (int isa = SEGD_ISA_PORTABLE; isa <= segd_cpu_isa(0, 0); isa++)
            for (int blas = 0; blas <= 1; blas++) {
                test_wino(1, 3, h, w, 1, 1, isa, blas); /* pooled single-channel input */
                test_wino(2, 3, h, w, 1, 1, isa, blas);
                test_wino(5, 8, h, w, 0, 2, isa, blas);
                test_wino(17, 6, h, w, 1, 100, isa, blas);
            }
        for (int k = 2; k <= 16; k *= 2)
            test_maxpool(3, h, w, k);
        test_maxpool(2, h, w, 3);
        test_resize(2, h, w, 2 * h, 2 * w);
        test_resize(2, h, w, (h + 1) / 2, (w + 1) / 2);
        test_resize(2, h, w, 45, 39);
        test_resize(1, h, w, h, w);
    }
    test_resize(1, 266, 266, 256, 256);
    test_maxpool(2, 5, 2100, 4);    /* several column chunks */
    test_maxpool(2, 5, 2100, 3);
    test_maxpool(1, 3, 2100, 1500); /* window wider than a chunk */
    for (int f = 2; f <= 16; f *= 2) /* power-of-two upsampling fast paths */
        for (int n = 2; n <= 9; n += 7)
            test_resize(3, n, n + 1, f * n, f * (n + 1));
    test_resize(3, 256, 256, 310, 360);
    test_conv3x3(64, 16, 32, 32, 1, segd_conv3x3_min_col(64, 32) * 5);
    for (int isa = SEGD_ISA_PORTABLE; isa <= segd_cpu_isa(0, 0); isa++) {
        /* rows of several groups of 16 tiles, a partial last group, bands
         * of several tile rows: the AVX-512 transform's cases */
        for (int blas = 0; blas <= 1; blas++) {
            test_wino(3, 5, 9, 70, 1, 2, isa, blas);
            test_wino(16, 16, 37, 150, 1, 3, isa, blas);
            test_wino(7, 9, 21, 257, 0, 100, isa, blas);
        }
        test_gemm_packed(1, 1, 1, 0, 1, isa);
        test_gemm_packed(7, 13, 100, 0, 100, isa);
        test_gemm_packed(9, 5, 130, 48, 97, isa); /* a chunk, as the team splits it */
        test_gemm_packed(36, 64, 50, 0, 48, isa);
        fprintf(stderr, "winograd bands and packed GEMM tested with %s\n",
                segd_gemm_isa_name(isa));
    }
    return test_report("test_kernels");
}
