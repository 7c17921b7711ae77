/* png_dump IN.png OUT.f32: the engine's decode of one PNG (segd_png_decode_gray)
 * as "H W\n" on stdout and float32 native-endian H x W samples in OUT.f32,
 * for tests/engine/png_kinds.py to compare with train/preprocess.load_png.
 * Exit 0, or 1 with the decoder's message on stderr. */
#include <stdio.h>
#include <stdlib.h>

#include "io/png.h"

#define MAX_PIXELS (1u << 20)

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: png_dump IN.png OUT.f32\n");
        return 2;
    }
    int status = 1;
    unsigned char *png = NULL, *scratch = NULL;
    float *out = NULL;
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    size_t cap = 64u << 20, len = 0;
    png = malloc(cap);
    scratch = malloc(segd_png_scratch_bytes(MAX_PIXELS));
    out = malloc(sizeof(float) * MAX_PIXELS);
    if (png && scratch && out)
        len = fread(png, 1, cap, f);
    fclose(f);
    if (!png || !scratch || !out || len == 0 || len == cap) {
        fprintf(stderr, "%s: cannot read (or over 64 MB)\n", argv[1]);
        goto done;
    }
    int h, w;
    char err[256];
    if (segd_png_decode_gray(png, len, MAX_PIXELS, out, scratch, segd_png_scratch_bytes(MAX_PIXELS),
                             &h, &w, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", argv[1], err);
        goto done;
    }
    FILE *o = fopen(argv[2], "wb");
    if (!o) {
        perror(argv[2]);
        goto done;
    }
    int bad = fwrite(out, sizeof(float), (size_t)h * w, o) != (size_t)h * w;
    bad |= fclose(o) != 0;
    if (!bad && printf("%d %d\n", h, w) > 0)
        status = 0;
done:
    free(out);
    free(scratch);
    free(png);
    return status;
}
