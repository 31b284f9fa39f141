/* The int8 step's own test:
 *   cc -std=c99 -pthread int8_matrix.c int8_matvec.c int8_gemm.c int8_step.c pool.c gru_gates.c test_int8_step.c -lm
 * Every kernel this CPU runs (matrix-vector and packed) is held against plain loops written here,
 * exactly (the int32 sums are exact and the float arithmetic after them is the same), alone and
 * as the step's product; the step against a reference step in double. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "int8_gemm.h"
#include "int8_matrix.h"
#include "int8_matvec.h"
#include "int8_step.h"

#if !defined(_WIN32) && !defined(CHARGEN_NO_THREADS)
#include <pthread.h>
#define THREADS 1
#else
#define THREADS 0
#endif

static int checks, failed;
static chargen_pool *pool2, *pool3; /* two and three threads (NULL where there are no threads) */

static void check(int ok, const char *what) {
    checks++;
    if (!ok) {
        failed++;
        printf("FAILED: %s\n", what);
    }
}

static uint64_t rng = 0x853c49e6748fea9bu;
static uint32_t next_u32(void) {
    rng = rng * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(rng >> 32);
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(next_u32() >> 8) / 16777216.0f; }

/* ------------------------------------------------------------------ quantize */
static void test_quantize(void) {
    const size_t K = 1000;
    float x[1000];
    uint8_t q[1000];
    int32_t zero;
    size_t k;
    int exact = 1;
    for (k = 0; k < K; k++) x[k] = uniform(-0.7f, 0.9f);
    float scale = chargen_i8_quantize_row(K, x, q, &zero);
    float lo = 0, hi = 0;
    for (k = 0; k < K; k++) lo = fminf(lo, x[k]), hi = fmaxf(hi, x[k]);
    check(scale == (hi - lo) / 255.0f, "quantize: scale is (max - min) / 255");
    check(zero == (int32_t)nearbyintf(-lo / scale), "quantize: zero point is round(-min / scale)");
    for (k = 0; k < K; k++) {
        float want = nearbyintf(x[k] / scale) + (float)zero;
        want = want < 0 ? 0 : want > 255 ? 255 : want;
        exact &= q[k] == (uint8_t)want;
        exact &= fabsf(((float)q[k] - (float)zero) * scale - x[k]) <= 0.5001f * scale;
    }
    check(exact, "quantize: every value rounds to the nearest step, ties to even");

    for (k = 0; k < K; k++) x[k] = uniform(0.1f, 0.5f); /* all positive: min clamps to 0 */
    scale = chargen_i8_quantize_row(K, x, q, &zero);
    check(zero == 0, "quantize: positive rows have zero point 0");
    memset(x, 0, sizeof x);
    scale = chargen_i8_quantize_row(K, x, q, &zero);
    check(scale == 0.0f && zero == 0 && q[0] == 0 && q[K - 1] == 0, "quantize: a zero row has scale 0, all zeros");
}

/* the kernels this CPU ran, for the summary line */
static char matvec_kernels[128], packed_kernels[128];

/* name appended to the comma-separated list, unless the list has it ("neon" is not "neon-i8mm") */
static void ran(char *list, const char *name) {
    const size_t n = strlen(name);
    const char *at;
    for (at = strstr(list, name); at; at = strstr(at + 1, name))
        if ((at == list || at[-1] == ',') && (at[n] == ',' || at[n] == '\0')) return;
    strcat(list, list[0] ? "," : "");
    strcat(list, name);
}

/* ------------------------------------------------------------------ matmul */
#define PAD(K) (((K) + 63) / 64 * 64)

/* y (B, N) of the matrix m (bias required) for xq (B rows at stride ldw): plain loops, the
 * reference every kernel is held to bit for bit */
static void plain_product(const chargen_i8_matrix *m, size_t B, const uint8_t *xq, const float *a_scale,
                          const int32_t *zero, float *y) {
    size_t b, n, k;
    for (b = 0; b < B; b++)
        for (n = 0; n < m->N; n++) {
            int32_t acc = 0;
            for (k = 0; k < m->K; k++) acc += ((int32_t)xq[b * m->ldw + k] - zero[b]) * (int32_t)m->w[n * m->ldw + k];
            y[b * m->N + n] = (float)acc * (a_scale[b] * m->scale[n]) + m->bias[n];
        }
}

static void test_matmul(size_t B, size_t N, size_t K) {
    const size_t ldw = PAD(K);
    int8_t *w = calloc(N, ldw);
    uint8_t *xq = malloc(B * ldw);
    float *scale = malloc(N * sizeof *scale), *bias = malloc(N * sizeof *bias), *a_scale = malloc(B * sizeof *a_scale);
    float *y1 = malloc(B * N * sizeof *y1), *y2 = malloc(B * N * sizeof *y2), *want = malloc(B * N * sizeof *want);
    int32_t *wsum = malloc(N * sizeof *wsum), *zero = malloc(B * sizeof *zero);
    size_t b, n, k, i, count;
    char what[160];
    for (n = 0; n < N; n++) /* the full range, -128..127; zeros past K */
        for (k = 0; k < K; k++) w[n * ldw + k] = (int8_t)(next_u32() >> 24);
    for (n = 0; n < B * ldw; n++) xq[n] = (uint8_t)(next_u32() >> 24); /* past K too: it must not count */
    for (n = 0; n < N; n++) scale[n] = uniform(1e-4f, 1e-2f), bias[n] = uniform(-1, 1);
    for (b = 0; b < B; b++) a_scale[b] = uniform(1e-3f, 1e-2f), zero[b] = (int32_t)(next_u32() % 256);
    chargen_i8_row_sums(N, K, ldw, w, wsum);
    chargen_i8_matrix m = {N, K, ldw, w, scale, wsum, bias, NULL, 0};
    const chargen_i8_matvec_kernel *kernels = chargen_i8_matvec_kernels(&count);
    plain_product(&m, B, xq, a_scale, zero, want);
    chargen_i8_matmul(&m, B, xq, ldw, a_scale, zero, y1, NULL);
    snprintf(what, sizeof what, "matmul B=%zu N=%zu K=%zu (%s kernel): equal to plain loops", B, N, K, chargen_i8_kernel());
    check(memcmp(y1, want, B * N * sizeof *y1) == 0, what);
    for (i = 0; i < count; i++) { /* every kernel this CPU runs, on one thread and on two */
        if (!chargen_i8_matvec_usable(&kernels[i])) continue;
        ran(matvec_kernels, kernels[i].name);
        memset(y1, 0xff, B * N * sizeof *y1), memset(y2, 0xff, B * N * sizeof *y2);
        chargen_i8_matvec(&kernels[i], &m, B, xq, ldw, a_scale, zero, y1, NULL);
        chargen_i8_matvec(&kernels[i], &m, B, xq, ldw, a_scale, zero, y2, pool2);
        snprintf(what, sizeof what, "matvec %s B=%zu N=%zu K=%zu: equal to plain loops", kernels[i].name, B, N, K);
        check(memcmp(y1, want, B * N * sizeof *y1) == 0, what);
        snprintf(what, sizeof what, "matvec %s B=%zu N=%zu K=%zu: two threads give the same bits as one", kernels[i].name, B, N, K);
        check(memcmp(y1, y2, B * N * sizeof *y1) == 0, what);
    }
    free(w), free(xq), free(scale), free(bias), free(a_scale), free(y1), free(y2), free(want), free(wsum), free(zero);
}

/* ------------------------------------------------------------------ the packed product */
/* every packed kernel this CPU runs (all of them under CHARGEN_X86_EMULATE) against plain loops,
 * bit for bit: the register blocks' row tails (B not a multiple of the block), the last panel's
 * column tail (N not a multiple of 32), K not a multiple of 64, the full int8 range */
static void test_packed(size_t B, size_t N, size_t K, int narrow) {
    const size_t ldw = PAD(K);
    int8_t *w = calloc(N, ldw), *packed = malloc(chargen_i8_packed_bytes(N, ldw));
    uint8_t *xq = malloc(B * ldw);
    float *scale = malloc(N * sizeof *scale), *bias = malloc(N * sizeof *bias), *a_scale = malloc(B * sizeof *a_scale);
    float *y = malloc(B * N * sizeof *y), *want = malloc(B * N * sizeof *want);
    int32_t *wsum = malloc(N * sizeof *wsum), *zero = malloc(B * sizeof *zero);
    size_t b, n, k, i, count;
    const chargen_i8_gemm_kernel *kernels = chargen_i8_gemm_kernels(&count);
    char what[200];
    for (n = 0; n < N; n++) /* narrow: [-64, 64], as a 7-bit export's; else the full int8 range */
        for (k = 0; k < K; k++) w[n * ldw + k] = narrow ? (int8_t)((int)(next_u32() % 129) - 64) : (int8_t)(next_u32() >> 24);
    for (n = 0; n < B * ldw; n++) xq[n] = (uint8_t)(next_u32() >> 24); /* past K too: it must not count */
    for (n = 0; n < N; n++) scale[n] = uniform(1e-4f, 1e-2f), bias[n] = uniform(-1, 1);
    for (b = 0; b < B; b++) a_scale[b] = uniform(1e-3f, 1e-2f), zero[b] = (int32_t)(next_u32() % 256);
    /* the extremes, where a 16-bit sum of two products is largest: 255 x the weight's bound, twice */
    xq[0] = xq[1] = 255, w[0] = narrow ? -64 : -128, w[1 % K] = narrow ? -64 : -128, w[K - 1] = narrow ? 64 : 127;
    if (B > 1) xq[ldw] = xq[ldw + 1] = 255, w[ldw] = w[ldw + 1 % K] = narrow ? 64 : 127;
    chargen_i8_row_sums(N, K, ldw, w, wsum);
    const int packed_narrow = chargen_i8_pack(N, ldw, w, packed);
    snprintf(what, sizeof what, "pack B=%zu N=%zu K=%zu: says whether every weight is in [-64, 64] (%d)", B, N, K, narrow);
    check(packed_narrow == narrow, what);
    chargen_i8_matrix m = {N, K, ldw, w, scale, wsum, bias, packed, packed_narrow};
    plain_product(&m, B, xq, a_scale, zero, want);
    for (i = 0; i < count; i++) {
        if (!chargen_i8_gemm_usable(&kernels[i])) continue;
        ran(packed_kernels, kernels[i].name);
        memset(y, 0xff, B * N * sizeof *y);
        chargen_i8_gemm(&kernels[i], &m, B, xq, ldw, a_scale, zero, y, NULL);
        snprintf(what, sizeof what, "packed %s B=%zu N=%zu K=%zu %s: equal to plain loops", kernels[i].name, B, N, K,
                 narrow ? "narrow" : "wide");
        check(memcmp(y, want, B * N * sizeof *y) == 0, what);
        memset(y, 0xff, B * N * sizeof *y);
        chargen_i8_gemm(&kernels[i], &m, B, xq, ldw, a_scale, zero, y, pool3);
        snprintf(what, sizeof what, "packed %s B=%zu N=%zu K=%zu %s: three threads, the same bits", kernels[i].name, B,
                 N, K, narrow ? "narrow" : "wide");
        check(memcmp(y, want, B * N * sizeof *y) == 0, what);
    }
    free(w), free(packed), free(xq), free(scale), free(bias), free(a_scale), free(y), free(want), free(wsum), free(zero);
}

/* ------------------------------------------------------------------ the step */
typedef struct {
    size_t L, H, V;
    float *table, *w_ih_f, *w_hh_f, *b_ih, *b_hh, *head_w, *head_b; /* float weights: the reference's */
    int8_t *w_ih, *w_hh, *p_ih, *p_hh; /* p_: packed (int8_gemm.h) */
    float *s_ih, *s_hh;
    int32_t *sum_ih, *sum_hh;
    chargen_i8_matrix ih[3], hh[3];
    chargen_i8_gru gru;
} model_t;

/* int8 weights, symmetric, one scale per output, rows padded to PAD(K); the float copy is what
 * they dequantize to */
static void quantize_weights(size_t N, size_t K, float *wf, int8_t *w, float *s, int32_t *sum) {
    const size_t ldw = PAD(K);
    size_t n, k;
    for (n = 0; n < N; n++) {
        float amax = 0;
        for (k = 0; k < K; k++) amax = fmaxf(amax, fabsf(wf[n * K + k]));
        s[n] = amax / 127.0f;
        for (k = 0; k < K; k++) {
            w[n * ldw + k] = (int8_t)nearbyintf(wf[n * K + k] / s[n]);
            wf[n * K + k] = (float)w[n * ldw + k] * s[n];
        }
    }
    chargen_i8_row_sums(N, K, ldw, w, sum);
}

static void make_model(model_t *m, size_t L, size_t H, size_t V) {
    const size_t H3 = 3 * H;
    size_t i, k;
    m->L = L, m->H = H, m->V = V;
    m->table = malloc(V * H3 * sizeof(float));
    m->w_ih_f = malloc(L * H3 * H * sizeof(float)), m->w_hh_f = malloc(L * H3 * H * sizeof(float));
    m->b_ih = malloc(L * H3 * sizeof(float)), m->b_hh = malloc(L * H3 * sizeof(float));
    m->head_w = malloc(V * H * sizeof(float)), m->head_b = malloc(V * sizeof(float));
    m->w_ih = calloc(L * H3, PAD(H)), m->w_hh = calloc(L * H3, PAD(H));
    m->p_ih = malloc(L * chargen_i8_packed_bytes(H3, PAD(H))), m->p_hh = malloc(L * chargen_i8_packed_bytes(H3, PAD(H)));
    m->s_ih = malloc(L * H3 * sizeof(float)), m->s_hh = malloc(L * H3 * sizeof(float));
    m->sum_ih = malloc(L * H3 * sizeof(int32_t)), m->sum_hh = malloc(L * H3 * sizeof(int32_t));
    for (i = 0; i < V * H3; i++) m->table[i] = uniform(-2, 2);
    for (i = 0; i < L * H3 * H; i++) m->w_ih_f[i] = uniform(-0.3f, 0.3f), m->w_hh_f[i] = uniform(-0.3f, 0.3f);
    for (i = 0; i < L * H3; i++) m->b_ih[i] = uniform(-0.5f, 0.5f), m->b_hh[i] = uniform(-0.5f, 0.5f);
    for (i = 0; i < V * H; i++) m->head_w[i] = uniform(-0.5f, 0.5f);
    for (i = 0; i < V; i++) m->head_b[i] = uniform(-1, 1);
    for (k = 0; k < L; k++) {
        int8_t *ih = m->w_ih + k * H3 * PAD(H), *hh = m->w_hh + k * H3 * PAD(H);
        quantize_weights(H3, H, m->w_ih_f + k * H3 * H, ih, m->s_ih + k * H3, m->sum_ih + k * H3);
        quantize_weights(H3, H, m->w_hh_f + k * H3 * H, hh, m->s_hh + k * H3, m->sum_hh + k * H3);
        int8_t *p_ih = m->p_ih + k * chargen_i8_packed_bytes(H3, PAD(H)), *p_hh = m->p_hh + k * chargen_i8_packed_bytes(H3, PAD(H));
        const int n_ih = chargen_i8_pack(H3, PAD(H), ih, p_ih), n_hh = chargen_i8_pack(H3, PAD(H), hh, p_hh);
        m->ih[k] = (chargen_i8_matrix){H3, H, PAD(H), ih, m->s_ih + k * H3, m->sum_ih + k * H3, m->b_ih + k * H3, p_ih, n_ih};
        m->hh[k] = (chargen_i8_matrix){H3, H, PAD(H), hh, m->s_hh + k * H3, m->sum_hh + k * H3, NULL, p_hh, n_hh};
    }
    m->gru = (chargen_i8_gru){L, H, V, m->table, m->ih, m->hh, m->b_hh, m->head_w, m->head_b, pool2, 0, {0}};
}

static void free_model(model_t *m) {
    free(m->table), free(m->w_ih_f), free(m->w_hh_f), free(m->b_ih), free(m->b_hh), free(m->head_w), free(m->head_b);
    free(m->w_ih), free(m->w_hh), free(m->p_ih), free(m->p_hh), free(m->s_ih), free(m->s_hh), free(m->sum_ih), free(m->sum_hh);
}

/* the step in double with the dequantized weights and activations: what the int8 step
 * approximates to float rounding */
static void reference_step(const model_t *m, size_t B, const int64_t *tok, const float *h_in, double *h_out, double *logits) {
    const size_t L = m->L, H = m->H, H3 = 3 * H, V = m->V;
    double *gi = malloc(H3 * sizeof *gi), *gh = malloc(H3 * sizeof *gh), *xd = malloc(H * sizeof *xd);
    float *x = malloc(H * sizeof *x);
    uint8_t *q = malloc(H);
    size_t b, k, n, j;
    for (b = 0; b < B; b++)
        for (k = 0; k < L; k++) {
            const float *hp = h_in + (k * B + b) * H;
            for (n = 0; n < H3; n++) gi[n] = m->table[(size_t)tok[b] * H3 + n];
            if (k > 0) {
                int32_t zero;
                for (j = 0; j < H; j++) x[j] = (float)h_out[((k - 1) * B + b) * H + j];
                float sc = chargen_i8_quantize_row(H, x, q, &zero);
                for (j = 0; j < H; j++) xd[j] = ((double)q[j] - zero) * sc;
                for (n = 0; n < H3; n++) {
                    double s = m->b_ih[k * H3 + n];
                    for (j = 0; j < H; j++) s += xd[j] * m->w_ih_f[(k * H3 + n) * H + j];
                    gi[n] = s;
                }
            }
            int32_t zero;
            float sc = chargen_i8_quantize_row(H, hp, q, &zero);
            for (j = 0; j < H; j++) xd[j] = ((double)q[j] - zero) * sc;
            for (n = 0; n < H3; n++) {
                double s = 0;
                for (j = 0; j < H; j++) s += xd[j] * m->w_hh_f[(k * H3 + n) * H + j];
                gh[n] = s + m->b_hh[k * H3 + n];
            }
            for (j = 0; j < H; j++) {
                const double r = 1 / (1 + exp(-(gi[j] + gh[j]))), z = 1 / (1 + exp(-(gi[H + j] + gh[H + j])));
                const double nn = tanh(gi[2 * H + j] + r * gh[2 * H + j]);
                h_out[(k * B + b) * H + j] = nn + z * (hp[j] - nn);
            }
        }
    for (b = 0; b < B; b++)
        for (n = 0; n < V; n++) {
            double s = m->head_b[n];
            for (j = 0; j < H; j++) s += h_out[((L - 1) * B + b) * H + j] * m->head_w[n * H + j];
            logits[b * V + n] = s;
        }
    free(gi), free(gh), free(xd), free(x), free(q);
}

/* The larger error, a NaN error kept (fmax would drop it). Not fmax also because Debian 12's
 * aarch64-linux-gnu-gcc 12.2 crashes vectorising an fmax reduction of floats widened to double
 * (see test_gru_train.c). */
static double worse(double worst, double err) { return err > worst || err != err ? err : worst; }

/* the step on every kernel this CPU runs gives the bits of the step on the kernels init picked
 * (h_out, logits): each packed kernel from batch 1, each matrix-vector kernel without the packed
 * copies */
static void step_kernels(model_t *m, size_t B, const int64_t *tok, const float *h_in, const float *h_out,
                         const float *logits, float *h_two, float *logits_two, void *scratch) {
    const chargen_i8_kernels picked = m->gru.kernels;
    const size_t n_h = m->L * B * m->H, n_l = B * m->V;
    size_t i, k, count;
    const chargen_i8_gemm_kernel *packed = chargen_i8_gemm_kernels(&count);
    char what[200];
    for (i = 0; i < count; i++) {
        if (!chargen_i8_gemm_usable(&packed[i])) continue;
        m->gru.kernels.packed = &packed[i], m->gru.kernels.packed_from = 1;
        memset(h_two, 0xff, n_h * sizeof(float)), memset(logits_two, 0xff, n_l * sizeof(float));
        chargen_i8_step(&m->gru, B, tok, h_in, h_two, logits_two, scratch);
        snprintf(what, sizeof what, "step B=%zu: the packed %s product gives the bits of the picked kernels (%s, %s from B=%zu)",
                 B, packed[i].name, picked.matvec->name, picked.packed ? picked.packed->name : "no packed",
                 picked.packed_from);
        check(memcmp(h_out, h_two, n_h * sizeof(float)) == 0 && memcmp(logits, logits_two, n_l * sizeof(float)) == 0, what);
    }
    m->gru.kernels = picked;
    {
        const chargen_i8_matvec_kernel *matvec = chargen_i8_matvec_kernels(&count);
        for (k = 0; k < m->L; k++) m->ih[k].packed = m->hh[k].packed = NULL; /* the matrix-vector kernels alone */
        for (i = 0; i < count; i++) {
            if (!chargen_i8_matvec_usable(&matvec[i])) continue;
            m->gru.kernels.matvec = &matvec[i];
            memset(h_two, 0xff, n_h * sizeof(float)), memset(logits_two, 0xff, n_l * sizeof(float));
            chargen_i8_step(&m->gru, B, tok, h_in, h_two, logits_two, scratch);
            snprintf(what, sizeof what, "step B=%zu: the matrix-vector %s product gives the bits of the picked kernels", B,
                     matvec[i].name);
            check(memcmp(h_out, h_two, n_h * sizeof(float)) == 0 && memcmp(logits, logits_two, n_l * sizeof(float)) == 0, what);
        }
        for (k = 0; k < m->L; k++) {
            m->ih[k].packed = m->p_ih + k * chargen_i8_packed_bytes(3 * m->H, PAD(m->H));
            m->hh[k].packed = m->p_hh + k * chargen_i8_packed_bytes(3 * m->H, PAD(m->H));
        }
    }
    m->gru.kernels = picked;
}

/* kernels that count their calls, then run the plain C ones: the step runs on the kernels in the
 * model (init's pick, or what the caller set), not on ones it picks itself */
static int counted_matvec, counted_packed;
static const chargen_i8_matvec_kernel *plain_matvec;
static const chargen_i8_gemm_kernel *plain_packed;

static void counting_matvec(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                            const int32_t *zero, float *y, size_t ldy, size_t u0, size_t u1) {
    __atomic_add_fetch(&counted_matvec, 1, __ATOMIC_RELAXED);
    plain_matvec->product(w, B, xq, ldx, a_scale, zero, y, ldy, u0, u1);
}

static void counting_packed(const chargen_i8_matrix *w, size_t B, const uint8_t *xq, size_t ldx, const float *a_scale,
                            const int32_t *zero, float *y, size_t ldy, size_t u0, size_t u1) {
    __atomic_add_fetch(&counted_packed, 1, __ATOMIC_RELAXED);
    plain_packed->gemm(w, B, xq, ldx, a_scale, zero, y, ldy, u0, u1);
}

static void step_counting(model_t *m, size_t B, const int64_t *tok, const float *h_in, const float *h_out,
                          const float *logits, float *h_two, float *logits_two, void *scratch) {
    const chargen_i8_kernels picked = m->gru.kernels;
    const size_t n_h = m->L * B * m->H, n_l = B * m->V;
    const chargen_i8_matvec_kernel matvec = {"counting", counting_matvec};
    size_t i, count;
    const chargen_i8_matvec_kernel *mv = chargen_i8_matvec_kernels(&count);
    const chargen_i8_gemm_kernel *pk = chargen_i8_gemm_kernels(&i);
    chargen_i8_gemm_kernel packed = pk[i - 1]; /* plain C, the last */
    plain_matvec = &mv[count - 1], plain_packed = &pk[i - 1];
    packed.name = "counting", packed.gemm = counting_packed;
    m->gru.kernels.matvec = &matvec, m->gru.kernels.packed = &packed, m->gru.kernels.packed_from = B + 1;
    counted_matvec = counted_packed = 0;
    chargen_i8_step(&m->gru, B, tok, h_in, h_two, logits_two, scratch);
    check(counted_matvec >= (int)(2 * m->L - 1) && counted_packed == 0 && memcmp(h_out, h_two, n_h * sizeof(float)) == 0 &&
              memcmp(logits, logits_two, n_l * sizeof(float)) == 0,
          "step: runs the model's matrix-vector kernel below packed_from (the same bits)");
    m->gru.kernels.packed_from = B;
    counted_matvec = counted_packed = 0;
    chargen_i8_step(&m->gru, B, tok, h_in, h_two, logits_two, scratch);
    check(counted_packed >= (int)(2 * m->L - 1) && counted_matvec == 0 && memcmp(h_out, h_two, n_h * sizeof(float)) == 0 &&
              memcmp(logits, logits_two, n_l * sizeof(float)) == 0,
          "step: runs the model's packed kernel from packed_from on (the same bits)");
    m->gru.kernels = picked;
}

static void test_step(size_t L, size_t H, size_t V, size_t B) {
    model_t m;
    make_model(&m, L, H, V);
    const size_t n_h = L * B * H;
    float *h_in = malloc(n_h * sizeof(float)), *h_out = malloc(n_h * sizeof(float)), *h_two = malloc(n_h * sizeof(float));
    float *logits = malloc(B * V * sizeof(float)), *logits_two = malloc(B * V * sizeof(float));
    double *want_h = malloc(n_h * sizeof(double)), *want_logits = malloc(B * V * sizeof(double));
    int64_t *tok = malloc(B * sizeof(int64_t));
    void *scratch = malloc(chargen_i8_scratch_bytes(&m.gru, B));
    size_t i;
    double err_h = 0, err_logits = 0;
    char what[160];
    for (i = 0; i < n_h; i++) h_in[i] = uniform(-0.95f, 0.95f);
    for (i = 0; i < B; i++) tok[i] = (int64_t)(next_u32() % V);
    check(chargen_i8_step(&m.gru, B, tok, h_in, h_out, logits, scratch) == CHARGEN_I8_NOT_READY,
          "step: a model not made ready by init is refused");
    check(chargen_i8_init(&m.gru) == CHARGEN_I8_OK, "init: a well-formed model passes");
    check(m.gru.kernels.matvec == chargen_i8_matvec_pick() && m.gru.kernels.packed == chargen_i8_gemm_pick(),
          "init: picks the CPU's kernels");
    check(chargen_i8_step(&m.gru, B, tok, h_in, h_out, logits, scratch) == CHARGEN_I8_OK, "step returns OK");
    reference_step(&m, B, tok, h_in, want_h, want_logits);
    for (i = 0; i < n_h; i++) err_h = worse(err_h, fabs(h_out[i] - want_h[i]));
    for (i = 0; i < B * V; i++) err_logits = worse(err_logits, fabs(logits[i] - want_logits[i]));
    snprintf(what, sizeof what, "step L=%zu H=%zu V=%zu B=%zu: h within 1e-4 of the reference (%.2g)", L, H, V, B, err_h);
    check(err_h < 1e-4, what);
    snprintf(what, sizeof what, "step L=%zu H=%zu V=%zu B=%zu: logits within 1e-3 (%.2g)", L, H, V, B, err_logits);
    check(err_logits < 1e-3, what);

    m.gru.threads = 1;
    chargen_i8_step(&m.gru, B, tok, h_in, h_two, logits_two, scratch);
    check(memcmp(h_out, h_two, n_h * sizeof(float)) == 0 && memcmp(logits, logits_two, B * V * sizeof(float)) == 0,
          "step: one thread gives the same bits as two");
    m.gru.threads = 0, m.gru.pool = pool3;
    chargen_i8_step(&m.gru, B, tok, h_in, h_two, logits_two, scratch);
    check(memcmp(h_out, h_two, n_h * sizeof(float)) == 0 && memcmp(logits, logits_two, B * V * sizeof(float)) == 0,
          "step: three threads give the same bits as two");
    m.gru.pool = pool2;
    step_kernels(&m, B, tok, h_in, h_out, logits, h_two, logits_two, scratch);
    step_counting(&m, B, tok, h_in, h_out, logits, h_two, logits_two, scratch);

    memcpy(h_two, h_out, n_h * sizeof(float));
    tok[B - 1] = (int64_t)V;
    check(chargen_i8_step(&m.gru, B, tok, h_in, h_out, logits, scratch) == CHARGEN_I8_BAD_TOKEN,
          "step: a token >= V is refused");
    tok[B - 1] = -1;
    check(chargen_i8_step(&m.gru, B, tok, h_in, h_out, logits, scratch) == CHARGEN_I8_BAD_TOKEN,
          "step: a negative token is refused");
    check(memcmp(h_out, h_two, n_h * sizeof(float)) == 0, "step: a refused step writes nothing");

    m.hh[L - 1].ldw = H;
    check(H % 64 == 0 || chargen_i8_init(&m.gru) == CHARGEN_I8_BAD_SHAPE, "init: unpadded rows are refused");
    m.hh[L - 1].ldw = PAD(H);
    m.hh[L - 1].K = H + 1;
    check(chargen_i8_init(&m.gru) == CHARGEN_I8_BAD_SHAPE, "init: a matrix of the wrong shape is refused");
    check(chargen_i8_step(&m.gru, B, tok, h_in, h_two, logits_two, scratch) == CHARGEN_I8_NOT_READY,
          "step: a model that failed init is refused");
    free(h_in), free(h_out), free(h_two), free(logits), free(logits_two), free(want_h), free(want_logits), free(tok);
    free(scratch);
    free_model(&m);
}

/* ------------------------------------------------------------------ several callers, one pool */
#if THREADS
#define CALLERS 4
typedef struct {
    const chargen_i8_gru *gru;
    size_t B;
    const int64_t *tok;
    const float *h_in;
    const float *want_h, *want_logits;
    int same;
} caller_t;

static void *caller_main(void *arg) {
    caller_t *c = arg;
    const size_t n_h = c->gru->L * c->B * c->gru->H, n_l = c->B * c->gru->V;
    float *h = malloc(n_h * sizeof(float)), *logits = malloc(n_l * sizeof(float));
    void *scratch = malloc(chargen_i8_scratch_bytes(c->gru, c->B));
    int i;
    c->same = 1;
    for (i = 0; i < 200; i++) {
        chargen_i8_step(c->gru, c->B, c->tok, c->h_in, h, logits, scratch);
        c->same &= memcmp(h, c->want_h, n_h * sizeof(float)) == 0 && memcmp(logits, c->want_logits, n_l * sizeof(float)) == 0;
    }
    free(h), free(logits), free(scratch);
    return NULL;
}

/* CALLERS threads step one model (one pool) at once: one gets the workers at a time, the others
 * step alone; every step gives the bits of a step on one thread */
static void test_callers(void) {
    const size_t L = 2, H = 96, V = 65, B = 3, n_h = L * B * H;
    model_t m;
    caller_t c[CALLERS];
    pthread_t tid[CALLERS];
    float *h_in = malloc(n_h * sizeof(float)), *want_h = malloc(n_h * sizeof(float)), *want_l = malloc(B * V * sizeof(float));
    int64_t tok[3] = {1, 7, 64};
    void *scratch;
    size_t i;
    int same = 1;
    make_model(&m, L, H, V);
    scratch = malloc(chargen_i8_scratch_bytes(&m.gru, B));
    for (i = 0; i < n_h; i++) h_in[i] = uniform(-0.95f, 0.95f);
    chargen_i8_init(&m.gru);
    m.gru.threads = 1;
    chargen_i8_step(&m.gru, B, tok, h_in, want_h, want_l, scratch);
    m.gru.threads = 0;
    for (i = 0; i < CALLERS; i++) {
        c[i] = (caller_t){&m.gru, B, tok, h_in, want_h, want_l, 0};
        pthread_create(&tid[i], NULL, caller_main, &c[i]);
    }
    for (i = 0; i < CALLERS; i++) pthread_join(tid[i], NULL), same &= c[i].same;
    check(same, "step: four threads stepping one model at once get one thread's bits, every step");
    free(h_in), free(want_h), free(want_l), free(scratch);
    free_model(&m);
}
#endif

int main(void) {
    int i;
    pool2 = chargen_pool_new(2), pool3 = chargen_pool_new(3);
    check(THREADS == chargen_i8_threaded() && (pool2 != NULL) == THREADS, "threads where they are built");
    test_quantize();
    test_matmul(1, 3072, 1024);
    test_matmul(3, 7, 100);
    test_matmul(5, 9, 64);
    test_matmul(2, 13, 65);
    test_matmul(4, 1, 1);
    test_matmul(17, 30, 130);
    for (i = 0; i < 2; i++) { /* wide (any int8), then narrow ([-64, 64]) weights */
        test_packed(1, 32, 64, i);
        test_packed(3, 40, 100, i);
        test_packed(8, 96, 192, i);
        test_packed(9, 33, 1, i);
        test_packed(17, 64, 130, i);
        test_packed(33, 100, 256, i);
        test_packed(70, 3 * 96, 96, i);
    }
    test_step(1, 64, 11, 1);
    test_step(2, 40, 7, 3);
    test_step(3, 100, 65, 8);
    test_step(1, 64, 70, 9); /* from CHUNKED_ROWS streams, the states and gates in chunks too */
    test_step(2, 96, 65, 37); /* the packed product on every CPU that has one: a block's row tail */
#if THREADS
    test_callers();
#endif
    chargen_pool_free(pool2), chargen_pool_free(pool3);
    printf("test_int8_step: %d checks, %d failed (kernel %s, threads %d, matvec %s, packed %s)\n", checks, failed,
           chargen_i8_kernel(), chargen_i8_threaded(), matvec_kernels, packed_kernels);
    return failed != 0;
}
