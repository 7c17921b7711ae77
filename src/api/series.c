/* Series post-processing (include/segd/series.h): 3D connected-component
 * clean-up per organ, organ volumes, and Kaggle slice names. */
#include "segd/series.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Voxel value while a component is walked: seen, not yet kept or dropped. */
#define SEEN 2

/* The voxel at (slice k, row r, column c) of organ o. */
static inline uint8_t *voxel(uint8_t *const *masks, size_t plane, size_t o, size_t k, size_t r,
                             size_t c, size_t cols)
{
    return &masks[k][o * plane + r * cols + c];
}

int segd_series_cleanup(uint8_t *const *masks, size_t n, int rows, int cols, int norgans,
                        const double voxel_mm[3], double min_volume_ml, size_t *removed,
                        size_t *removed_voxels)
{
    if (n < 1 || rows < 1 || cols < 1 || norgans < 1)
        return -EINVAL;
    bool on = min_volume_ml > 0;
    if (on && (!voxel_mm || !(voxel_mm[0] > 0) || !(voxel_mm[1] > 0) || !(voxel_mm[2] > 0)))
        return -EINVAL;
    size_t plane = (size_t)rows * (size_t)cols;
    for (int o = 0; o < norgans; o++) {
        if (removed)
            removed[o] = 0;
        if (removed_voxels)
            removed_voxels[o] = 0;
    }
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < plane * (size_t)norgans; i++)
            masks[k][i] = masks[k][i] != 0;
    if (!on)
        return 0;

    /* The component's voxels, as (k * rows + r) * cols + c: the walk's
     * queue and, once it ends, the list of what to drop. */
    double voxel_ml = voxel_mm[0] * voxel_mm[1] * voxel_mm[2] / 1000.0;
    size_t *list = NULL, cap = 0;
    int rc = 0;
    for (size_t o = 0; o < (size_t)norgans; o++) {
        for (size_t k0 = 0; k0 < n; k0++) {
            for (size_t i0 = 0; i0 < plane; i0++) {
                if (masks[k0][o * plane + i0] != 1)
                    continue;
                size_t cnt = 0, head = 0;
                if (cap == 0) {
                    cap = 4096;
                    list = malloc(cap * sizeof *list);
                    if (!list) {
                        rc = -ENOMEM;
                        goto out;
                    }
                }
                list[cnt++] = k0 * plane + i0;
                masks[k0][o * plane + i0] = SEEN;
                while (head < cnt) {
                    size_t idx = list[head++];
                    size_t k = idx / plane, r = idx % plane / (size_t)cols, c = idx % (size_t)cols;
                    for (int dk = -1; dk <= 1; dk++) {
                        if ((dk < 0 && k == 0) || (dk > 0 && k + 1 == n))
                            continue;
                        for (int dr = -1; dr <= 1; dr++) {
                            if ((dr < 0 && r == 0) || (dr > 0 && r + 1 == (size_t)rows))
                                continue;
                            for (int dc = -1; dc <= 1; dc++) {
                                if ((dc < 0 && c == 0) || (dc > 0 && c + 1 == (size_t)cols))
                                    continue;
                                size_t kk = k + (size_t)dk, rr = r + (size_t)dr, cc = c + (size_t)dc;
                                uint8_t *v = voxel(masks, plane, o, kk, rr, cc, (size_t)cols);
                                if (*v != 1)
                                    continue;
                                if (cnt == cap) {
                                    size_t *grown = realloc(list, 2 * cap * sizeof *list);
                                    if (!grown) {
                                        rc = -ENOMEM;
                                        goto out;
                                    }
                                    list = grown;
                                    cap *= 2;
                                }
                                *v = SEEN;
                                list[cnt++] = (kk * (size_t)rows + rr) * (size_t)cols + cc;
                            }
                        }
                    }
                }
                if ((double)cnt * voxel_ml < min_volume_ml) {
                    for (size_t j = 0; j < cnt; j++)
                        masks[list[j] / plane][o * plane + list[j] % plane] = 0;
                    if (removed)
                        removed[o]++;
                    if (removed_voxels)
                        removed_voxels[o] += cnt;
                }
            }
        }
    }
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; i < plane * (size_t)norgans; i++)
            masks[k][i] = masks[k][i] != 0;
out:
    free(list);
    return rc;
}

void segd_series_volumes_ml(const uint8_t *const *masks, size_t n, int rows, int cols,
                            int norgans, const double voxel_mm[3], double *ml)
{
    size_t plane = (size_t)rows * (size_t)cols;
    double voxel_ml = voxel_mm[0] * voxel_mm[1] * voxel_mm[2] / 1000.0;
    for (int o = 0; o < norgans; o++) {
        size_t count = 0;
        for (size_t k = 0; k < n; k++)
            for (size_t i = 0; i < plane; i++)
                count += masks[k][(size_t)o * plane + i] != 0;
        ml[o] = (double)count * voxel_ml;
    }
}

/* Digits at *p into *out (at most 9); advances *p.  0 or -EINVAL. */
static int take_int(const char **p, int *out)
{
    const char *s = *p;
    long v = 0;
    int nd = 0;
    while (isdigit((unsigned char)*s) && nd < 9) {
        v = v * 10 + (*s++ - '0');
        nd++;
    }
    if (nd == 0 || isdigit((unsigned char)*s))
        return -EINVAL;
    *out = (int)v;
    *p = s;
    return 0;
}

/* A spacing "D+[.D+]" at *p, > 0; advances *p.  0 or -EINVAL. */
static int take_spacing(const char **p, double *out)
{
    const char *s = *p;
    int ip;
    if (take_int(&s, &ip))
        return -EINVAL;
    double v = ip, scale = 0.1;
    if (*s == '.') {
        s++;
        if (!isdigit((unsigned char)*s))
            return -EINVAL;
        for (int nd = 0; isdigit((unsigned char)*s); s++, nd++) {
            if (nd >= 9)
                return -EINVAL;
            v += (*s - '0') * scale;
            scale /= 10;
        }
    }
    if (!(v > 0))
        return -EINVAL;
    *out = v;
    *p = s;
    return 0;
}

int segd_series_kaggle_name(const char *name, int *slice, int *width, int *height,
                            double *spacing_x, double *spacing_y)
{
    /* the last "slice_" of the name: a folder may be called anything */
    const char *p = NULL;
    for (const char *q = name; (q = strstr(q, "slice_")) != NULL; q++)
        p = q;
    if (!p)
        return -EINVAL;
    p += strlen("slice_");
    int s, w, h;
    double sx, sy;
    if (take_int(&p, &s) || *p++ != '_' || take_int(&p, &w) || *p++ != '_' ||
        take_int(&p, &h) || *p++ != '_' || take_spacing(&p, &sx) || *p++ != '_' ||
        take_spacing(&p, &sy))
        return -EINVAL;
    if (*p && strcmp(p, ".png") != 0 && strcmp(p, ".PNG") != 0)
        return -EINVAL;
    if (w < 1 || h < 1)
        return -EINVAL;
    *slice = s;
    *width = w;
    *height = h;
    *spacing_x = sx;
    *spacing_y = sy;
    return 0;
}
