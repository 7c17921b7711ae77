/* PNG slice decoding into caller-provided storage (libpng, no allocation
 * beyond libpng's own). */
#ifndef SEGD_PNG_H
#define SEGD_PNG_H

#include <stddef.h>
#include <stdint.h>

/* Scratch bytes segd_png_decode_gray() needs for images of up to max_pixels
 * pixels (decoded rows before grey conversion).  Cannot fail. */
size_t segd_png_scratch_bytes(size_t max_pixels);

/* Decode png (len bytes) to raw grey intensities, as train/preprocess.py
 * load_png: 8/16-bit grey kept as is (1/2/4-bit expanded to 8), RGB(A) and
 * palette via float BT.601 luminance (0.299 r + 0.587 g) + 0.114 b on 8-bit
 * channels (16-bit colour reduced to its high byte, as PIL does), alpha
 * dropped.  out: (H, W) floats, room for max_pixels; scratch: at least
 * segd_png_scratch_bytes(max_pixels) bytes.  Sets *height, *width.
 * Returns 0, -EINVAL (malformed), -E2BIG (more than max_pixels pixels),
 * -EDOM (unsupported), -ENOMEM (libpng out of memory); err gets a message. */
int segd_png_decode_gray(const void *png, size_t len, size_t max_pixels,
                         float *out, void *scratch, size_t scratch_cap,
                         int *height, int *width, char *err, size_t errlen);

/* Encode a (height, width) plane of 16-bit grey values (row-major,
 * native endian) as a 16-bit greyscale PNG.  On success *out holds a new
 * malloc'd buffer of *outlen bytes that the caller frees with free().
 * Returns 0, -EINVAL (height or width < 1), -ENOMEM (out of memory, also
 * inside libpng), -EIO (another libpng error); on error *out is NULL and err
 * gets a message.  Keeps no state between calls. */
int segd_png_encode_gray16(const uint16_t *pixels, int height, int width, void **out,
                           size_t *outlen, char *err, size_t errlen);

#endif
