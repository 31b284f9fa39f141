/* What the int8 kernels may use on this build and this CPU: internal to csrc/, part of the int8
 * matrix layer (int8_matrix.h). The kernels' own intrinsics headers stay in their .c files (the
 * packed product's x86 emulation build takes SIMDe's in place of the compiler's).
 *
 * x86 (simd.h): AVX2 and AVX-512 builds of the loops, picked with __builtin_cpu_supports.
 * aarch64: NEON is in every CPU (its kernels need no flag); SDOT (dotprod) and USDOT/USMMLA
 * (i8mm) are detected at run time (getauxval, Linux), their functions built for them with target
 * attributes (GCC), never assumed at compile time. CHARGEN_NO_NEON: plain C only;
 * CHARGEN_NO_DOTPROD: no dotprod or i8mm kernel. */
#ifndef CHARGEN_INT8_CPU_H
#define CHARGEN_INT8_CPU_H

#include "simd.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(CHARGEN_NO_NEON)
#define CHARGEN_NEON 1
#else
#define CHARGEN_NEON 0
#endif

#if CHARGEN_NEON && defined(__linux__) && !defined(__clang__) && !defined(CHARGEN_NO_DOTPROD)
#define CHARGEN_DOTPROD 1
#define CHARGEN_I8MM 1
#define DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#define I8MM_TARGET __attribute__((target("arch=armv8.2-a+dotprod+i8mm")))
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef AT_HWCAP2
#define AT_HWCAP2 26
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
/* SDOT, and USDOT/USMMLA, on this CPU */
static inline int cpu_dotprod(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }
static inline int cpu_i8mm(void) { return cpu_dotprod() && (getauxval(AT_HWCAP2) & HWCAP2_I8MM) != 0; }
#else
#define CHARGEN_DOTPROD 0
#define CHARGEN_I8MM 0
#endif

/* SDOT multiplies int8 by int8: the kernels that use it take x - 128 (x xor 0x80 read as int8)
 * and sum acc' = sum (x - 128) w = acc - 128 wsum; their scaling takes zero - 128 for the zero
 * point: acc' - (zero - 128) wsum = acc - zero wsum, the same int32 as the other kernels'. */
#define X_OFFSET_SDOT 128

#if CHARGEN_AVX2
static inline int cpu_avx2(void) { return __builtin_cpu_supports("avx2"); }
#endif
#if CHARGEN_AVX512
static inline int cpu_avx512vnni(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}
#endif

#endif /* CHARGEN_INT8_CPU_H */
