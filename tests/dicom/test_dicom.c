/* Unit test of the DICOM module without Python: the contour tracer against
 * even-odd rasterisation, the reader on DICOM built here byte by byte (pixel
 * formats, rescale, MONOCHROME1, each refusal and its errno), the series
 * ordering, the writers' argument checks, concurrent first reads (the
 * codecs registered once) and concurrent decodes of the compressed files
 * given as arguments. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contour.h"
#include "harness.h"
#include "segd/dicom.h"

/* ---------------------------------------------------------------- contours */

struct raster {
    int rows, cols;
    uint8_t *img;     /* even-odd parity at pixel centres */
    size_t contours, points;
};

/* Toggle every pixel centre that lies left of... : even-odd by horizontal
 * rays: for each edge crossing the centre row y = r + 0.5, flip the pixels
 * whose centre x is right of the crossing. */
static int raster_fn(void *ctx, const int32_t *xy, size_t npts)
{
    struct raster *R = ctx;
    R->contours++;
    R->points += npts;
    if (npts < 4)
        return 1; /* a closed rectilinear polygon has at least 4 vertices */
    for (size_t i = 0; i < npts; i++) {
        int32_t x0 = xy[2 * i], y0 = xy[2 * i + 1];
        int32_t x1 = xy[2 * ((i + 1) % npts)], y1 = xy[2 * ((i + 1) % npts) + 1];
        if (x0 != x1 && y0 != y1)
            return 2; /* edges run along pixel sides only */
        if (x0 == x1) { /* vertical edge at x0 crosses rows min(y)..max(y)-1 */
            int ya = y0 < y1 ? y0 : y1, yb = y0 < y1 ? y1 : y0;
            for (int r = ya; r < yb; r++)
                for (int c = x0; c < R->cols; c++)
                    R->img[(size_t)r * R->cols + c] ^= 1;
        }
    }
    return 0;
}

static int check_trace(const uint8_t *mask, int rows, int cols, const char *what)
{
    struct raster R = {rows, cols, calloc((size_t)rows * cols, 1), 0, 0};
    void *scratch = malloc(segd_contour_scratch_bytes(rows, cols));
    TEST_REQUIRE(R.img && scratch);
    int rc = segd_contour_trace(mask, rows, cols, scratch, raster_fn, &R);
    int bad = rc != 0;
    for (size_t i = 0; i < (size_t)rows * cols && !bad; i++)
        bad = R.img[i] != (mask[i] != 0);
    if (bad)
        fprintf(stderr, "contour mismatch for %s (rc %d)\n", what, rc);
    TEST_CHECK(!bad);
    free(scratch);
    free(R.img);
    return (int)R.contours;
}

static void test_contours(void)
{
    enum { H = 23, W = 31 };
    uint8_t m[H * W];
    /* ring: one outer and one hole contour */
    for (int r = 0; r < H; r++)
        for (int c = 0; c < W; c++) {
            double d = hypot(r - 11.0, c - 15.0);
            m[r * W + c] = d < 9.5 && d > 4.0;
        }
    TEST_EQ_INT(check_trace(m, H, W, "ring"), 2);
    /* two pixels touching only at a corner: two regions (4-connectivity) */
    memset(m, 0, sizeof m);
    m[5 * W + 5] = m[6 * W + 6] = 1;
    TEST_EQ_INT(check_trace(m, H, W, "diagonal pair"), 2);
    /* a 3x3 block with its centre missing, a hole touching only diagonals */
    memset(m, 0, sizeof m);
    for (int r = 2; r < 5; r++)
        for (int c = 2; c < 5; c++)
            m[r * W + c] = !(r == 3 && c == 3);
    TEST_EQ_INT(check_trace(m, H, W, "block with hole"), 2);
    /* the whole image, and nothing */
    memset(m, 1, sizeof m);
    TEST_EQ_INT(check_trace(m, H, W, "full"), 1);
    memset(m, 0, sizeof m);
    TEST_EQ_INT(check_trace(m, H, W, "empty"), 0);
    /* checkerboard: every pixel its own region */
    for (int r = 0; r < H; r++)
        for (int c = 0; c < W; c++)
            m[r * W + c] = (r + c) % 2;
    TEST_EQ_INT(check_trace(m, H, W, "checkerboard"), (H * W) / 2);
    /* random masks of several densities, 1-pixel images */
    unsigned s = 12345;
    for (int t = 0; t < 300; t++) {
        unsigned p = (unsigned)(t % 10) * 10 + 5;
        for (int i = 0; i < H * W; i++) {
            s = s * 1103515245u + 12345u;
            m[i] = (s >> 16) % 100 < p;
        }
        check_trace(m, H, W, "random");
    }
    uint8_t one = 1;
    TEST_EQ_INT(check_trace(&one, 1, 1, "1x1"), 1);
    TEST_EQ_INT((long long)segd_contour_scratch_bytes(0, 5), 0);
}

/* ---------------------------------------------------------------- DICOM bytes */

struct dcm {
    uint8_t *b;
    size_t n, cap;
};

static void put_bytes(struct dcm *d, const void *p, size_t len)
{
    if (d->n + len > d->cap) {
        d->cap = (d->n + len) * 2;
        d->b = realloc(d->b, d->cap);
        TEST_REQUIRE(d->b);
    }
    memcpy(d->b + d->n, p, len);
    d->n += len;
}

static void put_u16(struct dcm *d, unsigned v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put_bytes(d, b, 2);
}

static void put_u32(struct dcm *d, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put_bytes(d, b, 4);
}

/* one explicit VR little endian element; strings padded to even length */
static void el(struct dcm *d, unsigned group, unsigned elem, const char *vr, const void *val,
               size_t len)
{
    int pad = len % 2;
    put_u16(d, group);
    put_u16(d, elem);
    put_bytes(d, vr, 2);
    if (!strcmp(vr, "OB") || !strcmp(vr, "OW") || !strcmp(vr, "SQ") || !strcmp(vr, "UN")) {
        put_u16(d, 0);
        put_u32(d, (uint32_t)(len + pad));
    } else {
        put_u16(d, (unsigned)(len + pad));
    }
    put_bytes(d, val, len);
    if (pad)
        put_bytes(d, strcmp(vr, "UI") ? " " : "", 1);
}

static void els(struct dcm *d, unsigned g, unsigned e, const char *vr, const char *s)
{
    el(d, g, e, vr, s, strlen(s));
}

static void elu16(struct dcm *d, unsigned g, unsigned e, unsigned v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    el(d, g, e, "US", b, 2);
}

static void put_item(struct dcm *d, uint32_t len)
{
    put_u16(d, 0xfffe);
    put_u16(d, 0xe000);
    put_u32(d, len);
}

static void put_delim(struct dcm *d, unsigned elem)
{
    put_u16(d, 0xfffe);
    put_u16(d, elem);
    put_u32(d, 0);
}

/* k nested (0009,1010) SQ of undefined length, each opening one item;
 * put_close closes them again */
static void put_open(struct dcm *d, int k)
{
    for (int i = 0; i < k; i++) {
        put_bytes(d, "\x09\x00\x10\x10SQ\0\0\xff\xff\xff\xff", 12);
        put_item(d, 0xffffffff);
    }
}

static void put_close(struct dcm *d, int k)
{
    for (int i = 0; i < k; i++) {
        put_delim(d, 0xe00d);
        put_delim(d, 0xe0dd);
    }
}

struct spec {
    const char *ts;          /* TransferSyntaxUID */
    const char *photo;
    int bits, stored, signed_, spp, frames, rows, cols;
    const char *slope, *intercept; /* NULL: absent */
    int no_sop_instance;
};

static struct dcm make_dicom(const struct spec *s, const void *pixels, size_t pixlen)
{
    struct dcm d = {0};
    uint8_t pre[128] = {0};
    put_bytes(&d, pre, 128);
    put_bytes(&d, "DICM", 4);
    struct dcm meta = {0};
    uint8_t ver[2] = {0, 1};
    el(&meta, 2, 1, "OB", ver, 2);
    els(&meta, 2, 2, "UI", "1.2.840.10008.5.1.4.1.1.4");
    els(&meta, 2, 3, "UI", "1.2.3.4.5.6.7");
    els(&meta, 2, 0x10, "UI", s->ts);
    uint8_t gl[4] = {(uint8_t)meta.n, (uint8_t)(meta.n >> 8), 0, 0};
    el(&d, 2, 0, "UL", gl, 4);
    put_bytes(&d, meta.b, meta.n);
    free(meta.b);
    els(&d, 8, 0x16, "UI", "1.2.840.10008.5.1.4.1.1.4");
    if (!s->no_sop_instance)
        els(&d, 8, 0x18, "UI", "1.2.3.4.5.6.7");
    els(&d, 8, 0x60, "CS", "MR");
    els(&d, 0x10, 0x10, "PN", "Test^Patient");
    els(&d, 0x10, 0x20, "LO", "P1");
    els(&d, 0x20, 0xd, "UI", "1.2.3.4.5");
    els(&d, 0x20, 0xe, "UI", "1.2.3.4.5.6");
    els(&d, 0x20, 0x32, "DS", "-100\\-80.5\\12");
    els(&d, 0x20, 0x37, "DS", "1\\0\\0\\0\\1\\0");
    els(&d, 0x20, 0x52, "UI", "1.2.3.4.9");
    elu16(&d, 0x28, 2, (unsigned)s->spp);
    els(&d, 0x28, 4, "CS", s->photo);
    if (s->frames) {
        char f[16];
        snprintf(f, sizeof f, "%d", s->frames);
        els(&d, 0x28, 8, "IS", f);
    }
    elu16(&d, 0x28, 0x10, (unsigned)s->rows);
    elu16(&d, 0x28, 0x11, (unsigned)s->cols);
    els(&d, 0x28, 0x30, "DS", "0.75\\1.25");
    elu16(&d, 0x28, 0x100, (unsigned)s->bits);
    elu16(&d, 0x28, 0x101, (unsigned)s->stored);
    elu16(&d, 0x28, 0x102, (unsigned)s->stored - 1);
    elu16(&d, 0x28, 0x103, (unsigned)s->signed_);
    if (s->intercept)
        els(&d, 0x28, 0x1052, "DS", s->intercept);
    if (s->slope)
        els(&d, 0x28, 0x1053, "DS", s->slope);
    el(&d, 0x7fe0, 0x10, s->bits == 8 ? "OB" : "OW", pixels, pixlen);
    return d;
}

static int read_spec(const struct spec *s, const void *px, size_t pxlen, size_t max_pixels,
                     segd_dicom_image **im, char *err, size_t errlen)
{
    struct dcm d = make_dicom(s, px, pxlen);
    int rc = segd_dicom_read(d.b, d.n, max_pixels, im, err, errlen);
    free(d.b);
    return rc;
}

static const char *EXPL = "1.2.840.10008.1.2.1";

static void test_reader(void)
{
    char err[256];
    segd_dicom_image *im = (segd_dicom_image *)1;
    TEST_EQ_INT(segd_dicom_read(NULL, 0, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(im == NULL && strstr(err, "not DICOM"));
    const char junk[] = "this is not a DICOM file at all, just some text that goes on";
    TEST_EQ_INT(segd_dicom_read(junk, sizeof junk, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(im == NULL);
    TEST_EQ_INT(segd_dicom_read_file("/nonexistent/x.dcm", 100, &im, err, sizeof err), -ENOENT);

    /* 16-bit signed with rescale */
    int16_t px[6] = {-3, -1, 0, 1, 2, 1000};
    struct spec s = {EXPL, "MONOCHROME2", 16, 16, 1, 1, 0, 2, 3, "2", "-1.5", 0};
    TEST_EQ_INT(read_spec(&s, px, sizeof px, 100, &im, err, sizeof err), 0);
    TEST_REQUIRE(im);
    TEST_EQ_INT(im->rows, 2);
    TEST_EQ_INT(im->cols, 3);
    for (int i = 0; i < 6; i++)
        TEST_CHECK(im->pixels[i] == (float)(2.0 * px[i] - 1.5));
    TEST_CHECK(im->pixel_spacing[0] == 0.75 && im->pixel_spacing[1] == 1.25);
    TEST_CHECK(im->position[0] == -100 && im->position[1] == -80.5 && im->position[2] == 12);
    TEST_CHECK(im->geometry_missing == NULL);
    TEST_EQ_STR(im->sop_instance_uid, "1.2.3.4.5.6.7");
    TEST_EQ_STR(im->patient_name, "Test^Patient");
    TEST_EQ_STR(im->frame_of_reference_uid, "1.2.3.4.9");
    segd_dicom_image_free(im);

    /* 12 of 16 bits, unsigned, MONOCHROME1: inverted over 0..4095 */
    uint16_t pu[6] = {0, 1, 4095, 2048, 7, 100};
    struct spec s1 = {EXPL, "MONOCHROME1", 16, 12, 0, 1, 1, 2, 3, NULL, NULL, 0};
    TEST_EQ_INT(read_spec(&s1, pu, sizeof pu, 100, &im, err, sizeof err), 0);
    TEST_REQUIRE(im);
    for (int i = 0; i < 6; i++)
        TEST_CHECK(im->pixels[i] == (float)(4095 - pu[i]));
    segd_dicom_image_free(im);

    /* 8-bit */
    uint8_t p8[6] = {0, 10, 20, 30, 40, 255};
    struct spec s8 = {EXPL, "MONOCHROME2", 8, 8, 0, 1, 0, 2, 3, NULL, NULL, 0};
    TEST_EQ_INT(read_spec(&s8, p8, sizeof p8, 100, &im, err, sizeof err), 0);
    TEST_REQUIRE(im);
    for (int i = 0; i < 6; i++)
        TEST_CHECK(im->pixels[i] == p8[i]);
    segd_dicom_image_free(im);

    /* refusals */
    TEST_EQ_INT(read_spec(&s, px, sizeof px, 5, &im, err, sizeof err), -E2BIG);
    TEST_CHECK(im == NULL && strstr(err, "Rows x Columns"));
    struct spec mf = s;
    mf.frames = 2;
    int16_t px2[12] = {0};
    TEST_EQ_INT(read_spec(&mf, px2, sizeof px2, 100, &im, err, sizeof err), -EDOM);
    TEST_CHECK(strstr(err, "NumberOfFrames") != NULL);
    struct spec rgb = {EXPL, "RGB", 8, 8, 0, 3, 0, 2, 3, NULL, NULL, 0};
    uint8_t p24[18] = {0};
    TEST_EQ_INT(read_spec(&rgb, p24, sizeof p24, 100, &im, err, sizeof err), -EDOM);
    TEST_CHECK(strstr(err, "not greyscale") != NULL);
    struct spec jp = s;
    jp.ts = "1.2.840.10008.1.2.4.50"; /* JPEG baseline: lossy */
    TEST_EQ_INT(read_spec(&jp, px, sizeof px, 100, &im, err, sizeof err), -ENOTSUP);
    TEST_CHECK(strstr(err, "1.2.840.10008.1.2.4.50") && strstr(err, "JPEG"));
    fprintf(stderr, "  refusal: %s\n", err);
    struct spec nosop = s;
    nosop.no_sop_instance = 1;
    TEST_EQ_INT(read_spec(&nosop, px, sizeof px, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "SOPInstanceUID") != NULL);
    TEST_EQ_INT(read_spec(&s, px, 4, 100, &im, err, sizeof err), -EINVAL); /* short PixelData */
    TEST_CHECK(strstr(err, "PixelData") != NULL);
    /* headers claiming more than the input holds never reach DCMTK */
    struct dcm big = make_dicom(&s, px, sizeof px);
    uint8_t huge[4] = {0xf0, 0xff, 0xff, 0x7f};
    put_u16(&big, 0x7fe1);
    put_u16(&big, 0x0010);
    put_bytes(&big, "UN\0\0", 4);
    put_bytes(&big, huge, 4);
    TEST_EQ_INT(segd_dicom_read(big.b, big.n, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "(7FE1,0010) claims 2147483632 bytes") != NULL);
    free(big.b);
    struct dcm deep = make_dicom(&s, px, sizeof px);
    put_open(&deep, 33);
    TEST_EQ_INT(segd_dicom_read(deep.b, deep.n, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "nested more than 32 deep") != NULL);
    free(deep.b);
    /* ten nested sequences, closed, are read (DICOM sets no limit) */
    struct dcm ten = make_dicom(&s, px, sizeof px);
    put_open(&ten, 10);
    put_close(&ten, 10);
    TEST_EQ_INT(segd_dicom_read(ten.b, ten.n, 100, &im, err, sizeof err), 0);
    TEST_CHECK(im && im->rows == 2);
    segd_dicom_image_free(im);
    im = NULL;
    free(ten.b);
    /* truncated file */
    struct dcm d = make_dicom(&s, px, sizeof px);
    for (size_t cut = 0; cut < d.n; cut += 7) {
        int rc = segd_dicom_read(d.b, cut, 100, &im, err, sizeof err);
        TEST_CHECK(rc < 0 || im != NULL);
        segd_dicom_image_free(im);
        im = NULL;
    }
    free(d.b);
}

/* The pre-check reads element headers as DCMTK will (read.cc): each case
 * below is read differently by the standard's plain rules and by DCMTK, and
 * each would make DCMTK allocate what the header claims. */
static void test_reader_as_dcmtk(void)
{
    char err[256];
    segd_dicom_image *im = NULL;
    int16_t px[6] = {1, 2, 3, 4, 5, 6};
    struct spec s = {EXPL, "MONOCHROME2", 16, 16, 1, 1, 0, 2, 3, NULL, NULL, 0};

    /* a VR of two capitals that is no standard VR has a 4-byte length
     * (a 2-byte reading sees 0 bytes, then 8 header bytes of a harmless OB) */
    struct dcm a = make_dicom(&s, px, sizeof px);
    put_u16(&a, 0x0009);
    put_u16(&a, 0x1010);
    put_bytes(&a, "ZZ\0\0", 4);
    put_u32(&a, 0x7ffffff0);
    put_bytes(&a, "OB\0\0", 4);
    put_u32(&a, 0);
    TEST_EQ_INT(segd_dicom_read(a.b, a.n, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "(0009,1010) claims 2147483632 bytes") != NULL);
    fprintf(stderr, "  unknown VR: %s\n", err);
    free(a.b);

    /* UN of undefined length: its items are Implicit VR (CP-246), so an
     * explicit-looking "LO, 32768 bytes" claims 0x80004F4C bytes */
    struct dcm b = make_dicom(&s, px, sizeof px);
    put_u16(&b, 0x0009);
    put_u16(&b, 0x1011);
    put_bytes(&b, "UN\0\0", 4);
    put_u32(&b, 0xffffffff);
    put_item(&b, 0xffffffff);
    put_u16(&b, 0x0009);
    put_u16(&b, 0x1012);
    put_bytes(&b, "LO", 2);
    put_u16(&b, 0x8000);
    uint8_t *fill = calloc(0x8000, 1);
    TEST_REQUIRE(fill);
    put_bytes(&b, fill, 0x8000);
    free(fill);
    put_delim(&b, 0xe00d);
    put_delim(&b, 0xe0dd);
    TEST_EQ_INT(segd_dicom_read(b.b, b.n, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "(0009,1012) claims 2147503948 bytes") != NULL);
    fprintf(stderr, "  UN sequence: %s\n", err);
    free(b.b);

    /* undefined length on a VR that DCMTK reads as one plain value */
    struct dcm c = make_dicom(&s, px, sizeof px);
    put_u16(&c, 0x0009);
    put_u16(&c, 0x1013);
    put_bytes(&c, "UT\0\0", 4);
    put_u32(&c, 0xffffffff);
    TEST_EQ_INT(segd_dicom_read(c.b, c.n, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "(0009,1013) (VR UT) has an undefined length") != NULL);
    free(c.b);

    /* a FileMetaInformationGroupLength that ends the meta group elsewhere */
    struct dcm g = make_dicom(&s, px, sizeof px);
    TEST_CHECK(!memcmp(g.b + 132, "\x02\x00\x00\x00UL", 6));
    g.b[140] += 8;
    TEST_EQ_INT(segd_dicom_read(g.b, g.n, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "FileMetaInformationGroupLength") != NULL);
    free(g.b);

    /* Implicit VR: a private element takes its VR from its creator's
     * dictionary entry; (0009,"DCMTK_ANONYMIZER",00) is an SQ, so its item's
     * length is checked too */
    struct dcm d = {0};
    uint8_t pre[128] = {0};
    put_bytes(&d, pre, 128);
    put_bytes(&d, "DICM", 4);
    const char *ts = "1.2.840.10008.1.2"; /* 17 characters, padded with NUL */
    uint8_t gl[4] = {8 + 18, 0, 0, 0};
    el(&d, 2, 0, "UL", gl, 4);
    el(&d, 2, 0x10, "UI", ts, strlen(ts));
    put_u16(&d, 0x0009); /* (0009,0010) Private Creator, implicit: tag, 4-byte length */
    put_u16(&d, 0x0010);
    put_u32(&d, 16);
    put_bytes(&d, "DCMTK_ANONYMIZER", 16);
    put_u16(&d, 0x0009);
    put_u16(&d, 0x1000);
    put_u32(&d, 16);
    put_item(&d, 0x7ffffff0);
    put_bytes(&d, "\x10\x00\x10\x00\x00\x00\x00\x00", 8);
    TEST_EQ_INT(segd_dicom_read(d.b, d.n, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "claims 2147483632 bytes") != NULL);
    fprintf(stderr, "  private SQ: %s\n", err);
    /* the same creator twice in one dataset */
    d.n -= 8 + 16; /* drop (0009,1000) */
    put_u16(&d, 0x0009);
    put_u16(&d, 0x0010);
    put_u32(&d, 4);
    put_bytes(&d, "XY  ", 4);
    TEST_EQ_INT(segd_dicom_read(d.b, d.n, 100, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "Private Creator (0009,0010) given twice") != NULL);
    fprintf(stderr, "  creator twice: %s\n", err);
    free(d.b);

    /* encapsulated PixelData inside an item (an icon) holds raw fragments,
     * not elements: the image still reads */
    struct dcm e = make_dicom(&s, px, sizeof px);
    put_u16(&e, 0x0088);
    put_u16(&e, 0x0200);
    put_bytes(&e, "SQ\0\0", 4);
    put_u32(&e, 0xffffffff);
    put_item(&e, 0xffffffff);
    put_u16(&e, 0x7fe0);
    put_u16(&e, 0x0010);
    put_bytes(&e, "OB\0\0", 4);
    put_u32(&e, 0xffffffff);
    put_item(&e, 0);
    put_item(&e, 4);
    put_bytes(&e, "\xff\xff\xff\xff", 4);
    put_delim(&e, 0xe0dd);
    put_delim(&e, 0xe00d);
    put_delim(&e, 0xe0dd);
    int rc = segd_dicom_read(e.b, e.n, 100, &im, err, sizeof err);
    TEST_EQ_INT(rc, 0);
    if (rc != 0)
        fprintf(stderr, "  icon: %s\n", err);
    TEST_CHECK(im && im->rows == 2 && im->cols == 3 && im->pixels[5] == 6.0f);
    segd_dicom_image_free(im);
    free(e.b);
}

/* ---------------------------------------------------------------- series */

static segd_dicom_image *fake(double z, const char *uid)
{
    segd_dicom_image *im = calloc(1, sizeof *im);
    TEST_REQUIRE(im);
    im->rows = 4;
    im->cols = 5;
    im->pixels = calloc(20, sizeof(float));
    TEST_REQUIRE(im->pixels);
    im->pixel_spacing[0] = im->pixel_spacing[1] = 1.5;
    /* a coronal series: row dir +x, column dir -z, normal -y... positions along y */
    double o[6] = {1, 0, 0, 0, 0, -1};
    memcpy(im->orientation, o, sizeof o);
    im->position[0] = -50;
    im->position[1] = z;
    im->position[2] = 30;
    snprintf(im->sop_instance_uid, sizeof im->sop_instance_uid, "%s", uid);
    strcpy(im->sop_class_uid, "1.2.840.10008.5.1.4.1.1.4");
    strcpy(im->series_instance_uid, "1.2.3");
    strcpy(im->study_instance_uid, "1.2");
    strcpy(im->frame_of_reference_uid, "1.2.4");
    return im;
}

static void test_series(void)
{
    /* normal = (1,0,0) x (0,0,-1) = (0,1,0): ascending y */
    double y[5] = {7.5, -3, 4.5, 1.5, -1.5};
    segd_dicom_image *im[5];
    char uid[32], err[256];
    for (int i = 0; i < 5; i++) {
        snprintf(uid, sizeof uid, "1.2.3.%d", i);
        im[i] = fake(y[i], uid);
    }
    size_t order[5];
    TEST_EQ_INT(segd_dicom_series_order((const segd_dicom_image *const *)im, 5, order, err,
                                        sizeof err), 0);
    size_t want[5] = {1, 4, 3, 2, 0};
    for (int i = 0; i < 5; i++)
        TEST_EQ_INT(order[i], want[i]);
    /* writers want series order */
    uint8_t mask[3 * 20] = {0};
    const uint8_t *masks[5] = {mask, mask, mask, mask, mask};
    segd_dicom_algorithm alg = {"m", "v", NULL, NULL, 0};
    void *out = NULL;
    size_t len = 0;
    TEST_EQ_INT(segd_dicom_write_seg((const segd_dicom_image *const *)im, 5, masks, &alg, &out,
                                     &len, err, sizeof err), -EINVAL);
    TEST_CHECK(out == NULL && strstr(err, "series order"));
    const segd_dicom_image *sorted[5];
    for (int i = 0; i < 5; i++)
        sorted[i] = im[order[i]];
    TEST_EQ_INT(segd_dicom_write_rtstruct(sorted, 5, masks, &alg, &out, &len, err, sizeof err),
                0);
    TEST_CHECK(out != NULL && len > 132 && !memcmp((char *)out + 128, "DICM", 4));
    /* the written objects are no single-frame image: the reader says why */
    segd_dicom_image *back = NULL;
    TEST_EQ_INT(segd_dicom_read(out, len, 1000, &back, err, sizeof err), -EDOM);
    segd_dicom_buffer_free(out);
    out = NULL;
    TEST_EQ_INT(segd_dicom_write_seg(sorted, 5, masks, &alg, &out, &len, err, sizeof err), 0);
    TEST_EQ_INT(segd_dicom_read(out, len, 1000, &back, err, sizeof err), -EDOM);
    TEST_CHECK(strstr(err, "NumberOfFrames 15") != NULL);
    segd_dicom_buffer_free(out);
    /* refusals, each naming the attribute */
    strcpy(im[2]->series_instance_uid, "9.9");
    TEST_EQ_INT(segd_dicom_series_order((const segd_dicom_image *const *)im, 5, order, err,
                                        sizeof err), -EXDEV);
    TEST_CHECK(strstr(err, "SeriesInstanceUID") != NULL);
    strcpy(im[2]->series_instance_uid, "1.2.3");
    strcpy(im[3]->frame_of_reference_uid, "9.9");
    TEST_EQ_INT(segd_dicom_series_order((const segd_dicom_image *const *)im, 5, order, err,
                                        sizeof err), -EXDEV);
    TEST_CHECK(strstr(err, "FrameOfReferenceUID") != NULL);
    strcpy(im[3]->frame_of_reference_uid, "1.2.4");
    im[4]->orientation[0] = 0;
    im[4]->orientation[1] = 1; /* still orthonormal, but another plane */
    im[4]->orientation[4] = 0;
    im[4]->orientation[3] = 1;
    im[4]->orientation[5] = 0;
    TEST_EQ_INT(segd_dicom_series_order((const segd_dicom_image *const *)im, 5, order, err,
                                        sizeof err), -EXDEV);
    TEST_CHECK(strstr(err, "ImageOrientationPatient") != NULL);
    double o[6] = {1, 0, 0, 0, 0, -1};
    memcpy(im[4]->orientation, o, sizeof o);
    im[4]->position[1] = y[0];
    TEST_EQ_INT(segd_dicom_series_order((const segd_dicom_image *const *)im, 5, order, err,
                                        sizeof err), -EXDEV);
    TEST_CHECK(strstr(err, "same position") != NULL);
    im[4]->position[1] = y[4];
    im[1]->geometry_missing = "PixelSpacing";
    TEST_EQ_INT(segd_dicom_series_order((const segd_dicom_image *const *)im, 5, order, err,
                                        sizeof err), -EINVAL);
    TEST_CHECK(strstr(err, "PixelSpacing missing") != NULL);
    for (int i = 0; i < 5; i++)
        segd_dicom_image_free(im[i]);
}

/* ---------------------------------------------------------------- threads */

static struct dcm g_dcm;

static void *reader_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 50; i++) {
        segd_dicom_image *im = NULL;
        char err[128];
        if (segd_dicom_read(g_dcm.b, g_dcm.n, 100, &im, err, sizeof err) != 0)
            return (void *)1;
        segd_dicom_image_free(im);
    }
    return NULL;
}

static void test_threads(void)
{
    int16_t px[6] = {1, 2, 3, 4, 5, 6};
    struct spec s = {EXPL, "MONOCHROME2", 16, 16, 1, 1, 0, 2, 3, NULL, NULL, 0};
    g_dcm = make_dicom(&s, px, sizeof px);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        TEST_REQUIRE(pthread_create(&t[i], NULL, reader_thread, NULL) == 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        TEST_CHECK(r == NULL);
    }
    free(g_dcm.b);
}

/* Compressed files (argv) decoded by 4 threads at once give the pixels of
 * a lone decode: DCMTK's codec list is shared by all workers. */
struct file_job {
    const char *path;
    const float *want;
    size_t n;
    int bad;
};

static void *decode_thread(void *arg)
{
    struct file_job *j = arg;
    for (int i = 0; i < 20; i++) {
        segd_dicom_image *im = NULL;
        char err[256];
        if (segd_dicom_read_file(j->path, 1u << 20, &im, err, sizeof err) != 0 ||
            (size_t)im->rows * (size_t)im->cols != j->n ||
            memcmp(im->pixels, j->want, j->n * sizeof(float)) != 0)
            j->bad = 1;
        segd_dicom_image_free(im);
    }
    return NULL;
}

static void test_threads_codecs(int argc, char **argv)
{
    for (int f = 1; f < argc; f++) {
        segd_dicom_image *ref = NULL;
        char err[256];
        TEST_EQ_INT(segd_dicom_read_file(argv[f], 1u << 20, &ref, err, sizeof err), 0);
        if (!ref) {
            fprintf(stderr, "%s: %s\n", argv[f], err);
            continue;
        }
        struct file_job j[4];
        pthread_t t[4];
        for (int i = 0; i < 4; i++) {
            j[i] = (struct file_job){argv[f], ref->pixels, (size_t)ref->rows * ref->cols, 0};
            TEST_REQUIRE(pthread_create(&t[i], NULL, decode_thread, &j[i]) == 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(t[i], NULL);
            TEST_CHECK(!j[i].bad);
        }
        fprintf(stderr, "  %s: 4 threads x 20 decodes equal (%s)\n", argv[f],
                ref->transfer_syntax_uid);
        segd_dicom_image_free(ref);
    }
}

/* The JPEG Lossless SV1 seed among the files in argv, read into buf[cap]:
 * its length (0: none); *count: how many such files argv holds. */
static size_t load_jpeg_seed(int argc, char **argv, uint8_t *buf, size_t cap, int *count)
{
    size_t found = 0;
    *count = 0;
    for (int f = 1; f < argc; f++) {
        FILE *fp = fopen(argv[f], "rb");
        TEST_REQUIRE(fp);
        uint8_t *tmp = malloc(cap);
        TEST_REQUIRE(tmp);
        size_t n = fread(tmp, 1, cap, fp);
        fclose(fp);
        if (memmem(tmp, n, "1.2.840.10008.1.2.4.70", 22) && (*count)++ == 0) {
            memcpy(buf, tmp, n);
            found = n;
        }
        free(tmp);
    }
    return found;
}

/* A TEM marker (FF01) where the JPEG's first marker segment is due would
 * hang DCMTK 3.6.7's bit-depth scan for ever: refused at once instead.
 * The seed gets its first marker after SOI overwritten. */
static void test_jpeg_tem(const uint8_t *seed, size_t n)
{
    uint8_t *buf = malloc(n);
    TEST_REQUIRE(buf);
    memcpy(buf, seed, n);
    uint8_t *soi = memmem(buf, n, "\xff\xd8\xff", 3);
    TEST_REQUIRE(soi && soi + 4 <= buf + n);
    soi[3] = 0x01; /* FF D8 FF 01 */
    segd_dicom_image *im = NULL;
    char err[256] = "";
    TEST_EQ_INT(segd_dicom_read(buf, n, 1u << 20, &im, err, sizeof err), -EINVAL);
    TEST_CHECK(im == NULL && strstr(err, "TEM marker (FF01)") != NULL);
    fprintf(stderr, "  JPEG with TEM: %s\n", err);
    free(buf);
}

/* Only the first fragment is scanned: a later one may begin on bytes FF 01
 * inside a marker segment.  The seed is rewritten with a COM segment
 * holding FF 01 after the SOF, its frame split into two fragments right at
 * that FF: it must still read, with the same pixels. */
static void test_jpeg_split_fragment(const uint8_t *buf, size_t n)
{
    const uint8_t *soi = memmem(buf, n, "\xff\xd8\xff", 3);
    TEST_REQUIRE(soi && soi - buf >= 8 && !memcmp(soi - 8, "\xfe\xff\x00\xe0", 4));
    const uint8_t *item = soi - 8;
    uint32_t flen = item[4] | item[5] << 8 | (uint32_t)item[6] << 16 | (uint32_t)item[7] << 24;
    const uint8_t *sof = memmem(soi, flen, "\xff\xc3", 2);
    TEST_REQUIRE(sof);
    size_t sof_end = (size_t)(sof - soi) + 2 + (size_t)(sof[2] << 8 | sof[3]);
    static const uint8_t com1[5] = {0xff, 0xfe, 0x00, 0x06, 0x00}; /* COM, 4 data bytes */
    static const uint8_t com2[3] = {0xff, 0x01, 0x00};             /* ... of which FF 01 00 */
    uint32_t len1 = (uint32_t)(sof_end + sizeof com1), len2 = (uint32_t)(sizeof com2 + flen - sof_end);
    TEST_REQUIRE(len1 % 2 == 0 && len2 % 2 == 0);
    struct dcm d = {0};
    put_bytes(&d, buf, (size_t)(item - buf));
    put_item(&d, len1);
    put_bytes(&d, soi, sof_end);
    put_bytes(&d, com1, sizeof com1);
    put_item(&d, len2);
    put_bytes(&d, com2, sizeof com2);
    put_bytes(&d, soi + sof_end, flen - sof_end);
    put_bytes(&d, soi + flen, n - (size_t)(soi + flen - buf));
    segd_dicom_image *ref = NULL, *im = NULL;
    char err[256] = "";
    TEST_EQ_INT(segd_dicom_read(buf, n, 1u << 20, &ref, err, sizeof err), 0);
    int rc = segd_dicom_read(d.b, d.n, 1u << 20, &im, err, sizeof err);
    TEST_EQ_INT(rc, 0);
    if (rc)
        fprintf(stderr, "  split JPEG: %s\n", err);
    TEST_CHECK(im && ref && im->rows == ref->rows && im->cols == ref->cols &&
               !memcmp(im->pixels, ref->pixels, sizeof(float) * (size_t)ref->rows * ref->cols));
    segd_dicom_image_free(im);
    segd_dicom_image_free(ref);
    free(d.b);
}

static void test_jpeg_markers(int argc, char **argv)
{
    static uint8_t seed[1 << 16];
    int count;
    size_t n = load_jpeg_seed(argc, argv, seed, sizeof seed, &count);
    TEST_CHECK(argc < 2 || count == 1);
    if (!n)
        return;
    test_jpeg_tem(seed, n);
    test_jpeg_split_fragment(seed, n);
}

int main(int argc, char **argv)
{
    test_threads(); /* first: the codecs get registered under contention */
    test_threads_codecs(argc, argv);
    test_contours();
    test_reader();
    test_reader_as_dcmtk();
    test_jpeg_markers(argc, argv);
    test_series();
    return test_report("test_dicom");
}
