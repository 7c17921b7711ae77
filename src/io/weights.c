/* Safetensors header parsing and validation over a read-only file mapping. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/sha256.h"
#include "io/weights.h"

#define HEADER_MAX (64u << 20) /* a sane bound on the JSON header */

struct segd_weights {
    const unsigned char *map; /* whole file */
    size_t map_len;
    int mapped;               /* map is an mmap (else malloc'd copy) */
    const unsigned char *data;/* start of the data section */
    size_t data_len;
    json_t *header;           /* parsed JSON (owns tensor names) */
    json_t *meta;             /* borrowed from header, or own empty object */
    segd_tensor *tensors;
    size_t ntensors;
    char sha256[65];
    int data_verified;        /* __metadata__ tensor_sha256 present and matching */
};

void segd_weights_close(segd_weights *w)
{
    if (!w)
        return;
    free(w->tensors);
    json_decref(w->meta);
    json_decref(w->header);
    if (w->map) {
        if (w->mapped)
            munmap((void *)w->map, w->map_len);
        else
            free((void *)w->map);
    }
    free(w);
}

static int cmp_offset(const void *a, const void *b)
{
    const segd_tensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data;
}

/* Parse and validate the header of w->map; fills tensors.  Over 80 lines
 * on purpose: a flat list of checks in the header's order, each with its
 * own message, reads (and fuzzes) better than a maze of helpers that all
 * need err and the partial state. */
static int parse(segd_weights *w, char *err, size_t errlen)
{
    if (w->map_len < 8) {
        snprintf(err, errlen, "file too short for a safetensors header (%zu bytes)", w->map_len);
        return -EINVAL;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | w->map[i];
    if (hlen > w->map_len - 8 || hlen > HEADER_MAX) {
        snprintf(err, errlen, "header length %llu beyond end of file (%zu bytes)",
                 (unsigned long long)hlen, w->map_len);
        return -EINVAL;
    }
    json_error_t jerr;
    w->header = json_loadb((const char *)w->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!w->header || !json_is_object(w->header)) {
        snprintf(err, errlen, "bad header JSON: %s", w->header ? "not an object" : jerr.text);
        return -EINVAL;
    }
    w->data = w->map + 8 + hlen;
    w->data_len = w->map_len - 8 - (size_t)hlen;

    json_t *meta = json_object_get(w->header, "__metadata__");
    if (meta) {
        if (!json_is_object(meta)) {
            snprintf(err, errlen, "__metadata__ is not an object");
            return -EINVAL;
        }
        const char *k;
        json_t *v;
        json_object_foreach(meta, k, v) {
            if (!json_is_string(v)) {
                snprintf(err, errlen, "__metadata__ value '%s' is not a string", k);
                return -EINVAL;
            }
        }
        w->meta = json_incref(meta);
    } else {
        w->meta = json_object();
        if (!w->meta)
            return -ENOMEM;
    }

    size_t n = json_object_size(w->header) - (meta ? 1 : 0);
    w->tensors = calloc(n ? n : 1, sizeof *w->tensors);
    if (!w->tensors) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    const char *name;
    json_t *t;
    json_object_foreach(w->header, name, t) {
        if (strcmp(name, "__metadata__") == 0)
            continue;
        segd_tensor *ts = &w->tensors[w->ntensors++];
        ts->name = name;
        json_t *dt = json_object_get(t, "dtype"), *sh = json_object_get(t, "shape"),
               *off = json_object_get(t, "data_offsets");
        if (!json_is_object(t) || !json_is_string(dt) || !json_is_array(sh) ||
            !json_is_array(off)) {
            snprintf(err, errlen, "tensor '%s': needs dtype, shape and data_offsets", name);
            return -EINVAL;
        }
        if (strcmp(json_string_value(dt), "F32") != 0) {
            snprintf(err, errlen, "tensor '%s': dtype %s, expected F32", name,
                     json_string_value(dt));
            return -EINVAL;
        }
        size_t nd = json_array_size(sh);
        if (nd > SEGD_TENSOR_MAX_DIMS) {
            snprintf(err, errlen, "tensor '%s': %zu dimensions (at most %d)", name, nd,
                     SEGD_TENSOR_MAX_DIMS);
            return -EINVAL;
        }
        ts->ndim = (int)nd;
        size_t nelem = 1;
        for (size_t i = 0; i < nd; i++) {
            json_t *d = json_array_get(sh, i);
            if (!json_is_integer(d) || json_integer_value(d) < 0 ||
                json_integer_value(d) > (1 << 30)) {
                snprintf(err, errlen, "tensor '%s': bad shape entry %zu", name, i);
                return -EINVAL;
            }
            ts->shape[i] = json_integer_value(d);
            if (ts->shape[i] && nelem > ((size_t)1 << 40) / (size_t)ts->shape[i]) {
                snprintf(err, errlen, "tensor '%s': shape too large", name);
                return -EINVAL;
            }
            nelem *= (size_t)ts->shape[i];
        }
        ts->nelem = nelem;
        json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
        if (json_array_size(off) != 2 || !json_is_integer(b) || !json_is_integer(e)) {
            snprintf(err, errlen, "tensor '%s': data_offsets must be [begin, end]", name);
            return -EINVAL;
        }
        json_int_t bv = json_integer_value(b), ev = json_integer_value(e);
        if (bv < 0 || ev < bv || (uint64_t)ev > w->data_len) {
            snprintf(err, errlen,
                     "tensor '%s': data_offsets [%lld, %lld] out of range (data section %zu bytes)",
                     name, (long long)bv, (long long)ev, w->data_len);
            return -EINVAL;
        }
        if ((uint64_t)(ev - bv) != (uint64_t)nelem * 4) {
            snprintf(err, errlen, "tensor '%s': %lld data bytes for %zu F32 elements", name,
                     (long long)(ev - bv), nelem);
            return -EINVAL;
        }
        ts->data = w->data + bv;
        /* A NaN or inf weight loads silently otherwise and turns every
         * answer into garbage or an error at run time; name it here. */
        for (size_t i = 0; i < nelem; i++) {
            float v;
            memcpy(&v, ts->data + 4 * i, sizeof v); /* data may be unaligned */
            if (!isfinite(v)) {
                snprintf(err, errlen, "tensor '%s': non-finite value (%g) at element %zu", name,
                         (double)v, i);
                return -EINVAL;
            }
        }
    }
    /* No two tensors may share bytes: sort by offset, compare neighbours. */
    segd_tensor *sorted = malloc((w->ntensors ? w->ntensors : 1) * sizeof *sorted);
    if (!sorted) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(sorted, w->tensors, w->ntensors * sizeof *sorted);
    qsort(sorted, w->ntensors, sizeof *sorted, cmp_offset);
    int rc = 0;
    for (size_t i = 1; i < w->ntensors; i++) {
        const segd_tensor *p = &sorted[i - 1], *q = &sorted[i];
        if (p->nelem && q->nelem && p->data + 4 * p->nelem > q->data) {
            snprintf(err, errlen, "tensor '%s': data overlaps tensor '%s'", q->name, p->name);
            rc = -EINVAL;
            break;
        }
    }
    free(sorted);
    return rc;
}

/* A flipped bit in a tensor would otherwise load and quietly change every
 * mask; the file's own sha256 cannot tell (nothing says what it should
 * be), so the exporter records the digest of the data section. */
static int verify_data(segd_weights *w, char *err, size_t errlen)
{
    const char *want = segd_weights_meta(w, SEGD_WEIGHTS_TENSOR_SHA256);
    if (!want)
        return 0; /* exported before the field existed: the caller warns */
    size_t n = strlen(want);
    bool hex = n == 64;
    for (size_t i = 0; hex && i < n; i++)
        hex = (want[i] >= '0' && want[i] <= '9') || (want[i] >= 'a' && want[i] <= 'f');
    if (!hex) {
        snprintf(err, errlen, "__metadata__ %s is not 64 lowercase hex digits",
                 SEGD_WEIGHTS_TENSOR_SHA256);
        return -EINVAL;
    }
    char got[65];
    segd_sha256_hex(w->data, w->data_len, got);
    if (strcmp(got, want) != 0) {
        snprintf(err, errlen,
                 "tensor data checksum mismatch: __metadata__ %s is %.16s..., the data section "
                 "(%zu bytes) hashes to %.16s... (corrupt or modified file)",
                 SEGD_WEIGHTS_TENSOR_SHA256, want, w->data_len, got);
        return -EINVAL;
    }
    w->data_verified = 1;
    return 0;
}

static int finish_open(segd_weights *w, segd_weights **out, char *err, size_t errlen)
{
    int rc = parse(w, err, errlen);
    if (!rc)
        rc = verify_data(w, err, errlen);
    if (rc) {
        segd_weights_close(w);
        return rc;
    }
    segd_sha256_hex(w->map, w->map_len, w->sha256);
    *out = w;
    return 0;
}

int segd_weights_open(const char *path, segd_weights **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = -1, rc = 0;
    segd_weights *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer for ever; anything but a regular file is refused below. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        snprintf(err, errlen, "%s: not a regular file (%s)", path,
                 S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                 : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a socket or other");
        goto fail;
    }
    if (st.st_size < 8) {
        rc = -EINVAL;
        snprintf(err, errlen, "%s: not a safetensors file (%lld bytes)", path,
                 (long long)st.st_size);
        goto fail;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        snprintf(err, errlen, "%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    w->map = p;
    w->map_len = (size_t)st.st_size;
    w->mapped = 1;
    return finish_open(w, out, err, errlen);
fail:
    if (fd >= 0)
        close(fd);
    segd_weights_close(w);
    return rc;
}

int segd_weights_open_mem(const void *buf, size_t len, segd_weights **out, char *err,
                          size_t errlen)
{
    *out = NULL;
    segd_weights *w = calloc(1, sizeof *w);
    unsigned char *copy = malloc(len ? len : 1);
    if (!w || !copy) {
        free(w);
        free(copy);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    memcpy(copy, buf, len);
    w->map = copy;
    w->map_len = len;
    return finish_open(w, out, err, errlen);
}

size_t segd_weights_count(const segd_weights *w) { return w->ntensors; }

const segd_tensor *segd_weights_tensor(const segd_weights *w, size_t i)
{
    return i < w->ntensors ? &w->tensors[i] : NULL;
}

const segd_tensor *segd_weights_find(const segd_weights *w, const char *name)
{
    for (size_t i = 0; i < w->ntensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return &w->tensors[i];
    return NULL;
}

const char *segd_weights_meta(const segd_weights *w, const char *key)
{
    return json_string_value(json_object_get(w->meta, key));
}

json_t *segd_weights_metadata(const segd_weights *w) { return w->meta; }

const char *segd_weights_sha256(const segd_weights *w) { return w->sha256; }

int segd_weights_data_verified(const segd_weights *w) { return w->data_verified; }

void segd_tensor_read(const segd_tensor *t, float *dst)
{
    for (size_t i = 0; i < t->nelem; i++) {
        const unsigned char *p = t->data + 4 * i;
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        memcpy(&dst[i], &u, 4);
    }
}
