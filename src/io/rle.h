/* Run-length encoding of binary masks in the Kaggle UW-Madison GI dialect:
 * whitespace-separated "start length" pairs, starts 1-based, pixels counted
 * row-major (pixel p is row (p-1) / W, column (p-1) % W), runs in increasing
 * order, and the empty string for an empty mask. */
#ifndef SEGD_RLE_H
#define SEGD_RLE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes needed to encode any mask of npix pixels, terminating NUL included
 * (worst case: alternating pixels).  Cannot fail. */
size_t segd_rle_max_len(size_t npix);

/* Encode mask (npix bytes, nonzero = set) into buf (cap bytes, NUL
 * terminated).  Returns the string length, or -ENOSPC if buf is too small
 * (buf then holds a truncated, NUL-terminated prefix when cap > 0). */
long segd_rle_encode(const uint8_t *mask, size_t npix, char *buf, size_t cap);

/* Decode rle into mask (npix bytes, set to 0/1).  Strict: only digits and
 * ASCII whitespace, an even number of values, starts >= 1, lengths >= 1,
 * runs strictly increasing and non-overlapping, all inside npix.  Returns
 * the number of set pixels, or -EINVAL (mask contents then unspecified). */
long segd_rle_decode(const char *rle, uint8_t *mask, size_t npix);

#endif
