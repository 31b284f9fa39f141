/* chargen GRU training kernels: see gru_train.h for the contract.  Pure C99. */

#include "gru_train.h"

#include <stdint.h>
#include <string.h>

/* x86: the float kernels also get AVX2+FMA and AVX-512 builds, used when the CPU has
 * them (csrc/simd.h). */
#include "simd.h"

/* One row of the batch, defined once per precision from the same text, so
 * the two cannot drift apart.  Each gate's row is its own restrict
 * parameter: that is what lets the vectoriser prove the stores independent. */
#define DEFINE_BACKWARD(sfx, real)                                              \
    static INLINE void add_row_##sfx(size_t H, real *restrict c, const real *restrict d) { \
        size_t j;                                                               \
        for (j = 0; j < H; j++) c[j] += d[j];                                   \
    }                                                                           \
    static INLINE void backward_row_##sfx(                                      \
        size_t H, const real *restrict gr, const real *restrict gz,             \
        const real *restrict gn, const real *restrict gg, const real *restrict hp, \
        real *restrict c, real *restrict dir, real *restrict diz, real *restrict din, \
        real *restrict dgr, real *restrict dgz, real *restrict dgn) {           \
        size_t j;                                                               \
        for (j = 0; j < H; j++) {                                               \
            const real r = gr[j], z = gz[j], n = gn[j], dh = c[j];              \
            const real d_n = dh * (1 - z) * (1 - n * n);                        \
            const real d_z = dh * (hp[j] - n) * z * (1 - z);                    \
            const real d_r = d_n * gg[j] * r * (1 - r);                         \
            dir[j] = d_r;                                                       \
            diz[j] = d_z;                                                       \
            din[j] = d_n;                                                       \
            dgr[j] = d_r;                                                       \
            dgz[j] = d_z;                                                       \
            dgn[j] = d_n * r;                                                   \
            c[j] = dh * z;                                                      \
        }                                                                       \
    }                                                                           \
    static INLINE void backward_##sfx(size_t B, size_t H, const real *gates,    \
                                      const real *h_prev, const real *d_out,    \
                                      const real *dh_rec, real *carry, real *d_gi, \
                                      real *d_gh) {                             \
        size_t b;                                                               \
        for (b = 0; b < B; b++) {                                               \
            const real *g = gates + b * 4 * H;                                  \
            real *c = carry + b * H, *di = d_gi + b * 3 * H, *dg = d_gh + b * 3 * H; \
            /* separate passes keep the main loop free of branches */           \
            if (dh_rec) add_row_##sfx(H, c, dh_rec + b * H);                    \
            if (d_out) add_row_##sfx(H, c, d_out + b * H);                      \
            backward_row_##sfx(H, g, g + H, g + 2 * H, g + 3 * H, h_prev + b * H, c, \
                               di, di + H, di + 2 * H, dg, dg + H, dg + 2 * H); \
        }                                                                       \
    }

DEFINE_BACKWARD(f32, float)
DEFINE_BACKWARD(f64, double)

#if CHARGEN_AVX2
__attribute__((target("avx2,fma"))) static void backward_f32_avx2(
    size_t B, size_t H, const float *gates, const float *h_prev, const float *d_out,
    const float *dh_rec, float *carry, float *d_gi, float *d_gh) {
    backward_f32(B, H, gates, h_prev, d_out, dh_rec, carry, d_gi, d_gh);
}
#endif

#if CHARGEN_AVX512
/* 16 floats a vector; prefer-vector-width: GCC's default tuning would stop at 256 bits */
#define AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512")))
AVX512_TARGET static void backward_f32_avx512(
    size_t B, size_t H, const float *gates, const float *h_prev, const float *d_out,
    const float *dh_rec, float *carry, float *d_gi, float *d_gh) {
    backward_f32(B, H, gates, h_prev, d_out, dh_rec, carry, d_gi, d_gh);
}
#endif

void chargen_gru_backward_f32(size_t B, size_t H, const float *gates,
                              const float *h_prev, const float *d_out,
                              const float *dh_rec, float *carry, float *d_gi,
                              float *d_gh) {
#if CHARGEN_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl")) {
        backward_f32_avx512(B, H, gates, h_prev, d_out, dh_rec, carry, d_gi, d_gh);
        return;
    }
#endif
#if CHARGEN_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        backward_f32_avx2(B, H, gates, h_prev, d_out, dh_rec, carry, d_gi, d_gh);
        return;
    }
#endif
    backward_f32(B, H, gates, h_prev, d_out, dh_rec, carry, d_gi, d_gh);
}

void chargen_gru_backward_f64(size_t B, size_t H, const double *gates,
                              const double *h_prev, const double *d_out,
                              const double *dh_rec, double *carry, double *d_gi,
                              double *d_gh) {
    backward_f64(B, H, gates, h_prev, d_out, dh_rec, carry, d_gi, d_gh);
}

/* ------------------------------------------------------------- dropout */
/* torch's CPU dropout drew a float per element through its generator: 0.1 to
 * 0.2 s of a training step at the output of a (100, 64, 1024) GRU. */
static INLINE uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void chargen_dropout_mask(size_t n, double p, uint64_t seed, uint8_t *mask) {
    const uint32_t threshold = (uint32_t)(p * 65536.0 + 0.5); /* drop if u16 < threshold */
    size_t i, k;
    for (i = 0; i < n; i += 4) {
        const uint64_t r = splitmix64(seed + (uint64_t)(i / 4 + 1) * 0x9E3779B97F4A7C15ULL);
        for (k = 0; k < 4 && i + k < n; k++)
            mask[i + k] = (uint8_t)(((r >> (16 * k)) & 0xFFFFu) >= threshold);
    }
}

void chargen_dropout_apply_f32(size_t n, const float *x, const uint8_t *mask, float scale, float *y) {
    size_t i;
    for (i = 0; i < n; i++) y[i] = x[i] * (scale * (float)mask[i]);
}

void chargen_dropout_apply_f64(size_t n, const double *x, const uint8_t *mask, double scale, double *y) {
    size_t i;
    for (i = 0; i < n; i++) y[i] = x[i] * (scale * (double)mask[i]);
}
