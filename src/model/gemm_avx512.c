/* The AVX-512 micro-kernel of the native GEMM backend, apart from gemm.c so
 * that only this code is built for AVX-512 (through target attributes, as
 * the AVX2 kernels are: no other function of the file, nor of the library,
 * may come out with ZMM instructions that a narrower CPU would fault on).
 * segd_gemm_micro(SEGD_ISA_AVX512) hands it out once segd_cpu_has_avx512()
 * said yes. */
#include <stddef.h>

#include "model/gemm.h"

#if defined(__x86_64__)
#include <immintrin.h>

#define MR SEGD_GEMM_MR
#define NR SEGD_GEMM_NR_MAX

/* C[MR][NR] (row stride ldc) = A (K, MR) packed x B (K, NR) packed: 12 ZMM
 * accumulators (4 rows x 3 vectors of 16), the B row loaded once per k and
 * each A value broadcast once, as the AVX2 kernel does with 24 columns.
 * Each C element is the same chain of fused multiply-adds in the same
 * order as in the AVX2 kernel, so both give bit-identical products. */
__attribute__((target("avx512f,avx512dq,fma"))) static void kern_avx512(int K, const float *A,
                                                                       const float *B, float *C,
                                                                       size_t ldc)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00,
           c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    for (int k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(B), b1 = _mm512_loadu_ps(B + 16), b2 = _mm512_loadu_ps(B + 32);
        __m512 a = _mm512_set1_ps(A[0]);
        c00 = _mm512_fmadd_ps(a, b0, c00);
        c01 = _mm512_fmadd_ps(a, b1, c01);
        c02 = _mm512_fmadd_ps(a, b2, c02);
        a = _mm512_set1_ps(A[1]);
        c10 = _mm512_fmadd_ps(a, b0, c10);
        c11 = _mm512_fmadd_ps(a, b1, c11);
        c12 = _mm512_fmadd_ps(a, b2, c12);
        a = _mm512_set1_ps(A[2]);
        c20 = _mm512_fmadd_ps(a, b0, c20);
        c21 = _mm512_fmadd_ps(a, b1, c21);
        c22 = _mm512_fmadd_ps(a, b2, c22);
        a = _mm512_set1_ps(A[3]);
        c30 = _mm512_fmadd_ps(a, b0, c30);
        c31 = _mm512_fmadd_ps(a, b1, c31);
        c32 = _mm512_fmadd_ps(a, b2, c32);
        A += MR;
        B += NR;
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

const segd_gemm_micro_fn segd_gemm_micro_avx512 = kern_avx512;
#else
const segd_gemm_micro_fn segd_gemm_micro_avx512 = NULL;
#endif
