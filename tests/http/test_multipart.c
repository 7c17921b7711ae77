/* Unit tests of the multipart/form-data parser (src/http/multipart.c):
 * boundaries, well-formed bodies, limits and malformed input. */
#include <errno.h>
#include <stdint.h>

#include "harness.h"
#include "http/multipart.h"

static int parse(const char *body, const char *bnd, segd_multipart_part *parts, size_t max,
                 size_t *n)
{
    return segd_multipart_parse((const uint8_t *)body, strlen(body), bnd, parts, max, n);
}

static void test_boundary(void)
{
    char b[SEGD_MULTIPART_BOUNDARY_MAX + 1];
    TEST_EQ_INT(segd_multipart_boundary("multipart/form-data; boundary=abc", b, sizeof b), 0);
    TEST_EQ_STR(b, "abc");
    TEST_EQ_INT(segd_multipart_boundary("Multipart/Form-Data;charset=x;BOUNDARY=\"a b:c\"", b, sizeof b), 0);
    TEST_EQ_STR(b, "a b:c");
    TEST_EQ_INT(segd_multipart_boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", b, sizeof b), 0);
    TEST_EQ_STR(b, "----WebKitFormBoundary7MA4YWxkTrZu0gW");
    TEST_EQ_INT(segd_multipart_boundary("multipart/form-data", b, sizeof b), -EINVAL);
    TEST_EQ_INT(segd_multipart_boundary("multipart/form-data; boundary=", b, sizeof b), -EINVAL);
    TEST_EQ_INT(segd_multipart_boundary("multipart/form-data; boundary=\"unterminated", b, sizeof b), -EINVAL);
    TEST_EQ_INT(segd_multipart_boundary("multipart/mixed; boundary=abc", b, sizeof b), -EINVAL);
    TEST_EQ_INT(segd_multipart_boundary("multipart/form-data; boundary=\"ends \"", b, sizeof b), -EINVAL);
    TEST_EQ_INT(segd_multipart_boundary("multipart/form-data; boundary=\"bad\x01\"", b, sizeof b), -EINVAL);
    char long_ct[200];
    snprintf(long_ct, sizeof long_ct, "multipart/form-data; boundary=%071d", 0);
    TEST_EQ_INT(segd_multipart_boundary(long_ct, b, sizeof b), -EINVAL);
    TEST_EQ_INT(segd_multipart_boundary(NULL, b, sizeof b), -EINVAL);
}

static void test_wellformed(void)
{
    segd_multipart_part p[4];
    size_t n;
    const char *body =
        "preamble to ignore\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename=\"a \\\"q\\\".png\"\r\n"
        "Content-Type: image/png\r\n"
        "\r\n"
        "AAAA\r\n--XyZ-not-a-delimiter\r\nstill data\r\n"
        "--XyZ  \r\n"
        "content-disposition: FORM-DATA; name=file\r\n"
        "\r\n"
        "\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"note\"\r\n"
        "X-Other: ignored\r\n"
        "\r\n"
        "hi\r\n"
        "--XyZ--\r\n"
        "epilogue";
    TEST_EQ_INT(parse(body, "XyZ", p, 4, &n), 0);
    TEST_EQ_INT(n, 3);
    TEST_EQ_STR(p[0].name, "file");
    TEST_EQ_STR(p[0].filename, "a \"q\".png");
    TEST_CHECK(p[0].has_filename);
    TEST_EQ_STR(p[0].content_type, "image/png");
    const char *want0 = "AAAA\r\n--XyZ-not-a-delimiter\r\nstill data";
    TEST_EQ_INT(p[0].len, strlen(want0));
    TEST_CHECK(memcmp(p[0].data, want0, p[0].len) == 0);
    TEST_EQ_STR(p[1].name, "file");
    TEST_CHECK(!p[1].has_filename);
    TEST_EQ_INT(p[1].len, 0);
    TEST_EQ_STR(p[2].name, "note");
    TEST_EQ_INT(p[2].len, 2);

    /* binary content with NULs and CR/LF inside */
    uint8_t bin[] = "--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n\0\r\n\0\r--b\r\n\r\n--b--";
    TEST_EQ_INT(segd_multipart_parse(bin, sizeof bin - 1, "b", p, 4, &n), 0);
    TEST_EQ_INT(n, 1);
    TEST_EQ_INT(p[0].len, 10); /* "\0\r\n\0\r--b\r\n": no CRLF before the first --b */

    /* Windows path: backslashes not followed by '"' or '\\' are literal */
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; filename=\"C:\\d\\x.png\"\r\n\r\n"
                      "x\r\n--b--", "b", p, 4, &n), 0);
    TEST_EQ_STR(p[0].filename, "C:\\d\\x.png");
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; filename=\"a\\\\b\"\r\n\r\n"
                      "x\r\n--b--", "b", p, 4, &n), 0);
    TEST_EQ_STR(p[0].filename, "a\\b");

    /* closing delimiter with no trailing CRLF, no preamble */
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--b--", "b", p, 4, &n), 0);
    TEST_EQ_INT(n, 1);
    TEST_EQ_INT(p[0].len, 1);
}

static void test_limits(void)
{
    segd_multipart_part p[2];
    size_t n;
    const char *three =
        "--b\r\nContent-Disposition: form-data; name=file\r\n\r\n1\r\n"
        "--b\r\nContent-Disposition: form-data; name=file\r\n\r\n2\r\n"
        "--b\r\nContent-Disposition: form-data; name=file\r\n\r\n3\r\n--b--\r\n";
    TEST_EQ_INT(parse(three, "b", p, 2, &n), -E2BIG);
    TEST_EQ_INT(n, 2);
}

static void test_malformed(void)
{
    segd_multipart_part p[4];
    size_t n;
    const char *bad[] = {
        "",                                                          /* empty */
        "no delimiter at all",                                       /* no delimiter */
        "--b\r\nContent-Disposition: form-data; name=file\r\n\r\nunterminated", /* no close */
        "--b\r\nContent-Disposition: form-data; name=file\r\n",      /* header block not ended */
        "--b\r\nContent-Type: image/png\r\n\r\nx\r\n--b--",          /* no disposition */
        "--b\r\nContent-Disposition: attachment; name=file\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=\"unterminated\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=file\r\n folded\r\n\r\nx\r\n--b--",
        "--b\r\nno colon here\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\nx\r\n--b--",
        "--bjunk\r\n",                                               /* not a delimiter line */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse(bad[i], "b", p, 4, &n);
        if (rc != -EINVAL)
            fprintf(stderr, "  case %zu: rc %d\n", i, rc);
        TEST_EQ_INT(rc, -EINVAL);
    }
    /* a header line over 8 KiB */
    size_t big = 9000;
    char *body = malloc(big + 64);
    TEST_REQUIRE(body);
    strcpy(body, "--b\r\nX-Long: ");
    memset(body + strlen(body), 'a', big);
    strcpy(body + 13 + big, "\r\n\r\nx\r\n--b--");
    TEST_EQ_INT(parse(body, "b", p, 4, &n), -EINVAL);
    free(body);
    /* a field name too long is still malformed (it cannot be "file") */
    char fb[1024];
    snprintf(fb, sizeof fb, "--b\r\nContent-Disposition: form-data; name=\"%0300d\"\r\n\r\nx\r\n--b--", 0);
    TEST_EQ_INT(parse(fb, "b", p, 4, &n), -EINVAL);
}

/* 1 when s is well-formed UTF-8 */
static int utf8_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t k = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
        if (!k)
            return 0;
        for (size_t i = 1; i < k; i++)
            if ((p[i] & 0xc0) != 0x80)
                return 0;
        p += k;
    }
    return 1;
}

/* issue 11 item 6: long names accepted (shortened on a character
 * boundary), filename*= (RFC 5987) and RFC 2047 words decoded, UTF-8 kept */
static void test_filenames(void)
{
    segd_multipart_part p[2];
    size_t n;
    static char body[20000];
    const char *cjk = "\xe8\x83\x83"; /* U+80C3, 3 bytes */

    /* 85 CJK characters (255 bytes) + ".png": refused before */
    char name[4096] = "";
    for (int i = 0; i < 85; i++)
        strcat(name, cjk);
    strcat(name, ".png");
    snprintf(body, sizeof body, "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n\r\nx\r\n--b--", name);
    TEST_EQ_INT(parse(body, "b", p, 2, &n), 0);
    TEST_EQ_INT(n, 1);
    TEST_EQ_STR(p[0].filename, name);

    /* 1300 CJK characters (3900 bytes): shortened to a whole character */
    name[0] = '\0';
    for (int i = 0; i < 1300; i++)
        strcat(name, cjk);
    snprintf(body, sizeof body, "--b\r\nContent-Disposition: form-data; name=file; filename=\"%s\"\r\n\r\nx\r\n--b--", name);
    TEST_EQ_INT(parse(body, "b", p, 2, &n), 0);
    TEST_CHECK(strlen(p[0].filename) <= SEGD_MULTIPART_FILENAME_MAX - 1);
    TEST_EQ_INT(strlen(p[0].filename) % 3, 0);
    TEST_CHECK(utf8_ok(p[0].filename));

    /* filename*= wins over filename=, UTF-8 and ISO-8859-1 */
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; filename=\"x.png\"; "
                      "filename*=UTF-8''%E8%83%83%20a.png\r\n\r\nx\r\n--b--", "b", p, 2, &n), 0);
    TEST_EQ_STR(p[0].filename, "\xe8\x83\x83 a.png");
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; "
                      "filename*=iso-8859-1'fr'caf%E9.png\r\n\r\nx\r\n--b--", "b", p, 2, &n), 0);
    TEST_EQ_STR(p[0].filename, "caf\xc3\xa9.png");
    TEST_CHECK(p[0].has_filename);
    /* undecodable filename*: the plain one stays */
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; filename=\"x.png\"; "
                      "filename*=koi8-r''%E9.png\r\n\r\nx\r\n--b--", "b", p, 2, &n), 0);
    TEST_EQ_STR(p[0].filename, "x.png");
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; filename=\"x.png\"; "
                      "filename*=UTF-8''%FF.png\r\n\r\nx\r\n--b--", "b", p, 2, &n), 0);
    TEST_EQ_STR(p[0].filename, "x.png");

    /* RFC 2047 encoded words, B and Q */
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; "
                      "filename=\"=?UTF-8?B?6IOD44K544Op44Kk44K5LnBuZw==?=\"\r\n\r\nx\r\n--b--", "b", p, 2, &n), 0);
    TEST_EQ_STR(p[0].filename, "\xe8\x83\x83\xe3\x82\xb9\xe3\x83\xa9\xe3\x82\xa4\xe3\x82\xb9.png");
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; "
                      "filename=\"=?utf-8?Q?=E8=83=83_1.png?=\"\r\n\r\nx\r\n--b--", "b", p, 2, &n), 0);
    TEST_EQ_STR(p[0].filename, "\xe8\x83\x83 1.png");
    /* not encoded words: left as sent */
    TEST_EQ_INT(parse("--b\r\nContent-Disposition: form-data; name=file; "
                      "filename=\"=?x.png\"\r\n\r\nx\r\n--b--", "b", p, 2, &n), 0);
    TEST_EQ_STR(p[0].filename, "=?x.png");
}

/* Every prefix and every one-byte corruption of a valid body: no crash,
 * and a result in {0, -EINVAL, -E2BIG} with parts inside the body. */
static void test_mutations(void)
{
    const char *base =
        "--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.png\"\r\n"
        "Content-Type: image/png\r\n\r\n\x89PNG data\r\n"
        "--xx\r\nContent-Disposition: form-data; name=file\r\n\r\nmore\r\n--xx--\r\n";
    size_t len = strlen(base);
    uint8_t *buf = malloc(len);
    TEST_REQUIRE(buf);
    segd_multipart_part p[2];
    size_t n;
    int bad = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        memcpy(buf, base, len);
        int rc = segd_multipart_parse(buf, cut, "xx", p, 2, &n);
        bad += !(rc == 0 || rc == -EINVAL || rc == -E2BIG);
        for (size_t i = 0; i < n && rc == 0; i++)
            bad += p[i].data < buf || p[i].data + p[i].len > buf + cut;
    }
    const uint8_t subst[] = {0, '\r', '\n', '-', '"', ';', '=', ':', 'x', 0xff};
    for (size_t i = 0; i < len; i++)
        for (size_t k = 0; k < sizeof subst; k++) {
            memcpy(buf, base, len);
            buf[i] = subst[k];
            int rc = segd_multipart_parse(buf, len, "xx", p, 2, &n);
            bad += !(rc == 0 || rc == -EINVAL || rc == -E2BIG);
            for (size_t j = 0; j < n && rc == 0; j++)
                bad += p[j].data < buf || p[j].data + p[j].len > buf + len;
        }
    TEST_EQ_INT(bad, 0);
    free(buf);
}

/* multipart/related (RFC 2387) as DICOMweb sends instances: parts without
 * Content-Disposition, their Content-Type kept; the boundary and type
 * parameters of the request's Content-Type. */
static void test_related(void)
{
    char b[SEGD_MULTIPART_BOUNDARY_MAX + 1], t[64];
    const char *ct = "Multipart/Related; type=\"application/dicom\"; boundary=abc";
    TEST_EQ_INT(segd_multipart_boundary_of(ct, "multipart/related", b, sizeof b), 0);
    TEST_EQ_STR(b, "abc");
    TEST_EQ_INT(segd_multipart_boundary_of(ct, "multipart/form-data", b, sizeof b), -EINVAL);
    TEST_EQ_INT(segd_multipart_boundary(ct, b, sizeof b), -EINVAL);
    TEST_EQ_INT(segd_multipart_param(ct, "type", t, sizeof t), 0);
    TEST_EQ_STR(t, "application/dicom");
    TEST_EQ_INT(segd_multipart_param("multipart/related; boundary=x", "type", t, sizeof t), -ENOENT);
    TEST_EQ_STR(t, "");
    TEST_EQ_INT(segd_multipart_param("multipart/related; type=\"unterminated", "type", t, sizeof t),
                -EINVAL);
    TEST_EQ_INT(segd_multipart_param("multipart/related; type=application/dicom", "type", t, 8),
                -EINVAL); /* does not fit */

    segd_multipart_part p[4];
    size_t n;
    const char *body = "--abc\r\n"
                       "Content-Type: application/dicom\r\n"
                       "Content-Location: /x/1\r\n"
                       "\r\n"
                       "DICM1\r\n"
                       "--abc\r\n"
                       "Content-Disposition: attachment; filename=\"b.dcm\"\r\n"
                       "\r\n"
                       "DICM2\r\n"
                       "--abc--\r\n";
    TEST_EQ_INT(segd_multipart_parse_related((const uint8_t *)body, strlen(body), "abc", p, 4, &n), 0);
    TEST_EQ_INT(n, 2);
    TEST_EQ_STR(p[0].content_type, "application/dicom");
    TEST_CHECK(p[0].len == 5 && memcmp(p[0].data, "DICM1", 5) == 0);
    TEST_CHECK(p[1].len == 5 && memcmp(p[1].data, "DICM2", 5) == 0);
    TEST_EQ_STR(p[1].name, ""); /* not form-data: no name, no file name */
    TEST_CHECK(!p[1].has_filename);
    /* the same body is no form-data (no Content-Disposition: form-data) */
    TEST_EQ_INT(parse(body, "abc", p, 4, &n), -EINVAL);
    /* the limit and malformed bodies as for form-data */
    TEST_EQ_INT(segd_multipart_parse_related((const uint8_t *)body, strlen(body), "abc", p, 1, &n),
                -E2BIG);
    TEST_EQ_INT(segd_multipart_parse_related((const uint8_t *)body, strlen(body) - 9, "abc", p, 4,
                                             &n), -EINVAL);
}

int main(void)
{
    test_boundary();
    test_related();
    test_wellformed();
    test_limits();
    test_malformed();
    test_filenames();
    test_mutations();
    return test_report("test_multipart");
}
