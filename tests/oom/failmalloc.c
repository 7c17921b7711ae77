/* failmalloc: an LD_PRELOAD allocation-failure injector for the OOM test
 * (tests/oom/test_oom.py), built by meson for tests only, as sqlite's
 * fault-injection tests fail the Nth allocation.
 *
 * Counts malloc/calloc/realloc/posix_memalign/aligned_alloc/memalign calls
 * made from segd's own code and the libraries that serve a request (the
 * executable, libjansson, libpng, libmicrohttpd, zlib), and makes the
 * FAILMALLOC_N-th of them return NULL with errno ENOMEM, once.  Allocations
 * of the C library itself (stdio, threads, the dynamic loader) and of
 * OpenBLAS are not counted: they are not segd's to handle.  At exit the
 * count is written to FAILMALLOC_COUNT_FILE when set, so that a run with
 * FAILMALLOC_N=0 measures how many allocations a scenario makes.
 *
 * The counter is process-wide mutable state: acceptable in a test tool, and
 * it lives here, never in libsegd. */
/* _GNU_SOURCE (dl_iterate_phdr) comes from the project arguments */
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define MAX_RANGES 32
static struct {
    uintptr_t lo, hi;
    char name[48]; /* basename of the object, "segd" for the executable */
} ranges[MAX_RANGES]; /* executable segments counted */
static int nranges;
static long fail_at;     /* 1-based; 0: never */
static long counted;     /* counted allocations so far */
static volatile int ready; /* ranges known */

static int counted_object(const char *name)
{
    static const char *const libs[] = {"libjansson", "libpng", "libmicrohttpd", "libz."};
    if (!name || !*name)
        return 1; /* the main executable */
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++)
        if (strstr(name, libs[i]))
            return 1;
    return 0;
}

static int add_ranges(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (!counted_object(info->dlpi_name))
        return 0;
    for (int i = 0; i < info->dlpi_phnum && nranges < MAX_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            ranges[nranges].lo = info->dlpi_addr + ph->p_vaddr;
            ranges[nranges].hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
            const char *base = info->dlpi_name && *info->dlpi_name ? strrchr(info->dlpi_name, '/') : NULL;
            snprintf(ranges[nranges].name, sizeof ranges[nranges].name, "%s",
                     base ? base + 1 : (info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "segd"));
            nranges++;
        }
    }
    return 0;
}

__attribute__((constructor)) static void failmalloc_init(void)
{
    const char *n = getenv("FAILMALLOC_N");
    fail_at = n ? strtol(n, NULL, 10) : 0;
    dl_iterate_phdr(add_ranges, NULL);
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
}

__attribute__((destructor)) static void failmalloc_fini(void)
{
    const char *path = getenv("FAILMALLOC_COUNT_FILE");
    if (!path || !*path)
        return;
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld\n", __atomic_load_n(&counted, __ATOMIC_RELAXED));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (write(fd, buf, (size_t)len) != len) {
            /* nothing to do: the test then reads no count */
        }
        close(fd);
    }
}

/* 1 when this allocation, made from caller, is the one to fail. */
static int should_fail(const void *caller, size_t size)
{
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
        return 0;
    uintptr_t a = (uintptr_t)caller;
    int ours = -1;
    for (int i = 0; i < nranges; i++)
        if (a >= ranges[i].lo && a < ranges[i].hi)
            ours = i;
    if (ours < 0)
        return 0;
    long k = __atomic_add_fetch(&counted, 1, __ATOMIC_RELAXED);
    if (fail_at <= 0 || k != fail_at)
        return 0;
    char msg[160];
    int len = snprintf(msg, sizeof msg, "failmalloc: failing allocation %ld (%zu bytes) in %s\n", k, size,
                       ranges[ours].name);
    if (write(2, msg, (size_t)len) != len) {
        /* stderr gone: the failure still happens */
    }
    if (getenv("FAILMALLOC_BACKTRACE")) { /* where, for a failing run */
        void *frames[16];
        backtrace_symbols_fd(frames, backtrace(frames, 16), 2);
    }
    return 1;
}

void *malloc(size_t n)
{
    if (should_fail(__builtin_return_address(0), n)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    if (should_fail(__builtin_return_address(0), a * b)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    if (n && should_fail(__builtin_return_address(0), n)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n)
{
    if (should_fail(__builtin_return_address(0), n)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    if (should_fail(__builtin_return_address(0), n)) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (should_fail(__builtin_return_address(0), n))
        return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
