/* The response document of one segmented slice, shared by `segd infer`
 * and POST /v1/segment so that the two cannot differ: masks as RLE (written
 * into the worker's storage, segd_result.rle), pixel counts, presence,
 * model identity and timings. */
#include <stddef.h>

#include <jansson.h>

#include "segd/engine.h"
#include "io/rle.h"

json_t *segd_result_json(const segd_model *m, const segd_result *r, const char *id)
{
    size_t n = (size_t)r->width * r->height;
    char *buf = r->rle; /* the worker's: no per-call RLE buffer */
    size_t cap = r->rle_cap;
    json_t *doc = json_object(), *masks = json_object(), *pixels = json_object(),
           *pres = json_object();
    json_t *result = NULL;
    if (!buf || !doc || !masks || !pixels || !pres)
        goto out;
    for (int c = 0; c < r->nclass; c++) {
        const char *name = segd_model_class_name(m, c);
        if (segd_rle_encode(r->mask[c], n, buf, cap) < 0)
            goto out;
        if (json_object_set_new(masks, name, json_string(buf)) ||
            json_object_set_new(pixels, name, json_integer((json_int_t)r->pixels[c])) ||
            json_object_set_new(pres, name, json_real(r->presence[c])))
            goto out;
    }
    if (json_object_set_new(doc, "id", json_string(id ? id : "")) ||
        json_object_set_new(doc, "width", json_integer(r->width)) ||
        json_object_set_new(doc, "height", json_integer(r->height)) ||
        json_object_set(doc, "masks", masks) ||
        json_object_set_new(doc, "rle", json_pack("{s:s,s:i}", "order", "row-major", "base", 1)) ||
        json_object_set_new(doc, "model", json_pack("{s:s,s:s}", "name", segd_model_name(m),
                                                    "sha256", segd_model_sha256(m))) ||
        json_object_set(doc, "pixels", pixels) || json_object_set(doc, "presence", pres) ||
        json_object_set_new(doc, "timing_ms",
                            json_pack("{s:f,s:f,s:f}", "decode", r->ms_decode, "infer",
                                      r->ms_infer, "post", r->ms_post)))
        goto out;
    result = json_incref(doc);
out:
    json_decref(masks);
    json_decref(pixels);
    json_decref(pres);
    json_decref(doc);
    return result;
}
