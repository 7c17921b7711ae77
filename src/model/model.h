/* The model and worker structs, private to src/model: model.c loads the
 * first, worker.c sizes the second, pipeline.c runs one over the other.
 * Everything outside src/model sees them only through segd/engine.h. */
#ifndef SEGD_MODEL_MODEL_H
#define SEGD_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "segd/engine.h"
#include "model/unet3p.h"
#include "model/team.h"

/* At most this many test-time powers (preprocess.tta_gamma) per file. */
#define SEGD_MAX_TTA 8

/* At most this many reference quantiles (preprocess.reference_quantiles):
 * one per 1/256 of the mid-rank range; training writes 101. */
#define SEGD_MAX_REF_QUANTILES 257

/* preprocess.normalisation (train/preprocess.py, pipeline.c). */
enum segd_norm {
    SEGD_NORM_MINMAX,     /* (v - min) / (max - min) */
    SEGD_NORM_PERCENTILE, /* clipped at two order statistics, then linear */
    SEGD_NORM_HISTOGRAM,  /* "histogram_match": mid-rank -> reference quantiles */
};

/* Read-only after segd_model_load_opts() (segd_model_set_gemm aside):
 * shared by every worker. */
struct segd_model {
    segd_unet3p net;
    char *path;
    char name[64];
    char sha256[65];
    int data_verified;  /* tensor_sha256 checked at load (0: old file without it) */
    int grid_h, grid_w;
    int nclass;
    char classes[SEGD_MAX_CLASSES][32];
    float threshold, presence_threshold, bn_eps;
    enum segd_norm norm;
    const char *precision_note;  /* static: why --precision auto chose what it did; NULL else */
    double pct_lo, pct_hi;       /* percentiles, 0 <= lo < hi <= 100 */
    int ref_n;                   /* histogram_match: 2..SEGD_MAX_REF_QUANTILES values, */
    double ref_q[SEGD_MAX_REF_QUANTILES]; /* non-decreasing, at mid-ranks j / (ref_n - 1) */
    /* preprocess.tta_gamma: the network runs once per power on x ** gamma
     * (x the normalised grid image) and the sigmoids are averaged; a file
     * without it has tta_n 1, gamma 1 (pipeline.c). */
    int tta_n;
    float tta_gamma[SEGD_MAX_TTA];
    json_t *info; /* metadata with nested JSON parsed, + sha256/name/path */
};

/* A staged image (segd_worker_stage_*): its native size, presence logits
 * and the time its steps took. */
typedef struct segd_slot {
    int height, width;
    int staged, ran;
    float presence[SEGD_MAX_TTA][SEGD_MAX_CLASSES]; /* presence logits, per tta power */
    double ms_decode, ms_infer;
} segd_slot;

/* One per thread: every buffer points into one arena (allocated and
 * touched at creation), so that a request allocates nothing in here. */
struct segd_worker {
    const segd_model *m;
    size_t max_pixels;
    unsigned char *arena;
    size_t arena_bytes;
    float *img;       /* (max_pixels) native grey, normalised in place */
    float *prob;      /* (nclass, max_pixels); also the PNG decode scratch */
    size_t prob_bytes;
    uint8_t *mask;    /* (nclass, max_pixels) */
    float *grid;      /* (tta_n, batch, 1, gh, gw) model inputs: power j of slot i at
                         [j][i], so that each power's batch is contiguous */
    float *logits;    /* (tta_n, batch, nclass, gh, gw), the same order */
    float *net_arena; /* segd_unet3p_arena_floats(..., batch) */
    int batch;        /* slots: images one forward pass runs at once */
    segd_slot *slots; /* (batch) what each staged image was */
    segd_team *team;  /* NULL: single-threaded */
    int threads;
    /* The response's RLE text (segd_result.rle): malloc'd apart from the
     * arena and not touched at creation, since its worst case
     * (segd_rle_max_len(max_pixels), ~8 MB at the default limit) is far
     * beyond what real masks use and would only add resident memory. */
    char *rle;
    size_t rle_cap;
};

#endif
