/* Engine behaviour around the forward pass: PNG error mapping (-EINVAL,
 * -E2BIG, -EDOM), the grey-image path, threshold override, the response
 * document (RLE decodes to the masks), and `segd infer`.
 * Arguments: DATA_DIR (tests/data). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../harness.h"
#include "cli/cli.h"
#include "segd/engine.h"
#include "io/png.h"
#include "model/cpu.h"
#include "model/gemm.h"
#include "io/rle.h"
#include "io/sha256.h"

static char dir[1024];

static void *slurp(const char *name, size_t *len)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    TEST_REQUIRE(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc(*len);
    TEST_REQUIRE(b && fread(b, 1, *len, f) == *len);
    fclose(f);
    return b;
}

static void test_png_errors(segd_worker *w)
{
    segd_result r;
    char err[256];
    size_t len;
    unsigned char *png = slurp("synthetic-37x53-grey8.png", &len);
    TEST_EQ_INT(segd_worker_segment_png(w, png, len, -1, &r, err, sizeof err), 0);
    TEST_EQ_INT(segd_worker_segment_png(w, "garbage", 7, -1, &r, err, sizeof err), -EINVAL);
    TEST_EQ_INT(segd_worker_segment_png(w, png, 0, -1, &r, err, sizeof err), -EINVAL);
    int rc = segd_worker_segment_png(w, png, len / 2, -1, &r, err, sizeof err);
    fprintf(stderr, "truncated: %d %s\n", rc, err);
    TEST_EQ_INT(rc, -EINVAL);
    unsigned char *bad = malloc(len);
    TEST_REQUIRE(bad);
    memcpy(bad, png, len);
    bad[len / 2] ^= 0x55; /* inside IDAT: CRC or zlib error */
    rc = segd_worker_segment_png(w, bad, len, -1, &r, err, sizeof err);
    fprintf(stderr, "corrupt: %d %s\n", rc, err);
    TEST_EQ_INT(rc, -EINVAL);
    free(bad);
    free(png);
    png = slurp("case101_day20_slice_0090_266_266_1.50_1.50.png", &len);
    rc = segd_worker_segment_png(w, png, len, -1, &r, err, sizeof err);
    fprintf(stderr, "too large: %d %s\n", rc, err);
    TEST_EQ_INT(rc, -E2BIG);
    free(png);
}

static void test_user_limit(const segd_model *m)
{
    /* width 37 > max_pixels 30: refused by libpng's user limits */
    segd_worker *w;
    segd_result r;
    char err[256];
    size_t len;
    TEST_REQUIRE(segd_worker_create(m, 30, &w) == 0);
    unsigned char *png = slurp("synthetic-37x53-rgb.png", &len);
    int rc = segd_worker_segment_png(w, png, len, -1, &r, err, sizeof err);
    fprintf(stderr, "user limit: %d %s\n", rc, err);
    TEST_EQ_INT(rc, -E2BIG);
    free(png);
    segd_worker_free(w);
}

static void test_gray(segd_worker *w)
{
    size_t len;
    unsigned char *png = slurp("synthetic-37x53-grey16.png", &len);
    float img[37 * 53];
    static unsigned char scratch[37 * 53 * 8];
    int h, wd;
    char err[256];
    TEST_EQ_INT(segd_png_decode_gray(png, len, 37 * 53, img, scratch, sizeof scratch, &h, &wd,
                                     err, sizeof err), 0);
    TEST_EQ_INT(h, 53);
    TEST_EQ_INT(wd, 37);
    segd_result a, b;
    TEST_EQ_INT(segd_worker_segment_png(w, png, len, -1, &a, err, sizeof err), 0);
    static float pa[3][37 * 53];
    for (int c = 0; c < 3; c++)
        memcpy(pa[c], a.prob[c], sizeof pa[c]);
    TEST_EQ_INT(segd_worker_segment_gray(w, img, h, wd, -1, &b, err, sizeof err), 0);
    for (int c = 0; c < 3; c++)
        TEST_CHECK(memcmp(pa[c], b.prob[c], sizeof pa[c]) == 0);
    /* threshold override: 0 keeps every positive pixel of ungated organs */
    TEST_EQ_INT(segd_worker_segment_gray(w, img, h, wd, 0.0f, &b, err, sizeof err), 0);
    for (int c = 0; c < 3; c++)
        TEST_EQ_INT(b.pixels[c], b.presence[c] < 0.5f ? 0 : (size_t)h * wd);
    TEST_EQ_INT(segd_worker_segment_gray(w, img, h, wd, 1.0f, &b, err, sizeof err), 0);
    for (int c = 0; c < 3; c++)
        TEST_EQ_INT(b.pixels[c], 0);
    /* constant image: normalises to zeros, still runs */
    for (int i = 0; i < h * wd; i++)
        img[i] = 7.0f;
    TEST_EQ_INT(segd_worker_segment_gray(w, img, h, wd, -1, &b, err, sizeof err), 0);
    img[3] = NAN;
    TEST_EQ_INT(segd_worker_segment_gray(w, img, h, wd, -1, &b, err, sizeof err), -EDOM);
    TEST_EQ_INT(segd_worker_segment_gray(w, img, 0, wd, -1, &b, err, sizeof err), -EDOM);
    TEST_EQ_INT(segd_worker_segment_gray(w, img, 100, 100, -1, &b, err, sizeof err), -E2BIG);
    free(png);
}

static void test_json(const segd_model *m, segd_worker *w)
{
    size_t len;
    char err[256];
    unsigned char *png = slurp("synthetic-37x53-palette.png", &len);
    segd_result r;
    TEST_EQ_INT(segd_worker_segment_png(w, png, len, -1, &r, err, sizeof err), 0);
    json_t *doc = segd_result_json(m, &r, "slice_x");
    TEST_REQUIRE(doc);
    TEST_EQ_STR(json_string_value(json_object_get(doc, "id")), "slice_x");
    TEST_EQ_INT(json_integer_value(json_object_get(doc, "width")), 37);
    TEST_EQ_INT(json_integer_value(json_object_get(doc, "height")), 53);
    json_t *rle = json_object_get(doc, "rle");
    TEST_EQ_STR(json_string_value(json_object_get(rle, "order")), "row-major");
    TEST_EQ_INT(json_integer_value(json_object_get(rle, "base")), 1);
    json_t *model = json_object_get(doc, "model");
    TEST_EQ_STR(json_string_value(json_object_get(model, "name")), segd_model_name(m));
    TEST_EQ_STR(json_string_value(json_object_get(model, "sha256")), segd_model_sha256(m));
    TEST_CHECK(json_is_object(json_object_get(doc, "timing_ms")));
    TEST_CHECK(json_is_real(json_object_get(json_object_get(doc, "timing_ms"), "infer")));
    for (int c = 0; c < segd_model_num_classes(m); c++) {
        const char *name = segd_model_class_name(m, c);
        const char *s = json_string_value(json_object_get(json_object_get(doc, "masks"), name));
        TEST_REQUIRE(s);
        unsigned char mask[37 * 53];
        TEST_EQ_INT(segd_rle_decode(s, mask, sizeof mask), (long)r.pixels[c]);
        TEST_CHECK(memcmp(mask, r.mask[c], sizeof mask) == 0);
        TEST_EQ_INT(json_integer_value(json_object_get(json_object_get(doc, "pixels"), name)),
                    r.pixels[c]);
        double p = json_real_value(json_object_get(json_object_get(doc, "presence"), name));
        TEST_CHECK(fabs(p - r.presence[c]) < 1e-6);
    }
    json_decref(doc);
    free(png);
}

/* Run segd_cli_infer with stdout captured into a temp file; returns status. */
static int run_infer(char **argv, int argc, char *out, size_t cap)
{
    char path[] = "/tmp/segd-test-infer-XXXXXX";
    int fd = mkstemp(path);
    TEST_REQUIRE(fd >= 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    TEST_REQUIRE(saved >= 0 && dup2(fd, STDOUT_FILENO) >= 0);
    int status = segd_cli_infer(argc, argv);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, cap - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return status;
}

static void test_cli(void)
{
    char weights[2048], a[2048], b[2048];
    static char out[1 << 16];
    snprintf(weights, sizeof weights, "%s/golden-w4-odd.safetensors", dir);
    snprintf(a, sizeof a, "%s/synthetic-37x53-rgb.png", dir);
    snprintf(b, sizeof b, "%s/synthetic-37x53-grey8.png", dir);
    char *argv[] = {"infer", "--weights", weights, "--threshold", "0.4", a, b, NULL};
    TEST_EQ_INT(run_infer(argv, 7, out, sizeof out), 0);
    char *nl = strchr(out, '\n');
    TEST_REQUIRE(nl);
    *nl = '\0';
    json_t *doc = json_loads(out, 0, NULL);
    TEST_REQUIRE(doc);
    TEST_EQ_STR(json_string_value(json_object_get(doc, "id")), "synthetic-37x53-rgb");
    json_decref(doc);
    doc = json_loads(nl + 1, 0, NULL);
    TEST_REQUIRE(doc);
    TEST_EQ_STR(json_string_value(json_object_get(doc, "id")), "synthetic-37x53-grey8");
    json_decref(doc);

    /* one missing file: the others are still printed, exit status non-zero */
    char *argv2[] = {"infer", "--weights", weights, "/nonexistent.png", a, NULL};
    TEST_CHECK(run_infer(argv2, 5, out, sizeof out) != 0);
    TEST_CHECK(strstr(out, "synthetic-37x53-rgb") != NULL);
    char *argv3[] = {"infer", "--weights", "/nonexistent.safetensors", a, NULL};
    TEST_CHECK(run_infer(argv3, 4, out, sizeof out) != 0);
    char *argv4[] = {"infer", "--bogus", a, NULL};
    TEST_CHECK(run_infer(argv4, 3, out, sizeof out) != 0);

    /* default weights from the environment */
    setenv("SEGD_WEIGHTS", weights, 1);
    char buf[2048];
    TEST_EQ_INT(segd_cli_default_weights(buf, sizeof buf), 0);
    TEST_EQ_STR(buf, weights);
    char *argv5[] = {"infer", a, NULL};
    TEST_EQ_INT(run_infer(argv5, 2, out, sizeof out), 0);
    unsetenv("SEGD_WEIGHTS");
}

/* The weights of one directory: the configured name first, else the single
 * *.safetensors; several without the name are refused. */
static void test_weights_lookup(const char *datadir)
{
    TEST_EQ_STR(segd_cli_datadir(), datadir); /* meson's prefix, not a hard-coded /usr */
    char tmp[] = "/tmp/segd-weights-XXXXXX", path[4096], buf[4096];
    TEST_REQUIRE(mkdtemp(tmp) != NULL);
    TEST_EQ_INT(segd_cli_weights_in(tmp, "", buf, sizeof buf), -ENOENT);
    snprintf(path, sizeof path, "%s/a.safetensors", tmp);
    FILE *f = fopen(path, "w");
    TEST_REQUIRE(f && fclose(f) == 0);
    TEST_EQ_INT(segd_cli_weights_in(tmp, "", buf, sizeof buf), 0);
    TEST_EQ_STR(buf, path);
    TEST_EQ_INT(segd_cli_weights_in(tmp, "b.safetensors", buf, sizeof buf), 0); /* absent: the single one */
    TEST_EQ_STR(buf, path);
    snprintf(path, sizeof path, "%s/b.safetensors", tmp);
    f = fopen(path, "w");
    TEST_REQUIRE(f && fclose(f) == 0);
    TEST_EQ_INT(segd_cli_weights_in(tmp, "", buf, sizeof buf), -EEXIST);
    TEST_EQ_INT(segd_cli_weights_in(tmp, "b.safetensors", buf, sizeof buf), 0);
    TEST_EQ_STR(buf, path);
    TEST_EQ_INT(segd_cli_weights_in(tmp, "b.safetensors", buf, 8), -ENOENT); /* does not fit */
    unlink(path);
    snprintf(path, sizeof path, "%s/a.safetensors", tmp);
    unlink(path);
    rmdir(tmp);
}

/* Write a copy of the weights at src into dst with metadata key set to
 * value (a JSON string's content) and tensor_sha256 set to the SHA-256 of
 * its data (hex, 65 bytes, also returned in tsha); tensors unchanged. */
static void write_with_meta(const char *src, const char *dst, const char *key, const char *value,
                            char tsha[65])
{
    FILE *f = fopen(src, "rb");
    TEST_REQUIRE(f);
    unsigned long long n = 0;
    TEST_REQUIRE(fread(&n, 8, 1, f) == 1 && n < (1u << 20));
    char *head = malloc(n + 1);
    TEST_REQUIRE(head && fread(head, 1, n, f) == n);
    head[n] = 0;
    json_error_t e;
    json_t *h = json_loads(head, 0, &e);
    TEST_REQUIRE(h);
    long data_at = ftell(f);
    fseek(f, 0, SEEK_END);
    size_t dlen = (size_t)(ftell(f) - data_at);
    fseek(f, data_at, SEEK_SET);
    unsigned char *data = malloc(dlen);
    TEST_REQUIRE(data && fread(data, 1, dlen, f) == dlen);
    segd_sha256_hex(data, dlen, tsha);
    json_t *md = json_object_get(h, "__metadata__");
    json_object_set_new(md, "tensor_sha256", json_string(tsha));
    if (key)
        json_object_set_new(md, key, json_string(value));
    char *out = json_dumps(h, JSON_COMPACT);
    TEST_REQUIRE(out);
    size_t m = strlen(out), pad = (8 - m % 8) % 8;
    FILE *g = fopen(dst, "wb");
    TEST_REQUIRE(g);
    unsigned long long len = m + pad;
    fwrite(&len, 8, 1, g);
    fwrite(out, 1, m, g);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', g);
    fwrite(data, 1, dlen, g);
    free(data);
    fclose(f);
    TEST_REQUIRE(fclose(g) == 0);
    free(out);
    free(head);
    json_decref(h);
}

/* --precision auto picks bf16 only for weights carrying a passing bf16
 * measurement of their own tensors (and only where bf16 runs). */
static void test_auto_measured(int bf)
{
    char src[2048], dst[256], rec[512], err[512];
    snprintf(src, sizeof src, "%s/golden-w4.safetensors", dir);
    char tsha[65];
    snprintf(dst, sizeof dst, "/tmp/segd-test-auto-%d.safetensors", (int)getpid());
    write_with_meta(src, dst, NULL, NULL, tsha); /* only tensor_sha256: no record */
    segd_model *a;
    segd_model_options o = {.gemm = "native", .precision = "auto"};
    TEST_REQUIRE(segd_model_load_opts(dst, &o, &a, err, sizeof err) == 0);
    TEST_CHECK(segd_model_data_verified(a));
    TEST_EQ_STR(segd_model_precision(a), "fp32");
    /* the log's reason: the CPU's, else the missing record's */
    const char *note = segd_model_precision_note(a);
    TEST_CHECK(note && strstr(note, bf ? "no passing bf16_agreement" : "no AVX512-BF16"));
    segd_model_free(a);
    o.precision = "fp32"; /* named: no note */
    TEST_REQUIRE(segd_model_load_opts(dst, &o, &a, err, sizeof err) == 0);
    TEST_CHECK(segd_model_precision_note(a) == NULL);
    segd_model_free(a);
    o.precision = "auto";
    struct {
        const char *what;
        double agreement, cost;
        int passed, same_tensors, want_bf16;
    } cases[] = {
        {"passing", 0.9998, 0.0005, 1, 1, 1},
        {"too few pixels agree", 0.998, 0.0005, 0, 1, 0},
        {"too much Dice lost", 0.9998, 0.003, 0, 1, 0},
        {"measured on other tensors", 0.9998, 0.0005, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(rec, sizeof rec,
                 "{\"agreement\": %.6f, \"dice_cost\": %.4f, \"passed\": %s, "
                 "\"tensor_sha256\": \"%s\"}",
                 cases[i].agreement, cases[i].cost, cases[i].passed ? "true" : "false",
                 cases[i].same_tensors ? tsha : "00");
        char t2[65];
        write_with_meta(src, dst, "bf16_agreement", rec, t2);
        TEST_REQUIRE(segd_model_load_opts(dst, &o, &a, err, sizeof err) == 0);
        const char *got = segd_model_precision(a);
        const char *want = bf && cases[i].want_bf16 ? "bf16" : "fp32";
        if (strcmp(got, want))
            fprintf(stderr, "auto with a %s record: %s, expected %s\n", cases[i].what, got, want);
        TEST_EQ_STR(got, want);
        TEST_CHECK(strstr(segd_model_precision_note(a), want) != NULL);
        segd_model_free(a);
    }
    unlink(dst);
}

/* Precision: SEGD_PRECISION read by the CLI only (a flag wins), invalid
 * names refused, bf16 refused with -ENOTSUP where it cannot run (no
 * AVX512-BF16, openblas, AVX-512 off) and auto falling back to fp32 there. */
static void test_precision_options(const char *path)
{
    char err[512] = "";
    segd_model_options o;
    segd_model *m = NULL;
    int bf = segd_cpu_has_avx512_bf16() && segd_cpu_isa(0, 0) == SEGD_ISA_AVX512;
    setenv("SEGD_PRECISION", "bf16", 1);
    TEST_EQ_INT(segd_cli_model_options(&o, NULL, NULL, err, sizeof err), 0);
    TEST_EQ_STR(o.precision, "bf16");
    TEST_EQ_INT(segd_cli_model_options(&o, NULL, "auto", err, sizeof err), 0);
    TEST_EQ_STR(o.precision, "auto"); /* the flag wins */
    setenv("SEGD_PRECISION", "fp16", 1);
    TEST_EQ_INT(segd_cli_model_options(&o, NULL, NULL, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "SEGD_PRECISION 'fp16'") != NULL);
    unsetenv("SEGD_PRECISION");

    o = (segd_model_options){.precision = "half"};
    TEST_EQ_INT(segd_model_load_opts(path, &o, &m, err, sizeof err), -EINVAL);
    TEST_CHECK(m == NULL && strstr(err, "precision 'half'") != NULL);
    o = (segd_model_options){.gemm = "openblas", .precision = "bf16"};
    TEST_EQ_INT(segd_model_load_opts(path, &o, &m, err, sizeof err), -ENOTSUP);
    TEST_CHECK(m == NULL && strstr(err, "bf16") != NULL);
    o = (segd_model_options){.gemm = "native", .no_avx512 = 1, .precision = "bf16"};
    TEST_EQ_INT(segd_model_load_opts(path, &o, &m, err, sizeof err), -ENOTSUP);
    TEST_CHECK(m == NULL && strstr(err, "bf16") != NULL);
    o = (segd_model_options){.gemm = "openblas", .precision = "auto"};
    TEST_REQUIRE(segd_model_load_opts(path, &o, &m, err, sizeof err) == 0);
    TEST_EQ_STR(segd_model_precision(m), "fp32"); /* auto: no bf16 on openblas */
    segd_model_free(m);
    /* auto: these weights carry no bf16 measurement, so fp32 even here */
    o = (segd_model_options){.gemm = "native", .precision = "auto"};
    TEST_REQUIRE(segd_model_load_opts(path, &o, &m, err, sizeof err) == 0);
    TEST_EQ_STR(segd_model_precision(m), "fp32");
    segd_model_free(m);
    test_auto_measured(bf);
    o = (segd_model_options){.precision = "BF16"};
    int rc = segd_model_load_opts(path, &o, &m, err, sizeof err);
    TEST_EQ_INT(rc, bf ? 0 : -ENOTSUP);
    if (bf) {
        json_t *info = segd_model_info_json(m);
        TEST_REQUIRE(info);
        TEST_EQ_STR(json_string_value(json_object_get(info, "precision")), "bf16");
        TEST_EQ_STR(json_string_value(json_object_get(info, "kernel")), "native-avx512");
        json_decref(info);
        /* openblas has no bf16 kernels: refused, backend unchanged */
        TEST_EQ_INT(segd_model_set_gemm(m, "openblas"), -ENOTSUP);
        TEST_EQ_STR(segd_model_gemm(m), "native");
    } else {
        TEST_CHECK(strstr(err, "AVX512-BF16") != NULL);
    }
    segd_model_free(m);
}

/* The library reads no environment; the CLI's segd_cli_model_options()
 * does, and a flag wins over its variable. */
static void test_model_options(const char *path)
{
    char err[512] = "";
    segd_model_options o;
    setenv("SEGD_GEMM", "openblas", 1);
    setenv("SEGD_NO_AVX2", "1", 1);
    setenv("SEGD_NO_AVX512", "1", 1);
    segd_model *m = NULL;
    TEST_REQUIRE(segd_model_load(path, &m, err, sizeof err) == 0);
    /* the defaults, whatever the environment says: auto, AVX2 if present,
     * on the widest kernels */
    const char *want = segd_cpu_has_avx2() ? "native" : "openblas";
    TEST_EQ_STR(segd_model_gemm(m), want);
    TEST_EQ_STR(segd_model_kernel(m), segd_cpu_has_avx2() ? segd_gemm_isa_name(segd_cpu_isa(0, 0))
                                                          : "openblas");
    json_t *info = segd_model_info_json(m);
    TEST_REQUIRE(info);
    TEST_EQ_STR(json_string_value(json_object_get(info, "kernel")), segd_model_kernel(m));
    TEST_EQ_STR(segd_model_precision(m), "fp32"); /* the default */
    TEST_EQ_STR(json_string_value(json_object_get(info, "precision")), "fp32");
    json_decref(info);
    segd_model_free(m);

    TEST_EQ_INT(segd_cli_model_options(&o, NULL, NULL, err, sizeof err), 0);
    TEST_EQ_STR(o.gemm, "openblas");
    TEST_EQ_INT(o.no_avx2, 1);
    TEST_EQ_INT(o.no_avx512, 1);
    TEST_EQ_INT(segd_cli_model_options(&o, "native", NULL, err, sizeof err), 0);
    TEST_EQ_STR(o.gemm, "native"); /* the flag wins */
    TEST_REQUIRE(segd_model_load_opts(path, &o, &m, err, sizeof err) == 0);
    TEST_EQ_STR(segd_model_gemm(m), "native");
    /* native with AVX2 forced off: the portable kernel */
    TEST_EQ_STR(segd_model_kernel(m), "native-portable");
    segd_model_free(m);
    o = (segd_model_options){.gemm = "native", .no_avx512 = 1};
    TEST_REQUIRE(segd_model_load_opts(path, &o, &m, err, sizeof err) == 0);
    TEST_EQ_STR(segd_model_kernel(m), segd_cpu_has_avx2() ? "native-avx2" : "native-portable");
    TEST_EQ_INT(segd_model_set_gemm(m, "openblas"), 0);
    TEST_EQ_STR(segd_model_kernel(m), "openblas");
    info = segd_model_info_json(m); /* follows the backend */
    TEST_REQUIRE(info);
    TEST_EQ_STR(json_string_value(json_object_get(info, "kernel")), "openblas");
    json_decref(info);
    segd_model_free(m);
    o = (segd_model_options){.gemm = "auto", .no_avx2 = 1};
    TEST_REQUIRE(segd_model_load_opts(path, &o, &m, err, sizeof err) == 0);
    TEST_EQ_STR(segd_model_gemm(m), "openblas"); /* auto without AVX2 */
    segd_model_free(m);
    o.gemm = "blas";
    TEST_EQ_INT(segd_model_load_opts(path, &o, &m, err, sizeof err), -EINVAL);
    TEST_CHECK(m == NULL && strstr(err, "blas") != NULL);

    test_precision_options(path);

    setenv("SEGD_GEMM", "bogus", 1);
    TEST_EQ_INT(segd_cli_model_options(&o, NULL, NULL, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "SEGD_GEMM 'bogus'") != NULL);
    unsetenv("SEGD_GEMM");
    setenv("SEGD_NO_AVX2", "", 1); /* empty: unset */
    setenv("SEGD_NO_AVX512", "", 1);
    TEST_EQ_INT(segd_cli_model_options(&o, NULL, NULL, err, sizeof err), 0);
    TEST_CHECK(o.gemm == NULL && o.no_avx2 == 0 && o.no_avx512 == 0);
    unsetenv("SEGD_NO_AVX2");
    unsetenv("SEGD_NO_AVX512");
}

int main(int argc, char **argv)
{
    TEST_REQUIRE(argc == 3); /* the tests/data directory, meson's installed data directory */
    snprintf(dir, sizeof dir, "%s", argv[1]);
    char path[2048], err[512];
    snprintf(path, sizeof path, "%s/golden-w4-odd.safetensors", dir);
    segd_model *m;
    TEST_REQUIRE(segd_model_load(path, &m, err, sizeof err) == 0);
    segd_worker *w;
    TEST_EQ_INT(segd_worker_create(m, 0, &w), -EINVAL);
    TEST_REQUIRE(segd_worker_create(m, 2000, &w) == 0);
    TEST_EQ_INT(segd_worker_max_pixels(w), 2000);
    TEST_CHECK(segd_worker_arena_bytes(w) > 2000 * (4 + 12 + 3));
    test_png_errors(w);
    test_user_limit(m);
    test_gray(w);
    test_json(m, w);
    segd_worker_free(w);
    segd_worker_free(NULL);
    segd_model_free(m);
    test_model_options(path);
    test_cli();
    test_weights_lookup(argv[2]);
    return test_report("test_engine");
}
