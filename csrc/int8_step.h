/*
 * chargen's int8 GRU step on the CPU: one character for B streams of an int8
 * model, the whole step in C.  Pure C99, its loops on a chargen_pool of threads (pool.h): no
 * Python headers, no allocation, no exit().
 *
 * Why it exists: at batch 1 the int8 step is bound by onnxruntime's int8
 * product, which ran at about half the speed of a plain AVX-512 VNNI loop on
 * the 2-core EPYC (benchmarks/bench_gemv.c: 21-26 us against 43-59 us for the
 * 3072 x 1024 product), and does not get faster with a second thread.  The
 * weights and the arithmetic are the int8 ONNX graph's: the runtime reads them
 * from the .onnx file and checks this step against onnxruntime's before it
 * uses it (chargen/runtime/engine.py).
 *
 * The step, per layer k (torch's GRU, gate order r, z, n, reset after the
 * product; see gru_gates.h for the gate formulas):
 *
 *   gi = layer 0: table[token]            (V, 3H): embedding, W_ih, b_ih folded
 *        layer k: Q(x) W_ih_k^T + b_ih_k  x: layer k-1's new h
 *   gh = Q(h_k) W_hh_k^T                  then the gates with b_hh_k
 *   logits = h_top W_head^T + b_head      (float32)
 *
 * Q is onnxruntime's DynamicQuantizeLinear, per stream (per row): uint8 with
 * scale (max(x, 0) - min(x, 0)) / 255 and zero point round(-min / scale); the
 * weights are int8, symmetric, one scale per output.  The products are summed
 * exactly in int32, then scaled: y = (float)acc * (a_scale * w_scale) + bias,
 * as the graph's Cast, Mul and Add do.  Per row, so a stream's result does
 * not depend on the other streams of the batch (the graph quantizes the whole
 * batch with one scale: identical at B = 1, within rounding beyond).
 *
 * Kernels: AVX-512 VNNI, AVX2 (widened to 16 bits: exact for any int8
 * weights) and plain C, picked at run time on x86; on aarch64 NEON with
 * USDOT/USMMLA (i8mm), SDOT (dotprod) or widening multiply-adds, picked at run
 * time from getauxval(AT_HWCAP/AT_HWCAP2); WebAssembly SIMD128 where built with -msimd128;
 * plain C elsewhere.  Matrices with a
 * packed copy (int8_gemm.h) run batches from the CPU's packed kernel's
 * min_batch on as blocked products (AMX, AVX-512 VNNI, AVX2).  The
 * result does not depend on the kernel or the thread count: every output is
 * summed in int32 by one thread, and the float arithmetic after it is the same.
 */
#ifndef CHARGEN_INT8_STEP_H
#define CHARGEN_INT8_STEP_H

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

typedef struct {
    size_t L, H, V;
    const float *table;            /* (V, 3H) layer 0's gi per symbol */
    const chargen_i8_matrix *w_ih; /* L entries; [0] is not read (the table replaces it) */
    const chargen_i8_matrix *w_hh; /* L entries, each N = 3H, K = H, bias NULL */
    const float *b_hh;             /* (L, 3H) the recurrent bias, added inside the gates */
    const float *head_w;           /* (V, H) */
    const float *head_b;           /* (V) */
    chargen_pool *pool;            /* the step's threads (pool.h); NULL: the caller's alone */
    int threads;                   /* threads of one step, at most the pool's: <= 0 the pool's; 1 the caller alone */
} chargen_i8_gru;

enum {
    CHARGEN_I8_OK = 0,
    CHARGEN_I8_BAD_TOKEN = 1, /* a token outside [0, V): nothing was written */
    CHARGEN_I8_BAD_SHAPE = 2  /* a matrix whose N, K do not match L, H, V */
};

/* Bytes of scratch one step over B streams needs (caller-owned, any alignment
 * of 64 bytes or more is best; one buffer per concurrent caller). */
size_t chargen_i8_scratch_bytes(const chargen_i8_gru *m, size_t B);

/* CHARGEN_I8_OK or CHARGEN_I8_BAD_SHAPE. */
int chargen_i8_check(const chargen_i8_gru *m);

/* One step: token (B), h_in (L, B, H) -> h_out (L, B, H), logits (B, V).
 * h_out must not overlap h_in.  Returns a CHARGEN_I8_* status. */
int chargen_i8_step(const chargen_i8_gru *m, size_t B, const int64_t *token, const float *h_in,
                    float *h_out, float *logits, void *scratch);

/* wsum for a matrix: sum over k < K of w[n * ldw + k], n < N. */
void chargen_i8_row_sums(size_t N, size_t K, size_t ldw, const int8_t *w, int32_t *wsum);

/* The int8 product alone (for tests and benchmarks): y (B, N) as above, with
 * x already quantized: xq (B rows at stride ldx), a_scale (B), zero (B).  The
 * kernels read ldw bytes of every row, so ldx >= w->ldw (what lies past K in
 * a row does not matter: it meets the weights' zero padding). */
void chargen_i8_matmul(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                       const int32_t *zero, float *y, chargen_pool *pool);

/* Q above, one row: xq (K), returns the scale, writes the zero point. */
float chargen_i8_quantize_row(size_t K, const float *x, uint8_t *xq, int32_t *zero);

/* The kernel the CPU gets: "avx512vnni", "avx2", "neon-i8mm", "neon-dotprod", "neon", "wasm-simd128" or "c". */
const char *chargen_i8_kernel(void);

/* Whether the library was built with threads (pool.h; else every step on the caller's). */
int chargen_i8_threaded(void);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_INT8_STEP_H */
