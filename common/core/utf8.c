/* utf8.c: the one UTF-8 well-formedness check. */
#include "core/utf8.h"

bool utf8_valid(const char *s, size_t len, bool text)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p++;
        if (c < 0x80) {
            if (text && (c < 0x20 || c == 0x7f))
                return false;
            continue;
        }
        size_t more;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false; /* a continuation byte first, or a lead byte of an overlong form */
        }
        if ((size_t)(end - p) < more)
            return false;
        for (size_t k = 0; k < more; k++) {
            if ((p[k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[k] & 0x3f);
        }
        p += more;
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        if (text && ((cp >= 0x80 && cp <= 0x9f) || (cp >= 0xfdd0 && cp <= 0xfdef) ||
                     (cp & 0xfffe) == 0xfffe))
            return false;
    }
    return true;
}
