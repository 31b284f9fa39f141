/*
 * chargen GRU training kernels: the gate arithmetic of one time step backwards,
 * for a batch, and dropout.  The forward step is gru_gates.h's (included
 * here).  Pure C99: no Python headers, no allocation.
 *
 * The recurrent GEMMs stay with the caller's BLAS; these kernels replace the
 * dozen element-wise passes a framework makes per step with one pass each
 * (measured: 0.32 s of a 1.25 s training step of the tutorial model ran in
 * torch's element-wise ops).
 *
 * Gate order and layouts: gru_gates.h.  Besides its layouts:
 *   d_out, dh_rec, carry  (B, H)
 */
#ifndef CHARGEN_GRU_TRAIN_H
#define CHARGEN_GRU_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "gru_gates.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The step backwards.  The gradient reaching h is
 *   dh = dh_rec + carry + d_out
 * with dh_rec = d_gh(next step) @ W_hh (the caller's GEMM; NULL at the last
 * step), carry = z(next step) * dh(next step) (the gradient of h at the last
 * step on the first call) and d_out the gradient of this step's output (NULL
 * when the output is unused).  Writes d_gi (B, 3H), the gradient of gi;
 * d_gh (B, 3H), the gradient of h_prev @ W_hh^T + b_hh; and carry = z * dh,
 * this step's direct share of the gradient of h_prev. */
void chargen_gru_backward_f32(size_t B, size_t H, const float *gates,
                              const float *h_prev, const float *d_out,
                              const float *dh_rec, float *carry, float *d_gi,
                              float *d_gh);
void chargen_gru_backward_f64(size_t B, size_t H, const double *gates,
                              const double *h_prev, const double *d_out,
                              const double *dh_rec, double *carry, double *d_gi,
                              double *d_gh);

/* Dropout: mask[i] = 1 (keep) with probability 1 - p, else 0; a pure
 * function of (seed, i), so a mask can be made again from its seed.  Each
 * 64-bit splitmix64 output gives four 16-bit draws: p is rounded to a
 * multiple of 1/65536. */
void chargen_dropout_mask(size_t n, double p, uint64_t seed, uint8_t *mask);

/* y[i] = mask[i] ? x[i] * scale : 0  (y may be x). */
void chargen_dropout_apply_f32(size_t n, const float *x, const uint8_t *mask, float scale, float *y);
void chargen_dropout_apply_f64(size_t n, const double *x, const uint8_t *mask, double scale, double *y);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_GRU_TRAIN_H */
