/* Compute kernels of the UNet3+ forward pass: pure functions over float
 * buffers, output first, shapes last, batch 1, NCHW.  They never allocate;
 * scratch comes from the caller's arena. */
#ifndef SEGD_KERNELS_H
#define SEGD_KERNELS_H

#include <stddef.h>

/* Floats of im2col scratch that segd_conv3x3 needs to process at least one
 * output row of a (cin, h, w) input. */
size_t segd_conv3x3_min_col(int cin, int w);

/* 3x3 convolution, padding 1, stride 1, then bias and optional ReLU.
 *   out:  (cout, h, w) with channel stride out_cs >= h*w (so a branch can
 *         write into its slice of a concatenation buffer)
 *   inp:  (cin, h, w) contiguous
 *   wt:   (cout, cin*9)   row-major [co][ci][ky][kx]
 *   bias: (cout)
 *   col:  scratch of col_floats >= segd_conv3x3_min_col(cin, w); output rows
 *         are processed in tiles that fit it. */
void segd_conv3x3(float *out, size_t out_cs, const float *inp, const float *wt,
                  const float *bias, int cin, int cout, int h, int w, int relu,
                  float *col, size_t col_floats);

/* 1x1 convolution plus bias (no activation).
 *   out: (cout, n)   inp: (cin, n)   wt: (cout, cin)   bias: (cout) */
void segd_conv1x1(float *out, const float *inp, const float *wt, const float *bias,
                  int cin, int cout, int n);

/* Max pooling, kernel = stride = k, no padding, ceil_mode.
 *   out: (c, ceil(h/k), ceil(w/k))   inp: (c, h, w) */
void segd_maxpool(float *out, const float *inp, int c, int h, int w, int k);

/* Bilinear resampling as F.interpolate(mode='bilinear', align_corners=False)
 * without antialiasing; identity copy when the sizes agree.
 *   out: (c, oh, ow)   inp: (c, ih, iw) */
void segd_resize_bilinear(float *out, const float *inp, int c, int ih, int iw, int oh, int ow);

/* In-place logistic sigmoid over n floats. */
void segd_sigmoid(float *x, size_t n);

#endif
