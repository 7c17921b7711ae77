/* What the machine gives this process: whether the CPU has AVX2+FMA and
 * AVX-512 (with the OS saving its registers, and AVX512-BF16), and how many CPUs and how
 * much memory it may really use: the affinity mask and RAM, further capped
 * by cgroup limits (containers, systemd CPUQuota=/MemoryMax=), so that
 * defaults follow the container's limits and not the host's. */
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "model/cpu.h"
#include "model/gemm.h"

int segd_cpu_has_avx2(void)
{
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* The CPU's AVX-512F and AVX-512DQ bits are not enough: the kernel must
 * also save and restore the ZMM state (opmask, upper halves of ZMM0-15,
 * ZMM16-31) on context switches, which XCR0 bits 5-7 (with SSE and AVX
 * state, bits 1-2) say; a hypervisor or kernel may leave them off. */
int segd_cpu_has_avx512(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!segd_cpu_has_avx2() || !__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0xe6) != 0xe6)
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & bit_AVX512F) && (b & bit_AVX512DQ);
#else
    return 0;
#endif
}

/* The XSAVE check of segd_cpu_has_avx512 covers the BF16 instructions too:
 * they use the same ZMM state. */
int segd_cpu_has_avx512_bf16(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!segd_cpu_has_avx512() || !__get_cpuid_count(7, 0, &a, &b, &c, &d) ||
        !(b & bit_AVX512BW) || a < 1)
        return 0; /* a: the highest subleaf of leaf 7 */
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d))
        return 0;
    return (a >> 5) & 1;
#else
    return 0;
#endif
}

int segd_cpu_isa(int no_avx2, int no_avx512)
{
    if (no_avx2 || !segd_cpu_has_avx2())
        return SEGD_ISA_PORTABLE;
    if (no_avx512 || !segd_cpu_has_avx512())
        return SEGD_ISA_AVX2;
    return SEGD_ISA_AVX512;
}

int segd_cpu_count(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c < 1 ? 1 : (int)c;
    }
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char quota[32];
        long period = 0;
        if (fscanf(f, "%31s %ld", quota, &period) == 2 && period > 0 && quota[0] != 'm') {
            long q = atol(quota);
            int lim = (int)((q + period - 1) / period);
            if (lim >= 1 && lim < n)
                n = lim;
        }
        fclose(f);
    }
    return n;
}

/* A cgroup limit file holding a byte count ("max" or unreadable: 0). */
static unsigned long long read_limit(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long long v = 0;
    if (fscanf(f, "%llu", &v) != 1)
        v = 0;
    fclose(f);
    return v;
}

/* The memory limit of this process' own cgroup, from /proc/self/cgroup:
 * v2 "0::/path" -> /sys/fs/cgroup/path/memory.max (a systemd unit's
 * MemoryMax= lives there), v1 "N:memory:/path" ->
 * /sys/fs/cgroup/memory/path/memory.limit_in_bytes; the smallest found,
 * or 0. */
static unsigned long long own_cgroup_limit(void)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return 0;
    char line[512], path[700];
    unsigned long long best = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        const char *v1 = strstr(line, ":memory:");
        unsigned long long v = 0;
        if (strncmp(line, "0::", 3) == 0) {
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", line + 3);
            v = read_limit(path);
        } else if (v1) {
            snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", v1 + 8);
            v = read_limit(path);
        }
        if (v > 0 && (best == 0 || v < best))
            best = v;
    }
    fclose(f);
    return best;
}

size_t segd_memory_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    unsigned long long mem = pages > 0 && page > 0 ? (unsigned long long)pages * (unsigned long long)page
                                                   : 1ull << 30;
    unsigned long long own = own_cgroup_limit();
    if (own > 0 && own < mem)
        mem = own;
    unsigned long long v2 = read_limit("/sys/fs/cgroup/memory.max");
    unsigned long long v1 = read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    if (v2 > 0 && v2 < mem)
        mem = v2;
    if (v1 > 0 && v1 < mem)
        mem = v1;
    return mem > (unsigned long long)SIZE_MAX ? SIZE_MAX : (size_t)mem;
}
