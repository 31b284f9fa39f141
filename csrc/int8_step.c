/* chargen's int8 GRU step: see int8_step.h for the contract.  Pure C99. */

#include "int8_step.h"

#include <string.h>

#include "gru_gates.h"
#include "int8_gemm.h"
#include "int8_scale.h"
#include "simd.h"

/* The step's loops run on a chargen_pool (pool.h): each cut into chunks that the calling thread
 * and the pool's workers claim, one parallel loop where a loop has enough work (the products
 * and the head always; quantizing the states and the gates from CHUNKED_ROWS streams), the rest
 * on the caller alone. Every output is computed by one thread in a fixed order, so the result
 * does not depend on the number of threads. */
#include "pool.h"

#if CHARGEN_AVX2
#include <immintrin.h>
#endif

/* aarch64: NEON is in every CPU (its kernel needs no flag); SDOT (dotprod) and USDOT/USMMLA
 * (i8mm) are detected at run time (getauxval, Linux), their functions built for them with target
 * attributes (GCC), never assumed at compile time. CHARGEN_NO_NEON: the plain-C kernel only;
 * CHARGEN_NO_DOTPROD: no dotprod or i8mm kernel. */
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(CHARGEN_NO_NEON)
#define CHARGEN_NEON 1
#include <arm_neon.h>
#else
#define CHARGEN_NEON 0
#endif
#if CHARGEN_NEON && defined(__linux__) && !defined(__clang__) && !defined(CHARGEN_NO_DOTPROD)
#define CHARGEN_DOTPROD 1
#define CHARGEN_I8MM 1
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef AT_HWCAP2
#define AT_HWCAP2 26
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#else
#define CHARGEN_DOTPROD 0
#define CHARGEN_I8MM 0
#endif

#define ALIGN 64
#define ROUND_UP(n) (((n) + ALIGN - 1) / ALIGN * ALIGN)
#define TILE 8 /* outputs a kernel sums at once: eight weight rows stay in L1 across the B rows */
#define CHUNKS_PER_THREAD 8 /* a loop's chunks: enough that a late or slow thread leaves little to wait for */
#define CHUNKED_ROWS 8      /* streams from which quantizing the states and the gates run in chunks */

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
/* SDOT multiplies int8 by int8: x - 128 (x xor 0x80 read as int8) times w, so these kernels sum
 * acc' = sum (x - 128) w = acc - 128 wsum, and their scaling takes zero - 128 for the zero point:
 * acc' - (zero - 128) wsum = acc - zero wsum, the same int32 as the other kernels. */
#define DOTPROD_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#define X_OFFSET_DOTPROD 128

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
#define I8MM_TARGET __attribute__((target("arch=armv8.2-a+dotprod+i8mm")))

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

/* ------------------------------------------------------------------ the head, in float32 */
/* logits (B, V) = h (B, H) W^T + bias in float32, rows [v0, v1): sixteen partial sums a row,
 * which the compiler keeps in one vector register; built for AVX-512 and AVX2 as well */
static INLINE void head_rows(size_t B, size_t H, size_t V, const float *h, const float *w, const float *bias,
                             float *logits, size_t v0, size_t v1) {
    size_t v, b, k, j;
    for (v = v0; v < v1; v++) {
        const float *wv = w + v * H;
        for (b = 0; b < B; b++) {
            const float *hb = h + b * H;
            float acc[16] = {0}, s = 0.0f;
            for (k = 0; k + 16 <= H; k += 16)
                for (j = 0; j < 16; j++) acc[j] += hb[k + j] * wv[k + j];
            for (; k < H; k++) s += hb[k] * wv[k];
            for (j = 0; j < 16; j++) s += acc[j];
            logits[b * V + v] = s + bias[v];
        }
    }
}

typedef void head_fn(size_t B, size_t H, size_t V, const float *h, const float *w, const float *bias, float *logits,
                     size_t v0, size_t v1);

static void head_c(size_t B, size_t H, size_t V, const float *h, const float *w, const float *bias, float *logits,
                   size_t v0, size_t v1) {
    head_rows(B, H, V, h, w, bias, logits, v0, v1);
}
#if CHARGEN_AVX2
__attribute__((target("avx2,fma"))) static void head_avx2(size_t B, size_t H, size_t V, const float *h,
                                                          const float *w, const float *bias, float *logits,
                                                          size_t v0, size_t v1) {
    head_rows(B, H, V, h, w, bias, logits, v0, v1);
}
#endif
#if CHARGEN_AVX512
__attribute__((target("avx512f,avx2,fma,prefer-vector-width=512"))) static void head_avx512(
    size_t B, size_t H, size_t V, const float *h, const float *w, const float *bias, float *logits, size_t v0,
    size_t v1) {
    head_rows(B, H, V, h, w, bias, logits, v0, v1);
}
#endif

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

typedef float quantize_fn(size_t K, const float *restrict x, uint8_t *restrict xq, int32_t *zero);

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

/* ------------------------------------------------------------------ the kernels a CPU gets */
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

static void matmul_c(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                     const int32_t *zero, float *y, size_t ldy, size_t t0, size_t t1) {
    matmul_tiles(dot_c, NULL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#if CHARGEN_AVX2
__attribute__((target("avx2"))) static void matmul_avx2(const chargen_i8_matrix *w, size_t B, const uint8_t *xq,
                                                        size_t ldx, const float *a_scale, const int32_t *zero,
                                                        float *y, size_t ldy, size_t t0, size_t t1) {
    matmul_tiles(dot_avx2, NULL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_AVX512
VNNI_TARGET static void matmul_vnni(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                    const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t t0,
                                    size_t t1) {
    matmul_tiles(dot_vnni, dot4_vnni, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_NEON
static void matmul_neon(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                        const int32_t *zero, float *y, size_t ldy, size_t t0, size_t t1) {
    matmul_tiles(dot_neon, NULL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_DOTPROD
DOTPROD_TARGET static void matmul_dotprod(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                          const float *a_scale, const int32_t *zero, float *y, size_t ldy,
                                          size_t t0, size_t t1) {
    matmul_tiles(dot_dotprod, dot4_dotprod, X_OFFSET_DOTPROD, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif
#if CHARGEN_I8MM
I8MM_TARGET static void matmul_i8mm(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                    const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t t0,
                                    size_t t1) {
    matmul_tiles(dot_i8mm, dot4_i8mm, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif

#if CHARGEN_WASM_SIMD
static void matmul_wasm(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                        const int32_t *zero, float *y, size_t ldy, size_t t0, size_t t1) {
    matmul_tiles(dot_wasm, NULL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, t0, t1);
}
#endif

typedef void matmul_fn(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                       const int32_t *zero, float *y, size_t ldy, size_t t0, size_t t1);

typedef struct {
    const char *name;
    matmul_fn *matmul;
    head_fn *head;
    quantize_fn *quantize;
} kernels_t;

static kernels_t pick_kernels(void) {
#if CHARGEN_AVX512
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vnni")) {
        const kernels_t k = {"avx512vnni", matmul_vnni, head_avx512, quantize_avx512};
        return k;
    }
#endif
#if CHARGEN_AVX2
    if (__builtin_cpu_supports("avx2")) {
        const kernels_t k = {"avx2", matmul_avx2, head_avx2, quantize_avx2};
        return k;
    }
#endif
#if CHARGEN_DOTPROD
    {
        const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
        if ((hw & HWCAP_ASIMDDP) && (hw2 & HWCAP2_I8MM)) {
            const kernels_t k = {"neon-i8mm", matmul_i8mm, head_c, quantize_c};
            return k;
        }
        if (hw & HWCAP_ASIMDDP) {
            const kernels_t k = {"neon-dotprod", matmul_dotprod, head_c, quantize_c};
            return k;
        }
    }
#endif
#if CHARGEN_WASM_SIMD
    {
        const kernels_t k = {"wasm-simd128", matmul_wasm, head_c, quantize_c};
        return k;
    }
#endif
#if CHARGEN_NEON
    {
        const kernels_t k = {"neon", matmul_neon, head_c, quantize_c};
        return k;
    }
#endif
    {
        const kernels_t k = {"c", matmul_c, head_c, quantize_c};
        return k;
    }
}

const char *chargen_i8_kernel(void) { return pick_kernels().name; }

float chargen_i8_quantize_row(size_t K, const float *x, uint8_t *xq, int32_t *zero) {
    return pick_kernels().quantize(K, x, xq, zero);
}

int chargen_i8_threaded(void) { return chargen_pool_threaded(); }

/* ------------------------------------------------------------------ the loops, in chunks on the pool */
/* threads a loop gets: the call's, at most the pool's; 1 without a usable pool */
static int team(chargen_pool *pool, int threads) {
    const int n = chargen_pool_usable(pool) ? chargen_pool_threads(pool) : 1;
    return threads <= 0 || threads > n ? n : threads;
}

/* items cut into chunks of *per (at least min_per) for `threads` threads: the number of chunks */
static size_t cut(size_t items, size_t min_per, int threads, size_t *per) {
    const size_t want = threads > 1 ? CHUNKS_PER_THREAD * (size_t)threads : 1;
    size_t p = (items + want - 1) / want;
    p = p < min_per ? min_per : p;
    p = p < 1 ? 1 : p;
    *per = p;
    return (items + p - 1) / p;
}

static size_t end_of(size_t c, size_t per, size_t items) { return (c + 1) * per < items ? (c + 1) * per : items; }

typedef struct {
    matmul_fn *matmul;
    const chargen_i8_matrix *w;
    size_t B, ldx, ldy, per, units;
    const uint8_t *xq;
    const float *a_scale;
    const int32_t *zero;
    float *y;
} matmul_job;

static void matmul_chunk(void *arg, size_t c) {
    const matmul_job *j = arg;
    j->matmul(j->w, j->B, j->xq, j->ldx, j->a_scale, j->zero, j->y, j->ldy, c * j->per, end_of(c, j->per, j->units));
}

/* y (B, N) by fn over units of `unit` outputs (the matrix-vector kernels' TILE, the packed
 * kernels' panels), the units cut into chunks on the pool */
static void matmul(chargen_pool *pool, int threads, matmul_fn *fn, size_t unit, const chargen_i8_matrix *w, size_t B,
                   const uint8_t *xq, size_t ldx, const float *a_scale, const int32_t *zero, float *y, size_t ldy) {
    matmul_job j;
    size_t chunks;
    j.matmul = fn, j.w = w, j.B = B, j.ldx = ldx, j.ldy = ldy, j.units = (w->N + unit - 1) / unit;
    j.xq = xq, j.a_scale = a_scale, j.zero = zero, j.y = y;
    chunks = cut(j.units, 1, team(pool, threads), &j.per);
    chargen_pool_run(pool, threads, chunks, matmul_chunk, &j);
}

/* the step's product for one matrix: the packed kernel from its batch size on, where w has a
 * packed copy; else the matrix-vector kernel */
static void product(chargen_pool *pool, int threads, const kernels_t *kern, const chargen_i8_gemm_kernel *packed,
                    const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                    const int32_t *zero, float *y, size_t ldy) {
    if (packed && w->packed && B >= packed->min_batch)
        matmul(pool, threads, packed->gemm, CHARGEN_I8_PANEL, w, B, xq, ldx, a_scale, zero, y, ldy);
    else
        matmul(pool, threads, kern->matmul, TILE, w, B, xq, ldx, a_scale, zero, y, ldy);
}

/* ------------------------------------------------------------------ the product, the step's loops */
void chargen_i8_row_sums(size_t N, size_t K, size_t ldw, const int8_t *w, int32_t *wsum) {
    size_t n, k;
    for (n = 0; n < N; n++) {
        int32_t s = 0;
        for (k = 0; k < K; k++) s += w[n * ldw + k];
        wsum[n] = s;
    }
}

void chargen_i8_matmul(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                       const int32_t *zero, float *y, chargen_pool *pool) {
    matmul(pool, 0, pick_kernels().matmul, TILE, w, B, xq, ldx, a_scale, zero, y, w->N);
}

void chargen_i8_gemm(const chargen_i8_gemm_kernel *k, const chargen_i8_matrix *w, size_t B, const uint8_t *xq,
                     size_t ldx, const float *a_scale, const int32_t *zero, float *y, chargen_pool *pool) {
    matmul(pool, 0, k->gemm, CHARGEN_I8_PANEL, w, B, xq, ldx, a_scale, zero, y, w->N);
}

typedef struct {
    quantize_fn *quantize;
    size_t B, K, ldx, per;
    const float *x;
    uint8_t *xq;
    float *a_scale;
    int32_t *zero;
} quantize_job;

static void quantize_chunk(void *arg, size_t c) {
    const quantize_job *j = arg;
    size_t b;
    for (b = c * j->per; b < end_of(c, j->per, j->B); b++)
        j->a_scale[b] = j->quantize(j->K, j->x + b * j->K, j->xq + b * j->ldx, j->zero + b);
}

static void quantize_rows(chargen_pool *pool, int threads, quantize_fn *quantize, size_t B, size_t K,
                          const float *x, uint8_t *xq, size_t ldx, float *a_scale, int32_t *zero) {
    quantize_job j;
    size_t chunks;
    j.quantize = quantize, j.B = B, j.K = K, j.ldx = ldx, j.x = x, j.xq = xq, j.a_scale = a_scale, j.zero = zero;
    chunks = cut(B, 1, B < CHUNKED_ROWS ? 1 : team(pool, threads), &j.per);
    chargen_pool_run(pool, threads, chunks, quantize_chunk, &j);
}

typedef struct {
    head_fn *fn;
    size_t B, H, V, per;
    const float *h, *w, *bias;
    float *logits;
} head_job;

static void head_chunk(void *arg, size_t c) {
    const head_job *j = arg;
    j->fn(j->B, j->H, j->V, j->h, j->w, j->bias, j->logits, c * j->per, end_of(c, j->per, j->V));
}

static void head(chargen_pool *pool, int threads, head_fn *fn, size_t B, size_t H, size_t V, const float *h,
                 const float *w, const float *bias, float *logits) {
    head_job j;
    size_t chunks;
    j.fn = fn, j.B = B, j.H = H, j.V = V, j.h = h, j.w = w, j.bias = bias, j.logits = logits;
    chunks = cut(V, 8, team(pool, threads), &j.per); /* at least 8 rows a chunk */
    chargen_pool_run(pool, threads, chunks, head_chunk, &j);
}

/* the gates, a stream at a time */
typedef struct {
    size_t B, H, per;
    const float *gi, *gh, *b_hh, *h_prev;
    float *scratch, *h_new;
} gates_job;

static void gates_chunk(void *arg, size_t c) {
    const gates_job *j = arg;
    const size_t H = j->H;
    size_t b;
    for (b = c * j->per; b < end_of(c, j->per, j->B); b++)
        chargen_gru_forward_f32(1, H, j->gi + b * 3 * H, j->gh + b * 3 * H, j->b_hh, j->h_prev + b * H,
                                j->scratch + b * 4 * H, j->h_new + b * H);
}

static void gates(chargen_pool *pool, int threads, size_t B, size_t H, const float *gi, const float *gh,
                  const float *b_hh, const float *h_prev, float *scratch, float *h_new) {
    gates_job j;
    size_t chunks;
    j.B = B, j.H = H, j.gi = gi, j.gh = gh, j.b_hh = b_hh, j.h_prev = h_prev, j.scratch = scratch, j.h_new = h_new;
    chunks = cut(B, 1, B < CHUNKED_ROWS ? 1 : team(pool, threads), &j.per);
    chargen_pool_run(pool, threads, chunks, gates_chunk, &j);
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
    const kernels_t kern = pick_kernels();
    const chargen_i8_gemm_kernel *packed = chargen_i8_gemm_pick();
    chargen_pool *pool = m->pool;
    const int threads = m->threads;
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
            quantize_rows(pool, threads, kern.quantize, B, H, h_out + (k - 1) * B * H, s.xq, ldx, s.a_scale, s.zero);
            product(pool, threads, &kern, packed, &m->w_ih[k], B, s.xq, ldx, s.a_scale, s.zero, s.gi, H3);
        }
        /* gh: (B, 3H), without its bias: the gates add b_hh */
        quantize_rows(pool, threads, kern.quantize, B, H, h_prev, s.xq, ldx, s.a_scale, s.zero);
        product(pool, threads, &kern, packed, &m->w_hh[k], B, s.xq, ldx, s.a_scale, s.zero, s.gh, H3);
        gates(pool, threads, B, H, s.gi, s.gh, m->b_hh + k * H3, h_prev, s.gates, h_new);
    }
    head(pool, threads, kern.head, B, H, m->V, h_out + (L - 1) * B * H, m->head_w, m->head_b, logits);
    return CHARGEN_I8_OK;
}
