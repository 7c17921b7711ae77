/* POST /v1/segment: the request's checks before its body, the upload under
 * --max-body and --max-body-total (shared with POST /v1/series), the
 * slices of the body (PNG, or one DICOM file), the enqueue with suspend;
 * then, on a pool thread, running the job (or expiring it) and resuming
 * the connection with the answer. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "http/server_impl.h"
#ifdef SEGD_HAVE_DICOM
#include "api/dicom_json.h"
#include "segd/dicom.h"
#endif

/* Upload memory budget (--max-body-total): reservations are taken before
 * a buffer grows and given back when it is freed, so the bodies held at
 * any moment never exceed the budget. */
static bool budget_take(segd_server *s, size_t n)
{
    if (!segd_budget_take(&s->body_reserved, s->cfg.max_body_total, n))
        return false;
    segd_metrics_gauge_add(s->metrics, SEGD_GAUGE_BODY_BYTES, (long)n);
    return true;
}

void segd_segment_budget_give(segd_server *s, size_t n)
{
    if (!n)
        return;
    atomic_fetch_sub(&s->body_reserved, n);
    segd_metrics_gauge_add(s->metrics, SEGD_GAUGE_BODY_BYTES, -(long)n);
}

/* The parameters every job route shares (X-Request-Timeout, ?threshold=,
 * ?id=): 0, or the request was answered (a 400) and the caller returns
 * *ret. */
static int upload_params(request *r, enum MHD_Result *ret)
{
    struct MHD_Connection *c = r->conn;
    /* the client's deadline, never beyond the server's */
    r->timeout = r->srv->cfg.request_timeout;
    const char *rt = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Timeout");
    double v;
    if (rt && segd_http_seconds_parse(rt, &v)) {
        *ret = segd_respond_reject(r, 400, "X-Request-Timeout must be a number of seconds > 0");
        return 1;
    }
    if (rt && v < r->timeout)
        r->timeout = v;
    r->threshold = -1.0f;
    const char *t = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "threshold");
    if (t && segd_threshold_parse(t, &r->threshold)) {
        *ret = segd_respond_reject(r, 400, "threshold must be a decimal number with 0 < threshold < 1");
        return 1;
    }
    const char *id = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id");
    if (id) {
        bool ok = *id && strlen(id) <= SEGD_HTTP_REQUEST_ID_MAX;
        for (const unsigned char *p = (const unsigned char *)id; ok && *p; p++)
            ok = *p >= 0x20 && *p != 0x7f;
        /* checked without allocating: an out-of-memory probe is not a bad id */
        if (!ok || !segd_http_utf8_valid(id, strlen(id))) {
            *ret = segd_respond_reject(r, 400, "id must be 1..128 bytes of UTF-8 text");
            return 1;
        }
        strcpy(r->doc_id, id);
    }
    return 0;
}

/* Start reading the body (budget reserved from Content-Length). */
static enum MHD_Result upload_start(request *r)
{
    segd_server *s = r->srv;
    /* Reserve the announced size against --max-body-total now (answered
     * before the upload, connection closed, when it does not fit); the
     * buffer itself grows as bytes arrive, so an announced but unsent body
     * costs nothing. */
    if (r->content_length > 0) {
        if (!budget_take(s, (size_t)r->content_length)) {
            segd_metrics_inc(s->metrics, SEGD_COUNTER_UPLOADS_REFUSED);
            return segd_respond_error(r, 503, "upload memory in use (--max-body-total), retry later");
        }
        r->reserved = (size_t)r->content_length;
        r->expected = (size_t)r->content_length;
    }
    r->state = ST_BODY;
    segd_guard_phase(s, r->conn, CP_BODY);
    return MHD_YES;
}

/* POST /v1/segment before the body: the media type.  0, or a status with
 * msg set. */
static unsigned segment_check(request *r, const char *ctype, char *msg, size_t msglen)
{
    if (segd_http_media_type_is(ctype, "image/png")) {
        r->multipart = false;
    } else if (segd_http_media_type_is(ctype, "application/dicom")) {
#ifdef SEGD_HAVE_DICOM
        r->dicom = true;
#else
        snprintf(msg, msglen, "application/dicom: this segd was built without DICOM support "
                              "(DCMTK)");
        return 415;
#endif
    } else if (segd_http_media_type_is(ctype, "multipart/form-data")) {
        r->multipart = true;
        if (segd_multipart_boundary(ctype, r->boundary, sizeof r->boundary)) {
            snprintf(msg, msglen, "multipart/form-data without a valid boundary parameter");
            return 400;
        }
    } else {
        snprintf(msg, msglen, "Content-Type must be image/png, application/dicom or "
                              "multipart/form-data");
        return 415;
    }
    return 0;
}

/* Free what a body holds, buffer and budget: when the rest of it is to be
 * dropped (the request is answered 503 at its end), or once it is parsed
 * and nothing points into it. */
void segd_segment_drop_body(request *r)
{
    free(r->body);
    r->body = NULL;
    r->cap = r->len = 0;
    segd_segment_budget_give(r->srv, r->reserved);
    r->reserved = 0;
}

/* Append a chunk of the body.  A body of unknown length (chunked) that
 * crosses max_body is refused there and then (413, connection closed):
 * reading the rest would cost the client and the server the whole upload
 * (a Content-Length over the limit is refused before the body). */
enum MHD_Result segd_segment_body(request *r, const char *data, size_t n)
{
    segd_server *s = r->srv;
    r->received += n;
    if (r->received > s->cfg.max_body) {
        char msg[128];
        snprintf(msg, sizeof msg, "body is over the limit of %zu bytes", s->cfg.max_body);
        return segd_respond_abort(r, 413, msg);
    }
    if (r->over_budget || r->body_oom)
        return MHD_YES; /* dropped; answered 503 at the end of the upload */
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 64 * 1024;
        while (cap < r->len + n)
            cap *= 2;
        if (cap > s->cfg.max_body)
            cap = s->cfg.max_body;
        if (r->expected && cap > r->expected && r->expected >= r->len + n)
            cap = r->expected;
        /* a chunked body reserves as it grows */
        if (cap > r->reserved && !budget_take(s, cap - r->reserved)) {
            segd_segment_drop_body(r);
            r->over_budget = true;
            return MHD_YES; /* answered 503 at the end of the upload */
        }
        if (cap > r->reserved)
            r->reserved = cap;
        uint8_t *b = realloc(r->body, cap);
        if (!b) { /* read and drop the rest; segd_job_end answers 503 */
            segd_segment_drop_body(r);
            r->body_oom = true;
            return MHD_YES;
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

/* Fill r->slices from the body.  0, or an HTTP status with msg set. */
static unsigned collect_slices(request *r, char *msg, size_t msglen)
{
    segd_server *s = r->srv;
    if (!r->multipart) {
        r->slices = calloc(1, sizeof *r->slices);
        if (!r->slices) {
            snprintf(msg, msglen, "out of memory");
            return 503;
        }
        r->slices[0].png = r->body;
        r->slices[0].len = r->len;
        r->slices[0].dicom = r->dicom;
        strcpy(r->slices[0].id, r->doc_id[0] ? r->doc_id : r->id);
        r->nslices = 1;
        return 0;
    }
    size_t max = (size_t)s->cfg.max_parts, n = 0;
    segd_multipart_part *parts = malloc(max * sizeof *parts);
    r->slices = calloc(max, sizeof *r->slices);
    unsigned status = 0;
    if (!parts || !r->slices) {
        snprintf(msg, msglen, "out of memory");
        status = 503;
        goto out;
    }
    int rc = segd_multipart_parse(r->body, r->len, r->boundary, parts, max, &n);
    if (rc == -E2BIG) {
        snprintf(msg, msglen, "more than %zu multipart parts", max);
        status = 413;
        goto out;
    }
    if (rc) {
        snprintf(msg, msglen, "malformed multipart/form-data body");
        status = 400;
        goto out;
    }
    const char *base = r->doc_id[0] ? r->doc_id : r->id;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(parts[i].name, "file") != 0)
            continue; /* other form fields are ignored */
        slice *sl = &r->slices[r->nslices];
        sl->png = parts[i].data;
        sl->len = parts[i].len;
        segd_http_id_from_filename(parts[i].filename, strlen(parts[i].filename), sl->id,
                                   sizeof sl->id);
        if (!sl->id[0])
            snprintf(sl->id, sizeof sl->id, "%s-%zu", base, r->nslices + 1);
        r->nslices++;
        if (sl->len == 0) {
            snprintf(msg, msglen, "part %zu (%.64s) is empty", r->nslices, sl->id);
            status = 400;
            goto out;
        }
    }
    if (r->nslices == 0) {
        snprintf(msg, msglen, "no part named \"file\" in the multipart body");
        status = 400;
    }
out:
    free(parts);
    return status;
}

/* Whole body read: the checks every upload shares (budget, OOM, empty).
 * 0, or the request was answered and the caller returns *ret. */
static int upload_check(request *r, enum MHD_Result *ret)
{
    segd_server *s = r->srv;
    if (r->over_budget) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_UPLOADS_REFUSED);
        *ret = segd_respond_error(r, 503, "upload memory in use (--max-body-total), retry later");
        return 1;
    }
    if (r->body_oom) {
        *ret = segd_respond_error(r, 503, "out of memory for the request body");
        return 1;
    }
    if (r->len == 0) {
        *ret = segd_respond_error(r, 400, "empty body");
        return 1;
    }
    return 0;
}

bool segd_http_looks_dicom(const void *data, size_t len)
{
    return len >= 132 && memcmp((const uint8_t *)data + 128, "DICM", 4) == 0;
}

/* POST /v1/segment with the whole body in memory: its slices, and what the
 * decoder would refuse anyway refused without taking a queue slot: not a
 * PNG (400), zero size (422), too many pixels (413); a DICOM body that is
 * no Part-10 file (415).  A DICOM file's size is read by the worker (it
 * takes parsing).  0, or a status with msg set. */
static unsigned segment_collect(request *r, char *msg, size_t msglen)
{
    segd_server *s = r->srv;
    unsigned status = collect_slices(r, msg, msglen);
    if (status)
        return status;
    for (size_t i = 0; i < r->nslices; i++) {
        const slice *sl = &r->slices[i];
        unsigned w, h;
        char where[96] = "";
        if (r->multipart)
            snprintf(where, sizeof where, "part %zu (%.64s): ", i + 1, sl->id);
        if (sl->dicom) {
            if (!segd_http_looks_dicom(sl->png, sl->len)) {
                snprintf(msg, msglen, "application/dicom body is not a DICOM Part-10 file (no "
                                      "\"DICM\" after the 128-byte preamble)");
                return 415;
            }
            continue;
        }
        if (r->multipart && segd_http_looks_dicom(sl->png, sl->len)) {
            snprintf(msg, msglen, "%sa DICOM file: send one DICOM instance as the whole body with "
                                  "Content-Type: application/dicom, or a series to /v1/series as "
                                  "multipart/related; type=\"application/dicom\"", where);
            return 415;
        }
        if (segd_http_png_size(sl->png, sl->len, &w, &h)) {
            snprintf(msg, msglen, "%snot a PNG image", where);
            return 400;
        }
        if (w == 0 || h == 0) {
            snprintf(msg, msglen, "%sPNG has zero size (%ux%u)", where, w, h);
            return 422;
        }
        if ((unsigned long long)w * h > s->cfg.max_pixels) {
            snprintf(msg, msglen, "%simage %ux%u is over the limit of %zu pixels", where, w, h,
                     s->cfg.max_pixels);
            return 413;
        }
    }
    return 0;
}

static enum MHD_Result job_enqueue(request *r);

const segd_job_route segd_segment_route = {segment_check, segment_collect};

/* Every job route's first call: refused at once while draining, then the
 * route's own checks, the common parameters (X-Request-Timeout,
 * ?threshold, ?id) and the upload's start. */
enum MHD_Result segd_job_begin(request *r, const segd_job_route *jr)
{
    if (atomic_load(&r->srv->draining))
        return segd_respond_error(r, 503, "draining: not accepting new jobs");
    const char *ctype =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    char msg[400];
    unsigned status = jr->check(r, ctype, msg, sizeof msg);
    if (status)
        return segd_respond_reject(r, status, msg);
    enum MHD_Result ret;
    if (upload_params(r, &ret))
        return ret;
    return upload_start(r);
}

/* Every job route's last call: the upload's verdict, the route's parse of
 * the body, then the queue. */
enum MHD_Result segd_job_end(request *r, const segd_job_route *jr)
{
    enum MHD_Result ret;
    if (upload_check(r, &ret))
        return ret;
    char msg[400];
    unsigned status = jr->collect(r, msg, sizeof msg);
    if (status)
        return segd_respond_error(r, status, msg);
    return job_enqueue(r);
}

/* Submit r as one job (deadline, queue, suspend) and answer the refusals. */
static enum MHD_Result job_enqueue(request *r)
{
    segd_server *s = r->srv;
    r->t_enqueue = segd_queue_now();
    r->deadline = r->t_start + r->timeout;
    if (r->t_enqueue >= r->deadline) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_TIMED_OUT);
        return segd_respond_error(r, 504, "request deadline passed while the body was uploaded");
    }

    /* Submit, then suspend, both under the lock: a worker that finishes
     * (or the reaper that expires) the job at once resumes the connection
     * only under the same lock, so it always finds it suspended; and a
     * refused job needs no suspend/resume round trip. */
    int rc;
    pthread_mutex_lock(&s->lock);
    if (s->pool_closed || atomic_load(&s->draining)) {
        rc = -ESHUTDOWN;
    } else {
        atomic_fetch_add(&r->refs, 1); /* the job's reference */
        r->state = ST_QUEUED;
        rc = segd_pool_submit(s->pool, r, r->deadline);
        if (rc == 0) {
            r->job_accepted = true;
            atomic_fetch_add(&s->jobs_active, 1);
            MHD_suspend_connection(r->conn);
            /* watched by the sweeper while it waits: a client that hangs
             * up gets its job dropped (libmicrohttpd does not watch a
             * suspended connection) */
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
            conn_track *t = ci ? ci->socket_context : NULL;
            if (t) {
                pthread_mutex_lock(&s->conn_lock);
                t->queued = r;
                r->track = t;
                pthread_mutex_unlock(&s->conn_lock);
            }
        } else {
            r->state = ST_BODY;
            atomic_fetch_sub(&r->refs, 1);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (rc == 0) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_ACCEPTED);
        return MHD_YES;
    }
    if (rc == -EAGAIN) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_REJECTED);
        return segd_respond_error(r, 503, "queue full, retry later");
    }
    return segd_respond_error(r, 503, "draining: not accepting new jobs");
}

bool segd_job_gone(request *r)
{
    if (atomic_load(&r->client_gone))
        return true;
    pthread_mutex_lock(&r->srv->lock);
    bool gone = r->cancelled;
    pthread_mutex_unlock(&r->srv->lock);
    return gone;
}

/* Hand a finished job's response to its connection (any thread). */
/* Stop watching r's connection (s->lock held: the enqueue set it under
 * the same lock, so the two cannot cross). */
static void untrack(request *r)
{
    segd_server *s = r->srv;
    pthread_mutex_lock(&s->conn_lock);
    if (r->track && r->track->queued == r)
        r->track->queued = NULL;
    r->track = NULL;
    pthread_mutex_unlock(&s->conn_lock);
}

void segd_job_drop(request *r)
{
    segd_server *s = r->srv;
    segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_ABANDONED);
    pthread_mutex_lock(&s->lock);
    untrack(r);
    if (!r->cancelled) {
        /* state stays ST_QUEUED: resumed, the handler closes the connection */
        r->dropped = true;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&s->lock);
    segd_request_unref(r);
}

void segd_job_finish(request *r, unsigned status, struct MHD_Response *resp, size_t bytes)
{
    segd_server *s = r->srv;
    pthread_mutex_lock(&s->lock);
    untrack(r);
    if (!r->cancelled && resp) {
        r->resp = resp;
        r->status = status;
        r->resp_bytes = bytes;
        r->state = ST_DONE;
        resp = NULL;
        MHD_resume_connection(r->conn);
    } else if (!r->cancelled) {
        /* OOM building any response: the connection thread answers the
         * 503 built at start-up (segd_respond_send with no response) */
        r->resp = NULL;
        r->status = 503;
        r->state = ST_DONE;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&s->lock);
    if (resp)
        MHD_destroy_response(resp);
    segd_request_unref(r);
}

void segd_job_finish_error(request *r, unsigned status, const char *message)
{
    size_t bytes = 0;
    const char *hn = status == 503 ? "Retry-After" : NULL;
    struct MHD_Response *resp =
        segd_respond_make_error(r->srv, r->id, (int)status, message, hn, RETRY_AFTER_S, &bytes,
                                segd_route_is_oip(r->route));
    segd_job_finish(r, status, resp, bytes);
}

void segd_segment_expire(void *job, int reason, void *arg)
{
    request *r = job;
    segd_server *s = arg;
    if (reason == -ETIMEDOUT) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_JOBS_TIMED_OUT);
        segd_metrics_observe(s->metrics, SEGD_HIST_QUEUE_WAIT, segd_queue_now() - r->t_enqueue);
        char msg[96];
        snprintf(msg, sizeof msg, "request deadline of %g s passed before a worker was free",
                 r->timeout);
        segd_job_finish_error(r, 504, msg);
    } else if (reason == -ECONNRESET) { /* the sweeper saw the client go */
        segd_job_drop(r);
    } else {
        segd_job_finish_error(r, 503, "server shutting down");
    }
}

/* Decode a DICOM slice and stage its pixels (after Rescale Slope/
 * Intercept; MONOCHROME1 inverted) into slot, with *dicom its "dicom"
 * object.  0 or a negative errno (segd_dicom_read's, the engine's) with
 * err set. */
static int stage_dicom(request *r, segd_worker *w, int slot, const slice *sl, json_t **dicom,
                       char *err, size_t errlen)
{
#ifdef SEGD_HAVE_DICOM
    segd_dicom_image *im = NULL;
    int rc = segd_dicom_read(sl->png, sl->len, r->srv->cfg.max_pixels, &im, err, errlen);
    if (rc)
        return rc;
    rc = segd_worker_stage_gray(w, slot, im->pixels, im->rows, im->cols, err, errlen);
    if (rc == 0 && !(*dicom = segd_dicom_image_json(im))) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
    }
    segd_dicom_image_free(im);
    return rc;
#else
    (void)r, (void)w, (void)slot, (void)sl, (void)dicom;
    snprintf(err, errlen, "this segd was built without DICOM support");
    return -ENOTSUP;
#endif
}

/* Answer the job with slice i's error rc (err: the engine's words). */
static void slice_error(request *r, size_t i, int rc, const char *err)
{
    char msg[400];
    if (r->multipart)
        snprintf(msg, sizeof msg, "part %zu (%.64s): %.255s", i + 1, r->slices[i].id,
                 err[0] ? err : strerror(-rc));
    else
        snprintf(msg, sizeof msg, "%.255s", err[0] ? err : strerror(-rc));
    segd_job_finish_error(r, (unsigned)segd_http_status_for_errno(rc), msg);
}

/* Slice i's document from the worker's slot (dicom: its "dicom" object or
 * NULL, reference taken over), with the queue wait and the encoding time
 * added to timing_ms; engine_s (its share of staging and the forward pass,
 * seconds) plus its post-processing goes to the inference histogram, the
 * encoding does not.  0; -ENOMEM (nothing answered); or 1: the slice's
 * error was answered (the job is finished). */
static int finish_slice(request *r, segd_worker *w, size_t i, int slot, double queue_ms,
                        double engine_s, json_t *dicom, json_t **doc)
{
    segd_result res;
    char err[256] = "";
    *doc = NULL;
    double t0 = segd_queue_now();
    int rc = segd_worker_result(w, slot, r->threshold, &res, err, sizeof err);
    double t_enc = segd_queue_now();
    segd_metrics_observe(r->srv->metrics, SEGD_HIST_INFERENCE, engine_s + (t_enc - t0));
    if (rc) {
        json_decref(dicom);
        slice_error(r, i, rc, err);
        return 1;
    }
    json_t *d = segd_result_json(r->slot->model, &res, r->slices[i].id);
    if (d && dicom && json_object_set(d, "dicom", dicom)) {
        json_decref(d);
        d = NULL;
    }
    json_decref(dicom);
    if (!d)
        return -ENOMEM;
    json_t *timing = json_object_get(d, "timing_ms");
    if (!json_is_object(timing)) {
        timing = json_object();
        if (!timing || json_object_set_new(d, "timing_ms", timing)) {
            json_decref(d);
            return -ENOMEM;
        }
    }
    if (json_object_set_new(timing, "queue", json_real(queue_ms)) ||
        json_object_set_new(timing, "encode", json_real(segd_ms_since(t_enc)))) {
        json_decref(d);
        return -ENOMEM;
    }
    *doc = d;
    return 0;
}

/* Slices [i0, i1) of r (i1 - i0 <= segd_worker_batch(w)) through the
 * network as one batch, their documents appended to results (multipart)
 * or the one put in *single.  0; -ENOMEM (nothing answered); or 1: a
 * slice's error was answered. */
static int run_batch(request *r, segd_worker *w, size_t i0, size_t i1, double queue_ms,
                     json_t *results, json_t **single)
{
    json_t *dicom[SEGD_MAX_BATCH] = {0};
    char err[256] = "";
    double t0 = segd_queue_now();
    int rc = 0;
    size_t i = i0;
    for (; i < i1 && !rc; i++) {
        int slot = (int)(i - i0);
        if (r->slices[i].dicom)
            rc = stage_dicom(r, w, slot, &r->slices[i], &dicom[slot], err, sizeof err);
        else
            rc = segd_worker_stage_png(w, slot, r->slices[i].png, r->slices[i].len, err,
                                       sizeof err);
    }
    if (rc) {
        slice_error(r, i - 1, rc, err);
        rc = 1;
        goto out;
    }
    if (segd_worker_run(w, (int)(i1 - i0))) { /* every slot staged above: cannot fail */
        segd_job_finish_error(r, 500, "engine refused a staged batch");
        rc = 1;
        goto out;
    }
    double each = (segd_queue_now() - t0) / (double)(i1 - i0);
    for (i = i0; i < i1; i++) {
        int slot = (int)(i - i0);
        json_t *doc;
        rc = finish_slice(r, w, i, slot, queue_ms, each, dicom[slot], &doc);
        dicom[slot] = NULL; /* taken over */
        if (rc)
            goto out;
        if (!results) {
            *single = doc;
        } else if (json_array_append_new(results, doc)) {
            rc = -ENOMEM;
            goto out;
        }
    }
out:
    for (size_t k = 0; k < i1 - i0; k++)
        json_decref(dicom[k]);
    return rc;
}

/* Answer the job with top (reference taken over; NULL: out of memory). */
void segd_job_finish_json(request *r, json_t *top)
{
    char *text = top ? segd_json_text(top, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(top);
    if (!text) {
        segd_job_finish_error(r, 503, "out of memory building the response");
        return;
    }
    size_t len = strlen(text);
    struct MHD_Response *resp = segd_respond_buffer(r->srv, r->id, text, len, "application/json");
    if (!resp) {
        segd_job_finish_error(r, 503, "out of memory building the response");
        return;
    }
    segd_job_finish(r, 200, resp, len);
}

void segd_segment_run(void *job, segd_worker **wp, void *arg)
{
    request *r = job;
    segd_server *s = arg;
    /* testing aid: a long job, in steps so that the end of the drain time
     * stops it like a real multi-slice job */
    for (int ms = 0; ms < s->cfg.debug_job_delay_ms && !atomic_load(&s->aborting); ms += 10) {
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    double t_run = segd_queue_now();
    double queue_ms = (t_run - r->t_enqueue) * 1e3;
    segd_metrics_observe(s->metrics, SEGD_HIST_QUEUE_WAIT, queue_ms / 1e3);

    if (segd_job_gone(r)) { /* nobody to answer: skip the work */
        segd_job_drop(r);
        return;
    }
    /* the request runs on the model it started with: after a reload this
     * worker may still hold the other one */
    if (segd_slot_bind_worker(r, wp)) {
        segd_job_finish_error(r, 503, "out of memory setting up a worker for the reloaded model");
        return;
    }
    segd_worker *w = *wp;
    if (r->route == R_SERIES) {
        segd_series_run(r, w, queue_ms);
        return;
    }
    if (r->route == R_V2_INFER) {
        segd_oip_run(r, w, queue_ms);
        return;
    }

    json_t *results = r->multipart ? json_array() : NULL;
    json_t *single = NULL;
    if (r->multipart && !results)
        goto oom;
    size_t batch = (size_t)segd_worker_batch(w);
    for (size_t i = 0; i < r->nslices; i += batch) {
        if (atomic_load(&s->aborting)) { /* drain time up: answer now, not after every slice */
            json_decref(results);
            segd_job_finish_error(r, 503, "daemon stopping: --drain-timeout ended before this job finished");
            return;
        }
        int rc = run_batch(r, w, i, i + batch < r->nslices ? i + batch : r->nslices, queue_ms,
                           results, &single);
        if (rc == 1) {
            json_decref(results);
            return;
        }
        if (rc)
            goto oom;
    }
    /* "o" steals results, even on failure */
    segd_job_finish_json(r, r->multipart ? json_pack("{s:o}", "results", results) : single);
    return;

oom:
    json_decref(results);
    json_decref(single);
    segd_job_finish_error(r, 503, "out of memory building the response");
}
