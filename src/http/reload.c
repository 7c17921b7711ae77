/* Weights in service and their reload without dropping a request: the
 * model in service is a reference-counted slot; every request takes the
 * slot current when it starts and keeps it to its end, each worker holds
 * the slot of the model its arena was made for and moves to a request's
 * model between jobs, and a reload (SIGHUP via the CLI, or POST
 * /v1/admin/reload) loads and validates the new file beside the running
 * model before one pointer switch under model_lock.  A file that fails
 * leaves the old model serving; the failure is logged, counted and shown
 * in GET /v1/model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "http/auth.h"
#include "http/server_impl.h"

/* A new slot (refs 1: the server's "current" reference).  NULL on OOM. */
static model_slot *slot_new(const segd_model *m, bool owned)
{
    model_slot *slot = calloc(1, sizeof *slot);
    json_t *info = segd_model_info_json(m);
    char *text = info ? segd_json_text(info, JSON_COMPACT) : NULL;
    json_decref(info);
    if (!slot || !text) {
        free(slot);
        free(text);
        return NULL;
    }
    slot->model = (segd_model *)m;
    slot->owned = owned;
    slot->info = text;
    slot->refs = 1;
    return slot;
}

static void slot_free(model_slot *slot)
{
    if (slot->owned)
        segd_model_free(slot->model);
    free(slot->info);
    free(slot);
}

int segd_slot_init(segd_server *s, const segd_model *m, char *err, size_t errlen)
{
    s->slot = slot_new(m, false);
    if (!s->slot) {
        snprintf(err, errlen, "cannot build the model info document");
        return -ENOMEM;
    }
    s->slots = s->slot;
    return 0;
}

model_slot *segd_slot_get(segd_server *s)
{
    pthread_mutex_lock(&s->model_lock);
    model_slot *slot = s->slot;
    slot->refs++;
    pthread_mutex_unlock(&s->model_lock);
    return slot;
}

void segd_slot_ref(segd_server *s, model_slot *slot, int n)
{
    pthread_mutex_lock(&s->model_lock);
    slot->refs += n;
    pthread_mutex_unlock(&s->model_lock);
}

void segd_slot_put(segd_server *s, model_slot *slot)
{
    if (!slot)
        return;
    bool last = false;
    pthread_mutex_lock(&s->model_lock);
    if (--slot->refs == 0) { /* not current (that holds a reference): unlink */
        for (model_slot **p = &s->slots; *p; p = &(*p)->next)
            if (*p == slot) {
                *p = slot->next;
                break;
            }
        last = true;
    }
    pthread_mutex_unlock(&s->model_lock);
    if (last)
        slot_free(slot);
}

model_slot *segd_slot_of(segd_server *s, const segd_model *m)
{
    pthread_mutex_lock(&s->model_lock);
    model_slot *slot = s->slots;
    while (slot && slot->model != m)
        slot = slot->next;
    pthread_mutex_unlock(&s->model_lock);
    return slot;
}

void segd_slots_free(segd_server *s)
{
    model_slot *slot = s->slots;
    while (slot) {
        model_slot *next = slot->next;
        slot_free(slot);
        slot = next;
    }
    s->slots = s->slot = NULL;
}

int segd_slot_bind_worker(request *r, segd_worker **w)
{
    segd_server *s = r->srv;
    const segd_model *want = r->slot->model;
    if (segd_worker_model(*w) == want)
        return 0;
    segd_worker *nw = NULL;
    int rc = segd_worker_create_batch(want, s->cfg.max_pixels, s->cfg.worker_threads,
                                      s->cfg.batch, &nw);
    if (rc)
        return rc;
    model_slot *old = segd_slot_of(s, segd_worker_model(*w));
    segd_worker_free(*w);
    *w = nw;
    segd_slot_ref(s, r->slot, 1); /* the worker's */
    segd_slot_put(s, old);
    return 0;
}

void segd_server_set_loader(segd_server *s, segd_server_loader fn, void *ctx)
{
    s->loader = fn;
    s->loader_ctx = ctx;
}

/* Now as "2026-12-01T06:13:22Z". */
static void utc_now(char *out, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int segd_server_reload(segd_server *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->reload_lock);
    segd_model *m = NULL;
    segd_keys *keys = NULL;
    model_slot *slot = NULL;
    int rc;
    if (!s->loader) {
        snprintf(err, errlen, "this server has no weights loader");
        rc = -ENOTSUP;
    } else {
        rc = s->loader(s->loader_ctx, &m, err, errlen);
    }
    if (rc == 0 && s->cfg.api_key_file[0])
        rc = segd_auth_load(s->cfg.api_key_file, &keys, err, errlen);
    if (rc == 0 && !(slot = slot_new(m, true))) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
    }
    char when[32];
    utc_now(when, sizeof when);
    model_slot *old = NULL;
    segd_keys *old_keys = NULL;
    pthread_mutex_lock(&s->model_lock);
    if (rc == 0) {
        old = s->slot;
        slot->next = s->slots;
        s->slots = slot;
        s->slot = slot;
        if (keys) {
            old_keys = s->keys;
            s->keys = keys;
        }
        s->reloads++;
        s->reload_ok = true;
        s->reload_error[0] = '\0';
    } else {
        s->reload_failures++;
        s->reload_ok = false;
        snprintf(s->reload_error, sizeof s->reload_error, "%s", err);
    }
    snprintf(s->reload_at, sizeof s->reload_at, "%s", when);
    pthread_mutex_unlock(&s->model_lock);
    if (rc == 0) {
        const segd_model *was = old->model;
        segd_metrics_set_model(s->metrics, segd_model_name(m), segd_model_sha256(m),
                               segd_model_width(m));
        segd_metrics_inc(s->metrics, SEGD_COUNTER_RELOADS);
        segd_log_printf(s->log, "segd: weights reloaded: %s (sha256 %.12s), was %s (sha256 %.12s)%s",
                        segd_model_name(m), segd_model_sha256(m), segd_model_name(was),
                        segd_model_sha256(was), keys ? "; API keys reloaded" : "");
        segd_slot_put(s, old); /* the "current" reference it held */
        segd_auth_free(old_keys);
    } else {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_RELOAD_FAILURES);
        segd_log_printf(s->log, "segd: weights reload failed, the model in service stays: %s", err);
        segd_model_free(m);
        segd_auth_free(keys);
    }
    pthread_mutex_unlock(&s->reload_lock);
    return rc;
}

char *segd_slot_info_text(segd_server *s, model_slot *slot)
{
    pthread_mutex_lock(&s->model_lock);
    unsigned long reloads = s->reloads, failures = s->reload_failures;
    bool ok = s->reload_ok;
    char error[sizeof s->reload_error], at[sizeof s->reload_at];
    memcpy(error, s->reload_error, sizeof error);
    memcpy(at, s->reload_at, sizeof at);
    pthread_mutex_unlock(&s->model_lock);
    if (reloads == 0 && failures == 0)
        return strdup(slot->info);
    json_t *doc = json_loads(slot->info, 0, NULL);
    json_t *last = ok ? json_pack("{s:b,s:s}", "ok", 1, "at", at)
                      : json_pack("{s:b,s:s,s:s}", "ok", 0, "at", at, "error", error);
    json_t *rel = last ? json_pack("{s:I,s:I,s:o}", "reloads", (json_int_t)reloads, "failures",
                                   (json_int_t)failures, "last", last) /* "o" takes last */
                       : NULL;
    if (!doc || !rel || json_object_set_new(doc, "reload", rel)) {
        if (!doc)
            json_decref(rel);
        json_decref(doc);
        return NULL;
    }
    char *text = segd_json_text(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}
