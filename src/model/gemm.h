/* GEMM backends of the forward pass: which code multiplies the matrices of
 * the Winograd convolutions and the resampled decoder branches.
 *
 *   native    segd_gemm_packed's register-blocked micro-kernel (AVX2+FMA
 *             where the CPU has it, else portable C)
 *   openblas  cblas_sgemm, one single-threaded call per band of tiles (the
 *             worker's team parallelises across bands, as with native)
 *   auto      native where the CPU has AVX2+FMA, else openblas: CPUs without
 *             AVX2 and non-x86 builds get OpenBLAS, not the portable kernel
 */
#ifndef SEGD_GEMM_H
#define SEGD_GEMM_H

#include <stddef.h>

/* Register blocking of the native micro-kernel: an MR x NR tile of C per
 * call (NR = 3 AVX2 vectors). */
#define SEGD_GEMM_MR 4
#define SEGD_GEMM_NR 24

typedef enum segd_gemm {
    SEGD_GEMM_AUTO = 0,
    SEGD_GEMM_NATIVE,
    SEGD_GEMM_OPENBLAS,
} segd_gemm;

/* "native", "openblas" or "auto" (case-insensitive) into *out: 0 or
 * -EINVAL (*out untouched; NULL name is invalid). */
int segd_gemm_parse(const char *name, segd_gemm *out);

/* "native", "openblas" or "auto". */
const char *segd_gemm_name(segd_gemm g);

/* AUTO resolved: NATIVE if avx2 (the AVX2+FMA kernels are in use), else
 * OPENBLAS.  Other values are returned unchanged.  Cannot fail. */
segd_gemm segd_gemm_resolve(segd_gemm g, int avx2);

/* Make every OpenBLAS call run on its calling thread only
 * (openblas_set_num_threads(1)).  In OpenBLAS 0.3.21 (pthreads build) this
 * is process-wide, not per thread: it also serialises any other BLAS call
 * of the process (the reference segd_conv3x3 included).  Cannot fail. */
void segd_gemm_blas_serial(void);

/* openblas_get_num_threads(): threads each OpenBLAS call may use. */
int segd_gemm_blas_threads(void);

/* ---- native backend ---------------------------------------------------- */

/* The micro-kernel: C[MR][NR] (row stride ldc) = A (k, MR) packed x
 * B (k, NR) packed, overwriting C.  segd_gemm_micro(avx2) returns the
 * AVX2+FMA version (avx2 only if segd_cpu_has_avx2()) or the portable one;
 * the Winograd bands call it directly on their packed panels. */
typedef void (*segd_gemm_micro_fn)(int k, const float *a, const float *b, float *c, size_t ldc);
segd_gemm_micro_fn segd_gemm_micro(int avx2);

/* Packed GEMM on the micro-kernel: columns [n0, n1) of
 *   C (m_pad, n) row stride ldc = A (m_pad, k) x B (k, n) row stride ldb,
 * A packed as segd_gemm_pack_a; n0 a multiple of SEGD_GEMM_NR.
 * tmp: SEGD_GEMM_NR * (k + SEGD_GEMM_MR) floats, 32-byte aligned. */
size_t segd_gemm_packed_floats(int m, int k); /* floats of packed A, m padded to MR */
void segd_gemm_pack_a(float *ap, const float *a, int m, int k);
void segd_gemm_packed(float *c, size_t ldc, const float *ap, int m, int k, const float *b,
                      size_t ldb, int n0, int n1, float *tmp, int avx2);

/* The same products on OpenBLAS (the openblas GEMM backend): one
 * cblas_sgemm call, single-threaded once segd_gemm_blas_serial() ran, so
 * that team threads may call it at once on disjoint parts of c.
 *   c: (m, n) row stride ldc   a: (m, k) row-major   b: (k, n) row stride ldb */
void segd_gemm_blas(float *c, size_t ldc, const float *a, int m, int k, const float *b,
                    size_t ldb, int n);

/* segd_conv1x1 on segd_gemm_blas.
 *   out: (cout, n)   inp: (cin, n)   wt: (cout, cin)   bias: (cout) */
void segd_conv1x1_blas(float *out, const float *inp, const float *wt, const float *bias,
                       int cin, int cout, int n);

#endif
