/* The default-weights lookup of `segd infer` and `segd serve`: $SEGD_WEIGHTS,
 * weights/ of the working directory or of the build tree's checkout, or the
 * data directory that meson's prefix installs into. */
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

/* The single match of pattern, if exactly one: 1 found, 0 none, -1 several. */
static int single_match(const char *pattern, char *buf, unsigned long cap)
{
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    int found = 0;
    if (rc == 0 && g.gl_pathc == 1 && strlen(g.gl_pathv[0]) < cap) {
        strcpy(buf, g.gl_pathv[0]);
        found = 1;
    } else if (rc == 0 && g.gl_pathc > 1) {
        found = -1;
    }
    globfree(&g);
    return found;
}

int segd_cli_weights_in(const char *dir, const char *name, char *buf, unsigned long cap)
{
    char path[PATH_MAX];
    struct stat st;
    if (name && *name) {
        int n = snprintf(path, sizeof path, "%s/%s", dir, name);
        if (n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if ((size_t)n >= cap)
                return -ENOENT;
            memcpy(buf, path, (size_t)n + 1);
            return 0;
        }
    }
    /* A '*' or '?' in dir would be a pattern; such a directory is not ours. */
    if (strpbrk(dir, "*?[") != NULL)
        return -ENOENT;
    int n = snprintf(path, sizeof path, "%s/*.safetensors", dir);
    if (n < 0 || (size_t)n >= sizeof path)
        return -ENOENT;
    int r = single_match(path, buf, cap);
    if (r == 1)
        return 0;
    return r < 0 ? -EEXIST : -ENOENT; /* several: refuse rather than guess */
}

const char *segd_cli_datadir(void)
{
    return SEGD_DATADIR;
}

int segd_cli_default_weights(char *buf, unsigned long cap)
{
    const char *env = getenv("SEGD_WEIGHTS");
    if (env && *env) {
        if (strlen(env) >= cap)
            return -ENOENT;
        strcpy(buf, env);
        return 0;
    }
    /* weights/ of the working directory (a checkout's root), then of the
     * checkout the executable was built in (build/segd, build-asan/segd: the
     * executable's parent directory), then the data directory of meson's
     * prefix, where `meson install` puts them. */
    char exe[PATH_MAX], dirs[3][PATH_MAX];
    int nd = 0;
    snprintf(dirs[nd++], PATH_MAX, "weights");
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0'; /* the executable's directory */
            slash = strrchr(exe, '/');
            if (slash) {
                *slash = '\0'; /* its parent: the checkout of a build tree */
                if ((size_t)snprintf(dirs[nd], PATH_MAX, "%s/weights", exe[0] ? exe : "") < PATH_MAX)
                    nd++;
            }
        }
    }
    snprintf(dirs[nd++], PATH_MAX, "%s", SEGD_DATADIR);
    for (int i = 0; i < nd; i++) {
        int r = segd_cli_weights_in(dirs[i], SEGD_DEFAULT_WEIGHTS, buf, cap);
        if (r == 0)
            return 0;
        if (r == -EEXIST) /* ambiguous: refuse rather than guess */
            return -ENOENT;
    }
    return -ENOENT;
}
