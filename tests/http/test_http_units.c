/* Unit tests of the daemon's pure modules: HTTP helpers, configuration
 * (flags, environment, precedence), the bounded queue with deadlines, and
 * the metrics registry (format and thread safety). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>
#include <time.h>
#include <string.h>
#include <stdlib.h>
#include <stdio.h>

#include "harness.h"
#include "segd/config.h"
#include "segd/engine.h"
#include "http/auth.h"
#include "http/http.h"
#include "segd/metrics.h"
#include "segd/series.h"
#include "jobs/queue.h"

static void test_helpers(void)
{
    TEST_CHECK(segd_http_request_id_valid("abc-123_X.y"));
    TEST_CHECK(!segd_http_request_id_valid(""));
    TEST_CHECK(!segd_http_request_id_valid("has space"));
    TEST_CHECK(!segd_http_request_id_valid("tab\there"));
    TEST_CHECK(!segd_http_request_id_valid("caf\xc3\xa9"));
    TEST_CHECK(!segd_http_request_id_valid(NULL));
    char id[200];
    memset(id, 'a', sizeof id);
    id[128] = '\0';
    TEST_CHECK(segd_http_request_id_valid(id));
    id[128] = 'a';
    id[129] = '\0';
    TEST_CHECK(!segd_http_request_id_valid(id));

    /* issue 11 item 8: one parser (segd_threshold_parse) for `segd infer
     * --threshold` and ?threshold=, 0 < t < 1, decimal only */
    float t = 0;
    TEST_EQ_INT(segd_threshold_parse("0.25", &t), 0);
    TEST_CHECK(fabsf(t - 0.25f) < 1e-7f);
    TEST_EQ_INT(segd_threshold_parse("1e-3", &t), 0);
    TEST_EQ_INT(segd_threshold_parse(".5", &t), 0);
    TEST_EQ_INT(segd_threshold_parse("5E-1", &t), 0);
    TEST_CHECK(t == 0.5f);
    const char *bad[] = {"0", "1", "1.0", "0.0", "-0.5", "+0.5", "abc", "", " 0.5", "0.5 ", "nan",
                         "inf", "-inf", "0.9999999999", "0x0.8", "0x0.8p0", "1e-999", ".", "e-1",
                         "0.5e", "0.5e+", "5e-1x", "0,5", NULL};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = 0.125f;
        int rc = segd_threshold_parse(bad[i], &t);
        if (rc != -EINVAL)
            fprintf(stderr, "  threshold '%s' accepted\n", bad[i] ? bad[i] : "(null)");
        TEST_EQ_INT(rc, -EINVAL);
        TEST_CHECK(t == 0.125f); /* unchanged on error */
    }

    TEST_CHECK(segd_http_media_type_is("image/png", "image/png"));
    TEST_CHECK(segd_http_media_type_is(" IMAGE/PNG ; x=y", "image/png"));
    TEST_CHECK(!segd_http_media_type_is("image/pngx", "image/png"));
    TEST_CHECK(!segd_http_media_type_is(NULL, "image/png"));

    char out[16];
    const char *fn = "C:\\dir/sub\\slice_0001.png";
    segd_http_id_from_filename(fn, strlen(fn), out, sizeof out);
    TEST_EQ_STR(out, "slice_0001");
    segd_http_id_from_filename("a b.tar.gz", 10, out, sizeof out);
    TEST_EQ_STR(out, "a_b.tar");
    segd_http_id_from_filename(".hidden", 7, out, sizeof out);
    TEST_EQ_STR(out, ".hidden");
    segd_http_id_from_filename("", 0, out, sizeof out);
    TEST_EQ_STR(out, "");
    segd_http_id_from_filename("averyveryverylongname.png", 25, out, sizeof out);
    TEST_EQ_INT(strlen(out), 15);
    /* issue 11 item 6: UTF-8 kept, shortened on a character boundary,
     * bytes that are not UTF-8 (and C1 controls) become '_' */
    segd_http_id_from_filename("\xe8\x83\x83 1.png", 9, out, sizeof out);
    TEST_EQ_STR(out, "\xe8\x83\x83_1");
    segd_http_id_from_filename("\xe8\x83\x83\xe8\x83\x83\xe8\x83\x83\xe8\x83\x83\xe8\x83\x83\xe8\x83\x83", 18, out, sizeof out);
    TEST_EQ_STR(out, "\xe8\x83\x83\xe8\x83\x83\xe8\x83\x83\xe8\x83\x83\xe8\x83\x83"); /* 15 of 15 bytes */
    segd_http_id_from_filename("a\xff\xc2\x85\xe8\x83.png", 10, out, sizeof out);
    TEST_EQ_STR(out, "a_____");
    char small[5];
    segd_http_id_from_filename("ab\xe8\x83\x83", 5, small, sizeof small);
    TEST_EQ_STR(small, "ab");

    TEST_EQ_INT(segd_http_status_for_errno(-EINVAL), 400);
    TEST_EQ_INT(segd_http_status_for_errno(-E2BIG), 413);
    TEST_EQ_INT(segd_http_status_for_errno(-EDOM), 422);
    TEST_EQ_INT(segd_http_status_for_errno(-ENOMEM), 503);
    TEST_EQ_INT(segd_http_status_for_errno(-ENOTSUP), 415);
    TEST_EQ_INT(segd_http_status_for_errno(-EXDEV), 422);
    TEST_EQ_INT(segd_http_status_for_errno(-EIO), 500);

    char *e = segd_http_error_body("bad_request", "bad \"x\" \xff\n");
    TEST_EQ_STR(e, "{\"error\":{\"code\":\"bad_request\",\"message\":\"bad \\\"x\\\" ??\"}}");
    free(e);

    unsigned w, h;
    const unsigned char png[24] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
                                   'I', 'H', 'D', 'R', 0, 0, 1, 2, 0, 0, 0, 3};
    TEST_EQ_INT(segd_http_png_size(png, sizeof png, &w, &h), 0);
    TEST_EQ_INT(w, 258);
    TEST_EQ_INT(h, 3);
    TEST_EQ_INT(segd_http_png_size(png, 20, &w, &h), -EINVAL);
    TEST_EQ_INT(segd_http_png_size("GIF89a..................", 24, &w, &h), -EINVAL);
}

/* UTF-8 check of ?id= (jansson-free: allocation failure must not read as a bad id) */
/* Accept negotiation (RFC 9110 12.5.1): the most specific range decides. */
static void test_accept(void)
{
    TEST_CHECK(segd_http_accepts(NULL, "application/json"));
    TEST_CHECK(segd_http_accepts("*/*", "application/dicom"));
    TEST_CHECK(segd_http_accepts("application/*", "application/dicom"));
    TEST_CHECK(!segd_http_accepts("application/*", "multipart/related"));
    TEST_CHECK(segd_http_accepts("text/html, Application/DICOM;q=0.5", "application/dicom"));
    TEST_CHECK(!segd_http_accepts("application/json", "application/dicom"));
    TEST_CHECK(!segd_http_accepts("*/*, application/dicom;q=0", "application/dicom"));
    TEST_CHECK(segd_http_accepts("*/*;q=0, application/dicom", "application/dicom"));
    TEST_CHECK(!segd_http_accepts("*/*;q=0, application/dicom", "application/json"));
    TEST_CHECK(segd_http_accepts("multipart/related; type=\"application/dicom\"",
                                 "multipart/related"));
    TEST_CHECK(!segd_http_accepts("application/dicom;q=abc", "application/dicom"));
    TEST_CHECK(!segd_http_accepts("application/dicom;q=2", "application/dicom"));
    TEST_CHECK(!segd_http_accepts("", "application/json"));
    TEST_CHECK(!segd_http_accepts("application/dicomx", "application/dicom"));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* API keys: loading, matching, and a comparison whose time does not
 * depend on how much of a key the token matches (tokens that differ from
 * a key in the first byte and in the last take the same time: medians of
 * interleaved batches within 30 %; the check hashes the token and compares
 * whole digests with every key, so the expected ratio is 1). */
static void test_api_keys(void)
{
    char path[] = "/tmp/segd-keys-XXXXXX";
    int fd = mkstemp(path);
    TEST_CHECK(fd >= 0);
    const char *text = "# keys\n\n   abcdefghijklmnopqrstuvwxyz0123456789  \nsecond-key-0123456789==\n";
    TEST_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    segd_keys *k = NULL;
    char err[256];
    TEST_EQ_INT(segd_auth_load(path, &k, err, sizeof err), 0);
    TEST_EQ_INT(segd_auth_count(k), 2);
    TEST_CHECK(segd_auth_check(k, "Bearer abcdefghijklmnopqrstuvwxyz0123456789"));
    TEST_CHECK(segd_auth_check(k, "BEARER   second-key-0123456789==  "));
    TEST_CHECK(!segd_auth_check(k, NULL));
    TEST_CHECK(!segd_auth_check(k, "abcdefghijklmnopqrstuvwxyz0123456789"));
    TEST_CHECK(!segd_auth_check(k, "Bearer abcdefghijklmnopqrstuvwxyz012345678"));
    TEST_CHECK(!segd_auth_check(k, "Bearer abcdefghijklmnopqrstuvwxyz01234567890"));
    TEST_CHECK(!segd_auth_check(k, "Bearer ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"));
    TEST_CHECK(!segd_auth_check(k, "Bearerabcdefghijklmnopqrstuvwxyz0123456789"));
    TEST_CHECK(!segd_auth_check(k, "Bearer second-key-0123456789=x"));

    const char *late = "Bearer abcdefghijklmnopqrstuvwxyz012345678X";  /* last byte differs */
    const char *early = "Bearer Xbcdefghijklmnopqrstuvwxyz0123456789"; /* first byte differs */
    enum { ROUNDS = 41, BATCH = 3000 };
    double tl[ROUNDS], te[ROUNDS];
    volatile bool sink = false;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_s();
        for (int i = 0; i < BATCH; i++)
            sink |= segd_auth_check(k, late);
        double t1 = now_s();
        for (int i = 0; i < BATCH; i++)
            sink |= segd_auth_check(k, early);
        double t2 = now_s();
        tl[r] = t1 - t0;
        te[r] = t2 - t1;
    }
    TEST_CHECK(!sink);
    qsort(tl, ROUNDS, sizeof tl[0], cmp_double);
    qsort(te, ROUNDS, sizeof te[0], cmp_double);
    double ratio = tl[ROUNDS / 2] / te[ROUNDS / 2];
    fprintf(stderr, "  api keys: %.0f ns per check (mismatch at the end), %.0f ns (at the start), "
                    "ratio %.3f\n", tl[ROUNDS / 2] / BATCH * 1e9, te[ROUNDS / 2] / BATCH * 1e9, ratio);
    TEST_CHECK(ratio > 0.7 && ratio < 1.43);
    segd_auth_free(k);

    /* refusals name the line */
    FILE *f = fopen(path, "w");
    fputs("# c\nshort\n", f);
    fclose(f);
    TEST_EQ_INT(segd_auth_load(path, &k, err, sizeof err), -EINVAL);
    TEST_CHECK(k == NULL && strstr(err, "line 2") != NULL);
    f = fopen(path, "w");
    fputs("# nothing\n", f);
    fclose(f);
    TEST_EQ_INT(segd_auth_load(path, &k, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "no key") != NULL);
    unlink(path);
    TEST_EQ_INT(segd_auth_load(path, &k, err, sizeof err), -ENOENT);
}

/* W3C traceparent and X-Request-Timeout parsing. */
static void test_trace_deadline(void)
{
    char t[33], f[3];
    TEST_EQ_INT(segd_http_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", t, f), 0);
    TEST_EQ_STR(t, "4bf92f3577b34da6a3ce929d0e0e4736");
    TEST_EQ_STR(f, "01");
    TEST_EQ_INT(segd_http_traceparent_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-x", t, f), 0);
    const char *bad[] = {NULL, "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                         "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                         "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                         "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                         "00-4bf92f3577b34da6a3ce929d0e0e473G-00f067aa0ba902b7-01",
                         "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                         "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        TEST_EQ_INT(segd_http_traceparent_parse(bad[i], t, f), -EINVAL);
    double v = 0;
    TEST_EQ_INT(segd_http_seconds_parse("0.25", &v), 0);
    TEST_CHECK(v == 0.25);
    TEST_EQ_INT(segd_http_seconds_parse("1e1", &v), 0);
    TEST_CHECK(v == 10);
    const char *bads[] = {NULL, "", "0", "-1", "+1", " 1", "1s", "0x1", "inf", "nan", "1e999", "1e-999"};
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++)
        TEST_EQ_INT(segd_http_seconds_parse(bads[i], &v), -EINVAL);
}

/* Series post-processing (segd/series.h): 3D components, volumes, names. */
static void test_series(void)
{
    enum { N = 3, R = 6, C = 7 };
    static uint8_t data[N][2][R * C];
    uint8_t *masks[N] = {data[0][0], data[1][0], data[2][0]};
    /* organ 0: a 2x2x3 block (12 voxels) and a lone voxel touching it
     * only by a corner one slice up (26-connected: one component), plus a
     * lone voxel far away; organ 1: one voxel, value 255 */
    for (int k = 0; k < N; k++)
        for (int r = 1; r < 3; r++)
            for (int c = 1; c < 3; c++)
                data[k][0][r * C + c] = 1;
    data[1][0][3 * C + 3] = 1;  /* corner-touches (k=0..2, r=2, c=2) */
    data[2][0][5 * C + 6] = 1;  /* alone */
    data[0][1][0] = 255;
    double vox[3] = {1.0, 1.0, 10.0}; /* 10 mm^3 = 0.01 mL a voxel */
    size_t removed[2], removed_vox[2];
    TEST_EQ_INT(segd_series_cleanup(masks, N, R, C, 2, vox, 0.05, removed, removed_vox), 0);
    TEST_EQ_INT(removed[0], 1); /* the lone voxel; the block with its corner voxel (13) stays */
    TEST_EQ_INT(removed_vox[0], 1);
    TEST_EQ_INT(removed[1], 1);
    TEST_EQ_INT(data[2][0][5 * C + 6], 0);
    TEST_EQ_INT(data[1][0][3 * C + 3], 1);
    TEST_EQ_INT(data[0][0][1 * C + 1], 1);
    TEST_EQ_INT(data[0][1][0], 0);
    double ml[2];
    segd_series_volumes_ml((const uint8_t *const *)masks, N, R, C, 2, vox, ml);
    TEST_CHECK(fabs(ml[0] - 0.13) < 1e-12 && ml[1] == 0);
    /* threshold at exactly the block's volume keeps it; just above drops it */
    TEST_EQ_INT(segd_series_cleanup(masks, N, R, C, 2, vox, 0.13, removed, NULL), 0);
    TEST_EQ_INT(removed[0], 0);
    TEST_EQ_INT(segd_series_cleanup(masks, N, R, C, 2, vox, 0.1301, removed, NULL), 0);
    TEST_EQ_INT(removed[0], 1);
    segd_series_volumes_ml((const uint8_t *const *)masks, N, R, C, 2, vox, ml);
    TEST_CHECK(ml[0] == 0);
    /* off, and bad arguments */
    data[0][1][5] = 7;
    TEST_EQ_INT(segd_series_cleanup(masks, N, R, C, 2, vox, 0, removed, NULL), 0);
    TEST_EQ_INT(data[0][1][5], 1); /* normalised, kept */
    double bad[3] = {1, 0, 1};
    TEST_EQ_INT(segd_series_cleanup(masks, N, R, C, 2, bad, 1, removed, NULL), -EINVAL);
    TEST_EQ_INT(segd_series_cleanup(masks, 0, R, C, 2, vox, 1, removed, NULL), -EINVAL);

    int sl, w, h;
    double sx, sy;
    TEST_EQ_INT(segd_series_kaggle_name("case123_day20_slice_0065_266_310_1.50_1.63.png", &sl, &w,
                                        &h, &sx, &sy), 0);
    TEST_CHECK(sl == 65 && w == 266 && h == 310 && sx == 1.5 && fabs(sy - 1.63) < 1e-12);
    TEST_EQ_INT(segd_series_kaggle_name("a/slice_dir/slice_0001_1_2_3_4", &sl, &w, &h, &sx, &sy), 0);
    TEST_CHECK(sl == 1 && w == 1 && h == 2 && sx == 3 && sy == 4);
    const char *bad_names[] = {"slice_0001_266_266_1.50.png", "slice_x_266_266_1.5_1.5.png",
                               "slice_0001_0_266_1.5_1.5.png", "slice_0001_266_266_0_1.5.png",
                               "slice_0001_266_266_1.5_1.5.jpg", "image.png",
                               "slice_0001_266_266_1._1.5.png", "slice_1234567890_2_2_1_1"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++)
        TEST_EQ_INT(segd_series_kaggle_name(bad_names[i], &sl, &w, &h, &sx, &sy), -EINVAL);
}

static void test_utf8(void)
{
    TEST_EQ_INT(segd_http_utf8_valid("case1_slice", 11), 1);
    TEST_EQ_INT(segd_http_utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14), 1);
    TEST_EQ_INT(segd_http_utf8_valid("\xff\xfe", 2), 0);         /* not UTF-8 at all */
    TEST_EQ_INT(segd_http_utf8_valid("\xc3", 1), 0);              /* truncated */
    TEST_EQ_INT(segd_http_utf8_valid("\xc0\xaf", 2), 0);          /* overlong '/' */
    TEST_EQ_INT(segd_http_utf8_valid("\xed\xa0\x80", 3), 0);      /* surrogate */
    TEST_EQ_INT(segd_http_utf8_valid("\xf4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    json_t *doc = json_pack("{s:s}", "a", "b");
    char *z = segd_json_text(doc, JSON_COMPACT);
    TEST_EQ_STR(z, "{\"a\":\"b\"}");
    free(z);
    json_decref(doc);
}

static void test_config(void)
{
    segd_config c;
    char err[256];
    segd_config_defaults(&c);
    char *argv0[] = {"serve", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 1, argv0, NULL, err, sizeof err), 0);
    TEST_EQ_INT(c.port, 8080);
    TEST_EQ_STR(c.bind, "0.0.0.0");
    TEST_CHECK(c.workers >= 1);
    TEST_EQ_INT(c.queue_depth, 2 * c.workers);
    TEST_EQ_INT(c.worker_threads, 1);
    TEST_EQ_INT(c.max_body, 32u << 20);
    TEST_EQ_INT(c.max_parts, 16);
    TEST_EQ_STR(c.cors_origin, "");
    TEST_EQ_STR(c.gemm, "auto");
    TEST_EQ_STR(c.precision, "fp32");

    /* environment, then flags win */
    segd_config_defaults(&c);
    char *env[] = {"SEGD_PORT=9000", "SEGD_WORKERS=3", "SEGD_CORS_ORIGIN=*", "SEGD_MAX_BODY=2M",
                   "PATH=/bin", "SEGD_UNKNOWN=1", "SEGD_REQUEST_TIMEOUT=0.5", "SEGD_GEMM=native",
                   "SEGD_PRECISION=auto", NULL};
    char *argv1[] = {"serve", "--port", "0", "--max-body=4k", "--queue-depth", "7", "--help",
                     "--gemm", "openblas", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 9, argv1, env, err, sizeof err), 0);
    TEST_EQ_STR(c.gemm, "openblas");
    TEST_EQ_STR(c.precision, "auto");
    TEST_EQ_INT(c.port, 0);
    TEST_EQ_INT(c.workers, 3);
    TEST_EQ_STR(c.cors_origin, "*");
    TEST_EQ_INT(c.max_body, 4096);
    TEST_EQ_INT(c.queue_depth, 7);
    TEST_CHECK(fabs(c.request_timeout - 0.5) < 1e-12);
    TEST_CHECK(c.help);

    /* the derived queue depth follows the final worker count */
    segd_config_defaults(&c);
    char *argv2[] = {"serve", "--workers", "5", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 3, argv2, NULL, err, sizeof err), 0);
    TEST_EQ_INT(c.queue_depth, 10);

    /* upload budget: a quarter of the memory given unless set, never
     * under one --max-body; probe listener off unless set */
    segd_config_defaults(&c);
    TEST_CHECK(c.memory_bytes > 0);
    c.memory_bytes = 512u << 20; /* as in a 512Mi container */
    TEST_EQ_INT(segd_config_parse(&c, 1, argv0, NULL, err, sizeof err), 0);
    TEST_EQ_INT(c.max_body_total, 128u << 20);
    TEST_EQ_INT(c.probe_port, -1);
    segd_config_defaults(&c);
    c.memory_bytes = 64u << 20;
    TEST_EQ_INT(segd_config_parse(&c, 1, argv0, NULL, err, sizeof err), 0);
    TEST_EQ_INT(c.max_body_total, c.max_body);
    segd_config_defaults(&c);
    char *env4[] = {"SEGD_MAX_BODY_TOTAL=128Mi", "SEGD_PROBE_PORT=8081", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 1, argv0, env4, err, sizeof err), 0);
    TEST_EQ_INT(c.max_body_total, 128u << 20);
    TEST_EQ_INT(c.probe_port, 8081);

    const char *bad[][2] = {{"--port", "65536"}, {"--workers", "0"}, {"--workers", "2.5"},
                            {"--max-body", "12Q"}, {"--request-timeout", "0"}, {"--nope", "1"},
                            {"--access-log", "maybe"}, {"--port", ""}, {"--gemm", "mkl"},
                            {"--gemm", ""}, {"--precision", "fp16"}, {"--precision", ""}, {"--probe-port", "-2"}, {"--max-body-total", "0"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        segd_config_defaults(&c);
        char *argv3[] = {"serve", (char *)bad[i][0], (char *)bad[i][1], NULL};
        err[0] = '\0';
        TEST_EQ_INT(segd_config_parse(&c, 3, argv3, NULL, err, sizeof err), -EINVAL);
        TEST_CHECK(err[0] != '\0');
    }
    segd_config_defaults(&c);
    char *argv4[] = {"serve", "--port", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 2, argv4, NULL, err, sizeof err), -EINVAL);
    char *env2[] = {"SEGD_PORT=http", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 1, argv0, env2, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "SEGD_PORT") != NULL);
    char *env3[] = {"SEGD_GEMM=blas", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 1, argv0, env3, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "SEGD_GEMM") != NULL);
    /* --batch: 1-64, a bad value told its range (flag and variable) */
    segd_config_defaults(&c);
    TEST_EQ_INT(c.batch, 1);
    char *argv5[] = {"serve", "--batch", "8", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 3, argv5, NULL, err, sizeof err), 0);
    TEST_EQ_INT(c.batch, 8);
    char *argv6[] = {"serve", "--batch", "65", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 3, argv6, NULL, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "--batch: an integer from 1 to 64") != NULL);
    char *env5[] = {"SEGD_BATCH=0", NULL};
    TEST_EQ_INT(segd_config_parse(&c, 1, argv0, env5, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "SEGD_BATCH: an integer from 1 to 64") != NULL);
}

static void test_queue(void)
{
    segd_queue *q;
    TEST_EQ_INT(segd_queue_create(0, &q), -EINVAL);
    TEST_EQ_INT(segd_queue_create(2, &q), 0);
    int a, b, c;
    void *job;
    double dl;
    double far = segd_queue_now() + 100;
    TEST_EQ_INT(segd_queue_push(q, &a, far), 0);
    TEST_EQ_INT(segd_queue_push(q, &b, far + 1), 0);
    TEST_EQ_INT(segd_queue_push(q, &c, far), -EAGAIN);
    TEST_EQ_INT(segd_queue_length(q), 2);
    TEST_EQ_INT(segd_queue_pop(q, &job, &dl), 0);
    TEST_CHECK(job == &a && dl == far);
    TEST_EQ_INT(segd_queue_push(q, &c, far), 0); /* wraps around */
    TEST_EQ_INT(segd_queue_try_pop(q, &job, &dl), 0);
    TEST_CHECK(job == &b);
    TEST_EQ_INT(segd_queue_try_pop(q, &job, &dl), 0);
    TEST_CHECK(job == &c);
    TEST_EQ_INT(segd_queue_try_pop(q, &job, &dl), -EAGAIN);

    /* remove from the middle of a wrapped ring: the rest keep their order */
    segd_queue *q3;
    int x[3];
    TEST_EQ_INT(segd_queue_create(3, &q3), 0);
    TEST_EQ_INT(segd_queue_push(q3, &a, far), 0);
    TEST_EQ_INT(segd_queue_try_pop(q3, &job, &dl), 0); /* head moves to slot 1 */
    for (int i = 0; i < 3; i++)
        TEST_EQ_INT(segd_queue_push(q3, &x[i], far + i), 0);
    TEST_EQ_INT(segd_queue_remove(q3, &x[1]), 0);
    TEST_EQ_INT(segd_queue_remove(q3, &x[1]), -ENOENT);
    TEST_EQ_INT(segd_queue_length(q3), 2);
    TEST_EQ_INT(segd_queue_try_pop(q3, &job, &dl), 0);
    TEST_CHECK(job == &x[0] && dl == far);
    TEST_EQ_INT(segd_queue_try_pop(q3, &job, &dl), 0);
    TEST_CHECK(job == &x[2] && dl == far + 2);
    TEST_EQ_INT(segd_queue_remove(q3, &x[2]), -ENOENT);
    segd_queue_free(q3);

    /* expiry: the reaper call returns once the head's deadline passed */
    double t0 = segd_queue_now();
    TEST_EQ_INT(segd_queue_push(q, &a, t0 + 0.05), 0);
    TEST_EQ_INT(segd_queue_pop_expired(q, &job), 0);
    TEST_CHECK(job == &a);
    double waited = segd_queue_now() - t0;
    TEST_CHECK(waited >= 0.049 && waited < 1.0);

    /* a shorter deadline queued behind a longer one (X-Request-Timeout)
     * expires first, and the longer one keeps its place */
    t0 = segd_queue_now();
    TEST_EQ_INT(segd_queue_push(q, &a, far), 0);
    TEST_EQ_INT(segd_queue_push(q, &b, t0 + 0.05), 0);
    TEST_EQ_INT(segd_queue_pop_expired(q, &job), 0);
    TEST_CHECK(job == &b);
    TEST_CHECK(segd_queue_now() - t0 < 50.0); /* not at a's deadline (100 s) */
    TEST_EQ_INT(segd_queue_length(q), 1);
    TEST_EQ_INT(segd_queue_try_pop(q, &job, &dl), 0);
    TEST_CHECK(job == &a && dl == far);

    /* close: pushes refused, queued jobs still popped, then -ESHUTDOWN */
    TEST_EQ_INT(segd_queue_push(q, &b, far), 0);
    segd_queue_close(q);
    TEST_EQ_INT(segd_queue_push(q, &c, far), -ESHUTDOWN);
    TEST_EQ_INT(segd_queue_pop_expired(q, &job), -ESHUTDOWN);
    TEST_EQ_INT(segd_queue_pop(q, &job, &dl), 0);
    TEST_CHECK(job == &b);
    TEST_EQ_INT(segd_queue_pop(q, &job, &dl), -ESHUTDOWN);
    segd_queue_free(q);
}

typedef struct qthread {
    segd_queue *q;
    long got;
} qthread;

static void *consumer(void *p)
{
    qthread *t = p;
    void *job;
    double dl;
    while (segd_queue_pop(t->q, &job, &dl) == 0)
        t->got += (long)(intptr_t)job;
    return NULL;
}

static void *reaper(void *p)
{
    qthread *t = p;
    void *job = NULL;
    t->got = segd_queue_pop_expired(t->q, &job) == 0 ? *(int *)job : -1;
    return NULL;
}

/* a reaper already asleep until a far deadline wakes for a shorter one
 * pushed behind it */
static void test_queue_reaper_wakes(void)
{
    segd_queue *q;
    TEST_EQ_INT(segd_queue_create(4, &q), 0);
    int a = 1, b = 2;
    double t0 = segd_queue_now();
    TEST_EQ_INT(segd_queue_push(q, &a, t0 + 100), 0);
    qthread t = {q, 0};
    pthread_t th;
    TEST_REQUIRE(pthread_create(&th, NULL, reaper, &t) == 0);
    struct timespec nap = {0, 20 * 1000 * 1000}; /* let it fall asleep on a's deadline */
    nanosleep(&nap, NULL);
    TEST_EQ_INT(segd_queue_push(q, &b, segd_queue_now() + 0.05), 0);
    pthread_join(th, NULL);
    TEST_EQ_INT(t.got, 2);
    TEST_CHECK(segd_queue_now() - t0 < 50.0); /* woke for b, not at a's deadline */
    TEST_EQ_INT(segd_queue_length(q), 1);
    segd_queue_free(q);
}

/* producers never block; every accepted job is popped exactly once */
static void test_queue_threads(void)
{
    segd_queue *q;
    TEST_EQ_INT(segd_queue_create(8, &q), 0);
    qthread ts[3] = {{q, 0}, {q, 0}, {q, 0}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        TEST_REQUIRE(pthread_create(&th[i], NULL, consumer, &ts[i]) == 0);
    long pushed = 0, refused = 0;
    for (intptr_t i = 1; i <= 20000; i++) {
        int rc = segd_queue_push(q, (void *)i, segd_queue_now() + 100);
        if (rc == 0)
            pushed += (long)i;
        else
            refused++;
    }
    segd_queue_close(q);
    long got = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        got += ts[i].got;
    }
    TEST_EQ_INT(got, pushed);
    fprintf(stderr, "  queue threads: %ld refused of 20000\n", refused);
    segd_queue_free(q);
}

static void *observer(void *p)
{
    segd_metrics *m = p;
    for (int i = 0; i < 20000; i++) {
        segd_metrics_observe(m, SEGD_HIST_INFERENCE, 0.003);
        segd_metrics_inc(m, SEGD_COUNTER_JOBS_REJECTED);
        segd_metrics_count_request(m, "/v1/segment", i % 2 ? 200 : 503);
        segd_metrics_gauge_add(m, SEGD_GAUGE_CONNECTIONS, 1);
        segd_metrics_gauge_add(m, SEGD_GAUGE_CONNECTIONS, -1);
    }
    return NULL;
}

static void test_metrics(void)
{
    segd_metrics *m;
    TEST_EQ_INT(segd_metrics_create("1.2.3", "unet \"q\"", "ab\\cd", 16, &m), 0);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        TEST_REQUIRE(pthread_create(&th[i], NULL, observer, m) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    segd_metrics_observe(m, SEGD_HIST_REQUEST, 0.0);   /* lowest bucket */
    segd_metrics_observe(m, SEGD_HIST_REQUEST, 100.0); /* only +Inf */
    segd_metrics_observe(m, SEGD_HIST_REQUEST, NAN);
    char *text;
    size_t len;
    TEST_EQ_INT(segd_metrics_render(m, &text, &len), 0);
    TEST_EQ_INT(strlen(text), len);
    TEST_CHECK(strstr(text, "segd_inference_duration_seconds_count 80000\n"));
    TEST_CHECK(strstr(text, "segd_inference_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
    TEST_CHECK(strstr(text, "segd_inference_duration_seconds_bucket{le=\"0.005\"} 80000\n"));
    TEST_CHECK(strstr(text, "segd_inference_duration_seconds_bucket{le=\"+Inf\"} 80000\n"));
    TEST_CHECK(strstr(text, "segd_request_duration_seconds_bucket{le=\"0.001\"} 2\n"));
    TEST_CHECK(strstr(text, "segd_request_duration_seconds_bucket{le=\"30\"} 2\n"));
    TEST_CHECK(strstr(text, "segd_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
    TEST_CHECK(strstr(text, "segd_jobs_rejected_total 80000\n"));
    TEST_CHECK(strstr(text, "segd_http_requests_total{route=\"/v1/segment\",code=\"200\"} 40000\n"));
    TEST_CHECK(strstr(text, "segd_http_requests_total{route=\"/v1/segment\",code=\"503\"} 40000\n"));
    TEST_CHECK(strstr(text, "segd_connections_in_flight 0\n"));
    TEST_CHECK(strstr(text, "segd_model_info{name=\"unet \\\"q\\\"\",sha256=\"ab\\\\cd\",width=\"16\"} 1\n"));
    TEST_CHECK(strstr(text, "segd_build_info{version=\"1.2.3\"} 1\n"));
    TEST_CHECK(strstr(text, "# TYPE segd_queue_wait_seconds histogram\n"));
    TEST_EQ_INT(segd_metrics_counter_value(m, SEGD_COUNTER_JOBS_REJECTED), 80000);
    free(text);

    /* more series than the table holds: counted under "overflow" */
    for (int i = 0; i < SEGD_METRICS_MAX_SERIES + 5; i++)
        segd_metrics_count_request(m, "/x", 1000 + i);
    TEST_EQ_INT(segd_metrics_render(m, &text, &len), 0);
    TEST_CHECK(strstr(text, "route=\"overflow\"") != NULL);
    free(text);
    segd_metrics_free(m);
}

int main(void)
{
    test_utf8();
    test_helpers();
    test_accept();
    test_trace_deadline();
    test_api_keys();
    test_series();
    test_config();
    test_queue();
    test_queue_threads();
    test_queue_reaper_wakes();
    test_metrics();
    return test_report("test_http_units");
}
