/* chargen: the x86 vector loops of csrc/ also get an AVX2 build (with GCC or
 * clang), picked at run time with __builtin_cpu_supports; CHARGEN_NO_AVX2
 * turns it off.  INLINE forces the shared loop bodies into each build. */
#ifndef CHARGEN_SIMD_H
#define CHARGEN_SIMD_H

#if (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__i386__)) && !defined(CHARGEN_NO_AVX2)
#define CHARGEN_AVX2 1
#define INLINE inline __attribute__((always_inline))
#else
#define CHARGEN_AVX2 0
#define INLINE inline
#endif

/* ... and, where it pays (the training gate loops), an AVX-512 build too;
 * CHARGEN_NO_AVX512 turns just that off. */
#if CHARGEN_AVX2 && !defined(CHARGEN_NO_AVX512)
#define CHARGEN_AVX512 1
#else
#define CHARGEN_AVX512 0
#endif

#endif /* CHARGEN_SIMD_H */
