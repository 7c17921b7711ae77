/* The "dicom" object of a DICOM slice's answer (`segd infer` on a .dcm
 * file, POST /v1/segment with application/dicom, each slice of POST
 * /v1/series): the instance's identity and geometry, under DICOM keywords. */
#ifndef SEGD_API_DICOM_JSON_H
#define SEGD_API_DICOM_JSON_H

#include <jansson.h>

#include "segd/dicom.h"

/* {SOPClassUID, SOPInstanceUID, SeriesInstanceUID, StudyInstanceUID,
 *  FrameOfReferenceUID, PixelSpacing [row, column] mm,
 *  ImagePositionPatient [x, y, z] mm, ImageOrientationPatient [6],
 *  InstanceNumber}: absent attributes are left out.  A new reference,
 * or NULL on OOM. */
json_t *segd_dicom_image_json(const segd_dicom_image *im);

#endif
