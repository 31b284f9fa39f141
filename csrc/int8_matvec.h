/*
 * chargen's int8 matrix-vector kernels: the int8 matrix's product (int8_matrix.h) read straight
 * from its rows, no packing; the step's product for batches below the packed kernel's min_batch
 * (int8_gemm.h), and for all of them where there is none. Pure C99 plus each CPU's intrinsics; no
 * Python headers, no allocation, no exit(). Layer 2 of the int8 step: includes only int8_matrix.
 *
 * Kernels (each a tile of TILE outputs against one x row, or four rows where it has a 4-row loop;
 * every output summed in int32 exactly, so every kernel gives the plain loops' bits):
 *   "avx512vnni"    vpdpbusd, 64 bytes at a time; four rows by eight outputs in batches
 *   "avx2"          16 bytes widened to int16, vpmaddwd (exact for any int8 weights)
 *   "neon-i8mm"     USDOT; four rows by eight outputs of USMMLA in batches
 *   "neon-dotprod"  SDOT on x - 128 (int8_cpu.h); four rows by eight outputs in batches
 *   "neon"          widening multiply-adds (vmlal), exact for any uint8 and int8
 *   "wasm-simd128"  WebAssembly SIMD128 (-msimd128): 16 bytes widened to int16, i32x4.dot_i16x8_s
 *   "c"             plain loops (on every CPU)
 * x86's picked with __builtin_cpu_supports, aarch64's from getauxval(AT_HWCAP/AT_HWCAP2).
 */
#ifndef CHARGEN_INT8_MATVEC_H
#define CHARGEN_INT8_MATVEC_H

#include "int8_matrix.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CHARGEN_I8_TILE 8 /* a matrix-vector kernel's unit: eight weight rows stay in L1 across the B rows */

typedef struct {
    const char *name;
    chargen_i8_product_fn *product; /* its units: CHARGEN_I8_TILE outputs */
} chargen_i8_matvec_kernel;

/* The matrix-vector kernels of this build (fastest first, plain C last), *count of them. */
const chargen_i8_matvec_kernel *chargen_i8_matvec_kernels(size_t *count);

/* Whether this CPU runs k. */
int chargen_i8_matvec_usable(const chargen_i8_matvec_kernel *k);

/* The fastest kernel this CPU runs (never NULL: plain C runs everywhere). */
const chargen_i8_matvec_kernel *chargen_i8_matvec_pick(void);

/* y (B, N) = the product (int8_matrix.h) by kernel k, its tiles cut into chunks on the pool; for
 * tests and benchmarks (the step keeps its pick). */
void chargen_i8_matvec(const chargen_i8_matvec_kernel *k, const chargen_i8_matrix *w, size_t B, const uint8_t *xq,
                       size_t ldx, const float *a_scale, const int32_t *zero, float *y, chargen_pool *pool);

/* chargen_i8_matvec with the CPU's kernel. */
void chargen_i8_matmul(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                       const int32_t *zero, float *y, chargen_pool *pool);

/* The CPU's kernel's name: "avx512vnni", "avx2", "neon-i8mm", "neon-dotprod", "neon" or "c". */
const char *chargen_i8_kernel(void);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_INT8_MATVEC_H */
