/* The HTTP server's insides, shared by its files and private to
 * src/http: the server and request state, the route table, and the entry
 * points each file offers the others.
 *
 *   server.c   lifecycle, libmicrohttpd callbacks, routing, request lifetime
 *   head.c     the checks every request head passes before routing
 *   segment.c  POST /v1/segment: upload, checks, enqueue, run, expire
 *   series.c   POST /v1/series: a whole series as one job, 3D clean-up,
 *              JSON, DICOM SEG or RTSTRUCT answers
 *   guard.c    slow clients: per-connection deadlines and the sweeper
 *   respond.c  response headers, errors, sending, the access log
 *
 * Ownership of a segment request: the request struct (MHD's con_cls) holds
 * two references while its job is in the pool, one for the connection and
 * one for the job.  MHD's completion callback sets `cancelled` (under
 * s->lock) and drops the first; the worker drops the second after resuming
 * the connection, which it does only while holding s->lock and only when
 * not cancelled, so a vanished connection is never touched. */
#ifndef SEGD_HTTP_SERVER_IMPL_H
#define SEGD_HTTP_SERVER_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

#include "segd/config.h"
#include "segd/engine.h"
#include "segd/log.h"
#include "segd/metrics.h"
#include "segd/server.h"
#include "http/http.h"
#include "http/multipart.h"
#include "jobs/pool.h"
#include "jobs/queue.h"

#define RETRY_AFTER_S "1"
/* The answer when no other can be built (out of memory): made at start-up. */
#define OOM_BODY "{\"error\":{\"code\":\"unavailable\",\"message\":\"out of memory\"}}"

/* The NUL-byte checks of the request head rely on how libmicrohttpd up to
 * 0.9.76 lays the head out in its read buffer (parsed in place, line ends
 * zeroed); later versions parse differently and refuse NUL bytes
 * themselves, and have MHD_OPTION_CLIENT_DISCIPLINE_LVL (from 0.9.77),
 * which also refuses a repeated or malformed Content-Length. */
#if MHD_VERSION < 0x00097700
#define HEAD_IN_PLACE 1
#define MHD_DISCIPLINE_OPTION
#else
#define HEAD_IN_PLACE 0
#define MHD_DISCIPLINE_OPTION MHD_OPTION_CLIENT_DISCIPLINE_LVL, (int)1,
#endif

/* ------------------------------------------------------------------ */
/* Routes (server.c)                                                   */
/* ------------------------------------------------------------------ */

/* R_STATIC: a file of the embedded web viewer (src/http/assets.h), looked
 * up after the API routes. */
/* R_V2_*: the Open Inference Protocol (oip.c); the model routes' paths
 * are templates ("{name}"), matched by segd_oip_route(). */
typedef enum route_id {
    R_SEGMENT, R_SERIES, R_MODEL, R_HEALTHZ, R_READYZ, R_METRICS, R_ADMIN_RELOAD,
    R_V2_SERVER, R_V2_LIVE, R_V2_READY, R_V2_MODEL, R_V2_MODEL_READY, R_V2_INFER,
    R_STATIC, R_NONE
} route_id;

/* 1 for the Open Inference Protocol routes: their errors are {"error": "..."}. */
static inline int segd_route_is_oip(route_id r) { return r >= R_V2_SERVER && r <= R_V2_INFER; }

typedef struct segd_route {
    const char *path;
    bool post;          /* POST only, else GET/HEAD */
    const char *allow;  /* Allow header */
} segd_route;

extern const segd_route segd_routes[R_NONE];
#define ROUTE_UNMATCHED "unmatched" /* metrics label of 404s */

/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

/* Slow clients.  libmicrohttpd's connection timeout is an idle timeout,
 * reset by every byte received, so a client that sends its headers (or its
 * body) a byte at a time would hold a connection for ever (slowloris), and
 * enough of them every connection slot.  Each connection is therefore
 * tracked from its start (its socket_context); a sweeper thread shuts down
 * the socket of one whose request headers are not complete within
 * --connection-timeout of the connection's start or of its previous
 * request's end, or whose body is not complete within --request-timeout of
 * its headers.  shutdown() only: libmicrohttpd sees the end of the stream
 * and closes the connection itself (the fd stays valid until the
 * MHD_CONNECTION_NOTIFY_CLOSED callback, which unlinks the entry under
 * conn_lock before libmicrohttpd closes it). */
typedef enum conn_phase { CP_HEADERS, CP_BODY, CP_BUSY } conn_phase;

typedef struct conn_track {
    struct conn_track *prev, *next; /* segd_server.conns, under conn_lock */
    int fd;
    conn_phase phase;
    double since;                   /* start of the phase */
    bool cut;                       /* shut down already */
    struct request *queued;         /* its request's job waits in the pool (suspended) */
} conn_track;

/* A model in service or still in use (reload.c): the current one holds a
 * reference, so do every request that started with it and every worker
 * whose arena was made for it; the last reference frees it. */
typedef struct model_slot {
    struct model_slot *next;   /* segd_server.slots, under model_lock */
    segd_model *model;         /* freed with the slot when owned (reloaded ones) */
    bool owned;
    char *info;                /* GET /v1/model body */
    int refs;                  /* under model_lock */
} model_slot;

struct segd_server {
    segd_config cfg;
    pthread_mutex_t model_lock; /* slot, slots, refs, keys, reload status */
    pthread_mutex_t reload_lock; /* one reload at a time */
    model_slot *slot;          /* in service */
    model_slot *slots;         /* every live slot */
    segd_server_loader loader; /* loads --weights anew (the CLI's) */
    void *loader_ctx;
    unsigned long reloads, reload_failures;
    bool reload_ok;
    char reload_error[256], reload_at[32];
    segd_metrics *metrics;
    segd_pool *pool;
    struct MHD_Daemon *mhd;
    struct MHD_Daemon *probe_mhd; /* --probe-port listener, or NULL */
    int port, probe_port;
    segd_log *log;             /* borrowed; access log and libmicrohttpd messages */
    atomic_size_t body_reserved; /* bytes reserved by bodies, <= cfg.max_body_total */
    atomic_size_t series_reserved; /* by running series, <= cfg.max_series_memory */
    atomic_bool aborting;      /* drain time is up: running jobs stop at a slice boundary */
    struct segd_keys *keys;    /* --api-key-file, or NULL: no key needed */
    char *tls_cert, *tls_key;  /* PEM of --tls-cert/--tls-key, or NULL: plain HTTP */
    struct MHD_Response *oom_resp; /* 503 built at start-up: the answer when no other can be built */
    pthread_mutex_t lock;      /* request->cancelled, resume, pool_closed */
    bool pool_closed;          /* under lock: no more submits */
    atomic_bool draining;
    atomic_long jobs_active;
    atomic_uint_fast64_t next_id;
    uint64_t id_seed;
    pthread_mutex_t conn_lock; /* conns, conn_track fields, sweep_stop */
    pthread_cond_t sweep_cond;
    conn_track *conns;
    bool sweep_stop;
    bool sweeper_started;
    pthread_t sweeper;
};

/* Keep-alive: libmicrohttpd 0.9.75 treats any response queued in the
 * first call of the access handler (headers just parsed) as "early": it
 * refuses the rest of the request and closes the connection after the
 * answer, so a pipelined request behind it is never answered.  segd
 * therefore answers in the final call (ST_DEFER: the body, if any, read
 * and dropped), and answers early only when it must not read the body
 * (unknown framing, a Content-Length over --max-body, Expect:
 * 100-continue before an error). */
typedef enum req_state {
    ST_DEFER,    /* answer (r->pend_status, or the route) once the request is read */
    ST_BODY,     /* receiving the body of POST /v1/segment */
    ST_QUEUED,   /* suspended, job in the pool */
    ST_DONE,     /* resumed with r->resp to queue */
    ST_ANSWERED, /* response queued */
    ST_ABORTED,  /* error written on the socket mid-upload: the rest dropped until the client stops */
} req_state;

typedef struct slice {
    const uint8_t *png; /* the part's bytes: a PNG, or a DICOM Part-10 file when dicom */
    size_t len;
    bool dicom;
    char id[256];       /* from the part's file name, shortened on a UTF-8 boundary */
    /* PNG slices of a series: from the Kaggle name slice_NNNN_W_H_SX_SY */
    int number, width, height;
    double spacing_x, spacing_y; /* mm, between columns and between rows */
} slice;

/* What POST /v1/series answers (?format= and Accept). */
typedef enum series_format {
    SERIES_JSON,     /* application/json */
    SERIES_SEG,      /* application/dicom: a DICOM Segmentation */
    SERIES_RTSTRUCT, /* application/dicom: an RT Structure Set */
    SERIES_BOTH,     /* multipart/related; type="application/dicom": SEG then RTSTRUCT */
} series_format;

typedef struct request {
    segd_server *srv;
    model_slot *slot;           /* the model in service when it started (a reference) */
    conn_track *track;          /* the connection's, while the job is queued (under conn_lock) */
    atomic_bool client_gone;    /* the sweeper saw the client hang up while the job waited */
    bool dropped;               /* job dropped for a gone client: access log says so */
    struct MHD_Connection *conn;
    atomic_int refs;
    bool cancelled;             /* under srv->lock */
    bool job_accepted;          /* counted in srv->jobs_active */
    req_state state;
    route_id route;
    char method[16];
    char path[128];             /* for the access log of unmatched routes */
    char id[SEGD_HTTP_REQUEST_ID_MAX + 1];
    /* W3C Trace Context: the client's trace (or a new one) and segd's span */
    char trace_id[33], span_id[17], trace_flags[3];
    double t_start;
    double timeout;             /* seconds: X-Request-Timeout capped by --request-timeout */
    /* POST /v1/segment and /v1/series parameters */
    bool multipart;             /* multipart/form-data or (series) multipart/related */
    bool related;               /* multipart/related: DICOM instances */
    bool dicom;                 /* /v1/segment: an application/dicom body */
    series_format format;
    double min_volume_ml;       /* series: 3D clean-up threshold */
    double slice_spacing;       /* PNG series: mm between slices */
    bool preview;               /* series: ?preview=1, each slice's decoded image in the JSON */
    /* POST /v2/models/{name}/infer (oip.c): the input tensor, the outputs asked */
    uint8_t *oip_png;           /* BYTES input, base64-decoded (owned) */
    size_t oip_png_len;
    float *oip_pixels;          /* FP32/UINT16/UINT8 [H, W] input (owned) */
    int oip_h, oip_w;
    bool oip_masks, oip_rle;    /* outputs: "masks" UINT8 [C, H, W], "rle" BYTES [C] */
    char oip_id[SEGD_HTTP_REQUEST_ID_MAX + 1]; /* the request's "id", echoed; "" if none */
    char boundary[SEGD_MULTIPART_BOUNDARY_MAX + 1];
    float threshold;
    char doc_id[SEGD_HTTP_REQUEST_ID_MAX + 1]; /* ?id=, "" if none */
    uint8_t *body;
    size_t len, cap;
    size_t expected;            /* Content-Length, 0 when chunked */
    size_t received;            /* body bytes received so far (kept or dropped) */
    size_t reserved;            /* bytes taken from srv->body_reserved */
    bool over_budget;           /* --max-body-total reached: body dropped, 503 at its end */
    bool body_oom;              /* body dropped because its buffer could not grow: 503 at its end */
    size_t discarded;           /* body bytes dropped in ST_DEFER, then in ST_ABORTED */
    bool sent_directly;         /* answered on the socket (segd_respond_abort) or by libmicrohttpd itself */
    /* request head, as the client sent it */
    bool started;               /* on_request has seen it (uri_log allocates it first) */
    bool uri_nul, uri_nul_path; /* a %00 in the raw target */
    size_t uri_len;             /* raw target length */
    const char *uri_end;        /* end of the raw target in libmicrohttpd's buffer */
    bool has_body, expect_continue;
    unsigned long long content_length; /* 0 when absent (or chunked) */
    unsigned pend_status;       /* ST_DEFER: the error to answer, 0 for the route's answer */
    char pend_msg[256];
    slice *slices;
    size_t nslices;
    double t_enqueue, deadline;
    /* response */
    struct MHD_Response *resp;  /* set by a worker before resuming */
    unsigned status;
    size_t resp_bytes;
} request;

/* Milliseconds since t0 (segd_queue_now() clock). */
static inline double segd_ms_since(double t0) { return (segd_queue_now() - t0) * 1e3; }

/* ------------------------------------------------------------------ */
/* Entry points between the files                                      */
/* ------------------------------------------------------------------ */

/* server.c: drop a reference; the last frees the request (and gives its
 * body's reservation back). */
void segd_request_unref(request *r);

/* head.c: checks of the request head before any route.  Returns 0, or a
 * status with msg set and *fatal telling whether the body's framing is
 * unknown or refused (answer at once and close) or the request can be
 * read to its end first; *bad_headers: a header held a NUL byte. */
unsigned segd_head_check(request *r, const char *method, const char *version, char *msg,
                         size_t msglen, bool *fatal, bool *bad_headers);

/* segment.c: POST /v1/segment's body chunks on the connection thread, the
 * job routes' shared head and tail (segd_job_begin/segd_job_end, below),
 * and the pool's side (run, expire). */
/* A job's answer to its connection (pool threads): a response (taken
 * over; NULL: out of memory), a JSON error, a JSON document (taken
 * over).  Each finishes the job: r is not touched afterwards. */
void segd_job_finish(request *r, unsigned status, struct MHD_Response *resp, size_t bytes);
void segd_job_finish_error(request *r, unsigned status, const char *message);
void segd_job_finish_json(request *r, json_t *top);
/* 1 when the client has gone (the answer would be dropped). */
bool segd_job_gone(request *r);
/* Drop a job whose client has gone: counted (segd_jobs_abandoned_total),
 * the connection resumed without an answer and closed. */
void segd_job_drop(request *r);
enum MHD_Result segd_segment_body(request *r, const char *data, size_t n);
/* 1 when data starts like a DICOM Part-10 file (128-byte preamble, "DICM"). */
bool segd_http_looks_dicom(const void *data, size_t len);
/* Free the body's buffer and give its budget back. */
void segd_segment_drop_body(request *r);

/* A route that runs a job on the pool (POST /v1/segment, /v1/series,
 * /v2/models/{name}/infer): its own parts of the first and last calls,
 * each 0 or an HTTP status with msg set.  segd_job_begin and segd_job_end
 * (segment.c) put around them what all share: the draining refusal, the
 * common parameters, the upload, the queue. */
typedef struct segd_job_route {
    /* before the body: ctype is the Content-Type header (NULL if none) */
    unsigned (*check)(request *r, const char *ctype, char *msg, size_t msglen);
    /* the whole body in memory: into r->slices (or the route's input) */
    unsigned (*collect)(request *r, char *msg, size_t msglen);
} segd_job_route;
extern const segd_job_route segd_segment_route, segd_series_route, segd_oip_route_infer;
enum MHD_Result segd_job_begin(request *r, const segd_job_route *jr);
enum MHD_Result segd_job_end(request *r, const segd_job_route *jr);
void segd_segment_run(void *job, segd_worker **w, void *arg);
void segd_segment_expire(void *job, int reason, void *arg);
/* oip.c: the Open Inference Protocol (KServe V2) routes.  route:
 * R_V2_* for a /v2 path (the model's name and version are checked by the
 * handlers), else R_NONE. */
route_id segd_oip_route(const char *url);
enum MHD_Result segd_oip_get(request *r);
void segd_oip_run(request *r, segd_worker *w, double queue_ms);

/* reload.c: the model slots.  segd_slot_get: the current slot, a new
 * reference; segd_slot_ref: n more references; segd_slot_put: drop one
 * (NULL is fine); segd_slot_of: the live slot of m (no reference);
 * segd_slots_free: every slot, at the end; segd_slot_bind_worker: make
 * *w a worker of r's model if it is not (0 or the engine's error; *w kept
 * on error); segd_slot_info_text: the GET /v1/model body with the reload
 * status (malloc'ed, NULL on OOM). */
int segd_slot_init(segd_server *s, const segd_model *m, char *err, size_t errlen);
model_slot *segd_slot_get(segd_server *s);
void segd_slot_ref(segd_server *s, model_slot *slot, int n);
void segd_slot_put(segd_server *s, model_slot *slot);
model_slot *segd_slot_of(segd_server *s, const segd_model *m);
void segd_slots_free(segd_server *s);
int segd_slot_bind_worker(request *r, segd_worker **w);
char *segd_slot_info_text(segd_server *s, model_slot *slot);

/* series.c: POST /v1/series on a pool thread (run; queue_ms: its wait);
 * segd_series_route on the connection thread. */
void segd_series_run(request *r, segd_worker *w, double queue_ms);
/* Give n bytes of upload budget (--max-body-total) back; 0 is fine. */
void segd_segment_budget_give(segd_server *s, size_t n);

/* Take n bytes of a memory budget of cap bytes, *held of which are taken
 * (--max-body-total's bodies, --max-series-memory's series): false, and
 * nothing taken, when they do not fit.  Lock-free; give back with
 * atomic_fetch_sub. */
static inline bool segd_budget_take(atomic_size_t *held, size_t cap, size_t n)
{
    size_t cur = atomic_load(held);
    do {
        if (cur > cap || n > cap - cur)
            return false;
    } while (!atomic_compare_exchange_weak(held, &cur, cur + n));
    return true;
}

/* guard.c: the phase of c's connection (its deadline starts now), the
 * sweeper thread, and libmicrohttpd's connection callback that tracks
 * each connection from its start. */
void segd_guard_phase(segd_server *s, struct MHD_Connection *c, conn_phase phase);
void *segd_guard_sweeper(void *arg);
void segd_guard_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                              enum MHD_ConnectionNotificationCode toe);

/* respond.c: building responses (each NULL on OOM, the body taken over),
 * queueing them (MHD_YES/MHD_NO for libmicrohttpd), and the access log. */
struct MHD_Response *segd_respond_static(segd_server *s, const char *id, const void *body,
                                         size_t len, const char *ctype);
struct MHD_Response *segd_respond_buffer(segd_server *s, const char *id, char *body, size_t len,
                                         const char *ctype);
/* A response over a buffer of the DICOM writers (include/segd/dicom.h),
 * taken over and freed with segd_dicom_buffer_free(); application/dicom.
 * NULL on OOM. */
struct MHD_Response *segd_respond_dicom(segd_server *s, const char *id, void *body, size_t len);
/* oip: the Open Inference Protocol's form {"error": message}, else segd's
 * {"error": {"code", "message"}}. */
struct MHD_Response *segd_respond_make_error(segd_server *s, const char *id, int status,
                                             const char *message, const char *extra_name,
                                             const char *extra_value, size_t *bytes, bool oip);
const char *segd_respond_route_label(const request *r);
enum MHD_Result segd_respond_send(request *r, unsigned status, struct MHD_Response *resp,
                                  size_t bytes);
enum MHD_Result segd_respond_error(request *r, unsigned status, const char *message);
enum MHD_Result segd_respond_text(request *r, unsigned status, char *body, const char *ctype);
enum MHD_Result segd_respond_abort(request *r, unsigned status, const char *message);
enum MHD_Result segd_respond_reject(request *r, unsigned status, const char *message);
void segd_respond_access_log(segd_server *s, const request *r,
                             enum MHD_RequestTerminationCode toe);

#endif
