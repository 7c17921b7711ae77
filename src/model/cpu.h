/* What the machine gives this process: CPU features (the AVX2+FMA and
 * AVX-512 kernels), CPUs and memory, cgroup limits included.  The one place
 * segd asks. */
#ifndef SEGD_MODEL_CPU_H
#define SEGD_MODEL_CPU_H

#include <stddef.h>

/* 1 when the CPU has AVX2 and FMA (the native micro-kernel and the AVX2
 * transforms may run), else 0; always 0 off x86-64.  Cannot fail. */
int segd_cpu_has_avx2(void);

/* 1 when the CPU has AVX2+FMA, AVX-512F and AVX-512DQ and the OS saves the
 * ZMM registers (XCR0, read with XGETBV), so the AVX-512 micro-kernel may
 * run; else 0, always 0 off x86-64.  Cannot fail. */
int segd_cpu_has_avx512(void);

/* 1 when segd_cpu_has_avx512() and the CPU also has AVX-512BW and
 * AVX512-BF16 (CPUID leaf 7 subleaf 1 EAX bit 5), so the bf16 Winograd
 * GEMMs may run; else 0, always 0 off x86-64.  Cannot fail. */
int segd_cpu_has_avx512_bf16(void);

/* The widest native kernels (SEGD_ISA_*, model/gemm.h) this CPU runs and
 * the caller allows: no_avx2 stands for a CPU without AVX2 (portable, and
 * so no AVX-512 either), no_avx512 for one without AVX-512.  Cannot fail. */
int segd_cpu_isa(int no_avx2, int no_avx512);

/* CPUs this process may use: affinity mask capped by a cgroup v2 CPU quota.
 * Always >= 1.  The default for worker and thread counts. */
int segd_cpu_count(void);

/* Bytes of memory this process may use: the smallest cgroup v2 (or v1)
 * memory limit found (its own cgroup's, e.g. systemd MemoryMax=, or the
 * container's), else physical RAM.  Cannot fail (falls back to
 * 1 GiB when nothing can be read). */
size_t segd_memory_bytes(void);

#endif
