/* `segd infer`: segment PNG slices and DICOM images from the command line,
 * one compact JSON document per line on stdout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "segd/engine.h"
#include "model/cpu.h"
#include "model/gemm.h"
#include "http/http.h"
#ifdef SEGD_HAVE_DICOM
#include "api/dicom_json.h"
#include "segd/dicom.h"
#endif

static void usage(FILE *f)
{
    fputs("usage: segd infer [--weights FILE] [--threshold T] [--max-pixels N] [--threads N]\n"
          "                  [--gemm native|openblas|auto] [--precision fp32|bf16|auto]\n"
          "                  SLICE.png|IMAGE.dcm|FOLDER...\n"
          "Segments each slice (each file of a FOLDER, in name order, not recursing)\n"
          "and prints one JSON document per line.  A DICOM file\n"
          "(Part 10, one greyscale frame) is read after Rescale Slope/Intercept and\n"
          "its document also carries the instance's UIDs and PixelSpacing.\n"
          "--threads: threads sharing each forward pass (default: online CPUs, at most 8).\n"
          "--gemm: GEMM backend (default: $SEGD_GEMM, else auto = native with AVX2+FMA,\n"
          "        else openblas); native runs AVX-512 kernels where the CPU has them\n"
          "        ($SEGD_NO_AVX512=1: the AVX2 ones).\n"
          "--precision: of the Winograd GEMMs (default: $SEGD_PRECISION, else fp32); bf16\n"
          "        needs AVX512-BF16 and the native AVX-512 kernels; auto = bf16 there if\n"
          "        the weights carry a passing bf16_agreement record, else fp32 (a line\n"
          "        on stderr says which and why).\n"
          "Default weights: $SEGD_WEIGHTS, else in weights/ of the working directory, of the\n"
          "checkout this executable was built in, or of the installed data directory\n"
          "(" SEGD_DATADIR "): the file " SEGD_DEFAULT_WEIGHTS " there, else the single\n"
          "*.safetensors.\n",
          f);
}

/* Whole file into a malloc'd buffer; 0 or -errno. */
static int read_file(const char *path, unsigned char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int rc = 0;
    unsigned char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto out;
    }
    buf = malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        rc = -EIO;
        goto out;
    }
    *data = buf;
    *len = (size_t)st.st_size;
    buf = NULL;
out:
    free(buf);
    fclose(f);
    return rc;
}

/* The options of `segd infer`, and the index of its first slice. */
typedef struct infer_args {
    const char *weights, *gemm, *precision; /* NULL: the default */
    float threshold;            /* < 0: the model's */
    size_t max_pixels;
    int threads;
    int first;
} infer_args;

/* Parse argv into a.  -1 to go on, else the exit status (--help: 0, a
 * usage error: 2). */
static int parse_args(int argc, char **argv, infer_args *a)
{
    int ncpu = segd_cpu_count();
    *a = (infer_args){.threshold = -1.0f, .max_pixels = SEGD_DEFAULT_MAX_PIXELS,
                      .threads = ncpu > 8 ? 8 : ncpu, .first = argc};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(o, "--weights") == 0 && i + 1 < argc) {
            a->weights = argv[++i];
        } else if (strcmp(o, "--threshold") == 0 && i + 1 < argc) {
            if (segd_threshold_parse(argv[++i], &a->threshold)) {
                fprintf(stderr, "segd infer: --threshold must be a decimal number with 0 < t < 1\n");
                return 2;
            }
        } else if (strcmp(o, "--max-pixels") == 0 && i + 1 < argc) {
            char *end;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (*end || v == 0 || v > (1ull << 28)) {
                fprintf(stderr, "segd infer: --max-pixels must be in [1, 2^28]\n");
                return 2;
            }
            a->max_pixels = (size_t)v;
        } else if (strcmp(o, "--threads") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 256) {
                fprintf(stderr, "segd infer: --threads must be in [1, 256]\n");
                return 2;
            }
            a->threads = (int)v;
        } else if (strcmp(o, "--gemm") == 0 && i + 1 < argc) {
            segd_gemm g;
            a->gemm = argv[++i];
            if (segd_gemm_parse(a->gemm, &g)) {
                fprintf(stderr, "segd infer: --gemm must be native, openblas or auto\n");
                return 2;
            }
        } else if (strcmp(o, "--precision") == 0 && i + 1 < argc) {
            segd_precision p;
            a->precision = argv[++i];
            if (segd_precision_parse(a->precision, &p)) {
                fprintf(stderr, "segd infer: --precision must be fp32, bf16 or auto\n");
                return 2;
            }
        } else if (strcmp(o, "--") == 0) {
            a->first = i + 1;
            break;
        } else if (o[0] == '-' && o[1]) {
            fprintf(stderr, "segd infer: unknown or incomplete option '%s'\n", o);
            usage(stderr);
            return 2;
        } else {
            a->first = i;
            break;
        }
    }
    if (a->first >= argc) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* 1 when data is a DICOM Part-10 file: "DICM" after the 128-byte preamble
 * (PS3.10 7.1). */
static int is_dicom(const unsigned char *data, size_t len)
{
    return len >= 132 && memcmp(data + 128, "DICM", 4) == 0;
}

/* Segment a DICOM image: its pixels (after Rescale Slope/Intercept,
 * MONOCHROME1 inverted) go through the pipeline a PNG's grey values take.
 * *dicom receives the identity of the instance for the document (NULL
 * with no DICOM support).  0 or a negative errno with err set. */
static int segment_dicom(segd_worker *w, const unsigned char *data, size_t len, size_t max_pixels,
                         float threshold, segd_result *res, json_t **dicom, char *err,
                         size_t errlen)
{
    *dicom = NULL;
#ifdef SEGD_HAVE_DICOM
    segd_dicom_image *im = NULL;
    int rc = segd_dicom_read(data, len, max_pixels, &im, err, errlen);
    if (rc)
        return rc;
    rc = segd_worker_segment_gray(w, im->pixels, im->rows, im->cols, threshold, res, err, errlen);
    if (rc == 0) {
        *dicom = segd_dicom_image_json(im);
        if (!*dicom) {
            snprintf(err, errlen, "out of memory");
            rc = -ENOMEM;
        }
    }
    segd_dicom_image_free(im);
    return rc;
#else
    (void)w, (void)data, (void)len, (void)max_pixels, (void)threshold, (void)res;
    snprintf(err, errlen, "a DICOM file, and this segd was built without DICOM support "
                          "(DCMTK: apt-get install g++ libdcmtk-dev, then rebuild)");
    return -ENOTSUP;
#endif
}

/* Segment the file at path and print its document as one line.  0, or 1
 * with the reason on stderr. */
static int infer_one(const segd_model *m, segd_worker *w, const char *path, float threshold,
                     size_t max_pixels)
{
    unsigned char *data;
    size_t len;
    segd_result res;
    json_t *dicom = NULL;
    char id[256], err[512];
    int rc = read_file(path, &data, &len);
    if (rc) {
        fprintf(stderr, "segd infer: %s: %s\n", path, strerror(-rc));
        return 1;
    }
    if (is_dicom(data, len))
        rc = segment_dicom(w, data, len, max_pixels, threshold, &res, &dicom, err, sizeof err);
    else
        rc = segd_worker_segment_png(w, data, len, threshold, &res, err, sizeof err);
    free(data);
    if (rc) {
        fprintf(stderr, "segd infer: %s: %s\n", path, err);
        return 1;
    }
    /* the server's rule for multipart file names: the stem, bytes
     * outside [A-Za-z0-9._-] (non-UTF-8 ones included) replaced by '_',
     * so that the id is always valid JSON text */
    segd_http_id_from_filename(path, strlen(path), id, sizeof id);
    json_t *doc = segd_result_json(m, &res, id);
    if (doc && dicom && json_object_set(doc, "dicom", dicom)) {
        json_decref(doc);
        doc = NULL;
    }
    json_decref(dicom);
    char *s = doc ? segd_json_text(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!s) {
        fprintf(stderr, "segd infer: %s: out of memory\n", path);
        return 1;
    }
    rc = puts(s) < 0;
    free(s);
    return rc;
}

/* Regular files of a folder, not hidden ones (no recursion). */
static int visible_file(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

/* 1 when the file starts like a PNG (its signature) or a DICOM Part-10
 * file ("DICM" after the 128-byte preamble): what a folder is read for. */
static int looks_like_image(const char *path)
{
    unsigned char head[132];
    FILE *f = fopen(path, "rb");
    if (!f)
        return 1; /* unreadable: infer_one says why */
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return (n >= 8 && memcmp(head, png, 8) == 0) || (n == 132 && memcmp(head + 128, "DICM", 4) == 0);
}

/* A file, or each PNG or DICOM file of a folder in name order (a DICOM
 * series as a PACS exports it: one instance per file, often without an
 * extension; other files, e.g. a DICOMDIR or notes, are skipped with a
 * line on stderr).  0, or 1 when any failed. */
static int infer_path(const segd_model *m, segd_worker *w, const char *path, float threshold,
                      size_t max_pixels)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return infer_one(m, w, path, threshold, max_pixels);
    struct dirent **names = NULL;
    int n = scandir(path, &names, visible_file, alphasort);
    if (n < 0) {
        fprintf(stderr, "segd infer: %s: %s\n", path, strerror(errno));
        return 1;
    }
    int status = 0;
    for (int i = 0; i < n; i++) {
        char full[4096];
        struct stat fst;
        if ((size_t)snprintf(full, sizeof full, "%s/%s", path, names[i]->d_name) >= sizeof full) {
            fprintf(stderr, "segd infer: %s/%s: path too long\n", path, names[i]->d_name);
            status = 1;
        } else if (stat(full, &fst) == 0 && S_ISREG(fst.st_mode)) {
            if (looks_like_image(full))
                status |= infer_one(m, w, full, threshold, max_pixels);
            else
                fprintf(stderr, "segd infer: skipped %s: neither PNG nor DICOM\n", full);
        }
        free(names[i]);
    }
    free(names);
    return status;
}

int segd_cli_infer(int argc, char **argv)
{
    infer_args a;
    char wbuf[4096], err[512];
    int status = parse_args(argc, argv, &a);
    if (status >= 0)
        return status;
    status = 0;
    if (!a.weights) {
        if (segd_cli_default_weights(wbuf, sizeof wbuf)) {
            fprintf(stderr, "segd infer: no weights: pass --weights FILE or set $SEGD_WEIGHTS "
                            "(weights/ must hold exactly one *.safetensors)\n");
            return 1;
        }
        a.weights = wbuf;
    }
    segd_model *m = NULL;
    segd_worker *w = NULL;
    segd_model_options opts;
    if (segd_cli_model_options(&opts, a.gemm, a.precision, err, sizeof err) ||
        segd_model_load_opts(a.weights, &opts, &m, err, sizeof err)) {
        fprintf(stderr, "segd infer: %s\n", err);
        return 1;
    }
    if (!segd_model_data_verified(m))
        fprintf(stderr, "segd infer: warning: weights '%s' carry no tensor_sha256 (exported before "
                        "it existed): tensor data not verified\n", a.weights);
    if (segd_model_precision_note(m))
        fprintf(stderr, "segd infer: precision %s\n", segd_model_precision_note(m));
    int rc = segd_worker_create_threads(m, a.max_pixels, a.threads, &w);
    if (rc) {
        fprintf(stderr, "segd infer: cannot create worker: %s\n", strerror(-rc));
        status = 1;
        goto out;
    }
    for (int i = a.first; i < argc; i++)
        status |= infer_path(m, w, argv[i], a.threshold, a.max_pixels);
    if (fflush(stdout) != 0)
        status = 1;
out:
    segd_worker_free(w);
    segd_model_free(m);
    return status;
}
