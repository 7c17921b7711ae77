/* The GEMMs of the forward pass and the choice between them: backend names,
 * the native register-blocked micro-kernel (AVX2+FMA or portable C here, the
 * AVX-512 one in gemm_avx512.c) with its packed GEMM, and the OpenBLAS calls
 * (the only place inference calls into OpenBLAS). */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define SEGD_X86 1
#endif

#include <cblas.h>

#include "model/gemm.h"
#include "model/kernels.h"

#define MR SEGD_GEMM_MR
#define NR SEGD_GEMM_NR

/* OpenBLAS's own prototypes (cblas.h of other BLASes lacks them). */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static const char *const NAMES[] = {[SEGD_GEMM_AUTO] = "auto", [SEGD_GEMM_NATIVE] = "native",
                                    [SEGD_GEMM_OPENBLAS] = "openblas"};

/* Index of name (case-insensitive) among the n names, or -1 (also for NULL):
 * the parser of both option tables below. */
static int name_index(const char *const *names, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (!strcasecmp(name, names[i]))
            return i;
    return -1;
}

int segd_gemm_parse(const char *name, segd_gemm *out)
{
    int g = name_index(NAMES, (int)(sizeof NAMES / sizeof NAMES[0]), name);
    if (g < 0)
        return -EINVAL;
    *out = (segd_gemm)g;
    return 0;
}

const char *segd_gemm_name(segd_gemm g)
{
    return g >= SEGD_GEMM_AUTO && g <= SEGD_GEMM_OPENBLAS ? NAMES[g] : "?";
}

static const char *const PREC_NAMES[] = {[SEGD_PRECISION_FP32] = "fp32",
                                         [SEGD_PRECISION_BF16] = "bf16",
                                         [SEGD_PRECISION_AUTO] = "auto"};

int segd_precision_parse(const char *name, segd_precision *out)
{
    int p = name_index(PREC_NAMES, (int)(sizeof PREC_NAMES / sizeof PREC_NAMES[0]), name);
    if (p < 0)
        return -EINVAL;
    *out = (segd_precision)p;
    return 0;
}

const char *segd_precision_name(segd_precision p)
{
    return p >= SEGD_PRECISION_FP32 && p <= SEGD_PRECISION_AUTO ? PREC_NAMES[p] : "?";
}

segd_gemm segd_gemm_resolve(segd_gemm g, int isa)
{
    if (g != SEGD_GEMM_AUTO)
        return g;
    return isa >= SEGD_ISA_AVX2 ? SEGD_GEMM_NATIVE : SEGD_GEMM_OPENBLAS;
}

int segd_gemm_nr(int isa)
{
    /* as segd_gemm_micro: the AVX-512 panels only with its kernel */
    return isa >= SEGD_ISA_AVX512 && segd_gemm_micro_avx512 ? SEGD_GEMM_NR_MAX : NR;
}

const char *segd_gemm_isa_name(int isa)
{
    return isa >= SEGD_ISA_AVX512 ? "native-avx512"
           : isa == SEGD_ISA_AVX2 ? "native-avx2"
                                  : "native-portable";
}

void segd_gemm_blas_serial(void)
{
    openblas_set_num_threads(1);
}

int segd_gemm_blas_threads(void)
{
    return openblas_get_num_threads();
}

/* ------------------------------------------------------- micro-kernels */

/* C[MR][NR] (row stride ldc) = A (K, MR) packed x B (K, NR) packed. */
static void kern_c(int K, const float *A, const float *B, float *C, size_t ldc)
{
    float acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < K; k++)
        for (int i = 0; i < MR; i++) {
            float a = A[k * MR + i];
            for (int j = 0; j < NR; j++)
                acc[i][j] += a * B[k * NR + j];
        }
    for (int i = 0; i < MR; i++)
        memcpy(C + i * ldc, acc[i], sizeof acc[i]);
}

#if SEGD_X86
__attribute__((target("avx2,fma"))) static void kern_avx2(int K, const float *A, const float *B,
                                                          float *C, size_t ldc)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00,
           c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8), b2 = _mm256_load_ps(B + 16);
        __m256 a = _mm256_broadcast_ss(A);
        c00 = _mm256_fmadd_ps(a, b0, c00);
        c01 = _mm256_fmadd_ps(a, b1, c01);
        c02 = _mm256_fmadd_ps(a, b2, c02);
        a = _mm256_broadcast_ss(A + 1);
        c10 = _mm256_fmadd_ps(a, b0, c10);
        c11 = _mm256_fmadd_ps(a, b1, c11);
        c12 = _mm256_fmadd_ps(a, b2, c12);
        a = _mm256_broadcast_ss(A + 2);
        c20 = _mm256_fmadd_ps(a, b0, c20);
        c21 = _mm256_fmadd_ps(a, b1, c21);
        c22 = _mm256_fmadd_ps(a, b2, c22);
        a = _mm256_broadcast_ss(A + 3);
        c30 = _mm256_fmadd_ps(a, b0, c30);
        c31 = _mm256_fmadd_ps(a, b1, c31);
        c32 = _mm256_fmadd_ps(a, b2, c32);
        A += MR;
        B += NR;
    }
    _mm256_storeu_ps(C, c00);
    _mm256_storeu_ps(C + 8, c01);
    _mm256_storeu_ps(C + 16, c02);
    C += ldc;
    _mm256_storeu_ps(C, c10);
    _mm256_storeu_ps(C + 8, c11);
    _mm256_storeu_ps(C + 16, c12);
    C += ldc;
    _mm256_storeu_ps(C, c20);
    _mm256_storeu_ps(C + 8, c21);
    _mm256_storeu_ps(C + 16, c22);
    C += ldc;
    _mm256_storeu_ps(C, c30);
    _mm256_storeu_ps(C + 8, c31);
    _mm256_storeu_ps(C + 16, c32);
}
#endif

segd_gemm_micro_fn segd_gemm_micro(int isa)
{
    if (isa >= SEGD_ISA_AVX512 && segd_gemm_micro_avx512)
        return segd_gemm_micro_avx512;
#if SEGD_X86
    if (isa >= SEGD_ISA_AVX2)
        return kern_avx2;
#endif
    return kern_c;
}

/* ---------------------------------------------------------- packed GEMM */

/* m rounded up to a multiple of MR. */
static int m_pad(int m)
{
    return (m + MR - 1) / MR * MR;
}

size_t segd_gemm_packed_floats(int m, int k)
{
    return (size_t)m_pad(m) * k;
}

void segd_gemm_pack_a(float *ap, const float *a, int m, int k)
{
    int mp = m_pad(m);
    for (int mb = 0; mb < mp / MR; mb++)
        for (int kk = 0; kk < k; kk++)
            for (int i = 0; i < MR; i++) {
                int r = mb * MR + i;
                ap[((size_t)mb * k + kk) * MR + i] = r < m ? a[(size_t)r * k + kk] : 0.0f;
            }
}

void segd_gemm_packed(float *c, size_t ldc, const float *ap, int m, int k, const float *b,
                      size_t ldb, int n0, int n1, float *tmp, int isa)
{
    segd_gemm_micro_fn kern = segd_gemm_micro(isa);
    int mp = m_pad(m), nr = segd_gemm_nr(isa);
    float *bp = tmp, *ct = tmp + (size_t)nr * k; /* packed B panel, C tile */
    for (int nb = n0; nb < n1; nb += nr) {
        int nn = n1 - nb < nr ? n1 - nb : nr;
        for (int kk = 0; kk < k; kk++) {
            memcpy(bp + (size_t)kk * nr, b + (size_t)kk * ldb + nb, sizeof(float) * nn);
            if (nn < nr)
                memset(bp + (size_t)kk * nr + nn, 0, sizeof(float) * (nr - nn));
        }
        for (int mb = 0; mb < mp / MR; mb++) {
            kern(k, ap + (size_t)mb * k * MR, bp, ct, (size_t)nr);
            for (int i = 0; i < MR && mb * MR + i < m; i++)
                memcpy(c + (size_t)(mb * MR + i) * ldc + nb, ct + i * nr, sizeof(float) * nn);
        }
    }
}

/* ------------------------------------------------------------------ bf16 */

uint16_t segd_gemm_bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncating could make it inf */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u); /* ties to the even upper half */
    return (uint16_t)(u >> 16);
}

size_t segd_gemm_bf16_a_elems(int mblocks, int k)
{
    return (size_t)mblocks * ((k + 1) / 2) * MR * 2;
}

void segd_gemm_bf16_pack_a(uint16_t *dst, const float *ap, int mblocks, int k)
{
    int kh = (k + 1) / 2;
    for (size_t mb = 0; mb < (size_t)mblocks; mb++)
        for (int p = 0; p < kh; p++)
            for (int i = 0; i < MR; i++)
                for (int j = 0; j < 2; j++) {
                    int kk = 2 * p + j;
                    dst[((mb * kh + p) * MR + i) * 2 + j] =
                        kk < k ? segd_gemm_bf16_round(ap[(mb * k + kk) * MR + i]) : 0;
                }
}

/* ------------------------------------------------------------- OpenBLAS */

void segd_gemm_blas(float *c, size_t ldc, const float *a, int m, int k, const float *b,
                    size_t ldb, int n)
{
    if (m <= 0 || n <= 0)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a, k, b, (int)ldb,
                0.0f, c, (int)ldc);
}

void segd_conv1x1_blas(float *out, const float *inp, const float *wt, const float *bias,
                       int cin, int cout, int n)
{
    segd_gemm_blas(out, (size_t)n, wt, cout, cin, inp, (size_t)n, n);
    for (int o = 0; o < cout; o++) {
        float *row = out + (size_t)o * n;
        for (int i = 0; i < n; i++)
            row[i] += bias[o];
    }
}
