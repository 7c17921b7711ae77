/* Weights loader: the valid fixture loads; corrupt variants generated here
 * from it (truncated, wrong shape/dtype, missing/extra/duplicate tensor, bad
 * header JSON, offsets out of range or overlapping, wrong format, header
 * length beyond the file) are each refused with a message naming the
 * problem. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../harness.h"
#include "io/sha256.h"
#include "segd/engine.h"

static unsigned char *file;   /* the valid fixture */
static size_t file_len;
static json_t *header;        /* its parsed header */
static const unsigned char *data_sec;
static size_t data_len;
static char tmpdir[] = "/tmp/segd-test-weights-XXXXXX";

static void load_fixture(const char *path)
{
    FILE *f = fopen(path, "rb");
    TEST_REQUIRE(f);
    fseek(f, 0, SEEK_END);
    file_len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    file = malloc(file_len);
    TEST_REQUIRE(file && fread(file, 1, file_len, f) == file_len);
    fclose(f);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | file[i];
    header = json_loadb((const char *)file + 8, hl, 0, NULL);
    TEST_REQUIRE(header);
    data_sec = file + 8 + hl;
    data_len = file_len - 8 - hl;
}

/* Write u64 length + header text + data section; returns the path. */
static const char *write_variant(const char *name, const char *htext, size_t hlen,
                                 uint64_t claimed, const unsigned char *data, size_t dlen)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", tmpdir, name);
    FILE *f = fopen(path, "wb");
    TEST_REQUIRE(f);
    unsigned char l[8];
    for (int i = 0; i < 8; i++)
        l[i] = (unsigned char)(claimed >> (8 * i));
    TEST_REQUIRE(fwrite(l, 1, 8, f) == 8);
    TEST_REQUIRE(fwrite(htext, 1, hlen, f) == hlen);
    TEST_REQUIRE(dlen == 0 || fwrite(data, 1, dlen, f) == dlen);
    TEST_REQUIRE(fclose(f) == 0);
    return path;
}

static const char *write_header(const char *name, json_t *h)
{
    char *t = json_dumps(h, JSON_COMPACT);
    TEST_REQUIRE(t);
    const char *p = write_variant(name, t, strlen(t), strlen(t), data_sec, data_len);
    free(t);
    return p;
}

/* Load path; require failure with err containing want. */
static void expect_refused(const char *what, const char *path, const char *want)
{
    segd_model *m = (segd_model *)1;
    char err[512] = "";
    int rc = segd_model_load(path, &m, err, sizeof err);
    fprintf(stderr, "  %-22s -> rc %d: %s\n", what, rc, err);
    TEST_CHECK(rc < 0);
    TEST_CHECK(m == NULL);
    if (!strstr(err, want))
        fprintf(stderr, "    expected the message to contain '%s'\n", want);
    TEST_CHECK(strstr(err, want) != NULL);
}

static json_t *hcopy(void) { return json_deep_copy(header); }

/* The fixture with its "preprocess" metadata replaced by pp, written as
 * variant `name`; returns its path. */
static const char *with_preprocess(const char *name, const char *pp)
{
    json_t *h = hcopy();
    json_object_set_new(json_object_get(h, "__metadata__"), "preprocess", json_string(pp));
    const char *p = write_header(name, h);
    json_decref(h);
    return p;
}

int main(int argc, char **argv)
{
    TEST_REQUIRE(argc == 2);
    TEST_REQUIRE(mkdtemp(tmpdir));
    load_fixture(argv[1]);

    /* The valid file loads, with its metadata. */
    segd_model *m = NULL;
    char err[512];
    int rc = segd_model_load(argv[1], &m, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    TEST_REQUIRE(rc == 0);
    TEST_EQ_INT(segd_model_width(m), 4);
    TEST_EQ_INT(segd_model_num_classes(m), 3);
    TEST_EQ_STR(segd_model_class_name(m, 0), "large_bowel");
    TEST_EQ_STR(segd_model_class_name(m, 2), "stomach");
    TEST_CHECK(segd_model_class_name(m, 3) == NULL);
    TEST_EQ_INT(strlen(segd_model_sha256(m)), 64);
    int gh, gw;
    segd_model_grid(m, &gh, &gw);
    TEST_EQ_INT(gh, 256);
    TEST_EQ_INT(gw, 256);
    TEST_CHECK(segd_model_flops(m) > 1e8);
    json_t *info = segd_model_info_json(m);
    TEST_CHECK(json_is_array(json_object_get(info, "classes")));
    TEST_CHECK(json_is_object(json_object_get(info, "preprocess")));
    TEST_EQ_STR(json_string_value(json_object_get(info, "sha256")), segd_model_sha256(m));
    json_decref(info);
    segd_model_free(m);
    segd_model_free(NULL);

    /* The same bytes rewritten by this test still load (sanity of the writer). */
    json_t *h = hcopy();
    const char *p = write_header("identity", h);
    TEST_CHECK(segd_model_load(p, &m, err, sizeof err) == 0);
    segd_model_free(m);
    json_decref(h);

    fprintf(stderr, "refusals:\n");
    expect_refused("missing file", "/nonexistent/x.safetensors", "No such file");
    {
        /* truncated: cut the data section in half */
        size_t hl = (size_t)(data_sec - file) - 8;
        p = write_variant("trunc-data", (const char *)file + 8, hl, hl, data_sec, data_len / 2);
        expect_refused("truncated data", p, "out of range");
        /* truncated inside the header: the claimed length runs past the end */
        p = write_variant("trunc-header", (const char *)file + 8, hl / 2, hl, NULL, 0);
        expect_refused("truncated header", p, "beyond end of file");
        p = write_variant("tiny", "", 0, 0, NULL, 0);
        expect_refused("header only", p, "");
        p = write_variant("hlen", (const char *)file + 8, hl, (uint64_t)file_len * 4, data_sec,
                          data_len);
        expect_refused("header len > file", p, "beyond end of file");
        p = write_variant("badjson", "{\"a\":", 5, 5, data_sec, data_len);
        expect_refused("bad header JSON", p, "bad header JSON");
    }

    h = hcopy();
    json_object_set_new(json_object_get(h, "enc.0.0.conv.weight"), "dtype", json_string("F16"));
    expect_refused("wrong dtype", write_header("dtype", h), "enc.0.0.conv.weight");
    json_decref(h);

    h = hcopy(); /* same element count, wrong shape: caught by the architecture check */
    json_object_set_new(json_object_get(h, "enc.0.0.conv.weight"), "shape",
                        json_pack("[i,i,i,i]", 2, 2, 3, 3));
    expect_refused("wrong shape", write_header("shape", h), "enc.0.0.conv.weight");
    json_decref(h);

    h = hcopy(); /* shape disagreeing with the byte count */
    json_object_set_new(json_object_get(h, "dec.3.fuse.bn.bias"), "shape", json_pack("[i]", 21));
    expect_refused("shape vs bytes", write_header("shape2", h), "dec.3.fuse.bn.bias");
    json_decref(h);

    h = hcopy();
    json_object_del(h, "head.bias");
    expect_refused("missing tensor", write_header("missing", h), "missing tensor 'head.bias'");
    json_decref(h);

    h = hcopy();
    json_object_set_new(h, "ds.0.weight", json_deep_copy(json_object_get(h, "head.bias")));
    json_object_set_new(json_object_get(h, "ds.0.weight"), "data_offsets",
                        json_pack("[I,I]", (json_int_t)data_len, (json_int_t)data_len));
    json_object_set_new(json_object_get(h, "ds.0.weight"), "shape", json_pack("[i]", 0));
    expect_refused("extra tensor", write_header("extra", h), "ds.0.weight");
    json_decref(h);

    h = hcopy();
    json_object_set_new(json_object_get(h, "cls.bias"), "data_offsets",
                        json_pack("[I,I]", (json_int_t)data_len, (json_int_t)data_len + 12));
    expect_refused("offsets out of range", write_header("range", h), "cls.bias");
    json_decref(h);

    h = hcopy();
    json_object_set_new(json_object_get(h, "cls.bias"), "data_offsets",
                        json_deep_copy(json_object_get(json_object_get(h, "head.bias"),
                                                       "data_offsets")));
    expect_refused("overlapping", write_header("overlap", h), "overlaps");
    json_decref(h);

    {
        /* duplicate key: splice a second "head.bias" entry into the text */
        h = hcopy();
        char *t = json_dumps(h, JSON_COMPACT);
        char *e = json_dumps(json_object_get(h, "head.bias"), JSON_COMPACT);
        size_t cap = strlen(t) + strlen(e) + 32;
        char *d = malloc(cap);
        TEST_REQUIRE(t && e && d);
        snprintf(d, cap, "{\"head.bias\":%s,%s", e, t + 1);
        p = write_variant("dup", d, strlen(d), strlen(d), data_sec, data_len);
        expect_refused("duplicate tensor", p, "head.bias");
        free(t);
        free(e);
        free(d);
        json_decref(h);
    }

    h = hcopy();
    json_object_set_new(json_object_get(h, "__metadata__"), "format", json_string("segd-unet3p-v0"));
    expect_refused("wrong format", write_header("format", h), "format");
    json_decref(h);

    h = hcopy();
    json_object_set_new(json_object_get(h, "__metadata__"), "width", json_string("8"));
    expect_refused("width vs shapes", write_header("width", h), "enc.0.0.conv.weight");
    json_decref(h);

    h = hcopy();
    json_object_set_new(json_object_get(h, "__metadata__"), "width", json_integer(4));
    expect_refused("metadata not string", write_header("metaint", h), "width");
    json_decref(h);

    h = hcopy();
    json_object_set_new(json_object_get(h, "__metadata__"), "classes", json_string("[\"a\""));
    expect_refused("bad classes", write_header("classes", h), "classes");
    json_decref(h);

    expect_refused("bad grid", with_preprocess("grid", "{\"input_size\":[0,256]}"), "input_size");

    /* preprocess.tta_gamma: 1..8 powers in [0.1, 10]; a preprocess step
     * this engine does not implement refuses the file instead of running
     * it without the step. */
    {
        static const char *const bad_tta[] = {
            "[]", "[1, 0]", "[1, 20]", "[\"1\"]", "0.75", "[1,1,1,1,1,1,1,1,1]"};
        for (size_t i = 0; i < sizeof bad_tta / sizeof bad_tta[0]; i++) {
            char pp[160];
            snprintf(pp, sizeof pp, "{\"input_size\":[64,64],\"tta_gamma\":%s}", bad_tta[i]);
            expect_refused(bad_tta[i], with_preprocess("tta", pp), "tta_gamma");
        }
        expect_refused("unknown step",
                       with_preprocess("step", "{\"input_size\":[64,64],\"tta_flip\":true}"),
                       "preprocess.tta_flip");
        p = with_preprocess("tta-ok", "{\"input_size\":[64,64],\"tta_gamma\":[0.75,1,1.5]}");
        segd_model *mt = NULL;
        TEST_CHECK(segd_model_load(p, &mt, err, sizeof err) == 0);
        segd_model_free(mt);
    }

    /* normalisation histogram_match: reference_quantiles must be 2..257
     * finite non-decreasing numbers, and only goes with that normalisation. */
    {
        static const char *const bad_ref[] = {
            "absent", "[]", "[0.5]", "[0, 1, 0.5]", "[0, \"1\"]", "0.5", "[0, null]"};
        for (size_t i = 0; i < sizeof bad_ref / sizeof bad_ref[0]; i++) {
            char pp[200];
            if (!strcmp(bad_ref[i], "absent"))
                snprintf(pp, sizeof pp, "{\"input_size\":[64,64],\"normalisation\":\"histogram_match\"}");
            else
                snprintf(pp, sizeof pp, "{\"input_size\":[64,64],\"normalisation\":\"histogram_match\","
                         "\"reference_quantiles\":%s}", bad_ref[i]);
            expect_refused(bad_ref[i], with_preprocess("ref", pp), "reference_quantiles");
        }
        char big[3200] = "{\"input_size\":[64,64],\"normalisation\":\"histogram_match\",\"reference_quantiles\":[0";
        for (int j = 1; j < 258; j++)
            strcat(big, ",1");
        strcat(big, "]}");
        expect_refused("258 quantiles", with_preprocess("ref", big), "reference_quantiles");
        expect_refused("quantiles without histogram_match",
                       with_preprocess("ref", "{\"input_size\":[64,64],\"normalisation\":\"percentile\","
                                              "\"reference_quantiles\":[0,1]}"),
                       "reference_quantiles");
        p = with_preprocess("ref-ok", "{\"input_size\":[64,64],\"normalisation\":\"histogram_match\","
                                      "\"reference_quantiles\":[0,0,0.25,1]}");
        segd_model *mh = NULL;
        TEST_CHECK(segd_model_load(p, &mh, err, sizeof err) == 0);
        segd_model_free(mh);
    }

    /* issue 11 item 13: the exporter's tensor_sha256 (digest of the data
     * section) is verified; a flipped data byte is refused naming it, a
     * malformed value too; a file without it (the fixture, exported
     * before) loads unverified. */
    {
        char hex[65];
        segd_sha256_hex(data_sec, data_len, hex);
        h = hcopy();
        json_object_set_new(json_object_get(h, "__metadata__"), "tensor_sha256", json_string(hex));
        p = write_header("checksum", h);
        rc = segd_model_load(p, &m, err, sizeof err);
        if (rc)
            fprintf(stderr, "%s\n", err);
        TEST_REQUIRE(rc == 0);
        TEST_EQ_INT(segd_model_data_verified(m), 1);
        info = segd_model_info_json(m);
        TEST_EQ_STR(json_string_value(json_object_get(info, "tensor_sha256")), hex);
        json_decref(info);
        segd_model_free(m);

        unsigned char *flipped = malloc(data_len);
        char *t = json_dumps(h, JSON_COMPACT);
        TEST_REQUIRE(flipped && t);
        memcpy(flipped, data_sec, data_len);
        flipped[data_len / 2] ^= 0x10;
        p = write_variant("flipped", t, strlen(t), strlen(t), flipped, data_len);
        expect_refused("flipped data byte", p, "tensor data checksum mismatch: __metadata__ tensor_sha256");
        flipped[data_len / 2] ^= 0x10;
        flipped[data_len - 1] ^= 0x01; /* the last byte (padding included) */
        p = write_variant("flipped-last", t, strlen(t), strlen(t), flipped, data_len);
        expect_refused("flipped last byte", p, "tensor_sha256");
        free(t);
        free(flipped);
        json_decref(h);

        h = hcopy();
        json_object_set_new(json_object_get(h, "__metadata__"), "tensor_sha256", json_string("abc"));
        expect_refused("malformed checksum", write_header("badsum", h), "tensor_sha256");
        json_decref(h);

        TEST_REQUIRE(segd_model_load(argv[1], &m, err, sizeof err) == 0);
        TEST_EQ_INT(segd_model_data_verified(m), 0);
        segd_model_free(m);
    }

    json_decref(header);
    free(file);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_report("test_weights");
}
