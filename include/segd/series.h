/* segd series post-processing: what segd does with the masks of a whole
 * series once every slice is segmented (POST /v1/series): 3D clean-up of
 * small connected components per organ, organ volumes, and the slice
 * number and pixel spacing of a Kaggle-named PNG slice.
 *
 * Masks are per slice, organ-major: masks[k] holds norgans x rows x cols
 * bytes for slice k (slices in series order, adjacent slices adjacent in
 * space), each organ's plane row-major, nonzero = inside.
 *
 * Voxel size: voxel_mm = {between rows, between columns, between slices}
 * in mm (PixelSpacing[0], PixelSpacing[1], the slice spacing).
 *
 * Thread-safe; no global state. */
#ifndef SEGD_SERIES_H
#define SEGD_SERIES_H

#include <stddef.h>
#include <stdint.h>

/* Drop, per organ, every 3D connected component (26-connectivity: voxels
 * touching by a face, an edge or a corner, within a slice and between
 * adjacent slices) whose volume is under min_volume_ml (mL = 1000 mm^3),
 * setting its voxels to 0; kept voxels are set to 1.  removed[o] (norgans
 * entries, may be NULL) receives how many components of organ o were
 * dropped, removed_voxels[o] (may be NULL) how many voxels.  The
 * component walk keeps its own list of the voxels it visits (grown as
 * needed, at most one organ's voxel count), so it allocates: not a
 * forward-pass function.  min_volume_ml <= 0 only normalises the masks to
 * 0/1.  0, -EINVAL (n, rows, cols, norgans < 1 or a voxel size <= 0 with
 * min_volume_ml > 0), or -ENOMEM (the masks are then left in an unspecified
 * state: the caller answers an error). */
int segd_series_cleanup(uint8_t *const *masks, size_t n, int rows, int cols, int norgans,
                        const double voxel_mm[3], double min_volume_ml, size_t *removed,
                        size_t *removed_voxels);

/* Volume of each organ in mL (ml[o], norgans entries): its voxel count
 * times the voxel volume.  Cannot fail. */
void segd_series_volumes_ml(const uint8_t *const *masks, size_t n, int rows, int cols,
                            int norgans, const double voxel_mm[3], double *ml);

/* Parse a slice's name in the UW-Madison GI (Kaggle) convention,
 * "...slice_NNNN_W_H_SX_SY[.png]": slice number, width and height in
 * pixels, and pixel spacing SX (between columns) and SY (between rows) in
 * mm, e.g. "case123_day20_slice_0065_266_266_1.50_1.50.png".  Anything
 * may precede "slice_" (case and day, a path).  0, or -EINVAL when name
 * does not follow it (numbers out of range, spacing <= 0). */
int segd_series_kaggle_name(const char *name, int *slice, int *width, int *height,
                            double *spacing_x, double *spacing_y);

#endif
