/* chargen's int8 matrix-vector kernels: see int8_matvec.h. Pure C99 plus each CPU's intrinsics. */

#include "int8_matvec.h"

#include "int8_cpu.h"
#include "int8_scale.h"

#if CHARGEN_AVX2
#include <immintrin.h>
#endif
#if CHARGEN_NEON
#include <arm_neon.h>
#endif

#define TILE CHARGEN_I8_TILE

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

/* four x rows by four weight rows: each load feeds four vpdpbusd (a batch's product is then
 * bound by the multiplies, not the loads); sums to out[b * TILE + r] */
VNNI_TARGET static void dot4x4_vnni(size_t K, const uint8_t *restrict x, size_t ldx, const int8_t *restrict w,
                                    size_t ldw, int32_t *restrict out) {
    const size_t K64 = (K + 63) / 64 * 64;
    __m512i a[4][4];
    size_t k, b, r;
    for (b = 0; b < 4; b++)
        for (r = 0; r < 4; r++) a[b][r] = _mm512_setzero_si512();
    for (k = 0; k < K64; k += 64) {
        const __m512i w0 = _mm512_loadu_si512(w + k), w1 = _mm512_loadu_si512(w + ldw + k);
        const __m512i w2 = _mm512_loadu_si512(w + 2 * ldw + k), w3 = _mm512_loadu_si512(w + 3 * ldw + k);
        for (b = 0; b < 4; b++) {
            const __m512i xv = _mm512_loadu_si512(x + b * ldx + k);
            a[b][0] = _mm512_dpbusd_epi32(a[b][0], xv, w0);
            a[b][1] = _mm512_dpbusd_epi32(a[b][1], xv, w1);
            a[b][2] = _mm512_dpbusd_epi32(a[b][2], xv, w2);
            a[b][3] = _mm512_dpbusd_epi32(a[b][3], xv, w3);
        }
    }
    for (b = 0; b < 4; b++) _mm_storeu_si128((__m128i *)(out + b * TILE), hsum4_vnni(a[b][0], a[b][1], a[b][2], a[b][3]));
}

/* four x rows by a full tile of weight rows */
VNNI_TARGET static void dot4_vnni(size_t K, const uint8_t *restrict x, size_t ldx, const int8_t *restrict w,
                                  size_t ldw, int32_t *restrict out) {
    dot4x4_vnni(K, x, ldx, w, ldw, out);
    dot4x4_vnni(K, x, ldx, w + 4 * ldw, ldw, out + 4);
}
#endif

#if CHARGEN_NEON
/* plain NEON (every aarch64 CPU): 16 bytes at a time widened to int16 and multiplied into int32
 * (vmlal), exact for any uint8 and int8 */
static INLINE int32x4_t mla16_neon(int32x4_t acc, uint8x16_t xv, int8x16_t wv) {
    const int16x8_t xl = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(xv)));
    const int16x8_t xh = vreinterpretq_s16_u16(vmovl_high_u8(xv));
    const int16x8_t wl = vmovl_s8(vget_low_s8(wv)), wh = vmovl_high_s8(wv);
    acc = vmlal_s16(acc, vget_low_s16(xl), vget_low_s16(wl));
    acc = vmlal_high_s16(acc, xl, wl);
    acc = vmlal_s16(acc, vget_low_s16(xh), vget_low_s16(wh));
    return vmlal_high_s16(acc, xh, wh);
}

/* over the rows' zero padding to a multiple of 16 (ldw is a multiple of 64): no tail */
static void dot_neon(size_t K, const uint8_t *restrict x, const int8_t *restrict w, size_t ldw, size_t rows,
                     int32_t *restrict out) {
    const size_t K16 = (K + 15) / 16 * 16;
    size_t r, k;
    (void)ldw;
    for (r = 0; r < rows; r++) {
        const int8_t *wr = w + r * ldw;
        int32x4_t a0 = vdupq_n_s32(0), a1 = a0;
        for (k = 0; k + 32 <= K16; k += 32) {
            a0 = mla16_neon(a0, vld1q_u8(x + k), vld1q_s8(wr + k));
            a1 = mla16_neon(a1, vld1q_u8(x + k + 16), vld1q_s8(wr + k + 16));
        }
        if (k < K16) a0 = mla16_neon(a0, vld1q_u8(x + k), vld1q_s8(wr + k));
        out[r] = vaddvq_s32(vaddq_s32(a0, a1));
    }
}
#endif

#if CHARGEN_DOTPROD
/* SDOT on x - 128 (X_OFFSET_SDOT, int8_cpu.h) */
DOTPROD_TARGET static INLINE int8x16_t x_s8(const uint8_t *x) {
    return vreinterpretq_s8_u8(veorq_u8(vld1q_u8(x), vdupq_n_u8(0x80)));
}

/* the four sums of four vectors */
DOTPROD_TARGET static INLINE int32x4_t hsum4_neon(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3) {
    return vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3));
}

DOTPROD_TARGET static void dot_dotprod(size_t K, const uint8_t *restrict x, const int8_t *restrict w, size_t ldw,
                                       size_t rows, int32_t *restrict out) {
    const size_t K16 = (K + 15) / 16 * 16;
    size_t k;
    if (rows == TILE) {
        int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (k = 0; k < K16; k += 16) {
            const int8x16_t xv = x_s8(x + k);
            a0 = vdotq_s32(a0, xv, vld1q_s8(w + k));
            a1 = vdotq_s32(a1, xv, vld1q_s8(w + ldw + k));
            a2 = vdotq_s32(a2, xv, vld1q_s8(w + 2 * ldw + k));
            a3 = vdotq_s32(a3, xv, vld1q_s8(w + 3 * ldw + k));
            a4 = vdotq_s32(a4, xv, vld1q_s8(w + 4 * ldw + k));
            a5 = vdotq_s32(a5, xv, vld1q_s8(w + 5 * ldw + k));
            a6 = vdotq_s32(a6, xv, vld1q_s8(w + 6 * ldw + k));
            a7 = vdotq_s32(a7, xv, vld1q_s8(w + 7 * ldw + k));
        }
        vst1q_s32(out, hsum4_neon(a0, a1, a2, a3));
        vst1q_s32(out + 4, hsum4_neon(a4, a5, a6, a7));
        return;
    }
    for (; rows > 0; rows--, w += ldw, out++) {
        int32x4_t a = vdupq_n_s32(0);
        for (k = 0; k < K16; k += 16) a = vdotq_s32(a, x_s8(x + k), vld1q_s8(w + k));
        *out = vaddvq_s32(a);
    }
}

/* four x rows by four weight rows, each load feeding four SDOT: out[b * TILE + r] */
DOTPROD_TARGET static void dot4x4_dotprod(size_t K, const uint8_t *restrict x, size_t ldx, const int8_t *restrict w,
                                          size_t ldw, int32_t *restrict out) {
    const size_t K16 = (K + 15) / 16 * 16;
    int32x4_t a[4][4];
    size_t k, b, r;
    for (b = 0; b < 4; b++)
        for (r = 0; r < 4; r++) a[b][r] = vdupq_n_s32(0);
    for (k = 0; k < K16; k += 16) {
        const int8x16_t w0 = vld1q_s8(w + k), w1 = vld1q_s8(w + ldw + k);
        const int8x16_t w2 = vld1q_s8(w + 2 * ldw + k), w3 = vld1q_s8(w + 3 * ldw + k);
        for (b = 0; b < 4; b++) {
            const int8x16_t xv = x_s8(x + b * ldx + k);
            a[b][0] = vdotq_s32(a[b][0], xv, w0);
            a[b][1] = vdotq_s32(a[b][1], xv, w1);
            a[b][2] = vdotq_s32(a[b][2], xv, w2);
            a[b][3] = vdotq_s32(a[b][3], xv, w3);
        }
    }
    for (b = 0; b < 4; b++) vst1q_s32(out + b * TILE, hsum4_neon(a[b][0], a[b][1], a[b][2], a[b][3]));
}

DOTPROD_TARGET static void dot4_dotprod(size_t K, const uint8_t *restrict x, size_t ldx, const int8_t *restrict w,
                                        size_t ldw, int32_t *restrict out) {
    dot4x4_dotprod(K, x, ldx, w, ldw, out);
    dot4x4_dotprod(K, x, ldx, w + 4 * ldw, ldw, out + 4);
}
#endif

#if CHARGEN_I8MM
/* i8mm: USDOT multiplies uint8 by int8 (no offset), USMMLA a 2 x 8 uint8 block by an 8 x 2 int8
 * block into 2 x 2 int32 sums: a batch's four x rows by eight weight rows take 16 USMMLA per 16
 * bytes, where SDOT takes 32 */
I8MM_TARGET static void dot_i8mm(size_t K, const uint8_t *restrict x, const int8_t *restrict w, size_t ldw,
                                 size_t rows, int32_t *restrict out) {
    const size_t K16 = (K + 15) / 16 * 16;
    size_t k;
    if (rows == TILE) {
        int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (k = 0; k < K16; k += 16) {
            const uint8x16_t xv = vld1q_u8(x + k);
            a0 = vusdotq_s32(a0, xv, vld1q_s8(w + k));
            a1 = vusdotq_s32(a1, xv, vld1q_s8(w + ldw + k));
            a2 = vusdotq_s32(a2, xv, vld1q_s8(w + 2 * ldw + k));
            a3 = vusdotq_s32(a3, xv, vld1q_s8(w + 3 * ldw + k));
            a4 = vusdotq_s32(a4, xv, vld1q_s8(w + 4 * ldw + k));
            a5 = vusdotq_s32(a5, xv, vld1q_s8(w + 5 * ldw + k));
            a6 = vusdotq_s32(a6, xv, vld1q_s8(w + 6 * ldw + k));
            a7 = vusdotq_s32(a7, xv, vld1q_s8(w + 7 * ldw + k));
        }
        vst1q_s32(out, vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3)));
        vst1q_s32(out + 4, vpaddq_s32(vpaddq_s32(a4, a5), vpaddq_s32(a6, a7)));
        return;
    }
    for (; rows > 0; rows--, w += ldw, out++) {
        int32x4_t a = vdupq_n_s32(0);
        for (k = 0; k < K16; k += 16) a = vusdotq_s32(a, vld1q_u8(x + k), vld1q_s8(w + k));
        *out = vaddvq_s32(a);
    }
}

/* four x rows by TILE weight rows: out[b * TILE + r] */
I8MM_TARGET static void dot4_i8mm(size_t K, const uint8_t *restrict x, size_t ldx, const int8_t *restrict w,
                                  size_t ldw, int32_t *restrict out) {
    const size_t K16 = (K + 15) / 16 * 16;
    int32x4_t a[2][4]; /* a[p][q]: x rows 2p, 2p + 1 by weight rows 2q, 2q + 1 */
    size_t k, p, q;
    for (p = 0; p < 2; p++)
        for (q = 0; q < 4; q++) a[p][q] = vdupq_n_s32(0);
    for (k = 0; k < K16; k += 16) {
        uint8x16_t xlo[2], xhi[2];
        for (p = 0; p < 2; p++) { /* [row 2p bytes 0-7, row 2p+1 bytes 0-7], then bytes 8-15 */
            const uint64x2_t r0 = vreinterpretq_u64_u8(vld1q_u8(x + 2 * p * ldx + k));
            const uint64x2_t r1 = vreinterpretq_u64_u8(vld1q_u8(x + (2 * p + 1) * ldx + k));
            xlo[p] = vreinterpretq_u8_u64(vzip1q_u64(r0, r1));
            xhi[p] = vreinterpretq_u8_u64(vzip2q_u64(r0, r1));
        }
        for (q = 0; q < 4; q++) {
            const int64x2_t r0 = vreinterpretq_s64_s8(vld1q_s8(w + 2 * q * ldw + k));
            const int64x2_t r1 = vreinterpretq_s64_s8(vld1q_s8(w + (2 * q + 1) * ldw + k));
            const int8x16_t wlo = vreinterpretq_s8_s64(vzip1q_s64(r0, r1));
            const int8x16_t whi = vreinterpretq_s8_s64(vzip2q_s64(r0, r1));
            for (p = 0; p < 2; p++) a[p][q] = vusmmlaq_s32(vusmmlaq_s32(a[p][q], xlo[p], wlo), xhi[p], whi);
        }
    }
    for (p = 0; p < 2; p++) { /* a[p][q] = [(2p, 2q), (2p, 2q+1), (2p+1, 2q), (2p+1, 2q+1)] */
        int32_t *o0 = out + 2 * p * TILE, *o1 = o0 + TILE;
        vst1q_s32(o0, vcombine_s32(vget_low_s32(a[p][0]), vget_low_s32(a[p][1])));
        vst1q_s32(o0 + 4, vcombine_s32(vget_low_s32(a[p][2]), vget_low_s32(a[p][3])));
        vst1q_s32(o1, vcombine_s32(vget_high_s32(a[p][0]), vget_high_s32(a[p][1])));
        vst1q_s32(o1 + 4, vcombine_s32(vget_high_s32(a[p][2]), vget_high_s32(a[p][3])));
    }
}
#endif

#if defined(__wasm_simd128__)
/* WebAssembly SIMD128 (web/build.py's -msimd128): 16 bytes of x and of each weight row widened to
 * int16 and multiplied into int32 pairs (i32x4.dot_i16x8_s: exact for any uint8 and int8), a tile
 * of eight weight rows at a time so each widened x feeds eight products (measured ~15% faster
 * than four in Node); over the rows' zero padding to a multiple of 16 (ldw is a multiple of 64):
 * no tail */
#include <wasm_simd128.h>
#define CHARGEN_WASM_SIMD 1

static INLINE int32_t hsum_wasm(v128_t v) {
    return wasm_i32x4_extract_lane(v, 0) + wasm_i32x4_extract_lane(v, 1) + wasm_i32x4_extract_lane(v, 2) +
           wasm_i32x4_extract_lane(v, 3);
}

static INLINE v128_t dot16_wasm(v128_t acc, v128_t xl, v128_t xh, const int8_t *w) {
    const v128_t wv = wasm_v128_load(w);
    acc = wasm_i32x4_add(acc, wasm_i32x4_dot_i16x8(xl, wasm_i16x8_extend_low_i8x16(wv)));
    return wasm_i32x4_add(acc, wasm_i32x4_dot_i16x8(xh, wasm_i16x8_extend_high_i8x16(wv)));
}

static void dot_wasm(size_t K, const uint8_t *restrict x, const int8_t *restrict w, size_t ldw, size_t rows,
                     int32_t *restrict out) {
    const size_t K16 = (K + 15) / 16 * 16;
    size_t r = 0, k;
    for (; r + 8 <= rows; r += 8) {
        const int8_t *w0 = w + r * ldw;
        v128_t a0 = wasm_i32x4_splat(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (k = 0; k < K16; k += 16) {
            const v128_t xv = wasm_v128_load(x + k);
            const v128_t xl = wasm_u16x8_extend_low_u8x16(xv), xh = wasm_u16x8_extend_high_u8x16(xv);
            a0 = dot16_wasm(a0, xl, xh, w0 + k);
            a1 = dot16_wasm(a1, xl, xh, w0 + ldw + k);
            a2 = dot16_wasm(a2, xl, xh, w0 + 2 * ldw + k);
            a3 = dot16_wasm(a3, xl, xh, w0 + 3 * ldw + k);
            a4 = dot16_wasm(a4, xl, xh, w0 + 4 * ldw + k);
            a5 = dot16_wasm(a5, xl, xh, w0 + 5 * ldw + k);
            a6 = dot16_wasm(a6, xl, xh, w0 + 6 * ldw + k);
            a7 = dot16_wasm(a7, xl, xh, w0 + 7 * ldw + k);
        }
        out[r] = hsum_wasm(a0), out[r + 1] = hsum_wasm(a1), out[r + 2] = hsum_wasm(a2), out[r + 3] = hsum_wasm(a3);
        out[r + 4] = hsum_wasm(a4), out[r + 5] = hsum_wasm(a5), out[r + 6] = hsum_wasm(a6), out[r + 7] = hsum_wasm(a7);
    }
    for (; r < rows; r++) {
        v128_t a = wasm_i32x4_splat(0);
        for (k = 0; k < K16; k += 16) {
            const v128_t xv = wasm_v128_load(x + k);
            a = dot16_wasm(a, wasm_u16x8_extend_low_u8x16(xv), wasm_u16x8_extend_high_u8x16(xv), w + r * ldw + k);
        }
        out[r] = hsum_wasm(a);
    }
}
#else
#define CHARGEN_WASM_SIMD 0
#endif

/* ------------------------------------------------------------------ the kernels */
/* four x rows (at stride ldx) by TILE weight rows: out[b * TILE + r]; NULL where a kernel has none */
typedef void dot4_fn(size_t K, const uint8_t *restrict x, size_t ldx, const int8_t *restrict w, size_t ldw,
                     int32_t *restrict out);

/* y (B, N) for the tiles [t0, t1) of TILE outputs; built once per kernel, so that the dot
 * products and the scaling inline into one loop for that CPU */
static INLINE void matmul_tiles(dot_fn *dot, dot4_fn *dot4, int32_t x_offset, const chargen_i8_matrix *w, size_t B,
                                const uint8_t *xq, size_t ldx, const float *a_scale, const int32_t *zero,
                                float *y, size_t ldy, size_t t0, size_t t1) {
    const size_t N = w->N, K = w->K, ldw = w->ldw;
    size_t t;
    for (t = t0; t < t1; t++) {
        const size_t n0 = t * TILE, rows = N - n0 < TILE ? N - n0 : TILE;
        const int8_t *wt = w->w + n0 * ldw;
        size_t b = 0, i;
        int32_t acc[4 * TILE];
        if (dot4 && rows == TILE)
            for (; b + 4 <= B; b += 4) {
                dot4(K, xq + b * ldx, ldx, wt, ldw, acc);
                for (i = 0; i < 4; i++) scale_out(w, n0, rows, acc + i * TILE, zero[b + i] - x_offset, a_scale[b + i], y + (b + i) * ldy);
            }
        for (; b < B; b++) {
            dot(K, xq + b * ldx, wt, ldw, rows, acc);
            scale_out(w, n0, rows, acc, zero[b] - x_offset, a_scale[b], y + b * ldy);
        }
    }
}

static void matvec_c(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                     const int32_t *zero, float *y, size_t ldy, size_t t0, size_t t1) {
    matmul_tiles(dot_c, NULL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#if CHARGEN_AVX2
__attribute__((target("avx2"))) static void matvec_avx2(const chargen_i8_matrix *w, size_t B, const uint8_t *xq,
                                                        size_t ldx, const float *a_scale, const int32_t *zero,
                                                        float *y, size_t ldy, size_t t0, size_t t1) {
    matmul_tiles(dot_avx2, NULL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_AVX512
VNNI_TARGET static void matvec_vnni(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                    const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t t0,
                                    size_t t1) {
    matmul_tiles(dot_vnni, dot4_vnni, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_NEON
static void matvec_neon(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                        const int32_t *zero, float *y, size_t ldy, size_t t0, size_t t1) {
    matmul_tiles(dot_neon, NULL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_DOTPROD
DOTPROD_TARGET static void matvec_dotprod(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                          const float *a_scale, const int32_t *zero, float *y, size_t ldy,
                                          size_t t0, size_t t1) {
    matmul_tiles(dot_dotprod, dot4_dotprod, X_OFFSET_SDOT, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_WASM_SIMD
static void matvec_wasm(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                        const int32_t *zero, float *y, size_t ldy, size_t t0, size_t t1) {
    matmul_tiles(dot_wasm, NULL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_I8MM
I8MM_TARGET static void matvec_i8mm(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                    const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t t0,
                                    size_t t1) {
    matmul_tiles(dot_i8mm, dot4_i8mm, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif


static const chargen_i8_matvec_kernel KERNELS[] = {
#if CHARGEN_AVX512
    {"avx512vnni", matvec_vnni},
#endif
#if CHARGEN_AVX2
    {"avx2", matvec_avx2},
#endif
#if CHARGEN_I8MM
    {"neon-i8mm", matvec_i8mm},
#endif
#if CHARGEN_DOTPROD
    {"neon-dotprod", matvec_dotprod},
#endif
#if CHARGEN_NEON
    {"neon", matvec_neon},
#endif
#if CHARGEN_WASM_SIMD
    {"wasm-simd128", matvec_wasm},
#endif
    {"c", matvec_c},
};

const chargen_i8_matvec_kernel *chargen_i8_matvec_kernels(size_t *count) {
    *count = sizeof KERNELS / sizeof KERNELS[0];
    return KERNELS;
}

int chargen_i8_matvec_usable(const chargen_i8_matvec_kernel *k) {
    (void)k; /* builds with no kernel but plain C */
#if CHARGEN_AVX512
    if (k->product == matvec_vnni) return cpu_avx512vnni();
#endif
#if CHARGEN_AVX2
    if (k->product == matvec_avx2) return cpu_avx2();
#endif
#if CHARGEN_I8MM
    if (k->product == matvec_i8mm) return cpu_i8mm();
#endif
#if CHARGEN_DOTPROD
    if (k->product == matvec_dotprod) return cpu_dotprod();
#endif
    return 1; /* NEON (every aarch64 CPU), WebAssembly SIMD128 (every engine that ran the module), plain C */
}

const chargen_i8_matvec_kernel *chargen_i8_matvec_pick(void) {
    size_t i, n;
    const chargen_i8_matvec_kernel *k = chargen_i8_matvec_kernels(&n);
    for (i = 0; i + 1 < n; i++)
        if (chargen_i8_matvec_usable(&k[i])) return &k[i];
    return &k[n - 1];
}

void chargen_i8_matvec(const chargen_i8_matvec_kernel *k, const chargen_i8_matrix *w, size_t B, const uint8_t *xq,
                       size_t ldx, const float *a_scale, const int32_t *zero, float *y, chargen_pool *pool) {
    chargen_i8_product(pool, 0, k->product, TILE, w, B, xq, ldx, a_scale, zero, y, w->N);
}

void chargen_i8_matmul(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                       const int32_t *zero, float *y, chargen_pool *pool) {
    chargen_i8_matvec(chargen_i8_matvec_pick(), w, B, xq, ldx, a_scale, zero, y, pool);
}

const char *chargen_i8_kernel(void) { return chargen_i8_matvec_pick()->name; }
