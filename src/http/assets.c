/* Lookup of the embedded viewer files (see assets.h). */
#include "http/assets.h"

#include <errno.h>
#include <string.h>

static const struct {
    const char *ext;
    const char *type;
} TYPES[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".png", "image/png"},
    {".svg", "image/svg+xml"},
};

static const char *content_type_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
            if (strcmp(dot, TYPES[i].ext) == 0)
                return TYPES[i].type;
    return "application/octet-stream";
}

int segd_assets_find(const char *path, const unsigned char **data, size_t *len,
                     const char **content_type)
{
    if (!path)
        return -ENOENT;
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (size_t i = 0; i < segd_assets_count; i++) {
        if (strcmp(path, segd_assets_table[i].path) == 0) {
            *data = segd_assets_table[i].data;
            *len = segd_assets_table[i].len;
            *content_type = content_type_of(path);
            return 0;
        }
    }
    return -ENOENT;
}
