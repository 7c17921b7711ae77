/* SHA-256 (FIPS 180-4) for the weights-file digest reported in responses. */
#ifndef SEGD_IO_SHA256_H
#define SEGD_IO_SHA256_H

#include <stddef.h>

/* Hash len bytes at data; writes 64 lowercase hex digits + NUL to hex.
 * Cannot fail. */
void segd_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
