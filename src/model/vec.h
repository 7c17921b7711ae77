/* Shared by the kernel files: hot loops get an AVX2 clone (chosen at load
 * time by the dynamic linker); no FMA contraction, so both clones give
 * identical results.  Not under ThreadSanitizer: ifunc resolvers run before
 * its runtime. */
#ifndef SEGD_MODEL_VEC_H
#define SEGD_MODEL_VEC_H

#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define VEC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VEC_CLONES
#endif

#endif
