/* DICOM writing with DCMTK: the masks of an ordered series as a Segmentation
 * (dcmseg) and as an RT Structure Set (dcmdata, contours from contour.c). */
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmfg/fgderimg.h"
#include "dcmtk/dcmfg/fgfracon.h"
#include "dcmtk/dcmfg/fgpixmsr.h"
#include "dcmtk/dcmfg/fgplanor.h"
#include "dcmtk/dcmfg/fgplanpo.h"
#include "dcmtk/dcmiod/iodreferences.h"
#include "dcmtk/dcmseg/segdoc.h"
#include "dcmtk/dcmseg/segment.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "contour.h"
#include "internal.h"

using segd_dicom::fail;
using segd_dicom::format_ds;

namespace {

/* A DCMTK call that failed: caught at the C API and returned as -EIO. */
struct dcm_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

void must(const OFCondition &c, const char *what)
{
    if (c.bad())
        throw dcm_error(std::string(what) + ": " + c.text());
}

struct organ_code {
    const char *label;    /* SegmentLabel / ROIName (TG-263 structure name) */
    const char *sct;      /* SNOMED CT concept of the organ */
    const char *meaning;
    Uint16 rgb[3];        /* ROIDisplayColor */
};
const organ_code organs[SEGD_DICOM_NUM_ORGANS] = {
    {"Bowel_Large", "14742008", "Large intestine", {255, 160, 0}},
    {"Bowel_Small", "30315005", "Small intestine", {0, 200, 255}},
    {"Stomach", "69695003", "Stomach", {230, 60, 160}},
};
const char *const sct_anatomical_structure = "123037004";

void now_da_tm(char *da, char *tm)
{
    time_t t = time(NULL);
    struct tm u;
    gmtime_r(&t, &u);
    strftime(da, 9, "%Y%m%d", &u);
    strftime(tm, 7, "%H%M%S", &u);
}

/* RecommendedDisplayCIELabValue of an sRGB colour (D65 white; PS3.3
 * C.10.7.1.1: L* scaled 0..100 to 0..65535, a* and b* -128..127 likewise). */
void srgb_to_dicom_lab(const Uint16 rgb[3], Uint16 lab[3])
{
    double lin[3];
    for (int i = 0; i < 3; i++) {
        double c = rgb[i] / 255.0;
        lin[i] = c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4);
    }
    double xyz[3] = {
        (0.4124564 * lin[0] + 0.3575761 * lin[1] + 0.1804375 * lin[2]) / 0.95047,
        0.2126729 * lin[0] + 0.7151522 * lin[1] + 0.0721750 * lin[2],
        (0.0193339 * lin[0] + 0.1191920 * lin[1] + 0.9503041 * lin[2]) / 1.08883};
    double f[3];
    for (int i = 0; i < 3; i++)
        f[i] = xyz[i] > 216.0 / 24389.0 ? cbrt(xyz[i]) : xyz[i] * 841.0 / 108.0 + 4.0 / 29.0;
    double v[3] = {(116 * f[1] - 16) * 65535.0 / 100.0,
                   (500 * (f[0] - f[1]) + 128) * 65535.0 / 255.0,
                   (200 * (f[1] - f[2]) + 128) * 65535.0 / 255.0};
    for (int i = 0; i < 3; i++)
        lab[i] = (Uint16)(v[i] < 0 ? 0 : v[i] > 65535 ? 65535 : lround(v[i]));
}

std::string ds_list(const double *v, int n)
{
    std::string s;
    char b[17];
    for (int i = 0; i < n; i++) {
        format_ds(v[i], b);
        if (i)
            s += '\\';
        s += b;
    }
    return s;
}

int check_args(const segd_dicom_image *const *slices, size_t n, const uint8_t *const *masks,
               const segd_dicom_algorithm *alg, void **out, size_t *outlen, char *err,
               size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out || !outlen)
        return fail(err, errlen, -EINVAL, "no output pointer");
    *out = NULL;
    *outlen = 0;
    if (!masks || !alg || !alg->name || !alg->name[0] || !alg->version || !alg->version[0])
        return fail(err, errlen, -EINVAL, "masks and algorithm name and version are required");
    if (strlen(alg->name) > 64 || strlen(alg->version) > 64)
        return fail(err, errlen, -EINVAL, "AlgorithmName and AlgorithmVersion: at most 64 "
                    "characters");
    int rc = segd_dicom::check_ordered_series(slices, n, err, errlen);
    if (rc < 0)
        return rc;
    if (slices[0]->rows > 65535 || slices[0]->cols > 65535)
        return fail(err, errlen, -EINVAL, "Rows/Columns over 65535");
    for (size_t i = 0; i < n; i++)
        if (!masks[i])
            return fail(err, errlen, -EINVAL, "no mask for slice %zu", i);
    return 0;
}

/* Serialise ff as Part-10 Explicit VR Little Endian into a malloc'd buffer. */
void serialise(DcmFileFormat &ff, void **out, size_t *outlen)
{
    std::vector<char> chunk(1 << 20);
    std::string bytes;
    DcmOutputBufferStream os(chunk.data(), (offile_off_t)chunk.size());
    ff.transferInit();
    OFCondition c = EC_StreamNotifyClient;
    while (c == EC_StreamNotifyClient) {
        c = ff.write(os, EXS_LittleEndianExplicit, EET_ExplicitLength, NULL, EGL_recalcGL,
                     EPD_noChange, 0, 0, 0, EWM_createNewMeta);
        void *p = NULL;
        offile_off_t len = 0;
        os.flushBuffer(p, len);
        bytes.append((const char *)p, (size_t)len);
    }
    ff.transferEnd();
    must(c, "writing the DICOM file");
    void *buf = malloc(bytes.size());
    if (!buf)
        throw std::bad_alloc();
    memcpy(buf, bytes.data(), bytes.size());
    *out = buf;
    *outlen = bytes.size();
}

/* Run a writer body, turning every C++ exception into an error code. */
template <typename F>
int guarded(const char *what, char *err, size_t errlen, F body)
{
    try {
        return body();
    } catch (const std::bad_alloc &) {
        return fail(err, errlen, -ENOMEM, "%s: out of memory", what);
    } catch (const dcm_error &e) {
        return fail(err, errlen, -EIO, "%s: %s", what, e.what());
    } catch (const std::exception &e) {
        return fail(err, errlen, -EIO, "%s: %s", what, e.what());
    } catch (...) {
        return fail(err, errlen, -EIO, "%s: unknown exception", what);
    }
}

void put(DcmItem &it, const DcmTagKey &tag, const char *v)
{
    must(it.putAndInsertString(tag, v ? v : ""), DcmTag(tag).getTagName());
}

/* The Patient and General Study modules of the source, and its SpecificCharacterSet. */
void put_patient_study(DcmItem &it, const segd_dicom_image *s)
{
    if (s->specific_character_set[0])
        put(it, DCM_SpecificCharacterSet, s->specific_character_set);
    put(it, DCM_PatientName, s->patient_name);
    put(it, DCM_PatientID, s->patient_id);
    put(it, DCM_PatientBirthDate, s->patient_birth_date);
    put(it, DCM_PatientSex, s->patient_sex);
    put(it, DCM_StudyInstanceUID, s->study_instance_uid);
    put(it, DCM_StudyDate, s->study_date);
    put(it, DCM_StudyTime, s->study_time);
    put(it, DCM_ReferringPhysicianName, s->referring_physician_name);
    put(it, DCM_StudyID, s->study_id);
    put(it, DCM_AccessionNumber, s->accession_number);
    if (s->study_description[0])
        put(it, DCM_StudyDescription, s->study_description);
}

std::string series_description(const segd_dicom_algorithm *alg, const char *kind)
{
    if (alg->series_description)
        return std::string(alg->series_description).substr(0, 64);
    return (std::string("segd ") + kind + " " + alg->name).substr(0, 64);
}

std::string software_versions(const segd_dicom_algorithm *alg)
{
    std::string v = alg->software_version && alg->software_version[0] ? alg->software_version
                                                                       : "unknown";
    return v.substr(0, 64);
}

/* ---------------------------------------------------------------- SEG */

int write_seg(const segd_dicom_image *const *slices, size_t n, const uint8_t *const *masks,
              const segd_dicom_algorithm *alg, void **out, size_t *outlen)
{
    const segd_dicom_image *s0 = slices[0];
    const size_t npix = (size_t)s0->rows * (size_t)s0->cols;
    IODGeneralEquipmentModule::EquipmentInfo eq("segd", "segd", "0",
                                                software_versions(alg).c_str());
    ContentIdentificationMacro ci("1", "SEGD_ORGANS", "Gut organs segmented by segd", "segd^");
    DcmSegmentation *raw = NULL;
    must(DcmSegmentation::createBinarySegmentation(raw, (Uint16)s0->rows, (Uint16)s0->cols, eq,
                                                   ci),
         "creating the Segmentation");
    std::unique_ptr<DcmSegmentation> seg(raw);

    /* patient, study and frame of reference of the source */
    DcmItem src;
    put_patient_study(src, s0);
    put(src, DCM_FrameOfReferenceUID, s0->frame_of_reference_uid);
    put(src, DCM_PositionReferenceIndicator, "");
    must(seg->importHierarchy(src, OFTrue, OFTrue, OFTrue, OFFalse, OFTrue),
         "importing patient, study and FrameOfReferenceUID");
    must(seg->setEquipmentInfo(eq), "equipment");
    must(seg->getSeries().setSeriesDescription(series_description(alg, "SEG").c_str()),
         "SeriesDescription");
    char num[16];
    snprintf(num, sizeof num, "%d", alg->series_number > 0 ? alg->series_number : 999);
    must(seg->getSeries().setSeriesNumber(num), "SeriesNumber");

    /* one segment per organ */
    for (int k = 0; k < SEGD_DICOM_NUM_ORGANS; k++) {
        CodeSequenceMacro cat(sct_anatomical_structure, "SCT", "Anatomical Structure");
        CodeSequenceMacro type(organs[k].sct, "SCT", organs[k].meaning);
        DcmSegment *sraw = NULL;
        must(DcmSegment::create(sraw, organs[k].label, cat, type, DcmSegTypes::SAT_AUTOMATIC,
                                alg->name),
             "creating a segment");
        std::unique_ptr<DcmSegment> segment(sraw);
        AlgorithmIdentificationMacro &ai = segment->getSegmentationAlgorithmIdentification();
        must(ai.getAlgorithmFamilyCode().set("123110", "DCM", "Artificial Intelligence"),
             "AlgorithmFamilyCodeSequence");
        must(ai.setAlgorithmName(alg->name), "AlgorithmName");
        must(ai.setAlgorithmVersion(alg->version), "AlgorithmVersion");
        Uint16 lab[3];
        srgb_to_dicom_lab(organs[k].rgb, lab); /* the RTSTRUCT's colour */
        must(segment->setRecommendedDisplayCIELabValue(lab[0], lab[1], lab[2]),
             "RecommendedDisplayCIELabValue");
        Uint16 number = 0;
        must(seg->addSegment(segment.get(), number), "adding a segment");
        segment.release(); /* owned by seg now */
        if (number != k + 1)
            throw dcm_error("segment numbers out of order");
    }

    /* dimensions: segment, then position along the normal */
    char dim_uid[100];
    dcmGenerateUniqueIdentifier(dim_uid, SITE_INSTANCE_UID_ROOT);
    must(seg->getDimensions().addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid,
                                                DCM_SegmentIdentificationSequence,
                                                "ReferencedSegmentNumber"),
         "DimensionIndexSequence");
    must(seg->getDimensions().addDimensionIndex(DCM_ImagePositionPatient, dim_uid,
                                                DCM_PlanePositionSequence,
                                                "ImagePositionPatient"),
         "DimensionIndexSequence");

    /* shared functional groups: pixel measures and orientation */
    FGPixelMeasures pm;
    must(pm.setPixelSpacing(ds_list(s0->pixel_spacing, 2).c_str()), "PixelSpacing");
    double thick = s0->slice_thickness;
    if (!(thick > 0) && n > 1) { /* distance between the first two slices */
        double d[3] = {slices[1]->position[0] - s0->position[0],
                       slices[1]->position[1] - s0->position[1],
                       slices[1]->position[2] - s0->position[2]};
        thick = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    }
    if (!(thick > 0))
        thick = 1.0;
    must(pm.setSliceThickness(ds_list(&thick, 1).c_str()), "SliceThickness");
    must(seg->addForAllFrames(pm), "PixelMeasuresSequence");
    char o[6][17];
    for (int i = 0; i < 6; i++)
        format_ds(s0->orientation[i], o[i]);
    std::unique_ptr<FGPlaneOrientationPatient> po(
        FGPlaneOrientationPatient::createMinimal(o[0], o[1], o[2], o[3], o[4], o[5]));
    if (!po)
        throw dcm_error("PlaneOrientationSequence: not created");
    must(seg->addForAllFrames(*po), "PlaneOrientationSequence");

    /* frames: organ-major, slices in series order */
    std::vector<Uint8> frame(npix);
    for (int k = 0; k < SEGD_DICOM_NUM_ORGANS; k++)
        for (size_t i = 0; i < n; i++) {
            const segd_dicom_image *s = slices[i];
            char p[3][17];
            for (int j = 0; j < 3; j++)
                format_ds(s->position[j], p[j]);
            std::unique_ptr<FGPlanePosPatient> pp(FGPlanePosPatient::createMinimal(p[0], p[1], p[2]));
            if (!pp)
                throw dcm_error("PlanePositionSequence: not created");
            FGFrameContent fc;
            must(fc.setDimensionIndexValues((Uint32)k + 1, 0), "DimensionIndexValues");
            must(fc.setDimensionIndexValues((Uint32)i + 1, 1), "DimensionIndexValues");
            OFVector<ImageSOPInstanceReferenceMacro> refs(1);
            must(refs[0].setReferencedSOPClassUID(s->sop_class_uid), "ReferencedSOPClassUID");
            must(refs[0].setReferencedSOPInstanceUID(s->sop_instance_uid),
                 "ReferencedSOPInstanceUID");
            std::unique_ptr<FGDerivationImage> di(DcmSegmentation::createDerivationImageFG(
                refs, "Segmentation of the source image by segd"));
            if (!di)
                throw dcm_error("DerivationImageSequence: not created");
            OFVector<FGBase *> groups;
            groups.push_back(pp.get());
            groups.push_back(&fc);
            groups.push_back(di.get());
            memcpy(frame.data(), masks[i] + (size_t)k * npix, npix);
            must(seg->addFrame(frame.data(), (Uint16)(k + 1), groups), "adding a frame");
        }

    /* Common Instance Reference: the source series */
    IODReferences refs;
    for (size_t i = 0; i < n; i++) {
        IODImageReference *r = new IODImageReference(
            s0->patient_id, slices[i]->study_instance_uid, slices[i]->series_instance_uid,
            slices[i]->sop_instance_uid, slices[i]->sop_class_uid);
        if (!refs.add(r)) {
            delete r;
            throw dcm_error("ReferencedSeriesSequence: reference not added");
        }
    }
    if (seg->getCommonInstanceReference().addReferences(refs, s0->study_instance_uid) != n)
        throw dcm_error("ReferencedSeriesSequence: not every source instance referenced");

    DcmFileFormat ff;
    must(seg->writeDataset(*ff.getDataset()), "writing the Segmentation");
    serialise(ff, out, outlen);
    return 0;
}

/* ---------------------------------------------------------------- RTSTRUCT */

struct contour_ctx {
    DcmItem *roi;                      /* ROIContourSequence item */
    const segd_dicom_image *slice;
    long *contour_number;
    std::string data;
    std::string error;                 /* set when the callback failed */
};

/* segd_contour_fn: one CLOSED_PLANAR contour in patient coordinates.  Runs
 * under C frames, so it catches everything and reports through ctx. */
int add_contour(void *vctx, const int32_t *xy, size_t npts)
{
    contour_ctx *ctx = (contour_ctx *)vctx;
    try {
        const segd_dicom_image *s = ctx->slice;
        const double *o = s->orientation, *ps = s->pixel_spacing, *ipp = s->position;
        ctx->data.clear();
        char b[17];
        for (size_t i = 0; i < npts; i++) {
            /* corner (x, y) lies at column x - 0.5, row y - 0.5 of pixel centres */
            double c = xy[2 * i] - 0.5, r = xy[2 * i + 1] - 0.5;
            for (int j = 0; j < 3; j++) {
                double v = ipp[j] + o[j] * ps[1] * c + o[3 + j] * ps[0] * r;
                format_ds(v, b);
                if (i || j)
                    ctx->data += '\\';
                ctx->data += b;
            }
        }
        DcmItem *ci = NULL;
        must(ctx->roi->findOrCreateSequenceItem(DCM_ContourSequence, ci, -2), "ContourSequence");
        DcmItem *img = NULL;
        must(ci->findOrCreateSequenceItem(DCM_ContourImageSequence, img, -2),
             "ContourImageSequence");
        put(*img, DCM_ReferencedSOPClassUID, s->sop_class_uid);
        put(*img, DCM_ReferencedSOPInstanceUID, s->sop_instance_uid);
        put(*ci, DCM_ContourGeometricType, "CLOSED_PLANAR");
        char num[24];
        snprintf(num, sizeof num, "%zu", npts);
        put(*ci, DCM_NumberOfContourPoints, num);
        snprintf(num, sizeof num, "%ld", ++*ctx->contour_number);
        put(*ci, DCM_ContourNumber, num);
        put(*ci, DCM_ContourData, ctx->data.c_str());
        return 0;
    } catch (const std::bad_alloc &) {
        ctx->error = "out of memory";
    } catch (const std::exception &e) {
        ctx->error = e.what();
    } catch (...) {
        ctx->error = "unknown exception";
    }
    return -1;
}

int write_rtstruct(const segd_dicom_image *const *slices, size_t n, const uint8_t *const *masks,
                   const segd_dicom_algorithm *alg, void **out, size_t *outlen, char *err,
                   size_t errlen)
{
    const segd_dicom_image *s0 = slices[0];
    const size_t npix = (size_t)s0->rows * (size_t)s0->cols;
    DcmFileFormat ff;
    DcmDataset &ds = *ff.getDataset();
    char uid[100], da[9], tm[7];
    now_da_tm(da, tm);

    /* SOP Common, Patient, General Study */
    put(ds, DCM_SOPClassUID, UID_RTStructureSetStorage);
    put(ds, DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT));
    put(ds, DCM_InstanceCreationDate, da);
    put(ds, DCM_InstanceCreationTime, tm);
    put_patient_study(ds, s0);
    /* RT Series */
    put(ds, DCM_Modality, "RTSTRUCT");
    put(ds, DCM_SeriesInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_SERIES_UID_ROOT));
    char num[24];
    snprintf(num, sizeof num, "%d", alg->series_number > 0 ? alg->series_number : 999);
    put(ds, DCM_SeriesNumber, num);
    put(ds, DCM_SeriesDate, da);
    put(ds, DCM_SeriesTime, tm);
    put(ds, DCM_SeriesDescription, series_description(alg, "RTSTRUCT").c_str());
    put(ds, DCM_OperatorsName, "");
    /* Frame of Reference (the standard added it to the RTSTRUCT IOD in 2019) */
    put(ds, DCM_FrameOfReferenceUID, s0->frame_of_reference_uid);
    put(ds, DCM_PositionReferenceIndicator, "");
    /* General Equipment */
    put(ds, DCM_Manufacturer, "segd");
    put(ds, DCM_ManufacturerModelName, "segd");
    put(ds, DCM_SoftwareVersions, software_versions(alg).c_str());
    /* Structure Set */
    put(ds, DCM_StructureSetLabel, "SEGD_ORGANS");
    put(ds, DCM_StructureSetName, "segd gut organs");
    put(ds, DCM_StructureSetDate, da);
    put(ds, DCM_StructureSetTime, tm);
    DcmItem *forr = NULL, *study = NULL, *series = NULL;
    must(ds.findOrCreateSequenceItem(DCM_ReferencedFrameOfReferenceSequence, forr, -2),
         "ReferencedFrameOfReferenceSequence");
    put(*forr, DCM_FrameOfReferenceUID, s0->frame_of_reference_uid);
    must(forr->findOrCreateSequenceItem(DCM_RTReferencedStudySequence, study, -2),
         "RTReferencedStudySequence");
    /* the retired Detached Study Management SOP Class, as C.8.8.5 still asks */
    put(*study, DCM_ReferencedSOPClassUID, "1.2.840.10008.3.1.2.3.1");
    put(*study, DCM_ReferencedSOPInstanceUID, s0->study_instance_uid);
    must(study->findOrCreateSequenceItem(DCM_RTReferencedSeriesSequence, series, -2),
         "RTReferencedSeriesSequence");
    put(*series, DCM_SeriesInstanceUID, s0->series_instance_uid);
    for (size_t i = 0; i < n; i++) {
        DcmItem *img = NULL;
        must(series->findOrCreateSequenceItem(DCM_ContourImageSequence, img, -2),
             "ContourImageSequence");
        put(*img, DCM_ReferencedSOPClassUID, slices[i]->sop_class_uid);
        put(*img, DCM_ReferencedSOPInstanceUID, slices[i]->sop_instance_uid);
    }
    std::string gen_desc = (std::string("segd ") + alg->name).substr(0, 64);
    for (int k = 0; k < SEGD_DICOM_NUM_ORGANS; k++) {
        DcmItem *roi = NULL;
        must(ds.findOrCreateSequenceItem(DCM_StructureSetROISequence, roi, -2),
             "StructureSetROISequence");
        snprintf(num, sizeof num, "%d", k + 1);
        put(*roi, DCM_ROINumber, num);
        put(*roi, DCM_ReferencedFrameOfReferenceUID, s0->frame_of_reference_uid);
        put(*roi, DCM_ROIName, organs[k].label);
        put(*roi, DCM_ROIGenerationAlgorithm, "AUTOMATIC");
        put(*roi, DCM_ROIGenerationDescription, gen_desc.c_str());
    }

    /* ROI Contour: trace every organ on every slice */
    std::vector<unsigned char> scratch(segd_contour_scratch_bytes(s0->rows, s0->cols) + 8);
    void *aligned = scratch.data() + ((8 - ((uintptr_t)scratch.data() & 7)) & 7);
    for (int k = 0; k < SEGD_DICOM_NUM_ORGANS; k++) {
        DcmItem *rc_item = NULL;
        must(ds.findOrCreateSequenceItem(DCM_ROIContourSequence, rc_item, -2),
             "ROIContourSequence");
        snprintf(num, sizeof num, "%d", k + 1);
        put(*rc_item, DCM_ReferencedROINumber, num);
        char color[32];
        snprintf(color, sizeof color, "%u\\%u\\%u", organs[k].rgb[0], organs[k].rgb[1],
                 organs[k].rgb[2]);
        put(*rc_item, DCM_ROIDisplayColor, color);
        long contour_number = 0;
        for (size_t i = 0; i < n; i++) {
            contour_ctx ctx{rc_item, slices[i], &contour_number, std::string(), std::string()};
            if (segd_contour_trace(masks[i] + (size_t)k * npix, s0->rows, s0->cols, aligned,
                                   add_contour, &ctx))
                return fail(err, errlen, ctx.error == "out of memory" ? -ENOMEM : -EIO,
                            "writing the contours of %s on slice %zu: %s",
                            segd_dicom_organ_name(k), i, ctx.error.c_str());
        }
    }

    /* RT ROI Observations */
    for (int k = 0; k < SEGD_DICOM_NUM_ORGANS; k++) {
        DcmItem *obs = NULL;
        must(ds.findOrCreateSequenceItem(DCM_RTROIObservationsSequence, obs, -2),
             "RTROIObservationsSequence");
        snprintf(num, sizeof num, "%d", k + 1);
        put(*obs, DCM_ObservationNumber, num);
        put(*obs, DCM_ReferencedROINumber, num);
        DcmItem *code = NULL;
        must(obs->findOrCreateSequenceItem(DCM_RTROIIdentificationCodeSequence, code, -2),
             "RTROIIdentificationCodeSequence");
        put(*code, DCM_CodeValue, organs[k].sct);
        put(*code, DCM_CodingSchemeDesignator, "SCT");
        put(*code, DCM_CodeMeaning, organs[k].meaning);
        put(*obs, DCM_RTROIInterpretedType, "ORGAN");
        put(*obs, DCM_ROIInterpreter, "");
    }
    serialise(ff, out, outlen);
    return 0;
}

} // namespace

extern "C" {

int segd_dicom_write_seg(const segd_dicom_image *const *slices, size_t n,
                         const uint8_t *const *masks, const segd_dicom_algorithm *alg,
                         void **out, size_t *outlen, char *err, size_t errlen)
{
    int rc = check_args(slices, n, masks, alg, out, outlen, err, errlen);
    if (rc < 0)
        return rc;
    return guarded("Segmentation", err, errlen, [&] {
        segd_dicom::init_codecs(); /* and DCMTK's logger quiet */
        return write_seg(slices, n, masks, alg, out, outlen);
    });
}

int segd_dicom_write_rtstruct(const segd_dicom_image *const *slices, size_t n,
                              const uint8_t *const *masks, const segd_dicom_algorithm *alg,
                              void **out, size_t *outlen, char *err, size_t errlen)
{
    int rc = check_args(slices, n, masks, alg, out, outlen, err, errlen);
    if (rc < 0)
        return rc;
    return guarded("RT Structure Set", err, errlen, [&] {
        segd_dicom::init_codecs(); /* and DCMTK's logger quiet */
        return write_rtstruct(slices, n, masks, alg, out, outlen, err, errlen);
    });
}

} // extern "C"
