/* Files of the web viewer (src/http/static/), embedded in the binary at
 * build time by tools/segd-embed.c, so that `segd serve` answers GET / with
 * no files to install and nothing to fetch. */
#ifndef SEGD_HTTP_ASSETS_H
#define SEGD_HTTP_ASSETS_H

#include <stddef.h>

/* Find the embedded file served at `path` (the URL path without its query
 * string: "/", "/index.html", "/viewer.js", "/viewer.css", "/openapi.json").
 * "/" is index.html.  On success sets *data (static, never freed, followed
 * by a NUL not counted in *len), *len and *content_type and returns 0;
 * -ENOENT when no file is served there.  Thread-safe, allocates nothing. */
int segd_assets_find(const char *path, const unsigned char **data, size_t *len,
                     const char **content_type);

/* The generated table (assets_data.c in the build folder). */
typedef struct segd_asset {
    const char *path;            /* "/" + file name */
    const unsigned char *data;
    size_t len;
} segd_asset;

extern const segd_asset segd_assets_table[];
extern const size_t segd_assets_count;

#endif
