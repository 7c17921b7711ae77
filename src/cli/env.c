/* The SEGD_* variables of the engine (SEGD_GEMM, SEGD_PRECISION,
 * SEGD_NO_AVX2, SEGD_NO_AVX512): read here, by the command line, and handed to the
 * library as segd_model_options. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "model/gemm.h"

int segd_cli_model_options(segd_model_options *opts, const char *gemm, const char *precision,
                           char *err, unsigned long errlen)
{
    const char *no = getenv("SEGD_NO_AVX2");
    opts->no_avx2 = no && *no;
    no = getenv("SEGD_NO_AVX512");
    opts->no_avx512 = no && *no;
    opts->gemm = gemm;
    if (!gemm) {
        segd_gemm g;
        gemm = getenv("SEGD_GEMM");
        if (gemm && *gemm && segd_gemm_parse(gemm, &g)) {
            snprintf(err, errlen, "SEGD_GEMM '%s' invalid: expected native, openblas or auto",
                     gemm);
            return -EINVAL;
        }
        opts->gemm = gemm;
    }
    opts->precision = precision;
    if (!precision) {
        segd_precision p;
        precision = getenv("SEGD_PRECISION");
        if (precision && *precision && segd_precision_parse(precision, &p)) {
            snprintf(err, errlen, "SEGD_PRECISION '%s' invalid: expected fp32, bf16 or auto",
                     precision);
            return -EINVAL;
        }
        opts->precision = precision;
    }
    return 0;
}
