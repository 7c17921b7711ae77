/* GEMM backend names and the OpenBLAS kernels of the forward pass: the only
 * place inference calls into OpenBLAS. */
#include <errno.h>
#include <stddef.h>
#include <strings.h>

#include <cblas.h>

#include "model/gemm.h"
#include "model/kernels.h"

/* OpenBLAS's own prototypes (cblas.h of other BLASes lacks them). */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

static const char *const NAMES[] = {[SEGD_GEMM_AUTO] = "auto", [SEGD_GEMM_NATIVE] = "native",
                                    [SEGD_GEMM_OPENBLAS] = "openblas"};

int segd_gemm_parse(const char *name, segd_gemm *out)
{
    if (!name)
        return -EINVAL;
    for (int g = 0; g < (int)(sizeof NAMES / sizeof NAMES[0]); g++)
        if (!strcasecmp(name, NAMES[g])) {
            *out = (segd_gemm)g;
            return 0;
        }
    return -EINVAL;
}

const char *segd_gemm_name(segd_gemm g)
{
    return g >= SEGD_GEMM_AUTO && g <= SEGD_GEMM_OPENBLAS ? NAMES[g] : "?";
}

segd_gemm segd_gemm_resolve(segd_gemm g, int avx2)
{
    if (g != SEGD_GEMM_AUTO)
        return g;
    return avx2 ? SEGD_GEMM_NATIVE : SEGD_GEMM_OPENBLAS;
}

void segd_gemm_blas_serial(void)
{
    openblas_set_num_threads(1);
}

int segd_gemm_blas_threads(void)
{
    return openblas_get_num_threads();
}

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
