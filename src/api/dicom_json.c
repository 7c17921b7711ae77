/* The "dicom" object of a DICOM slice's answer (see dicom_json.h): one
 * builder for the CLI and the server so that the two cannot differ. */
#include "api/dicom_json.h"

#include <stdbool.h>
#include <stddef.h>

json_t *segd_dicom_image_json(const segd_dicom_image *im)
{
    json_t *d = json_object();
    if (!d)
        return NULL;
    const char *keys[] = {"SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID",
                          "StudyInstanceUID", "FrameOfReferenceUID"};
    const char *vals[] = {im->sop_class_uid, im->sop_instance_uid, im->series_instance_uid,
                          im->study_instance_uid, im->frame_of_reference_uid};
    bool ok = true;
    for (size_t i = 0; ok && i < sizeof keys / sizeof keys[0]; i++)
        if (vals[i][0])
            ok = json_object_set_new(d, keys[i], json_string(vals[i])) == 0;
    if (ok && im->pixel_spacing[0] > 0 && im->pixel_spacing[1] > 0)
        ok = json_object_set_new(d, "PixelSpacing",
                                 json_pack("[f,f]", im->pixel_spacing[0], im->pixel_spacing[1])) == 0;
    /* the geometry the series order and the contours rest on */
    bool geometry = !im->geometry_missing;
    if (ok && geometry)
        ok = json_object_set_new(d, "ImagePositionPatient",
                                 json_pack("[f,f,f]", im->position[0], im->position[1],
                                           im->position[2])) == 0 &&
             json_object_set_new(d, "ImageOrientationPatient",
                                 json_pack("[f,f,f,f,f,f]", im->orientation[0],
                                           im->orientation[1], im->orientation[2],
                                           im->orientation[3], im->orientation[4],
                                           im->orientation[5])) == 0;
    if (ok && im->instance_number)
        ok = json_object_set_new(d, "InstanceNumber", json_integer(im->instance_number)) == 0;
    if (!ok) {
        json_decref(d);
        return NULL;
    }
    return d;
}
