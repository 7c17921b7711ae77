/* DICOM reading with DCMTK: one single-frame greyscale Part-10 instance into
 * a segd_dicom_image, and the ordering of instances into a series. */
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcpcache.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcvrlo.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

namespace segd_dicom {

int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

void init_codecs()
{
    static std::once_flag once;
    std::call_once(once, [] {
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
        /* errors reach the caller through err: DCMTK's own log lines
         * (stderr by default, one per malformed element) stay quiet */
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
    });
}

void format_ds(double v, char *buf)
{
    /* the most significant digits that fit DS's 16 characters */
    for (int prec = 15; prec > 0; prec--) {
        int k = snprintf(buf, 17, "%.*g", prec, v);
        if (k > 0 && k <= 16)
            return;
    }
    snprintf(buf, 17, "0");
}

} // namespace segd_dicom

using segd_dicom::fail;

namespace {

/* The transfer syntaxes whose pixel data this module decodes. */
bool xfer_supported(E_TransferSyntax x)
{
    switch (x) {
    case EXS_LittleEndianImplicit:
    case EXS_LittleEndianExplicit:
    case EXS_JPEGProcess14:
    case EXS_JPEGProcess14SV1:
    case EXS_JPEGLSLossless:
    case EXS_RLELossless:
        return true;
    default:
        return false;
    }
}

/* ---- structure pre-check ------------------------------------------------
 * DCMTK allocates an element's value at the length its header claims before
 * reading it, so 200 bytes claiming a 4 GB element cost 4 GB.  Before DCMTK
 * sees the input, this walk checks every element header of the Part-10 file:
 * each defined length fits in the bytes left and in its enclosing item or
 * sequence, nesting stays within MAX_DEPTH, delimiters match.  After it,
 * nothing DCMTK allocates while parsing exceeds the input's size.
 *
 * That promise holds only if the walk reads the bytes as DCMTK 3.6.7 does
 * (dcitem.cc readTagAndLength, newDicomElement), so it follows its rules,
 * not only the standard's:
 *  - explicit VR: a VR that is two capitals but no standard VR is read with
 *    a 4-byte length (as PS3.5 7.1.2 asks for VRs to come), like OB;
 *  - an undefined length makes a sequence of SQ, OB, OW, UN and unknown VRs;
 *    the items of a UN (or unknown VR) sequence are read in Implicit VR
 *    Little Endian whatever the file's encoding (CP-246);
 *  - (7FE0,0010) PixelData of undefined length, at any depth (icons), is a
 *    sequence of raw fragments when its VR is OB or OW (or, implicit, taken
 *    from the dictionary);
 *  - an undefined length on any other VR, or on OverlayData, is refused:
 *    DCMTK would make it a plain value 4 GB long;
 *  - implicit VR: the VR comes from the dictionary, for private elements
 *    through their Private Creator (DcmPrivateTagCache, as DCMTK does), so
 *    a private element that some creator's dictionary declares SQ is walked
 *    as one;
 *  - a FileMetaInformationGroupLength must end where the meta group does
 *    (DCMTK starts the dataset where the group length says). */

/* Levels of sequences and items (a sequence and its item are two): 32
 * nested sequences.  DICOM sets no limit; this bounds DCMTK's recursion on
 * hostile input, far above what images carry (acquisition context or
 * private trees go to about 10). */
const int MAX_DEPTH = 64;
const uint32_t UNDEF = 0xffffffffu;

uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The standard VRs with a 2-byte length in explicit VR (PS3.5 table 7.1-2);
 * every other VR, known or not, has 2 reserved bytes and a 4-byte length. */
bool short_vr(const unsigned char *vr)
{
    static const char *const vrs[] = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS",
                                      "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL",
                                      "US"};
    for (const char *v : vrs)
        if (vr[0] == v[0] && vr[1] == v[1])
            return true;
    return false;
}

bool is_overlay_data(uint16_t group, uint16_t elem)
{
    return (group & 0xffe1) == 0x6000 && elem == 0x3000;
}

enum frame_kind { F_DATASET, F_SEQ, F_ITEM, F_PIXSEQ };

struct walk_frame {
    frame_kind kind;
    size_t end;       /* SIZE_MAX: undefined length */
    bool explicit_vr; /* the encoding of the elements in it (or in its items) */
    DcmPrivateTagCache creators; /* Private Creators seen in this dataset or item */
};

/* How DCMTK reads an element of undefined length with this VR. */
enum undef_kind { U_SEQ_SAME, U_SEQ_IMPLICIT, U_PIXSEQ, U_REFUSE };

undef_kind undefined_length_kind(DcmEVR evr, uint16_t group, uint16_t elem)
{
    const bool pixel = group == 0x7fe0 && elem == 0x0010;
    switch (evr) {
    case EVR_SQ:
        return U_SEQ_SAME;
    case EVR_ox:
    case EVR_OB:
    case EVR_OW:
        if (pixel)
            return U_PIXSEQ;
        if (is_overlay_data(group, elem) || evr == EVR_ox)
            return U_REFUSE;
        return U_SEQ_SAME;
    case EVR_UN:
    case EVR_UNKNOWN:
    case EVR_UNKNOWN2B:
        return U_SEQ_IMPLICIT;
    default:
        return U_REFUSE;
    }
}

int too_deep(char *err, size_t errlen)
{
    return fail(err, errlen, -EINVAL, "sequences nested more than %d deep", MAX_DEPTH / 2);
}

/* Walk the elements of buf[start, len) in the given encoding (the meta
 * group: explicit, stopping at the first group other than 0002). *stop:
 * where the walk ended. */
int walk(const unsigned char *b, size_t len, size_t start, bool explicit_vr, bool meta,
         size_t *stop, char *err, size_t errlen)
{
    walk_frame st[MAX_DEPTH + 1];
    int top = 0;
    st[0].kind = F_DATASET;
    st[0].end = len;
    st[0].explicit_vr = explicit_vr;
    /* open a sequence or item: false when that would nest too deep */
    auto push = [&](frame_kind kind, size_t end, bool explicit_items) {
        if (top == MAX_DEPTH)
            return false;
        walk_frame &f = st[++top];
        f.kind = kind;
        f.end = end;
        f.explicit_vr = explicit_items;
        f.creators.clear();
        return true;
    };
    size_t pos = start;
    while (true) {
        while (top > 0 && st[top].end != SIZE_MAX && pos == st[top].end)
            top--; /* a defined-length item or sequence ends here */
        if (pos == len)
            break;
        if (top > 0 && st[top].end != SIZE_MAX && pos > st[top].end)
            return fail(err, errlen, -EINVAL, "not DICOM or truncated: an element at byte %zu "
                        "crosses the end of its item or sequence", pos);
        if (len - pos < 8)
            return fail(err, errlen, -EINVAL, "not DICOM or truncated: %zu bytes left at byte "
                        "%zu, less than an element header", len - pos, pos);
        const size_t limit = st[top].end == SIZE_MAX ? len : st[top].end;
        uint16_t group = le16(b + pos), elem = le16(b + pos + 2);
        if (meta && group != 0x0002)
            break;
        if (group == 0xfffe) { /* item or delimiter: no VR in either encoding */
            uint32_t ilen = le32(b + pos + 4);
            pos += 8;
            frame_kind k = st[top].kind;
            if (elem == 0xe000 && (k == F_SEQ || k == F_PIXSEQ)) {
                if (ilen != UNDEF && ilen > limit - pos)
                    return fail(err, errlen, -EINVAL, "not DICOM or truncated: an item at byte "
                                "%zu claims %u bytes, %zu left", pos - 8, ilen, limit - pos);
                if (k == F_PIXSEQ) { /* a fragment of encapsulated pixel data: raw bytes */
                    if (ilen == UNDEF)
                        return fail(err, errlen, -EINVAL, "malformed PixelData: a fragment of "
                                    "undefined length");
                    pos += ilen;
                    continue;
                }
                if (!push(F_ITEM, ilen == UNDEF ? SIZE_MAX : pos + ilen, st[top].explicit_vr))
                    return too_deep(err, errlen);
            } else if (elem == 0xe00d && k == F_ITEM && st[top].end == SIZE_MAX) {
                top--;
            } else if (elem == 0xe0dd && (k == F_SEQ || k == F_PIXSEQ) && st[top].end == SIZE_MAX) {
                top--;
            } else {
                return fail(err, errlen, -EINVAL, "not DICOM or malformed: unexpected "
                            "(FFFE,%04X) at byte %zu", elem, pos - 8);
            }
            continue;
        }
        if (st[top].kind == F_SEQ || st[top].kind == F_PIXSEQ)
            return fail(err, errlen, -EINVAL, "not DICOM or malformed: element (%04X,%04X) at "
                        "byte %zu inside a sequence, outside any item", group, elem, pos);
        const bool explicit_here = st[top].explicit_vr;
        uint32_t vlen;
        size_t hdr;
        DcmEVR evr;
        if (explicit_here) {
            const unsigned char *vr = b + pos + 4;
            if (vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z')
                return fail(err, errlen, -EINVAL, "not DICOM or malformed: element "
                            "(%04X,%04X) at byte %zu has no valid VR", group, elem, pos);
            char vrs[3] = {(char)vr[0], (char)vr[1], '\0'};
            evr = DcmVR(vrs).getEVR();
            if (!short_vr(vr)) {
                if (len - pos < 12)
                    return fail(err, errlen, -EINVAL, "not DICOM or truncated: element header "
                                "cut at byte %zu", pos);
                vlen = le32(b + pos + 8);
                hdr = 12;
            } else {
                vlen = le16(b + pos + 6);
                hdr = 8;
            }
        } else {
            vlen = le32(b + pos + 4);
            hdr = 8;
            DcmTag tag(group, elem);
            if ((group & 1) && elem >= 0x1000) {
                const char *pc = st[top].creators.findPrivateCreator(tag);
                if (pc) {
                    tag.setPrivateCreator(pc);
                    tag.lookupVRinDictionary();
                }
            }
            evr = tag.getEVR();
        }
        pos += hdr;
        if (vlen == UNDEF) {
            undef_kind u = undefined_length_kind(evr, group, elem);
            if (u == U_REFUSE)
                return fail(err, errlen, -EINVAL, "not DICOM or malformed: element (%04X,%04X) "
                            "(VR %s) has an undefined length", group, elem,
                            DcmVR(evr).getVRName());
            if (!push(u == U_PIXSEQ ? F_PIXSEQ : F_SEQ, SIZE_MAX,
                      u == U_SEQ_IMPLICIT ? false : explicit_here))
                return too_deep(err, errlen);
            continue;
        }
        if (vlen > limit - pos)
            return fail(err, errlen, -EINVAL, "not DICOM or truncated: %s (%04X,%04X) "
                        "claims %u bytes, %zu left", evr == EVR_SQ ? "sequence" : "element",
                        group, elem, vlen, limit - pos);
        if (evr == EVR_SQ) { /* a defined-length sequence: its items are walked too */
            if (!push(F_SEQ, pos + vlen, explicit_here))
                return too_deep(err, errlen);
            continue;
        }
        if (!explicit_here && (group & 1) && elem >= 0x0010 && elem <= 0x00ff) {
            /* a Private Creator: later elements of its block take their VR
             * from the dictionary entry of that creator, as in DCMTK */
            DcmTagKey block(group, (Uint16)(elem << 8));
            if (st[top].creators.findPrivateCreator(block))
                return fail(err, errlen, -EINVAL, "not DICOM or malformed: Private Creator "
                            "(%04X,%04X) given twice", group, elem);
            DcmLongString creator(DcmTag(group, elem, EVR_LO));
            if (creator.putString((const char *)b + pos, vlen).good())
                st[top].creators.updateCache(&creator);
        }
        pos += vlen;
    }
    if (!meta && top > 0)
        return fail(err, errlen, -EINVAL, "not DICOM or truncated: input ends inside a "
                    "sequence");
    *stop = pos;
    return 0;
}

/* The Part-10 framing and the transfer syntax, checked before DCMTK parses:
 * ts receives the meta header's TransferSyntaxUID. */
int precheck(const unsigned char *b, size_t len, std::string &ts, char *err, size_t errlen)
{
    if (len < 132 || memcmp(b + 128, "DICM", 4) != 0)
        return fail(err, errlen, -EINVAL, "not DICOM: no Part-10 header (\"DICM\" at byte 128)");
    size_t pos = 0;
    int rc = walk(b, len, 132, true, true, &pos, err, errlen);
    if (rc < 0)
        return rc;
    /* find (0002,0010) again, now that every header in the group is known sound */
    ts.clear();
    for (size_t p = 132; p < pos;) {
        uint16_t e = le16(b + p + 2);
        bool lv = !short_vr(b + p + 4);
        uint32_t vlen = lv ? le32(b + p + 8) : le16(b + p + 6);
        size_t hdr = lv ? 12 : 8;
        if (e == 0x0000 && !lv && vlen == 4 && p == 132 &&
            (size_t)le32(b + p + hdr) != pos - (p + hdr + 4))
            return fail(err, errlen, -EINVAL, "not DICOM or malformed: "
                        "FileMetaInformationGroupLength %u, the meta group holds %zu bytes",
                        le32(b + p + hdr), pos - (p + hdr + 4));
        if (e == 0x0010 && vlen != UNDEF) {
            ts.assign((const char *)b + p + hdr, vlen);
            while (!ts.empty() && (ts.back() == '\0' || ts.back() == ' '))
                ts.pop_back();
        }
        if (vlen == UNDEF)
            break; /* a sequence in the meta group: DCMTK will refuse it */
        p += hdr + vlen;
    }
    if (ts.empty())
        return fail(err, errlen, -EINVAL, "TransferSyntaxUID missing from the meta header");
    E_TransferSyntax x = DcmXfer(ts.c_str()).getXfer();
    if (!xfer_supported(x))
        return fail(err, errlen, -ENOTSUP, "unsupported transfer syntax %.64s (%s)", ts.c_str(),
                    x == EXS_Unknown ? "unknown" : DcmXfer(x).getXferName());
    size_t end;
    return walk(b, len, pos, x != EXS_LittleEndianImplicit, false, &end, err, errlen);
}

/* ---- JPEG marker scan ---------------------------------------------------
 * Before decoding JPEG (processes 14 and 14 SV1), DCMTK 3.6.7 walks the
 * first fragment's markers to find the SOF's bit depth
 * (DJCodecDecoder::scanJpegDataForBitDepth).  That walk does not advance on
 * a TEM marker (FF01), so 40 bytes put FF01 where a marker is due hang a
 * worker for ever.  This is the same walk, run first: true when DCMTK's
 * would not end.  In a valid JPEG stream the SOF comes before any entropy
 * data and FF01 never stands where a marker is due, so nothing valid is
 * refused. */
bool jpeg_marker_scan_loops(const Uint8 *d, Uint32 n)
{
    Uint32 o = 0;
    while (o + 4 < n) {
        const unsigned m = (unsigned)d[o] << 8 | d[o + 1];
        const unsigned seglen = (unsigned)d[o + 2] << 8 | d[o + 3];
        if (m == 0xff01)
            return true;
        if (m == 0xffc0 || m == 0xffc1 || m == 0xffc2 || m == 0xffc3 || m == 0xffc5 ||
            m == 0xffc6 || m == 0xffc7 || m == 0xffc9 || m == 0xffca || m == 0xffcb ||
            m == 0xffcd || m == 0xffce || m == 0xffcf)
            return false; /* a SOF: the walk ends */
        if ((m >= 0xffd0 && m <= 0xffd9))
            o += 2; /* RSTn, SOI, EOI */
        else if (m == 0xffc4 || m == 0xffc8 || m == 0xffcc || (m >= 0xffda && m <= 0xfffe))
            o += seglen + 2; /* a segment with a length */
        else if (m == 0xffff)
            o += 1; /* fill byte */
        else if (d[o] == 0xff && d[o + 1] > 2 && d[o + 1] <= 0xbf)
            o += 2; /* reserved markers */
        else
            return false; /* DCMTK stops at an invalid marker */
    }
    return false;
}

/* -EINVAL when the first fragment of the (single) frame of encapsulated
 * JPEG PixelData would hang DCMTK's marker scan (above), else 0.  Only that
 * fragment is scanned, by DCMTK and here: a later fragment may begin in the
 * middle of a marker segment, on bytes FF 01 that are no marker. */
int check_jpeg_fragments(DcmDataset &ds, E_TransferSyntax xfer, char *err, size_t errlen)
{
    if (xfer != EXS_JPEGProcess14 && xfer != EXS_JPEGProcess14SV1)
        return 0;
    DcmElement *el = NULL;
    if (ds.findAndGetElement(DCM_PixelData, el).bad() || !el)
        return 0; /* the caller reports the missing PixelData */
    DcmPixelSequence *seq = NULL;
    if (static_cast<DcmPixelData *>(el)->getEncapsulatedRepresentation(xfer, NULL, seq).bad() ||
        !seq)
        return 0; /* not encapsulated: the decoder refuses it */
    DcmPixelItem *item = NULL;
    Uint8 *data = NULL;
    if (seq->card() < 2 || seq->getItem(item, 1).bad() || !item || item->getLength() == 0 ||
        item->getUint8Array(data).bad() || !data)
        return 0; /* no first fragment: the decoder refuses it */
    if (jpeg_marker_scan_loops(data, item->getLength()))
        return fail(err, errlen, -EINVAL, "malformed JPEG PixelData: the first fragment has a "
                    "TEM marker (FF01) where a marker segment is due");
    return 0;
}

/* Copy the attribute's whole value (all values, backslash-separated) into
 * dst[cap].  Absent or empty: "" (an error when required). */
int get_str(DcmItem &ds, const DcmTagKey &tag, const char *keyword, char *dst, size_t cap,
            bool required, char *err, size_t errlen)
{
    OFString v;
    dst[0] = '\0';
    if (ds.findAndGetOFStringArray(tag, v).bad() || v.empty()) {
        if (required)
            return fail(err, errlen, -EINVAL, "%s missing or empty", keyword);
        return 0;
    }
    if (v.length() >= cap)
        return fail(err, errlen, -EINVAL, "%s longer than %zu characters", keyword, cap - 1);
    if (memchr(v.c_str(), '\0', v.length()))
        return fail(err, errlen, -EINVAL, "%s holds a NUL byte", keyword);
    memcpy(dst, v.c_str(), v.length() + 1);
    return 0;
}

/* n finite decimal values of a DS attribute.  1: read; 0: absent; <0: malformed. */
int get_ds(DcmItem &ds, const DcmTagKey &tag, const char *keyword, double *v, unsigned long n,
           char *err, size_t errlen)
{
    DcmElement *el = NULL;
    if (ds.findAndGetElement(tag, el).bad() || !el || el->getLength() == 0)
        return 0;
    if (el->getVM() != n)
        return fail(err, errlen, -EINVAL, "%s has %lu values, expected %lu", keyword,
                    (unsigned long)el->getVM(), n);
    for (unsigned long i = 0; i < n; i++) {
        Float64 f;
        if (ds.findAndGetFloat64(tag, f, i).bad() || !std::isfinite(f))
            return fail(err, errlen, -EINVAL, "%s value %lu is not a finite number", keyword,
                        i + 1);
        v[i] = f;
    }
    return 1;
}

int read_impl(const void *buf, size_t len, size_t max_pixels, segd_dicom_image *im, char *err,
              size_t errlen)
{
    if (!buf || len == 0)
        return fail(err, errlen, -EINVAL, "not DICOM: empty input");
    segd_dicom::init_codecs();
    std::string ts_uid;
    int rc = precheck((const unsigned char *)buf, len, ts_uid, err, errlen);
    if (rc < 0)
        return rc;
    E_TransferSyntax xfer = DcmXfer(ts_uid.c_str()).getXfer();

    DcmInputBufferStream is;
    is.setBuffer(buf, (offile_off_t)len);
    is.setEos();
    DcmFileFormat ff;
    ff.transferInit();
    OFCondition c = ff.read(is, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
    ff.transferEnd();
    if (c == EC_StreamNotifyClient)
        return fail(err, errlen, -EINVAL, "not DICOM or truncated: input ends inside an element");
    if (c.bad())
        return fail(err, errlen, -EINVAL, "not DICOM or malformed: %s", c.text());
    DcmDataset &ds = *ff.getDataset();
    if (ds.getOriginalXfer() != xfer)
        return fail(err, errlen, -EINVAL, "dataset not encoded in its TransferSyntaxUID %s",
                    ts_uid.c_str());
    if (ts_uid.length() >= sizeof im->transfer_syntax_uid)
        return fail(err, errlen, -EINVAL, "TransferSyntaxUID too long");
    strcpy(im->transfer_syntax_uid, ts_uid.c_str());

    /* identity first: an object without SOP identity is no DICOM instance */
    struct {
        const DcmTagKey &tag;
        const char *kw;
        char *dst;
        size_t cap;
        bool required;
    } strs[] = {
        {DCM_SOPClassUID, "SOPClassUID", im->sop_class_uid, sizeof im->sop_class_uid, true},
        {DCM_SOPInstanceUID, "SOPInstanceUID", im->sop_instance_uid, sizeof im->sop_instance_uid, true},
        {DCM_SeriesInstanceUID, "SeriesInstanceUID", im->series_instance_uid, sizeof im->series_instance_uid, true},
        {DCM_StudyInstanceUID, "StudyInstanceUID", im->study_instance_uid, sizeof im->study_instance_uid, true},
        {DCM_FrameOfReferenceUID, "FrameOfReferenceUID", im->frame_of_reference_uid, sizeof im->frame_of_reference_uid, false},
        {DCM_Modality, "Modality", im->modality, sizeof im->modality, false},
        {DCM_SpecificCharacterSet, "SpecificCharacterSet", im->specific_character_set, sizeof im->specific_character_set, false},
        {DCM_PatientName, "PatientName", im->patient_name, sizeof im->patient_name, false},
        {DCM_PatientID, "PatientID", im->patient_id, sizeof im->patient_id, false},
        {DCM_PatientBirthDate, "PatientBirthDate", im->patient_birth_date, sizeof im->patient_birth_date, false},
        {DCM_PatientSex, "PatientSex", im->patient_sex, sizeof im->patient_sex, false},
        {DCM_StudyDate, "StudyDate", im->study_date, sizeof im->study_date, false},
        {DCM_StudyTime, "StudyTime", im->study_time, sizeof im->study_time, false},
        {DCM_StudyID, "StudyID", im->study_id, sizeof im->study_id, false},
        {DCM_AccessionNumber, "AccessionNumber", im->accession_number, sizeof im->accession_number, false},
        {DCM_ReferringPhysicianName, "ReferringPhysicianName", im->referring_physician_name, sizeof im->referring_physician_name, false},
        {DCM_StudyDescription, "StudyDescription", im->study_description, sizeof im->study_description, false},
        {DCM_SeriesNumber, "SeriesNumber", im->series_number, sizeof im->series_number, false},
    };
    for (auto &s : strs)
        if ((rc = get_str(ds, s.tag, s.kw, s.dst, s.cap, s.required, err, errlen)) < 0)
            return rc;
    if (strchr(im->sop_class_uid, '\\') || strchr(im->sop_instance_uid, '\\'))
        return fail(err, errlen, -EINVAL, "SOPClassUID/SOPInstanceUID must have one value");

    /* image pixel module */
    if (!ds.tagExists(DCM_PixelData))
        return fail(err, errlen, -EDOM, "not an image: PixelData missing (SOPClassUID %s)",
                    im->sop_class_uid);
    Uint16 rows = 0, cols = 0, spp = 1, ba = 0, bs = 0, hb = 0, pr = 0;
    if (ds.findAndGetUint16(DCM_Rows, rows).bad() || rows == 0)
        return fail(err, errlen, -EINVAL, "Rows missing or 0");
    if (ds.findAndGetUint16(DCM_Columns, cols).bad() || cols == 0)
        return fail(err, errlen, -EINVAL, "Columns missing or 0");
    Sint32 frames = 1;
    if (ds.tagExistsWithValue(DCM_NumberOfFrames) &&
        ds.findAndGetSint32(DCM_NumberOfFrames, frames).bad())
        return fail(err, errlen, -EINVAL, "NumberOfFrames malformed");
    if (frames != 1)
        return fail(err, errlen, -EDOM, "multi-frame image (NumberOfFrames %ld): one frame "
                    "per instance only", (long)frames);
    if (ds.tagExists(DCM_SamplesPerPixel) && ds.findAndGetUint16(DCM_SamplesPerPixel, spp).bad())
        return fail(err, errlen, -EINVAL, "SamplesPerPixel malformed");
    OFString photo;
    ds.findAndGetOFString(DCM_PhotometricInterpretation, photo);
    if (spp != 1)
        return fail(err, errlen, -EDOM, "not greyscale: SamplesPerPixel %u", spp);
    if (photo != "MONOCHROME1" && photo != "MONOCHROME2")
        return fail(err, errlen, -EDOM, "not greyscale: PhotometricInterpretation \"%.32s\"",
                    photo.c_str());
    if (ds.findAndGetUint16(DCM_BitsAllocated, ba).bad() || (ba != 8 && ba != 16))
        return fail(err, errlen, -EDOM, "BitsAllocated %u: 8 or 16 only", ba);
    if (ds.findAndGetUint16(DCM_BitsStored, bs).bad() || bs == 0 || bs > ba)
        return fail(err, errlen, -EINVAL, "BitsStored %u with BitsAllocated %u", bs, ba);
    if (ds.findAndGetUint16(DCM_HighBit, hb).bad())
        hb = (Uint16)(bs - 1);
    if (hb >= ba || hb + 1 < bs)
        return fail(err, errlen, -EINVAL, "HighBit %u with BitsStored %u, BitsAllocated %u", hb,
                    bs, ba);
    if (ds.findAndGetUint16(DCM_PixelRepresentation, pr).bad() || pr > 1)
        return fail(err, errlen, -EINVAL, "PixelRepresentation missing or not 0/1");
    size_t npix = (size_t)rows * cols;
    if (npix > max_pixels)
        return fail(err, errlen, -E2BIG, "%u x %u pixels (Rows x Columns) over the limit of %zu",
                    rows, cols, max_pixels);
    if (!ds.tagExistsWithValue(DCM_PixelData))
        return fail(err, errlen, -EINVAL, "PixelData missing or empty");

    double slope = 1.0, intercept = 0.0;
    if ((rc = get_ds(ds, DCM_RescaleSlope, "RescaleSlope", &slope, 1, err, errlen)) < 0 ||
        (rc = get_ds(ds, DCM_RescaleIntercept, "RescaleIntercept", &intercept, 1, err, errlen)) < 0)
        return rc;
    if (slope == 0.0)
        return fail(err, errlen, -EINVAL, "RescaleSlope is 0");

    /* geometry: absent is allowed here (the writers refuse it), malformed is not */
    im->geometry_missing = NULL;
    if ((rc = get_ds(ds, DCM_PixelSpacing, "PixelSpacing", im->pixel_spacing, 2, err, errlen)) < 0)
        return rc;
    if (rc == 0)
        im->geometry_missing = "PixelSpacing";
    else if (im->pixel_spacing[0] <= 0 || im->pixel_spacing[1] <= 0)
        return fail(err, errlen, -EINVAL, "PixelSpacing %g\\%g not positive",
                    im->pixel_spacing[0], im->pixel_spacing[1]);
    if ((rc = get_ds(ds, DCM_ImagePositionPatient, "ImagePositionPatient", im->position, 3, err,
                     errlen)) < 0)
        return rc;
    if (rc == 0 && !im->geometry_missing)
        im->geometry_missing = "ImagePositionPatient";
    if ((rc = get_ds(ds, DCM_ImageOrientationPatient, "ImageOrientationPatient", im->orientation,
                     6, err, errlen)) < 0)
        return rc;
    if (rc == 0 && !im->geometry_missing)
        im->geometry_missing = "ImageOrientationPatient";
    if (!im->frame_of_reference_uid[0] && !im->geometry_missing)
        im->geometry_missing = "FrameOfReferenceUID";
    if ((rc = get_ds(ds, DCM_SliceThickness, "SliceThickness", &im->slice_thickness, 1, err,
                     errlen)) < 0)
        return rc;
    Sint32 inum = 0;
    if (ds.tagExistsWithValue(DCM_InstanceNumber) && ds.findAndGetSint32(DCM_InstanceNumber, inum).good())
        im->instance_number = (int)inum;

    /* pixels: decode (encapsulated syntaxes) to native little endian */
    if (DcmXfer(xfer).isEncapsulated()) {
        if ((rc = check_jpeg_fragments(ds, xfer, err, errlen)) < 0)
            return rc;
        c = ds.chooseRepresentation(EXS_LittleEndianExplicit, NULL);
        if (c.bad() || !ds.canWriteXfer(EXS_LittleEndianExplicit))
            return fail(err, errlen, -EINVAL, "cannot decode PixelData (%s): %s",
                        DcmXfer(xfer).getXferName(), c.bad() ? c.text() : "no decoder");
    }
    const Uint8 *p8 = NULL;
    const Uint16 *p16 = NULL;
    unsigned long count = 0;
    if (ba == 8)
        c = ds.findAndGetUint8Array(DCM_PixelData, p8, &count);
    else
        c = ds.findAndGetUint16Array(DCM_PixelData, p16, &count);
    if (c.bad() || (!p8 && !p16))
        return fail(err, errlen, -EINVAL, "PixelData unreadable: %s", c.text());
    if (count < npix)
        return fail(err, errlen, -EINVAL, "PixelData holds %lu values, Rows x Columns is %zu",
                    count, npix);

    im->pixels = (float *)malloc(npix * sizeof(float));
    if (!im->pixels)
        return fail(err, errlen, -ENOMEM, "out of memory for %zu pixels", npix);
    const unsigned shift = (unsigned)(hb + 1 - bs);
    const int32_t mask = (int32_t)((1u << bs) - 1u);
    const int32_t vmin = pr ? -(int32_t)(1u << (bs - 1)) : 0;
    const int32_t vmax = pr ? (int32_t)(1u << (bs - 1)) - 1 : mask;
    const bool mono1 = photo == "MONOCHROME1";
    for (size_t i = 0; i < npix; i++) {
        int32_t v = ((int32_t)(p8 ? p8[i] : p16[i]) >> shift) & mask;
        if (pr && (v & (int32_t)(1u << (bs - 1))))
            v -= (int32_t)(1u << bs);
        if (mono1)
            v = vmin + vmax - v;
        im->pixels[i] = (float)(slope * v + intercept);
    }
    im->rows = rows;
    im->cols = cols;
    im->bits_stored = bs;
    return 0;
}

int read_guarded(const void *buf, size_t len, size_t max_pixels, segd_dicom_image **out,
                 char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return fail(err, errlen, -EINVAL, "no output pointer");
    *out = NULL;
    segd_dicom_image *im = (segd_dicom_image *)calloc(1, sizeof *im);
    if (!im)
        return fail(err, errlen, -ENOMEM, "out of memory");
    int rc;
    try {
        rc = read_impl(buf, len, max_pixels, im, err, errlen);
    } catch (const std::bad_alloc &) {
        rc = fail(err, errlen, -ENOMEM, "out of memory decoding DICOM");
    } catch (const std::exception &e) {
        rc = fail(err, errlen, -EIO, "DICOM decoding failed: %s", e.what());
    } catch (...) {
        rc = fail(err, errlen, -EIO, "DICOM decoding failed (unknown exception)");
    }
    if (rc < 0) {
        segd_dicom_image_free(im);
        return rc;
    }
    *out = im;
    return 0;
}

double slice_key(const segd_dicom_image *im)
{
    const double *o = im->orientation;
    double n[3] = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5],
                   o[0] * o[4] - o[1] * o[3]};
    return n[0] * im->position[0] + n[1] * im->position[1] + n[2] * im->position[2];
}

/* Everything of segd_dicom_series_order but the sort. */
int check_series(const segd_dicom_image *const *im, size_t n, char *err, size_t errlen)
{
    if (!im || n == 0)
        return fail(err, errlen, -EINVAL, "empty series");
    std::set<std::string> uids;
    for (size_t i = 0; i < n; i++) {
        const segd_dicom_image *a = im[i], *b = im[0];
        if (!a || !a->pixels)
            return fail(err, errlen, -EINVAL, "instance %zu is not a decoded image", i);
        if (a->geometry_missing)
            return fail(err, errlen, -EINVAL, "instance %zu (SOPInstanceUID %s): %s missing", i,
                        a->sop_instance_uid, a->geometry_missing);
        const double *o = a->orientation;
        double rr = o[0] * o[0] + o[1] * o[1] + o[2] * o[2];
        double cc = o[3] * o[3] + o[4] * o[4] + o[5] * o[5];
        double rc = o[0] * o[3] + o[1] * o[4] + o[2] * o[5];
        if (fabs(rr - 1) > 1e-3 || fabs(cc - 1) > 1e-3 || fabs(rc) > 1e-3)
            return fail(err, errlen, -EINVAL, "instance %zu: ImageOrientationPatient is not two "
                        "orthogonal unit vectors", i);
        if (!uids.insert(a->sop_instance_uid).second)
            return fail(err, errlen, -EXDEV, "instance %zu repeats SOPInstanceUID %s", i,
                        a->sop_instance_uid);
        if (i == 0)
            continue;
        /* One series belongs to one patient and one study and has one
         * modality (the DICOM information model, PS3.3 A.1.2); the derived
         * objects copy the patient and study of instance 0, so instances
         * of another patient under the same SeriesInstanceUID would be
         * contoured and filed under the wrong patient. */
        const struct {
            const char *keyword, *x, *y;
        } same[] = {
            {"SeriesInstanceUID", a->series_instance_uid, b->series_instance_uid},
            {"StudyInstanceUID", a->study_instance_uid, b->study_instance_uid},
            {"PatientID", a->patient_id, b->patient_id},
            {"Modality", a->modality, b->modality},
            {"FrameOfReferenceUID", a->frame_of_reference_uid, b->frame_of_reference_uid},
        };
        for (const auto &f : same)
            if (strcmp(f.x, f.y))
                return fail(err, errlen, -EXDEV, "%s differs: instance %zu has '%s', instance 0 "
                            "has '%s'", f.keyword, i, f.x, f.y);
        if (a->rows != b->rows || a->cols != b->cols)
            return fail(err, errlen, -EXDEV, "Rows/Columns differ: instance %zu is %dx%d, "
                        "instance 0 is %dx%d", i, a->rows, a->cols, b->rows, b->cols);
        for (int k = 0; k < 2; k++)
            if (fabs(a->pixel_spacing[k] - b->pixel_spacing[k]) > 1e-4 * b->pixel_spacing[k])
                return fail(err, errlen, -EXDEV, "PixelSpacing differs: instance %zu has "
                            "%g\\%g, instance 0 has %g\\%g", i, a->pixel_spacing[0],
                            a->pixel_spacing[1], b->pixel_spacing[0], b->pixel_spacing[1]);
        for (int k = 0; k < 6; k++)
            if (fabs(a->orientation[k] - b->orientation[k]) > 1e-4)
                return fail(err, errlen, -EXDEV, "ImageOrientationPatient differs: instance %zu "
                            "value %d is %g, instance 0 has %g", i, k + 1, a->orientation[k],
                            b->orientation[k]);
    }
    return 0;
}

} // namespace

namespace segd_dicom {

int check_ordered_series(const segd_dicom_image *const *slices, size_t n, char *err,
                         size_t errlen)
{
    int rc = check_series(slices, n, err, errlen);
    if (rc < 0)
        return rc;
    for (size_t i = 1; i < n; i++)
        if (slice_key(slices[i]) - slice_key(slices[i - 1]) < 1e-3)
            return fail(err, errlen, -EINVAL, "slices %zu and %zu are not in series order along "
                        "the slice normal (ImagePositionPatient): order them with "
                        "segd_dicom_series_order", i - 1, i);
    return 0;
}

} // namespace segd_dicom

extern "C" {

int segd_dicom_read(const void *buf, size_t len, size_t max_pixels, segd_dicom_image **out,
                    char *err, size_t errlen)
{
    return read_guarded(buf, len, max_pixels, out, err, errlen);
}

int segd_dicom_read_file(const char *path, size_t max_pixels, segd_dicom_image **out,
                         char *err, size_t errlen)
{
    if (out)
        *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = fail(err, errlen, -EINVAL, "%s: not a regular file", path);
        goto cleanup;
    }
    buf = (unsigned char *)malloc(st.st_size ? (size_t)st.st_size : 1);
    if (!buf) {
        rc = fail(err, errlen, -ENOMEM, "%s: out of memory for %lld bytes", path,
                  (long long)st.st_size);
        goto cleanup;
    }
    for (size_t got = 0; got < (size_t)st.st_size;) {
        ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = fail(err, errlen, k < 0 ? -errno : -EIO, "%s: read: %s", path,
                      k < 0 ? strerror(errno) : "file shrank");
            goto cleanup;
        }
        got += (size_t)k;
    }
    rc = read_guarded(buf, (size_t)st.st_size, max_pixels, out, err, errlen);
    if (rc < 0 && err && errlen) { /* prefix the path */
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", err);
        snprintf(err, errlen, "%s: %s", path, tmp);
    }
cleanup:
    free(buf);
    close(fd);
    return rc;
}

void segd_dicom_image_free(segd_dicom_image *im)
{
    if (!im)
        return;
    free(im->pixels);
    free(im);
}

int segd_dicom_series_order(const segd_dicom_image *const *images, size_t n, size_t *order,
                            char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    try {
        int rc = check_series(images, n, err, errlen);
        if (rc < 0)
            return rc;
        std::vector<double> key(n);
        for (size_t i = 0; i < n; i++) {
            key[i] = slice_key(images[i]);
            order[i] = i;
        }
        std::stable_sort(order, order + n, [&](size_t a, size_t b) { return key[a] < key[b]; });
        for (size_t i = 1; i < n; i++)
            if (key[order[i]] - key[order[i - 1]] < 1e-3)
                return fail(err, errlen, -EXDEV, "instances %zu and %zu (SOPInstanceUID %s, %s) "
                            "lie at the same position along the slice normal "
                            "(ImagePositionPatient)", order[i - 1], order[i],
                            images[order[i - 1]]->sop_instance_uid,
                            images[order[i]]->sop_instance_uid);
        return 0;
    } catch (const std::bad_alloc &) {
        return fail(err, errlen, -ENOMEM, "out of memory ordering the series");
    } catch (...) {
        return fail(err, errlen, -EIO, "ordering the series failed (unknown exception)");
    }
}

const char *segd_dicom_organ_name(int organ)
{
    static const char *const names[SEGD_DICOM_NUM_ORGANS] = {"large_bowel", "small_bowel",
                                                             "stomach"};
    return organ >= 0 && organ < SEGD_DICOM_NUM_ORGANS ? names[organ] : NULL;
}

void segd_dicom_buffer_free(void *buf)
{
    free(buf);
}

} // extern "C"
