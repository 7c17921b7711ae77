/* The UNet3+ graph of train/model.py (eval mode): tensor names and shapes of
 * the weights-file contract, BN folding at load, the activation-arena plan
 * and the forward pass wiring the kernels of kernels.h. */
#ifndef SEGD_UNET3P_H
#define SEGD_UNET3P_H

#include <stddef.h>
#include <stdint.h>

#include "model/gemm.h"
#include "io/weights.h"

#define SEGD_UNET3P_LEVELS 5

typedef struct segd_conv {
    int cin, cout, k;   /* k = 3 (pad 1) or 1 */
    int bn, relu;       /* followed by (folded) BN, ReLU */
    int resampled;      /* decoder branch from a coarser level (input resized) */
    const float *w;     /* (cout, cin*k*k), BN folded in */
    const float *b;     /* (cout) */
    const float *u;     /* Winograd weights (segd_wino_weights), NULL if unused */
    const float *wz;    /* resampled branches: per-tap weights (cout*9, cin) packed
                           by segd_gemm_pack_a layout, NULL otherwise */
    const float *ur;    /* OpenBLAS backend: Winograd weights (36, cout, cin) row-major */
    const float *wzr;   /* OpenBLAS backend: per-tap weights (cout*9, cin) row-major */
    const uint16_t *ub; /* bf16 precision: Winograd weights (segd_wino_weights_bf16) */
} segd_conv;

typedef struct segd_team segd_team; /* fork-join threads of one worker */

typedef struct segd_unet3p {
    int width, in_ch, nclass;
    segd_conv enc[SEGD_UNET3P_LEVELS][2]; /* enc.i.{0,1} */
    segd_conv branch[4][5];               /* dec.(d-1).branch.(j-1) */
    segd_conv fuse[4];                    /* dec.(d-1).fuse */
    segd_conv head;                       /* 5w -> nclass, 3x3, no BN/ReLU */
    segd_conv cls;                        /* 16w -> nclass, 1x1 */
    float *block;                         /* all folded weights, one malloc */
    int isa;                              /* native kernels: SEGD_ISA_* (model/gemm.h) */
    segd_gemm gemm;                       /* resolved: NATIVE or OPENBLAS */
    float *blas_block;                    /* ur/wzr of every conv (OPENBLAS), or NULL */
    int bf16;                             /* Winograd GEMMs in bf16 (segd_unet3p_set_bf16) */
    uint16_t *bf16_block;                 /* ub of every conv (bf16), or NULL */
} segd_unet3p;

/* Check that wt holds exactly the tensors of UNet3Plus(width, in_ch, nclass)
 * (no more, no fewer, every shape right), fold BN (eps) and precompute the
 * Winograd weights into one malloc'd block.  isa: the native kernels to
 * use, at most segd_cpu_isa() (model/cpu.h).  The GEMM backend
 * is SEGD_GEMM_AUTO (segd_unet3p_set_gemm).  On error net is left empty and
 * err names the tensor. */
int segd_unet3p_load(segd_unet3p *net, const segd_weights *wt, int width, int in_ch,
                     int nclass, float eps, int isa, char *err, size_t errlen);
void segd_unet3p_finalize(segd_unet3p *net);

/* Select the GEMM backend (AUTO resolved with net->isa, so a load with the
 * portable isa stands for a CPU without AVX2) and build the weights it needs: OPENBLAS
 * adds a second block of row-major weights (freed again by a switch back to
 * NATIVE).  The arena size does not depend on the backend.  Not
 * thread-safe: no forward pass may run meanwhile.  0, -ENOTSUP (OPENBLAS
 * while net->bf16: bf16 has only native kernels) or -ENOMEM (backend
 * unchanged). */
int segd_unet3p_set_gemm(segd_unet3p *net, segd_gemm g);

/* Run the Winograd GEMMs in bf16 (on = 1) or fp32 (on = 0), building the
 * bf16 weights (freed again by a switch back to fp32).  bf16 needs the
 * native backend at SEGD_ISA_AVX512 and segd_cpu_has_avx512_bf16(); the
 * caller checks (model.c, with the messages).  The arena size does not
 * depend on it.  Not thread-safe.  0, -ENOTSUP (net->gemm is OPENBLAS or
 * isa below AVX-512) or -ENOMEM (unchanged on error). */
int segd_unet3p_set_bf16(segd_unet3p *net, int on);

/* Floats of activation arena a forward pass of up to `batch` images at
 * h x w with nthreads threads needs.  Most maps have one copy per image
 * (about 27 MiB per image for width 16 at 256 x 256), the finest decoder
 * level's buffers one in all. */
size_t segd_unet3p_arena_floats(const segd_unet3p *net, int h, int w, int nthreads, int batch);

/* Conv FLOPs (2 * MACs) of one forward pass at h x w. */
double segd_unet3p_flops(const segd_unet3p *net, int h, int w);

/* Convs of the net, in tensor-file order: enc.0.0 .. enc.4.1 (0-9),
 * dec.D.branch.0-4 and dec.D.fuse (10 + 6 D + 0..5), head (34), cls (35). */
#define SEGD_UNET3P_NCONV 36
/* Conv i (0 <= i < SEGD_UNET3P_NCONV); *level: the level (1-5) of its
 * output; *gemm_level: the level its GEMMs run at (a resampled branch's
 * coarser source, else *level). */
const segd_conv *segd_unet3p_conv(const segd_unet3p *net, int i, int *level, int *gemm_level);
/* The tensor-name prefix of conv i into buf; returns buf. */
const char *segd_unet3p_conv_name(int i, char *buf, size_t len);

/* Forward pass of n images at once (1 <= n <= the arena's batch).  Every
 * conv of the encoder and of decoder levels 4-2 runs over all n images
 * before the next conv, so its weights are read once per batch and the
 * team's tasks span the images; decoder level 1 and the head run image by
 * image.  Results equal n single-image passes bit for bit.
 *   logits:   (n, nclass, h, w) segmentation logits
 *   presence: (n, nclass) presence logits (max over the bottleneck of cls)
 *   x:        (n, in_ch, h, w) normalised input
 *   arena:    segd_unet3p_arena_floats(net, h, w, segd_team_size(team), batch)
 *             floats (batch >= n), 64-byte aligned
 *   team:     threads to run on (NULL: the calling thread only)
 *   prof:     NULL, or SEGD_UNET3P_NCONV accumulators: adds each conv's
 *             wall time in ms, over all n images (cls: the presence head) */
void segd_unet3p_forward(const segd_unet3p *net, float *logits, float *presence,
                         const float *x, int n, int h, int w, float *arena, segd_team *team,
                         double *prof);

#endif
