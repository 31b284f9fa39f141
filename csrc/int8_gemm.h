/*
 * chargen's int8 product for batches: y (B, N) = Q(x) (B, K) W^T + bias, scaled exactly as the
 * matrix-vector kernels' (int8_matrix.h), as a blocked matrix product over weights packed once at
 * load. Pure C99 plus each CPU's intrinsics; no Python headers, no allocation, no exit(). Layer 3
 * of the int8 step: includes only the int8 matrix layer.
 *
 * The packed layout, one for every kernel: panels of CHARGEN_I8_PANEL = 32 outputs; panel p holds,
 * for every group g < ldw / 4 of four k, the 32 outputs' four weights, zeros past N:
 *
 *   packed[(p * ldw / 4 + g) * 128 + 4 n + i] = w[(32 p + n) * ldw + 4 g + i]
 *
 * 64 bytes of a group are what one vpdpbusd takes (16 outputs x 4 k) and one row of an AMX B tile
 * (TDPBUSD's 16 outputs x 4 k): a panel is read as it lies, front to back. 16 bytes of a group
 * are what one SDOT takes (4 outputs x 4 k); two groups' 16 bytes zipped by 32-bit lanes are two
 * USMMLA operands (2 outputs x 8 k).
 *
 * Kernels (register blocks of rows x outputs, each output summed in int32 exactly, so every kernel
 * gives the plain loops' bits):
 *   "amx"         Intel AMX-INT8: 32 rows x 32 outputs in four 16 x 16 int32 tiles (TDPBUSD)
 *   "avx512vnni"  8 rows x 32 outputs of vpdpbusd
 *   "avx2"        narrow weights (all in [-64, 64], as the export's 7-bit int8 is): 4 rows x 16
 *                 outputs of vpmaddubsw, whose 16-bit sums of two uint8 x int8 products cannot
 *                 saturate then (2 x 255 x 64 = 32640), each widened to int32 by vpmaddwd;
 *                 any other int8 weights: 3 rows x 16 outputs of vpmaddwd, both sides widened to
 *                 16 bits (vpmaddubsw would saturate)
 *   "neon-i8mm"   aarch64 with i8mm: 8 rows x 8 outputs in 16 int32x4 of USMMLA (uint8 x int8, 2
 *                 rows x 2 outputs x 8 k each)
 *   "neon-dotprod" aarch64 with dotprod: 8 rows x 8 outputs of SDOT by lane (a row's 16 bytes, four
 *                 groups, against a group's 4 outputs x 4 k) on x - 128 (int8_cpu.h)
 *   "c"           plain loops (the reference for the packed layout; on every CPU)
 * The step takes the CPU's kernel (chargen_i8_gemm_pick) from its min_batch on; below that the
 * matrix-vector kernels (int8_matvec.h), which need no packing, are as fast.
 */
#ifndef CHARGEN_INT8_GEMM_H
#define CHARGEN_INT8_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "int8_matrix.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CHARGEN_I8_PANEL 32

/* Bytes of the packed copy of an (N, ldw) matrix (ldw a multiple of 64). */
size_t chargen_i8_packed_bytes(size_t N, size_t ldw);

/* w (N, ldw) row-major -> packed (chargen_i8_packed_bytes, 64-byte aligned is best). Returns 1
 * where every weight lies in [-64, 64] (the matrix's `narrow`), else 0. */
int chargen_i8_pack(size_t N, size_t ldw, const int8_t *w, int8_t *packed);

/* y (B rows at stride ldy) for the panels [p0, p1) of w->packed: the columns [32 p0, 32 p1) within N. */
typedef void chargen_i8_gemm_fn(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t p0,
                                size_t p1);

typedef struct {
    const char *name;
    chargen_i8_gemm_fn *gemm;
    size_t rows;      /* the register block's rows */
    size_t min_batch; /* the step takes this kernel from this batch size on */
} chargen_i8_gemm_kernel;

/* The packed kernels of this build (fastest first), *count of them; for tests and benchmarks. */
const chargen_i8_gemm_kernel *chargen_i8_gemm_kernels(size_t *count);

/* Whether this CPU and OS run kernels[i] (AMX: the OS grants the tile state, and a small product
 * agrees with the plain loops bit for bit). */
int chargen_i8_gemm_usable(const chargen_i8_gemm_kernel *k);

/* The kernel the step takes on this CPU for batches from its min_batch on, or NULL where there is
 * none better than the matrix-vector kernels (aarch64 without dotprod, plain C builds). */
const chargen_i8_gemm_kernel *chargen_i8_gemm_pick(void);

/* y (B, N) = the product (int8_matrix.h) with kernel k over w->packed, its panels cut into chunks
 * on the pool; for tests and benchmarks (the step keeps its pick). */
void chargen_i8_gemm(const chargen_i8_gemm_kernel *k, const chargen_i8_matrix *w, size_t B, const uint8_t *xq,
                     size_t ldx, const float *a_scale, const int32_t *zero, float *y, chargen_pool *pool);

/* Multiply-adds of the kernel's inner loop (for narrow weights, or any), run `reps` times on data
 * in L1 (its register block of rows by one panel, K = 512), on every thread of the loop: time it
 * for the kernel's peak rate. */
double chargen_i8_gemm_peak(const chargen_i8_gemm_kernel *k, int narrow, size_t reps, chargen_pool *pool,
                            int threads);

/* Reads `bytes` at p, `reps` times, the threads of the loop each a share: a checksum (time it for
 * the read rate of memory of that size). */
uint64_t chargen_i8_read(const void *p, size_t bytes, size_t reps, chargen_pool *pool, int threads);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_INT8_GEMM_H */
