/* Prometheus metrics registry of the daemon: fixed histograms, counters and
 * gauges plus the per-(route, code) request counters, rendered as text
 * exposition format 0.0.4.  Counters and gauges are atomics; histograms and
 * the request series share one mutex (an observation is a few adds). */
#include "segd/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 ms .. 30 s: inference of one slice is tens of ms to seconds, queue
 * waits can reach the request timeout. */
static const double BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};
#define NBUCKETS (sizeof BUCKETS / sizeof BUCKETS[0])

typedef struct histogram {
    unsigned long long counts[NBUCKETS + 1]; /* per bucket, last = +Inf; not cumulative */
    unsigned long long count;
    double sum;
} histogram;

typedef struct series {
    const char *route;
    int code;
    unsigned long long n;
} series;

static const struct {
    const char *name, *help;
} HIST_INFO[SEGD_HIST_COUNT] = {
    {"segd_request_duration_seconds",
     "Time from the arrival of a POST /v1/segment request to its response being queued."},
    {"segd_queue_wait_seconds", "Time a segmentation job waited in the queue for a worker."},
    {"segd_inference_duration_seconds",
     "Engine time per slice (PNG decode, network forward, post-processing)."},
    {"segd_series_request_duration_seconds",
     "Time from the arrival of a POST /v1/series request to its response being queued."},
};

static const struct {
    const char *name, *help;
} COUNTER_INFO[SEGD_COUNTER_COUNT] = {
    {"segd_jobs_accepted_total", "Segmentation jobs accepted into the queue."},
    {"segd_jobs_rejected_total", "Segmentation requests rejected because the queue was full."},
    {"segd_jobs_timed_out_total", "Jobs that reached their deadline before a worker took them."},
    {"segd_http_responses_undelivered_total",
     "Responses queued but not delivered (the client went away or the daemon stopped); "
     "not counted in segd_http_requests_total."},
    {"segd_log_lines_dropped_total", "Log lines dropped because the log reader was too slow."},
    {"segd_uploads_refused_total", "Uploads answered 503 because --max-body-total was reached."},
    {"segd_model_reloads_total", "Weights reloads that switched the model in service."},
    {"segd_model_reload_failures_total",
     "Weights reloads refused (file missing, truncated or invalid): the old model kept serving."},
    {"segd_jobs_abandoned_total",
     "Jobs dropped without running (or, for a series, between slices) because their client "
     "disconnected."},
    {"segd_series_memory_refused_total",
     "Series answered 503 because --max-series-memory was held by other series."},
};

static const struct {
    const char *name, *help;
} GAUGE_INFO[SEGD_GAUGE_COUNT] = {
    {"segd_queue_depth", "Jobs waiting for a worker."},
    {"segd_workers_busy", "Workers running a job."},
    {"segd_workers", "Worker threads."},
    {"segd_connections_in_flight", "Open HTTP connections."},
    {"segd_upload_bytes_reserved", "Bytes of request bodies reserved against --max-body-total."},
    {"segd_series_memory_bytes_reserved",
     "Bytes of running series' working memory reserved against --max-series-memory."},
};

struct segd_metrics {
    pthread_mutex_t lock; /* histograms and series */
    histogram hist[SEGD_HIST_COUNT];
    series series[SEGD_METRICS_MAX_SERIES];
    size_t nseries;
    atomic_ullong counters[SEGD_COUNTER_COUNT];
    atomic_long gauges[SEGD_GAUGE_COUNT];
    char *version;
    char model_name[128], model_sha256[72]; /* under lock: a reload changes them */
    int model_width;
};

int segd_metrics_create(const char *version, const char *model_name,
                        const char *model_sha256, int model_width,
                        segd_metrics **out)
{
    *out = NULL;
    segd_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    if (pthread_mutex_init(&m->lock, NULL)) {
        free(m);
        return -ENOMEM;
    }
    for (int i = 0; i < SEGD_COUNTER_COUNT; i++)
        atomic_init(&m->counters[i], 0);
    for (int i = 0; i < SEGD_GAUGE_COUNT; i++)
        atomic_init(&m->gauges[i], 0);
    m->version = strdup(version ? version : "");
    segd_metrics_set_model(m, model_name, model_sha256, model_width);
    if (!m->version) {
        segd_metrics_free(m);
        return -ENOMEM;
    }
    *out = m;
    return 0;
}

void segd_metrics_set_model(segd_metrics *m, const char *name, const char *sha256, int width)
{
    pthread_mutex_lock(&m->lock);
    snprintf(m->model_name, sizeof m->model_name, "%s", name ? name : "");
    snprintf(m->model_sha256, sizeof m->model_sha256, "%s", sha256 ? sha256 : "");
    m->model_width = width;
    pthread_mutex_unlock(&m->lock);
}

void segd_metrics_free(segd_metrics *m)
{
    if (!m)
        return;
    free(m->version);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void segd_metrics_observe(segd_metrics *m, segd_metrics_hist h, double seconds)
{
    if (!(seconds >= 0)) /* NaN or clock oddity */
        seconds = 0;
    size_t b = 0;
    while (b < NBUCKETS && seconds > BUCKETS[b])
        b++;
    pthread_mutex_lock(&m->lock);
    m->hist[h].counts[b]++;
    m->hist[h].count++;
    m->hist[h].sum += seconds;
    pthread_mutex_unlock(&m->lock);
}

void segd_metrics_inc(segd_metrics *m, segd_metrics_counter c)
{
    atomic_fetch_add(&m->counters[c], 1);
}

void segd_metrics_counter_set(segd_metrics *m, segd_metrics_counter c, unsigned long long value)
{
    atomic_store(&m->counters[c], value);
}

void segd_metrics_gauge_add(segd_metrics *m, segd_metrics_gauge g, long delta)
{
    atomic_fetch_add(&m->gauges[g], delta);
}

void segd_metrics_gauge_set(segd_metrics *m, segd_metrics_gauge g, long value)
{
    atomic_store(&m->gauges[g], value);
}

void segd_metrics_count_request(segd_metrics *m, const char *route, int code)
{
    pthread_mutex_lock(&m->lock);
    size_t i;
    for (i = 0; i < m->nseries; i++)
        if (m->series[i].code == code && strcmp(m->series[i].route, route) == 0)
            break;
    if (i == m->nseries) {
        if (m->nseries == SEGD_METRICS_MAX_SERIES) {
            /* the last slot becomes the catch-all */
            i = SEGD_METRICS_MAX_SERIES - 1;
            m->series[i].route = "overflow";
            m->series[i].code = 0;
        } else {
            m->series[i] = (series){route, code, 0};
            m->nseries++;
        }
    }
    m->series[i].n++;
    pthread_mutex_unlock(&m->lock);
}

unsigned long long segd_metrics_counter_value(segd_metrics *m, segd_metrics_counter c)
{
    return atomic_load(&m->counters[c]);
}

long segd_metrics_gauge_value(segd_metrics *m, segd_metrics_gauge g)
{
    return atomic_load(&m->gauges[g]);
}

/* Label value with \\, " and newline escaped as the format requires. */
static void put_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            fputs("\\\\", f);
        else if (*v == '"')
            fputs("\\\"", f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void put_header(FILE *f, const char *name, const char *help, const char *type)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int segd_metrics_render(segd_metrics *m, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    /* snapshot under the lock, format outside it */
    histogram hist[SEGD_HIST_COUNT];
    series *ser = malloc(sizeof m->series);
    if (!ser)
        return -ENOMEM;
    pthread_mutex_lock(&m->lock);
    memcpy(hist, m->hist, sizeof hist);
    char model_name[sizeof m->model_name], model_sha256[sizeof m->model_sha256];
    memcpy(model_name, m->model_name, sizeof model_name);
    memcpy(model_sha256, m->model_sha256, sizeof model_sha256);
    int model_width = m->model_width;
    size_t nser = m->nseries;
    memcpy(ser, m->series, nser * sizeof *ser);
    pthread_mutex_unlock(&m->lock);

    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f) {
        free(ser);
        return -ENOMEM;
    }
    put_header(f, "segd_build_info", "Build of the running daemon.", "gauge");
    fputs("segd_build_info{version=\"", f);
    put_label(f, m->version);
    fputs("\"} 1\n", f);
    put_header(f, "segd_model_info", "Loaded model.", "gauge");
    fputs("segd_model_info{name=\"", f);
    put_label(f, model_name);
    fputs("\",sha256=\"", f);
    put_label(f, model_sha256);
    fprintf(f, "\",width=\"%d\"} 1\n", model_width);

    put_header(f, "segd_http_requests_total", "HTTP responses delivered completely, by route and status code.",
               "counter");
    for (size_t i = 0; i < nser; i++) {
        fputs("segd_http_requests_total{route=\"", f);
        put_label(f, ser[i].route);
        fprintf(f, "\",code=\"%d\"} %llu\n", ser[i].code, ser[i].n);
    }
    for (int c = 0; c < SEGD_COUNTER_COUNT; c++) {
        put_header(f, COUNTER_INFO[c].name, COUNTER_INFO[c].help, "counter");
        fprintf(f, "%s %llu\n", COUNTER_INFO[c].name, atomic_load(&m->counters[c]));
    }
    for (int g = 0; g < SEGD_GAUGE_COUNT; g++) {
        put_header(f, GAUGE_INFO[g].name, GAUGE_INFO[g].help, "gauge");
        fprintf(f, "%s %ld\n", GAUGE_INFO[g].name, atomic_load(&m->gauges[g]));
    }
    for (int h = 0; h < SEGD_HIST_COUNT; h++) {
        const char *name = HIST_INFO[h].name;
        put_header(f, name, HIST_INFO[h].help, "histogram");
        unsigned long long cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += hist[h].counts[b];
            fprintf(f, "%s_bucket{le=\"%g\"} %llu\n", name, BUCKETS[b], cum);
        }
        cum += hist[h].counts[NBUCKETS];
        fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, cum);
        fprintf(f, "%s_sum %.9g\n%s_count %llu\n", name, hist[h].sum, name, hist[h].count);
    }
    free(ser);
    int bad = ferror(f);
    if (fclose(f) || bad) {
        free(buf);
        return -ENOMEM;
    }
    *text = buf;
    *len = size;
    return 0;
}
