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
 * GFLOP/s above compare with.
 * --series N [--batch B]: instead, time a series of N copies of the slice
 * through stage / run / result in batches of B (default 1): median ms per
 * series and slices/s, decode and post-processing included.
 * --profile: after the timing, each conv's median ms over --iters passes,
 * its nominal GFLOP and the FLOPs its GEMMs really do (Winograd F(4x4,3x3):
 * 36 products of (cout x cin) per 4x4 tile; resampled branches: the
 * per-tap (9 cout x cin) GEMM at the coarse level), and their rate. */
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
#include "model/model.h"
#include "model/unet3p.h"

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

/* ------------------------------------------------------------ series */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* n copies of one slice through w's slots, batch by batch. */
static int run_series(segd_worker *w, const void *png, size_t len, int n)
{
    char err[512];
    segd_result r;
    int b = segd_worker_batch(w);
    for (int k0 = 0; k0 < n; k0 += b) {
        int k1 = k0 + b < n ? k0 + b : n;
        for (int k = k0; k < k1; k++)
            if (segd_worker_stage_png(w, k - k0, png, len, err, sizeof err))
                goto fail;
        if (segd_worker_run(w, k1 - k0))
            goto fail;
        for (int k = k0; k < k1; k++)
            if (segd_worker_result(w, k - k0, -1, &r, err, sizeof err))
                goto fail;
    }
    return 0;
fail:
    fprintf(stderr, "segd-bench: %s\n", err);
    return 1;
}

static int time_series(segd_model *m, segd_worker *w, const void *png, size_t len, int n,
                       int iters, int warmup)
{
    double *t = malloc(sizeof(double) * iters);
    if (!t)
        return 1;
    for (int i = -warmup; i < iters; i++) {
        double t0 = now_ms();
        if (run_series(w, png, len, n)) {
            free(t);
            return 1;
        }
        if (i >= 0)
            t[i] = now_ms() - t0;
    }
    qsort(t, iters, sizeof *t, cmp_d);
    printf("model %s threads %d kernel %s precision %s\n", segd_model_name(m),
           segd_worker_threads(w), segd_model_kernel(m), segd_model_precision(m));
    printf("series %d slices batch %d: median %.1f ms (min %.1f) -> %.2f slices/s; "
           "arena %zu bytes\n",
           n, segd_worker_batch(w), t[iters / 2], t[0], n / (t[iters / 2] / 1e3),
           segd_worker_arena_bytes(w));
    free(t);
    return 0;
}

/* ----------------------------------------------------------- profile */

static void level_size(int gh, int gw, int level, int *h, int *w)
{
    *h = gh;
    *w = gw;
    for (int l = 1; l < level; l++) {
        *h = (*h + 1) / 2;
        *w = (*w + 1) / 2;
    }
}

/* FLOPs the GEMMs of conv c really do (see the header); h x w: the size
 * its GEMM runs at. */
static double gemm_flops(const segd_conv *c, int h, int w)
{
    if (c->k == 1 || c->cin == 1) /* 1x1, or the direct kernel */
        return 2.0 * c->k * c->k * c->cin * c->cout * h * w;
    if (c->resampled) /* per-tap GEMM at the coarse level */
        return 2.0 * 9 * c->cin * c->cout * h * w;
    return 2.0 * 36 * c->cin * c->cout * ((h + 3) / 4) * ((w + 3) / 4);
}

static void print_profile(const segd_model *m, segd_worker *w, int iters)
{
    const segd_unet3p *net = &m->net;
    int gh = m->grid_h, gw = m->grid_w;
    double (*ms)[SEGD_UNET3P_NCONV] = calloc((size_t)iters, sizeof *ms);
    float pres[SEGD_MAX_BATCH * SEGD_MAX_CLASSES];
    if (!ms)
        return;
    /* every slot's grid holds the slice (the timing loop staged slot 0) */
    int b = segd_worker_batch(w);
    size_t g = (size_t)gh * gw;
    for (int k = 1; k < b; k++)
        memcpy(w->grid + k * g, w->grid, g * sizeof(float));
    for (int it = 0; it < iters; it++) {
        segd_unet3p_forward(net, w->logits, pres, w->grid, b, gh, gw, w->net_arena, w->team,
                            ms[it]);
        for (int i = 0; i < SEGD_UNET3P_NCONV; i++)
            ms[it][i] /= b;
    }
    printf("profile (batch %d, ms per image: median of %d passes; GEMM GFLOP: what the kernels "
           "multiply, Winograd F(4x4,3x3) or per-tap GEMM)\n", b, iters);
    printf("%-16s %5s %5s %9s %6s %8s %9s %8s\n", "conv", "cin", "cout", "grid", "ms", "share",
           "GEMM GF", "GFLOP/s");
    double total = 0, med[SEGD_UNET3P_NCONV], col[64];
    for (int i = 0; i < SEGD_UNET3P_NCONV; i++) {
        for (int it = 0; it < iters && it < 64; it++)
            col[it] = ms[it][i];
        int n = iters < 64 ? iters : 64;
        qsort(col, n, sizeof *col, cmp_d);
        med[i] = col[n / 2];
        total += med[i];
    }
    double gf_all = 0, nom_all = 0;
    for (int i = 0; i < SEGD_UNET3P_NCONV; i++) {
        char name[32], grid[32];
        int level, glevel, h, wd, gh2, gw2;
        const segd_conv *c = segd_unet3p_conv(net, i, &level, &glevel);
        level_size(gh, gw, level, &h, &wd);
        level_size(gh, gw, glevel, &gh2, &gw2);
        snprintf(grid, sizeof grid, "%dx%d", h, wd);
        double gf = gemm_flops(c, gh2, gw2) / 1e9;
        gf_all += gf;
        nom_all += 2.0 * c->k * c->k * c->cin * c->cout * h * wd / 1e9;
        printf("%-16s %5d %5d %9s %6.2f %7.1f%% %9.3f %8.1f%s\n",
               segd_unet3p_conv_name(i, name, sizeof name), c->cin, c->cout, grid, med[i],
               100 * med[i] / total, gf, gf / (med[i] / 1e3), c->resampled ? " resampled" : "");
    }
    printf("profile total %.2f ms: nominal %.3f GFLOP (%.1f GFLOP/s effective), GEMMs %.3f GFLOP "
           "(%.1f GFLOP/s)\n", total, nom_all, nom_all / (total / 1e3), gf_all,
           gf_all / (total / 1e3));
    free(ms);
}

int main(int argc, char **argv)
{
    const char *weights = NULL, *png_path = NULL, *gemm = NULL, *precision = NULL;
    int iters = 20, threads = 0, warmup = 2, series = 0, batch = 1, profile = 0;
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
        else if (!strcmp(argv[i], "--series") && i + 1 < argc)
            series = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--profile"))
            profile = 1;
        else if (argv[i][0] != '-')
            png_path = argv[i];
        else {
            fprintf(stderr, "usage: segd-bench --weights FILE [--iters N] [--threads T] "
                            "[--warmup N] [--gemm native|openblas|auto]\n"
                            "                  [--precision fp32|bf16|auto] [--profile]\n"
                            "                  [--series N [--batch B]] SLICE.png\n"
                            "       segd-bench --fma-peak\n");
            return 2;
        }
    }
    if (!weights || !png_path || iters < 1 || series < 0 || batch < 1 ||
        batch > SEGD_MAX_BATCH) {
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
    if (segd_worker_create_batch(m, SEGD_DEFAULT_MAX_PIXELS, threads > 0 ? threads : 1, batch,
                                 &w)) {
        fprintf(stderr, "segd-bench: cannot create worker\n");
        return 1;
    }
    if (series) {
        int rc = time_series(m, w, png, len, series, iters, warmup);
        free(png);
        segd_worker_free(w);
        segd_model_free(m);
        return rc;
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
    if (profile)
        print_profile(m, w, iters);
    free(png);
    segd_worker_free(w);
    segd_model_free(m);
    return 0;
}
