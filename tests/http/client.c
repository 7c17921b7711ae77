/* The test client library of tests/http (client.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <png.h>

#include "http/client.h"

double tc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tc_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

void tc_buf_add(tc_buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void tc_buf_free(tc_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

int tc_daemon_start(tc_daemon *d, const char *exe, const char *weights,
                                  const char *const *env, int *exit_status, ...)
{
    static int seq;
    memset(d, 0, sizeof *d);
    snprintf(d->log, sizeof d->log, "/tmp/segd-test-%d-%d.log", (int)getpid(), seq);
    snprintf(d->portfile, sizeof d->portfile, "/tmp/segd-test-%d-%d.port", (int)getpid(), seq++);
    unlink(d->portfile);
    const char *argv[64];
    int n = 0;
    argv[n++] = exe;
    argv[n++] = "serve";
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--port-file";
    argv[n++] = d->portfile;
    argv[n++] = "--weights";
    argv[n++] = weights;
    va_list ap;
    va_start(ap, exit_status);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 62)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    fflush(NULL);
    d->pid = fork();
    if (d->pid < 0)
        return -1;
    if (d->pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0)
            dup2(nul, 1);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    double t0 = tc_now();
    while (tc_now() - t0 < 20.0) {
        FILE *f = fopen(d->portfile, "r");
        if (f) {
            int port = 0;
            int ok = fscanf(f, "%d", &port) == 1;
            fclose(f);
            if (ok && port > 0) {
                d->port = port;
                return 0;
            }
        }
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            if (exit_status)
                *exit_status = st;
            d->pid = 0;
            return -1;
        }
        tc_sleep_ms(10);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
    return -1;
}

int tc_daemon_wait(tc_daemon *d, double timeout_s)
{
    double t0 = tc_now();
    int st = -1;
    while (tc_now() - t0 < timeout_s) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            return st;
        }
        tc_sleep_ms(10);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, NULL, 0);
    d->pid = 0;
    return -1;
}

int tc_daemon_stop(tc_daemon *d, double timeout_s)
{
    if (d->pid <= 0)
        return -1;
    kill(d->pid, SIGTERM);
    return tc_daemon_wait(d, timeout_s);
}

char *tc_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    tc_buf b = {0};
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        tc_buf_add(&b, chunk, n);
    fclose(f);
    if (!b.p)
        tc_buf_add(&b, "", 0);
    if (len)
        *len = b.len;
    return b.p;
}

static size_t tc_write_cb(char *p, size_t size, size_t n, void *ud)
{
    tc_buf_add(ud, p, size * n);
    return size * n;
}

static size_t tc_read_cb(char *out, size_t size, size_t n, void *ud)
{
    tc_req *r = ud;
    size_t room = size * n, left = r->len - r->sent;
    size_t k = left < room ? left : room;
    if (k > 4096)
        k = 4096; /* several chunks */
    memcpy(out, (const char *)r->body + r->sent, k);
    r->sent += k;
    return k;
}

void tc_req_init(tc_req *r, int port, const char *method, const char *path)
{
    memset(r, 0, sizeof *r);
    r->method = method;
    snprintf(r->url, sizeof r->url, "http://127.0.0.1:%d%s", port, path);
}

static CURL *tc_easy(tc_req *r)
{
    CURL *c = curl_easy_init();
    if (!c) {
        fprintf(stderr, "curl_easy_init failed\n");
        exit(1);
    }
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    /* wait for the server's verdict (100 or an early 413) before sending a
     * large body, however slow the build under test is */
    curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r->timeout_ms ? r->timeout_ms : 30000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tc_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->resp);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, tc_write_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->hdrs);
    curl_easy_setopt(c, CURLOPT_PRIVATE, r);
    /* no 100-continue round trip unless asked for */
    r->hl = r->expect_100 ? curl_slist_append(NULL, "Expect: 100-continue")
                          : curl_slist_append(NULL, "Expect:");
    if (r->ctype) {
        char h[256];
        snprintf(h, sizeof h, "Content-Type: %s", r->ctype);
        r->hl = curl_slist_append(r->hl, h);
    }
    for (int i = 0; i < 8 && r->headers[i]; i++)
        r->hl = curl_slist_append(r->hl, r->headers[i]);
    const char *m = r->method ? r->method : "GET";
    if (!strcmp(m, "POST") || r->body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        if (r->chunked) {
            r->hl = curl_slist_append(r->hl, "Transfer-Encoding: chunked");
            curl_easy_setopt(c, CURLOPT_READFUNCTION, tc_read_cb);
            curl_easy_setopt(c, CURLOPT_READDATA, r);
        } else {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body ? r->body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->len);
        }
        if (strcmp(m, "POST"))
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m);
    } else if (!strcmp(m, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "GET")) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->hl);
    r->t0 = tc_now();
    return c;
}

static void tc_finish(tc_req *r, CURL *c, CURLcode cc)
{
    r->cc = cc;
    r->seconds = tc_now() - r->t0;
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (!r->resp.p)
        tc_buf_add(&r->resp, "", 0);
    if (!r->hdrs.p)
        tc_buf_add(&r->hdrs, "", 0);
    curl_slist_free_all(r->hl);
    r->hl = NULL;
    curl_easy_cleanup(c);
}

void tc_perform(tc_req *r)
{
    CURL *c = tc_easy(r);
    tc_finish(r, c, curl_easy_perform(c));
}

void tc_perform_parallel(tc_req *reqs, int n)
{
    CURLM *m = curl_multi_init();
    for (int i = 0; i < n; i++)
        curl_multi_add_handle(m, tc_easy(&reqs[i]));
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            tc_req *r;
            CURL *c = msg->easy_handle;
            CURLcode cc = msg->data.result;
            curl_easy_getinfo(c, CURLINFO_PRIVATE, (char **)&r);
            curl_multi_remove_handle(m, c);
            tc_finish(r, c, cc);
        }
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    curl_multi_cleanup(m);
}

void tc_req_free(tc_req *r)
{
    tc_buf_free(&r->resp);
    tc_buf_free(&r->hdrs);
}

int tc_header(const tc_req *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = r->hdrs.p; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            size_t vl = ll - (size_t)(v - p);
            while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
                vl--;
            if (vl + 1 > cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        if (!eol)
            break;
        p = eol + 1;
    }
    if (cap)
        out[0] = '\0';
    return 0;
}

/* ---- PNG ---- */

static void tc_png_write_cb(png_structp png, png_bytep data, png_size_t n)
{
    tc_buf_add(png_get_io_ptr(png), data, n);
}

static void tc_png_flush_cb(png_structp png) { (void)png; }

int tc_png_make(int w, int h, unsigned seed, uint8_t **out, size_t *len)
{
    tc_buf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *img = malloc((size_t)(w ? w : 1) * (size_t)(h ? h : 1));
    if (!png || !info || !img)
        return -1;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(img);
        tc_buf_free(&b);
        return -1;
    }
    png_set_write_fn(png, &b, tc_png_write_cb, tc_png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    double cx = w * (0.35 + 0.3 * ((seed * 37u) % 10) / 10.0), cy = h * (0.4 + 0.2 * ((seed * 11u) % 10) / 10.0);
    double rx = w * (0.15 + 0.02 * (seed % 5)), ry = h * 0.2;
    uint32_t rng = 2166136261u ^ seed;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            rng = rng * 1664525u + 1013904223u;
            double dx = (x - cx) / rx, dy = (y - cy) / ry;
            int v = (dx * dx + dy * dy < 1.0) ? 200 : 40 + (int)((x + y) % 32);
            v += (int)(rng >> 28) - 8;
            img[(size_t)y * w + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
        png_write_row(png, img + (size_t)y * w);
    }
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(img);
    *out = (uint8_t *)b.p;
    *len = b.len;
    return 0;
}

int tc_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(data, 1, len, f) == len;
    ok &= fclose(f) == 0;
    return ok ? 0 : -1;
}

void tc_multipart(tc_buf *body, char *ctype, size_t cap, int n,
                                uint8_t *const *pngs, const size_t *lens,
                                const char *const *names)
{
    const char *bnd = "segd-test-Bd7x9";
    snprintf(ctype, cap, "multipart/form-data; boundary=%s", bnd);
    char h[512];
    for (int i = 0; i < n; i++) {
        snprintf(h, sizeof h,
                 "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                 "Content-Type: image/png\r\n\r\n",
                 bnd, names[i]);
        tc_buf_add(body, h, strlen(h));
        tc_buf_add(body, pngs[i], lens[i]);
        tc_buf_add(body, "\r\n", 2);
    }
    snprintf(h, sizeof h, "--%s--\r\n", bnd);
    tc_buf_add(body, h, strlen(h));
}

/* ---- Prometheus text format ---- */

static int tc_metric_name_char(int c, int first)
{
    return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

int tc_prom_line_ok(const char *line)
{
    const char *p = line;
    if (*p == '#') {
        if (!strncmp(p, "# HELP ", 7) || !strncmp(p, "# TYPE ", 7)) {
            int type = p[2] == 'T';
            p += 7;
            if (!tc_metric_name_char((unsigned char)*p, 1))
                return 0;
            while (tc_metric_name_char((unsigned char)*p, 0))
                p++;
            if (*p != ' ')
                return 0;
            p++;
            if (type)
                return !strcmp(p, "counter") || !strcmp(p, "gauge") || !strcmp(p, "histogram") ||
                       !strcmp(p, "summary") || !strcmp(p, "untyped");
            return *p != '\0';
        }
        return 1; /* other comments are allowed */
    }
    if (!tc_metric_name_char((unsigned char)*p, 1))
        return 0;
    while (tc_metric_name_char((unsigned char)*p, 0))
        p++;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (!tc_metric_name_char((unsigned char)*p, 1))
                return 0;
            while (tc_metric_name_char((unsigned char)*p, 0))
                p++;
            if (*p++ != '=' || *p++ != '"')
                return 0;
            while (*p && *p != '"') {
                if (*p == '\\') {
                    p++;
                    if (*p != '\\' && *p != '"' && *p != 'n')
                        return 0;
                }
                p++;
            }
            if (*p++ != '"')
                return 0;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return 0;
        }
        p++;
    }
    if (*p++ != ' ')
        return 0;
    if (!strcmp(p, "+Inf") || !strcmp(p, "-Inf") || !strcmp(p, "NaN"))
        return 1;
    char *end;
    strtod(p, &end);
    if (end == p)
        return 0;
    if (*end == ' ') { /* optional timestamp */
        const char *t = end + 1;
        strtoll(t, &end, 10);
        if (end == t)
            return 0;
    }
    return *end == '\0';
}

double tc_prom_value(const char *text, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = text; p && *p;) {
        if (!strncmp(p, key, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return 0;
}
