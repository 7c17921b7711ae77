/* GEMM backends of the forward pass: which code multiplies the matrices of
 * the Winograd convolutions and the resampled decoder branches.
 *
 *   native    segd_gemm_packed's register-blocked micro-kernel (AVX-512,
 *             else AVX2+FMA, as far as the CPU has them, else portable C)
 *   openblas  cblas_sgemm, one single-threaded call per band of tiles (the
 *             worker's team parallelises across bands, as with native)
 *   auto      native where the CPU has AVX2+FMA, else openblas: CPUs without
 *             AVX2 and non-x86 builds get OpenBLAS, not the portable kernel
 */
#ifndef SEGD_GEMM_H
#define SEGD_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* Register blocking of the native micro-kernels: an MR x NR tile of C per
 * call; NR = 3 vectors: 24 for AVX2 and the portable kernel, 48 for
 * AVX-512 (segd_gemm_nr).  Packed A (MR rows) is the same for all, so the
 * packed weights do not depend on the kernel; packed B panels and the
 * scratch sized for them use the widest, SEGD_GEMM_NR_MAX. */
#define SEGD_GEMM_MR 4
#define SEGD_GEMM_NR 24
#define SEGD_GEMM_NR_MAX 48

/* Instruction sets of the native kernels, narrowest first.  Each includes
 * the narrower ones: the AVX-512 level runs the AVX-512 micro-kernel and
 * the AVX2 transforms.  Chosen once per model (segd_cpu_isa, model/cpu.h). */
enum { SEGD_ISA_PORTABLE = 0, SEGD_ISA_AVX2 = 1, SEGD_ISA_AVX512 = 2 };

/* NR of the micro-kernel of isa: 48 for SEGD_ISA_AVX512 (where the build
 * has that kernel), else 24.  Cannot fail. */
int segd_gemm_nr(int isa);

/* "native-avx512", "native-avx2" or "native-portable": the native
 * backend's kernel at isa (static strings). */
const char *segd_gemm_isa_name(int isa);

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

/* AUTO resolved: NATIVE if isa >= SEGD_ISA_AVX2 (the AVX2+FMA kernels or
 * wider are in use), else OPENBLAS.  Other values are returned unchanged.
 * Cannot fail. */
segd_gemm segd_gemm_resolve(segd_gemm g, int isa);

/* Precision of the Winograd GEMMs (everything else stays fp32):
 *   fp32  fp32 products and sums throughout
 *   bf16  U and V rounded to bfloat16 (round to nearest even), products
 *         summed in fp32 by AVX512-BF16's VDPBF16PS; native backend at
 *         the AVX-512 level only
 *   auto  bf16 where the CPU has AVX512-BF16 and the native backend runs
 *         its AVX-512 kernels, else fp32 */
typedef enum segd_precision {
    SEGD_PRECISION_FP32 = 0,
    SEGD_PRECISION_BF16,
    SEGD_PRECISION_AUTO,
} segd_precision;

/* "fp32", "bf16" or "auto" (case-insensitive) into *out: 0 or -EINVAL
 * (*out untouched; NULL name is invalid). */
int segd_precision_parse(const char *name, segd_precision *out);

/* "fp32", "bf16" or "auto". */
const char *segd_precision_name(segd_precision p);

/* Make every OpenBLAS call run on its calling thread only
 * (openblas_set_num_threads(1)).  In OpenBLAS 0.3.21 (pthreads build) this
 * is process-wide, not per thread: it also serialises any other BLAS call
 * of the process (the reference segd_conv3x3 included).  Cannot fail. */
void segd_gemm_blas_serial(void);

/* openblas_get_num_threads(): threads each OpenBLAS call may use. */
int segd_gemm_blas_threads(void);

/* ---- native backend ---------------------------------------------------- */

/* The micro-kernel: C[MR][nr] (row stride ldc) = A (k, MR) packed x
 * B (k, nr) packed, overwriting C, nr = segd_gemm_nr(isa).
 * segd_gemm_micro(isa) returns the AVX-512 version (isa SEGD_ISA_AVX512,
 * only if segd_cpu_has_avx512()), the AVX2+FMA one (SEGD_ISA_AVX2, only if
 * segd_cpu_has_avx2()) or the portable one; the Winograd bands call it
 * directly on their packed panels. */
typedef void (*segd_gemm_micro_fn)(int k, const float *a, const float *b, float *c, size_t ldc);
segd_gemm_micro_fn segd_gemm_micro(int isa);

/* The AVX-512 micro-kernel (gemm_avx512.c), NR = SEGD_GEMM_NR_MAX; NULL
 * in builds without it.  Only through segd_gemm_micro. */
extern const segd_gemm_micro_fn segd_gemm_micro_avx512;

/* ---- bf16 (AVX512-BF16, gemm_bf16.c) ----------------------------------
 * Packed operands hold pairs along K: A (ceil(k/2), MR, 2) and B
 * (ceil(k/2), NR_MAX, 2) uint16 bfloat16, the second of the last pair 0
 * when k is odd, so that one 32-bit lane holds the two products VDPBF16PS
 * sums. */

/* fp32 -> bfloat16 bits, round to nearest even (NaN stays a quiet NaN).
 * Cannot fail. */
uint16_t segd_gemm_bf16_round(float x);

/* Packed A (mblocks panels of (k, MR) floats, as segd_gemm_pack_a writes)
 * into bf16 pair panels: dst (mblocks, ceil(k/2), MR, 2).  Cannot fail. */
size_t segd_gemm_bf16_a_elems(int mblocks, int k); /* uint16 of dst */
void segd_gemm_bf16_pack_a(uint16_t *dst, const float *ap, int mblocks, int k);

/* C[MR][NR_MAX] (row stride ldc) = A (ceil(k/2), MR, 2) bf16 x
 * B (ceil(k/2), NR_MAX, 2) bf16, fp32 sums, overwriting C. */
typedef void (*segd_gemm_bf16_fn)(int k, const uint16_t *a, const uint16_t *b, float *c,
                                  size_t ldc);
/* One fp32 B panel (k, NR_MAX) into its bf16 pairs (ceil(k/2), NR_MAX, 2)
 * in place: the pairs take the first ceil(k/2) * NR_MAX floats' bytes of
 * the panel. */
typedef void (*segd_gemm_bf16_pack_fn)(float *panel, int k);

/* The AVX512-BF16 micro-kernel and panel conversion; NULL in builds
 * without them.  Only where segd_cpu_has_avx512_bf16() (model/cpu.h). */
extern const segd_gemm_bf16_fn segd_gemm_micro_bf16;
extern const segd_gemm_bf16_pack_fn segd_gemm_bf16_pack_b;

/* Packed GEMM on the micro-kernel of isa: columns [n0, n1) of
 *   C (m_pad, n) row stride ldc = A (m_pad, k) x B (k, n) row stride ldb,
 * A packed as segd_gemm_pack_a; n0 a multiple of SEGD_GEMM_NR_MAX.
 * tmp: SEGD_GEMM_NR_MAX * (k + SEGD_GEMM_MR) floats, 64-byte aligned. */
size_t segd_gemm_packed_floats(int m, int k); /* floats of packed A, m padded to MR */
void segd_gemm_pack_a(float *ap, const float *a, int m, int k);
void segd_gemm_packed(float *c, size_t ldc, const float *ap, int m, int k, const float *b,
                      size_t ldb, int n0, int n1, float *tmp, int isa);

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
