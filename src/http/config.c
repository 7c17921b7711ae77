/* Options of `segd serve`: one table drives the flags, the SEGD_*
 * environment variables and the --help text, so the three cannot drift. */
#include "segd/config.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "segd/engine.h"
#include "model/cpu.h"
#include "model/gemm.h"

typedef enum opt_kind { OPT_STR, OPT_INT, OPT_SECONDS, OPT_REAL, OPT_SIZE, OPT_BOOL } opt_kind;

typedef struct opt {
    const char *flag;   /* without the leading "--" */
    const char *env;
    opt_kind kind;
    size_t offset;      /* into segd_config */
    size_t cap;         /* OPT_STR: buffer size */
    double min, max;    /* numeric bounds */
    const char *def;    /* default as shown by --help */
    const char *help;
} opt;

#define F(field) offsetof(segd_config, field), sizeof(((segd_config *)0)->field)

static const opt OPTS[] = {
    {"bind", "SEGD_BIND", OPT_STR, F(bind), 0, 0, "0.0.0.0", "listen address (IPv4 or IPv6 literal)"},
    {"port", "SEGD_PORT", OPT_INT, F(port), 0, 65535, "8080", "TCP port; 0 picks an ephemeral one"},
    {"port-file", "SEGD_PORT_FILE", OPT_STR, F(port_file), 0, 0, "none", "write the bound port to FILE (removed at exit)"},
    {"weights", "SEGD_WEIGHTS", OPT_STR, F(weights), 0, 0, "weights/*.safetensors", "safetensors weights file"},
    {"workers", "SEGD_WORKERS", OPT_INT, F(workers), 1, 256, "one per CPU", "inference threads"},
    {"worker-threads", "SEGD_WORKER_THREADS", OPT_INT, F(worker_threads), 1, 256, "1",
     "threads sharing each inference of a worker (latency; workers x this <= CPUs)"},
    {"batch", "SEGD_BATCH", OPT_INT, F(batch), 1, SEGD_MAX_BATCH, "1",
     "slices of one request (series, multipart) run through the network at once, 1-64 "
     "(each beyond 1: ~27 MiB per worker)"},
    {"gemm", "SEGD_GEMM", OPT_STR, F(gemm), 0, 0, "auto",
     "native (AVX-512 or AVX2 micro-kernel) | openblas | auto (native iff AVX2+FMA)"},
    {"precision", "SEGD_PRECISION", OPT_STR, F(precision), 0, 0, "fp32",
     "Winograd GEMMs: fp32 | bf16 (needs AVX512-BF16, native AVX-512) | auto (bf16 where it runs "
     "and the weights carry a passing bf16_agreement record, else fp32)"},
    {"queue-depth", "SEGD_QUEUE_DEPTH", OPT_INT, F(queue_depth), 1, 1 << 20, "2 x workers",
     "jobs waiting for a worker; beyond it 503 + Retry-After"},
    {"http-threads", "SEGD_HTTP_THREADS", OPT_INT, F(http_threads), 1, 64, "1", "libmicrohttpd threads (I/O only)"},
    {"request-timeout", "SEGD_REQUEST_TIMEOUT", OPT_SECONDS, F(request_timeout), 1e-6, 86400, "30",
     "seconds; a job not started by then gets 504"},
    {"drain-timeout", "SEGD_DRAIN_TIMEOUT", OPT_SECONDS, F(drain_timeout), 0, 86400, "30",
     "seconds to finish accepted jobs after SIGTERM/SIGINT"},
    {"connection-timeout", "SEGD_CONNECTION_TIMEOUT", OPT_INT, F(conn_timeout), 1, 86400, "30",
     "seconds an idle connection is kept"},
    {"max-connections", "SEGD_MAX_CONNECTIONS", OPT_INT, F(max_connections), 1, 65536, "256",
     "concurrent connections"},
    {"max-body", "SEGD_MAX_BODY", OPT_SIZE, F(max_body), 1, (double)SIZE_MAX / 2, "32M",
     "request body limit in bytes (K/M/G suffixes), 413 beyond"},
    {"max-body-total", "SEGD_MAX_BODY_TOTAL", OPT_SIZE, F(max_body_total), 1, (double)SIZE_MAX / 2,
     "memory/4",
     "request bodies buffered at once, all connections (K/M/G); 503 beyond"},
    {"max-series-memory", "SEGD_MAX_SERIES_MEMORY", OPT_SIZE, F(max_series_memory), 1,
     (double)SIZE_MAX / 2, "memory/4",
     "working memory of the series running at once (K/M/G); 503 beyond, 413 over it alone"},
    {"probe-port", "SEGD_PROBE_PORT", OPT_INT, F(probe_port), -1, 65535, "-1 (off)",
     "second listener serving only /healthz, /readyz, /metrics (0 = ephemeral)"},
    {"max-pixels", "SEGD_MAX_PIXELS", OPT_SIZE, F(max_pixels), 1, (double)(1u << 30), "1048576",
     "image limit (width x height), 413 beyond; sizes each worker's arena"},
    {"max-parts", "SEGD_MAX_PARTS", OPT_INT, F(max_parts), 1, 1024, "16", "multipart parts per request, 413 beyond"},
    {"max-series-slices", "SEGD_MAX_SERIES_SLICES", OPT_INT, F(max_series_slices), 1, 4096, "512",
     "slices (instances) per POST /v1/series, 413 beyond"},
    {"min-volume-ml", "SEGD_MIN_VOLUME_ML", OPT_REAL, F(min_volume_ml), 0, 1e6, "4",
     "series 3D clean-up: connected components under this volume (mL) dropped; 0 = off"},
    {"api-key-file", "SEGD_API_KEY_FILE", OPT_STR, F(api_key_file), 0, 0, "none",
     "file of API keys, one per line: every POST then needs Authorization: Bearer <key>"},
    {"tls-cert", "SEGD_TLS_CERT", OPT_STR, F(tls_cert), 0, 0, "none",
     "PEM certificate (chain): serve HTTPS on --port (libmicrohttpd + GnuTLS); needs --tls-key"},
    {"tls-key", "SEGD_TLS_KEY", OPT_STR, F(tls_key), 0, 0, "none", "PEM private key of --tls-cert"},
    {"cors-origin", "SEGD_CORS_ORIGIN", OPT_STR, F(cors_origin), 0, 0, "off",
     "Access-Control-Allow-Origin value ('*' allowed)"},
    {"access-log", "SEGD_ACCESS_LOG", OPT_BOOL, F(access_log), 0, 1, "on", "one JSON line per request on stderr (on|off)"},
    {"debug-job-delay", "SEGD_DEBUG_JOB_DELAY", OPT_INT, F(debug_job_delay_ms), 0, 600000, "0",
     "testing aid: milliseconds a worker sleeps before each job"},
};

#define NOPTS (sizeof OPTS / sizeof OPTS[0])

void segd_config_defaults(segd_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->bind, "0.0.0.0");
    cfg->port = SEGD_CONFIG_DEFAULT_PORT;
    int n = segd_cpu_count();
    cfg->workers = n > 256 ? 256 : n;
    cfg->worker_threads = 1;
    cfg->batch = 1;
    strcpy(cfg->gemm, "auto");
    strcpy(cfg->precision, "fp32");
    cfg->queue_depth = 0; /* derived from workers after parsing */
    cfg->http_threads = 1;
    cfg->request_timeout = SEGD_CONFIG_DEFAULT_REQUEST_TIMEOUT;
    cfg->drain_timeout = SEGD_CONFIG_DEFAULT_DRAIN_TIMEOUT;
    cfg->conn_timeout = SEGD_CONFIG_DEFAULT_CONN_TIMEOUT;
    cfg->max_connections = SEGD_CONFIG_DEFAULT_MAX_CONNECTIONS;
    cfg->max_body = SEGD_CONFIG_DEFAULT_MAX_BODY;
    cfg->max_body_total = 0; /* derived from memory_bytes after parsing */
    cfg->max_series_memory = 0; /* likewise */
    cfg->memory_bytes = segd_memory_bytes();
    cfg->probe_port = -1;
    cfg->max_pixels = SEGD_DEFAULT_MAX_PIXELS;
    cfg->max_parts = SEGD_CONFIG_DEFAULT_MAX_PARTS;
    cfg->max_series_slices = SEGD_CONFIG_DEFAULT_MAX_SERIES_SLICES;
    cfg->min_volume_ml = SEGD_CONFIG_DEFAULT_MIN_VOLUME_ML;
    cfg->access_log = 1;
}

/* Store value into the field of o.  0 or -EINVAL. */
static int set_opt(segd_config *cfg, const opt *o, const char *value)
{
    char *field = (char *)cfg + o->offset;
    char *end;
    if (o->kind == OPT_STR) {
        segd_gemm g;
        segd_precision p;
        if (strlen(value) + 1 > o->cap)
            return -EINVAL;
        if (o->offset == offsetof(segd_config, gemm) && segd_gemm_parse(value, &g))
            return -EINVAL;
        if (o->offset == offsetof(segd_config, precision) && segd_precision_parse(value, &p))
            return -EINVAL;
        memcpy(field, value, strlen(value) + 1);
        return 0;
    }
    if (o->kind == OPT_BOOL) {
        int v;
        if (!strcasecmp(value, "on") || !strcasecmp(value, "1") || !strcasecmp(value, "true") ||
            !strcasecmp(value, "yes"))
            v = 1;
        else if (!strcasecmp(value, "off") || !strcasecmp(value, "0") ||
                 !strcasecmp(value, "false") || !strcasecmp(value, "no"))
            v = 0;
        else
            return -EINVAL;
        memcpy(field, &v, sizeof v);
        return 0;
    }
    if (!*value)
        return -EINVAL;
    errno = 0;
    double v = strtod(value, &end);
    if (errno || end == value || !isfinite(v))
        return -EINVAL;
    if (o->kind == OPT_SIZE && *end) {
        double mul = 0;
        switch (*end) {
        case 'k': case 'K': mul = 1024.0; break;
        case 'm': case 'M': mul = 1024.0 * 1024.0; break;
        case 'g': case 'G': mul = 1024.0 * 1024.0 * 1024.0; break;
        default: return -EINVAL;
        }
        v *= mul;
        end++;
        if (*end == 'i' || *end == 'I')
            end++;
        if (*end == 'b' || *end == 'B')
            end++;
    }
    if (*end || v < o->min || v > o->max)
        return -EINVAL;
    switch (o->kind) {
    case OPT_INT: {
        if (v != floor(v))
            return -EINVAL;
        if (o->offset == offsetof(segd_config, conn_timeout) ||
            o->offset == offsetof(segd_config, max_connections)) {
            unsigned u = (unsigned)v;
            memcpy(field, &u, sizeof u);
        } else {
            int i = (int)v;
            memcpy(field, &i, sizeof i);
        }
        return 0;
    }
    case OPT_SECONDS:
    case OPT_REAL:
        memcpy(field, &v, sizeof v);
        return 0;
    case OPT_SIZE: {
        if (v != floor(v))
            return -EINVAL;
        size_t s = (size_t)v;
        memcpy(field, &s, sizeof s);
        return 0;
    }
    default:
        return -EINVAL;
    }
}

/* What a bad value of an integer option is told: its range ("" else). */
static const char *range_hint(const opt *o, char *buf, size_t len)
{
    if (o->kind == OPT_INT)
        snprintf(buf, len, ": an integer from %.0f to %.0f", o->min, o->max);
    else
        buf[0] = 0;
    return buf;
}

static const opt *find_flag(const char *name, size_t n)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(OPTS[i].flag) == n && strncmp(OPTS[i].flag, name, n) == 0)
            return &OPTS[i];
    return NULL;
}

int segd_config_parse(segd_config *cfg, int argc, char **argv, char **envp,
                      char *err, size_t errlen)
{
    int queue_given = cfg->queue_depth > 0;
    int budget_given = cfg->max_body_total > 0;
    int series_given = cfg->max_series_memory > 0;
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, "SEGD_", 5) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        for (size_t i = 0; i < NOPTS; i++) {
            const opt *o = &OPTS[i];
            if (strlen(o->env) != (size_t)(eq - *e) || strncmp(o->env, *e, (size_t)(eq - *e)) != 0)
                continue;
            if (set_opt(cfg, o, eq + 1)) {
                char hint[64];
                snprintf(err, errlen, "invalid value '%s' for %s%s", eq + 1, o->env,
                         range_hint(o, hint, sizeof hint));
                return -EINVAL;
            }
            if (o->offset == offsetof(segd_config, queue_depth))
                queue_given = 1;
            if (o->offset == offsetof(segd_config, max_body_total))
                budget_given = 1;
            if (o->offset == offsetof(segd_config, max_series_memory))
                series_given = 1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cfg->help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s'", a);
            return -EINVAL;
        }
        const char *name = a + 2, *value;
        const char *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = find_flag(name, n);
        if (!o) {
            snprintf(err, errlen, "unknown option '%s'", a);
            return -EINVAL;
        }
        if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "option '--%s' needs a value", o->flag);
                return -EINVAL;
            }
            value = argv[++i];
        }
        if (set_opt(cfg, o, value)) {
            char hint[64];
            snprintf(err, errlen, "invalid value '%s' for --%s%s", value, o->flag,
                     range_hint(o, hint, sizeof hint));
            return -EINVAL;
        }
        if (o->offset == offsetof(segd_config, queue_depth))
            queue_given = 1;
        if (o->offset == offsetof(segd_config, max_body_total))
            budget_given = 1;
        if (o->offset == offsetof(segd_config, max_series_memory))
            series_given = 1;
    }
    if (!queue_given)
        cfg->queue_depth = SEGD_CONFIG_QUEUE_PER_WORKER * cfg->workers;
    if (!budget_given) {
        size_t b = cfg->memory_bytes / SEGD_CONFIG_BODY_MEMORY_SHARE;
        cfg->max_body_total = b > cfg->max_body ? b : cfg->max_body;
    }
    if (!series_given)
        cfg->max_series_memory = cfg->memory_bytes / SEGD_CONFIG_BODY_MEMORY_SHARE;
    return 0;
}

void segd_config_usage(FILE *f)
{
    fputs("usage: segd serve [options]\n"
          "\n"
          "Run the HTTP segmentation daemon.  Every option can also be set by the\n"
          "environment variable shown; a flag wins over its variable.  Values:\n"
          "--opt VALUE or --opt=VALUE.\n"
          "\n"
          "options:\n",
          f);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &OPTS[i];
        char left[64];
        snprintf(left, sizeof left, "--%s", o->flag);
        fprintf(f, "  %-22s %s\n  %-22s [%s, default: %s]\n", left, o->help, "", o->env, o->def);
    }
    fputs("  --help                 this text\n"
          "\n"
          "endpoints (described in GET /openapi.json; the web viewer is GET /):\n"
          "  POST /v1/segment       slices: image/png, application/dicom or multipart\n"
          "                         form-data 'file' parts; ?id= ?threshold=\n"
          "  POST /v1/series        one series, DICOM or Kaggle-named PNGs;\n"
          "                         ?format=json|seg|rtstruct|seg,rtstruct\n"
          "  POST /v1/admin/reload  reload the weights and API keys\n"
          "  GET  /v1/model, /healthz, /readyz, /metrics\n"
          "  Open Inference Protocol (KServe V2): GET /v2, /v2/health/live,\n"
          "  /v2/health/ready, /v2/models/NAME[/versions/V][/ready];\n"
          "  POST /v2/models/NAME[/versions/V]/infer\n"
          "signals: SIGTERM/SIGINT/SIGQUIT drain (readyz 503, accepted jobs answered) then\n"
          "  exit 0, or 1 when --drain-timeout ends first or a second signal comes;\n"
          "  SIGHUP reloads the weights and API keys; SIGUSR1/SIGUSR2 are ignored\n",
          f);
}
