/* The Open Inference Protocol (KServe V2 REST,
 * https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/)
 * beside segd's own routes, for clients of KServe, Triton and their SDKs:
 * health, server and model metadata, model readiness, and inference on one
 * slice given as a PNG (BYTES, base64 in JSON) or as grey values (FP32,
 * UINT16 or UINT8 tensor [H, W]), answered with the masks as a UINT8
 * tensor [C, H, W] and, when asked, as RLE strings (BYTES [C]).  Errors
 * take the protocol's form {"error": "..."}. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http/server_impl.h"
#include "io/rle.h"

#define PLATFORM "segd"
#define VERSION_HEX 12 /* model_version: the first hex digits of the weights' sha256 */

/* ------------------------------------------------------------------ */
/* Paths                                                               */
/* ------------------------------------------------------------------ */

/* Split "/v2/models/NAME[/versions/VER][SUFFIX]" into name, version and
 * suffix ("", "/ready", "/infer").  0, or -EINVAL when url is not that. */
static int model_path(const char *url, char *name, size_t ncap, char *ver, size_t vcap,
                      const char **suffix)
{
    static const char prefix[] = "/v2/models/";
    if (strncmp(url, prefix, sizeof prefix - 1) != 0)
        return -EINVAL;
    const char *p = url + sizeof prefix - 1, *e = strchr(p, '/');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n == 0 || n >= ncap)
        return -EINVAL;
    memcpy(name, p, n);
    name[n] = '\0';
    p += n;
    ver[0] = '\0';
    if (strncmp(p, "/versions/", 10) == 0) {
        p += 10;
        e = strchr(p, '/');
        n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || n >= vcap)
            return -EINVAL;
        memcpy(ver, p, n);
        ver[n] = '\0';
        p += n;
    }
    if (*p && strcmp(p, "/ready") != 0 && strcmp(p, "/infer") != 0)
        return -EINVAL;
    *suffix = p;
    return 0;
}

route_id segd_oip_route(const char *url)
{
    if (strcmp(url, "/v2") == 0)
        return R_V2_SERVER;
    if (strcmp(url, "/v2/health/live") == 0)
        return R_V2_LIVE;
    if (strcmp(url, "/v2/health/ready") == 0)
        return R_V2_READY;
    char name[SEGD_HTTP_REQUEST_ID_MAX], ver[80];
    const char *suffix;
    if (model_path(url, name, sizeof name, ver, sizeof ver, &suffix))
        return R_NONE;
    return !*suffix ? R_V2_MODEL : strcmp(suffix, "/ready") == 0 ? R_V2_MODEL_READY : R_V2_INFER;
}

/* The served model's version string. */
static void model_version(const segd_model *m, char out[VERSION_HEX + 1])
{
    snprintf(out, VERSION_HEX + 1, "%s", segd_model_sha256(m));
}

/* Does r's path name the served model (and, if given, its version)?  When
 * not, msg says so. */
static bool model_matches(request *r, char *msg, size_t msglen)
{
    const segd_model *m = r->slot->model;
    char name[SEGD_HTTP_REQUEST_ID_MAX], ver[80], want[VERSION_HEX + 1];
    const char *suffix;
    if (model_path(r->path, name, sizeof name, ver, sizeof ver, &suffix) ||
        strcmp(name, segd_model_name(m)) != 0) {
        snprintf(msg, msglen, "unknown model '%.64s': this server serves '%s'", name,
                 segd_model_name(m));
        return false;
    }
    model_version(m, want);
    if (ver[0] && strcmp(ver, want) != 0) {
        snprintf(msg, msglen, "unknown version '%.32s' of model '%s': this server has '%s'", ver,
                 segd_model_name(m), want);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* GET routes                                                          */
/* ------------------------------------------------------------------ */

static enum MHD_Result answer_json(request *r, unsigned status, json_t *doc)
{
    char *text = doc ? segd_json_text(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return segd_respond_text(r, status, text, "application/json");
}

enum MHD_Result segd_oip_get(request *r)
{
    segd_server *s = r->srv;
    const segd_model *m = r->slot->model;
    bool ready = !atomic_load(&s->draining);
    char msg[256], ver[VERSION_HEX + 1];
    model_version(m, ver);
    switch (r->route) {
    case R_V2_SERVER:
        return answer_json(r, 200, json_pack("{s:s,s:s,s:[]}", "name", "segd", "version",
                                             SEGD_VERSION, "extensions"));
    case R_V2_LIVE:
        return answer_json(r, 200, json_pack("{s:b}", "live", 1));
    case R_V2_READY: /* the protocol: 200 is true, a 4xx false */
        return answer_json(r, ready ? 200 : 400, json_pack("{s:b}", "ready", ready));
    case R_V2_MODEL_READY:
        if (!model_matches(r, msg, sizeof msg))
            return segd_respond_error(r, 404, msg);
        return answer_json(r, ready ? 200 : 400,
                           json_pack("{s:s,s:b}", "name", segd_model_name(m), "ready", ready));
    case R_V2_MODEL: {
        if (!model_matches(r, msg, sizeof msg))
            return segd_respond_error(r, 404, msg);
        int h, w, c = segd_model_num_classes(m);
        segd_model_grid(m, &h, &w);
        return answer_json(
            r, 200,
            json_pack("{s:s,s:[s],s:s,s:[{s:s,s:s,s:[i]}],s:[{s:s,s:s,s:[i,i,i]},{s:s,s:s,s:[i]}]}",
                      "name", segd_model_name(m), "versions", ver, "platform", PLATFORM,
                      "inputs", "name", "image", "datatype", "BYTES", "shape", 1,
                      "outputs", "name", "masks", "datatype", "UINT8", "shape", c, -1, -1,
                      "name", "rle", "datatype", "BYTES", "shape", c));
    }
    default:
        return segd_respond_error(r, 500, "unhandled route");
    }
}

/* ------------------------------------------------------------------ */
/* POST /v2/models/{name}/infer: the request                           */
/* ------------------------------------------------------------------ */

/* POST /v2/models/{name}/infer before the body: the model named, the
 * media type.  0, or a status with msg set. */
static unsigned oip_check(request *r, const char *ctype, char *msg, size_t msglen)
{
    if (!model_matches(r, msg, msglen))
        return 404;
    if (MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Inference-Header-Content-Length")) {
        snprintf(msg, msglen, "the binary tensor data extension is not supported: send the "
                              "tensors in JSON");
        return 415;
    }
    if (ctype && !segd_http_media_type_is(ctype, "application/json")) {
        snprintf(msg, msglen, "Content-Type must be application/json");
        return 415;
    }
    return 0;
}

/* Standard base64 (RFC 4648 section 4, padding optional) of n characters
 * into a new buffer.  0, -EINVAL or -ENOMEM. */
static int base64_decode(const char *in, size_t n, uint8_t **out, size_t *outlen)
{
    while (n > 0 && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -EINVAL;
    uint8_t *buf = malloc(n / 4 * 3 + 3);
    if (!buf)
        return -ENOMEM;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = in[i];
        int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
                : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
                : ch >= '0' && ch <= '9' ? ch - '0' + 52
                : ch == '+'              ? 62
                : ch == '/'              ? 63
                                         : -1;
        if (v < 0) {
            free(buf);
            return -EINVAL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out = buf;
    *outlen = o;
    return 0;
}

/* Flatten data (nested arrays allowed) into out[0..count) as floats in
 * [lo, hi] (integers when integral).  0, or -EINVAL with msg set. */
static int flatten(const json_t *data, float *out, size_t count, size_t *at, double lo, double hi,
                   bool integral, char *msg, size_t msglen)
{
    size_t i;
    const json_t *v;
    json_array_foreach(data, i, v) {
        if (json_is_array(v)) {
            if (flatten(v, out, count, at, lo, hi, integral, msg, msglen))
                return -EINVAL;
            continue;
        }
        if (!json_is_number(v)) {
            snprintf(msg, msglen, "tensor data holds a %s, not a number",
                     json_is_string(v) ? "string" : "non-number");
            return -EINVAL;
        }
        double d = json_number_value(v);
        if (!isfinite(d) || d < lo || d > hi || (integral && d != floor(d))) {
            snprintf(msg, msglen, "tensor value %g outside its datatype", d);
            return -EINVAL;
        }
        if (*at == count) {
            snprintf(msg, msglen, "tensor data holds more values than its shape");
            return -EINVAL;
        }
        out[(*at)++] = (float)d;
    }
    return 0;
}

/* Read the one input tensor.  0, or a status with msg set. */
static unsigned read_input(request *r, const json_t *in, char *msg, size_t msglen)
{
    segd_server *s = r->srv;
    const char *dtype = json_string_value(json_object_get(in, "datatype"));
    const json_t *shape = json_object_get(in, "shape"), *data = json_object_get(in, "data");
    if (!json_is_string(json_object_get(in, "name")) || !dtype || !json_is_array(shape) ||
        !json_is_array(data)) {
        snprintf(msg, msglen, "an input tensor needs name, shape, datatype and data");
        return 400;
    }
    size_t nd = json_array_size(shape);
    long long dims[8];
    if (nd == 0 || nd > 8) {
        snprintf(msg, msglen, "input shape must have 1 to 8 dimensions");
        return 400;
    }
    for (size_t i = 0; i < nd; i++) {
        const json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 1 || json_integer_value(d) > (1 << 30)) {
            snprintf(msg, msglen, "input shape dimensions must be positive integers");
            return 400;
        }
        dims[i] = json_integer_value(d);
    }
    if (strcmp(dtype, "BYTES") == 0) {
        const char *b64 = json_string_value(json_array_get(data, 0));
        bool one = true;
        for (size_t i = 0; i < nd; i++)
            one = one && dims[i] == 1;
        if (!one || json_array_size(data) != 1 || !b64) {
            snprintf(msg, msglen, "a BYTES input is one element (shape [1]): the PNG, base64");
            return 400;
        }
        int rc = base64_decode(b64, strlen(b64), &r->oip_png, &r->oip_png_len);
        if (rc) {
            snprintf(msg, msglen, rc == -ENOMEM ? "out of memory" : "BYTES input is not base64");
            return rc == -ENOMEM ? 503 : 400;
        }
        unsigned w, h;
        if (segd_http_png_size(r->oip_png, r->oip_png_len, &w, &h)) {
            snprintf(msg, msglen, "BYTES input is not a PNG image");
            return 400;
        }
        if ((unsigned long long)w * h > s->cfg.max_pixels) {
            snprintf(msg, msglen, "image %ux%u is over the limit of %zu pixels", w, h,
                     s->cfg.max_pixels);
            return 413;
        }
        if (w == 0 || h == 0) {
            snprintf(msg, msglen, "PNG has zero size (%ux%u)", w, h);
            return 422;
        }
        return 0;
    }
    double lo, hi;
    bool integral;
    if (strcmp(dtype, "FP32") == 0)
        lo = -3.4e38, hi = 3.4e38, integral = false;
    else if (strcmp(dtype, "UINT16") == 0)
        lo = 0, hi = 65535, integral = true;
    else if (strcmp(dtype, "UINT8") == 0)
        lo = 0, hi = 255, integral = true;
    else {
        snprintf(msg, msglen, "input datatype %.16s: BYTES (PNG), FP32, UINT16 or UINT8 only", dtype);
        return 400;
    }
    for (size_t i = 0; i + 2 < nd; i++)
        if (dims[i] != 1) {
            snprintf(msg, msglen, "a %s input is one image: shape [H, W]", dtype);
            return 400;
        }
    if (nd < 2) {
        snprintf(msg, msglen, "a %s input is one image: shape [H, W]", dtype);
        return 400;
    }
    long long h = dims[nd - 2], w = dims[nd - 1];
    if ((unsigned long long)h * (unsigned long long)w > s->cfg.max_pixels) {
        snprintf(msg, msglen, "image %lldx%lld is over the limit of %zu pixels", w, h,
                 s->cfg.max_pixels);
        return 413;
    }
    size_t count = (size_t)h * (size_t)w, at = 0;
    r->oip_pixels = malloc(count * sizeof *r->oip_pixels);
    if (!r->oip_pixels) {
        snprintf(msg, msglen, "out of memory");
        return 503;
    }
    if (flatten(data, r->oip_pixels, count, &at, lo, hi, integral, msg, msglen))
        return 400;
    if (at != count) {
        snprintf(msg, msglen, "tensor data holds %zu values, its shape %lld x %lld", at, h, w);
        return 400;
    }
    r->oip_h = (int)h;
    r->oip_w = (int)w;
    return 0;
}

/* The request document.  0, or a status with msg set. */
static unsigned read_request(request *r, char *msg, size_t msglen)
{
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)r->body, r->len, JSON_REJECT_DUPLICATES, &jerr);
    unsigned status = 400;
    if (!json_is_object(doc)) {
        snprintf(msg, msglen, "body is not a JSON object: %.120s", doc ? "" : jerr.text);
        goto out;
    }
    const json_t *id = json_object_get(doc, "id");
    if (id) {
        const char *v = json_string_value(id);
        if (!v || strlen(v) > SEGD_HTTP_REQUEST_ID_MAX) {
            snprintf(msg, msglen, "id must be a string of at most %d bytes", SEGD_HTTP_REQUEST_ID_MAX);
            goto out;
        }
        strcpy(r->oip_id, v);
    }
    const json_t *params = json_object_get(doc, "parameters");
    if (params && !json_is_object(params)) {
        snprintf(msg, msglen, "parameters must be an object");
        goto out;
    }
    const json_t *thr = json_object_get(params, "threshold");
    if (thr) {
        double t = json_number_value(thr);
        if (!json_is_number(thr) || !(t > 0 && t < 1)) {
            snprintf(msg, msglen, "parameters.threshold must be a number with 0 < threshold < 1");
            goto out;
        }
        r->threshold = (float)t;
    }
    const json_t *inputs = json_object_get(doc, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) != 1 ||
        !json_is_object(json_array_get(inputs, 0))) {
        snprintf(msg, msglen, "inputs must hold exactly one tensor (the image)");
        goto out;
    }
    /* outputs: "masks" (UINT8 [C, H, W]) unless only others are named;
     * "rle" also when asked by name or by parameters.rle */
    const json_t *outputs = json_object_get(doc, "outputs");
    r->oip_masks = !outputs;
    r->oip_rle = json_is_true(json_object_get(params, "rle"));
    if (outputs) {
        size_t i;
        const json_t *o;
        if (!json_is_array(outputs) || json_array_size(outputs) == 0) {
            snprintf(msg, msglen, "outputs must be a non-empty array");
            goto out;
        }
        json_array_foreach(outputs, i, o) {
            const char *name = json_string_value(json_object_get(o, "name"));
            if (name && strcmp(name, "masks") == 0) {
                r->oip_masks = true;
            } else if (name && strcmp(name, "rle") == 0) {
                r->oip_rle = true;
            } else {
                snprintf(msg, msglen, "unknown output '%.32s': masks or rle", name ? name : "");
                goto out;
            }
            if (json_is_true(json_object_get(json_object_get(o, "parameters"), "binary_data"))) {
                snprintf(msg, msglen, "the binary tensor data extension is not supported");
                goto out;
            }
        }
    }
    status = read_input(r, json_array_get(inputs, 0), msg, msglen);
out:
    json_decref(doc);
    return status;
}

/* The whole body: its tensor, then the body's buffer (and budget) go
 * before the wait (nothing points into it any more).  0, or a status with
 * msg set. */
static unsigned oip_collect(request *r, char *msg, size_t msglen)
{
    unsigned status = read_request(r, msg, msglen);
    if (!status)
        segd_segment_drop_body(r);
    return status;
}

const segd_job_route segd_oip_route_infer = {oip_check, oip_collect};

/* ------------------------------------------------------------------ */
/* Pool thread: run and answer                                         */
/* ------------------------------------------------------------------ */

/* Append the masks output's text, {"name":"masks",...,"data":[0,1,...]},
 * to a buffer of the exact size. */
static char *masks_output(const segd_model *m, const segd_result *res, size_t *len)
{
    size_t plane = (size_t)res->width * (size_t)res->height;
    char head[512], classes[256] = "";
    for (int c = 0; c < res->nclass; c++) {
        size_t k = strlen(classes);
        snprintf(classes + k, sizeof classes - k, "%s%s", c ? "," : "", segd_model_class_name(m, c));
    }
    int n = snprintf(head, sizeof head,
                     "{\"name\":\"masks\",\"datatype\":\"UINT8\",\"shape\":[%d,%d,%d],"
                     "\"parameters\":{\"classes\":\"%s\"},\"data\":[",
                     res->nclass, res->height, res->width, classes);
    if (n < 0 || (size_t)n >= sizeof head)
        return NULL;
    size_t total = (size_t)n + 2 * plane * (size_t)res->nclass + 2;
    char *buf = malloc(total + 1);
    if (!buf)
        return NULL;
    memcpy(buf, head, (size_t)n);
    char *p = buf + n;
    for (int c = 0; c < res->nclass; c++)
        for (size_t i = 0; i < plane; i++) {
            *p++ = res->mask[c][i] ? '1' : '0';
            *p++ = ',';
        }
    p[-1] = ']'; /* the last comma */
    *p++ = '}';
    *p = '\0';
    *len = (size_t)(p - buf);
    return buf;
}

void segd_oip_run(request *r, segd_worker *w, double queue_ms)
{
    segd_server *s = r->srv;
    const segd_model *m = r->slot->model;
    segd_result res;
    char err[256] = "";
    double t0 = segd_queue_now();
    int rc = r->oip_png ? segd_worker_segment_png(w, r->oip_png, r->oip_png_len, r->threshold,
                                                  &res, err, sizeof err)
                        : segd_worker_segment_gray(w, r->oip_pixels, r->oip_h, r->oip_w,
                                                   r->threshold, &res, err, sizeof err);
    segd_metrics_observe(s->metrics, SEGD_HIST_INFERENCE, segd_queue_now() - t0);
    if (rc) {
        segd_job_finish_error(r, (unsigned)segd_http_status_for_errno(rc),
                              err[0] ? err : strerror(-rc));
        return;
    }
    char ver[VERSION_HEX + 1];
    model_version(m, ver);
    json_t *params = json_pack("{s:f,s:f,s:f,s:f}", "queue_ms", queue_ms, "decode_ms",
                               res.ms_decode, "infer_ms", res.ms_infer, "post_ms", res.ms_post);
    json_t *top = json_pack("{s:s,s:s,s:o}", "model_name", segd_model_name(m), "model_version",
                            ver, "parameters", params);
    bool ok = top != NULL;
    if (ok && r->oip_id[0])
        ok = json_object_set_new(top, "id", json_string(r->oip_id)) == 0;
    /* outputs last: the masks' text goes before its closing "]}" */
    ok = ok && json_object_set_new(top, "outputs", json_array()) == 0;
    if (ok && r->oip_rle) {
        size_t plane = (size_t)res.width * (size_t)res.height;
        json_t *data = json_array();
        ok = data != NULL;
        for (int c = 0; ok && c < res.nclass; c++)
            ok = segd_rle_encode(res.mask[c], plane, res.rle, res.rle_cap) >= 0 &&
                 json_array_append_new(data, json_string(res.rle)) == 0;
        json_t *out = ok ? json_pack("{s:s,s:s,s:[i],s:{s:s,s:i},s:o}", "name", "rle", "datatype",
                                     "BYTES", "shape", res.nclass, "parameters", "order",
                                     "row-major", "base", 1, "data", data)
                         : (json_decref(data), NULL);
        ok = out && json_array_append_new(json_object_get(top, "outputs"), out) == 0;
    }
    /* the document without the masks, then the masks' text spliced in
     * before the closing "]}" of outputs (millions of 0/1: not as jansson
     * values) */
    char *text = ok ? segd_json_text(top, JSON_COMPACT) : NULL;
    json_decref(top);
    char *masks = NULL, *body = NULL;
    size_t mlen = 0, tlen = text ? strlen(text) : 0, blen = 0;
    if (text && r->oip_masks)
        masks = masks_output(m, &res, &mlen);
    if (text && (!r->oip_masks || masks)) {
        /* text ends with "]}"; outputs may be empty ("[]}") or not */
        bool empty = tlen >= 3 && text[tlen - 3] == '[';
        blen = tlen + mlen + (masks && !empty ? 1 : 0);
        body = malloc(blen + 1);
        if (body) {
            size_t at = tlen - 2;
            memcpy(body, text, at);
            if (masks) {
                if (!empty) {
                    body[at++] = ',';
                }
                memcpy(body + at, masks, mlen);
                at += mlen;
            }
            memcpy(body + at, "]}", 3);
            blen = at + 2;
        }
    }
    free(text);
    free(masks);
    if (!body) {
        segd_job_finish_error(r, 503, "out of memory building the response");
        return;
    }
    segd_job_finish(r, 200, segd_respond_buffer(s, r->id, body, blen, "application/json"), blen);
}
