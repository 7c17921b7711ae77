/* Boundary tracing of a binary mask into closed polygons on the pixel-corner
 * lattice (private to src/dicom; see segd_dicom_write_rtstruct in
 * segd/dicom.h for the algorithm and its source). */
#ifndef SEGD_DICOM_CONTOUR_H
#define SEGD_DICOM_CONTOUR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Called once per closed contour with its npts vertices as (x, y) pairs of
 * pixel corners: x in 0..cols, y in 0..rows, pixel (r, c) having corners
 * (c, r) .. (c + 1, r + 1), so its centre is (c + 0.5, r + 0.5); the first
 * vertex is not repeated at the end.  Outer boundaries run clockwise on
 * screen (y down), holes anticlockwise.  A non-zero return stops the
 * tracing and is returned by the tracer. */
typedef int (*segd_contour_fn)(void *ctx, const int32_t *xy, size_t npts);

/* Scratch bytes segd_contour_trace needs for a rows x cols mask: one edge
 * mark byte per pixel and room for the longest possible contour (two
 * visits of every corner); about 17 bytes per pixel.  0 when rows x cols
 * overflows. */
size_t segd_contour_scratch_bytes(int rows, int cols);

/* Trace every boundary of mask (rows x cols bytes, row-major, nonzero =
 * inside; 4-connected inside regions, 8-connected holes) and call fn for
 * each closed contour, in raster order of its first edge.  Collinear
 * vertices are dropped.  scratch: segd_contour_scratch_bytes(rows, cols)
 * bytes, 8-byte aligned (caller's storage; nothing is allocated here).
 * Returns 0 or fn's first non-zero return. */
int segd_contour_trace(const uint8_t *mask, int rows, int cols, void *scratch,
                       segd_contour_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif

#endif
