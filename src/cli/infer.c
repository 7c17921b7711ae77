/* `segd infer`: segment PNG slices from the command line, one compact JSON
 * document per line on stdout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "segd/engine.h"
#include "model/cpu.h"
#include "model/gemm.h"
#include "http/http.h"

static void usage(FILE *f)
{
    fputs("usage: segd infer [--weights FILE] [--threshold T] [--max-pixels N] [--threads N]\n"
          "                  [--gemm native|openblas|auto] SLICE.png...\n"
          "Segments each slice and prints one JSON document per line.\n"
          "--threads: threads sharing each forward pass (default: online CPUs, at most 8).\n"
          "--gemm: GEMM backend (default: $SEGD_GEMM, else auto = native with AVX2+FMA,\n"
          "        else openblas).\n"
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

int segd_cli_infer(int argc, char **argv)
{
    const char *weights = NULL, *gemm = NULL;
    float threshold = -1.0f;
    size_t max_pixels = SEGD_DEFAULT_MAX_PIXELS;
    int ncpu = segd_cpu_count();
    int threads = ncpu > 8 ? 8 : ncpu;
    char wbuf[4096], err[512];
    int first = argc, status = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--weights") == 0 && i + 1 < argc) {
            weights = argv[++i];
        } else if (strcmp(a, "--threshold") == 0 && i + 1 < argc) {
            if (segd_threshold_parse(argv[++i], &threshold)) {
                fprintf(stderr, "segd infer: --threshold must be a decimal number with 0 < t < 1\n");
                return 2;
            }
        } else if (strcmp(a, "--max-pixels") == 0 && i + 1 < argc) {
            char *end;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (*end || v == 0 || v > (1ull << 28)) {
                fprintf(stderr, "segd infer: --max-pixels must be in [1, 2^28]\n");
                return 2;
            }
            max_pixels = (size_t)v;
        } else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 256) {
                fprintf(stderr, "segd infer: --threads must be in [1, 256]\n");
                return 2;
            }
            threads = (int)v;
        } else if (strcmp(a, "--gemm") == 0 && i + 1 < argc) {
            segd_gemm g;
            gemm = argv[++i];
            if (segd_gemm_parse(gemm, &g)) {
                fprintf(stderr, "segd infer: --gemm must be native, openblas or auto\n");
                return 2;
            }
        } else if (strcmp(a, "--") == 0) {
            first = i + 1;
            break;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "segd infer: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        } else {
            first = i;
            break;
        }
    }
    if (first >= argc) {
        usage(stderr);
        return 2;
    }
    if (!weights) {
        if (segd_cli_default_weights(wbuf, sizeof wbuf)) {
            fprintf(stderr, "segd infer: no weights: pass --weights FILE or set $SEGD_WEIGHTS "
                            "(weights/ must hold exactly one *.safetensors)\n");
            return 1;
        }
        weights = wbuf;
    }
    segd_model *m = NULL;
    segd_worker *w = NULL;
    segd_model_options opts;
    if (segd_cli_model_options(&opts, gemm, err, sizeof err) ||
        segd_model_load_opts(weights, &opts, &m, err, sizeof err)) {
        fprintf(stderr, "segd infer: %s\n", err);
        return 1;
    }
    if (!segd_model_data_verified(m))
        fprintf(stderr, "segd infer: warning: weights '%s' carry no tensor_sha256 (exported before "
                        "it existed): tensor data not verified\n", weights);
    int rc = segd_worker_create_threads(m, max_pixels, threads, &w);
    if (rc) {
        fprintf(stderr, "segd infer: cannot create worker: %s\n", strerror(-rc));
        status = 1;
        goto out;
    }
    for (int i = first; i < argc; i++) {
        unsigned char *data;
        size_t len;
        segd_result res;
        char id[256];
        if ((rc = read_file(argv[i], &data, &len))) {
            fprintf(stderr, "segd infer: %s: %s\n", argv[i], strerror(-rc));
            status = 1;
            continue;
        }
        rc = segd_worker_segment_png(w, data, len, threshold, &res, err, sizeof err);
        free(data);
        if (rc) {
            fprintf(stderr, "segd infer: %s: %s\n", argv[i], err);
            status = 1;
            continue;
        }
        /* the server's rule for multipart file names: the stem, bytes
         * outside [A-Za-z0-9._-] (non-UTF-8 ones included) replaced by '_',
         * so that the id is always valid JSON text */
        segd_http_id_from_filename(argv[i], strlen(argv[i]), id, sizeof id);
        json_t *doc = segd_result_json(m, &res, id);
        char *s = doc ? segd_json_text(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        if (!s) {
            fprintf(stderr, "segd infer: %s: out of memory\n", argv[i]);
            status = 1;
            continue;
        }
        if (puts(s) < 0)
            status = 1;
        free(s);
    }
    if (fflush(stdout) != 0)
        status = 1;
out:
    segd_worker_free(w);
    segd_model_free(m);
    return status;
}
