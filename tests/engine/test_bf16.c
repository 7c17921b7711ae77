/* The bf16 path of the Winograd GEMMs against references: the rounding
 * (round to nearest even), the in-place B panel conversion against it,
 * the AVX512-BF16 micro-kernel against double products with a tolerance
 * derived from bf16 rounding (and exactly on bf16-representable integers,
 * which catches any pairing or layout slip), and whole Winograd bands in
 * bf16 against the fp32 ones.  Exit 77 (skip) where the CPU lacks
 * AVX512-BF16. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness.h"
#include "model/cpu.h"
#include "model/gemm.h"
#include "model/kernels.h"

#define MR SEGD_GEMM_MR
#define NR SEGD_GEMM_NR_MAX

static uint64_t rs = 0x9e3779b97f4a7c15ull;

static double urand(void) /* uniform [0, 1) */
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (rs >> 11) / 9007199254740992.0;
}

static float frand(void) /* uniform [-1, 1), with a spread of magnitudes */
{
    return (float)((urand() * 2.0 - 1.0) * ldexp(1.0, -(int)(urand() * 6)));
}

static void *alloc64(size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    TEST_REQUIRE(p);
    return p;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_round(void)
{
    TEST_EQ_INT(segd_gemm_bf16_round(1.0f), 0x3f80);
    TEST_EQ_INT(segd_gemm_bf16_round(-2.0f), 0xc000);
    TEST_EQ_INT(segd_gemm_bf16_round(bits_float(0x3f808000u)), 0x3f80); /* tie: to even */
    TEST_EQ_INT(segd_gemm_bf16_round(bits_float(0x3f818000u)), 0x3f82); /* tie: to even */
    TEST_EQ_INT(segd_gemm_bf16_round(bits_float(0x3f808001u)), 0x3f81); /* above the tie */
    TEST_EQ_INT(segd_gemm_bf16_round(bits_float(0x7f800000u)), 0x7f80); /* inf */
    TEST_EQ_INT(segd_gemm_bf16_round(bits_float(0x7f7fffffu)), 0x7f80); /* overflow to inf */
    uint16_t nan = segd_gemm_bf16_round(bits_float(0x7f800001u));
    TEST_CHECK((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0); /* still a NaN */
}

/* The in-place conversion of a (k, NR) panel against segd_gemm_bf16_round. */
static void test_pack_b(int k)
{
    int kh = (k + 1) / 2;
    float *panel = alloc64(sizeof(float) * k * NR), *orig = malloc(sizeof(float) * k * NR);
    TEST_REQUIRE(orig);
    for (int i = 0; i < k * NR; i++)
        panel[i] = orig[i] = frand() * 100.0f;
    segd_gemm_bf16_pack_b(panel, k);
    const uint16_t *b = (const uint16_t *)(const void *)panel;
    int bad = 0;
    for (int p = 0; p < kh; p++)
        for (int l = 0; l < NR; l++)
            for (int j = 0; j < 2; j++) {
                int kk = 2 * p + j;
                uint16_t want = kk < k ? segd_gemm_bf16_round(orig[kk * NR + l]) : 0;
                bad += b[((size_t)p * NR + l) * 2 + j] != want;
            }
    if (bad)
        fprintf(stderr, "pack_b k=%d: %d elements differ from round-to-nearest-even\n", k, bad);
    TEST_EQ_INT(bad, 0);
    free(panel);
    free(orig);
}

/* One micro-kernel call on A (MR, k) and B (k, NR) against double sums of
 * the fp32 inputs.  Each operand rounded to bf16 is within u = 2^-8 of
 * itself (relative), so each product within 2u + u^2; the products of
 * bf16 values are exact in fp32 and VDPBF16PS sums them in fp32, at most
 * k + 1 roundings of 2^-24 each: |C - ref| <= (2u + u^2 + (k + 1) 2^-24
 * (1 + 2u)) sum |a||b|.  ints: small integers, exact in bf16, whose sums
 * fp32 holds exactly: C must equal ref. */
static void test_kernel(int k, int ints)
{
    float *a = malloc(sizeof(float) * MR * k), *ap = alloc64(sizeof(float) * MR * k);
    float *bp = alloc64(sizeof(float) * k * NR), *b = malloc(sizeof(float) * k * NR);
    uint16_t *ab = alloc64(sizeof(uint16_t) * segd_gemm_bf16_a_elems(1, k));
    size_t ldc = NR + 5;
    float *c = malloc(sizeof(float) * MR * ldc);
    TEST_REQUIRE(a && b && c);
    for (int i = 0; i < MR * k; i++)
        a[i] = ints ? (float)((int)(urand() * 17) - 8) : frand();
    for (int i = 0; i < k * NR; i++)
        b[i] = bp[i] = ints ? (float)((int)(urand() * 17) - 8) : frand();
    for (int i = 0; i < MR * (int)ldc; i++)
        c[i] = NAN;
    segd_gemm_pack_a(ap, a, MR, k);
    segd_gemm_bf16_pack_a(ab, ap, 1, k);
    segd_gemm_bf16_pack_b(bp, k);
    segd_gemm_micro_bf16(k, ab, (const uint16_t *)(const void *)bp, c, ldc);
    const double u = ldexp(1.0, -8), rel = 2 * u + u * u + (k + 1) * ldexp(1.0, -24) * (1 + 2 * u);
    double worst = 0; /* largest |C - ref| / bound */
    int bad = 0;
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) {
            double s = 0, mass = 0;
            for (int kk = 0; kk < k; kk++) {
                s += (double)a[i * k + kk] * b[kk * NR + j];
                mass += fabs((double)a[i * k + kk] * b[kk * NR + j]);
            }
            double d = fabs(c[i * ldc + j] - s), bound = ints ? 0 : rel * mass;
            if (!(d <= bound))
                bad++;
            if (bound > 0 && d / bound > worst)
                worst = d / bound;
        }
    fprintf(stderr, "bf16 kernel k=%d%s: %d of %d outside the bound, worst |err|/bound %.3f\n", k,
            ints ? " (integers: exact)" : "", bad, MR * NR, worst);
    TEST_EQ_INT(bad, 0);
    free(a), free(ap), free(bp), free(b), free(ab), free(c);
}

/* A Winograd band in bf16 against fp32 bands (AVX-512 level).
 * exact = 1: inputs are integers in [-2, 2], so every transformed input V
 * (|V| <= 200) is an integer bf16 holds exactly, and the only rounding
 * left is U's: the reference is the fp32 band on U rounded to bf16 (as
 * floats), whose products are then exact in fp32 too; only the order of
 * the fp32 sums differs, so the outputs agree to 2^-14 of the largest.
 * Any misplaced pair, panel, pad or tile block shows as errors of the
 * outputs' own size.
 * exact = 0: random inputs, against the fp32 band on the fp32 weights:
 * the RMS difference within 2^-4 of the RMS output.  Winograd F(4x4, 3x3)
 * amplifies the bf16 rounding of U and V (u = 2^-8) through its
 * transforms (entries up to 5 in BT, 8 in AT): a numpy model of one tile
 * gives RMS errors of about 2 % of the RMS output (2^-5.6), and a few
 * outputs off by 10 % of it, so only the RMS is bounded. */
static void test_band(int cin, int cout, int h, int w, int rows, int exact)
{
    size_t cs = (size_t)h * w;
    float *inp = malloc(sizeof(float) * cin * cs), *wt = malloc(sizeof(float) * cout * cin * 9),
          *bias = malloc(sizeof(float) * cout), *ref = malloc(sizeof(float) * cout * cs),
          *out = malloc(sizeof(float) * cout * cs);
    TEST_REQUIRE(inp && wt && bias && ref && out);
    for (size_t i = 0; i < cin * cs; i++)
        inp[i] = exact ? (float)((int)(urand() * 5) - 2) : frand();
    for (int i = 0; i < cout * cin * 9; i++)
        wt[i] = frand();
    for (int i = 0; i < cout; i++)
        bias[i] = frand();
    size_t nu = segd_wino_weights_floats(cin, cout);
    float *u = alloc64(sizeof(float) * nu);
    uint16_t *ub = alloc64(sizeof(uint16_t) * segd_wino_weights_bf16_elems(cin, cout));
    size_t sf = segd_wino_band_floats(cin, cout, rows, w);
    float *scr = alloc64(sizeof(float) * sf);
    segd_wino_weights(u, wt, cin, cout);
    segd_wino_weights_bf16(ub, u, cin, cout);
    if (exact) /* the reference on the weights as bf16 has them */
        for (size_t i = 0; i < nu; i++)
            u[i] = bits_float((uint32_t)segd_gemm_bf16_round(u[i]) << 16);
    int ty = (h + 3) / 4;
    for (int t0 = 0; t0 < ty; t0 += rows) {
        int t1 = t0 + rows < ty ? t0 + rows : ty;
        int r0 = 4 * t0 - 1 > 0 ? 4 * t0 - 1 : 0, r1 = 4 * t1 + 1 < h ? 4 * t1 + 1 : h;
        segd_wino_band(ref, cs, inp + (size_t)r0 * w, cs, r0, r1, h, w, t0, t1, u, bias, cin,
                       cout, 0, (int)cout, 0, scr, SEGD_ISA_AVX512);
        segd_wino_band_bf16(out, cs, inp + (size_t)r0 * w, cs, r0, r1, h, w, t0, t1, ub, bias,
                            cin, cout, 0, (int)cout, 0, scr);
    }
    double ss = 0, sd = 0, maxd = 0, maxr = 0;
    for (size_t i = 0; i < cout * cs; i++) {
        double d = fabs((double)ref[i] - out[i]);
        ss += (double)ref[i] * ref[i];
        sd += d * d;
        maxd = d > maxd || d != d ? d : maxd;
        maxr = fabs(ref[i]) > maxr ? fabs(ref[i]) : maxr;
    }
    double rms = sqrt(ss / (cout * cs)), rmsd = sqrt(sd / (cout * cs));
    fprintf(stderr, "bf16 band %dx%d c%d->%d rows %d %s: max |diff| %.3g (largest output %.3g), "
            "RMS diff %.3g = %.2f%% of RMS output\n", h, w, cin, cout, rows,
            exact ? "integer inputs, vs fp32 on bf16 U" : "random, vs fp32", maxd, maxr, rmsd,
            100 * rmsd / rms);
    if (exact)
        TEST_CHECK(maxd <= ldexp(maxr, -14));
    else
        TEST_CHECK(rmsd <= rms / 16);
    free(inp), free(wt), free(bias), free(ref), free(out), free(u), free(ub), free(scr);
}

int main(void)
{
    if (!segd_cpu_has_avx512_bf16() || !segd_gemm_micro_bf16 ||
        segd_cpu_isa(0, 0) < SEGD_ISA_AVX512) {
        fprintf(stderr, "SKIP: this CPU (or build) has no AVX512-BF16: the bf16 path cannot "
                        "run here\n");
        return 77;
    }
    test_round();
    int ks[] = {1, 2, 3, 16, 17, 64, 129, 256, 1023};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        test_pack_b(ks[i]);
        test_kernel(ks[i], 0);
        test_kernel(ks[i], 1);
    }
    for (int exact = 1; exact >= 0; exact--) {
        test_band(1, 3, 9, 13, 1, exact);
        test_band(5, 8, 20, 37, 2, exact);
        test_band(17, 6, 33, 70, 100, exact);
        test_band(16, 16, 37, 150, 3, exact);
        test_band(64, 32, 24, 64, 2, exact);
        test_band(33, 5, 16, 200, 4, exact);
    }
    return test_report("test_bf16");
}
