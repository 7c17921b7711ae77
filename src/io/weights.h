/* Safetensors reader: maps a weights file read-only and validates its header
 * (dtype, shape, data offsets, duplicates, overlaps) before anything reads a
 * tensor.  Knows nothing about the network; see unet3p.h for that. */
#ifndef SEGD_WEIGHTS_H
#define SEGD_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define SEGD_TENSOR_MAX_DIMS 4
/* __metadata__ key of the hex SHA-256 of the data section (every byte
 * after the JSON header, padding included), written by train/export.py */
#define SEGD_WEIGHTS_TENSOR_SHA256 "tensor_sha256"

typedef struct segd_tensor {
    const char *name;                       /* owned by the segd_weights */
    int ndim;
    int64_t shape[SEGD_TENSOR_MAX_DIMS];
    size_t nelem;
    const unsigned char *data;              /* nelem little-endian F32, maybe unaligned */
} segd_tensor;

typedef struct segd_weights segd_weights;

/* Map and validate path.  Every tensor must be F32 with at most 4 dims, its
 * data_offsets [begin, end) inside the data section, end - begin ==
 * 4 * nelem, no two tensors overlapping, no duplicate keys; __metadata__ (if
 * present) must map strings to strings; when it holds tensor_sha256, the
 * data section must hash to it (a file without it loads unverified, see
 * segd_weights_data_verified).  On error *out is NULL, returns
 * -errno/-EINVAL and err names the file field or tensor at fault. */
int segd_weights_open(const char *path, segd_weights **out, char *err, size_t errlen);
/* Same from a memory buffer (copied: the caller keeps ownership). */
int segd_weights_open_mem(const void *buf, size_t len, segd_weights **out, char *err,
                          size_t errlen);
void segd_weights_close(segd_weights *w); /* NULL is fine */

size_t segd_weights_count(const segd_weights *w);
const segd_tensor *segd_weights_tensor(const segd_weights *w, size_t i);
/* Tensor by name, NULL if absent. */
const segd_tensor *segd_weights_find(const segd_weights *w, const char *name);
/* __metadata__ value by key, NULL if absent (borrowed). */
const char *segd_weights_meta(const segd_weights *w, const char *key);
/* The __metadata__ object (borrowed; empty object if the file has none). */
json_t *segd_weights_metadata(const segd_weights *w);
/* Hex SHA-256 of the whole file. */
const char *segd_weights_sha256(const segd_weights *w);
/* 1 when the data section matched __metadata__ tensor_sha256 at open, 0
 * when the file has no such field (old exports). */
int segd_weights_data_verified(const segd_weights *w);

/* Copy a tensor's data to floats (dst: nelem floats).  Cannot fail. */
void segd_tensor_read(const segd_tensor *t, float *dst);

#endif
