/* Compute kernels of the UNet3+ forward pass: pure functions over float
 * buffers, output first, shapes last, batch 1, NCHW.  They never allocate;
 * scratch comes from the caller's arena. */
#ifndef SEGD_KERNELS_H
#define SEGD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "model/gemm.h"

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

/* x[i] = relu ? max(x[i] + b, 0) : x[i] + b for i < n.  Cannot fail. */
void segd_bias_act(float *x, int n, float b, int relu);

/* 1x1 convolution plus bias (no activation; plain loops, no BLAS threads).
 *   out: (cout, n)   inp: (cin, n)   wt: (cout, cin)   bias: (cout) */
void segd_conv1x1(float *out, const float *inp, const float *wt, const float *bias,
                  int cin, int cout, int n);

/* Max pooling, kernel = stride = k, no padding, ceil_mode.
 *   out: (c, ceil(h/k), ceil(w/k))   inp: (c, h, w) */
void segd_maxpool(float *out, const float *inp, int c, int h, int w, int k);

/* Bilinear resampling as F.interpolate(mode='bilinear', align_corners=False)
 * without antialiasing; identity copy when the sizes agree.
 *   out: (c, oh, ow)   inp: (c, ih, iw)
 *   tmp: segd_resize_tmp_floats(ow) floats for the fast path (tables and
 *        cached rows), or NULL for the per-pixel path; both give identical
 *        results. */
size_t segd_resize_tmp_floats(int ow);
void segd_resize_bilinear(float *out, const float *inp, int c, int ih, int iw, int oh, int ow,
                          float *tmp);

/* Rows [r0, r1) of segd_maxpool's output.
 *   out: (c, r1-r0, ceil(w/k))   inp: (c, h, w) */
void segd_maxpool_rows(float *out, const float *inp, int c, int h, int w, int k, int r0, int r1);

/* Rows [r0, r1) of segd_resize_bilinear's output.
 *   out: (c, r1-r0, ow)   inp: (c, ih, iw) */
void segd_resize_bilinear_rows(float *out, const float *inp, int c, int ih, int iw, int oh,
                               int ow, int r0, int r1, float *tmp);

/* Sum of the 9 shifted tap maps of a 3x3 convolution, bias, ReLU: rows
 * [r0, r1) of out (cout, h, w), channel stride out_cs, where
 *   z: (cout*9, z_rows, w) holds rows [z_r0, z_r0+z_rows) of every tap map
 *      (channel o*9 + ky*3 + kx), which must cover [r0-1, r1+1) within [0,h);
 *   out[o](y,x) = bias[o] + sum over in-range taps z[o*9+ky*3+kx](y+ky-1, x+kx-1).
 * With z = resize(W_tap x) this is conv3x3(resize(x)): resampling is linear
 * per channel, so it commutes with the per-tap channel mixing. */
void segd_tapsum3x3(float *out, size_t out_cs, const float *z, int cout, int h, int w, int r0,
                    int r1, int z_r0, int z_rows, const float *bias, int relu);

/* Direct 3x3 convolution of a single-channel input (no im2col), bias, ReLU.
 *   out: (cout, h, w), channel stride out_cs   inp: (1, h, w)
 *   wt: (cout, 9)   bias: (cout) */
void segd_conv3x3_c1(float *out, size_t out_cs, const float *inp, const float *wt,
                     const float *bias, int cout, int h, int w, int relu);

/* ---- Winograd F(4x4, 3x3), padding 1, stride 1 ------------------------
 * Weights are transformed once (segd_wino_weights) into
 *   u: (36, cout_pad/MR, cin, MR), cout_pad = cout rounded up to MR.
 * segd_wino_band computes output rows [4*ty0, min(4*ty1, h)) of a (cout, h, w)
 * map (channel stride out_cs) plus bias and optional ReLU, reading input
 * rows [in_r0, in_r1) of each channel c at inp + c*in_cs + (y-in_r0)*w; it
 * needs rows [4*ty0-1, 4*ty1+1) clipped to [0, h).  Only output channels
 * [oc0, oc1) are computed (oc0 a multiple of SEGD_WINO_MR, oc1 <= cout):
 * parts of one band's channels can run on different threads, each with
 * its own scratch (the input transform is repeated; it is cheap where
 * bands are few: the deep levels).  scratch: 32-byte
 * aligned, segd_wino_band_floats(cin, cout, ty1 - ty0, w) floats (enough
 * for every isa).
 * isa: the native kernels (SEGD_ISA_*, model/gemm.h): the AVX-512
 * micro-kernel with the AVX2 transforms, the AVX2+FMA ones, or portable C;
 * at most segd_cpu_isa() (model/cpu.h). */
/* the micro-kernel's row blocking (model/gemm.h): the packing of u */
#define SEGD_WINO_MR SEGD_GEMM_MR
int segd_wino_cout_pad(int cout);
size_t segd_wino_weights_floats(int cin, int cout);
void segd_wino_weights(float *u, const float *wt, int cin, int cout);
size_t segd_wino_band_floats(int cin, int cout, int rows, int w);
/* Tiles per tile row in a band's V and M at width w: (w + 3) / 4 padded
 * to the input transform's group of tiles for isa (8; 16 for AVX-512
 * where a row has more than 8 tiles),
 * so that a group never straddles a micro-kernel's nr lanes nor runs into
 * the next tile row.  A band of r tile rows multiplies r times this many
 * columns, rounded up to nr. */
int segd_wino_tiles_x(int w, int isa);
void segd_wino_band(float *out, size_t out_cs, const float *inp, size_t in_cs, int in_r0,
                    int in_r1, int h, int w, int ty0, int ty1, const float *u,
                    const float *bias, int cin, int cout, int oc0, int oc1, int relu,
                    float *scratch, int isa);

/* segd_wino_band with the 36 GEMMs on segd_gemm_blas:
 *   [cout x cin] x [cin x tiles of the band] per Winograd point, weights
 *   ur: (36, cout, cin) row-major, from segd_wino_weights_rows (same values
 *   as segd_wino_weights).  isa picks the transforms only.  Same scratch
 *   (segd_wino_band_floats) and results to rounding. */
void segd_wino_weights_rows(float *ur, const float *wt, int cin, int cout);
void segd_wino_band_blas(float *out, size_t out_cs, const float *inp, size_t in_cs, int in_r0,
                         int in_r1, int h, int w, int ty0, int ty1, const float *ur,
                         const float *bias, int cin, int cout, int oc0, int oc1, int relu,
                         float *scratch, int isa);

/* segd_wino_band with bf16 GEMMs (AVX512-BF16; only where
 * segd_cpu_has_avx512_bf16(), at SEGD_ISA_AVX512): the input transform
 * in fp32, each V panel then rounded to bf16 pairs in place, products
 * summed in fp32, output transform in fp32.  Weights
 *   ub: (36, cout_pad/MR, ceil(cin/2), MR, 2) uint16 bf16, from
 *   segd_wino_weights_bf16 (u of segd_wino_weights rounded to nearest even,
 *   an odd cin's last pair padded with 0).  Same scratch
 *   (segd_wino_band_floats); results within bf16 rounding of fp32. */
size_t segd_wino_weights_bf16_elems(int cin, int cout); /* uint16 of ub */
void segd_wino_weights_bf16(uint16_t *ub, const float *u, int cin, int cout);
void segd_wino_band_bf16(float *out, size_t out_cs, const float *inp, size_t in_cs, int in_r0,
                         int in_r1, int h, int w, int ty0, int ty1, const uint16_t *ub,
                         const float *bias, int cin, int cout, int oc0, int oc1, int relu,
                         float *scratch);

/* The input transform of segd_wino_band at SEGD_ISA_AVX512
 * (winograd_avx512.c; only segd_wino_band calls it): channel c of plane
 * (rows [in_r0, ..) of an h x w map), tile rows [ty0, ty1), txp tiles per
 * row (a multiple of 16), into V at xs per Winograd point, cs per channel,
 * bs per block of nr tiles; buf: 6 * (4 * txp + 40) floats. */
void segd_wino_in_avx512(float *V, size_t xs, size_t cs, size_t bs, int nr, int c,
                         const float *plane, int in_r0, int h, int w, int ty0, int ty1, int txp,
                         float *buf);

/* In-place logistic sigmoid over n floats. */
void segd_sigmoid(float *x, size_t n);

#endif
