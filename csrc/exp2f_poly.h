/* chargen: 2^t in float for t already clamped to where 2^round(t) is a
 * normal float (|round(t)| <= 126).  Cephes exp2f: round to the nearest
 * integer k, 2^f for f = t - k in [-1/2, 1/2] by a degree-6 polynomial
 * (relative error < 2e-7), times 2^k set through the exponent bits.  Only
 * + - * and int conversions, branch-free, so the loops that call it
 * vectorise; the including file's contraction setting decides whether the
 * polynomial uses FMA (sampler.c forbids it, to stay bit-identical). */
#ifndef CHARGEN_EXP2F_POLY_H
#define CHARGEN_EXP2F_POLY_H

#include <stdint.h>
#include <string.h>

#include "simd.h"

static INLINE float chargen_exp2f_poly(float t) {
    const float k = (t + 12582912.0f) - 12582912.0f; /* round: 1.5 * 2^23 */
    const float f = t - k;                           /* exact, |f| <= 1/2 */
    float y, scale;
    uint32_t bits;
    y = 1.535336188319500e-4f;
    y = y * f + 1.339887440266574e-3f;
    y = y * f + 9.618437357674640e-3f;
    y = y * f + 5.550332471162809e-2f;
    y = y * f + 2.402264791363012e-1f;
    y = y * f + 6.931472028550421e-1f;
    y = y * f + 1.0f;
    bits = (uint32_t)((int32_t)k + 127) << 23;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

#endif /* CHARGEN_EXP2F_POLY_H */
