/* libFuzzer harness: the pure helpers of the HTTP layer (http/http.h) and
 * the `segd serve` configuration parser (segd/config.h).  The input is
 * split at NUL bytes into strings; each helper gets them in turn, and
 * segd_config_parse() gets them as argv and as an environment.  Invariants:
 * error documents are valid JSON with the given code, ids from file names
 * stay inside their buffer and use only [A-Za-z0-9._-], thresholds are in
 * (0, 1), accepted configurations are sane. */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "segd/config.h"
#include "segd/engine.h"
#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)
#define MAX_STRS 12

static void check_string(const char *s, size_t len)
{
    (void)segd_http_request_id_valid(s);
    float t = 0.5f;
    if (segd_threshold_parse(s, &t) == 0 && !(t > 0.0f && t < 1.0f))
        FAIL("threshold %g accepted from '%s'", t, s);
    (void)segd_http_media_type_is(s, "image/png");
    (void)segd_http_media_type_is(s, "multipart/form-data");
    (void)segd_http_media_type_is("image/png", s);

    char id[17];
    memset(id, 0x55, sizeof id);
    size_t cap = 1 + len % 16;
    segd_http_id_from_filename(s, len, id, cap);
    size_t n = strnlen(id, cap);
    if (n >= cap)
        FAIL("id not terminated within %zu bytes", cap);
    for (size_t i = cap; i < sizeof id; i++)
        if ((unsigned char)id[i] != 0x55)
            FAIL("id_from_filename wrote past cap %zu", cap);
    /* ASCII from [A-Za-z0-9._-], or whole UTF-8 characters of U+00A0 and up */
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)id[i];
        size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (k == 1 && !(isalnum(c) || c == '.' || c == '_' || c == '-'))
            FAIL("id byte 0x%02x", c);
        if (k == 0 || i + k > n)
            FAIL("id not whole UTF-8 at byte %zu (0x%02x)", i, c);
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)id[i + j] & 0xc0) != 0x80)
                FAIL("id not UTF-8 at byte %zu", i + j);
        i += k;
    }

    int te = segd_http_transfer_encoding_check(s);
    if (te != 0 && te != -ENOTSUP && te != -EINVAL)
        FAIL("transfer_encoding_check %d", te);
    if (te == 0 && !strcasestr(s, "chunked"))
        FAIL("transfer-encoding '%s' taken as chunked", s);
    unsigned long long cl = 0;
    if (segd_http_content_length_parse(s, &cl) == 0)
        for (const char *q = s; *q; q++)
            if (*q < '0' || *q > '9')
                FAIL("content-length '%s' accepted", s);
    int in_path = 0;
    if (!segd_http_uri_has_nul(s, len, &in_path) && in_path)
        FAIL("uri_has_nul: in_path without a NUL");

    unsigned w, h;
    (void)segd_http_png_size(s, len, &w, &h);

    char *body = segd_http_error_body("bad_request", s);
    if (!body)
        FAIL("error_body NULL");
    json_error_t jerr;
    json_t *doc = json_loads(body, 0, &jerr);
    const char *code = json_string_value(json_object_get(json_object_get(doc, "error"), "code"));
    if (!doc || !code || strcmp(code, "bad_request") != 0)
        FAIL("error body not valid JSON: %s (%s)", body, jerr.text);
    json_decref(doc);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    copy[size] = '\0';

    char *strs[MAX_STRS + 2];
    int n = 0;
    for (size_t i = 0; i <= size && n < MAX_STRS; ) {
        size_t len = strlen(copy + i);
        strs[n++] = copy + i;
        check_string(copy + i, len);
        i += len + 1;
    }
    /* the raw bytes (NULs included) as a PNG header */
    unsigned w, h;
    (void)segd_http_png_size(data, size, &w, &h);
    for (int st = 100; st < 600; st++)
        if (!segd_http_error_code(st))
            FAIL("no error code for %d", st);
    (void)segd_http_status_for_errno(size ? -(int)data[0] : 0);

    /* configuration: strings as argv (argv[0] skipped), then as envp */
    char *argv[MAX_STRS + 2];
    argv[0] = "serve";
    for (int i = 0; i < n; i++)
        argv[i + 1] = strs[i];
    argv[n + 1] = NULL;
    segd_config cfg;
    char err[512] = "";
    segd_config_defaults(&cfg);
    if (segd_config_parse(&cfg, n + 1, argv, NULL, err, sizeof err) == 0) {
        if (cfg.workers < 1 || cfg.queue_depth < 0 || cfg.max_pixels == 0 || cfg.max_body == 0 ||
            cfg.port < 0 || cfg.port > 65535 || cfg.max_parts < 1 ||
            !memchr(cfg.bind, '\0', sizeof cfg.bind) || !memchr(cfg.weights, '\0', sizeof cfg.weights))
            FAIL("insane configuration accepted: workers %d queue %d port %d parts %d", cfg.workers,
                 cfg.queue_depth, cfg.port, cfg.max_parts);
    } else if (!err[0]) {
        FAIL("config refused without a message");
    }
    strs[n] = NULL;
    segd_config_defaults(&cfg);
    if (segd_config_parse(&cfg, 1, argv, strs, err, sizeof err) != 0 && !err[0])
        FAIL("config (env) refused without a message");
    free(copy);
    return 0;
}
