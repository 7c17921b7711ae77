/* Test driver of the DICOM module for the Python checks: reads DICOM files,
 * orders a series, and writes a SEG and an RTSTRUCT from raw masks.
 *
 *   segd-dicom-tool read [--max-pixels N] [--raw OUT.f32] FILE
 *       prints the image's attributes as key=value lines; --raw writes the
 *       rows x cols float32 pixels (native endian)
 *   segd-dicom-tool order FILE...
 *       prints the indices of FILE... in series order, one a line
 *   segd-dicom-tool write --masks M.u8 [--seg OUT] [--rtstruct OUT]
 *                   [--name NAME] [--version SHA256] FILE...
 *       M.u8 holds, for each FILE in the order given, 3 x rows x cols bytes
 *       (organ-major); the slices and their masks are put in series order
 *       first.  Prints the order like `order`.
 *
 * Exit status: 0, or 1 with "error <errno name> <message>" on stderr
 * (errno as a negative number: e.g. "error -95 ..."). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "segd/dicom.h"

static int write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -errno;
    int rc = fwrite(buf, 1, len, f) == len ? 0 : -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -EIO;
    return rc;
}

static int cmd_read(int argc, char **argv)
{
    size_t max_pixels = 1u << 24;
    const char *raw = NULL, *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--max-pixels") && i + 1 < argc)
            max_pixels = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--raw") && i + 1 < argc)
            raw = argv[++i];
        else
            path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "read: no file\n");
        return 2;
    }
    segd_dicom_image *im = NULL;
    char err[512];
    int rc = segd_dicom_read_file(path, max_pixels, &im, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "error %d %s\n", rc, err);
        return 1;
    }
    printf("rows=%d\ncols=%d\nbits_stored=%d\n", im->rows, im->cols, im->bits_stored);
    printf("pixel_spacing=%.17g\\%.17g\n", im->pixel_spacing[0], im->pixel_spacing[1]);
    printf("position=%.17g\\%.17g\\%.17g\n", im->position[0], im->position[1], im->position[2]);
    printf("orientation=");
    for (int k = 0; k < 6; k++)
        printf("%s%.17g", k ? "\\" : "", im->orientation[k]);
    printf("\nslice_thickness=%.17g\ninstance_number=%d\n", im->slice_thickness,
           im->instance_number);
    printf("geometry_missing=%s\n", im->geometry_missing ? im->geometry_missing : "");
    printf("sop_class_uid=%s\nsop_instance_uid=%s\nseries_instance_uid=%s\n",
           im->sop_class_uid, im->sop_instance_uid, im->series_instance_uid);
    printf("study_instance_uid=%s\nframe_of_reference_uid=%s\nmodality=%s\n",
           im->study_instance_uid, im->frame_of_reference_uid, im->modality);
    printf("transfer_syntax_uid=%s\npatient_name=%s\npatient_id=%s\n", im->transfer_syntax_uid,
           im->patient_name, im->patient_id);
    printf("patient_birth_date=%s\npatient_sex=%s\nstudy_date=%s\nstudy_time=%s\n",
           im->patient_birth_date, im->patient_sex, im->study_date, im->study_time);
    printf("study_id=%s\naccession_number=%s\nreferring_physician_name=%s\n", im->study_id,
           im->accession_number, im->referring_physician_name);
    printf("study_description=%s\nseries_number=%s\nspecific_character_set=%s\n",
           im->study_description, im->series_number, im->specific_character_set);
    if (raw && (rc = write_file(raw, im->pixels,
                                (size_t)im->rows * (size_t)im->cols * sizeof(float))) < 0) {
        fprintf(stderr, "error %d %s: %s\n", rc, raw, strerror(-rc));
        segd_dicom_image_free(im);
        return 1;
    }
    segd_dicom_image_free(im);
    return 0;
}

/* order and write share everything but the writing */
static int cmd_series(int argc, char **argv, int write)
{
    const char *masks_path = NULL, *seg_path = NULL, *rt_path = NULL;
    segd_dicom_algorithm alg = {"unet3p-test", "0000000000000000000000000000000000000000000000000000000000000000",
                                "segd-test", NULL, 0};
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    segd_dicom_image **im = calloc((size_t)argc + 1, sizeof *im);
    const segd_dicom_image **sorted = calloc((size_t)argc + 1, sizeof *sorted);
    const uint8_t **mk = calloc((size_t)argc + 1, sizeof *mk);
    size_t *order = calloc((size_t)argc + 1, sizeof *order);
    uint8_t *masks = NULL;
    void *out = NULL;
    size_t n = 0, outlen = 0;
    int status = 1, rc = 0;
    char err[512] = "";
    if (!files || !im || !sorted || !mk || !order) {
        fprintf(stderr, "error %d out of memory\n", -ENOMEM);
        goto cleanup;
    }
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--masks") && i + 1 < argc)
            masks_path = argv[++i];
        else if (!strcmp(argv[i], "--seg") && i + 1 < argc)
            seg_path = argv[++i];
        else if (!strcmp(argv[i], "--rtstruct") && i + 1 < argc)
            rt_path = argv[++i];
        else if (!strcmp(argv[i], "--name") && i + 1 < argc)
            alg.name = argv[++i];
        else if (!strcmp(argv[i], "--version") && i + 1 < argc)
            alg.version = argv[++i];
        else
            files[n++] = argv[i];
    }
    if (n == 0 || (write && !masks_path)) {
        fprintf(stderr, "usage: see the top of segd_dicom_tool.c\n");
        status = 2;
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = segd_dicom_read_file(files[i], 1u << 24, &im[i], err, sizeof err)) < 0)
            goto fail;
    if ((rc = segd_dicom_series_order((const segd_dicom_image *const *)im, n, order, err,
                                      sizeof err)) < 0)
        goto fail;
    for (size_t k = 0; k < n; k++)
        printf("%zu\n", order[k]);
    fflush(stdout);
    if (write) {
        size_t per = (size_t)SEGD_DICOM_NUM_ORGANS * (size_t)im[0]->rows * (size_t)im[0]->cols;
        masks = malloc(per * n);
        FILE *f = fopen(masks_path, "rb");
        if (!masks || !f || fread(masks, 1, per * n, f) != per * n) {
            fprintf(stderr, "error %d %s: cannot read %zu bytes\n", -EIO, masks_path, per * n);
            if (f)
                fclose(f);
            goto cleanup;
        }
        fclose(f);
        for (size_t k = 0; k < n; k++) {
            sorted[k] = im[order[k]];
            mk[k] = masks + per * order[k];
        }
        if (seg_path) {
            if ((rc = segd_dicom_write_seg(sorted, n, mk, &alg, &out, &outlen, err, sizeof err)) < 0)
                goto fail;
            if ((rc = write_file(seg_path, out, outlen)) < 0) {
                snprintf(err, sizeof err, "%s: %s", seg_path, strerror(-rc));
                goto fail;
            }
            segd_dicom_buffer_free(out);
            out = NULL;
        }
        if (rt_path) {
            if ((rc = segd_dicom_write_rtstruct(sorted, n, mk, &alg, &out, &outlen, err,
                                                sizeof err)) < 0)
                goto fail;
            if ((rc = write_file(rt_path, out, outlen)) < 0) {
                snprintf(err, sizeof err, "%s: %s", rt_path, strerror(-rc));
                goto fail;
            }
        }
    }
    status = 0;
    goto cleanup;
fail:
    fprintf(stderr, "error %d %s\n", rc, err);
cleanup:
    segd_dicom_buffer_free(out);
    free(masks);
    if (im)
        for (size_t i = 0; i < n; i++)
            segd_dicom_image_free(im[i]);
    free(order);
    free(mk);
    free(sorted);
    free(im);
    free(files);
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "read"))
        return cmd_read(argc - 2, argv + 2);
    if (argc >= 2 && !strcmp(argv[1], "order"))
        return cmd_series(argc - 2, argv + 2, 0);
    if (argc >= 2 && !strcmp(argv[1], "write"))
        return cmd_series(argc - 2, argv + 2, 1);
    fprintf(stderr, "usage: segd-dicom-tool read|order|write ... (see its source)\n");
    return 2;
}
