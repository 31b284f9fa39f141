/* chargen's int8 matrix layer: row sums, quantizing a row, the thread cut of a product (see
 * int8_matrix.h). Pure C99. */

#include "int8_matrix.h"

#include <string.h>

#include "int8_cpu.h"

#define CHUNKS_PER_THREAD 8 /* a loop's chunks: enough that a late or slow thread leaves little to wait for */

void chargen_i8_row_sums(size_t N, size_t K, size_t ldw, const int8_t *w, int32_t *wsum) {
    size_t n, k;
    for (n = 0; n < N; n++) {
        int32_t s = 0;
        for (k = 0; k < K; k++) s += w[n * ldw + k];
        wsum[n] = s;
    }
}

/* ------------------------------------------------------------------ quantize a row */
/* round to nearest, ties to even (as nearbyint in the default mode), for |t| < 2^22 */
static INLINE float round_even(float t) { return (t + 12582912.0f) - 12582912.0f; }

/* the loops are plain C, built for AVX-512 and AVX2 as well (the minimum, maximum, division and
 * rounding all vectorise) */
static INLINE float quantize_row(size_t K, const float *restrict x, uint8_t *restrict xq, int32_t *zero) {
    float lo = 0.0f, hi = 0.0f, scale, zp;
    size_t k;
    for (k = 0; k < K; k++) {
        lo = x[k] < lo ? x[k] : lo;
        hi = x[k] > hi ? x[k] : hi;
    }
    scale = (hi - lo) / 255.0f;
    if (!(scale > 0.0f)) { /* all zeros (or NaN): every product is 0 */
        memset(xq, 0, K);
        *zero = 0;
        return 0.0f;
    }
    zp = round_even(-lo / scale);
    zp = zp < 0.0f ? 0.0f : zp > 255.0f ? 255.0f : zp;
    for (k = 0; k < K; k++) {
        float q = round_even(x[k] / scale) + zp;
        q = q < 0.0f ? 0.0f : q > 255.0f ? 255.0f : q;
        xq[k] = (uint8_t)q;
    }
    *zero = (int32_t)zp;
    return scale;
}

static float quantize_c(size_t K, const float *restrict x, uint8_t *restrict xq, int32_t *zero) {
    return quantize_row(K, x, xq, zero);
}
#if CHARGEN_AVX2
__attribute__((target("avx2,fma"))) static float quantize_avx2(size_t K, const float *restrict x,
                                                              uint8_t *restrict xq, int32_t *zero) {
    return quantize_row(K, x, xq, zero);
}
#endif
#if CHARGEN_AVX512
__attribute__((target("avx512f,avx512bw,avx2,fma,prefer-vector-width=512"))) static float quantize_avx512(
    size_t K, const float *restrict x, uint8_t *restrict xq, int32_t *zero) {
    return quantize_row(K, x, xq, zero);
}
#endif

chargen_i8_quantize_fn *chargen_i8_quantize_pick(void) {
#if CHARGEN_AVX512
    if (cpu_avx512vnni()) return quantize_avx512; /* the CPUs whose step kernel is AVX-512's */
#endif
#if CHARGEN_AVX2
    if (cpu_avx2()) return quantize_avx2;
#endif
    return quantize_c;
}

float chargen_i8_quantize_row(size_t K, const float *x, uint8_t *xq, int32_t *zero) {
    return chargen_i8_quantize_pick()(K, x, xq, zero);
}

/* ------------------------------------------------------------------ the thread cut */
int chargen_i8_team(chargen_pool *pool, int threads) {
    const int n = chargen_pool_usable(pool) ? chargen_pool_threads(pool) : 1;
    return threads <= 0 || threads > n ? n : threads;
}

size_t chargen_i8_cut(size_t items, size_t min_per, int threads, size_t *per) {
    const size_t want = threads > 1 ? CHUNKS_PER_THREAD * (size_t)threads : 1;
    size_t p = (items + want - 1) / want;
    p = p < min_per ? min_per : p;
    p = p < 1 ? 1 : p;
    *per = p;
    return (items + p - 1) / p;
}

size_t chargen_i8_chunk_end(size_t c, size_t per, size_t items) {
    return (c + 1) * per < items ? (c + 1) * per : items;
}

typedef struct {
    chargen_i8_product_fn *fn;
    const chargen_i8_matrix *w;
    size_t B, ldx, ldy, per, units;
    const uint8_t *xq;
    const float *a_scale;
    const int32_t *zero;
    float *y;
} product_job;

static void product_chunk(void *arg, size_t c) {
    const product_job *j = arg;
    j->fn(j->w, j->B, j->xq, j->ldx, j->a_scale, j->zero, j->y, j->ldy, c * j->per,
          chargen_i8_chunk_end(c, j->per, j->units));
}

void chargen_i8_product(chargen_pool *pool, int threads, chargen_i8_product_fn *fn, size_t unit,
                        const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                        const int32_t *zero, float *y, size_t ldy) {
    product_job j;
    size_t chunks;
    j.fn = fn, j.w = w, j.B = B, j.ldx = ldx, j.ldy = ldy, j.units = (w->N + unit - 1) / unit;
    j.xq = xq, j.a_scale = a_scale, j.zero = zero, j.y = y;
    chunks = chargen_i8_cut(j.units, 1, chargen_i8_team(pool, threads), &j.per);
    chargen_pool_run(pool, threads, chunks, product_chunk, &j);
}
