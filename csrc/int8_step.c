/* chargen's int8 GRU step: see int8_step.h for the contract.  Pure C99. */

#include "int8_step.h"

#include <string.h>

#include "gru_train.h"
#include "simd.h"

#ifdef _OPENMP
#include <omp.h>
#define PRAGMA(x) _Pragma(#x)
/* one OpenMP team per loop; its threads spin a while between steps (OMP_WAIT_POLICY) */
#define PARALLEL_FOR(threads, work) PRAGMA(omp parallel for schedule(static) num_threads(threads) if (work))
#else
#define PARALLEL_FOR(threads, work)
#endif

#if CHARGEN_AVX2
#include <immintrin.h>
#endif

#define ALIGN 64
#define ROUND_UP(n) (((n) + ALIGN - 1) / ALIGN * ALIGN)
#define TILE 8 /* outputs a kernel sums at once: eight weight rows stay in L1 across the B rows */

/* ------------------------------------------------------------------ the dot products
 * dot4: the int32 sums of xq (K) with four weight rows (or one, rows = 1). */
typedef void dot_fn(size_t K, const uint8_t *restrict x, const int8_t *restrict w, size_t ldw, size_t rows,
                    int32_t *restrict out);

static void dot_c(size_t K, const uint8_t *restrict x, const int8_t *restrict w, size_t ldw, size_t rows,
                  int32_t *restrict out) {
    size_t r, k;
    for (r = 0; r < rows; r++) {
        const int8_t *wr = w + r * ldw;
        int32_t acc = 0;
        for (k = 0; k < K; k++) acc += (int32_t)x[k] * (int32_t)wr[k];
        out[r] = acc;
    }
}

#if CHARGEN_AVX2
__attribute__((target("avx2"))) static int32_t hsum_avx2(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* 16 bytes at a time, widened to int16 (vpmaddubsw would saturate int8 weights past +-64) */
__attribute__((target("avx2"))) static void dot_avx2(size_t K, const uint8_t *restrict x, const int8_t *restrict w,
                                                     size_t ldw, size_t rows, int32_t *restrict out) {
    const size_t K16 = K / 16 * 16;
    size_t r, k;
    for (r = 0; r < rows; r++) {
        const int8_t *wr = w + r * ldw;
        __m256i acc = _mm256_setzero_si256();
        int32_t tail = 0;
        for (k = 0; k < K16; k += 16) {
            const __m256i xv = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x + k)));
            const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wr + k)));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, wv));
        }
        for (; k < K; k++) tail += (int32_t)x[k] * (int32_t)wr[k];
        out[r] = hsum_avx2(acc) + tail;
    }
}
#endif

#if CHARGEN_AVX512
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))

/* the four int32 sums of four vectors of sixteen */
VNNI_TARGET static __m128i hsum4_vnni(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
    const __m256i b0 = _mm256_add_epi32(_mm512_castsi512_si256(a0), _mm512_extracti64x4_epi64(a0, 1));
    const __m256i b1 = _mm256_add_epi32(_mm512_castsi512_si256(a1), _mm512_extracti64x4_epi64(a1, 1));
    const __m256i b2 = _mm256_add_epi32(_mm512_castsi512_si256(a2), _mm512_extracti64x4_epi64(a2, 1));
    const __m256i b3 = _mm256_add_epi32(_mm512_castsi512_si256(a3), _mm512_extracti64x4_epi64(a3, 1));
    const __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(b0, b1), _mm256_hadd_epi32(b2, b3));
    return _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
}

/* 64 bytes at a time with vpdpbusd (u8 x s8, summed in int32 without saturation), over the
 * rows' zero padding to a multiple of 64: no tail */
VNNI_TARGET static void dot_vnni(size_t K, const uint8_t *restrict x, const int8_t *restrict w, size_t ldw,
                                 size_t rows, int32_t *restrict out) {
    const size_t K64 = (K + 63) / 64 * 64;
    size_t k;
    if (rows == TILE) {
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (k = 0; k < K64; k += 64) {
            const __m512i xv = _mm512_loadu_si512(x + k);
            a0 = _mm512_dpbusd_epi32(a0, xv, _mm512_loadu_si512(w + k));
            a1 = _mm512_dpbusd_epi32(a1, xv, _mm512_loadu_si512(w + ldw + k));
            a2 = _mm512_dpbusd_epi32(a2, xv, _mm512_loadu_si512(w + 2 * ldw + k));
            a3 = _mm512_dpbusd_epi32(a3, xv, _mm512_loadu_si512(w + 3 * ldw + k));
            a4 = _mm512_dpbusd_epi32(a4, xv, _mm512_loadu_si512(w + 4 * ldw + k));
            a5 = _mm512_dpbusd_epi32(a5, xv, _mm512_loadu_si512(w + 5 * ldw + k));
            a6 = _mm512_dpbusd_epi32(a6, xv, _mm512_loadu_si512(w + 6 * ldw + k));
            a7 = _mm512_dpbusd_epi32(a7, xv, _mm512_loadu_si512(w + 7 * ldw + k));
        }
        _mm_storeu_si128((__m128i *)out, hsum4_vnni(a0, a1, a2, a3));
        _mm_storeu_si128((__m128i *)(out + 4), hsum4_vnni(a4, a5, a6, a7));
        return;
    }
    for (; rows > 0; rows--, w += ldw, out++) {
        __m512i a = _mm512_setzero_si512();
        for (k = 0; k < K64; k += 64) a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(x + k), _mm512_loadu_si512(w + k));
        *out = _mm512_reduce_add_epi32(a);
    }
}
#endif

static dot_fn *pick_dot(const char **name) {
#if CHARGEN_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni")) {
        *name = "avx512vnni";
        return dot_vnni;
    }
#endif
#if CHARGEN_AVX2
    if (__builtin_cpu_supports("avx2")) {
        *name = "avx2";
        return dot_avx2;
    }
#endif
    *name = "c";
    return dot_c;
}

const char *chargen_i8_kernel(void) {
    const char *name;
    pick_dot(&name);
    return name;
}

int chargen_i8_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static int team(int threads) {
#ifdef _OPENMP
    return threads > 0 ? threads : omp_get_max_threads();
#else
    (void)threads;
    return 1;
#endif
}

/* ------------------------------------------------------------------ quantize, multiply */
void chargen_i8_row_sums(size_t N, size_t K, size_t ldw, const int8_t *w, int32_t *wsum) {
    size_t n, k;
    for (n = 0; n < N; n++) {
        int32_t s = 0;
        for (k = 0; k < K; k++) s += w[n * ldw + k];
        wsum[n] = s;
    }
}

/* round to nearest, ties to even (as nearbyint in the default mode), for |t| < 2^22 */
static INLINE float round_even(float t) { return (t + 12582912.0f) - 12582912.0f; }

float chargen_i8_quantize_row(size_t K, const float *x, uint8_t *xq, int32_t *zero) {
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

static void matmul(dot_fn *dot, const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                   const float *a_scale, const int32_t *zero, float *y, size_t ldy, int threads) {
    const size_t N = w->N, K = w->K, ldw = w->ldw, tiles = (N + TILE - 1) / TILE;
    ptrdiff_t t;
    (void)threads;
    PARALLEL_FOR(threads, tiles > 1)
    for (t = 0; t < (ptrdiff_t)tiles; t++) {
        const size_t n0 = (size_t)t * TILE, rows = N - n0 < TILE ? N - n0 : TILE;
        size_t b, r;
        int32_t acc[TILE];
        for (b = 0; b < B; b++) {
            float *yb = y + b * ldy;
            dot(K, xq + b * ldx, w->w + n0 * ldw, ldw, rows, acc);
            for (r = 0; r < rows; r++) {
                const size_t n = n0 + r;
                /* the graph's MatMulInteger (zero point subtracted exactly), Cast, Mul, Add */
                const float v = (float)(acc[r] - zero[b] * w->wsum[n]) * (a_scale[b] * w->scale[n]);
                yb[n] = w->bias ? v + w->bias[n] : v;
            }
        }
    }
}

void chargen_i8_matmul(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                       const int32_t *zero, float *y, int threads) {
    const char *name;
    matmul(pick_dot(&name), w, B, xq, ldx, a_scale, zero, y, w->N, team(threads));
}

static void quantize_rows(size_t B, size_t K, const float *x, uint8_t *xq, size_t ldx, float *a_scale,
                          int32_t *zero, int threads) {
    ptrdiff_t b;
    (void)threads;
    PARALLEL_FOR(threads, B >= 4)
    for (b = 0; b < (ptrdiff_t)B; b++) a_scale[b] = chargen_i8_quantize_row(K, x + b * K, xq + b * ldx, zero + b);
}

/* logits (B, V) = h (B, H) W^T + bias in float32: sixteen partial sums a row, which the
 * compiler keeps in vector registers */
static void head(size_t B, size_t H, size_t V, const float *h, const float *w, const float *bias, float *logits,
                 int threads) {
    ptrdiff_t v;
    (void)threads;
    PARALLEL_FOR(threads, V * B * H >= 65536)
    for (v = 0; v < (ptrdiff_t)V; v++) {
        const float *wv = w + (size_t)v * H;
        size_t b, k, j;
        for (b = 0; b < B; b++) {
            const float *hb = h + b * H;
            float acc[16] = {0}, s = 0.0f;
            for (k = 0; k + 16 <= H; k += 16)
                for (j = 0; j < 16; j++) acc[j] += hb[k + j] * wv[k + j];
            for (; k < H; k++) s += hb[k] * wv[k];
            for (j = 0; j < 16; j++) s += acc[j];
            logits[b * V + (size_t)v] = s + bias[v];
        }
    }
}

/* ------------------------------------------------------------------ the step */
typedef struct {
    uint8_t *xq;
    float *a_scale, *gi, *gh, *gates;
    int32_t *zero;
} scratch_t;

static size_t carve(const chargen_i8_gru *m, size_t B, char *base, scratch_t *s) {
    const size_t H3 = 3 * m->H;
    size_t at = 0;
#define TAKE(field, type, count)                                          \
    do {                                                                  \
        if (s) s->field = (type *)(void *)(base + at);                    \
        at += ROUND_UP((count) * sizeof(type));                           \
    } while (0)
    TAKE(xq, uint8_t, B * ROUND_UP(m->H));
    TAKE(a_scale, float, B);
    TAKE(zero, int32_t, B);
    TAKE(gi, float, B * H3);
    TAKE(gh, float, B * H3);
    TAKE(gates, float, B * 4 * m->H);
#undef TAKE
    return at;
}

size_t chargen_i8_scratch_bytes(const chargen_i8_gru *m, size_t B) { return carve(m, B, NULL, NULL) + ALIGN; }

int chargen_i8_check(const chargen_i8_gru *m) {
    size_t k;
    if (m->L == 0 || m->H == 0 || m->V == 0) return CHARGEN_I8_BAD_SHAPE;
    for (k = 0; k < m->L; k++) {
        const chargen_i8_matrix *hh = &m->w_hh[k], *ih = &m->w_ih[k];
        if (hh->N != 3 * m->H || hh->K != m->H || hh->ldw != ROUND_UP(m->H) || hh->bias) return CHARGEN_I8_BAD_SHAPE;
        if (k > 0 && (ih->N != 3 * m->H || ih->K != m->H || ih->ldw != ROUND_UP(m->H) || !ih->bias))
            return CHARGEN_I8_BAD_SHAPE;
    }
    return CHARGEN_I8_OK;
}

int chargen_i8_step(const chargen_i8_gru *m, size_t B, const int64_t *token, const float *h_in, float *h_out,
                    float *logits, void *scratch) {
    const size_t L = m->L, H = m->H, H3 = 3 * H, ldx = ROUND_UP(H);
    const int threads = team(m->threads);
    const char *name;
    dot_fn *dot = pick_dot(&name);
    scratch_t s;
    size_t b, k;
    for (b = 0; b < B; b++)
        if (token[b] < 0 || (uint64_t)token[b] >= m->V) return CHARGEN_I8_BAD_TOKEN;
    carve(m, B, (char *)scratch + (ALIGN - (uintptr_t)scratch % ALIGN) % ALIGN, &s);

    for (k = 0; k < L; k++) {
        const float *h_prev = h_in + k * B * H; /* h_prev: (B, H) */
        float *h_new = h_out + k * B * H;       /* h_new: (B, H) */
        /* gi: (B, 3H) */
        if (k == 0) {
            for (b = 0; b < B; b++) memcpy(s.gi + b * H3, m->table + (size_t)token[b] * H3, H3 * sizeof(float));
        } else {
            quantize_rows(B, H, h_out + (k - 1) * B * H, s.xq, ldx, s.a_scale, s.zero, threads);
            matmul(dot, &m->w_ih[k], B, s.xq, ldx, s.a_scale, s.zero, s.gi, H3, threads);
        }
        /* gh: (B, 3H), without its bias: the gates add b_hh */
        quantize_rows(B, H, h_prev, s.xq, ldx, s.a_scale, s.zero, threads);
        matmul(dot, &m->w_hh[k], B, s.xq, ldx, s.a_scale, s.zero, s.gh, H3, threads);
        chargen_gru_forward_f32(B, H, s.gi, s.gh, m->b_hh + k * H3, h_prev, s.gates, h_new);
    }
    head(B, H, m->V, h_out + (L - 1) * B * H, m->head_w, m->head_b, logits, threads);
    return CHARGEN_I8_OK;
}
