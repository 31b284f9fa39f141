/* chargen's packed int8 product for batches: see int8_gemm.h for the layout and the kernels.
 *
 * CHARGEN_X86_EMULATE (tests only): the x86 kernels built on any CPU, their intrinsics from SIMDe
 * (AVX2, AVX-512 VNNI; Debian's libsimde-dev) and AMX's from amx_emulate.h, and every kernel
 * usable: their loops and tails are then tested bit for bit where the CPU lacks the instructions. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE /* syscall() */
#endif

#include "int8_gemm.h"

#include <string.h>

#include "int8_cpu.h"
#include "int8_scale.h"

#if defined(CHARGEN_X86_EMULATE)
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include "amx_emulate.h"
#define GEMM_AVX2 1
#define GEMM_VNNI 1
#define GEMM_AMX 1
#define AVX2_TARGET
#define VNNI_TARGET
#define AMX_TARGET
#else
#if CHARGEN_AVX2
#include <immintrin.h>
#define GEMM_AVX2 1
#define AVX2_TARGET __attribute__((target("avx2")))
#else
#define GEMM_AVX2 0
#endif
#if CHARGEN_AVX512
#define GEMM_VNNI 1
#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))
#else
#define GEMM_VNNI 0
#endif
/* AMX: GCC 11+ on x86-64 Linux (the OS must grant the tile state: arch_prctl) */
#if CHARGEN_AVX512 && defined(__x86_64__) && defined(__linux__) && !defined(__clang__) && __GNUC__ >= 11 && \
    !defined(CHARGEN_NO_AMX)
#define GEMM_AMX 1
#define AMX_TARGET __attribute__((target("amx-tile,amx-int8")))
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define GEMM_AMX 0
#endif
#endif
#if CHARGEN_DOTPROD /* aarch64 (int8_cpu.h): never under CHARGEN_X86_EMULATE */
#include <arm_neon.h>
#endif

#define PANEL CHARGEN_I8_PANEL
#define GROUP_BYTES (4 * PANEL) /* one group of four k of a panel */
#define MAX_ROWS 32             /* the largest register block: AMX's */

static INLINE int32_t load4(const uint8_t *p) { /* four bytes of a row, as vpbroadcastd takes them */
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ------------------------------------------------------------------ packing */
size_t chargen_i8_packed_bytes(size_t N, size_t ldw) { return (N + PANEL - 1) / PANEL * PANEL * ldw; }

int chargen_i8_pack(size_t N, size_t ldw, const int8_t *w, int8_t *packed) {
    const size_t panels = (N + PANEL - 1) / PANEL, groups = ldw / 4;
    size_t p, g, n, i;
    int narrow = 1;
    for (p = 0; p < panels; p++)
        for (g = 0; g < groups; g++) {
            int8_t *dst = packed + (p * groups + g) * GROUP_BYTES;
            for (n = 0; n < PANEL; n++)
                for (i = 0; i < 4; i++) {
                    const int8_t v = p * PANEL + n < N ? w[(p * PANEL + n) * ldw + 4 * g + i] : 0;
                    narrow &= v >= -64 && v <= 64;
                    dst[4 * n + i] = v;
                }
        }
    return narrow;
}

/* ------------------------------------------------------------------ register blocks
 * block(ldw, x, ldx, rows, part, acc): acc[r * PANEL + n] = sum over k < ldw of x[r * ldx + k] *
 * the weight (n, k) of a panel's part, for r < rows (at most the kernel's rows) and n < the
 * block's width (a whole panel, or AVX2's half); part points at the part's outputs in the
 * panel's first group. */
typedef void block_fn(size_t ldw, const uint8_t *x, size_t ldx, size_t rows, const int8_t *panel, int32_t *acc);

static void block_c(size_t ldw, const uint8_t *x, size_t ldx, size_t rows, const int8_t *panel, int32_t *acc) {
    size_t r, g, n, i;
    for (r = 0; r < rows; r++)
        for (n = 0; n < PANEL; n++) {
            int32_t s = 0;
            for (g = 0; g < ldw / 4; g++)
                for (i = 0; i < 4; i++) s += (int32_t)x[r * ldx + 4 * g + i] * panel[g * GROUP_BYTES + 4 * n + i];
            acc[r * PANEL + n] = s;
        }
}

#if GEMM_AVX2
/* 3 rows x 16 outputs: per group, four vectors of 4 outputs x 4 k widened to int16, each
 * multiplied (vpmaddwd) with a row's four x broadcast: 8 int32 = 4 outputs x 2 partial sums */
#define AVX2_ROWS 3
AVX2_TARGET static INLINE void half_avx2(size_t ldw, const uint8_t *x, size_t ldx, const size_t rows,
                                         const int8_t *half, int32_t *acc) {
    __m256i a[AVX2_ROWS][4];
    size_t g, r, j;
    for (r = 0; r < rows; r++)
        for (j = 0; j < 4; j++) a[r][j] = _mm256_setzero_si256();
    for (g = 0; g < ldw / 4; g++) {
        const int8_t *wg = half + g * GROUP_BYTES;
        __m256i xb[AVX2_ROWS];
        for (r = 0; r < rows; r++) xb[r] = _mm256_cvtepu8_epi16(_mm_set1_epi32(load4(x + r * ldx + 4 * g)));
        for (j = 0; j < 4; j++) {
            const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(wg + 16 * j)));
            for (r = 0; r < rows; r++) a[r][j] = _mm256_add_epi32(a[r][j], _mm256_madd_epi16(wv, xb[r]));
        }
    }
    for (r = 0; r < rows; r++) { /* hadd: [o0 o1 o4 o5 o2 o3 o6 o7]; the permute puts them in order */
        const __m256i lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a[r][0], a[r][1]), 0xD8);
        const __m256i hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a[r][2], a[r][3]), 0xD8);
        _mm256_storeu_si256((__m256i *)(void *)(acc + r * PANEL), lo);
        _mm256_storeu_si256((__m256i *)(void *)(acc + r * PANEL + 8), hi);
    }
}

/* narrow weights, 4 rows x 16 outputs: per group, two vectors of 8 outputs x 4 k, each
 * vpmaddubsw'd with every row's four x broadcast (pairs of products in int16: exact, see
 * int8_gemm.h) and widened by vpmaddwd with ones into 8 int32, one per output */
#define NARROW_ROWS 4
AVX2_TARGET static INLINE void half_narrow(size_t ldw, const uint8_t *x, size_t ldx, const size_t rows,
                                           const int8_t *half, int32_t *acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a[NARROW_ROWS][2];
    size_t g, r;
    for (r = 0; r < rows; r++) a[r][0] = a[r][1] = _mm256_setzero_si256();
    for (g = 0; g < ldw / 4; g++) {
        const int8_t *wg = half + g * GROUP_BYTES;
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)wg);
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(wg + 32));
        for (r = 0; r < rows; r++) {
            const __m256i xb = _mm256_set1_epi32(load4(x + r * ldx + 4 * g));
            a[r][0] = _mm256_add_epi32(a[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(xb, w0), ones));
            a[r][1] = _mm256_add_epi32(a[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(xb, w1), ones));
        }
    }
    for (r = 0; r < rows; r++) {
        _mm256_storeu_si256((__m256i *)(void *)(acc + r * PANEL), a[r][0]);
        _mm256_storeu_si256((__m256i *)(void *)(acc + r * PANEL + 8), a[r][1]);
    }
}

/* 16 outputs (half a panel) of narrow or any weights, a constant row count in each case: the
 * compiler keeps the block in registers */
AVX2_TARGET static void block_narrow(size_t ldw, const uint8_t *x, size_t ldx, size_t rows, const int8_t *half,
                                     int32_t *acc) {
    switch (rows) {
        case 4: half_narrow(ldw, x, ldx, 4, half, acc); break;
        case 3: half_narrow(ldw, x, ldx, 3, half, acc); break;
        case 2: half_narrow(ldw, x, ldx, 2, half, acc); break;
        default: half_narrow(ldw, x, ldx, 1, half, acc); break;
    }
}

AVX2_TARGET static void block_avx2(size_t ldw, const uint8_t *x, size_t ldx, size_t rows, const int8_t *half,
                                   int32_t *acc) {
    switch (rows) {
        case 3: half_avx2(ldw, x, ldx, 3, half, acc); break;
        case 2: half_avx2(ldw, x, ldx, 2, half, acc); break;
        default: half_avx2(ldw, x, ldx, 1, half, acc); break;
    }
}
#endif

#if GEMM_VNNI
/* 8 rows x 32 outputs: per group, two vectors of 16 outputs x 4 k, each vpdpbusd'd with every
 * row's four x broadcast (16 accumulators, one per row and half) */
#define VNNI_ROWS 8
VNNI_TARGET static INLINE void rows_vnni(size_t ldw, const uint8_t *x, size_t ldx, const size_t rows,
                                         const int8_t *panel, int32_t *acc) {
    __m512i a[VNNI_ROWS][2];
    size_t g, r;
    for (r = 0; r < rows; r++) a[r][0] = a[r][1] = _mm512_setzero_si512();
    for (g = 0; g < ldw / 4; g++) {
        const __m512i w0 = _mm512_loadu_si512((const void *)(panel + g * GROUP_BYTES));
        const __m512i w1 = _mm512_loadu_si512((const void *)(panel + g * GROUP_BYTES + 64));
        for (r = 0; r < rows; r++) {
            const __m512i xb = _mm512_set1_epi32(load4(x + r * ldx + 4 * g));
            a[r][0] = _mm512_dpbusd_epi32(a[r][0], xb, w0);
            a[r][1] = _mm512_dpbusd_epi32(a[r][1], xb, w1);
        }
    }
    for (r = 0; r < rows; r++) {
        _mm512_storeu_si512((void *)(acc + r * PANEL), a[r][0]);
        _mm512_storeu_si512((void *)(acc + r * PANEL + 16), a[r][1]);
    }
}

VNNI_TARGET static void block_vnni(size_t ldw, const uint8_t *x, size_t ldx, size_t rows, const int8_t *panel,
                                   int32_t *acc) {
    switch (rows) {
        case 8: rows_vnni(ldw, x, ldx, 8, panel, acc); break;
        case 7: rows_vnni(ldw, x, ldx, 7, panel, acc); break;
        case 6: rows_vnni(ldw, x, ldx, 6, panel, acc); break;
        case 5: rows_vnni(ldw, x, ldx, 5, panel, acc); break;
        case 4: rows_vnni(ldw, x, ldx, 4, panel, acc); break;
        case 3: rows_vnni(ldw, x, ldx, 3, panel, acc); break;
        case 2: rows_vnni(ldw, x, ldx, 2, panel, acc); break;
        default: rows_vnni(ldw, x, ldx, 1, panel, acc); break;
    }
}
#endif

#if GEMM_AMX
/* 32 rows x 32 outputs in four int32 tiles: tmm0, tmm1 the top 16 rows' two halves, tmm2, tmm3 the
 * bottom's; tmm4, tmm5 the rows' x (16 rows x 64 k), tmm6, tmm7 the halves' weights (16 groups of
 * 4 k x 16 outputs: 16 groups of the panel, 64 bytes of each). Tile shapes are per thread: a
 * block loads its configuration where the thread's differs (the first block of a call, and a
 * batch's last block with fewer rows), since loading one costs cycles of its own. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

static __thread size_t amx_rows; /* the rows of this thread's tile configuration; 0: none loaded */

AMX_TARGET static void block_amx(size_t ldw, const uint8_t *x, size_t ldx, size_t rows, const int8_t *panel,
                                 int32_t *acc) {
    const size_t top = rows < 16 ? rows : 16, bottom = rows - top;
    amx_config cfg;
    size_t kc;
    if (amx_rows != rows) {
        amx_rows = rows;
        memset(&cfg, 0, sizeof cfg);
        cfg.palette = 1;
        cfg.rows[0] = cfg.rows[1] = cfg.rows[4] = (uint8_t)top;
        cfg.colsb[0] = cfg.colsb[1] = cfg.colsb[4] = 64;
        if (bottom) {
            cfg.rows[2] = cfg.rows[3] = cfg.rows[5] = (uint8_t)bottom;
            cfg.colsb[2] = cfg.colsb[3] = cfg.colsb[5] = 64;
        }
        cfg.rows[6] = cfg.rows[7] = 16;
        cfg.colsb[6] = cfg.colsb[7] = 64;
        _tile_loadconfig(&cfg);
    }
    _tile_zero(0);
    _tile_zero(1);
    if (bottom) {
        _tile_zero(2);
        _tile_zero(3);
    }
    for (kc = 0; kc < ldw / 64; kc++) { /* 64 k: 16 groups */
        const int8_t *wk = panel + kc * 16 * GROUP_BYTES;
        _tile_loadd(4, x + kc * 64, ldx);
        _tile_loadd(6, wk, GROUP_BYTES);
        _tile_loadd(7, wk + 64, GROUP_BYTES);
        _tile_dpbusd(0, 4, 6);
        _tile_dpbusd(1, 4, 7);
        if (bottom) {
            _tile_loadd(5, x + 16 * ldx + kc * 64, ldx);
            _tile_dpbusd(2, 5, 6);
            _tile_dpbusd(3, 5, 7);
        }
    }
    _tile_stored(0, acc, PANEL * 4);
    _tile_stored(1, acc + 16, PANEL * 4);
    if (bottom) {
        _tile_stored(2, acc + 16 * PANEL, PANEL * 4);
        _tile_stored(3, acc + 16 * PANEL + 16, PANEL * 4);
    }
}
#endif

#if CHARGEN_DOTPROD
/* 8 rows x 8 outputs (a quarter panel): per four groups (16 k), every row's 16 bytes as x - 128
 * (X_OFFSET_SDOT), and per group the part's two vectors of 4 outputs x 4 k, each SDOT'd with the
 * group's lane of every row (16 accumulators, one per row and 4 outputs) */
#define NEON_ROWS 8
#define NEON_WIDTH 8

#define SDOT_GROUP(l)                                                                     \
    do {                                                                                  \
        const int8x16_t w0 = vld1q_s8(wg + (l) * GROUP_BYTES);                            \
        const int8x16_t w1 = vld1q_s8(wg + (l) * GROUP_BYTES + 16);                       \
        for (r = 0; r < rows; r++) {                                                      \
            a[r][0] = vdotq_laneq_s32(a[r][0], w0, xv[r], l);                             \
            a[r][1] = vdotq_laneq_s32(a[r][1], w1, xv[r], l);                             \
        }                                                                                 \
    } while (0)

DOTPROD_TARGET static INLINE void rows_sdot(size_t ldw, const uint8_t *x, size_t ldx, const size_t rows,
                                            const int8_t *part, int32_t *acc) {
    const uint8x16_t flip = vdupq_n_u8(0x80);
    int32x4_t a[NEON_ROWS][2];
    size_t k, r;
    for (r = 0; r < rows; r++) a[r][0] = a[r][1] = vdupq_n_s32(0);
    for (k = 0; k < ldw; k += 16) {
        const int8_t *wg = part + k / 4 * GROUP_BYTES;
        int8x16_t xv[NEON_ROWS];
        for (r = 0; r < rows; r++) xv[r] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(x + r * ldx + k), flip));
        SDOT_GROUP(0);
        SDOT_GROUP(1);
        SDOT_GROUP(2);
        SDOT_GROUP(3);
    }
    for (r = 0; r < rows; r++) {
        vst1q_s32(acc + r * PANEL, a[r][0]);
        vst1q_s32(acc + r * PANEL + 4, a[r][1]);
    }
}
#undef SDOT_GROUP

DOTPROD_TARGET static void block_sdot(size_t ldw, const uint8_t *x, size_t ldx, size_t rows, const int8_t *part,
                                      int32_t *acc) {
    switch (rows) {
        case 8: rows_sdot(ldw, x, ldx, 8, part, acc); break;
        case 7: rows_sdot(ldw, x, ldx, 7, part, acc); break;
        case 6: rows_sdot(ldw, x, ldx, 6, part, acc); break;
        case 5: rows_sdot(ldw, x, ldx, 5, part, acc); break;
        case 4: rows_sdot(ldw, x, ldx, 4, part, acc); break;
        case 3: rows_sdot(ldw, x, ldx, 3, part, acc); break;
        case 2: rows_sdot(ldw, x, ldx, 2, part, acc); break;
        default: rows_sdot(ldw, x, ldx, 1, part, acc); break;
    }
}
#endif

#if CHARGEN_I8MM
/* 8 rows x 8 outputs in 16 int32x4 of USMMLA, a[p][q] = [(2p, 2q), (2p, 2q+1), (2p+1, 2q),
 * (2p+1, 2q+1)] for row pair p and output pair q: per two groups (8 k), a pair's two rows' 8
 * bytes side by side, and the part's two groups zipped by 32-bit lanes, [output n's 8 k, output
 * n+1's 8 k]. An odd block's last pair repeats its last row (summed, never stored). */
I8MM_TARGET static INLINE void rows_i8mm(size_t ldw, const uint8_t *x, size_t ldx, const size_t rows,
                                         const int8_t *part, int32_t *acc) {
    const size_t pairs = (rows + 1) / 2;
    const uint8_t *xr[NEON_ROWS];
    int32x4_t a[NEON_ROWS / 2][4];
    size_t k, p, q;
    for (p = 0; p < 2 * pairs; p++) xr[p] = x + (p < rows ? p : rows - 1) * ldx;
    for (p = 0; p < pairs; p++)
        for (q = 0; q < 4; q++) a[p][q] = vdupq_n_s32(0);
    for (k = 0; k < ldw; k += 8) {
        const int8_t *g0 = part + k / 4 * GROUP_BYTES, *g1 = g0 + GROUP_BYTES;
        const int32x4_t lo0 = vreinterpretq_s32_s8(vld1q_s8(g0)), lo1 = vreinterpretq_s32_s8(vld1q_s8(g1));
        const int32x4_t hi0 = vreinterpretq_s32_s8(vld1q_s8(g0 + 16)), hi1 = vreinterpretq_s32_s8(vld1q_s8(g1 + 16));
        int8x16_t wv[4];
        wv[0] = vreinterpretq_s8_s32(vzip1q_s32(lo0, lo1)); /* outputs 0, 1 */
        wv[1] = vreinterpretq_s8_s32(vzip2q_s32(lo0, lo1)); /* 2, 3 */
        wv[2] = vreinterpretq_s8_s32(vzip1q_s32(hi0, hi1)); /* 4, 5 */
        wv[3] = vreinterpretq_s8_s32(vzip2q_s32(hi0, hi1)); /* 6, 7 */
        for (p = 0; p < pairs; p++) {
            const uint8x16_t xv = vcombine_u8(vld1_u8(xr[2 * p] + k), vld1_u8(xr[2 * p + 1] + k));
            for (q = 0; q < 4; q++) a[p][q] = vusmmlaq_s32(a[p][q], xv, wv[q]);
        }
    }
    for (p = 0; p < pairs; p++) {
        int32_t *even = acc + 2 * p * PANEL, *odd = even + PANEL;
        const int64x2_t a0 = vreinterpretq_s64_s32(a[p][0]), a1 = vreinterpretq_s64_s32(a[p][1]);
        const int64x2_t a2 = vreinterpretq_s64_s32(a[p][2]), a3 = vreinterpretq_s64_s32(a[p][3]);
        vst1q_s32(even, vreinterpretq_s32_s64(vzip1q_s64(a0, a1)));
        vst1q_s32(even + 4, vreinterpretq_s32_s64(vzip1q_s64(a2, a3)));
        if (2 * p + 1 < rows) {
            vst1q_s32(odd, vreinterpretq_s32_s64(vzip2q_s64(a0, a1)));
            vst1q_s32(odd + 4, vreinterpretq_s32_s64(vzip2q_s64(a2, a3)));
        }
    }
}

I8MM_TARGET static void block_i8mm(size_t ldw, const uint8_t *x, size_t ldx, size_t rows, const int8_t *part,
                                   int32_t *acc) {
    switch (rows) {
        case 8: rows_i8mm(ldw, x, ldx, 8, part, acc); break;
        case 7: rows_i8mm(ldw, x, ldx, 7, part, acc); break;
        case 6: rows_i8mm(ldw, x, ldx, 6, part, acc); break;
        case 5: rows_i8mm(ldw, x, ldx, 5, part, acc); break;
        case 4: rows_i8mm(ldw, x, ldx, 4, part, acc); break;
        case 3: rows_i8mm(ldw, x, ldx, 3, part, acc); break;
        case 2: rows_i8mm(ldw, x, ldx, 2, part, acc); break;
        default: rows_i8mm(ldw, x, ldx, 1, part, acc); break;
    }
}
#endif

#if GEMM_AMX
/* the tile state off again after a call: cheaper context switches between steps */
AMX_TARGET static void amx_done(void) {
    _tile_release();
    amx_rows = 0;
}
#endif

/* ------------------------------------------------------------------ the product over panels */
/* y for the panels [p0, p1): each part of a panel (`width` outputs, in L1 while it lasts) against
 * the batch's rows a register block at a time; built once per kernel so the block inlines.
 * x_offset: what the block takes from every x (X_OFFSET_SDOT for SDOT's, else 0) */
static INLINE void gemm_panels(block_fn *block, size_t block_rows, size_t width, int32_t x_offset,
                               const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                               const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t p0, size_t p1) {
    const size_t ldw = w->ldw;
    int32_t acc[MAX_ROWS * PANEL];
    size_t p, h, b, r;
    for (p = p0; p < p1; p++)
        for (h = 0; h < PANEL / width && p * PANEL + h * width < w->N; h++) {
            const size_t n0 = p * PANEL + h * width, cols = w->N - n0 < width ? w->N - n0 : width;
            const int8_t *part = w->packed + p * PANEL * ldw + 4 * h * width;
            for (b = 0; b < B; b += block_rows) {
                const size_t rows = B - b < block_rows ? B - b : block_rows;
                block(ldw, xq + b * ldx, ldx, rows, part, acc);
                for (r = 0; r < rows; r++)
                    scale_out(w, n0, cols, acc + r * PANEL, zero[b + r] - x_offset, a_scale[b + r],
                              y + (b + r) * ldy);
            }
        }
}

static void gemm_c(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                   const int32_t *zero, float *y, size_t ldy, size_t p0, size_t p1) {
    gemm_panels(block_c, 4, PANEL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, p0, p1);
}
#if GEMM_AVX2
/* a half panel at a time against all the rows: its 16 KB (K = 1024) stay in L1 */
AVX2_TARGET static void gemm_avx2(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                  const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t p0,
                                  size_t p1) {
    if (w->narrow)
        gemm_panels(block_narrow, NARROW_ROWS, PANEL / 2, 0, w, B, xq, ldx, a_scale, zero, y, ldy, p0, p1);
    else
        gemm_panels(block_avx2, AVX2_ROWS, PANEL / 2, 0, w, B, xq, ldx, a_scale, zero, y, ldy, p0, p1);
}
#endif
#if GEMM_VNNI
VNNI_TARGET static void gemm_vnni(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                  const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t p0,
                                  size_t p1) {
    gemm_panels(block_vnni, VNNI_ROWS, PANEL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, p0, p1);
}
#endif
#if GEMM_AMX
AMX_TARGET static void gemm_amx(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t p0,
                                size_t p1) {
    gemm_panels(block_amx, 32, PANEL, 0, w, B, xq, ldx, a_scale, zero, y, ldy, p0, p1);
    amx_done();
}
#endif

#if CHARGEN_DOTPROD
DOTPROD_TARGET static void gemm_sdot(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                     const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t p0,
                                     size_t p1) {
    gemm_panels(block_sdot, NEON_ROWS, NEON_WIDTH, X_OFFSET_SDOT, w, B, xq, ldx, a_scale, zero, y, ldy, p0, p1);
}
#endif
#if CHARGEN_I8MM
I8MM_TARGET static void gemm_i8mm(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx,
                                  const float *a_scale, const int32_t *zero, float *y, size_t ldy, size_t p0,
                                  size_t p1) {
    gemm_panels(block_i8mm, NEON_ROWS, NEON_WIDTH, 0, w, B, xq, ldx, a_scale, zero, y, ldy, p0, p1);
}
#endif

/* ------------------------------------------------------------------ the kernels, and which a CPU runs */
/* min_batch: AVX2's packed loops measured faster than its matrix-vector kernel from batch 1 (the
 * AVX2 EPYC, docs/engines.md); AMX's and VNNI's 8 is not measured yet (no such CPU at hand): below
 * it the matrix-vector VNNI kernel, measured there, stays. NEON's 4 is not measured either (no ARM
 * CPU at hand, and qemu's times say nothing): from 4 rows the matrix-vector kernels' 4-row loops
 * read every weight once per 4 rows, the packed blocks once per 8. rows: AVX2's for any int8
 * weights (its narrow loop takes NARROW_ROWS) */
static const chargen_i8_gemm_kernel KERNELS[] = {
#if GEMM_AMX
    {"amx", gemm_amx, 32, 8},
#endif
#if GEMM_VNNI
    {"avx512vnni", gemm_vnni, VNNI_ROWS, 8},
#endif
#if GEMM_AVX2
    {"avx2", gemm_avx2, AVX2_ROWS, 1},
#endif
#if CHARGEN_I8MM
    {"neon-i8mm", gemm_i8mm, NEON_ROWS, 4},
#endif
#if CHARGEN_DOTPROD
    {"neon-dotprod", gemm_sdot, NEON_ROWS, 4},
#endif
    {"c", gemm_c, 4, 4},
};

const chargen_i8_gemm_kernel *chargen_i8_gemm_kernels(size_t *count) {
    *count = sizeof KERNELS / sizeof KERNELS[0];
    return KERNELS;
}

#if GEMM_AMX && !defined(CHARGEN_X86_EMULATE)
/* AMX-TILE and AMX-INT8 (CPUID leaf 7: EDX bits 24, 25), the tile data state granted by Linux
 * (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), and a product of 40 rows x 64 outputs x
 * K 192 equal to the plain loops': once per process */
static int amx_ready(void) {
    unsigned a, b, c, d;
    size_t i;
    int8_t w[64 * 192], packed[64 * 192];
    uint8_t x[40 * 192];
    float a_scale[40], y1[40 * 64], y2[40 * 64], scale[64];
    int32_t zero[40], wsum[64];
    chargen_i8_matrix m;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25))) return 0;
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0) return 0;
    for (i = 0; i < sizeof w; i++) w[i] = (int8_t)(i * 2654435761u >> 13);
    for (i = 0; i < sizeof x; i++) x[i] = (uint8_t)(i * 40503u >> 5);
    for (i = 0; i < 40; i++) a_scale[i] = 1.0f, zero[i] = 0;
    for (i = 0; i < 64; i++) scale[i] = 1.0f;
    chargen_i8_row_sums(64, 192, 192, w, wsum);
    m.narrow = chargen_i8_pack(64, 192, w, packed);
    m.N = 64, m.K = 192, m.ldw = 192, m.w = w, m.packed = packed, m.scale = scale, m.wsum = wsum, m.bias = NULL;
    gemm_amx(&m, 40, x, 192, a_scale, zero, y1, 64, 0, 2);
    gemm_c(&m, 40, x, 192, a_scale, zero, y2, 64, 0, 2);
    return memcmp(y1, y2, sizeof y1) == 0;
}
#endif

int chargen_i8_gemm_usable(const chargen_i8_gemm_kernel *k) {
#if defined(CHARGEN_X86_EMULATE)
    (void)k;
    return 1;
#else
#if GEMM_AMX
    if (k->gemm == gemm_amx) {
        static int ready = -1; /* once: the answer does not change, and two threads asking agree */
        int r = __atomic_load_n(&ready, __ATOMIC_ACQUIRE);
        if (r < 0) {
            r = amx_ready();
            __atomic_store_n(&ready, r, __ATOMIC_RELEASE);
        }
        return r;
    }
#endif
#if GEMM_VNNI
    if (k->gemm == gemm_vnni) return cpu_avx512vnni();
#endif
#if GEMM_AVX2
    if (k->gemm == gemm_avx2) return cpu_avx2();
#endif
#if CHARGEN_I8MM
    if (k->gemm == gemm_i8mm) return cpu_i8mm();
#endif
#if CHARGEN_DOTPROD
    if (k->gemm == gemm_sdot) return cpu_dotprod();
#endif
    return k->gemm == gemm_c;
#endif
}

const chargen_i8_gemm_kernel *chargen_i8_gemm_pick(void) {
    size_t i, n;
    const chargen_i8_gemm_kernel *k = chargen_i8_gemm_kernels(&n);
    for (i = 0; i + 1 < n; i++) /* the last, plain C, is only the layout's reference */
        if (chargen_i8_gemm_usable(&k[i])) return &k[i];
    return NULL;
}

void chargen_i8_gemm(const chargen_i8_gemm_kernel *k, const chargen_i8_matrix *w, size_t B, const uint8_t *xq,
                     size_t ldx, const float *a_scale, const int32_t *zero, float *y, chargen_pool *pool) {
    chargen_i8_product(pool, 0, k->gemm, PANEL, w, B, xq, ldx, a_scale, zero, y, w->N);
}

/* ------------------------------------------------------------------ peak and read rate */
#define PEAK_K 512 /* a panel of 16 KB: in L1 beside the rows */

typedef struct {
    const chargen_i8_gemm_kernel *k;
    int narrow;
    size_t reps_per;
    const uint8_t *p;
    size_t bytes, per;
    uint64_t sums[256];
} rate_job;

/* the register block a kernel runs on narrow (or any) weights, its rows and its width */
static block_fn *kernel_block(const chargen_i8_gemm_kernel *k, int narrow, size_t *rows, size_t *width) {
    *rows = k->rows, *width = PANEL;
#if GEMM_AMX
    if (k->gemm == gemm_amx) return block_amx;
#endif
#if GEMM_VNNI
    if (k->gemm == gemm_vnni) return block_vnni;
#endif
#if GEMM_AVX2
    if (k->gemm == gemm_avx2) {
        *rows = narrow ? NARROW_ROWS : AVX2_ROWS, *width = PANEL / 2;
        return narrow ? block_narrow : block_avx2;
    }
#endif
#if CHARGEN_I8MM
    if (k->gemm == gemm_i8mm) {
        *width = NEON_WIDTH;
        return block_i8mm;
    }
#endif
#if CHARGEN_DOTPROD
    if (k->gemm == gemm_sdot) {
        *width = NEON_WIDTH;
        return block_sdot;
    }
#endif
    (void)narrow;
    return block_c;
}

static void peak_chunk(void *arg, size_t c) {
    rate_job *j = arg;
    int8_t panel[PANEL * PEAK_K];
    uint8_t x[MAX_ROWS * PEAK_K];
    int32_t acc[MAX_ROWS * PANEL];
    size_t i, h, rows, width;
    block_fn *block = kernel_block(j->k, j->narrow, &rows, &width);
    for (i = 0; i < sizeof panel; i++) panel[i] = (int8_t)(i * 7 + c);
    for (i = 0; i < sizeof x; i++) x[i] = (uint8_t)(i * 13 + c);
    for (i = 0; i < j->reps_per; i++) /* the panel's parts, as gemm_panels runs them */
        for (h = 0; h < PANEL / width; h++) block(PEAK_K, x, PEAK_K, rows, panel + 4 * h * width, acc + h * width);
#if GEMM_AMX
    if (block == block_amx) amx_done();
#endif
    j->sums[c % 256] += (uint64_t)acc[0];
}

double chargen_i8_gemm_peak(const chargen_i8_gemm_kernel *k, int narrow, size_t reps, chargen_pool *pool,
                            int threads) {
    rate_job j;
    const size_t chunks = 8 * (size_t)chargen_i8_team(pool, threads); /* a late thread leaves little */
    size_t rows, width;
    kernel_block(k, narrow, &rows, &width);
    memset(&j, 0, sizeof j);
    j.k = k, j.narrow = narrow, j.reps_per = (reps + 7) / 8;
    chargen_pool_run(pool, threads, chunks, peak_chunk, &j);
    return (double)chunks * (double)j.reps_per * (double)(rows * PANEL * PEAK_K);
}

static void read_chunk(void *arg, size_t c) {
    rate_job *j = arg;
    const size_t start = c * j->per, end = start + j->per < j->bytes ? start + j->per : j->bytes;
    uint64_t s[8] = {0}, v;
    size_t r, i, t;
    for (r = 0; r < j->reps_per; r++) {
        for (i = start; i + 64 <= end; i += 64)
            for (t = 0; t < 8; t++) {
                memcpy(&v, j->p + i + 8 * t, 8);
                s[t] ^= v;
            }
    }
    for (t = 0; t < 8; t++) j->sums[c % 256] ^= s[t];
}

uint64_t chargen_i8_read(const void *p, size_t bytes, size_t reps, chargen_pool *pool, int threads) {
    rate_job j;
    const size_t chunks = (size_t)chargen_i8_team(pool, threads);
    uint64_t s = 0;
    size_t c;
    memset(&j, 0, sizeof j);
    j.p = p, j.bytes = bytes, j.reps_per = reps, j.per = (bytes / chunks + 63) / 64 * 64;
    chargen_pool_run(pool, threads, chunks, read_chunk, &j);
    for (c = 0; c < 256; c++) s ^= j.sums[c];
    return s;
}
