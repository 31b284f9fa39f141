/*
 * chargen in WebAssembly: one generation stream of an int8 model on chargen's int8 step
 * (csrc/int8_step.c over int8_matvec.c's wasm-simd128 kernel, built single-threaded:
 * CHARGEN_NO_THREADS) and the C sampler
 * (csrc/sampler.c), for the page and the JavaScript module of chargen.web (web/static/engine.js).
 *
 * The JavaScript side reads the .onnx file (web/static/onnx.js), copies each initializer's bytes
 * into memory from cg_malloc, and hands them over with cg_set_*: this file lays them out as
 * the step wants them (W^T transposed to rows padded to 64 bytes, the row sums, the head
 * transposed) in buffers of its own. Then
 *
 *   cg_step(m, token)              one step from the current state: the logits and the next state
 *   cg_logits(m), cg_state(m)      the current logits (V) and hidden state (L * H) to read
 *
 * and the sampler, apart from the model (the onnxruntime-web engine draws with it too):
 *
 *   s = cg_sampler_new(V)          its RNG, its scratch, and V floats of logits (cg_sampler_logits)
 *   cg_sampler_seed(s, lo, hi)     stream 0 of seed hi * 2^32 + lo (what Generator(seed=S) draws)
 *   cg_sampler_draw(s, logits, t, top_k, top_p)   an id (chargen_sample), or a status < 0
 *
 * Every function returns a status or NULL, never exits; nothing here allocates after cg_ready.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "int8_step.h"
#include "sampler.h"

#define EXPORT(name) __attribute__((export_name(#name))) name
#define MAX_LAYERS 64
#define ALIGN 64
#define ROUND_UP(n) (((n) + ALIGN - 1) / ALIGN * ALIGN)

enum {
    CG_OK = 0,
    CG_NO_MEMORY = -100, /* memory could not grow */
    CG_BAD_ARG = -101,   /* a layer, shape or pointer that does not fit the model */
    CG_NOT_READY = -102  /* a weight was never set (cg_ready), or a step before cg_ready */
};

typedef struct {
    chargen_i8_gru m;
    chargen_i8_matrix w_ih[MAX_LAYERS], w_hh[MAX_LAYERS];
    size_t L, H, V;
    unsigned set; /* bit per part given: table, head (the layers' parts in given_*) */
    unsigned char given_hh[MAX_LAYERS], given_ih[MAX_LAYERS], given_b[MAX_LAYERS];
    float *table, *b_hh, *head_w, *head_b;
    float *h[2], *logits;
    int cur; /* h[cur] is the current state */
    void *scratch;
    int ready;
} cg_model;

enum { SET_TABLE = 1, SET_HEAD = 2 };

void *EXPORT(cg_malloc)(size_t n) { return malloc(n ? n : 1); }
void EXPORT(cg_free)(void *p) { free(p); }

static void *zalloc(size_t n) {
    void *p = aligned_alloc(ALIGN, ROUND_UP(n ? n : 1));
    if (p) memset(p, 0, ROUND_UP(n ? n : 1));
    return p;
}

void EXPORT(cg_delete)(cg_model *c) {
    size_t k;
    if (!c) return;
    for (k = 0; k < c->L; k++) {
        free((void *)c->w_hh[k].w), free((void *)c->w_hh[k].scale), free((void *)c->w_hh[k].wsum);
        free((void *)c->w_ih[k].w), free((void *)c->w_ih[k].scale), free((void *)c->w_ih[k].wsum);
        free((void *)c->w_ih[k].bias);
    }
    free(c->table), free(c->b_hh), free(c->head_w), free(c->head_b);
    free(c->h[0]), free(c->h[1]), free(c->logits), free(c->scratch);
    free(c);
}

/* A model of L layers, H units, V symbols, with no weights yet; NULL where the shape is out of
 * range or memory runs out. */
cg_model *EXPORT(cg_new)(int L, int H, int V) {
    cg_model *c;
    if (L < 1 || L > MAX_LAYERS || H < 1 || V < 1 || V > CHARGEN_MAX_V) return NULL;
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->L = (size_t)L, c->H = (size_t)H, c->V = (size_t)V;
    c->table = zalloc(c->V * 3 * c->H * sizeof(float));
    c->b_hh = zalloc(c->L * 3 * c->H * sizeof(float));
    c->head_w = zalloc(c->V * c->H * sizeof(float));
    c->head_b = zalloc(c->V * sizeof(float));
    c->h[0] = zalloc(c->L * c->H * sizeof(float));
    c->h[1] = zalloc(c->L * c->H * sizeof(float));
    c->logits = zalloc(c->V * sizeof(float));
    if (!c->table || !c->b_hh || !c->head_w || !c->head_b || !c->h[0] || !c->h[1] || !c->logits) {
        cg_delete(c);
        return NULL;
    }
    return c;
}

/* Layer 0's table (V, 3H) float32. */
int EXPORT(cg_set_table)(cg_model *c, const float *table) {
    if (!c || !table) return CG_BAD_ARG;
    memcpy(c->table, table, c->V * 3 * c->H * sizeof(float));
    c->set |= SET_TABLE;
    return CG_OK;
}

/* The head: W_head^T (H, V) and its bias (V), float32. */
int EXPORT(cg_set_head)(cg_model *c, const float *w_t, const float *bias) {
    size_t v, k;
    if (!c || !w_t || !bias) return CG_BAD_ARG;
    for (k = 0; k < c->H; k++)
        for (v = 0; v < c->V; v++) c->head_w[v * c->H + k] = w_t[k * c->V + v];
    memcpy(c->head_b, bias, c->V * sizeof(float));
    c->set |= SET_HEAD;
    return CG_OK;
}

/* Layer k's recurrent bias: its r, z parts (2H; NULL: zeros, folded into the gi biases) and its
 * n part (H). */
int EXPORT(cg_set_b_hh)(cg_model *c, int k, const float *rz, const float *n) {
    float *b;
    if (!c || k < 0 || (size_t)k >= c->L || !n) return CG_BAD_ARG;
    b = c->b_hh + (size_t)k * 3 * c->H;
    if (rz) memcpy(b, rz, 2 * c->H * sizeof(float));
    else memset(b, 0, 2 * c->H * sizeof(float));
    memcpy(b + 2 * c->H, n, c->H * sizeof(float));
    c->given_b[k] = 1;
    return CG_OK;
}

/* Layer k's int8 matrix: recurrent (ih = 0) or, for k >= 1, the input one (ih = 1): W^T (H, 3H)
 * int8 as the file stores it, its scales (nscale = 3H, or 1 for one scale for every output), and
 * for the input matrix its bias (3H; NULL: zeros). */
int EXPORT(cg_set_matrix)(cg_model *c, int k, int ih, const int8_t *w_t, const float *scale, int nscale,
                          const float *bias) {
    const size_t H = c ? c->H : 0, N = 3 * H, ldw = ROUND_UP(H);
    chargen_i8_matrix *m;
    int8_t *w;
    float *s, *b = NULL;
    int32_t *wsum;
    size_t n, j;
    if (!c || k < 0 || (size_t)k >= c->L || (ih && k == 0) || !w_t || !scale || (nscale != 1 && (size_t)nscale != N))
        return CG_BAD_ARG;
    m = ih ? &c->w_ih[k] : &c->w_hh[k];
    if (m->w) return CG_BAD_ARG; /* given twice */
    w = zalloc(N * ldw);
    s = zalloc(N * sizeof(float));
    wsum = zalloc(N * sizeof(int32_t));
    if (ih) b = zalloc(N * sizeof(float));
    if (!w || !s || !wsum || (ih && !b)) {
        free(w), free(s), free(wsum), free(b);
        return CG_NO_MEMORY;
    }
    for (j = 0; j < H; j++)
        for (n = 0; n < N; n++) w[n * ldw + j] = w_t[j * N + n];
    for (n = 0; n < N; n++) s[n] = scale[nscale == 1 ? 0 : n];
    if (b && bias) memcpy(b, bias, N * sizeof(float));
    chargen_i8_row_sums(N, H, ldw, w, wsum);
    m->N = N, m->K = H, m->ldw = ldw, m->w = w, m->scale = s, m->wsum = wsum, m->bias = b;
    m->packed = NULL, m->narrow = 0;
    if (ih) c->given_ih[k] = 1;
    else c->given_hh[k] = 1;
    return CG_OK;
}

/* Every weight given: the step's checks pass and its scratch is allocated. */
int EXPORT(cg_ready)(cg_model *c) {
    size_t k;
    int status;
    if (!c) return CG_BAD_ARG;
    if ((c->set & (SET_TABLE | SET_HEAD)) != (SET_TABLE | SET_HEAD)) return CG_NOT_READY;
    for (k = 0; k < c->L; k++)
        if (!c->given_hh[k] || !c->given_b[k] || (k > 0 && !c->given_ih[k])) return CG_NOT_READY;
    c->m.L = c->L, c->m.H = c->H, c->m.V = c->V;
    c->m.table = c->table, c->m.w_ih = c->w_ih, c->m.w_hh = c->w_hh, c->m.b_hh = c->b_hh;
    c->m.head_w = c->head_w, c->m.head_b = c->head_b, c->m.pool = NULL, c->m.threads = 1;
    status = chargen_i8_init(&c->m);
    if (status != CHARGEN_I8_OK) return status;
    if (!c->scratch) c->scratch = zalloc(chargen_i8_scratch_bytes(&c->m, 1));
    if (!c->scratch) return CG_NO_MEMORY;
    c->ready = 1;
    return CG_OK;
}

/* Back to the zero state (the logits too); the RNG goes on. */
void EXPORT(cg_reset)(cg_model *c) {
    if (!c) return;
    memset(c->h[c->cur], 0, c->L * c->H * sizeof(float));
    memset(c->logits, 0, c->V * sizeof(float));
}

/* Sets the current state from L * H floats (as cg_state lays them). */
int EXPORT(cg_set_state)(cg_model *c, const float *h) {
    if (!c || !h) return CG_BAD_ARG;
    memcpy(c->h[c->cur], h, c->L * c->H * sizeof(float));
    return CG_OK;
}

/* One step with `token` from the current state: a CHARGEN_I8_* status (0: done), or CG_*. */
int EXPORT(cg_step)(cg_model *c, int token) {
    int64_t t = token;
    int status;
    if (!c || !c->ready) return CG_NOT_READY;
    status = chargen_i8_step(&c->m, 1, &t, c->h[c->cur], c->h[1 - c->cur], c->logits, c->scratch);
    if (status == CHARGEN_I8_OK) c->cur = 1 - c->cur;
    return status;
}

float *EXPORT(cg_logits)(cg_model *c) { return c ? c->logits : NULL; }
float *EXPORT(cg_state)(cg_model *c) { return c ? c->h[c->cur] : NULL; }

/* ------------------------------------------------------------------ the sampler */
typedef struct {
    chargen_rng rng;
    int V;
    float *logits;
    void *scratch;
} cg_sampler;

void EXPORT(cg_sampler_delete)(cg_sampler *s) {
    if (!s) return;
    free(s->logits), free(s->scratch), free(s);
}

/* A sampler for rows of up to V logits, seeded with 0; NULL where V is out of range or memory
 * runs out. */
cg_sampler *EXPORT(cg_sampler_new)(int V) {
    cg_sampler *s;
    if (V < 1 || V > CHARGEN_MAX_V) return NULL;
    s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->V = V;
    s->logits = zalloc((size_t)V * sizeof(float));
    s->scratch = zalloc(chargen_scratch_bytes(V));
    if (!s->logits || !s->scratch) {
        cg_sampler_delete(s);
        return NULL;
    }
    chargen_rng_seed(&s->rng, 0, 0);
    return s;
}

/* V floats where a caller may put logits to draw from (another engine's). */
float *EXPORT(cg_sampler_logits)(cg_sampler *s) { return s ? s->logits : NULL; }

/* Stream 0 of seed hi * 2^32 + lo: what the runtime's Generator(seed=S) draws with at batch 1. */
void EXPORT(cg_sampler_seed)(cg_sampler *s, uint32_t lo, uint32_t hi) {
    if (s) chargen_rng_seed(&s->rng, (uint64_t)hi << 32 | lo, 0);
}

/* An id from V logits (temperature 0: the argmax, the RNG untouched), or a negative
 * CHARGEN_ERR_* status (chargen_status_str says it in words). */
int EXPORT(cg_sampler_draw)(cg_sampler *s, const float *logits, int V, double temperature, int top_k, double top_p) {
    if (!s || V < 1 || V > s->V) return CG_BAD_ARG;
    return chargen_sample(logits, V, temperature, top_k, top_p, &s->rng, s->scratch);
}

const char *EXPORT(cg_status_str)(int status) { return chargen_status_str(status); }

/* The kernel that runs the products: "wasm-simd128" in this build (csrc/int8_matvec.c). */
const char *EXPORT(cg_kernel)(void) { return chargen_i8_matvec_pick()->name; }
