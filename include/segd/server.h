/* The segd HTTP daemon: libmicrohttpd front end plus worker pool.  HTTP
 * threads only parse, validate and enqueue; the worker that finishes a job
 * resumes its suspended connection with the response.
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
#include "segd/metrics.h"

typedef struct segd_server segd_server;

/* Start the pool and the HTTP daemon.  model and metrics are borrowed and
 * must outlive the server; cfg is copied.  0 or a negative errno with the
 * reason in err; nothing is left running on error. */
int segd_server_create(const segd_config *cfg, const segd_model *model,
                       segd_metrics *metrics, segd_server **out,
                       char *err, size_t errlen);

/* The bound TCP port (the ephemeral one when cfg->port was 0). */
int segd_server_port(const segd_server *s);

/* Start draining: /readyz answers 503 and new segment requests get 503
 * at once; accepted jobs still run and are answered.  Idempotent. */
void segd_server_drain(segd_server *s);

/* Segment requests accepted (enqueued) whose response has not yet been
 * delivered or abandoned by the client. */
long segd_server_jobs_active(segd_server *s);

/* When the drain time is up: answer every job still queued with 503
 * instead of running it.  Returns how many. */
size_t segd_server_cancel_queued(segd_server *s);

/* Stop the HTTP daemon (open connections are closed), then the pool.
 * NULL is fine. */
void segd_server_free(segd_server *s);

#endif
