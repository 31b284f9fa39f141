/* chargen GRU gates, forward: see gru_gates.h for the contract.  Pure C99. */

#include "gru_gates.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* x86: the float kernel also gets AVX2+FMA and AVX-512 builds, used when the
 * CPU has them (csrc/simd.h). */
#include "simd.h"
#include "exp2f_poly.h"

/* min(max(t, lo), hi) by selects on the bits: a float ?: is control flow
 * under the default -ftrapping-math, and would stop the vectoriser. */
static INLINE float clamp_f32(float t, float lo, float hi) {
    uint32_t tb, lb, hb, below, above;
    memcpy(&tb, &t, sizeof tb);
    memcpy(&lb, &lo, sizeof lb);
    memcpy(&hb, &hi, sizeof hb);
    below = 0u - (uint32_t)(t < lo);
    above = 0u - (uint32_t)(t > hi);
    tb = (tb & ~below & ~above) | (lb & below) | (hb & above);
    memcpy(&t, &tb, sizeof t);
    return t;
}

/* 2^t for t clamped to [-126, 126], where every caller's result has
 * saturated. */
static INLINE float exp2_clamped(float t) { return chargen_exp2f_poly(clamp_f32(t, -126.0f, 126.0f)); }

#define LOG2E_F 1.44269504088896341f

static INLINE float sigmoid_f32(float x) { return 1.0f / (1.0f + exp2_clamped(-LOG2E_F * x)); }

/* 1 - 2 / (1 + e^(2x)): absolute error ~1e-7 near 0, exactly +-1 far out. */
static INLINE float tanh_f32(float x) { return 1.0f - 2.0f / (1.0f + exp2_clamped(2.0f * LOG2E_F * x)); }

static INLINE double sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }
static INLINE double tanh_f64(double x) { return tanh(x); }

/* One row of the batch, defined once per precision from the same text, so
 * the two cannot drift apart.  Each gate's row is its own restrict
 * parameter: that is what lets the vectoriser prove the stores independent. */
#define DEFINE_FORWARD(sfx, real, sigmoid, tanh_)                               \
    static INLINE void forward_row_##sfx(                                       \
        size_t H, const real *restrict xr, const real *restrict xz,             \
        const real *restrict xn, const real *restrict hr, const real *restrict hz, \
        const real *restrict hn, const real *restrict br, const real *restrict bz, \
        const real *restrict bn, const real *restrict hp, real *restrict gr,    \
        real *restrict gz, real *restrict gn, real *restrict gg, real *restrict ho) { \
        size_t j;                                                               \
        for (j = 0; j < H; j++) {                                               \
            const real r = sigmoid(xr[j] + hr[j] + br[j]);                      \
            const real z = sigmoid(xz[j] + hz[j] + bz[j]);                      \
            const real ghn = hn[j] + bn[j];                                     \
            const real n = tanh_(xn[j] + r * ghn);                              \
            gr[j] = r;                                                          \
            gz[j] = z;                                                          \
            gn[j] = n;                                                          \
            gg[j] = ghn;                                                        \
            ho[j] = n + z * (hp[j] - n); /* (1 - z) n + z h_prev */             \
        }                                                                       \
    }                                                                           \
    static INLINE void forward_##sfx(size_t B, size_t H, const real *gi,        \
                                     const real *gh, const real *b_hh,          \
                                     const real *h_prev, real *gates, real *h) { \
        size_t b;                                                               \
        for (b = 0; b < B; b++) {                                               \
            const real *x = gi + b * 3 * H, *y = gh + b * 3 * H;                \
            real *g = gates + b * 4 * H;                                        \
            forward_row_##sfx(H, x, x + H, x + 2 * H, y, y + H, y + 2 * H, b_hh, \
                              b_hh + H, b_hh + 2 * H, h_prev + b * H, g, g + H, \
                              g + 2 * H, g + 3 * H, h + b * H);                 \
        }                                                                       \
    }

DEFINE_FORWARD(f32, float, sigmoid_f32, tanh_f32)
DEFINE_FORWARD(f64, double, sigmoid_f64, tanh_f64)

#if CHARGEN_AVX2
__attribute__((target("avx2,fma"))) static void forward_f32_avx2(
    size_t B, size_t H, const float *gi, const float *gh, const float *b_hh,
    const float *h_prev, float *gates, float *h) {
    forward_f32(B, H, gi, gh, b_hh, h_prev, gates, h);
}
#endif

#if CHARGEN_AVX512
/* 16 floats a vector; prefer-vector-width: GCC's default tuning would stop at 256 bits */
#define AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")))
AVX512_TARGET static void forward_f32_avx512(
    size_t B, size_t H, const float *gi, const float *gh, const float *b_hh,
    const float *h_prev, float *gates, float *h) {
    forward_f32(B, H, gi, gh, b_hh, h_prev, gates, h);
}
#endif

void chargen_gru_forward_f32(size_t B, size_t H, const float *gi, const float *gh,
                             const float *b_hh, const float *h_prev, float *gates,
                             float *h) {
#if CHARGEN_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
        forward_f32_avx512(B, H, gi, gh, b_hh, h_prev, gates, h);
        return;
    }
#endif
#if CHARGEN_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        forward_f32_avx2(B, H, gi, gh, b_hh, h_prev, gates, h);
        return;
    }
#endif
    forward_f32(B, H, gi, gh, b_hh, h_prev, gates, h);
}

void chargen_gru_forward_f64(size_t B, size_t H, const double *gi, const double *gh,
                             const double *b_hh, const double *h_prev, double *gates,
                             double *h) {
    forward_f64(B, H, gi, gh, b_hh, h_prev, gates, h);
}
