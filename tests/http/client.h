/* Test-side helpers for driving a real `segd serve` child process over
 * loopback: spawn/stop the daemon, HTTP requests with libcurl (one at a time
 * or in parallel with curl multi), PNG generation with libpng, and Prometheus
 * text parsing.  A small static library (client.c), linked by the HTTP
 * tests. */
#ifndef SEGD_TESTS_HTTP_CLIENT_H
#define SEGD_TESTS_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>

/* ---- time ---- */

double tc_now(void);

void tc_sleep_ms(int ms);

/* ---- growable buffer ---- */

typedef struct tc_buf {
    char *p;
    size_t len, cap;
} tc_buf;

void tc_buf_add(tc_buf *b, const void *data, size_t n);

void tc_buf_free(tc_buf *b);

/* ---- daemon ---- */

typedef struct tc_daemon {
    pid_t pid;
    int port;
    char log[256];
    char portfile[256];
} tc_daemon;

/* Start `segd serve --port 0 --port-file F --weights W <extra...>` (extra
 * NULL-terminated) with stderr to a log file and env (NULL-terminated
 * "NAME=value" list, or NULL) added to its environment.  Waits for the port file (20 s).  0 or -1
 * (child exited: *exit_status set when not NULL). */
int tc_daemon_start(tc_daemon *d, const char *exe, const char *weights,
                    const char *const *env, int *exit_status, ...);

/* Wait up to timeout_s for the child to exit.  Its wait status, or -1 if it
 * had to be killed. */
int tc_daemon_wait(tc_daemon *d, double timeout_s);

/* SIGTERM and wait; the wait status (or -1). */
int tc_daemon_stop(tc_daemon *d, double timeout_s);

char *tc_read_file(const char *path, size_t *len);

/* ---- HTTP ---- */

typedef struct tc_req {
    /* in */
    const char *method;      /* NULL = GET */
    char url[512];
    const char *ctype;       /* Content-Type, NULL = none */
    const void *body;
    size_t len;
    int chunked;             /* stream the body without Content-Length */
    int expect_100;          /* send Expect: 100-continue like curl(1) does for big bodies */
    const char *headers[8];  /* extra "Name: value" */
    long timeout_ms;         /* 0 = 30 s */
    /* out */
    long status;             /* 0 = transport error */
    CURLcode cc;
    tc_buf resp, hdrs;
    double seconds;
    /* private */
    struct curl_slist *hl;
    size_t sent;
    double t0;
} tc_req;

void tc_req_init(tc_req *r, int port, const char *method, const char *path);

void tc_perform(tc_req *r);

/* All of reqs at once with curl multi (each on its own connection). */
void tc_perform_parallel(tc_req *reqs, int n);

void tc_req_free(tc_req *r);

/* Value of response header name (case-insensitive) into out; 1 found. */
int tc_header(const tc_req *r, const char *name, char *out, size_t cap);

/* 8-bit grey w x h slice: a bright ellipse (position from seed) on a dim,
 * textured background, like an MR slice with one organ.  *out malloc'ed. */
int tc_png_make(int w, int h, unsigned seed, uint8_t **out, size_t *len);

int tc_write_file(const char *path, const void *data, size_t len);

/* ---- multipart ---- */

/* Body with one "file" part per png (filename names[i]); *ctype gets the
 * Content-Type. */
void tc_multipart(tc_buf *body, char *ctype, size_t cap, int n,
                  uint8_t *const *pngs, const size_t *lens,
                  const char *const *names);

/* 1 when line is a valid exposition-format 0.0.4 line (comment or sample). */
int tc_prom_line_ok(const char *line);

/* Value of the sample whose "name{labels}" part equals key exactly; 0 when
 * absent. */
double tc_prom_value(const char *text, const char *key);

#endif
