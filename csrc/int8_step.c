/* chargen's int8 GRU step: see int8_step.h for the contract.  Pure C99. */

#include "int8_step.h"

#include <string.h>

#include "gru_gates.h"
#include "int8_cpu.h"

/* The step's loops run on a chargen_pool (pool.h): each cut into chunks that the calling thread
 * and the pool's workers claim (chargen_i8_cut), one parallel loop where a loop has enough work
 * (the products and the head always; quantizing the states and the gates from CHUNKED_ROWS
 * streams), the rest on the caller alone. Every output is computed by one thread in a fixed
 * order, so the result does not depend on the number of threads. */
#define ALIGN 64
#define ROUND_UP(n) (((n) + ALIGN - 1) / ALIGN * ALIGN)
#define CHUNKED_ROWS 8 /* streams from which quantizing the states and the gates run in chunks */

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

static chargen_i8_head_fn *head_pick(void) {
#if CHARGEN_AVX512
    if (cpu_avx512vnni()) return head_avx512; /* the CPUs whose products are AVX-512's */
#endif
#if CHARGEN_AVX2
    if (cpu_avx2()) return head_avx2;
#endif
    return head_c;
}

int chargen_i8_threaded(void) { return chargen_pool_threaded(); }

/* ------------------------------------------------------------------ the step's loops, in chunks on the pool */
/* the step's product for one matrix: the packed kernel from its batch size on, where w has a
 * packed copy; else the matrix-vector kernel */
static void product(chargen_pool *pool, int threads, const chargen_i8_kernels *kern, const chargen_i8_matrix *w,
                    size_t B, const uint8_t *xq, size_t ldx, const float *a_scale, const int32_t *zero, float *y,
                    size_t ldy) {
    if (kern->packed && w->packed && B >= kern->packed_from)
        chargen_i8_product(pool, threads, kern->packed->gemm, CHARGEN_I8_PANEL, w, B, xq, ldx, a_scale, zero, y, ldy);
    else
        chargen_i8_product(pool, threads, kern->matvec->product, CHARGEN_I8_TILE, w, B, xq, ldx, a_scale, zero, y,
                           ldy);
}

typedef struct {
    chargen_i8_quantize_fn *quantize;
    size_t B, K, ldx, per;
    const float *x;
    uint8_t *xq;
    float *a_scale;
    int32_t *zero;
} quantize_job;

static void quantize_chunk(void *arg, size_t c) {
    const quantize_job *j = arg;
    size_t b;
    for (b = c * j->per; b < chargen_i8_chunk_end(c, j->per, j->B); b++)
        j->a_scale[b] = j->quantize(j->K, j->x + b * j->K, j->xq + b * j->ldx, j->zero + b);
}

static void quantize_rows(chargen_pool *pool, int threads, chargen_i8_quantize_fn *quantize, size_t B, size_t K,
                          const float *x, uint8_t *xq, size_t ldx, float *a_scale, int32_t *zero) {
    quantize_job j;
    size_t chunks;
    j.quantize = quantize, j.B = B, j.K = K, j.ldx = ldx, j.x = x, j.xq = xq, j.a_scale = a_scale, j.zero = zero;
    chunks = chargen_i8_cut(B, 1, B < CHUNKED_ROWS ? 1 : chargen_i8_team(pool, threads), &j.per);
    chargen_pool_run(pool, threads, chunks, quantize_chunk, &j);
}

typedef struct {
    chargen_i8_head_fn *fn;
    size_t B, H, V, per;
    const float *h, *w, *bias;
    float *logits;
} head_job;

static void head_chunk(void *arg, size_t c) {
    const head_job *j = arg;
    j->fn(j->B, j->H, j->V, j->h, j->w, j->bias, j->logits, c * j->per, chargen_i8_chunk_end(c, j->per, j->V));
}

static void head(chargen_pool *pool, int threads, chargen_i8_head_fn *fn, size_t B, size_t H, size_t V, const float *h,
                 const float *w, const float *bias, float *logits) {
    head_job j;
    size_t chunks;
    j.fn = fn, j.B = B, j.H = H, j.V = V, j.h = h, j.w = w, j.bias = bias, j.logits = logits;
    chunks = chargen_i8_cut(V, 8, chargen_i8_team(pool, threads), &j.per); /* at least 8 rows a chunk */
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
    for (b = c * j->per; b < chargen_i8_chunk_end(c, j->per, j->B); b++)
        chargen_gru_forward_f32(1, H, j->gi + b * 3 * H, j->gh + b * 3 * H, j->b_hh, j->h_prev + b * H,
                                j->scratch + b * 4 * H, j->h_new + b * H);
}

static void gates(chargen_pool *pool, int threads, size_t B, size_t H, const float *gi, const float *gh,
                  const float *b_hh, const float *h_prev, float *scratch, float *h_new) {
    gates_job j;
    size_t chunks;
    j.B = B, j.H = H, j.gi = gi, j.gh = gh, j.b_hh = b_hh, j.h_prev = h_prev, j.scratch = scratch, j.h_new = h_new;
    chunks = chargen_i8_cut(B, 1, B < CHUNKED_ROWS ? 1 : chargen_i8_team(pool, threads), &j.per);
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

static int check(const chargen_i8_gru *m) {
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

int chargen_i8_init(chargen_i8_gru *m) {
    const int status = check(m);
    memset(&m->kernels, 0, sizeof m->kernels);
    if (status != CHARGEN_I8_OK) return status;
    m->kernels.matvec = chargen_i8_matvec_pick();
    m->kernels.packed = chargen_i8_gemm_pick();
    m->kernels.packed_from = m->kernels.packed ? m->kernels.packed->min_batch : 0;
    m->kernels.quantize = chargen_i8_quantize_pick();
    m->kernels.head = head_pick();
    return CHARGEN_I8_OK;
}

int chargen_i8_step(const chargen_i8_gru *m, size_t B, const int64_t *token, const float *h_in, float *h_out,
                    float *logits, void *scratch) {
    const size_t L = m->L, H = m->H, H3 = 3 * H, ldx = ROUND_UP(H);
    const chargen_i8_kernels *kern = &m->kernels;
    chargen_pool *pool = m->pool;
    const int threads = m->threads;
    scratch_t s;
    size_t b, k;
    if (!kern->matvec || !kern->quantize || !kern->head) return CHARGEN_I8_NOT_READY;
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
            quantize_rows(pool, threads, kern->quantize, B, H, h_out + (k - 1) * B * H, s.xq, ldx, s.a_scale, s.zero);
            product(pool, threads, kern, &m->w_ih[k], B, s.xq, ldx, s.a_scale, s.zero, s.gi, H3);
        }
        /* gh: (B, 3H), without its bias: the gates add b_hh */
        quantize_rows(pool, threads, kern->quantize, B, H, h_prev, s.xq, ldx, s.a_scale, s.zero);
        product(pool, threads, kern, &m->w_hh[k], B, s.xq, ldx, s.a_scale, s.zero, s.gh, H3);
        gates(pool, threads, B, H, s.gi, s.gh, m->b_hh + k * H3, h_prev, s.gates, h_new);
    }
    head(pool, threads, kern->head, B, H, m->V, h_out + (L - 1) * B * H, m->head_w, m->head_b, logits);
    return CHARGEN_I8_OK;
}
