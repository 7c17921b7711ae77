/* The bf16 micro-kernel of the Winograd GEMMs and the in-place conversion
 * of their fp32 B panels into bf16 pairs, apart from gemm.c so that only
 * these functions are built for AVX512-BF16 (target attributes, as in
 * gemm_avx512.c): nothing else in the library may come out with
 * instructions a CPU without them would fault on.  Handed out through
 * segd_gemm_micro_bf16 / segd_gemm_bf16_pack_b once
 * segd_cpu_has_avx512_bf16() said yes. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/gemm.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MR SEGD_GEMM_MR
#define NR SEGD_GEMM_NR_MAX

/* C[MR][NR] (row stride ldc) = A (ceil(K/2), MR, 2) x B (ceil(K/2), NR, 2),
 * both bf16 pairs along K: 12 ZMM fp32 accumulators (4 rows x 3 vectors of
 * 16 columns); per pair of k, 3 B vectors of 32 bf16 (16 columns x 2 k)
 * and, per row, its 32-bit A pair broadcast, so that each VDPBF16PS adds
 * a[k] b[k] + a[k+1] b[k+1] to 16 columns at once. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
kern_bf16(int K, const uint16_t *A, const uint16_t *B, float *C, size_t ldc)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00,
           c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    int kh = (K + 1) / 2;
    for (int p = 0; p < kh; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(B), b1 = (__m512bh)_mm512_loadu_si512(B + 32),
                 b2 = (__m512bh)_mm512_loadu_si512(B + 64);
        uint32_t a4[MR]; /* row i's pair (k, k+1) */
        memcpy(a4, A, sizeof a4);
        __m512bh a = (__m512bh)_mm512_set1_epi32((int)a4[0]);
        c00 = _mm512_dpbf16_ps(c00, a, b0);
        c01 = _mm512_dpbf16_ps(c01, a, b1);
        c02 = _mm512_dpbf16_ps(c02, a, b2);
        a = (__m512bh)_mm512_set1_epi32((int)a4[1]);
        c10 = _mm512_dpbf16_ps(c10, a, b0);
        c11 = _mm512_dpbf16_ps(c11, a, b1);
        c12 = _mm512_dpbf16_ps(c12, a, b2);
        a = (__m512bh)_mm512_set1_epi32((int)a4[2]);
        c20 = _mm512_dpbf16_ps(c20, a, b0);
        c21 = _mm512_dpbf16_ps(c21, a, b1);
        c22 = _mm512_dpbf16_ps(c22, a, b2);
        a = (__m512bh)_mm512_set1_epi32((int)a4[3]);
        c30 = _mm512_dpbf16_ps(c30, a, b0);
        c31 = _mm512_dpbf16_ps(c31, a, b1);
        c32 = _mm512_dpbf16_ps(c32, a, b2);
        A += MR * 2;
        B += NR * 2;
    }
    _mm512_storeu_ps(C, c00);
    _mm512_storeu_ps(C + 16, c01);
    _mm512_storeu_ps(C + 32, c02);
    C += ldc;
    _mm512_storeu_ps(C, c10);
    _mm512_storeu_ps(C + 16, c11);
    _mm512_storeu_ps(C + 32, c12);
    C += ldc;
    _mm512_storeu_ps(C, c20);
    _mm512_storeu_ps(C + 16, c21);
    _mm512_storeu_ps(C + 32, c22);
    C += ldc;
    _mm512_storeu_ps(C, c30);
    _mm512_storeu_ps(C + 16, c31);
    _mm512_storeu_ps(C + 32, c32);
}

/* fp32 panel (K, NR) -> bf16 pairs (ceil(K/2), NR, 2) in place (any alignment).  Pair p
 * reads rows 2p and 2p+1 and writes the bytes of row p: for p >= 1 those
 * rows were read by an earlier pair, and pair 0 loads both its rows before
 * it stores, so nothing is overwritten before it is read.  VCVTNE2PS2BF16
 * rounds to nearest even (denormals flushed to zero, as VDPBF16PS would
 * treat them anyway); a permute interleaves the two rows into pairs. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void pack_b_bf16(float *panel,
                                                                              int K)
{
    /* out[2l] = row 2p lane l (cvt's low half), out[2l+1] = row 2p+1 lane l */
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                         16, 0);
    int kh = (K + 1) / 2;
    for (int p = 0; p < kh; p++) {
        const float *r0 = panel + (size_t)2 * p * NR, *r1 = r0 + NR;
        int odd = 2 * p + 1 >= K; /* the pad row: zeros */
        __m512 x0 = _mm512_loadu_ps(r0), x1 = _mm512_loadu_ps(r0 + 16), x2 = _mm512_loadu_ps(r0 + 32);
        __m512 y0 = odd ? _mm512_setzero_ps() : _mm512_loadu_ps(r1),
               y1 = odd ? _mm512_setzero_ps() : _mm512_loadu_ps(r1 + 16),
               y2 = odd ? _mm512_setzero_ps() : _mm512_loadu_ps(r1 + 32);
        __m512i o0 = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(y0, x0)),
                o1 = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(y1, x1)),
                o2 = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(y2, x2));
        float *dst = panel + (size_t)p * NR; /* NR pairs of bf16 = NR floats' bytes */
        _mm512_storeu_si512(dst, o0);
        _mm512_storeu_si512(dst + 16, o1);
        _mm512_storeu_si512(dst + 32, o2);
    }
}

const segd_gemm_bf16_fn segd_gemm_micro_bf16 = kern_bf16;
const segd_gemm_bf16_pack_fn segd_gemm_bf16_pack_b = pack_b_bf16;
#else
const segd_gemm_bf16_fn segd_gemm_micro_bf16 = NULL;
const segd_gemm_bf16_pack_fn segd_gemm_bf16_pack_b = NULL;
#endif
