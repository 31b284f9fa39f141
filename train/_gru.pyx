# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, embedsignature=True
"""The GRU training kernels of csrc/gru_gates.c (forward) and gru_train.c for FusedGRU: one step's gate
arithmetic, forward and backward, in one pass each.

    forward_step(gi, gh, b_hh, h_prev, gates, h)
    backward_step(gates, h_prev, d_out, dh_rec, carry, d_gi, d_gh)
    dropout_mask(mask, p, seed)          mask: uint8, 1 = keep, a function of (seed, index)
    dropout_apply(x, mask, scale, y)     y = x * mask * scale, 1-D arrays

Arguments are C-contiguous float32 or float64 arrays (all of one dtype) with
the shapes of csrc/gru_gates.h and gru_train.h: gi, gh, d_gi, d_gh (B, 3H); gates (B, 4H);
b_hh (3H,); the rest (B, H). d_out and dh_rec may be None. Outputs are
written in place; nothing is allocated.
"""

from cython cimport floating
from libc.stdint cimport uint8_t, uint64_t


cdef extern from "gru_train.h" nogil:
    void chargen_gru_forward_f32(size_t B, size_t H, const float *gi, const float *gh,
                                 const float *b_hh, const float *h_prev, float *gates, float *h)
    void chargen_gru_forward_f64(size_t B, size_t H, const double *gi, const double *gh,
                                 const double *b_hh, const double *h_prev, double *gates, double *h)
    void chargen_gru_backward_f32(size_t B, size_t H, const float *gates, const float *h_prev,
                                  const float *d_out, const float *dh_rec, float *carry,
                                  float *d_gi, float *d_gh)
    void chargen_gru_backward_f64(size_t B, size_t H, const double *gates, const double *h_prev,
                                  const double *d_out, const double *dh_rec, double *carry,
                                  double *d_gi, double *d_gh)
    void chargen_dropout_mask(size_t n, double p, uint64_t seed, uint8_t *mask)
    void chargen_dropout_apply_f32(size_t n, const float *x, const uint8_t *mask, float scale, float *y)
    void chargen_dropout_apply_f64(size_t n, const double *x, const uint8_t *mask, double scale, double *y)


cdef int _check(str name, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t B, Py_ssize_t width) except -1:
    if rows != B or cols != width:
        raise ValueError(f"{name} must be ({B}, {width}), got ({rows}, {cols})")
    return 0


def forward_step(const floating[:, ::1] gi, const floating[:, ::1] gh, const floating[::1] b_hh,
                 const floating[:, ::1] h_prev, floating[:, ::1] gates, floating[:, ::1] h):
    cdef Py_ssize_t B = h.shape[0], H = h.shape[1]
    _check("gi", gi.shape[0], gi.shape[1], B, 3 * H)
    _check("gh", gh.shape[0], gh.shape[1], B, 3 * H)
    _check("b_hh", 1, b_hh.shape[0], 1, 3 * H)
    _check("h_prev", h_prev.shape[0], h_prev.shape[1], B, H)
    _check("gates", gates.shape[0], gates.shape[1], B, 4 * H)
    if B == 0 or H == 0:
        return
    with nogil:
        if floating is float:
            chargen_gru_forward_f32(B, H, &gi[0, 0], &gh[0, 0], &b_hh[0], &h_prev[0, 0], &gates[0, 0], &h[0, 0])
        else:
            chargen_gru_forward_f64(B, H, &gi[0, 0], &gh[0, 0], &b_hh[0], &h_prev[0, 0], &gates[0, 0], &h[0, 0])


def backward_step(const floating[:, ::1] gates, const floating[:, ::1] h_prev,
                  const floating[:, ::1] d_out, const floating[:, ::1] dh_rec,
                  floating[:, ::1] carry, floating[:, ::1] d_gi, floating[:, ::1] d_gh):
    cdef Py_ssize_t B = carry.shape[0], H = carry.shape[1]
    cdef const floating *d_out_p = NULL
    cdef const floating *dh_rec_p = NULL
    _check("gates", gates.shape[0], gates.shape[1], B, 4 * H)
    _check("h_prev", h_prev.shape[0], h_prev.shape[1], B, H)
    _check("d_gi", d_gi.shape[0], d_gi.shape[1], B, 3 * H)
    _check("d_gh", d_gh.shape[0], d_gh.shape[1], B, 3 * H)
    if d_out is not None:
        _check("d_out", d_out.shape[0], d_out.shape[1], B, H)
    if dh_rec is not None:
        _check("dh_rec", dh_rec.shape[0], dh_rec.shape[1], B, H)
    if B == 0 or H == 0:
        return
    if d_out is not None:
        d_out_p = &d_out[0, 0]
    if dh_rec is not None:
        dh_rec_p = &dh_rec[0, 0]
    with nogil:
        if floating is float:
            chargen_gru_backward_f32(B, H, &gates[0, 0], &h_prev[0, 0], d_out_p, dh_rec_p,
                                     &carry[0, 0], &d_gi[0, 0], &d_gh[0, 0])
        else:
            chargen_gru_backward_f64(B, H, &gates[0, 0], &h_prev[0, 0], d_out_p, dh_rec_p,
                                     &carry[0, 0], &d_gi[0, 0], &d_gh[0, 0])


def dropout_mask(uint8_t[::1] mask, double p, uint64_t seed):
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    with nogil:
        chargen_dropout_mask(mask.shape[0], p, seed, &mask[0] if mask.shape[0] else NULL)


def dropout_apply(const floating[::1] x, const uint8_t[::1] mask, double scale, floating[::1] y):
    cdef Py_ssize_t n = x.shape[0]
    if mask.shape[0] != n or y.shape[0] != n:
        raise ValueError(f"x, mask and y must have one length, got {n}, {mask.shape[0]}, {y.shape[0]}")
    if n == 0:
        return
    with nogil:
        if floating is float:
            chargen_dropout_apply_f32(n, &x[0], &mask[0], <float>scale, &y[0])
        else:
            chargen_dropout_apply_f64(n, &x[0], &mask[0], scale, &y[0])
