/* The scaling every int8 product ends with (the matrix-vector and the packed kernels): one
 * definition, so that every kernel gives the same float bits. Internal to csrc/; part of the
 * int8 matrix layer (int8_matrix.h). */
#ifndef CHARGEN_INT8_SCALE_H
#define CHARGEN_INT8_SCALE_H

#include "int8_matrix.h"
#include "simd.h"

/* y[b, n0 + r] from the int32 sums acc[r]: the graph's MatMulInteger (the zero point
 * subtracted exactly), Cast, Mul and Add */
static INLINE void scale_out(const chargen_i8_matrix *w, size_t n0, size_t rows, const int32_t *restrict acc,
                             int32_t zero, float a_scale, float *restrict yb) {
    const int32_t *restrict wsum = w->wsum + n0;
    const float *restrict scale = w->scale + n0, *restrict bias = w->bias ? w->bias + n0 : NULL;
    float *restrict out = yb + n0;
    size_t r;
    if (bias)
        for (r = 0; r < rows; r++) out[r] = (float)(acc[r] - zero * wsum[r]) * (a_scale * scale[r]) + bias[r];
    else
        for (r = 0; r < rows; r++) out[r] = (float)(acc[r] - zero * wsum[r]) * (a_scale * scale[r]);
}

#endif /* CHARGEN_INT8_SCALE_H */
