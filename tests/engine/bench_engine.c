/* segd-bench: time the engine on one PNG.
 *   segd-bench --weights FILE [--iters N] [--threads T] [--warmup N]
 *              [--gemm native|openblas|auto] SLICE.png
 * --threads T: the worker's team size.  --gemm: the GEMM backend (default
 * $SEGD_GEMM, else auto); with openblas each BLAS call runs on 1 thread.
 * Prints median/min total and forward ms, forward GFLOP/s (segd_model_flops),
 * arena bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segd/engine.h"
#include "model/gemm.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *weights = NULL, *png_path = NULL, *gemm = NULL;
    int iters = 20, threads = 0, warmup = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--weights") && i + 1 < argc)
            weights = argv[++i];
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gemm") && i + 1 < argc)
            gemm = argv[++i];
        else if (argv[i][0] != '-')
            png_path = argv[i];
        else {
            fprintf(stderr, "usage: segd-bench --weights FILE [--iters N] [--threads T] "
                            "[--warmup N] [--gemm native|openblas|auto] SLICE.png\n");
            return 2;
        }
    }
    if (!weights || !png_path || iters < 1) {
        fprintf(stderr, "segd-bench: need --weights FILE and a PNG\n");
        return 2;
    }
    FILE *f = fopen(png_path, "rb");
    if (!f) {
        perror(png_path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *png = malloc(len);
    if (!png || fread(png, 1, len, f) != len) {
        fprintf(stderr, "segd-bench: cannot read %s\n", png_path);
        return 1;
    }
    fclose(f);
    char err[512];
    segd_model *m;
    segd_worker *w;
    segd_model_options opts = {.gemm = getenv("SEGD_GEMM")};
    if (segd_model_load_opts(weights, &opts, &m, err, sizeof err)) {
        fprintf(stderr, "segd-bench: %s\n", err);
        return 1;
    }
    if (gemm && segd_model_set_gemm(m, gemm)) {
        fprintf(stderr, "segd-bench: --gemm must be native, openblas or auto\n");
        return 2;
    }
    if (segd_worker_create_threads(m, SEGD_DEFAULT_MAX_PIXELS, threads > 0 ? threads : 1, &w)) {
        fprintf(stderr, "segd-bench: cannot create worker\n");
        return 1;
    }
    double *tot = malloc(sizeof(double) * iters), *inf = malloc(sizeof(double) * iters);
    segd_result r;
    for (int i = -warmup; i < iters; i++) {
        if (segd_worker_segment_png(w, png, len, -1, &r, err, sizeof err)) {
            fprintf(stderr, "segd-bench: %s\n", err);
            return 1;
        }
        if (i >= 0) {
            tot[i] = r.ms_decode + r.ms_infer + r.ms_post;
            inf[i] = r.ms_infer;
        }
    }
    qsort(tot, iters, sizeof *tot, cmp_d);
    qsort(inf, iters, sizeof *inf, cmp_d);
    int gh, gw;
    segd_model_grid(m, &gh, &gw);
    double gflop = segd_model_flops(m) / 1e9;
    printf("model %s grid %dx%d image %dx%d threads %d gemm %s (BLAS threads %d) iters %d\n",
           segd_model_name(m), gh, gw, r.width, r.height, segd_worker_threads(w),
           segd_model_gemm(m), segd_gemm_blas_threads(), iters);
    printf("total median %.2f ms (min %.2f); forward median %.2f ms (min %.2f)\n",
           tot[iters / 2], tot[0], inf[iters / 2], inf[0]);
    printf("forward %.3f GFLOP -> %.1f GFLOP/s; arena %zu bytes\n", gflop,
           gflop / (inf[iters / 2] / 1e3), segd_worker_arena_bytes(w));
    free(tot);
    free(inf);
    free(png);
    segd_worker_free(w);
    segd_model_free(m);
    return 0;
}
