/* Integration test of `segd serve`: starts the real daemon on an ephemeral
 * loopback port (several configurations) and checks every route, every
 * error status, multipart, RLE parity with `segd infer`, metrics deltas,
 * CORS, queue-full 503, deadline 504, client disconnects and the SIGTERM
 * drain.
 *
 * usage: test_serve SEGD_EXE WEIGHTS DATA_DIR */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "http/client.h"

#define NSLICES 5

typedef struct ctx {
    const char *exe, *weights, *data;
    uint8_t *png[NSLICES];
    size_t len[NSLICES];
    int width[NSLICES], height[NSLICES];
    json_t *ref_masks[NSLICES]; /* masks of a single request per slice */
    uint8_t *huge;              /* 400x400: over --max-pixels of the main daemon */
    size_t huge_len;
} ctx;

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static json_t *parse_json(const tc_req *r)
{
    json_error_t e;
    return json_loadb(r->resp.p, r->resp.len, 0, &e);
}

/* 1 when the body is {"error":{"code":code,"message":"..."}} */
static int is_error_doc(const tc_req *r, const char *code)
{
    json_t *doc = parse_json(r);
    const char *c = NULL, *m = NULL;
    int ok = doc && json_unpack(doc, "{s:{s:s, s:s}}", "error", "code", &c, "message", &m) == 0 &&
             strcmp(c, code) == 0 && m[0];
    if (!ok)
        fprintf(stderr, "  expected error %s, got %ld: %s\n", code, r->status, r->resp.p);
    json_decref(doc);
    return ok;
}

static int header_is(const tc_req *r, const char *name, const char *value)
{
    char v[512];
    return tc_header(r, name, v, sizeof v) && strcmp(v, value) == 0;
}

static int header_has(const tc_req *r, const char *name, const char *part)
{
    char v[512];
    return tc_header(r, name, v, sizeof v) && strstr(v, part) != NULL;
}

static void get(tc_req *r, int port, const char *method, const char *path)
{
    tc_req_init(r, port, method, path);
    tc_perform(r);
}

static void post(tc_req *r, int port, const char *path, const char *ctype, const void *body,
                 size_t len)
{
    tc_req_init(r, port, "POST", path);
    r->ctype = ctype;
    r->body = body;
    r->len = len;
    tc_perform(r);
}

static char *scrape(int port)
{
    tc_req r;
    get(&r, port, "GET", "/metrics");
    TEST_EQ_INT(r.status, 200);
    char *text = r.resp.p;
    r.resp.p = NULL;
    tc_req_free(&r);
    return text;
}

static double metric(const char *text, const char *key) { return tc_prom_value(text, key); }

/* 1 once /metrics shows no busy worker and an empty queue (within 2 s). */
static int wait_idle(int port)
{
    double t0 = tc_now();
    while (tc_now() - t0 < 20.0) { /* generous: sanitizer builds are slow */
        char *m = scrape(port);
        int idle = metric(m, "segd_workers_busy") == 0 && metric(m, "segd_queue_depth") == 0;
        free(m);
        if (idle)
            return 1;
        tc_sleep_ms(5);
    }
    return 0;
}

static int slurp_slice(ctx *c, int i, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", c->data, name);
    c->png[i] = (uint8_t *)tc_read_file(path, &c->len[i]);
    if (!c->png[i])
        return -1;
    unsigned char *p = c->png[i];
    c->width[i] = p[16] << 24 | p[17] << 16 | p[18] << 8 | p[19];
    c->height[i] = p[20] << 24 | p[21] << 16 | p[22] << 8 | p[23];
    return 0;
}

static int make_slice(ctx *c, int i, int w, int h, unsigned seed)
{
    c->width[i] = w;
    c->height[i] = h;
    return tc_png_make(w, h, seed, &c->png[i], &c->len[i]);
}

/* ------------------------------------------------------------------ */
/* main daemon: routes, errors, multipart, parity, metrics, CORS        */
/* ------------------------------------------------------------------ */

static void test_routes(const ctx *c, int port)
{
    tc_req r;
    char v[256];

    get(&r, port, "GET", "/healthz");
    TEST_EQ_INT(r.status, 200);
    TEST_CHECK(header_has(&r, "Content-Type", "application/json"));
    TEST_CHECK(tc_header(&r, "X-Request-Id", v, sizeof v) && strlen(v) == 16);
    TEST_CHECK(header_is(&r, "Access-Control-Allow-Origin", "*"));
    /* a script from another origin reads these, Retry-After for its 503s */
    TEST_CHECK(header_is(&r, "Access-Control-Expose-Headers", "X-Request-Id, traceparent, Retry-After"));
    TEST_CHECK(!tc_header(&r, "Vary", v, sizeof v)); /* '*' does not vary by Origin */
    tc_req_free(&r);

    get(&r, port, "HEAD", "/healthz");
    TEST_EQ_INT(r.status, 200);
    TEST_EQ_INT(r.resp.len, 0);
    tc_req_free(&r);

    get(&r, port, "GET", "/readyz");
    TEST_EQ_INT(r.status, 200);
    tc_req_free(&r);

    get(&r, port, "GET", "/v1/model");
    TEST_EQ_INT(r.status, 200);
    json_t *info = parse_json(&r);
    TEST_CHECK(json_is_object(info));
    TEST_CHECK(json_is_string(json_object_get(info, "sha256")));
    TEST_CHECK(json_is_string(json_object_get(info, "name")));
    TEST_CHECK(json_is_string(json_object_get(info, "kernel")));
    /* the default precision; bf16 is opt-in (--precision, SEGD_PRECISION) */
    TEST_EQ_STR(json_string_value(json_object_get(info, "precision")), "fp32");
    json_decref(info);
    tc_req_free(&r);

    get(&r, port, "GET", "/nope");
    TEST_EQ_INT(r.status, 404);
    TEST_CHECK(is_error_doc(&r, "not_found"));
    TEST_CHECK(header_is(&r, "Access-Control-Allow-Origin", "*"));
    tc_req_free(&r);

    get(&r, port, "GET", "/v1/segment/extra");
    TEST_EQ_INT(r.status, 404);
    tc_req_free(&r);

    post(&r, port, "/healthz", "application/json", "{}", 2);
    TEST_EQ_INT(r.status, 405);
    TEST_CHECK(is_error_doc(&r, "method_not_allowed"));
    TEST_CHECK(header_has(&r, "Allow", "GET"));
    tc_req_free(&r);

    get(&r, port, "GET", "/v1/segment");
    TEST_EQ_INT(r.status, 405);
    TEST_CHECK(header_has(&r, "Allow", "POST"));
    tc_req_free(&r);

    get(&r, port, "DELETE", "/metrics");
    TEST_EQ_INT(r.status, 405);
    tc_req_free(&r);

    /* the embedded web viewer and the API description */
    get(&r, port, "GET", "/");
    TEST_EQ_INT(r.status, 200);
    TEST_CHECK(header_has(&r, "Content-Type", "text/html"));
    TEST_CHECK(strstr(r.resp.p, "<html") || strstr(r.resp.p, "<HTML"));
    tc_req_free(&r);
    get(&r, port, "GET", "/openapi.json");
    TEST_EQ_INT(r.status, 200);
    json_t *api = parse_json(&r);
    TEST_CHECK(json_is_object(json_object_get(api, "paths")));
    json_decref(api);
    tc_req_free(&r);
    get(&r, port, "HEAD", "/viewer.js");
    TEST_EQ_INT(r.status, 200);
    TEST_CHECK(header_has(&r, "Content-Type", "javascript"));
    tc_req_free(&r);
    post(&r, port, "/", "text/plain", "x", 1);
    TEST_EQ_INT(r.status, 405);
    TEST_CHECK(header_has(&r, "Allow", "GET"));
    tc_req_free(&r);

    /* CORS preflight */
    tc_req_init(&r, port, "OPTIONS", "/v1/segment");
    r.headers[0] = "Origin: https://viewer.example";
    r.headers[1] = "Access-Control-Request-Method: POST";
    r.headers[2] = "Access-Control-Request-Headers: Content-Type, X-Request-Id";
    tc_perform(&r);
    TEST_EQ_INT(r.status, 204);
    TEST_CHECK(header_is(&r, "Access-Control-Allow-Origin", "*"));
    TEST_CHECK(header_has(&r, "Access-Control-Allow-Methods", "POST"));
    TEST_CHECK(header_has(&r, "Access-Control-Allow-Headers", "Content-Type"));
    TEST_CHECK(header_has(&r, "Access-Control-Allow-Headers", "X-Request-Id"));
    TEST_CHECK(tc_header(&r, "Access-Control-Max-Age", v, sizeof v) && atoi(v) > 0);
    TEST_EQ_INT(r.resp.len, 0);
    tc_req_free(&r);
    (void)c;
}

/* POST one slice; returns the parsed document (caller decrefs) or NULL. */
static json_t *segment(int port, const uint8_t *png, size_t len, const char *query, long *status)
{
    tc_req r;
    char path[256];
    snprintf(path, sizeof path, "/v1/segment%s", query ? query : "");
    post(&r, port, path, "image/png", png, len);
    *status = r.status;
    json_t *doc = r.status == 200 ? parse_json(&r) : NULL;
    tc_req_free(&r);
    return doc;
}

static void test_segment(ctx *c, int port)
{
    tc_req r;
    char v[256];

    /* reference masks, one plain request per slice */
    for (int i = 0; i < NSLICES; i++) {
        long st;
        json_t *doc = segment(port, c->png[i], c->len[i], NULL, &st);
        TEST_EQ_INT(st, 200);
        TEST_REQUIRE(doc);
        c->ref_masks[i] = json_incref(json_object_get(doc, "masks"));
        TEST_CHECK(json_is_object(c->ref_masks[i]) && json_object_size(c->ref_masks[i]) > 0);
        TEST_EQ_INT(json_integer_value(json_object_get(doc, "width")), c->width[i]);
        TEST_EQ_INT(json_integer_value(json_object_get(doc, "height")), c->height[i]);
        json_decref(doc);
    }

    /* full response: id, X-Request-Id echo, timing, headers */
    tc_req_init(&r, port, "POST", "/v1/segment?id=slice-abc");
    r.ctype = "image/png";
    r.body = c->png[0];
    r.len = c->len[0];
    r.headers[0] = "X-Request-Id: req-42.test";
    tc_perform(&r);
    TEST_EQ_INT(r.status, 200);
    TEST_CHECK(header_is(&r, "Content-Type", "application/json"));
    TEST_CHECK(header_is(&r, "X-Request-Id", "req-42.test"));
    TEST_CHECK(header_is(&r, "Access-Control-Allow-Origin", "*"));
    json_t *doc = parse_json(&r);
    TEST_REQUIRE(doc);
    TEST_EQ_STR(json_string_value(json_object_get(doc, "id")), "slice-abc");
    json_t *t = json_object_get(doc, "timing_ms");
    const char *keys[] = {"queue", "decode", "infer", "encode"};
    for (int k = 0; k < 4; k++)
        TEST_CHECK(json_is_number(json_object_get(t, keys[k])) &&
                   json_number_value(json_object_get(t, keys[k])) >= 0);
    TEST_CHECK(json_equal(json_object_get(doc, "masks"), c->ref_masks[0]));
    TEST_CHECK(json_is_object(json_object_get(doc, "model")));
    json_decref(doc);
    tc_req_free(&r);

    /* without ?id= the document carries the request id */
    tc_req_init(&r, port, "POST", "/v1/segment");
    r.ctype = "image/png; charset=binary"; /* parameters are fine */
    r.body = c->png[2];
    r.len = c->len[2];
    tc_perform(&r);
    TEST_EQ_INT(r.status, 200);
    doc = parse_json(&r);
    TEST_CHECK(doc && tc_header(&r, "X-Request-Id", v, sizeof v) &&
               strcmp(json_string_value(json_object_get(doc, "id")), v) == 0);
    json_decref(doc);
    tc_req_free(&r);

    /* an invalid X-Request-Id is replaced by a generated one */
    char xs[141], longid[200];
    memset(xs, 'x', 140);
    xs[140] = '\0';
    snprintf(longid, sizeof longid, "X-Request-Id: %s", xs);
    const char *bad_ids[] = {"X-Request-Id: has space", longid};
    for (int k = 0; k < 2; k++) {
        tc_req_init(&r, port, "GET", "/healthz");
        r.headers[0] = bad_ids[k];
        tc_perform(&r);
        TEST_EQ_INT(r.status, 200);
        TEST_CHECK(tc_header(&r, "X-Request-Id", v, sizeof v) && strlen(v) == 16);
        tc_req_free(&r);
    }
    /* 128 printable characters are accepted */
    char id128[160];
    memset(id128, 'a', 128);
    id128[128] = '\0';
    char h128[200];
    snprintf(h128, sizeof h128, "X-Request-Id: %s", id128);
    tc_req_init(&r, port, "GET", "/healthz");
    r.headers[0] = h128;
    tc_perform(&r);
    TEST_CHECK(header_is(&r, "X-Request-Id", id128));
    tc_req_free(&r);

    /* threshold: validated, and applied (higher threshold, fewer pixels) */
    const char *bad_thr[] = {"?threshold=1.5", "?threshold=0", "?threshold=1", "?threshold=abc",
                             "?threshold=-0.2", "?threshold=0.5x", "?threshold="};
    for (size_t k = 0; k < sizeof bad_thr / sizeof bad_thr[0]; k++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/segment%s", bad_thr[k]);
        post(&r, port, path, "image/png", c->png[0], c->len[0]);
        TEST_EQ_INT(r.status, 400);
        TEST_CHECK(is_error_doc(&r, "bad_request"));
        tc_req_free(&r);
    }
    long st1, st9;
    json_t *lo = segment(port, c->png[0], c->len[0], "?threshold=0.05", &st1);
    json_t *hi = segment(port, c->png[0], c->len[0], "?threshold=0.95", &st9);
    TEST_EQ_INT(st1, 200);
    TEST_EQ_INT(st9, 200);
    if (lo && hi) {
        const char *k;
        json_t *n;
        long long sum_lo = 0, sum_hi = 0;
        json_object_foreach(json_object_get(lo, "pixels"), k, n) {
            long long a = json_integer_value(n);
            long long b = json_integer_value(json_object_get(json_object_get(hi, "pixels"), k));
            TEST_CHECK(b <= a);
            sum_lo += a;
            sum_hi += b;
        }
        TEST_CHECK(sum_hi <= sum_lo);
    }
    json_decref(lo);
    json_decref(hi);
}

static void test_errors(const ctx *c, int port)
{
    tc_req r;

    post(&r, port, "/v1/segment", "image/png", "definitely not a png", 20);
    TEST_EQ_INT(r.status, 400);
    TEST_CHECK(is_error_doc(&r, "bad_request"));
    tc_req_free(&r);

    /* valid header, truncated data: refused by the decoder in a worker */
    post(&r, port, "/v1/segment", "image/png", c->png[0], 200);
    TEST_EQ_INT(r.status, 400);
    TEST_CHECK(is_error_doc(&r, "bad_request"));
    tc_req_free(&r);

    post(&r, port, "/v1/segment", "image/png", "", 0);
    TEST_EQ_INT(r.status, 400);
    tc_req_free(&r);

    post(&r, port, "/v1/segment", "text/plain", c->png[0], c->len[0]);
    TEST_EQ_INT(r.status, 415);
    TEST_CHECK(is_error_doc(&r, "unsupported_media_type"));
    tc_req_free(&r);

    post(&r, port, "/v1/segment", NULL, c->png[0], c->len[0]);
    TEST_EQ_INT(r.status, 415);
    tc_req_free(&r);

    /* zero-size image: a PNG signature and an IHDR saying 0 x 16 */
    uint8_t zero[64];
    memcpy(zero, c->png[3], sizeof zero);
    memset(zero + 16, 0, 4);
    post(&r, port, "/v1/segment", "image/png", zero, sizeof zero);
    TEST_EQ_INT(r.status, 422);
    TEST_CHECK(is_error_doc(&r, "unprocessable_image"));
    tc_req_free(&r);

    /* too many pixels */
    post(&r, port, "/v1/segment", "image/png", c->huge, c->huge_len);
    TEST_EQ_INT(r.status, 413);
    TEST_CHECK(is_error_doc(&r, "payload_too_large"));
    TEST_CHECK(strstr(r.resp.p, "pixels") != NULL);
    tc_req_free(&r);

    /* body over --max-body (1 MiB): by Content-Length, and streamed */
    size_t big_len = 2u << 20;
    uint8_t *big = calloc(1, big_len);
    TEST_REQUIRE(big);
    memcpy(big, c->png[0], c->len[0]);
    /* as curl(1) and browsers do for large bodies: the 413 arrives before
     * the upload; without it the early answer can race the client's send */
    tc_req_init(&r, port, "POST", "/v1/segment");
    r.ctype = "image/png";
    r.body = big;
    r.len = big_len;
    r.expect_100 = 1;
    tc_perform(&r);
    TEST_EQ_INT(r.status, 413);
    TEST_CHECK(is_error_doc(&r, "payload_too_large"));
    TEST_CHECK(r.seconds < 20.0);
    tc_req_free(&r);

    tc_req_init(&r, port, "POST", "/v1/segment");
    r.ctype = "image/png";
    r.body = big;
    r.len = big_len;
    r.chunked = 1;
    tc_perform(&r);
    TEST_EQ_INT(r.status, 413);
    TEST_CHECK(is_error_doc(&r, "payload_too_large"));
    /* written on the socket mid-upload, with the same CORS headers */
    TEST_CHECK(header_is(&r, "Access-Control-Allow-Origin", "*"));
    TEST_CHECK(header_is(&r, "Access-Control-Expose-Headers", "X-Request-Id, traceparent, Retry-After"));
    tc_req_free(&r);

    /* a chunked body under the limit works */
    tc_req_init(&r, port, "POST", "/v1/segment");
    r.ctype = "image/png";
    r.body = c->png[1];
    r.len = c->len[1];
    r.chunked = 1;
    tc_perform(&r);
    TEST_EQ_INT(r.status, 200);
    tc_req_free(&r);
    free(big);
}

static void test_multipart(const ctx *c, int port)
{
    tc_req r;
    tc_buf body = {0};
    char ctype[128];

    /* three slices in one call, answered in order */
    uint8_t *pngs[5] = {c->png[0], c->png[1], c->png[2], c->png[3], c->png[4]};
    size_t lens[5] = {c->len[0], c->len[1], c->len[2], c->len[3], c->len[4]};
    const char *names[5] = {"scans/slice_one.png", "C:\\data\\slice_two.png", "three.png",
                            "four.png", "five.png"};
    tc_multipart(&body, ctype, sizeof ctype, 3, pngs, lens, names);
    post(&r, port, "/v1/segment", ctype, body.p, body.len);
    TEST_EQ_INT(r.status, 200);
    json_t *doc = parse_json(&r);
    json_t *res = json_object_get(doc, "results");
    TEST_CHECK(json_is_array(res) && json_array_size(res) == 3);
    const char *ids[3] = {"slice_one", "slice_two", "three"};
    for (size_t i = 0; i < 3 && i < json_array_size(res); i++) {
        json_t *d = json_array_get(res, i);
        TEST_EQ_STR(json_string_value(json_object_get(d, "id")), ids[i]);
        TEST_EQ_INT(json_integer_value(json_object_get(d, "width")), c->width[i]);
        TEST_CHECK(json_equal(json_object_get(d, "masks"), c->ref_masks[i]));
        TEST_CHECK(json_is_number(json_object_get(json_object_get(d, "timing_ms"), "queue")));
    }
    json_decref(doc);
    tc_req_free(&r);
    tc_buf_free(&body);

    /* five parts: over --max-parts 4 */
    tc_multipart(&body, ctype, sizeof ctype, 5, pngs, lens, names);
    post(&r, port, "/v1/segment", ctype, body.p, body.len);
    TEST_EQ_INT(r.status, 413);
    TEST_CHECK(is_error_doc(&r, "payload_too_large"));
    tc_req_free(&r);

    /* malformed: no closing delimiter */
    tc_buf_free(&body);
    tc_multipart(&body, ctype, sizeof ctype, 2, pngs, lens, names);
    body.len -= strlen("--segd-test-Bd7x9--\r\n") + 2;
    post(&r, port, "/v1/segment", ctype, body.p, body.len);
    TEST_EQ_INT(r.status, 400);
    TEST_CHECK(is_error_doc(&r, "bad_request"));
    tc_req_free(&r);
    tc_buf_free(&body);

    /* no boundary parameter */
    post(&r, port, "/v1/segment", "multipart/form-data", "x", 1);
    TEST_EQ_INT(r.status, 400);
    tc_req_free(&r);

    /* no part named "file" */
    const char *other = "--b1\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--b1--\r\n";
    post(&r, port, "/v1/segment", "multipart/form-data; boundary=b1", other, strlen(other));
    TEST_EQ_INT(r.status, 400);
    TEST_CHECK(strstr(r.resp.p, "file") != NULL);
    tc_req_free(&r);

    /* a part that is not a PNG names the part */
    const char *junk = "--b2\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n"
                       "garbage-garbage-garbage-garbage\r\n--b2--\r\n";
    post(&r, port, "/v1/segment", "multipart/form-data; boundary=\"b2\"", junk, strlen(junk));
    TEST_EQ_INT(r.status, 400);
    TEST_CHECK(strstr(r.resp.p, "part 1") != NULL);
    tc_req_free(&r);

    /* a bad part in the second slot of a batch, and one in the second
     * batch (--batch 2), are named; the worker serves the next request */
    for (int bad = 1; bad <= 2; bad++) {
        uint8_t junk3[] = "garbage-garbage-garbage-garbage";
        uint8_t *p3[3] = {c->png[0], c->png[1], c->png[2]};
        size_t l3[3] = {c->len[0], c->len[1], c->len[2]};
        p3[bad] = junk3;
        l3[bad] = sizeof junk3 - 1;
        tc_multipart(&body, ctype, sizeof ctype, 3, p3, l3, names);
        post(&r, port, "/v1/segment", ctype, body.p, body.len);
        TEST_EQ_INT(r.status, 400);
        char want[16];
        snprintf(want, sizeof want, "part %d", bad + 1);
        TEST_CHECK(r.resp.p && strstr(r.resp.p, want) != NULL);
        tc_req_free(&r);
        tc_buf_free(&body);
    }
    tc_multipart(&body, ctype, sizeof ctype, 2, pngs, lens, names);
    post(&r, port, "/v1/segment", ctype, body.p, body.len);
    TEST_EQ_INT(r.status, 200);
    doc = parse_json(&r);
    res = json_object_get(doc, "results");
    for (size_t i = 0; i < 2 && i < json_array_size(res); i++)
        TEST_CHECK(json_equal(json_object_get(json_array_get(res, i), "masks"), c->ref_masks[i]));
    json_decref(doc);
    tc_req_free(&r);
    tc_buf_free(&body);
}

/* The RLE of the daemon equals the RLE of `segd infer` on the same file. */
static void test_parity_with_infer(const ctx *c, int port)
{
    for (int i = 0; i < 3; i++) {
        char path[256], cmd[2048];
        snprintf(path, sizeof path, "/tmp/segd-test-%d-slice%d.png", (int)getpid(), i);
        TEST_REQUIRE(tc_write_file(path, c->png[i], c->len[i]) == 0);
        /* the openblas backend runs OpenBLAS at 1 thread in both (the
         * worker sets it); the variable keeps any other BLAS call serial */
        snprintf(cmd, sizeof cmd, "OPENBLAS_NUM_THREADS=1 '%s' infer --weights '%s' '%s'", c->exe,
                 c->weights, path);
        FILE *p = popen(cmd, "r");
        TEST_REQUIRE(p);
        tc_buf out = {0};
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
            tc_buf_add(&out, chunk, n);
        TEST_EQ_INT(pclose(p), 0);
        json_error_t e;
        json_t *cli = out.p ? json_loads(out.p, JSON_DISABLE_EOF_CHECK, &e) : NULL;
        TEST_CHECK(cli != NULL);
        long st;
        json_t *srv = segment(port, c->png[i], c->len[i], NULL, &st);
        TEST_EQ_INT(st, 200);
        if (cli && srv) {
            TEST_CHECK(json_equal(json_object_get(cli, "masks"), json_object_get(srv, "masks")));
            TEST_CHECK(json_equal(json_object_get(cli, "pixels"), json_object_get(srv, "pixels")));
            TEST_CHECK(json_equal(json_object_get(cli, "rle"), json_object_get(srv, "rle")));
        }
        json_decref(cli);
        json_decref(srv);
        tc_buf_free(&out);
        unlink(path);
    }
}

/* Many requests at once: each answer belongs to its own request. */
static void test_no_crosstalk(const ctx *c, int port)
{
    enum { N = 10 };
    tc_req reqs[N];
    for (int i = 0; i < N; i++) {
        char path[64];
        snprintf(path, sizeof path, "/v1/segment?id=p%d", i);
        tc_req_init(&reqs[i], port, "POST", path);
        reqs[i].ctype = "image/png";
        reqs[i].body = c->png[i % NSLICES];
        reqs[i].len = c->len[i % NSLICES];
    }
    tc_perform_parallel(reqs, N);
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof want, "p%d", i);
        /* queue depth of the main daemon is the default 2 x 2 = 4, so some
         * may be refused; those that ran must be right */
        TEST_CHECK(reqs[i].status == 200 || reqs[i].status == 503);
        if (reqs[i].status == 200) {
            json_t *d = parse_json(&reqs[i]);
            TEST_EQ_STR(json_string_value(json_object_get(d, "id")), want);
            TEST_EQ_INT(json_integer_value(json_object_get(d, "width")), c->width[i % NSLICES]);
            TEST_CHECK(json_equal(json_object_get(d, "masks"), c->ref_masks[i % NSLICES]));
            json_decref(d);
        }
        tc_req_free(&reqs[i]);
    }
}

static void test_metrics(const ctx *c, int port)
{
    char *m0 = scrape(port);
    /* every line is exposition format, every sample has a TYPE first */
    int lines = 0;
    char typed[64][64];
    int ntyped = 0;
    char *save = NULL;
    char *copy = strdup(m0);
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lines++;
        if (!tc_prom_line_ok(line)) {
            fprintf(stderr, "  bad exposition line: %s\n", line);
            TEST_CHECK(0);
        }
        if (!strncmp(line, "# TYPE ", 7) && ntyped < 64) {
            sscanf(line + 7, "%63s", typed[ntyped++]);
        } else if (line[0] != '#') {
            int ok = 0;
            for (int i = 0; i < ntyped && !ok; i++) {
                size_t n = strlen(typed[i]);
                ok = !strncmp(line, typed[i], n) &&
                     (line[n] == ' ' || line[n] == '{' || !strncmp(line + n, "_bucket{", 8) ||
                      !strncmp(line + n, "_sum ", 5) || !strncmp(line + n, "_count ", 7));
            }
            if (!ok)
                fprintf(stderr, "  sample without TYPE: %s\n", line);
            TEST_CHECK(ok);
        }
    }
    free(copy);
    TEST_CHECK(lines > 40);
    const char *families[] = {"segd_request_duration_seconds", "segd_queue_wait_seconds",
                              "segd_inference_duration_seconds"};
    for (int i = 0; i < 3; i++) {
        char key[128];
        snprintf(key, sizeof key, "# TYPE %s histogram", families[i]);
        TEST_CHECK(strstr(m0, key) != NULL);
        snprintf(key, sizeof key, "%s_bucket{le=\"0.001\"}", families[i]);
        TEST_CHECK(strstr(m0, key) != NULL);
        snprintf(key, sizeof key, "%s_bucket{le=\"30\"}", families[i]);
        TEST_CHECK(strstr(m0, key) != NULL);
        snprintf(key, sizeof key, "%s_bucket{le=\"+Inf\"}", families[i]);
        TEST_CHECK(metric(m0, key) == metric(m0, (snprintf(key, sizeof key, "%s_count", families[i]), key)));
    }
    const char *names[] = {"# TYPE segd_http_requests_total counter", "# TYPE segd_jobs_rejected_total counter",
                           "# TYPE segd_jobs_timed_out_total counter", "# TYPE segd_queue_depth gauge",
                           "# TYPE segd_workers_busy gauge", "# TYPE segd_connections_in_flight gauge",
                           "segd_build_info{version=\"", "segd_model_info{name=\"",
                           "# HELP segd_queue_depth "};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        TEST_CHECK(strstr(m0, names[i]) != NULL);
    TEST_CHECK(metric(m0, "segd_connections_in_flight") >= 1);

    /* a known set of requests */
    tc_req r;
    for (int i = 0; i < 2; i++) {
        get(&r, port, "GET", "/healthz");
        tc_req_free(&r);
    }
    get(&r, port, "GET", "/no/such/route");
    tc_req_free(&r);
    post(&r, port, "/v1/segment", "image/png", c->png[2], c->len[2]);
    TEST_EQ_INT(r.status, 200);
    tc_req_free(&r);
    post(&r, port, "/v1/segment", "text/plain", "x", 1);
    tc_req_free(&r);
    char *m1 = scrape(port);

#define DELTA(key) (metric(m1, key) - metric(m0, key))
    TEST_EQ_INT(DELTA("segd_http_requests_total{route=\"/healthz\",code=\"200\"}"), 2);
    TEST_EQ_INT(DELTA("segd_http_requests_total{route=\"unmatched\",code=\"404\"}"), 1);
    TEST_EQ_INT(DELTA("segd_http_requests_total{route=\"/v1/segment\",code=\"200\"}"), 1);
    TEST_EQ_INT(DELTA("segd_http_requests_total{route=\"/v1/segment\",code=\"415\"}"), 1);
    TEST_EQ_INT(DELTA("segd_http_requests_total{route=\"/metrics\",code=\"200\"}"), 1);
    TEST_EQ_INT(DELTA("segd_request_duration_seconds_count"), 2);
    TEST_EQ_INT(DELTA("segd_inference_duration_seconds_count"), 1);
    TEST_EQ_INT(DELTA("segd_queue_wait_seconds_count"), 1);
    TEST_EQ_INT(DELTA("segd_jobs_accepted_total"), 1);
    TEST_EQ_INT(DELTA("segd_jobs_rejected_total"), 0);
    TEST_EQ_INT(DELTA("segd_jobs_timed_out_total"), 0);
    TEST_CHECK(DELTA("segd_inference_duration_seconds_sum") > 0);
    TEST_EQ_INT(metric(m1, "segd_queue_depth"), 0);
    TEST_EQ_INT(metric(m1, "segd_workers"), 2);
    /* a worker counts as busy until its run returns, which is just after it
     * hands the response over */
    TEST_CHECK(wait_idle(port));
#undef DELTA
    free(m0);
    free(m1);
}

/* Every access-log line is one JSON object with the fields. */
static void check_access_log(const char *path, int min_lines)
{
    char *log = tc_read_file(path, NULL);
    TEST_REQUIRE(log);
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] != '{')
            continue;
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        const char *t, *id, *m, *route;
        int status;
        json_int_t bytes;
        double ms;
        int ok = j && json_unpack(j, "{s:s, s:s, s:s, s:s, s:i, s:I, s:F}", "time", &t, "id", &id,
                                  "method", &m, "route", &route, "status", &status, "bytes",
                                  &bytes, "ms", &ms) == 0;
        if (!ok)
            fprintf(stderr, "  bad access-log line: %s\n", line);
        TEST_CHECK(ok);
        json_decref(j);
        n++;
    }
    TEST_CHECK(n >= min_lines);
    free(log);
}

/* Whether the daemon's log at path holds want within timeout_s.  The daemon
 * writes its log from a thread of its own (segd/log.h), so a line logged
 * before the port file was written may reach the file just after it. */
static int log_has(const char *path, const char *want, double timeout_s)
{
    double t0 = tc_now();
    for (;;) {
        char *log = tc_read_file(path, NULL);
        int found = log && strstr(log, want);
        free(log);
        if (found)
            return 1;
        if (tc_now() - t0 > timeout_s)
            return 0;
        tc_sleep_ms(10);
    }
}

static void test_main_daemon(ctx *c)
{
    tc_daemon d;
    /* --batch 2: a multipart request of 3 slices runs as a batch of 2 and
     * one of 1, and test_multipart compares every mask with segd infer */
    TEST_REQUIRE(tc_daemon_start(&d, c->exe, c->weights, NULL, NULL, "--workers", "2",
                                 "--batch", "2", "--cors-origin", "*", "--max-body", "1M",
                                 "--max-pixels", "120000", "--max-parts", "4", NULL) == 0);
    char want[64];
    snprintf(want, sizeof want, "segd: listening on http://127.0.0.1:%d", d.port);
    TEST_CHECK(log_has(d.log, want, 10.0));

    test_routes(c, d.port);
    test_segment(c, d.port);
    test_errors(c, d.port);
    test_multipart(c, d.port);
    test_parity_with_infer(c, d.port);
    test_no_crosstalk(c, d.port);
    test_metrics(c, d.port);

    int st = tc_daemon_stop(&d, 30.0);
    TEST_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    check_access_log(d.log, 40);
    unlink(d.log);
}

/* ------------------------------------------------------------------ */
/* queue full, disconnects, deadline                                    */
/* ------------------------------------------------------------------ */

/* requests performed in parallel on a thread of their own */
typedef struct burst {
    tc_req *reqs;
    int n;
} burst;

static void *burst_main(void *p)
{
    burst *b = p;
    tc_perform_parallel(b->reqs, b->n);
    return NULL;
}


static void test_queue_full(const ctx *c)
{
    /* the queue depth comes from the environment; --workers 1 wins over
     * SEGD_WORKERS */
    const char *env[] = {"SEGD_QUEUE_DEPTH=1", "SEGD_WORKERS=3", NULL};
    tc_daemon d;
    TEST_REQUIRE(tc_daemon_start(&d, c->exe, c->weights, env, NULL, "--workers", "1",
                                 "--debug-job-delay", "400", "--cors-origin",
                                 "https://viewer.example", NULL) == 0);
    char *m0 = scrape(d.port);
    TEST_EQ_INT(metric(m0, "segd_workers"), 1);

    enum { N = 6 };
    tc_req reqs[N];
    for (int i = 0; i < N; i++) {
        tc_req_init(&reqs[i], d.port, "POST", "/v1/segment");
        reqs[i].ctype = "image/png";
        reqs[i].body = c->png[3];
        reqs[i].len = c->len[3];
    }
    tc_perform_parallel(reqs, N);
    int ok = 0, busy = 0;
    double first_ok = 1e9; /* the earliest 200 comes after a 400 ms job */
    for (int i = 0; i < N; i++)
        if (reqs[i].status == 200 && reqs[i].seconds < first_ok)
            first_ok = reqs[i].seconds;
    for (int i = 0; i < N; i++) {
        if (reqs[i].status == 200) {
            ok++;
        } else {
            TEST_EQ_INT(reqs[i].status, 503);
            busy++;
            TEST_CHECK(header_is(&reqs[i], "Retry-After", "1"));
            /* readable by a browser client of another origin */
            TEST_CHECK(header_is(&reqs[i], "Access-Control-Allow-Origin", "https://viewer.example"));
            TEST_CHECK(header_has(&reqs[i], "Access-Control-Expose-Headers", "Retry-After"));
            TEST_CHECK(header_is(&reqs[i], "Vary", "Origin"));
            TEST_CHECK(is_error_doc(&reqs[i], "unavailable"));
            TEST_CHECK(reqs[i].seconds < first_ok); /* at once, not after a job */
        }
        tc_req_free(&reqs[i]);
    }
    /* one running + one queued */
    TEST_CHECK(ok >= 1 && ok <= 2);
    TEST_CHECK(busy >= N - 2);
    char *m1 = scrape(d.port);
    TEST_EQ_INT(metric(m1, "segd_jobs_rejected_total") - metric(m0, "segd_jobs_rejected_total"), busy);
    TEST_EQ_INT(metric(m1, "segd_jobs_accepted_total") - metric(m0, "segd_jobs_accepted_total"), ok);
    TEST_EQ_INT(metric(m1, "segd_http_requests_total{route=\"/v1/segment\",code=\"503\"}"), busy);

    /* clients that give up while their job runs / waits */
    tc_req gone[2];
    for (int i = 0; i < 2; i++) {
        tc_req_init(&gone[i], d.port, "POST", "/v1/segment");
        gone[i].ctype = "image/png";
        gone[i].body = c->png[4];
        gone[i].len = c->len[4];
        gone[i].timeout_ms = 150;
    }
    /* the first must be running before the second arrives, or the
     * one-slot queue may still hold the first */
    burst b = {&gone[0], 1};
    pthread_t th;
    TEST_REQUIRE(pthread_create(&th, NULL, burst_main, &b) == 0);
    tc_sleep_ms(60);
    tc_perform(&gone[1]);
    pthread_join(th, NULL);
    for (int i = 0; i < 2; i++) {
        TEST_EQ_INT(gone[i].status, 0);
        tc_req_free(&gone[i]);
    }
    tc_req r;
    get(&r, d.port, "GET", "/healthz");
    TEST_EQ_INT(r.status, 200);
    tc_req_free(&r);
    TEST_CHECK(wait_idle(d.port)); /* both abandoned jobs finish */
    post(&r, d.port, "/v1/segment", "image/png", c->png[3], c->len[3]);
    TEST_EQ_INT(r.status, 200);
    tc_req_free(&r);
    char *m2 = scrape(d.port);
    TEST_EQ_INT(metric(m2, "segd_queue_depth"), 0);
    TEST_CHECK(wait_idle(d.port));

    int st = tc_daemon_stop(&d, 30.0);
    TEST_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* (the abandoned answers may still be "sent" into the closed socket,
     * so the log need not mark them aborted) */
    check_access_log(d.log, N + 4);
    unlink(d.log);
    free(m0);
    free(m1);
    free(m2);
}

static void test_deadline(const ctx *c)
{
    tc_daemon d;
    TEST_REQUIRE(tc_daemon_start(&d, c->exe, c->weights, NULL, NULL, "--workers", "1",
                                 "--queue-depth", "4", "--debug-job-delay", "600",
                                 "--request-timeout", "0.25", "--http-threads", "2", NULL) == 0);
    char *m0 = scrape(d.port);
    enum { N = 3 };
    tc_req reqs[N];
    for (int i = 0; i < N; i++) {
        tc_req_init(&reqs[i], d.port, "POST", "/v1/segment");
        reqs[i].ctype = "image/png";
        reqs[i].body = c->png[3];
        reqs[i].len = c->len[3];
    }
    tc_perform_parallel(reqs, N);
    int ok = 0, late = 0;
    double t_ok = 0, t_late = 0;
    for (int i = 0; i < N; i++) {
        if (reqs[i].status == 200) {
            ok++;
            t_ok = reqs[i].seconds;
        } else {
            TEST_EQ_INT(reqs[i].status, 504);
            TEST_CHECK(is_error_doc(&reqs[i], "deadline_exceeded"));
            late++;
            if (reqs[i].seconds > t_late)
                t_late = reqs[i].seconds;
        }
        tc_req_free(&reqs[i]);
    }
    TEST_EQ_INT(ok, 1);
    TEST_EQ_INT(late, N - 1);
    TEST_CHECK(t_late < t_ok); /* answered at the deadline, not after the running job */
    char *m1 = scrape(d.port);
    TEST_EQ_INT(metric(m1, "segd_jobs_timed_out_total") - metric(m0, "segd_jobs_timed_out_total"), N - 1);
    /* the expired jobs never ran */
    TEST_EQ_INT(metric(m1, "segd_inference_duration_seconds_count") -
                    metric(m0, "segd_inference_duration_seconds_count"), 1);
    TEST_EQ_INT(metric(m1, "segd_http_requests_total{route=\"/v1/segment\",code=\"504\"}"), N - 1);
    TEST_CHECK(access(d.portfile, F_OK) == 0);
    int st = tc_daemon_stop(&d, 30.0);
    TEST_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    TEST_CHECK(access(d.portfile, F_OK) != 0); /* removed at exit: the port is no longer ours */
    unlink(d.log);
    free(m0);
    free(m1);
}

/* ------------------------------------------------------------------ */
/* SIGTERM drain                                                       */
/* ------------------------------------------------------------------ */

static void test_drain(const ctx *c)
{
    tc_daemon d;
    TEST_REQUIRE(tc_daemon_start(&d, c->exe, c->weights, NULL, NULL, "--workers", "1",
                                 "--queue-depth", "8", "--debug-job-delay", "250",
                                 "--drain-timeout", "20", "--worker-threads", "2", NULL) == 0);
    enum { N = 5 };
    tc_req reqs[N];
    for (int i = 0; i < N; i++) {
        char path[64];
        snprintf(path, sizeof path, "/v1/segment?id=d%d", i);
        tc_req_init(&reqs[i], d.port, "POST", path);
        reqs[i].ctype = "image/png";
        reqs[i].body = c->png[i % 3];
        reqs[i].len = c->len[i % 3];
    }
    burst b = {reqs, N};
    pthread_t th;
    TEST_REQUIRE(pthread_create(&th, NULL, burst_main, &b) == 0);
    /* wait until the daemon holds all of them */
    double t0 = tc_now();
    int accepted = 0;
    while (tc_now() - t0 < 10.0) {
        char *m = scrape(d.port);
        accepted = (int)metric(m, "segd_jobs_accepted_total");
        free(m);
        if (accepted == N)
            break;
        tc_sleep_ms(10);
    }
    TEST_EQ_INT(accepted, N);
    double t_term = tc_now();
    kill(d.pid, SIGTERM);
    tc_sleep_ms(50);
    /* draining: not ready, no new jobs, still alive */
    tc_req r;
    get(&r, d.port, "GET", "/readyz");
    TEST_EQ_INT(r.status, 503);
    tc_req_free(&r);
    post(&r, d.port, "/v1/segment", "image/png", c->png[3], c->len[3]);
    TEST_EQ_INT(r.status, 503);
    TEST_CHECK(is_error_doc(&r, "unavailable"));
    tc_req_free(&r);
    get(&r, d.port, "GET", "/healthz");
    TEST_EQ_INT(r.status, 200);
    tc_req_free(&r);

    pthread_join(th, NULL);
    for (int i = 0; i < N; i++) {
        TEST_EQ_INT(reqs[i].status, 200);
        json_t *doc = parse_json(&reqs[i]);
        char want[16];
        snprintf(want, sizeof want, "d%d", i);
        TEST_CHECK(doc && strcmp(json_string_value(json_object_get(doc, "id")), want) == 0);
        json_decref(doc);
        tc_req_free(&reqs[i]);
    }
    /* exit 0 means every accepted job was answered within --drain-timeout;
     * the bound here only keeps a hung daemon from hanging the test */
    int st = tc_daemon_wait(&d, 60.0);
    TEST_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    TEST_CHECK(tc_now() - t_term < 60.0);
    char *log = tc_read_file(d.log, NULL);
    TEST_CHECK(log && strstr(log, "segd: drained"));
    free(log);
    unlink(d.log);
}

/* Drain time up: queued jobs and the running one get 503, exit 1. */
static void test_drain_timeout(const ctx *c)
{
    tc_daemon d;
    TEST_REQUIRE(tc_daemon_start(&d, c->exe, c->weights, NULL, NULL, "--workers", "1",
                                 "--queue-depth", "8", "--debug-job-delay", "500",
                                 "--drain-timeout", "0.2", NULL) == 0);
    enum { N = 3 };
    tc_req reqs[N];
    for (int i = 0; i < N; i++) {
        tc_req_init(&reqs[i], d.port, "POST", "/v1/segment");
        reqs[i].ctype = "image/png";
        reqs[i].body = c->png[3];
        reqs[i].len = c->len[3];
    }
    burst b = {reqs, N};
    pthread_t th;
    TEST_REQUIRE(pthread_create(&th, NULL, burst_main, &b) == 0);
    /* all N must be accepted (one running, N-1 queued) before the signal:
     * otherwise the 503s below would be refusals of new jobs, not the
     * drain timeout answering queued ones */
    double t0 = tc_now();
    int accepted = 0;
    while (tc_now() - t0 < 60.0) {
        char *m = scrape(d.port);
        accepted = (int)metric(m, "segd_jobs_accepted_total");
        free(m);
        if (accepted == N)
            break;
        tc_sleep_ms(10);
    }
    TEST_EQ_INT(accepted, N);
    kill(d.pid, SIGTERM);
    pthread_join(th, NULL);
    int ok = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        ok += reqs[i].status == 200;
        refused += reqs[i].status == 503;
        tc_req_free(&reqs[i]);
    }
    /* every accepted job got an answer: the queued ones 503, and the
     * running one too, since the drain time bounds it (it stops at its
     * next slice boundary; the debug delay is interrupted like one) */
    TEST_EQ_INT(ok, 0);
    TEST_EQ_INT(refused, N);
    int st = tc_daemon_wait(&d, 20.0);
    TEST_CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
    TEST_CHECK(access(d.portfile, F_OK) != 0); /* also after an incomplete drain */
    char *log = tc_read_file(d.log, NULL); /* the queued ones were answered by the drain timeout */
    TEST_CHECK(log && strstr(log, "drain incomplete") && strstr(log, "2 queued ones answered 503"));
    free(log);
    unlink(d.log);
}

/* ------------------------------------------------------------------ */
/* start-up                                                            */
/* ------------------------------------------------------------------ */

static void test_startup(const ctx *c)
{
    tc_daemon d;
    int st = 0;
    TEST_CHECK(tc_daemon_start(&d, c->exe, "/nonexistent/weights.safetensors", NULL, &st, NULL) != 0);
    TEST_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    char *log = tc_read_file(d.log, NULL);
    TEST_CHECK(log && strstr(log, "cannot load weights"));
    free(log);
    unlink(d.log);

    st = 0;
    TEST_CHECK(tc_daemon_start(&d, c->exe, c->weights, NULL, &st, "--no-such-flag", NULL) != 0);
    TEST_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    unlink(d.log);

    const char *bad_env[] = {"SEGD_WORKERS=many", NULL};
    st = 0;
    TEST_CHECK(tc_daemon_start(&d, c->exe, c->weights, bad_env, &st, NULL) != 0);
    TEST_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    log = tc_read_file(d.log, NULL);
    TEST_CHECK(log && strstr(log, "SEGD_WORKERS"));
    free(log);
    unlink(d.log);

    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' serve --help", c->exe);
    FILE *p = popen(cmd, "r");
    TEST_REQUIRE(p);
    tc_buf out = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
        tc_buf_add(&out, chunk, n);
    TEST_EQ_INT(pclose(p), 0);
    const char *want[] = {"--port", "SEGD_PORT", "--workers", "--queue-depth", "SEGD_QUEUE_DEPTH",
                          "--request-timeout", "--worker-threads", "--batch", "--cors-origin", "SEGD_CORS_ORIGIN", "--max-body",
                          "--max-pixels", "--max-parts", "--drain-timeout", "--gemm", "--precision", "SEGD_PRECISION",
                          "--bind", "--port-file", "--weights", "default: 8080"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        TEST_CHECK(out.p && strstr(out.p, want[i]));
    /* the footer names every route (src/http/server.c) and signal */
    const char *routes[] = {"POST /v1/segment", "POST /v1/series", "POST /v1/admin/reload",
                            "/v1/model", "/healthz", "/readyz", "/metrics", "/openapi.json",
                            "GET /v2,", "/v2/health/live", "/v2/health/ready",
                            "/v2/models/NAME[/versions/V][/ready]",
                            "POST /v2/models/NAME[/versions/V]/infer", "SIGTERM", "SIGHUP"};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        int has = out.p && strstr(out.p, routes[i]);
        if (!has)
            fprintf(stderr, "  serve --help lacks '%s'\n", routes[i]);
        TEST_CHECK(has);
    }
    tc_buf_free(&out);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_serve SEGD_EXE WEIGHTS DATA_DIR\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    TEST_REQUIRE(curl_global_init(CURL_GLOBAL_DEFAULT) == 0);
    ctx c = {.exe = argv[1], .weights = argv[2], .data = argv[3]};
    TEST_REQUIRE(slurp_slice(&c, 0, "case101_day20_slice_0090_266_266_1.50_1.50.png") == 0);
    TEST_REQUIRE(slurp_slice(&c, 1, "case110_day16_slice_0070_360_310_1.50_1.50.png") == 0);
    TEST_REQUIRE(slurp_slice(&c, 2, "synthetic-37x53-rgb.png") == 0);
    TEST_REQUIRE(make_slice(&c, 3, 64, 48, 1) == 0);
    TEST_REQUIRE(make_slice(&c, 4, 96, 80, 2) == 0);
    TEST_REQUIRE(tc_png_make(400, 400, 3, &c.huge, &c.huge_len) == 0);

    double t0 = tc_now();
    test_startup(&c);
    test_main_daemon(&c);
    test_queue_full(&c);
    test_deadline(&c);
    test_drain(&c);
    test_drain_timeout(&c);
    fprintf(stderr, "test_serve: %.1f s\n", tc_now() - t0);

    for (int i = 0; i < NSLICES; i++) {
        free(c.png[i]);
        json_decref(c.ref_masks[i]);
    }
    free(c.huge);
    curl_global_cleanup();
    return test_report("test_serve");
}
