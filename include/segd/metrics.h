/* Prometheus metrics of the daemon: a context (no globals) passed to
 * everything that records, rendered as text exposition format 0.0.4.  All
 * recording functions are thread-safe and cannot fail. */
#ifndef SEGD_METRICS_H
#define SEGD_METRICS_H

#include <stddef.h>

#define SEGD_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct segd_metrics segd_metrics;

typedef enum segd_metrics_hist {
    SEGD_HIST_REQUEST,    /* segd_request_duration_seconds */
    SEGD_HIST_QUEUE_WAIT, /* segd_queue_wait_seconds */
    SEGD_HIST_INFERENCE,  /* segd_inference_duration_seconds */
    SEGD_HIST_SERIES,     /* segd_series_request_duration_seconds */
    SEGD_HIST_COUNT
} segd_metrics_hist;

typedef enum segd_metrics_counter {
    SEGD_COUNTER_JOBS_ACCEPTED,  /* segd_jobs_accepted_total */
    SEGD_COUNTER_JOBS_REJECTED,  /* segd_jobs_rejected_total (queue full) */
    SEGD_COUNTER_JOBS_TIMED_OUT, /* segd_jobs_timed_out_total */
    SEGD_COUNTER_UNDELIVERED,    /* segd_http_responses_undelivered_total */
    SEGD_COUNTER_LOG_DROPPED,    /* segd_log_lines_dropped_total */
    SEGD_COUNTER_UPLOADS_REFUSED, /* segd_uploads_refused_total (body budget) */
    SEGD_COUNTER_RELOADS,        /* segd_model_reloads_total */
    SEGD_COUNTER_RELOAD_FAILURES, /* segd_model_reload_failures_total */
    SEGD_COUNTER_JOBS_ABANDONED, /* segd_jobs_abandoned_total (client gone) */
    SEGD_COUNTER_SERIES_REFUSED, /* segd_series_memory_refused_total (series budget) */
    SEGD_COUNTER_COUNT
} segd_metrics_counter;

typedef enum segd_metrics_gauge {
    SEGD_GAUGE_QUEUE_DEPTH,    /* segd_queue_depth */
    SEGD_GAUGE_WORKERS_BUSY,   /* segd_workers_busy */
    SEGD_GAUGE_WORKERS,        /* segd_workers */
    SEGD_GAUGE_CONNECTIONS,    /* segd_connections_in_flight */
    SEGD_GAUGE_BODY_BYTES,     /* segd_upload_bytes_reserved */
    SEGD_GAUGE_SERIES_BYTES,   /* segd_series_memory_bytes_reserved */
    SEGD_GAUGE_COUNT
} segd_metrics_gauge;

/* The info labels are copied.  0 or -ENOMEM. */
int segd_metrics_create(const char *version, const char *model_name,
                        const char *model_sha256, int model_width,
                        segd_metrics **out);
void segd_metrics_free(segd_metrics *m); /* NULL is fine */
/* The model segd_model_info names (after a weights reload).  Cannot fail
 * (longer values are cut). */
void segd_metrics_set_model(segd_metrics *m, const char *name, const char *sha256, int width);

/* Add one observation (seconds) to a histogram. */
void segd_metrics_observe(segd_metrics *m, segd_metrics_hist h, double seconds);
void segd_metrics_inc(segd_metrics *m, segd_metrics_counter c);
/* Set a counter kept elsewhere (e.g. the log's drop count); value must
 * never decrease. */
void segd_metrics_counter_set(segd_metrics *m, segd_metrics_counter c, unsigned long long value);
void segd_metrics_gauge_add(segd_metrics *m, segd_metrics_gauge g, long delta);
void segd_metrics_gauge_set(segd_metrics *m, segd_metrics_gauge g, long value);

/* Count one answered request: segd_http_requests_total{route,code}.  route
 * must be a string with static lifetime (compared by content; at most
 * SEGD_METRICS_MAX_SERIES distinct (route, code) pairs, later ones are
 * counted under route "overflow"). */
#define SEGD_METRICS_MAX_SERIES 128
void segd_metrics_count_request(segd_metrics *m, const char *route, int code);

/* Read a counter or gauge (for tests and readiness). */
unsigned long long segd_metrics_counter_value(segd_metrics *m, segd_metrics_counter c);
long segd_metrics_gauge_value(segd_metrics *m, segd_metrics_gauge g);

/* Render everything; *text is malloc'ed (caller frees), *len its length
 * without the NUL.  0 or -ENOMEM. */
int segd_metrics_render(segd_metrics *m, char **text, size_t *len);

#endif
