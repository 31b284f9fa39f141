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
 * Q is onnxruntime's DynamicQuantizeLinear per stream (per row; int8_matrix.h), so a stream's
 * result does not depend on the other streams of the batch (the graph quantizes the whole batch
 * with one scale: identical at B = 1, within rounding beyond).
 *
 * The top layer of csrc/'s int8 step (int8_matrix.h lists the layers): its products run on the
 * matrix-vector kernels (int8_matvec.h), and on the packed kernel (int8_gemm.h) from that
 * kernel's min_batch on for matrices with a packed copy. chargen_i8_init picks the CPU's kernels
 * once, into the model; every step runs on them. The result does not depend on the kernels or
 * the thread count: every output is summed in int32 by one thread, and the float arithmetic
 * after it is the same.
 */
#ifndef CHARGEN_INT8_STEP_H
#define CHARGEN_INT8_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "int8_gemm.h"
#include "int8_matrix.h"
#include "int8_matvec.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The head's float32 product, logits (B, V) = h (B, H) W^T + bias, for the rows [v0, v1) of W. */
typedef void chargen_i8_head_fn(size_t B, size_t H, size_t V, const float *h, const float *w, const float *bias,
                                float *logits, size_t v0, size_t v1);

/* The kernels a step runs on: chargen_i8_init picks the CPU's; a caller may set others that the
 * CPU runs (tests: each packed kernel as the step's product). */
typedef struct {
    const chargen_i8_matvec_kernel *matvec;
    const chargen_i8_gemm_kernel *packed; /* NULL: the matrix-vector kernel for every batch */
    size_t packed_from;                   /* the batch size from which packed runs (its min_batch) */
    chargen_i8_quantize_fn *quantize;
    chargen_i8_head_fn *head;
} chargen_i8_kernels;

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
    chargen_i8_kernels kernels;    /* chargen_i8_init's */
} chargen_i8_gru;

enum {
    CHARGEN_I8_OK = 0,
    CHARGEN_I8_BAD_TOKEN = 1, /* a token outside [0, V): nothing was written */
    CHARGEN_I8_BAD_SHAPE = 2, /* a matrix whose N, K do not match L, H, V */
    CHARGEN_I8_NOT_READY = 3  /* a model chargen_i8_init has not made ready: nothing was written */
};

/* Makes a filled-in model ready to step: checks that its shapes fit together and picks the CPU's
 * kernels into m->kernels. CHARGEN_I8_OK or CHARGEN_I8_BAD_SHAPE (then m->kernels is cleared). */
int chargen_i8_init(chargen_i8_gru *m);

/* Bytes of scratch one step over B streams needs (caller-owned, any alignment
 * of 64 bytes or more is best; one buffer per concurrent caller). */
size_t chargen_i8_scratch_bytes(const chargen_i8_gru *m, size_t B);

/* One step: token (B), h_in (L, B, H) -> h_out (L, B, H), logits (B, V).
 * h_out must not overlap h_in.  Returns a CHARGEN_I8_* status. */
int chargen_i8_step(const chargen_i8_gru *m, size_t B, const int64_t *token, const float *h_in,
                    float *h_out, float *logits, void *scratch);

/* Whether the library was built with threads (pool.h; else every step on the caller's). */
int chargen_i8_threaded(void);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_INT8_STEP_H */
