/* segd DICOM module: reads single-frame greyscale DICOM slices, orders them
 * into a series, and writes the masks segd computed for them back as a
 * DICOM Segmentation (SEG) and an RT Structure Set (RTSTRUCT).
 *
 * The module is C++ inside (DCMTK: dcmdata, dcmseg, dcmjpeg, dcmjpls and the
 * RLE codec) behind this C API; nothing here includes a DCMTK header and no
 * C++ exception crosses it.  The library reads no environment variable and
 * holds no mutable global state beyond DCMTK's codec registration, which the
 * first call does once (thread-safe, std::call_once); that call also sets
 * DCMTK's logger to FATAL, since every error reaches the caller in err.
 *
 * Typical use:
 *   segd_dicom_image *im[N]; char err[256];
 *   for (i...) if (segd_dicom_read_file(path[i], SEGD_DEFAULT_MAX_PIXELS, &im[i], err, sizeof err)) die(err);
 *   size_t order[N]; segd_dicom_series_order((const segd_dicom_image *const *)im, N, order, err, sizeof err);
 *   ... segment im[order[k]]->pixels into masks[k] (organ-major, see below) ...
 *   void *seg; size_t seglen;
 *   segd_dicom_write_seg(sorted, N, masks, &alg, &seg, &seglen, err, sizeof err);
 *   ... send seg ...; segd_dicom_buffer_free(seg);
 *
 * Coordinates: ImagePositionPatient (IPP) is the centre of the first
 * transmitted pixel (row 0, column 0) in the patient coordinate system (LPS,
 * mm).  ImageOrientationPatient (IOP) holds the row direction (the direction
 * of increasing column index) then the column direction (increasing row
 * index).  PixelSpacing[0] is the distance between rows (mm, along the column
 * direction), PixelSpacing[1] the distance between columns.  So the pixel at
 * (row r, column c) lies at (DICOM PS3.3 C.7.6.2.1.1)
 *     P = IPP + IOP[0..2] * PixelSpacing[1] * c + IOP[3..5] * PixelSpacing[0] * r.
 *
 * Errors: functions return 0 or a negative errno and write a one-line
 * message naming the DICOM attribute (keyword) or the reason into err:
 *   -EINVAL    not DICOM, truncated, a required attribute missing or malformed
 *   -EDOM      valid DICOM but not a single-frame greyscale image: no
 *              PixelData (not an image), multi-frame, colour, BitsAllocated
 *              other than 8 or 16 (HTTP 422)
 *   -ENOTSUP   an unsupported transfer syntax (named by UID and name; 415)
 *   -E2BIG     Rows x Columns over the caller's max_pixels
 *   -EXDEV     instances that do not belong to one series (SeriesInstanceUID,
 *              FrameOfReferenceUID, ImageOrientationPatient, Rows/Columns,
 *              PixelSpacing differ, or two share a position)
 *   -ENOMEM    out of memory
 *   -EIO       a DCMTK failure writing an object (message from DCMTK)
 */
#ifndef SEGD_DICOM_H
#define SEGD_DICOM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The organs segd writes, in segd's class order; masks are organ-major. */
#define SEGD_DICOM_NUM_ORGANS 3
/* Value lengths (+1 for the NUL): UI 64, LO 64, SH/CS/DA/TM/IS 16, PN up to
 * 5 components of 64 in three groups; longer values are -EINVAL. */
#define SEGD_DICOM_UI_LEN 65
#define SEGD_DICOM_LO_LEN 65
#define SEGD_DICOM_SH_LEN 17
#define SEGD_DICOM_PN_LEN 325

/* One decoded slice.  Every string is NUL-terminated, empty when the
 * attribute is absent (Type 2/3 attributes); the Type 1 ones listed at
 * segd_dicom_read are never empty. */
typedef struct segd_dicom_image {
    int rows, cols;                    /* Rows, Columns (>= 1) */
    float *pixels;                     /* rows x cols, row-major: stored value *
                                        * RescaleSlope + RescaleIntercept,
                                        * MONOCHROME1 inverted (owned) */
    double pixel_spacing[2];           /* PixelSpacing: [0] between rows, [1] between columns, mm */
    double position[3];                /* ImagePositionPatient, mm */
    double orientation[6];             /* ImageOrientationPatient: row dir, column dir (unit) */
    double slice_thickness;            /* SliceThickness, mm; 0 when absent */
    int bits_stored;                   /* BitsStored of the source */
    int instance_number;               /* InstanceNumber; 0 when absent */
    const char *geometry_missing;      /* keyword of the first absent geometry
                                        * attribute (PixelSpacing,
                                        * ImagePositionPatient,
                                        * ImageOrientationPatient,
                                        * FrameOfReferenceUID); NULL when
                                        * complete (static string) */
    char sop_class_uid[SEGD_DICOM_UI_LEN];          /* SOPClassUID */
    char sop_instance_uid[SEGD_DICOM_UI_LEN];       /* SOPInstanceUID */
    char series_instance_uid[SEGD_DICOM_UI_LEN];    /* SeriesInstanceUID */
    char study_instance_uid[SEGD_DICOM_UI_LEN];     /* StudyInstanceUID */
    char frame_of_reference_uid[SEGD_DICOM_UI_LEN]; /* FrameOfReferenceUID */
    char modality[SEGD_DICOM_SH_LEN];               /* Modality, e.g. "MR" */
    char transfer_syntax_uid[SEGD_DICOM_UI_LEN];    /* of the source file */
    /* Patient and General Study modules, copied into derived objects */
    char specific_character_set[SEGD_DICOM_LO_LEN]; /* SpecificCharacterSet */
    char patient_name[SEGD_DICOM_PN_LEN];           /* PatientName */
    char patient_id[SEGD_DICOM_LO_LEN];             /* PatientID */
    char patient_birth_date[SEGD_DICOM_SH_LEN];     /* PatientBirthDate */
    char patient_sex[SEGD_DICOM_SH_LEN];            /* PatientSex */
    char study_date[SEGD_DICOM_SH_LEN];             /* StudyDate */
    char study_time[SEGD_DICOM_SH_LEN];             /* StudyTime */
    char study_id[SEGD_DICOM_SH_LEN];               /* StudyID */
    char accession_number[SEGD_DICOM_SH_LEN];       /* AccessionNumber */
    char referring_physician_name[SEGD_DICOM_PN_LEN]; /* ReferringPhysicianName */
    char study_description[SEGD_DICOM_LO_LEN];      /* StudyDescription */
    char series_number[SEGD_DICOM_SH_LEN];          /* SeriesNumber (IS) */
} segd_dicom_image;

/* Decode one Part-10 file (128-byte preamble, "DICM", meta header) from len
 * bytes at buf (not kept; the caller keeps ownership).  Before DCMTK parses
 * it, every element header is checked to fit the input (lengths, nesting
 * under 16 levels), so that parsing allocates no more than the input's size
 * whatever the headers claim.  Accepted: one frame (NumberOfFrames absent
 * or 1), SamplesPerPixel 1, PhotometricInterpretation MONOCHROME1/2,
 * BitsAllocated 8 or 16 (signed or not), transfer syntaxes Implicit VR
 * Little Endian, Explicit VR Little Endian, JPEG Lossless (Process 14 and
 * its SV1), JPEG-LS Lossless and RLE Lossless.  Pixels: the BitsStored
 * bits below HighBit (sign-extended when PixelRepresentation is 1) times
 * RescaleSlope plus RescaleIntercept; MONOCHROME1 is inverted first over
 * the stored range (v -> min + max - v).
 * Required (Type 1 here): Rows, Columns, SOPClassUID, SOPInstanceUID,
 * SeriesInstanceUID, StudyInstanceUID, PixelData; the geometry attributes
 * (PixelSpacing, ImagePositionPatient, ImageOrientationPatient,
 * FrameOfReferenceUID) may be absent for reading, and the series and
 * writer functions then refuse the instance naming the attribute.  Rows x
 * Columns over max_pixels is -E2BIG before any pixel is decoded.  On
 * success *out is a new image (free with segd_dicom_image_free); on error
 * *out is NULL.  Thread-safe. */
int segd_dicom_read(const void *buf, size_t len, size_t max_pixels, segd_dicom_image **out,
                    char *err, size_t errlen);
/* Same from a file path (read whole into memory first; -errno of open/read). */
int segd_dicom_read_file(const char *path, size_t max_pixels, segd_dicom_image **out,
                         char *err, size_t errlen);
void segd_dicom_image_free(segd_dicom_image *im); /* NULL is fine */

/* Check that the n >= 1 images form one series fit for the writers (same
 * SeriesInstanceUID, StudyInstanceUID, PatientID, Modality,
 * FrameOfReferenceUID, Rows, Columns, PixelSpacing and
 * ImageOrientationPatient within 1e-4; geometry present; distinct
 * SOPInstanceUIDs) and order them along the slice normal n = row direction x
 * column direction, by key n . ImagePositionPatient, ascending.  order
 * (n entries, caller's storage) receives the indices into images in that
 * order; arrival order and file names play no part.  Two slices with keys
 * closer than 1e-3 mm are -EXDEV.  On error order is unspecified and err
 * names the attribute and the two instances (by index) that disagree. */
int segd_dicom_series_order(const segd_dicom_image *const *images, size_t n, size_t *order,
                            char *err, size_t errlen);

/* Who made the masks: written as the segment algorithm and the equipment. */
typedef struct segd_dicom_algorithm {
    const char *name;          /* model name, e.g. "unet3p-16" (AlgorithmName, LO) */
    const char *version;       /* weights sha256, hex (AlgorithmVersion, LO, <= 64) */
    const char *software_version; /* segd version (SoftwareVersions); NULL: "unknown" */
    const char *series_description; /* NULL: "segd <kind> <name>" */
    int series_number;         /* SeriesNumber of the new series; <= 0: 999 */
} segd_dicom_algorithm;

/* Write a DICOM Segmentation (BINARY, Explicit VR Little Endian, Part-10)
 * of the n slices, which must be in series order (segd_dicom_series_order;
 * checked again here: a series that fails it is that function's error).
 * masks[k] (for slices[k]) holds SEGD_DICOM_NUM_ORGANS x rows x cols bytes,
 * organ-major (large_bowel, small_bowel, stomach), each row-major; nonzero =
 * inside.  One segment per organ, coded with SNOMED CT (category Anatomical
 * Structure SCT 123037004; types large intestine 14742008, small intestine
 * 30315005, stomach 69695003), algorithm type AUTOMATIC, family Artificial
 * Intelligence (DCM 123110), name and version from alg.  One frame per
 * (organ, slice), empty frames included, in that order, each with its
 * PlanePositionSequence, its DerivationImageSequence naming the source SOP
 * instance and its FrameContentSequence; PixelMeasures and
 * PlaneOrientation shared.  Patient, study and FrameOfReferenceUID come
 * from slices[0]; the series and SOP instance UIDs are new.  On success
 * *out (free with segd_dicom_buffer_free) holds *outlen bytes. */
int segd_dicom_write_seg(const segd_dicom_image *const *slices, size_t n,
                         const uint8_t *const *masks, const segd_dicom_algorithm *alg,
                         void **out, size_t *outlen, char *err, size_t errlen);

/* Write an RT Structure Set (Explicit VR Little Endian, Part-10) of the same
 * input: one ROI per organ (ROINumber 1..3 in organ order, RTROIInterpretedType
 * ORGAN, ROIGenerationAlgorithm AUTOMATIC), each slice's mask traced into
 * CLOSED_PLANAR contours in patient coordinates (mm, formula above), each
 * contour referencing its slice's SOPInstanceUID in ContourImageSequence;
 * ReferencedFrameOfReferenceSequence lists every slice of the series.
 *
 * Contour tracing: crack following on the pixel-corner lattice (the border
 * between inside and outside pixels walked along pixel sides; A. Rosenfeld
 * and A. C. Kak, Digital Picture Processing, 2nd ed., 1982, vol. 2, ch. 11;
 * the same polygons as marching squares run on the corner lattice with each
 * pixel taken as a square rather than a point sample).  Each boundary side
 * is walked once with the inside on its right; where two inside pixels
 * touch only at a corner the walk turns to keep them apart (4-connected
 * regions, 8-connected holes).  Every outer boundary and every hole becomes
 * its own closed polygon with vertices on pixel corners (half a pixel from
 * the centres), outer boundaries clockwise on screen, holes anticlockwise;
 * planning systems combine a slice's contours by even-odd (XOR), which
 * gives the mask back exactly at pixel centres, and the polygons enclose
 * exactly the mask's pixel area, so volumes agree with the SEG.
 * Collinear vertices are dropped.  Same ownership and errors as
 * segd_dicom_write_seg. */
int segd_dicom_write_rtstruct(const segd_dicom_image *const *slices, size_t n,
                              const uint8_t *const *masks, const segd_dicom_algorithm *alg,
                              void **out, size_t *outlen, char *err, size_t errlen);

/* Free a buffer returned by a writer (NULL is fine). */
void segd_dicom_buffer_free(void *buf);

/* The organ's segd class name ("large_bowel", "small_bowel", "stomach"),
 * the order of the masks; NULL outside 0..2.  Cannot fail. */
const char *segd_dicom_organ_name(int organ);

#ifdef __cplusplus
}
#endif

#endif
