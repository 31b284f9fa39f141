/*
 * chargen GRU gates: the gate arithmetic of one forward time step for a batch.
 * Pure C99: no Python headers, no allocation.  Shared by the training kernels
 * (gru_train.c: FusedGRU's forward) and the int8 step (int8_step.c), which
 * link this file and nothing else of the training side.
 *
 * Gate order r, z, n with the reset gate applied after the recurrent product
 * (torch.nn.GRU, ONNX linear_before_reset=1):
 *
 *   r = sigmoid(gi_r + gh_r + b_r)          z = sigmoid(gi_z + gh_z + b_z)
 *   n = tanh(gi_n + r * (gh_n + b_n))       h = (1 - z) * n + z * h_prev
 *
 * Layouts, all row-major and contiguous:
 *   gi     (B, 3H)  x @ W_ih^T + b_ih, the input projection of this step
 *   gh     (B, 3H)  h_prev @ W_hh^T, without its bias
 *   b_hh   (3H)
 *   gates  (B, 4H)  [r z n gh_n + b_n]: everything the backward needs
 *   h, h_prev      (B, H)
 *
 * float: sigmoid and tanh come from one exp2 polynomial (relative error
 * below 2e-7, inputs clamped where the result saturates), vectorised, with
 * AVX2 and AVX-512 builds picked at run time on x86.  double: libm's exp, for
 * the tests that check the gradient in float64.
 */
#ifndef CHARGEN_GRU_GATES_H
#define CHARGEN_GRU_GATES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Writes gates and h for one step. */
void chargen_gru_forward_f32(size_t B, size_t H, const float *gi, const float *gh,
                             const float *b_hh, const float *h_prev,
                             float *gates, float *h);
void chargen_gru_forward_f64(size_t B, size_t H, const double *gi, const double *gh,
                             const double *b_hh, const double *h_prev,
                             double *gates, double *h);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_GRU_GATES_H */
