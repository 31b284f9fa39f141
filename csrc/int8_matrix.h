/*
 * chargen's int8 matrix and what every int8 kernel needs: the bottom layer of the int8 step. Pure
 * C99, its loops on a chargen_pool of threads (pool.h): no Python headers, no allocation, no exit().
 *
 * The layers of csrc/'s int8 step, each including and calling only the ones below it:
 *
 *   int8_matrix   the matrix, its row sums, quantizing a row, the scaling (int8_scale.h), the
 *                 CPU's features (int8_cpu.h), the thread cut of a product
 *   int8_matvec   the matrix-vector kernels (no packing)
 *   int8_gemm     the packed product for batches
 *   int8_step     the GRU step, its kernels picked once when it is made
 *
 * A product, y (B, N) = Q(x) (B, K) W^T + bias, with Q onnxruntime's DynamicQuantizeLinear per
 * row (int8_step.h says why per row): uint8 with scale (max(x, 0) - min(x, 0)) / 255 and zero point
 * round(-min / scale); the weights int8, symmetric, one scale per output. The products are summed
 * exactly in int32, then scaled: y = (float)(acc - zero * wsum) * (a_scale * w_scale) + bias, as
 * the graph's MatMulInteger, Cast, Mul and Add do. Every kernel gives the same bits: each output
 * is summed in int32 by one thread, and the float arithmetic after it is one definition.
 */
#ifndef CHARGEN_INT8_MATRIX_H
#define CHARGEN_INT8_MATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One int8 matrix, y (B, N) = Q(x) (B, K) W^T + bias. */
typedef struct {
    size_t N, K;
    size_t ldw;          /* w's row stride: K rounded up to a multiple of 64, the padding zeros */
    const int8_t *w;     /* (N, ldw) row-major: output n's K weights, then zeros */
    const float *scale;  /* (N) */
    const int32_t *wsum; /* (N) sum over k of w[n][k]: the zero point's share, precomputed */
    const float *bias;   /* (N), or NULL */
    const int8_t *packed; /* w packed for batches (int8_gemm.h), or NULL: the step then uses w alone */
    int narrow;           /* every weight in [-64, 64] (chargen_i8_pack says): 16-bit pair sums are exact */
} chargen_i8_matrix;

/* wsum for a matrix: sum over k < K of w[n * ldw + k], n < N. */
void chargen_i8_row_sums(size_t N, size_t K, size_t ldw, const int8_t *w, int32_t *wsum);

/* Q above, one row: xq (K), returns the scale, writes the zero point. */
typedef float chargen_i8_quantize_fn(size_t K, const float *x, uint8_t *xq, int32_t *zero);

/* The CPU's build of Q (AVX-512, AVX2 or plain C: the same bits). */
chargen_i8_quantize_fn *chargen_i8_quantize_pick(void);

/* Q with the CPU's build (for tests and benchmarks; the step keeps the pick). */
float chargen_i8_quantize_row(size_t K, const float *x, uint8_t *xq, int32_t *zero);

/* A kernel's product over the units [u0, u1) of a matrix's outputs (a unit: the kernel's block
 * of outputs, the last one cut at N): y (B rows at stride ldy) from xq (B rows at stride ldx,
 * ldx >= w->ldw: the kernels read ldw bytes of every row), a_scale (B), zero (B). */
typedef void chargen_i8_product_fn(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                   const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t u0,
                                   size_t u1);

/* Threads a loop on the pool gets: `threads` (<= 0: the pool's), at most the pool's; 1 without a
 * usable pool. */
int chargen_i8_team(chargen_pool *pool, int threads);

/* The thread cut: items in chunks of *per (at least min_per) for `threads` threads, enough that a
 * late or slow thread leaves little to wait for. Returns the number of chunks. */
size_t chargen_i8_cut(size_t items, size_t min_per, int threads, size_t *per);

/* The first item past chunk c of a cut. */
size_t chargen_i8_chunk_end(size_t c, size_t per, size_t items);

/* y (B rows at stride ldy) = the product by fn, whose units are `unit` outputs, the units cut into
 * chunks on the pool (threads as in chargen_i8_team). */
void chargen_i8_product(chargen_pool *pool, int threads, chargen_i8_product_fn *fn, size_t unit,
                        const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                        const int32_t *zero, float *y, size_t ldy);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_INT8_MATRIX_H */
