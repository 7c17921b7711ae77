/* The segd HTTP daemon: libmicrohttpd front end plus worker pool.  HTTP
 * threads only parse, validate and enqueue; the worker that finishes a job
 * resumes its suspended connection with the response.
 *
 * API (all answers JSON unless noted, all carry X-Request-Id and, with
 * --cors-origin, the CORS headers):
 *   POST /v1/segment  body image/png (-> the segd_result_json document) or
 *                     multipart/form-data with `file` parts (-> {"results":
 *                     [...]} in part order, ids from the file names);
 *                     ?id= ?threshold= (0 < t < 1); timing_ms gets queue and
 *                     encode added to the engine's decode, infer, post.
 *   POST /v1/segment  also one DICOM image (application/dicom)
 *   POST /v1/series   one series (multipart/related DICOM, or Kaggle-named
 *                     PNGs) as one job: JSON, DICOM SEG or RTSTRUCT
 *   POST /v1/admin/reload  segd_server_reload()
 *   /v2/...           the Open Inference Protocol (KServe V2 REST)
 *   GET  /v1/model    segd_model_info_json() of the model in service
 *   GET  /healthz     alive;  GET /readyz  200, or 503 while draining
 *   GET  /metrics     Prometheus text 0.0.4
 *   OPTIONS <route>   204 with Allow (and the CORS preflight headers)
 * With --api-key-file, POST routes need "Authorization: Bearer <key>" (401).
 * Errors: {"error":{"code","message"}} ({"error": "..."} on /v2) with 400 (bad PNG, multipart, query),
 * 404, 405 (+Allow), 413 (--max-body, --max-pixels, --max-parts), 415, 422
 * (zero-size image), 500 (non-finite network output), 503 (+Retry-After:
 * queue full, --max-body-total in use, draining, OOM), 504 (deadline
 * passed while queued: the job never runs).  With cfg->probe_port >= 0 a
 * second listener serves /healthz, /readyz and /metrics only.
 *
 * Bodies: a Content-Length over --max-body is refused before the upload;
 * a chunked body that grows over it is discarded and answered 413 at its
 * end (libmicrohttpd cannot answer mid-upload), or the connection is
 * closed once it passes twice the limit.  Memory: bodies held at once
 * never exceed --max-body-total (a Content-Length that does not fit is
 * answered 503 + Retry-After before the upload, a chunked body that stops
 * fitting at its end); buffers grow as bytes arrive.
 *
 * Lifecycle: segd_server_create() (listening when it returns) ->
 * segd_server_drain() on SIGTERM -> poll segd_server_jobs_active() until 0
 * or the drain time is up (then segd_server_cancel_queued()) ->
 * segd_server_free(). */
#ifndef SEGD_SERVER_H
#define SEGD_SERVER_H

#include <stddef.h>

#include "segd/config.h"
#include "segd/engine.h"
#include "segd/log.h"
#include "segd/metrics.h"

typedef struct segd_server segd_server;

/* Start the pool and the HTTP daemon (and the probe listener when
 * cfg->probe_port >= 0).  model, metrics and log (the access log and
 * libmicrohttpd's messages; NULL: straight to stderr) are borrowed and
 * must outlive the server; cfg is copied.  0 or a negative errno with the
 * reason in err (-EADDRINUSE: "address in use"); nothing is left running
 * on error. */
int segd_server_create(const segd_config *cfg, const segd_model *model,
                       segd_metrics *metrics, segd_log *log, segd_server **out,
                       char *err, size_t errlen);

/* The bound TCP port (the ephemeral one when cfg->port was 0). */
int segd_server_port(const segd_server *s);

/* The bound probe port, or -1 when there is no probe listener. */
int segd_server_probe_port(const segd_server *s);

/* Start draining: /readyz answers 503 and new segment requests get 503
 * at once; accepted jobs still run and are answered.  Idempotent. */
void segd_server_drain(segd_server *s);

/* Segment requests accepted (enqueued) whose response has not yet been
 * delivered or abandoned by the client. */
long segd_server_jobs_active(segd_server *s);

/* When the drain time is up: answer every job still queued with 503
 * instead of running it, and make running jobs answer 503 at their next
 * slice boundary.  Returns how many queued jobs were answered. */
size_t segd_server_cancel_queued(segd_server *s);

/* Load the weights anew (the file --weights names), validated as at
 * start-up; the caller's options (GEMM backend, CPU paths) applied.  0 or
 * a negative errno with the reason in err; *out owned by the server. */
typedef int (*segd_server_loader)(void *ctx, segd_model **out, char *err, size_t errlen);

/* Give the server its loader (before any reload; ctx must outlive it). */
void segd_server_set_loader(segd_server *s, segd_server_loader fn, void *ctx);

/* Reload the weights (and the --api-key-file keys) without dropping a
 * request: load and validate beside the running model, then switch in one
 * step; requests already started finish on the model they started with
 * (and name it), workers move to the new model between jobs.  On error
 * the old model (and keys) stay in service, err says why, and the failure
 * is logged, counted (segd_model_reload_failures_total) and shown in GET
 * /v1/model.  Thread-safe; reloads are serialized.  0 or a negative
 * errno. */
int segd_server_reload(segd_server *s, char *err, size_t errlen);

/* Stop the HTTP daemon (open connections are closed), then the pool.
 * NULL is fine. */
void segd_server_free(segd_server *s);

#endif
