/* Crack following on the pixel-corner lattice: turns a binary mask into the
 * closed polygons that bound its pixels exactly (outer boundaries and holes). */
#include "contour.h"

#include <string.h>

/* Side s of pixel (r, c): 0 top, 1 right, 2 bottom, 3 left, walked with the
 * pixel on the right (clockwise on screen, y down).  dir: the walking
 * direction; out: towards the outside neighbour; start: first corner. */
static const int dir_x[4] = {1, 0, -1, 0}, dir_y[4] = {0, 1, 0, -1};
static const int out_x[4] = {0, 1, 0, -1}, out_y[4] = {-1, 0, 1, 0};
static const int start_x[4] = {0, 1, 1, 0}, start_y[4] = {0, 0, 1, 1};

size_t segd_contour_scratch_bytes(int rows, int cols)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    size_t n = (size_t)rows * (size_t)cols;
    size_t corners = ((size_t)rows + 1) * ((size_t)cols + 1);
    if (n / (size_t)rows != (size_t)cols || corners > SIZE_MAX / 16 - n)
        return 0;
    size_t marks = (n + 7) & ~(size_t)7;
    return marks + corners * 2 * 2 * sizeof(int32_t);
}

static int inside(const uint8_t *mask, int rows, int cols, int r, int c)
{
    return r >= 0 && c >= 0 && r < rows && c < cols && mask[(size_t)r * cols + c] != 0;
}

int segd_contour_trace(const uint8_t *mask, int rows, int cols, void *scratch,
                       segd_contour_fn fn, void *ctx)
{
    size_t n = (size_t)rows * (size_t)cols;
    uint8_t *done = scratch; /* bit s: side s of the pixel already traced */
    int32_t *xy = (int32_t *)((uint8_t *)scratch + ((n + 7) & ~(size_t)7));
    memset(done, 0, n);
    for (int r0 = 0; r0 < rows; r0++)
        for (int c0 = 0; c0 < cols; c0++) {
            if (!mask[(size_t)r0 * cols + c0])
                continue;
            for (int s0 = 0; s0 < 4; s0++) {
                if (done[(size_t)r0 * cols + c0] & (1u << s0) ||
                    inside(mask, rows, cols, r0 + out_y[s0], c0 + out_x[s0]))
                    continue;
                /* follow the boundary from side s0 of (r0, c0) until it closes */
                size_t npts = 0;
                int r = r0, c = c0, s = s0, prev = -1;
                do {
                    done[(size_t)r * cols + c] |= (uint8_t)(1u << s);
                    if (s != prev) { /* a corner where the direction changes */
                        xy[2 * npts] = c + start_x[s];
                        xy[2 * npts + 1] = r + start_y[s];
                        npts++;
                    }
                    prev = s;
                    int ar = r + dir_y[s], ac = c + dir_x[s]; /* pixel ahead */
                    if (inside(mask, rows, cols, ar, ac)) {
                        if (inside(mask, rows, cols, ar + out_y[s], ac + out_x[s])) {
                            r = ar + out_y[s]; /* turn left onto the diagonal pixel */
                            c = ac + out_x[s];
                            s = (s + 3) & 3;
                        } else { /* straight on along the next pixel */
                            r = ar;
                            c = ac;
                        }
                    } else { /* turn right around this pixel (a diagonal-only
                              * neighbour stays a separate region) */
                        s = (s + 1) & 3;
                    }
                } while (!(r == r0 && c == c0 && s == s0));
                /* the loop may close on a straight run: drop a collinear start */
                if (npts > 2 && prev == s0) {
                    memmove(xy, xy + 2, (npts - 1) * 2 * sizeof *xy);
                    npts--;
                }
                int rc = fn(ctx, xy, npts);
                if (rc)
                    return rc;
            }
        }
    return 0;
}
