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

#endif
