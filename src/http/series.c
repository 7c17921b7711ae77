/* POST /v1/series: one series (DICOM instances as multipart/related, the
 * way DICOMweb sends them, or Kaggle-named PNG slices as
 * multipart/form-data) segmented as one job on one worker, slice after
 * slice in series order; then 3D clean-up per organ, organ volumes, and the
 * answer as JSON, a DICOM Segmentation, an RT Structure Set, or both. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http/server_impl.h"
#include "io/png.h"
#include "io/rle.h"
#include "segd/series.h"
#ifdef SEGD_HAVE_DICOM
#include "api/dicom_json.h"
#include "segd/dicom.h"
#endif

/* Slice spacing of a PNG series when ?slice_spacing= is not given: the
 * UW-Madison GI data set's (3 mm), which the Kaggle names do not carry. */
#define SEGD_SERIES_PNG_SLICE_SPACING_MM 3.0

/* ------------------------------------------------------------------ */
/* Connection thread                                                   */
/* ------------------------------------------------------------------ */

/* The answer's format from ?format= and Accept.  0, or a status with msg. */
static unsigned choose_format(request *r, char *msg, size_t msglen)
{
    struct MHD_Connection *c = r->conn;
    const char *f = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    bool json = segd_http_accepts(accept, "application/json");
    bool dcm = segd_http_accepts(accept, "application/dicom");
    bool related = segd_http_accepts(accept, "multipart/related");
    bool ok;
    if (!f) { /* by Accept alone: JSON first, then one SEG, then both */
        r->format = json ? SERIES_JSON : dcm ? SERIES_SEG : SERIES_BOTH;
        ok = json || dcm || related;
    } else if (strcmp(f, "json") == 0) {
        r->format = SERIES_JSON;
        ok = json;
    } else if (strcmp(f, "seg") == 0 || strcmp(f, "rtstruct") == 0) {
        r->format = f[0] == 's' ? SERIES_SEG : SERIES_RTSTRUCT;
        ok = dcm;
    } else if (strcmp(f, "seg,rtstruct") == 0 || strcmp(f, "rtstruct,seg") == 0) {
        r->format = SERIES_BOTH;
        ok = related;
    } else {
        snprintf(msg, msglen, "format must be json, seg, rtstruct or seg,rtstruct");
        return 400;
    }
    if (!ok && !f) {
        snprintf(msg, msglen, "Accept admits none of the media types of this answer: "
                              "application/json, application/dicom (a DICOM SEG) or "
                              "multipart/related; type=\"application/dicom\" (SEG and RTSTRUCT)");
        return 406;
    }
    if (!ok) {
        static const char *const need[] = {"application/json", "application/dicom",
                                           "application/dicom",
                                           "multipart/related; type=\"application/dicom\""};
        snprintf(msg, msglen, "Accept does not admit %s, the media type of this answer",
                 need[r->format]);
        return 406;
    }
    return 0;
}

/* A decimal query value in [lo, hi] into *out (unchanged when absent).
 * 0, or -EINVAL. */
static int query_real(request *r, const char *key, double lo, double hi, double *out)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
    if (!v)
        return 0;
    char *end;
    double d = strtod(v, &end);
    if (!*v || *end || !isfinite(d) || d < lo || d > hi || strpbrk(v, "xXnNiI"))
        return -EINVAL;
    *out = d;
    return 0;
}

/* POST /v1/series before the body: media type, answer format, query.  0,
 * or a status with msg set. */
static unsigned series_check(request *r, const char *ctype, char *msg, size_t msglen)
{
    segd_server *s = r->srv;
    r->multipart = true;
    if (segd_http_media_type_is(ctype, "multipart/related")) {
#ifndef SEGD_HAVE_DICOM
        snprintf(msg, msglen, "multipart/related DICOM: this segd was built without DICOM "
                              "support (DCMTK)");
        return 415;
#endif
        char type[64];
        int rc = segd_multipart_param(ctype, "type", type, sizeof type);
        if (rc == -EINVAL || (rc == 0 && !segd_http_media_type_is(type, "application/dicom"))) {
            snprintf(msg, msglen, "multipart/related: type must be \"application/dicom\" (DICOM "
                                  "Part-10 instances)");
            return 415;
        }
        if (segd_multipart_boundary_of(ctype, "multipart/related", r->boundary,
                                       sizeof r->boundary)) {
            snprintf(msg, msglen, "multipart/related without a valid boundary parameter");
            return 400;
        }
        r->related = true;
    } else if (segd_http_media_type_is(ctype, "multipart/form-data")) {
        if (segd_multipart_boundary(ctype, r->boundary, sizeof r->boundary)) {
            snprintf(msg, msglen, "multipart/form-data without a valid boundary parameter");
            return 400;
        }
    } else {
        snprintf(msg, msglen, "Content-Type must be multipart/related; type=\"application/dicom\" "
                              "(DICOM instances) or multipart/form-data (PNG slices)");
        return 415;
    }

    unsigned status = choose_format(r, msg, msglen);
    if (status)
        return status;
    if (!r->related && r->format != SERIES_JSON) {
        snprintf(msg, msglen, "DICOM SEG and RTSTRUCT need DICOM input (the source images' UIDs "
                              "and geometry); PNG slices get JSON");
        return 422;
    }
    r->min_volume_ml = s->cfg.min_volume_ml;
    r->slice_spacing = SEGD_SERIES_PNG_SLICE_SPACING_MM;
    if (query_real(r, "min_volume_ml", 0, 1e6, &r->min_volume_ml)) {
        snprintf(msg, msglen, "min_volume_ml must be a decimal number >= 0");
        return 400;
    }
    if (query_real(r, "slice_spacing", 1e-3, 1000, &r->slice_spacing)) {
        snprintf(msg, msglen, "slice_spacing must be a decimal number of mm, > 0");
        return 400;
    }
    const char *pv = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "preview");
    if (pv && strcmp(pv, "0") != 0 && strcmp(pv, "1") != 0) {
        snprintf(msg, msglen, "preview must be 0 or 1");
        return 400;
    }
    r->preview = pv && pv[0] == '1';
    if (r->preview && r->format != SERIES_JSON) {
        snprintf(msg, msglen, "preview=1 applies to JSON answers only (format=json)");
        return 400;
    }
    return 0;
}

/* qsort order of PNG slices: by the slice number of their Kaggle name. */
static int by_number(const void *a, const void *b)
{
    int na = ((const slice *)a)->number, nb = ((const slice *)b)->number;
    return (na > nb) - (na < nb);
}

/* Fill r->slices from the body's parts.  0, or a status with msg set. */
static unsigned collect_series(request *r, char *msg, size_t msglen)
{
    segd_server *s = r->srv;
    size_t max = (size_t)s->cfg.max_series_slices, n = 0;
    segd_multipart_part *parts = malloc(max * sizeof *parts);
    r->slices = calloc(max, sizeof *r->slices);
    unsigned status = 0;
    if (!parts || !r->slices) {
        snprintf(msg, msglen, "out of memory");
        status = 503;
        goto out;
    }
    int rc = r->related ? segd_multipart_parse_related(r->body, r->len, r->boundary, parts, max, &n)
                        : segd_multipart_parse(r->body, r->len, r->boundary, parts, max, &n);
    if (rc == -E2BIG) {
        snprintf(msg, msglen, "more than %zu parts: a series request takes at most %zu slices "
                              "(--max-series-slices)", max, max);
        status = 413;
        goto out;
    }
    if (rc) {
        snprintf(msg, msglen, "malformed multipart/%s body", r->related ? "related" : "form-data");
        status = 400;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const segd_multipart_part *p = &parts[i];
        slice *sl = &r->slices[r->nslices];
        if (r->related) {
            if (p->content_type[0] && !segd_http_media_type_is(p->content_type, "application/dicom")) {
                snprintf(msg, msglen, "part %zu: Content-Type %.64s: each part must be "
                                      "application/dicom", i + 1, p->content_type);
                status = 415;
                goto out;
            }
            if (!segd_http_looks_dicom(p->data, p->len)) {
                snprintf(msg, msglen, "part %zu is not a DICOM Part-10 file (no \"DICM\" after "
                                      "the 128-byte preamble)", i + 1);
                status = 415;
                goto out;
            }
            sl->dicom = true;
            snprintf(sl->id, sizeof sl->id, "part %zu", i + 1); /* until its SOPInstanceUID is read */
        } else {
            if (strcmp(p->name, "file") != 0)
                continue; /* other form fields are ignored */
            segd_http_id_from_filename(p->filename, strlen(p->filename), sl->id, sizeof sl->id);
            if (segd_http_looks_dicom(p->data, p->len)) {
                snprintf(msg, msglen, "part %zu (%.64s) is a DICOM file: send a DICOM series as "
                                      "multipart/related; type=\"application/dicom\" (as DICOMweb "
                                      "STOW-RS does), not as multipart/form-data", i + 1, p->filename);
                status = 415;
                goto out;
            }
            unsigned w, h;
            if (segd_series_kaggle_name(p->filename, &sl->number, &sl->width, &sl->height,
                                        &sl->spacing_x, &sl->spacing_y)) {
                snprintf(msg, msglen, "part %zu (%.64s): a PNG series needs Kaggle slice names "
                                      "(slice_NNNN_W_H_SX_SY.png): slice number and pixel spacing "
                                      "come from them", i + 1, p->filename);
                status = 422;
                goto out;
            }
            if (segd_http_png_size(p->data, p->len, &w, &h)) {
                snprintf(msg, msglen, "part %zu (%.64s): not a PNG image", i + 1, sl->id);
                status = 400;
                goto out;
            }
            if ((unsigned long long)w * h > s->cfg.max_pixels) {
                snprintf(msg, msglen, "part %zu (%.64s): image %ux%u is over the limit of %zu "
                                      "pixels", i + 1, sl->id, w, h, s->cfg.max_pixels);
                status = 413;
                goto out;
            }
            if (w != (unsigned)sl->width || h != (unsigned)sl->height) {
                snprintf(msg, msglen, "part %zu (%.64s): PNG is %ux%u, its name says %dx%d",
                         i + 1, sl->id, w, h, sl->width, sl->height);
                status = 422;
                goto out;
            }
        }
        sl->png = p->data;
        sl->len = p->len;
        r->nslices++;
    }
    if (r->nslices == 0) {
        snprintf(msg, msglen, r->related ? "no DICOM instance in the body"
                                         : "no part named \"file\" in the multipart body");
        status = 400;
        goto out;
    }
    if (!r->related) {
        /* PNG series: r->slices sorted by slice number here, once, so the
         * job runs them in that order; numbers distinct, one size, one
         * spacing */
        qsort(r->slices, r->nslices, sizeof *r->slices, by_number);
        const slice *a = &r->slices[0];
        for (size_t k = 1; k < r->nslices; k++) {
            const slice *b = &r->slices[k], *prev = &r->slices[k - 1];
            if (b->number == prev->number) {
                snprintf(msg, msglen, "slice number %d appears twice (%.64s, %.64s)", b->number,
                         prev->id, b->id);
                status = 422;
                goto out;
            }
            if (b->width != a->width || b->height != a->height || b->spacing_x != a->spacing_x ||
                b->spacing_y != a->spacing_y) {
                snprintf(msg, msglen, "%.64s and %.64s differ in size or pixel spacing: not one "
                                      "series", a->id, b->id);
                status = 422;
                goto out;
            }
        }
    }
out:
    free(parts);
    return status;
}

const segd_job_route segd_series_route = {series_check, collect_series};

/* ------------------------------------------------------------------ */
/* Pool thread                                                         */
/* ------------------------------------------------------------------ */

/* Scratch for ?preview=1 on a PNG series: the decoded plane (kept for the
 * preview: the worker normalises its own copy in place), the PNG decoder's
 * scratch and the 16-bit plane. */
typedef struct preview_buf {
    float *grey;       /* rows x cols */
    uint16_t *stored;  /* rows x cols */
    void *scratch;     /* segd_png_decode_gray's */
    size_t scratch_cap;
} preview_buf;

/* Everything a running series job holds; freed by job_free(). */
typedef struct series_job {
    size_t n;                   /* slices */
    size_t *order;              /* order[k]: index into r->slices of the k-th slice */
    int rows, cols, nclass;
    uint8_t *mask_data;         /* n x nclass x rows x cols */
    uint8_t **masks;            /* masks[k]: slice k (series order), organ-major */
    float *presence;            /* n x nclass */
    double voxel[3];            /* mm: between rows, columns, slices; [2] = 0: unknown */
    size_t reserved;            /* bytes of --max-series-memory taken (reserve_working) */
    double ms_decode, ms_infer, ms_post, ms_cleanup, ms_encode;
    size_t removed[SEGD_MAX_CLASSES], removed_voxels[SEGD_MAX_CLASSES];
    double volume[SEGD_MAX_CLASSES];
    char *rle;                  /* the worker's RLE storage (last result) */
    size_t rle_cap;
    json_t **previews;          /* ?preview=1: previews[k] of slice k (series order) */
    preview_buf pb;
#ifdef SEGD_HAVE_DICOM
    segd_dicom_image **images;  /* by part index; NULL for PNG series */
    const segd_dicom_image **sorted; /* series order */
#endif
} series_job;

static void job_free(series_job *j)
{
#ifdef SEGD_HAVE_DICOM
    if (j->images)
        for (size_t i = 0; i < j->n; i++)
            segd_dicom_image_free(j->images[i]);
    free(j->images);
    free(j->sorted);
#endif
    free(j->order);
    free(j->mask_data);
    free(j->masks);
    free(j->presence);
    if (j->previews)
        for (size_t k = 0; k < j->n; k++)
            json_decref(j->previews[k]);
    free(j->previews);
    free(j->pb.grey);
    free(j->pb.stored);
    free(j->pb.scratch);
}

/* Why the job stops between slices: 0 go on, 1 answered (drain time up)
 * or dropped (client gone). */
static int stop_now(request *r)
{
    if (atomic_load(&r->srv->aborting)) {
        segd_job_finish_error(r, 503, "daemon stopping: --drain-timeout ended before this job finished");
        return 1;
    }
    if (segd_job_gone(r)) {
        segd_job_drop(r);
        return 1;
    }
    return 0;
}

/* The masks' storage once the slice size is known.  0 or -ENOMEM. */
static int alloc_masks(series_job *j)
{
    size_t plane = (size_t)j->rows * (size_t)j->cols, per = plane * (size_t)j->nclass;
    if (j->n > SIZE_MAX / per)
        return -ENOMEM;
    j->mask_data = malloc(j->n * per);
    j->masks = malloc(j->n * sizeof *j->masks);
    j->presence = calloc(j->n * (size_t)j->nclass, sizeof *j->presence);
    if (!j->mask_data || !j->masks || !j->presence)
        return -ENOMEM;
    for (size_t k = 0; k < j->n; k++)
        j->masks[k] = j->mask_data + k * per;
    return 0;
}

/* Working memory of a series while it runs, besides its body, per slice:
 * the masks (a byte per pixel and organ); for DICOM the decoded plane (a
 * float per pixel, all held until the series is ordered); with ?preview=1
 * the slice's preview (a 16-bit PNG in base64: under 3 bytes per pixel);
 * and the DICOM answer as DCMTK builds it, measured on 200 slices of
 * 266 x 266: a SEG about a byte per pixel and organ (its frames' functional
 * groups: at least 64 KiB a frame counted), an RTSTRUCT about a byte per
 * pixel (at least 32 KiB a slice counted).  SIZE_MAX when it overflows. */
static size_t working_bytes(size_t n, size_t plane, int nclass, bool dicom, bool preview,
                            series_format format)
{
    if (plane > SIZE_MAX / 64)
        return SIZE_MAX;
    size_t per = plane * ((size_t)nclass + (dicom ? sizeof(float) : 0) + (preview ? 3 : 0));
    if (format == SERIES_SEG || format == SERIES_BOTH)
        per += (size_t)nclass * (plane > 64 * 1024 ? plane : 64 * 1024);
    if (format == SERIES_RTSTRUCT || format == SERIES_BOTH)
        per += plane > 32 * 1024 ? plane : 32 * 1024;
    if (n && per > SIZE_MAX / n)
        return SIZE_MAX;
    return n * per;
}

/* Take the series' working memory from --max-series-memory before it is
 * allocated, so that RSS + --max-body-total + --max-series-memory bounds
 * the daemon with series running (a compressed body can decode to 30
 * times its size).  A budget of its own, not the bodies': only running
 * jobs hold it, and they finish, so bodies waiting for a worker cannot
 * starve every series of it.  0, or 1 when the job was answered: 413 when
 * the series alone needs more than the budget, 503 + Retry-After when
 * other series hold it now. */
static int reserve_working(request *r, series_job *j, size_t plane, bool dicom)
{
    segd_server *s = r->srv;
    size_t need = working_bytes(j->n, plane, j->nclass, dicom, r->preview, r->format);
    size_t total = s->cfg.max_series_memory;
    const double mib = 1024.0 * 1024.0;
    if (need > total) {
        char msg[400];
        snprintf(msg, sizeof msg, "this series needs %.1f MiB of working memory (%zu slices of "
                                  "%zu pixels), over --max-series-memory (%.1f MiB): send fewer "
                                  "slices or raise --max-series-memory",
                 (double)need / mib, j->n, plane, (double)total / mib);
        segd_job_finish_error(r, 413, msg);
        return 1;
    }
    if (!segd_budget_take(&s->series_reserved, total, need)) {
        segd_metrics_inc(s->metrics, SEGD_COUNTER_SERIES_REFUSED);
        segd_job_finish_error(r, 503, "series memory in use (--max-series-memory), retry later");
        return 1;
    }
    segd_metrics_gauge_add(s->metrics, SEGD_GAUGE_SERIES_BYTES, (long)need);
    j->reserved = need;
    return 0;
}

/* Give back what reserve_working took (0 is fine). */
static void release_working(segd_server *s, size_t n)
{
    if (!n)
        return;
    atomic_fetch_sub(&s->series_reserved, n);
    segd_metrics_gauge_add(s->metrics, SEGD_GAUGE_SERIES_BYTES, -(long)n);
}

#ifdef SEGD_HAVE_DICOM
/* Decode every instance, check they form one series with the geometry the
 * writers need, and order them along the slice normal.  0, or 1 when the
 * job was answered. */
static int decode_dicom(request *r, series_job *j)
{
    segd_server *s = r->srv;
    char err[256], msg[400];
    j->images = calloc(j->n, sizeof *j->images);
    j->sorted = calloc(j->n, sizeof *j->sorted);
    if (!j->images || !j->sorted) {
        segd_job_finish_error(r, 503, "out of memory");
        return 1;
    }
    double t0 = segd_queue_now();
    for (size_t i = 0; i < j->n; i++) {
        if (stop_now(r))
            return 1;
        int rc = segd_dicom_read(r->slices[i].png, r->slices[i].len, s->cfg.max_pixels,
                                 &j->images[i], err, sizeof err);
        if (rc) {
            snprintf(msg, sizeof msg, "part %zu: %s", i + 1, err);
            segd_job_finish_error(r, (unsigned)segd_http_status_for_errno(rc), msg);
            return 1;
        }
        snprintf(r->slices[i].id, sizeof r->slices[i].id, "%s", j->images[i]->sop_instance_uid);
        const segd_dicom_image *im = j->images[i], *im0 = j->images[0];
        if (i == 0 && reserve_working(r, j, (size_t)im->rows * (size_t)im->cols, true))
            return 1;
        if (im->rows != im0->rows || im->cols != im0->cols) { /* before decoding more */
            snprintf(msg, sizeof msg, "not one series: part %zu (SOPInstanceUID %.64s) is %dx%d "
                                      "(Rows x Columns), part 1 is %dx%d", i + 1,
                     im->sop_instance_uid, im->rows, im->cols, im0->rows, im0->cols);
            segd_job_finish_error(r, 422, msg);
            return 1;
        }
        if (j->images[i]->geometry_missing) {
            snprintf(msg, sizeof msg, "part %zu (SOPInstanceUID %.64s): %s missing: a series "
                                      "needs each image's plane geometry", i + 1,
                     j->images[i]->sop_instance_uid, j->images[i]->geometry_missing);
            segd_job_finish_error(r, 422, msg);
            return 1;
        }
    }
    int rc = segd_dicom_series_order((const segd_dicom_image *const *)j->images, j->n, j->order,
                                     err, sizeof err);
    if (rc) {
        /* the module names instances by index from 0: say "part" as the
         * client counts, from 1 */
        snprintf(msg, sizeof msg, "not one series: %s (instances counted from 0 in the order "
                                  "of the parts)", err);
        segd_job_finish_error(r, rc == -ENOMEM ? 503 : 422, msg);
        return 1;
    }
    for (size_t k = 0; k < j->n; k++)
        j->sorted[k] = j->images[j->order[k]];
    const segd_dicom_image *first = j->sorted[0];
    j->rows = first->rows;
    j->cols = first->cols;
    j->voxel[0] = first->pixel_spacing[0];
    j->voxel[1] = first->pixel_spacing[1];
    /* slice spacing: the median distance between neighbours along the
     * normal (robust to one missing slice); one slice: SliceThickness */
    const double *o = first->orientation;
    double nrm[3] = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5],
                     o[0] * o[4] - o[1] * o[3]};
    if (j->n == 1) {
        j->voxel[2] = first->slice_thickness;
    } else {
        double *d = malloc((j->n - 1) * sizeof *d);
        if (!d) {
            segd_job_finish_error(r, 503, "out of memory");
            return 1;
        }
        for (size_t k = 0; k + 1 < j->n; k++) {
            const double *p = j->sorted[k]->position, *q = j->sorted[k + 1]->position;
            d[k] = fabs((q[0] - p[0]) * nrm[0] + (q[1] - p[1]) * nrm[1] + (q[2] - p[2]) * nrm[2]);
        }
        for (size_t a = 1; a < j->n - 1; a++) /* insertion sort: n is small */
            for (size_t b = a; b > 0 && d[b - 1] > d[b]; b--) {
                double t = d[b];
                d[b] = d[b - 1];
                d[b - 1] = t;
            }
        j->voxel[2] = d[(j->n - 1) / 2];
        free(d);
    }
    j->ms_decode += segd_ms_since(t0);
    return 0;
}
#endif

/* ------------------------------------------------------------------ */
/* ?preview=1: each slice's decoded image as a 16-bit PNG in the JSON    */
/* ------------------------------------------------------------------ */

/* Standard base64 (RFC 4648 section 4, padded) of n bytes: a new string
 * (free()), NULL on OOM. */
static char *base64_encode(const unsigned char *in, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (n > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    char *out = malloc((n + 2) / 3 * 4 + 1), *p = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *p++ = abc[v >> 18];
        *p++ = abc[(v >> 12) & 63];
        *p++ = abc[(v >> 6) & 63];
        *p++ = abc[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        *p++ = abc[v >> 18];
        *p++ = abc[(v >> 12) & 63];
        *p++ = i + 1 < n ? abc[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p = 0;
    return out;
}

/* {"png": base64 16-bit grey PNG, "offset": o, "scale": s} for a plane of
 * n = rows x cols values, value = stored * scale + offset: offset is the
 * minimum; scale 1 when the values are integers whose range fits 16 bits,
 * else the range over 65535.  stored: room for n values.  A new reference,
 * NULL on OOM or an encoder error. */
static json_t *preview_json(const float *v, int rows, int cols, uint16_t *stored)
{
    size_t n = (size_t)rows * (size_t)cols;
    double lo = v[0], hi = v[0];
    bool integral = true;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < lo)
            lo = v[i];
        if (v[i] > hi)
            hi = v[i];
        integral = integral && v[i] == floorf(v[i]);
    }
    double scale = integral && hi - lo <= 65535 ? 1.0 : (hi - lo) / 65535;
    if (scale <= 0)
        scale = 1.0;
    for (size_t i = 0; i < n; i++) {
        double q = round((v[i] - lo) / scale);
        stored[i] = (uint16_t)(q < 0 ? 0 : q > 65535 ? 65535 : q);
    }
    void *png = NULL;
    size_t len = 0;
    char err[200];
    if (segd_png_encode_gray16(stored, rows, cols, &png, &len, err, sizeof err))
        return NULL;
    char *b64 = base64_encode(png, len);
    free(png);
    if (!b64)
        return NULL;
    json_t *o = json_pack("{s:s,s:f,s:f}", "png", b64, "offset", lo, "scale", scale);
    free(b64);
    return o;
}

/* ?preview=1: slice k's preview from its grey plane (j->previews[k]).
 * 0, or 1 when the job was answered. */
static int make_preview(request *r, series_job *j, size_t k, const float *grey, int rows,
                        int cols)
{
    size_t plane = (size_t)rows * (size_t)cols;
    if (!j->pb.stored)
        j->pb.stored = malloc(plane * sizeof *j->pb.stored);
    j->previews[k] = j->pb.stored ? preview_json(grey, rows, cols, j->pb.stored) : NULL;
    if (!j->previews[k]) {
        segd_job_finish_error(r, 503, "out of memory for the previews");
        return 1;
    }
    return 0;
}

/* Stage PNG slice sl with ?preview=1: decoded once, here, into j->pb,
 * staged from that plane and slice k's preview made from it (segd_worker_
 * stage_png would decode into the worker, which normalises in place).
 * 0 or a negative errno with err set, as segd_worker_stage_png; 1 when the
 * job was answered. */
static int stage_png_preview(request *r, segd_worker *w, int slot, series_job *j, size_t k,
                             const slice *sl, char *err, size_t errlen)
{
    preview_buf *b = &j->pb;
    /* collect_series checked every slice against its name: one size */
    size_t plane = (size_t)sl->width * (size_t)sl->height;
    if (!b->grey) {
        b->scratch_cap = segd_png_scratch_bytes(plane);
        b->grey = malloc(plane * sizeof *b->grey);
        b->scratch = malloc(b->scratch_cap);
        if (!b->grey || !b->scratch) {
            snprintf(err, errlen, "out of memory for the previews");
            return -ENOMEM;
        }
    }
    double t0 = segd_queue_now();
    int h, wd;
    int rc = segd_png_decode_gray(sl->png, sl->len, plane, b->grey, b->scratch, b->scratch_cap,
                                  &h, &wd, err, errlen);
    if (rc)
        return rc;
    j->ms_decode += segd_ms_since(t0);
    rc = segd_worker_stage_gray(w, slot, b->grey, h, wd, err, errlen);
    return rc ? rc : make_preview(r, j, k, b->grey, h, wd);
}

/* Answer the job with slice k's error rc (err: the engine's words). */
static void slice_error(request *r, const slice *sl, int rc, const char *err)
{
    char msg[400];
    snprintf(msg, sizeof msg, "slice %.64s: %.255s", sl->id, err[0] ? err : strerror(-rc));
    segd_job_finish_error(r, (unsigned)segd_http_status_for_errno(rc), msg);
}

/* Stage slice k (series order) into the worker's slot.  0, or 1 when the
 * job was answered. */
static int stage_slice(request *r, segd_worker *w, series_job *j, size_t k, int slot)
{
    const slice *sl = &r->slices[j->order[k]];
    char err[256] = "";
    int rc;
#ifdef SEGD_HAVE_DICOM
    if (sl->dicom) {
        const segd_dicom_image *im = j->sorted[k];
        rc = segd_worker_stage_gray(w, slot, im->pixels, im->rows, im->cols, err, sizeof err);
        if (!rc && r->preview)
            return make_preview(r, j, k, im->pixels, im->rows, im->cols);
    } else
#endif
        if (r->preview)
            rc = stage_png_preview(r, w, slot, j, k, sl, err, sizeof err);
        else
            rc = segd_worker_stage_png(w, slot, sl->png, sl->len, err, sizeof err);
    if (rc < 0)
        slice_error(r, sl, rc, err);
    return rc != 0;
}

/* Slice k's result from the worker's slot into the series' masks.  0, or
 * 1 when the job was answered. */
static int collect_slice(request *r, segd_worker *w, series_job *j, size_t k, int slot)
{
    const slice *sl = &r->slices[j->order[k]];
    segd_result res;
    char err[256] = "", msg[400];
    int rc = segd_worker_result(w, slot, r->threshold, &res, err, sizeof err);
    if (rc) {
        slice_error(r, sl, rc, err);
        return 1;
    }
    if (!j->mask_data) { /* PNG series: the size is known now */
        j->rows = res.height;
        j->cols = res.width;
        if (alloc_masks(j)) {
            segd_job_finish_error(r, 503, "out of memory for the series' masks");
            return 1;
        }
    }
    if (res.width != j->cols || res.height != j->rows) {
        snprintf(msg, sizeof msg, "slice %.64s is %dx%d, the series %dx%d", sl->id, res.width,
                 res.height, j->cols, j->rows);
        segd_job_finish_error(r, 422, msg);
        return 1;
    }
    size_t plane = (size_t)j->rows * (size_t)j->cols;
    for (int c = 0; c < j->nclass; c++) {
        memcpy(j->masks[k] + (size_t)c * plane, res.mask[c], plane);
        j->presence[k * (size_t)j->nclass + (size_t)c] = res.presence[c];
    }
    j->ms_decode += res.ms_decode;
    j->ms_infer += res.ms_infer;
    j->ms_post += res.ms_post;
    j->rle = res.rle;
    j->rle_cap = res.rle_cap;
    return 0;
}

/* Slices [k0, k1) through the network as one batch of the worker's slots
 * (k1 - k0 <= segd_worker_batch(w)); each slice's share of the time goes
 * to the inference histogram.  0, or 1 when the job was answered. */
static int segment_batch(request *r, segd_worker *w, series_job *j, size_t k0, size_t k1)
{
    double t0 = segd_queue_now();
    for (size_t k = k0; k < k1; k++)
        if (stage_slice(r, w, j, k, (int)(k - k0)))
            return 1;
    if (segd_worker_run(w, (int)(k1 - k0))) { /* every slot staged above: cannot fail */
        segd_job_finish_error(r, 500, "engine refused a staged batch");
        return 1;
    }
    for (size_t k = k0; k < k1; k++)
        if (collect_slice(r, w, j, k, (int)(k - k0)))
            return 1;
    double each = segd_queue_now() - t0;
    for (size_t k = k0; k < k1; k++)
        segd_metrics_observe(r->srv->metrics, SEGD_HIST_INFERENCE, each / (double)(k1 - k0));
    return 0;
}

/* The JSON answer (a new reference, NULL on OOM). */
static json_t *series_json(request *r, series_job *j, double queue_ms)
{
    const segd_model *m = r->slot->model;
    size_t plane = (size_t)j->rows * (size_t)j->cols;
    json_t *top = json_object(), *slices = json_array(), *vol = json_object(),
           *removed = json_object(), *removed_vox = json_object();
    json_t *result = NULL;
    if (!top || !slices || !vol || !removed || !removed_vox)
        goto out;
    for (size_t k = 0; k < j->n; k++) {
        const slice *sl = &r->slices[j->order[k]];
        json_t *d = json_object(), *masks = json_object(), *pixels = json_object(),
               *pres = json_object();
        bool ok = d && masks && pixels && pres && json_array_append(slices, d) == 0 &&
                  json_object_set_new(d, "index", json_integer((json_int_t)k)) == 0 &&
                  json_object_set_new(d, "id", json_string(sl->id)) == 0;
        for (int c = 0; ok && c < j->nclass; c++) {
            const uint8_t *mk = j->masks[k] + (size_t)c * plane;
            size_t count = 0;
            for (size_t i = 0; i < plane; i++)
                count += mk[i];
            const char *name = segd_model_class_name(m, c);
            ok = segd_rle_encode(mk, plane, j->rle, j->rle_cap) >= 0 &&
                 json_object_set_new(masks, name, json_string(j->rle)) == 0 &&
                 json_object_set_new(pixels, name, json_integer((json_int_t)count)) == 0 &&
                 json_object_set_new(pres, name,
                                     json_real(j->presence[k * (size_t)j->nclass + (size_t)c])) == 0;
        }
        ok = ok && json_object_set(d, "masks", masks) == 0 &&
             json_object_set(d, "pixels", pixels) == 0 && json_object_set(d, "presence", pres) == 0;
#ifdef SEGD_HAVE_DICOM
        if (ok && sl->dicom)
            ok = json_object_set_new(d, "dicom", segd_dicom_image_json(j->sorted[k])) == 0;
#else
        (void)sl;
#endif
        if (ok && r->preview)
            ok = json_object_set(d, "image", j->previews[k]) == 0;
        json_decref(d);
        json_decref(masks);
        json_decref(pixels);
        json_decref(pres);
        if (!ok)
            goto out;
    }
    bool known = j->voxel[2] > 0;
    for (int c = 0; c < j->nclass; c++) {
        const char *name = segd_model_class_name(m, c);
        if (json_object_set_new(vol, name, known ? json_real(j->volume[c]) : json_null()) ||
            json_object_set_new(removed, name, json_integer((json_int_t)j->removed[c])) ||
            json_object_set_new(removed_vox, name, json_integer((json_int_t)j->removed_voxels[c])))
            goto out;
    }
    if (json_object_set_new(top, "id", json_string(r->doc_id[0] ? r->doc_id : r->id)) ||
        json_object_set_new(top, "slice_count", json_integer((json_int_t)j->n)) ||
        json_object_set_new(top, "width", json_integer(j->cols)) ||
        json_object_set_new(top, "height", json_integer(j->rows)) ||
        json_object_set_new(top, "order", json_string(r->related ? "slice normal" : "slice number")) ||
        json_object_set(top, "slices", slices) ||
        json_object_set_new(top, "rle", json_pack("{s:s,s:i}", "order", "row-major", "base", 1)) ||
        json_object_set_new(top, "voxel_spacing_mm",
                            known ? json_pack("[f,f,f]", j->voxel[0], j->voxel[1], j->voxel[2])
                                  : json_null()) ||
        json_object_set(top, "volume_ml", vol) ||
        json_object_set_new(top, "cleanup",
                            json_pack("{s:f,s:i,s:O,s:O}", "min_volume_ml",
                                      known ? r->min_volume_ml : 0.0, "connectivity", 26,
                                      "components_removed", removed, "voxels_removed",
                                      removed_vox)) ||
        json_object_set_new(top, "model", json_pack("{s:s,s:s}", "name", segd_model_name(m),
                                                    "sha256", segd_model_sha256(m))) ||
        json_object_set_new(top, "timing_ms",
                            json_pack("{s:f,s:f,s:f,s:f,s:f}", "queue", queue_ms, "decode",
                                      j->ms_decode, "infer", j->ms_infer, "post", j->ms_post,
                                      "cleanup", j->ms_cleanup)))
        goto out;
#ifdef SEGD_HAVE_DICOM
    if (r->related) {
        const segd_dicom_image *f = j->sorted[0];
        if (json_object_set_new(top, "dicom",
                                json_pack("{s:s,s:s,s:s}", "SeriesInstanceUID",
                                          f->series_instance_uid, "StudyInstanceUID",
                                          f->study_instance_uid, "FrameOfReferenceUID",
                                          f->frame_of_reference_uid)))
            goto out;
    }
#endif
    result = json_incref(top);
out:
    json_decref(slices);
    json_decref(vol);
    json_decref(removed);
    json_decref(removed_vox);
    json_decref(top);
    return result;
}

#ifdef SEGD_HAVE_DICOM
/* Answer with the DICOM object(s) the request asked for. */
static void answer_dicom(request *r, series_job *j)
{
    segd_server *s = r->srv;
    const segd_model *m = r->slot->model;
    char err[256], msg[320];
    for (int c = 0; c < SEGD_DICOM_NUM_ORGANS; c++)
        if (j->nclass != SEGD_DICOM_NUM_ORGANS ||
            strcmp(segd_model_class_name(m, c), segd_dicom_organ_name(c)) != 0) {
            segd_job_finish_error(r, 500, "the model's classes are not segd's three organs: no "
                                          "DICOM coding for them");
            return;
        }
    segd_dicom_algorithm alg = {segd_model_name(m), segd_model_sha256(m), SEGD_VERSION, NULL, 0};
    const uint8_t *const *masks = (const uint8_t *const *)j->masks;
    void *obj[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    int rc = 0;
    if (r->format == SERIES_SEG || r->format == SERIES_BOTH)
        rc = segd_dicom_write_seg(j->sorted, j->n, masks, &alg, &obj[0], &len[0], err, sizeof err);
    if (rc == 0 && (r->format == SERIES_RTSTRUCT || r->format == SERIES_BOTH))
        rc = segd_dicom_write_rtstruct(j->sorted, j->n, masks, &alg, &obj[1], &len[1], err,
                                       sizeof err);
    if (rc) {
        segd_dicom_buffer_free(obj[0]);
        snprintf(msg, sizeof msg, "writing the DICOM answer: %s", err);
        segd_job_finish_error(r, rc == -ENOMEM ? 503 : rc == -EXDEV ? 422 : 500, msg);
        return;
    }
    if (r->format != SERIES_BOTH) {
        int i = r->format == SERIES_SEG ? 0 : 1;
        struct MHD_Response *resp = segd_respond_dicom(s, r->id, obj[i], len[i]);
        segd_job_finish(r, 200, resp, len[i]);
        return;
    }
    /* both, as one multipart/related body (what STOW-RS takes as it is);
     * the boundary carries the request id and is checked against the data */
    char boundary[48], ctype[128];
    size_t total = 0;
    char *body = NULL;
    /* from the request id, hashed (FNV-1a): a client's id may hold
     * characters a boundary may not */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *q = r->id; *q; q++)
        h = (h ^ (unsigned char)*q) * 0x100000001b3ull;
    for (unsigned salt = 0; salt < 100; salt++) {
        snprintf(boundary, sizeof boundary, "segd-%016llx-%u", (unsigned long long)h, salt);
        if (!memmem(obj[0], len[0], boundary, strlen(boundary)) &&
            !memmem(obj[1], len[1], boundary, strlen(boundary)))
            break;
    }
    static const char part_head[] = "Content-Type: application/dicom\r\n\r\n";
    size_t blen = strlen(boundary);
    total = 2 * (2 + blen + 2 + sizeof part_head - 1 + 2) + len[0] + len[1] + 2 + blen + 4;
    body = malloc(total + 1); /* + the NUL that the last sprintf() writes */
    if (body) {
        char *p = body;
        for (int i = 0; i < 2; i++) {
            p += sprintf(p, "--%s\r\n%s", boundary, part_head);
            memcpy(p, obj[i], len[i]);
            p += len[i];
            memcpy(p, "\r\n", 2);
            p += 2;
        }
        p += sprintf(p, "--%s--\r\n", boundary);
        total = (size_t)(p - body);
    }
    segd_dicom_buffer_free(obj[0]);
    segd_dicom_buffer_free(obj[1]);
    if (!body) {
        segd_job_finish_error(r, 503, "out of memory building the response");
        return;
    }
    snprintf(ctype, sizeof ctype, "multipart/related; type=\"application/dicom\"; boundary=%s",
             boundary);
    segd_job_finish(r, 200, segd_respond_buffer(s, r->id, body, total, ctype), total);
}
#endif

void segd_series_run(request *r, segd_worker *w, double queue_ms)
{
    segd_server *s = r->srv; /* r may be gone once answered */
    series_job j = {0};
    j.n = r->nslices;
    j.nclass = segd_model_num_classes(r->slot->model);
    j.order = malloc(j.n * sizeof *j.order);
    if (r->preview)
        j.previews = calloc(j.n, sizeof *j.previews);
    if (!j.order || (r->preview && !j.previews)) {
        segd_job_finish_error(r, 503, "out of memory");
        goto out;
    }
    if (r->related) {
#ifdef SEGD_HAVE_DICOM
        if (decode_dicom(r, &j))
            goto out;
        if (alloc_masks(&j)) {
            segd_job_finish_error(r, 503, "out of memory for the series' masks");
            goto out;
        }
#endif
    } else {
        for (size_t i = 0; i < j.n; i++) /* collect_series sorted them */
            j.order[i] = i;
        const slice *first = &r->slices[0];
        j.voxel[0] = first->spacing_y;
        j.voxel[1] = first->spacing_x;
        j.voxel[2] = r->slice_spacing;
        /* collect_series checked every PNG's size against its name: one size */
        if (reserve_working(r, &j, (size_t)first->width * (size_t)first->height, false))
            goto out;
    }
    size_t batch = (size_t)segd_worker_batch(w);
    for (size_t k = 0; k < j.n; k += batch)
        if (stop_now(r) || segment_batch(r, w, &j, k, k + batch < j.n ? k + batch : j.n))
            goto out;

    double t0 = segd_queue_now();
    bool known = j.voxel[0] > 0 && j.voxel[1] > 0 && j.voxel[2] > 0;
    int rc = segd_series_cleanup(j.masks, j.n, j.rows, j.cols, j.nclass, j.voxel,
                                 known ? r->min_volume_ml : 0, j.removed, j.removed_voxels);
    if (rc) {
        segd_job_finish_error(r, 503, "out of memory in the series clean-up");
        goto out;
    }
    if (known)
        segd_series_volumes_ml((const uint8_t *const *)j.masks, j.n, j.rows, j.cols, j.nclass,
                               j.voxel, j.volume);
    else
        j.voxel[2] = 0;
    j.ms_cleanup = segd_ms_since(t0);

    if (r->format == SERIES_JSON) {
        segd_job_finish_json(r, series_json(r, &j, queue_ms));
    } else {
#ifdef SEGD_HAVE_DICOM
        answer_dicom(r, &j);
#else
        segd_job_finish_error(r, 500, "no DICOM support");
#endif
    }
out:
    job_free(&j);
    release_working(s, j.reserved);
}
