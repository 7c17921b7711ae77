/* Fuzzing aid shared by the PNG harnesses: rewrite the CRC of every chunk
 * of a PNG in place, so that mutations reach libpng's chunk parsers and
 * the inflater instead of stopping at "CRC error".  The harnesses apply it
 * to inputs of even length only: odd-length inputs keep their CRCs, so the
 * CRC checks themselves stay exercised. */
#ifndef SEGD_FUZZ_PNGFIX_H
#define SEGD_FUZZ_PNGFIX_H

#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

static void png_fix_crcs(uint8_t *p, size_t len)
{
    size_t pos = 8; /* after the signature */
    while (pos + 12 <= len) {
        uint32_t n = (uint32_t)p[pos] << 24 | (uint32_t)p[pos + 1] << 16 |
                     (uint32_t)p[pos + 2] << 8 | p[pos + 3];
        if (n > len - pos - 12)
            return;
        uLong crc = crc32(0L, p + pos + 4, (uInt)(n + 4));
        uint8_t *c = p + pos + 8 + n;
        c[0] = (uint8_t)(crc >> 24);
        c[1] = (uint8_t)(crc >> 16);
        c[2] = (uint8_t)(crc >> 8);
        c[3] = (uint8_t)crc;
        pos += 12 + (size_t)n;
    }
}

#endif
