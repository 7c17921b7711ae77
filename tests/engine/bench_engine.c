/* segd-bench: time the engine on one PNG, or measure the machine's FMA peak.
 *   segd-bench --weights FILE [--iters N] [--threads T] [--warmup N]
 *              [--gemm native|openblas|auto] [--precision fp32|bf16|auto] SLICE.png
 *   segd-bench --fma-peak
 * --threads T: the worker's team size.  --gemm: the GEMM backend (default
 * $SEGD_GEMM, else auto); with openblas each BLAS call runs on 1 thread.
 * --precision: of the Winograd GEMMs (default $SEGD_PRECISION, else fp32).
 * $SEGD_NO_AVX512 / $SEGD_NO_AVX2 (non-empty) force the narrower kernels,
 * as for segd.  Prints the kernel in use, median/min total and forward ms,
 * forward GFLOP/s (segd_model_flops: nominal conv FLOPs, not the fewer
 * Winograd ones), arena bytes.
 * --fma-peak: GFLOP/s of a loop of independent FMAs on 1 thread and on 2
 * at once, AVX2 and (where the CPU has it) AVX-512: the ceiling the
 * GFLOP/s above compare with. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "segd/engine.h"
#include "model/cpu.h"
#include "model/gemm.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------ FMA peak */

#define FMA_ACC 12        /* independent chains: > latency x FMA ports on current cores */
#define FMA_ITERS 50000000L

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#if defined(__x86_64__)
/* FMA_ITERS x FMA_ACC vector FMAs; returns a sum so the loop stays. */
__attribute__((target("avx2,fma"))) static float fma_loop_avx2(void)
{
    __m256 acc[FMA_ACC];
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
    for (int i = 0; i < FMA_ACC; i++)
        acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < FMA_ITERS; n++)
        for (int i = 0; i < FMA_ACC; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], m, c);
    float s = 0, t[8];
    for (int i = 0; i < FMA_ACC; i++) {
        _mm256_storeu_ps(t, acc[i]);
        s += t[0];
    }
    return s;
}

__attribute__((target("avx512f,fma"))) static float fma_loop_avx512(void)
{
    __m512 acc[FMA_ACC];
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
    for (int i = 0; i < FMA_ACC; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < FMA_ITERS; n++)
        for (int i = 0; i < FMA_ACC; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    float s = 0;
    for (int i = 0; i < FMA_ACC; i++)
        s += _mm512_reduce_add_ps(acc[i]);
    return s;
}
#endif

typedef struct fma_run {
    float (*loop)(void);
    float sink;
} fma_run;

static void *fma_thread(void *ctx)
{
    fma_run *r = ctx;
    r->sink = r->loop();
    return NULL;
}

/* GFLOP/s of `threads` copies of loop (lanes floats per vector) at once;
 * the best of 3 runs.  0 if a thread cannot be started. */
static double fma_peak(float (*loop)(void), int lanes, int threads)
{
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        pthread_t tid[2];
        fma_run run[2] = {{loop, 0}, {loop, 0}};
        double t0 = now_s();
        for (int i = 1; i < threads; i++)
            if (pthread_create(&tid[i], NULL, fma_thread, &run[i]))
                return 0;
        fma_thread(&run[0]);
        for (int i = 1; i < threads; i++)
            pthread_join(tid[i], NULL);
        double dt = now_s() - t0;
        double gf = 2.0 * lanes * FMA_ACC * (double)FMA_ITERS * threads / dt / 1e9;
        best = gf > best ? gf : best;
        if (run[0].sink == 12345.0f) /* keep the results alive */
            fprintf(stderr, "!");
    }
    return best;
}

static int print_fma_peak(void)
{
#if defined(__x86_64__)
    if (segd_cpu_has_avx2())
        printf("FMA peak avx2: 1 thread (per core) %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n",
               fma_peak(fma_loop_avx2, 8, 1), fma_peak(fma_loop_avx2, 8, 2));
    else
        printf("FMA peak avx2: no AVX2+FMA\n");
    if (segd_cpu_has_avx512())
        printf("FMA peak avx512: 1 thread (per core) %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n",
               fma_peak(fma_loop_avx512, 16, 1), fma_peak(fma_loop_avx512, 16, 2));
    else
        printf("FMA peak avx512: no AVX-512\n");
#else
    printf("FMA peak: not measured off x86-64\n");
#endif
    return 0;
}

int main(int argc, char **argv)
{
    const char *weights = NULL, *png_path = NULL, *gemm = NULL, *precision = NULL;
    int iters = 20, threads = 0, warmup = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--fma-peak"))
            return print_fma_peak();
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
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc)
            precision = argv[++i];
        else if (argv[i][0] != '-')
            png_path = argv[i];
        else {
            fprintf(stderr, "usage: segd-bench --weights FILE [--iters N] [--threads T] "
                            "[--warmup N] [--gemm native|openblas|auto]\n"
                            "                  [--precision fp32|bf16|auto] SLICE.png\n"
                            "       segd-bench --fma-peak\n");
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
    const char *no_avx2 = getenv("SEGD_NO_AVX2"), *no_avx512 = getenv("SEGD_NO_AVX512");
    segd_model_options opts = {.gemm = getenv("SEGD_GEMM"), .no_avx2 = no_avx2 && *no_avx2,
                               .no_avx512 = no_avx512 && *no_avx512,
                               .precision = precision ? precision : getenv("SEGD_PRECISION")};
    if (segd_model_load_opts(weights, &opts, &m, err, sizeof err)) {
        fprintf(stderr, "segd-bench: %s\n", err);
        return 1;
    }
    int grc = gemm ? segd_model_set_gemm(m, gemm) : 0;
    if (grc) {
        fprintf(stderr, "segd-bench: --gemm %s: %s\n", gemm,
                grc == -EINVAL     ? "must be native, openblas or auto"
                : grc == -ENOTSUP ? "no bf16 kernels there (precision bf16)"
                                  : "out of memory");
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
    printf("kernel %s\n", segd_model_kernel(m));
    printf("precision %s\n", segd_model_precision(m));
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
