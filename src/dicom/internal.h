/* Private helpers shared by the C++ files of src/dicom: error messages,
 * DCMTK set-up once per process, the one-series check of the writers. */
#ifndef SEGD_DICOM_INTERNAL_H
#define SEGD_DICOM_INTERNAL_H

#include <cstddef>

#include "segd/dicom.h"

namespace segd_dicom {

/* printf into err (may be NULL / 0); returns rc so that callers can write
 * `return fail(err, errlen, -EINVAL, "...", ...)`. */
int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Register DCMTK's lossless decoders (JPEG, JPEG-LS, RLE) and set DCMTK's
 * logger to FATAL, once per process; thread-safe (std::call_once).  May throw std::bad_alloc / std::system_error. */
void init_codecs();

/* segd_dicom_series_order's checks for slices already in order: the same
 * series, and keys strictly increasing along the normal. */
int check_ordered_series(const segd_dicom_image *const *slices, size_t n, char *err,
                         size_t errlen);

/* Format a DS value (at most 16 characters, as DICOM requires) into buf
 * (>= 17 bytes). */
void format_ds(double v, char *buf);

} // namespace segd_dicom

#endif
