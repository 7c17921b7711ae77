/* segd engine: the one API the CLI and the HTTP daemon use to turn a PNG
 * slice into per-organ masks.
 *
 *   segd_model   read-only weights + metadata, loaded once, shared by all
 *                threads (every function taking a const segd_model * is
 *                thread-safe).
 *   segd_worker  one per thread: owns the activation arena, planned and
 *                touched at creation for the largest allowed input, so that
 *                segd_worker_segment_png() allocates nothing for inference.
 *
 * Typical use:
 *   segd_model *m; char err[256];
 *   if (segd_model_load("weights/unet3p-16.safetensors", &m, err, sizeof err)) die(err);
 *   segd_worker *w; segd_worker_create(m, SEGD_DEFAULT_MAX_PIXELS, &w);
 *   segd_result r; segd_worker_segment_png(w, png, len, -1.0f, &r, err, sizeof err);
 *   json_t *doc = segd_result_json(m, &r, "slice_0001");
 *
 * Errors: functions return 0 or a negative errno and, where an err buffer is
 * given, a one-line human-readable message.  Error codes of
 * segd_worker_segment_png() map to HTTP statuses:
 *   -EINVAL    malformed / undecodable PNG            -> 400
 *   -E2BIG     image larger than the worker's limit   -> 413
 *   -EDOM      decodable but unsupported (0 size ...) -> 422
 *   -ENOMEM    out of memory                          -> 503
 */
#ifndef SEGD_ENGINE_H
#define SEGD_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define SEGD_MAX_CLASSES 8
#define SEGD_DEFAULT_MAX_PIXELS (1024u * 1024u)

typedef struct segd_model segd_model;
typedef struct segd_worker segd_worker;

/* How a model runs, chosen by the caller (the library reads no environment:
 * `segd infer` and `segd serve` fill this from their flags and SEGD_*
 * variables).  Zero-initialised means the defaults. */
typedef struct segd_model_options {
    const char *gemm; /* native|openblas|auto; NULL or "": auto */
    int no_avx2;      /* 1: never use the AVX2+FMA kernels (as on a CPU without them;
                         no AVX-512 kernels either) */
    int no_avx512;    /* 1: never use the AVX-512 kernels (as on a CPU without them):
                         the native backend runs its AVX2+FMA kernels */
    const char *precision; /* fp32|bf16|auto of the Winograd GEMMs; NULL or "": fp32.
                              bf16: AVX512-BF16 products, fp32 sums; needs a CPU with
                              AVX512-BF16 and the native backend on its AVX-512 kernels.
                              auto: bf16 where those hold and the file carries a
                              passing measurement of bf16 on its own tensors
                              (metadata bf16_agreement: >= 99.9 % of mask pixels
                              as fp32's, <= 0.002 mean Dice lost), else fp32 */
} segd_model_options;

/* Load and validate a safetensors weights file (every tensor's name, dtype,
 * shape and offsets checked against the architecture in its metadata; BN
 * folded into the convolutions) with the options of opts (NULL: the
 * defaults).  An invalid opts->gemm or opts->precision fails the load with
 * -EINVAL; precision bf16 where it cannot run (no AVX512-BF16, the openblas
 * backend, AVX-512 kernels disabled) with -ENOTSUP.  On error
 * *out is NULL and err names the offending tensor or field. */
int segd_model_load_opts(const char *path, const segd_model_options *opts, segd_model **out,
                         char *err, size_t errlen);
/* segd_model_load_opts() with the default options. */
int segd_model_load(const char *path, segd_model **out, char *err, size_t errlen);
void segd_model_free(segd_model *m); /* NULL is fine */

/* Choose the GEMM backend of m's forward passes by name (src/model/gemm.h):
 * "native", "openblas" or "auto" (native where the CPU has AVX2+FMA and
 * the model's options allow them, else openblas); native runs the widest
 * kernels of segd_model_kernel().  openblas builds row-major copies
 * of the transformed weights here (shared read-only by all workers), and
 * every worker created afterwards calls segd_gemm_blas_serial() (OpenBLAS
 * at 1 thread, process-wide) so that each BLAS call runs on the team thread
 * that makes it.  Call before creating workers of m; not thread-safe.
 * 0, -EINVAL (unknown name), -ENOTSUP (openblas while the model runs in
 * bf16) or -ENOMEM; the backend is unchanged on error. */
int segd_model_set_gemm(segd_model *m, const char *name);
/* The backend in use, resolved: "native" or "openblas".  Static string. */
const char *segd_model_gemm(const segd_model *m);
/* The kernels in use: "native-avx512", "native-avx2", "native-portable"
 * (the native backend on the widest instruction set the CPU has and the
 * options allow) or "openblas".  Static string; also the "kernel" field of
 * segd_model_info_json(). */
const char *segd_model_kernel(const segd_model *m);

/* Precision of the Winograd GEMMs in use, resolved: "fp32" or "bf16".
 * Static string; also the "precision" field of segd_model_info_json(). */
const char *segd_model_precision(const segd_model *m);
/* Why --precision auto chose fp32 or bf16 (a static sentence, e.g. "auto
 * chose fp32: the weights carry no passing bf16_agreement record ..."),
 * for the log; NULL when the precision was named, not auto. */
const char *segd_model_precision_note(const segd_model *m);

const char *segd_model_name(const segd_model *m);    /* e.g. "unet3p-16" */
const char *segd_model_sha256(const segd_model *m);  /* hex of the file */
/* 1 when the tensor data matched the file's tensor_sha256 at load; 0 for
 * a file exported without it (loaded unverified: callers warn). */
int segd_model_data_verified(const segd_model *m);
const char *segd_model_path(const segd_model *m);
int segd_model_width(const segd_model *m);
int segd_model_num_classes(const segd_model *m);
const char *segd_model_class_name(const segd_model *m, int c);
float segd_model_threshold(const segd_model *m);
/* Parse a mask threshold as given on the command line (`segd infer
 * --threshold`) or in a query (`?threshold=`): the one parser of both, so
 * that they cannot disagree.  Accepted: a plain decimal number, optionally
 * with a decimal exponent ("0.5", ".25", "5e-1"), with 0 < t < 1 after
 * rounding to float; no sign, no spaces, no hex ("0x0.8p0"), no inf/nan.
 * 0 (*out set) or -EINVAL (*out unchanged). */
int segd_threshold_parse(const char *s, float *out);
void segd_model_grid(const segd_model *m, int *height, int *width);
/* Conv FLOPs of one forward pass at the model grid (2 * MACs). */
double segd_model_flops(const segd_model *m);
/* Everything in __metadata__ (nested JSON strings parsed) plus sha256,
 * name, path, kernel (segd_model_kernel) and precision
 * (segd_model_precision); a new reference owned by the
 * caller, NULL on OOM. */
json_t *segd_model_info_json(const segd_model *m);

/* Create a worker able to segment images of up to max_pixels pixels (width
 * * height).  All memory is allocated and touched here.  The worker runs
 * the network on the calling thread only. */
int segd_worker_create(const segd_model *m, size_t max_pixels, segd_worker **out);
/* Same, with a team of `threads` threads (the caller plus threads - 1
 * helpers owned by the worker) sharing each forward pass: lower latency
 * for one request at a time.  0, -EINVAL, -ENOMEM, or -errno. */
int segd_worker_create_threads(const segd_model *m, size_t max_pixels, int threads,
                               segd_worker **out);
/* Same, with `batch` slots (1 <= batch <= SEGD_MAX_BATCH): up to that
 * many images staged (segd_worker_stage_*) then run through the network
 * in one pass (segd_worker_run), which reads each conv's weights once per
 * batch instead of once per image.  The arena grows by about 27 MiB per
 * slot beyond the first (width 16, 256 x 256 grid);
 * segd_worker_arena_bytes() tells.  0, -EINVAL, -ENOMEM, or -errno. */
int segd_worker_create_batch(const segd_model *m, size_t max_pixels, int threads, int batch,
                             segd_worker **out);
#define SEGD_MAX_BATCH 64
int segd_worker_threads(const segd_worker *w);
int segd_worker_batch(const segd_worker *w);
/* The model w runs (the one it was created for). */
const segd_model *segd_worker_model(const segd_worker *w);
void segd_worker_free(segd_worker *w); /* NULL is fine */
size_t segd_worker_arena_bytes(const segd_worker *w);
size_t segd_worker_max_pixels(const segd_worker *w);

typedef struct segd_result {
    int width, height;           /* native size of the input image */
    int nclass;
    float presence[SEGD_MAX_CLASSES]; /* CGM presence probabilities */
    size_t pixels[SEGD_MAX_CLASSES];  /* mask pixel counts after gating */
    /* Native-size masks (height x width, row-major, 0/1) and probabilities
     * (after resampling, before thresholding/gating).  They point into the
     * worker's arena: valid until the worker's next call. */
    const uint8_t *mask[SEGD_MAX_CLASSES];
    const float *prob[SEGD_MAX_CLASSES];
    double ms_decode;            /* PNG decode + normalise + resize */
    double ms_infer;             /* network forward */
    double ms_post;              /* resample back, threshold, gate */
    /* The worker's storage for the RLE text of segd_result_json() (rle_cap
     * bytes, enough for any mask of the worker's largest input): valid,
     * like the masks, until the worker's next call. */
    char *rle;
    size_t rle_cap;
} segd_result;

/* Decode a PNG (8/16-bit grey, RGB, palette, with or without alpha) and
 * segment it.  threshold < 0 means the model's default.  A file whose
 * preprocess metadata names tta_gamma (n powers) runs the network n times
 * per image and averages the probabilities (train/preprocess.py
 * grid_probs); ms_infer counts all n passes. */
int segd_worker_segment_png(segd_worker *w, const void *png, size_t len,
                            float threshold, segd_result *res,
                            char *err, size_t errlen);

/* Same from a raw grey image (height x width floats, raw intensities). */
int segd_worker_segment_gray(segd_worker *w, const float *img, int height,
                             int width, float threshold, segd_result *res,
                             char *err, size_t errlen);

/* Batched segmentation (a series, a multipart request), in three steps:
 *   1. segd_worker_stage_png / _gray: decode (PNG), normalise and resize
 *      one image into slot (0 <= slot < segd_worker_batch(w));
 *   2. segd_worker_run: the network on slots 0..n-1 at once;
 *   3. segd_worker_result: slot's masks, as segd_worker_segment_png gives
 *      them (pointing into the arena, valid until the next result or
 *      segment call).
 * Staging a slot again replaces it; a result of a slot not staged and run
 * since is -ENOENT.  The stage calls fail as segd_worker_segment_png and
 * _gray do (slot out of range: -EINVAL); result fails with -ERANGE (err
 * set) where the network's output for that image is not finite.  The
 * masks equal those of segd_worker_segment_png, bit for bit.  ms_infer of
 * each result is its share (1/n) of the batch's forward pass. */
int segd_worker_stage_png(segd_worker *w, int slot, const void *png, size_t len, char *err,
                          size_t errlen);
int segd_worker_stage_gray(segd_worker *w, int slot, const float *img, int height, int width,
                           char *err, size_t errlen);
/* Run slots 0..n-1 (1 <= n <= batch, each staged): 0 or -EINVAL. */
int segd_worker_run(segd_worker *w, int n);
int segd_worker_result(segd_worker *w, int slot, float threshold, segd_result *res, char *err,
                       size_t errlen);

/* The response document shared by `segd infer` and POST /v1/segment
 * (src/api/result_json.c):
 * {id, width, height, masks{organ: rle}, rle{order,base}, model{name,sha256},
 *  pixels{organ: n}, presence{organ: p}, timing_ms{decode, infer, post}}.
 * The RLE is written into r->rle (the worker's): no call runs on the same
 * worker meanwhile.  Returns a new reference, or NULL on OOM. */
json_t *segd_result_json(const segd_model *m, const segd_result *r, const char *id);

#endif
