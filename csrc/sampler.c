/* chargen sampler: see sampler.h for the contract.  Pure C99. */

/* Keep a*b+c as two rounded operations (no FMA contraction) whatever the
 * flags: GCC contracts by default in GNU modes, clang in all modes.  First,
 * so that it covers the inline function of the header too. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "sampler.h"

#include <float.h>
#include <math.h> /* INFINITY only: no libm function is called */
#include <string.h>

/* x86: the two vector loops also get an AVX2 build, used when the CPU has it
 * (csrc/simd.h).  Same operations lane by lane (and never FMA), so the
 * results are the same bits as the baseline SSE2 / scalar code. */
#include "simd.h"
#include "exp2f_poly.h"

/* ------------------------------------------------------------------ RNG */

#define GOLDEN_GAMMA UINT64_C(0x9e3779b97f4a7c15)

uint64_t chargen_splitmix64(uint64_t *x) {
    uint64_t z = (*x += GOLDEN_GAMMA);
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void chargen_rng_seed(chargen_rng *rng, uint64_t seed, uint64_t stream) {
    /* splitmix64 is a counter: skip 4 * stream outputs in O(1). */
    uint64_t x = seed + stream * 4u * GOLDEN_GAMMA;
    int j;
    for (j = 0; j < 4; j++) rng->s[j] = chargen_splitmix64(&x);
    /* Four consecutive splitmix64 outputs are distinct (the mix is a
     * bijection), so the state is never all zero. */
}

void chargen_rng_seed_streams(chargen_rng *rngs, size_t count, uint64_t seed,
                              uint64_t first_stream) {
    size_t i;
    if (rngs == NULL) return;
    for (i = 0; i < count; i++)
        chargen_rng_seed(&rngs[i], seed, first_stream + (uint64_t)i);
}

static inline uint64_t rotl64(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t chargen_rng_next(chargen_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t result = rotl64(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

void chargen_rng_prev(chargen_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t s3x = rotl64(s[3], 19); /* s3 ^ s1 before the rotation */
    const uint64_t s0 = s[0] ^ s3x;
    const uint64_t w = s[1] ^ s[2];        /* s1 ^ (s1 << 17) */
    const uint64_t s1 = w ^ (w << 17) ^ (w << 34) ^ (w << 51);
    const uint64_t s2 = s[1] ^ s1 ^ s0;
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3x ^ s1;
}

double chargen_rng_uniform(chargen_rng *rng) {
    return chargen_unit(chargen_rng_next(rng));
}

/* -------------------------------------------------------------- helpers */

#define BLOCK 8

size_t chargen_scratch_bytes(int V) {
    if (V <= 0 || V > CHARGEN_MAX_V) return 0;
    return CHARGEN_SCRATCH_BYTES(V);
}

typedef struct {
    double *cb;   /* cumulative block sums, (V + 7) / 8 */
    float *p;     /* weight of id i, V */
    float *q;     /* weights in draw order; a selection buffer before, V */
    float *w;     /* a selection buffer, V */
    int32_t *idx; /* kept ids in draw (increasing) order, V */
} layout_t;

static layout_t layout(void *scratch, int V) {
    layout_t L;
    size_t nb = ((size_t)V + BLOCK - 1) / BLOCK;
    L.cb = (double *)scratch;
    L.p = (float *)(L.cb + nb);
    L.q = L.p + V;
    L.w = L.q + V;
    L.idx = (int32_t *)(L.w + V);
    return L;
}

static int check_params(double temperature, double top_p) {
    if (!(temperature >= 0.0) || temperature > DBL_MAX)
        return CHARGEN_ERR_TEMPERATURE;
    if (!(top_p > 0.0)) return CHARGEN_ERR_TOP_P;
    return CHARGEN_OK;
}

static int check_scratch(const void *scratch) {
    if (scratch == NULL) return CHARGEN_ERR_NULL;
    if (((uintptr_t)scratch & 7u) != 0) return CHARGEN_ERR_ALIGN;
    return CHARGEN_OK;
}

/* The row max, with NaN / +inf / all -inf checks.  Done on the bits, as
 * unsigned integers that order like the floats (sign-magnitude flipped), so
 * that it vectorises (no conditional FP operation). */
static INLINE uint32_t max_key_body(const float *x, int V, uint32_t *nan) {
    uint32_t km = 0, has_nan = 0, b;
    int i;
    for (i = 0; i < V; i++) {
        uint32_t key;
        memcpy(&b, &x[i], sizeof b);
        key = b ^ ((0u - (b >> 31)) | 0x80000000u);
        km = key > km ? key : km;
        has_nan |= (uint32_t)((b & 0x7fffffffu) > 0x7f800000u);
    }
    *nan = has_nan;
    return km;
}

static uint32_t max_key_generic(const float *x, int V, uint32_t *nan) {
    return max_key_body(x, V, nan);
}

#if CHARGEN_AVX2
__attribute__((target("avx2"))) static uint32_t max_key_avx2(const float *x,
                                                             int V,
                                                             uint32_t *nan) {
    return max_key_body(x, V, nan);
}
#endif

static int row_max(const float *x, int V, float *m_out) {
    uint32_t km, has_nan, b;
    float m;
#if CHARGEN_AVX2
    if (__builtin_cpu_supports("avx2"))
        km = max_key_avx2(x, V, &has_nan);
    else
#endif
        km = max_key_generic(x, V, &has_nan);
    if (has_nan) return CHARGEN_ERR_NAN;
    b = (km & 0x80000000u) ? (km & 0x7fffffffu) : ~km;
    memcpy(&m, &b, sizeof m);
    if (m == INFINITY) return CHARGEN_ERR_POSINF;
    if (m == -INFINITY) return CHARGEN_ERR_ALL_MASKED;
    *m_out = m;
    return CHARGEN_OK;
}

static int first_equal(const float *x, int V, float m) {
    int i;
    for (i = 0; i < V; i++)
        if (x[i] == m) return i;
    return V - 1; /* unreachable: m is an element of x */
}

/* p[i] = 2^((x[i] - m) * c) with c = log2(e) / temperature: the weight,
 * exactly 0 below 2^-124 (and for -inf), exactly 1 at x[i] == m, by
 * chargen_exp2f_poly (csrc/exp2f_poly.h).  Only + - * and int conversions
 * (bit-identical everywhere), branch-free so that it vectorises under the
 * default -ftrapping-math. */
static INLINE void exp_body(const float *restrict x, int V, float m,
                            float c, float *restrict p) {
    const float lo = -124.0f;
    uint32_t lo_bits;
    int i;
    memcpy(&lo_bits, &lo, sizeof lo_bits);
    for (i = 0; i < V; i++) {
        const float t = (x[i] - m) * c; /* <= 0, or -inf */
        /* keep = all ones if t >= -124; selects done on the bits */
        const uint32_t keep = 0u - (uint32_t)(t >= lo);
        float tc, v;
        uint32_t bits;
        memcpy(&bits, &t, sizeof bits);
        bits = (bits & keep) | (lo_bits & ~keep); /* max(t, -124) */
        memcpy(&tc, &bits, sizeof tc);
        v = chargen_exp2f_poly(tc); /* k in [-124, 0] */
        memcpy(&bits, &v, sizeof bits);
        bits &= keep;
        memcpy(&p[i], &bits, sizeof bits);
    }
}

static void exp_generic(const float *restrict x, int V, float m, float c,
                        float *restrict p) {
    exp_body(x, V, m, c, p);
}

#if CHARGEN_AVX2
/* The same operations, eight lanes at a time: bit-identical results. */
__attribute__((target("avx2"))) static void exp_avx2(const float *restrict x,
                                                     int V, float m, float c,
                                                     float *restrict p) {
    exp_body(x, V, m, c, p);
}
#endif

static void exp_pass(const float *restrict x, int V, float m, float c,
                     float *restrict p) {
#if CHARGEN_AVX2
    if (__builtin_cpu_supports("avx2")) {
        exp_avx2(x, V, m, c, p);
        return;
    }
#endif
    exp_generic(x, V, m, c, p);
}

/* Cumulative sums of blocks of 8 weights, in double, in a fixed order: each
 * block is summed on its own (independent chains), then the blocks are
 * chained.  Returns the total. */
static double block_sums(const float *q, int n, double *cb) {
    double c = 0.0;
    int lo, b = 0;
    for (lo = 0; lo + BLOCK <= n; lo += BLOCK, b++) {
        const float *v = q + lo;
        const double s = (((double)v[0] + v[1]) + ((double)v[2] + v[3])) +
                         (((double)v[4] + v[5]) + ((double)v[6] + v[7]));
        c += s;
        cb[b] = c;
    }
    if (lo < n) {
        double s = 0.0;
        for (; lo < n; lo++) s += q[lo];
        c += s;
        cb[b] = c;
    }
    return c;
}

static int last_positive(const float *q, int lo, int hi) {
    int i;
    for (i = hi - 1; i >= lo; i--)
        if (q[i] > 0.0f) return i;
    return -1;
}

/* Inside block b (r >= cb[b - 1], r < cb[b]): the first j with r < the
 * running sum.  Rounding fallback: the last positive weight of the block. */
static int in_block(const float *q, int n, const double *cb, int b, double r) {
    const int lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
    double c = b > 0 ? cb[b - 1] : 0.0;
    int j;
    for (j = lo; j < hi; j++) {
        c += q[j];
        if (r < c) return j;
    }
    j = last_positive(q, lo, hi);
    return j >= 0 ? j : last_positive(q, 0, n);
}

typedef struct {
    const float *q;     /* weights in draw order */
    const int32_t *ids; /* ids in draw order; NULL: identity */
    const double *cb;   /* cumulative block sums */
    int n, nb;
    double total;
} dist_t;

/* The id at uniform u (linear block scan). */
static int pick_linear(const dist_t *d, double u) {
    const double r = u * d->total;
    int b = 0, j;
    /* the first block with r < cb[b] is the number of blocks with
     * cb[b] <= r (cb never decreases): counted without branches */
    for (j = 0; j < d->nb; j++) b += d->cb[j] <= r;
    if (b == d->nb)
        j = last_positive(d->q, 0, d->n); /* u * total rounded up to total */
    else
        j = in_block(d->q, d->n, d->cb, b, r);
    return d->ids ? d->ids[j] : j;
}

/* The same id as pick_linear, by binary search over the blocks. */
static int pick_bisect(const dist_t *d, double u) {
    const double r = u * d->total;
    int lo = 0, hi = d->nb, j; /* first b with r < cb[b], in [lo, hi] */
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (r < d->cb[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo == d->nb)
        j = last_positive(d->q, 0, d->n);
    else
        j = in_block(d->q, d->n, d->cb, lo, r);
    return d->ids ? d->ids[j] : j;
}

/* ------------------------------------------------------------- cuts
 *
 * Both cuts rank ids by weight, heaviest first, equal weights by lower id
 * (weights are monotone in the logits, so this is the logit order; it only
 * differs for logits so close that their weights are the same float).  The
 * selections work on weight values, in contiguous float buffers, with a
 * branch-free three-way partition (random data would mispredict every
 * branch); then one pass in id order builds the kept ids, ties taken by
 * lowest id.  So the kept ids are always listed in increasing id order.
 */

#define SMALL 16

/* a[0..n) in decreasing order; insertion sort for small n, heapsort (the
 * O(n log n) fallback of a degenerate quickselect) otherwise. */
static void sift_down_min(float *h, int n, int i) {
    const float v = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (!(h[c] < v)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

static void sort_desc(float *a, int n) {
    int i, j;
    if (n <= SMALL) {
        for (i = 1; i < n; i++) {
            const float v = a[i];
            for (j = i; j > 0 && a[j - 1] < v; j--) a[j] = a[j - 1];
            a[j] = v;
        }
        return;
    }
    for (i = n / 2 - 1; i >= 0; i--) sift_down_min(a, n, i);
    for (i = n - 1; i > 0; i--) {
        const float t = a[0];
        a[0] = a[i];
        a[i] = t;
        sift_down_min(a, i, 0);
    }
}

static float median3f(float a, float b, float c) {
    const float lo = a < b ? a : b, hi = a < b ? b : a;
    return c < lo ? lo : (c > hi ? hi : c);
}

/* Three-way partition of a[0..n) into b around pv: b[0..*gt) > pv,
 * b[*lt_start..n) < pv; the *eq = n - *gt - (n - *lt_start) others equal pv
 * (their slots hold garbage).  Branch-free: every value is written to both
 * ends, and only the right end advances. */
static void partition3(const float *restrict a, float *restrict b, int n,
                       float pv, int *gt, int *lt_start) {
    int lo = 0, hi = n - 1, j;
    for (j = 0; j < n; j++) {
        const float t = a[j];
        b[lo] = t;
        b[hi] = t;
        lo += t > pv;
        hi -= t < pv;
    }
    *gt = lo;
    *lt_start = hi + 1;
}

/* Sum in a fixed order with four independent chains. */
static double sum4(const float *a, int n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        s0 += a[j];
        s1 += a[j + 1];
        s2 += a[j + 2];
        s3 += a[j + 3];
    }
    for (; j < n; j++) s0 += a[j];
    return (s0 + s1) + (s2 + s3);
}

static int round_limit(int n) {
    int r = 8;
    for (; n > 1; n >>= 1) r += 2;
    return r;
}

/* The k-th largest of src[0..n) (1 <= k <= n), which is left untouched.
 * b and c: work buffers of n floats.  Quickselect, O(n) expected: each round
 * partitions the values still in play from one buffer into the other. */
static float kth_largest(const float *src, float *b, float *c, int n, int k) {
    const float *a = src;
    float *dst = b, *spare = c, *t;
    int rounds = round_limit(n);
    while (n > SMALL && --rounds >= 0) {
        float pv;
        int g, l;
        if (a == src && n > 256) {
            /* First pivot from a sorted sample of 64, a little below where
             * the k-th largest should fall: then the next round works on
             * little more than k values instead of about n / 2. */
            float smp[64];
            int j, r = (int)(((int64_t)k * 64) / n) + 3;
            for (j = 0; j < 64; j++) smp[j] = a[(int)(((int64_t)j * n) / 64)];
            sort_desc(smp, 64);
            pv = smp[r < 63 ? r : 63];
        } else {
            pv = median3f(a[0], a[n / 2], a[n - 1]);
        }
        partition3(a, dst, n, pv, &g, &l);
        if (k <= g) {
            n = g;
            a = dst;
        } else if (k <= l) {
            return pv;
        } else {
            k -= l;
            n -= l;
            a = dst + l;
        }
        t = dst;
        dst = spare;
        spare = t;
    }
    memcpy(dst, a, sizeof(float) * (size_t)n); /* a may be src: sort a copy */
    sort_desc(dst, n);
    return dst[k - 1];
}

/* The weight w of the last id of the nucleus: going down the values of
 * a[0..n) in decreasing order, the first one at which the running sum reaches
 * need (> 0).  a, b as for kth_largest.  Weighted quickselect. */
static float mass_threshold(float *a, float *b, int n, double need) {
    int rounds = round_limit(n), j;
    while (n > SMALL && --rounds >= 0) {
        const float pv = median3f(a[0], a[n / 2], a[n - 1]);
        float *t = a;
        int g, l;
        double mass, with_eq;
        partition3(a, b, n, pv, &g, &l);
        mass = sum4(b, g);
        if (mass >= need) {
            n = g;
            a = b;
        } else {
            with_eq = mass + (double)(l - g) * (double)pv;
            if (with_eq >= need || l == n) return pv;
            need -= with_eq;
            n -= l;
            a = b + l;
        }
        b = t;
    }
    sort_desc(a, n);
    for (j = 0; j < n - 1; j++) {
        need -= (double)a[j];
        if (need <= 0.0) return a[j];
    }
    return a[n - 1];
}

/* Top-k: the k (0 < k < V) heaviest ids, in increasing id order, into ids.
 * b, c: work buffers of V floats. */
static void top_k_ids(const float *p, int V, int k, float *b, float *c,
                      int32_t *ids) {
    float tau;
    int i, n_gt = 0, n_ge = 0, eq_seen = 0, n = 0;
    tau = kth_largest(p, b, c, V, k);
    for (i = 0; i < V; i++) {
        n_gt += p[i] > tau;
        n_ge += p[i] >= tau;
    }
    if (n_ge == k) { /* no tie to break at tau: the usual case */
        for (i = 0; i < V; i++) {
            ids[n] = i;
            n += p[i] >= tau;
        }
        return;
    }
    for (i = 0; i < V; i++) {
        const int eq = p[i] == tau;
        ids[n] = i;
        n += (p[i] > tau) | (eq & (eq_seen < k - n_gt));
        eq_seen += eq;
    }
}

/* Nucleus over the kept ids ids[0..n) (increasing) of total weight S: the
 * smallest set of heaviest ids whose weight reaches top_p * S, compacted in
 * place (still increasing); returns its size.  Only candidates can be in
 * it: every member but the first (weight 1) has weight >= (1 - top_p) * S /
 * (n - 1), else the tail from it on, at most n - 1 ids each lighter, would
 * weigh less than (1 - top_p) * S and the prefix before it would already
 * reach top_p.  (The bound is lowered by a hair against rounding; any
 * superset closed upwards gives the same answer.)  b, c: V-float buffers. */
static int nucleus_ids(const float *p, int32_t *ids, int n, double S,
                       double top_p, float *b, float *c) {
    const double need = top_p * S;
    double thr = n > 1 ? (1.0 - top_p) * S / (double)(n - 1) * (1.0 - 1e-6) : 0.0;
    float tau;
    int j, nc = 0, m = 0, n_eq = 0, n_take = 1, eq_seen = 0;
    if (thr > 1.0) thr = 1.0; /* the heaviest weight is exactly 1 */
    for (j = 0; j < n; j++) {
        const float w = p[ids[j]];
        b[nc] = w;
        nc += (double)w >= thr;
    }
    tau = mass_threshold(b, c, nc, need);
    /* Every id heavier than tau is in, and so is the first id weighing tau;
     * more ties at tau (rare) are taken, lowest id first, until the mass
     * reaches need. */
    for (j = 0; j < n; j++) n_eq += p[ids[j]] == tau;
    if (n_eq > 1) {
        double cum = 0.0;
        for (j = 0; j < n; j++) {
            const float w = p[ids[j]];
            cum += (double)w * (double)(w > tau);
        }
        for (n_take = 0; n_take < n_eq && (n_take == 0 || cum < need); n_take++)
            cum += (double)tau;
    }
    if (n_take == n_eq) { /* every tie is in: the usual case */
        for (j = 0; j < n; j++) {
            const int32_t i = ids[j];
            ids[m] = i;
            m += p[i] >= tau;
        }
        return m;
    }
    for (j = 0; j < n; j++) {
        const int32_t i = ids[j];
        const float w = p[i];
        const int eq = w == tau;
        ids[m] = i;
        m += (w > tau) | (eq & (eq_seen < n_take));
        eq_seen += eq;
    }
    return m;
}

/* Everything but the draw: validate the row, weigh it, apply the cuts. */
static int prepare(const float *x, int V, double temperature, int top_k,
                   double top_p, void *scratch, dist_t *d) {
    const layout_t L = layout(scratch, V);
    const int k = (top_k > 0 && top_k < V) ? top_k : V;
    const int cut_p = top_p < 1.0;
    /* log2(e) / temperature, as a float (huge for a tiny temperature) */
    double c = 1.4426950408889634 / temperature;
    float m;
    int st = row_max(x, V, &m);
    if (st != CHARGEN_OK) return st;
    if (c > FLT_MAX) c = FLT_MAX;
    exp_pass(x, V, m, (float)c, L.p);

    if (k == V && !cut_p) {
        d->q = L.p;
        d->ids = NULL;
        d->n = V;
    } else {
        int j, n = k;
        if (k < V) {
            top_k_ids(L.p, V, k, L.q, L.w, L.idx);
        } else {
            for (j = 0; j < V; j++) L.idx[j] = j;
        }
        if (cut_p) {
            double S;
            if (k < V) {
                for (j = 0; j < k; j++) L.q[j] = L.p[L.idx[j]];
                S = block_sums(L.q, k, L.cb); /* fixed order: deterministic */
            } else {
                S = block_sums(L.p, V, L.cb);
            }
            n = nucleus_ids(L.p, L.idx, n, S, top_p, L.q, L.w);
        }
        for (j = 0; j < n; j++) L.q[j] = L.p[L.idx[j]];
        d->q = L.q;
        d->ids = L.idx;
        d->n = n;
    }
    d->cb = L.cb;
    d->nb = (d->n + BLOCK - 1) / BLOCK;
    d->total = block_sums(d->q, d->n, L.cb);
    return CHARGEN_OK;
}

/* Greedy: the first id of the row max (validates the row). */
static int greedy(const float *x, int V) {
    float m;
    const int st = row_max(x, V, &m);
    return st != CHARGEN_OK ? st : first_equal(x, V, m);
}

static int check_all(const float *logits, int V, double temperature,
                     double top_p, const void *rng, const void *scratch) {
    int st;
    if (logits == NULL || rng == NULL) return CHARGEN_ERR_NULL;
    st = check_scratch(scratch);
    if (st != CHARGEN_OK) return st;
    if (V <= 0 || V > CHARGEN_MAX_V) return CHARGEN_ERR_SIZE;
    return check_params(temperature, top_p);
}

/* ---------------------------------------------------------------- API */

/* one draw from a row whose arguments were checked: the id, or a status (then no randomness
 * was used) */
static int draw(const float *x, int V, double temperature, int top_k, double top_p, chargen_rng *rng,
                void *scratch) {
    dist_t d;
    int st;
    if (temperature == 0.0) return greedy(x, V);
    st = prepare(x, V, temperature, top_k, top_p, scratch, &d);
    if (st != CHARGEN_OK) return st;
    return pick_linear(&d, chargen_rng_uniform(rng));
}

int chargen_sample(const float *logits, int V, double temperature, int top_k,
                   double top_p, chargen_rng *rng, void *scratch) {
    int st = check_all(logits, V, temperature, top_p, rng, scratch);
    if (st != CHARGEN_OK) return st;
    return draw(logits, V, temperature, top_k, top_p, rng, scratch);
}

int chargen_sample_n(const float *logits, int V, double temperature, int top_k,
                     double top_p, chargen_rng *rng, void *scratch, int64_t n,
                     int64_t *out) {
    dist_t d;
    int64_t j;
    int st = check_all(logits, V, temperature, top_p, rng, scratch);
    if (st != CHARGEN_OK) return st;
    if (out == NULL) return CHARGEN_ERR_NULL;
    if (n < 0) return CHARGEN_ERR_SIZE;
    if (temperature == 0.0) {
        const int id = greedy(logits, V);
        if (id < 0) return id;
        for (j = 0; j < n; j++) out[j] = id;
        return CHARGEN_OK;
    }
    st = prepare(logits, V, temperature, top_k, top_p, scratch, &d);
    if (st != CHARGEN_OK) return st;
    for (j = 0; j < n; j++) out[j] = pick_bisect(&d, chargen_rng_uniform(rng));
    return CHARGEN_OK;
}

int chargen_sample_batch(const float *logits, int64_t B, int V, int64_t ld,
                         double temperature, int top_k, double top_p,
                         chargen_rng *rngs, void *scratch, int64_t *out,
                         int64_t *err_row) {
    int64_t b;
    int st = check_all(logits, V, temperature, top_p, rngs, scratch);
    if (err_row) *err_row = -1;
    if (st != CHARGEN_OK) return st;
    if (out == NULL) return CHARGEN_ERR_NULL;
    if (B < 0 || ld < V) return CHARGEN_ERR_SIZE;
    for (b = 0; b < B; b++) {
        const float *x = logits + b * ld;
        int id;
        if (temperature == 0.0) {
            id = greedy(x, V);
        } else {
            dist_t d;
            id = prepare(x, V, temperature, top_k, top_p, scratch, &d);
            if (id == CHARGEN_OK) id = pick_linear(&d, chargen_rng_uniform(&rngs[b]));
        }
        if (id < 0) {
            int64_t r;
            if (temperature != 0.0)
                for (r = 0; r < b; r++) chargen_rng_prev(&rngs[r]);
            if (err_row) *err_row = b;
            return id;
        }
        out[b] = id;
    }
    return CHARGEN_OK;
}

int chargen_sample_rows(const float *logits, int64_t B, int V, int64_t ld,
                        const double *temperature, const int32_t *top_k,
                        const double *top_p, const uint8_t *active,
                        chargen_rng *rngs, void *scratch, int64_t *out,
                        int64_t *err_row) {
    int64_t b;
    int st;
    if (err_row) *err_row = -1;
    if (logits == NULL || rngs == NULL || out == NULL || temperature == NULL || top_k == NULL || top_p == NULL)
        return CHARGEN_ERR_NULL;
    st = check_scratch(scratch);
    if (st != CHARGEN_OK) return st;
    if (V <= 0 || V > CHARGEN_MAX_V || B < 0 || ld < V) return CHARGEN_ERR_SIZE;
    for (b = 0; b < B; b++) {
        int id;
        if (active && !active[b]) continue;
        id = check_params(temperature[b], top_p[b]);
        if (id == CHARGEN_OK) id = draw(logits + b * ld, V, temperature[b], top_k[b], top_p[b], &rngs[b], scratch);
        if (id < 0) {
            int64_t r;
            for (r = 0; r < b; r++)
                if ((!active || active[r]) && temperature[r] != 0.0) chargen_rng_prev(&rngs[r]);
            if (err_row) *err_row = b;
            return id;
        }
        out[b] = id;
    }
    return CHARGEN_OK;
}

int chargen_distribution(const float *logits, int V, double temperature,
                         int top_k, double top_p, void *scratch,
                         double *probs) {
    dist_t d;
    int j, st;
    if (probs == NULL) return CHARGEN_ERR_NULL;
    /* no RNG is used: pass a dummy non-NULL pointer to the shared checks */
    st = check_all(logits, V, temperature, top_p, logits, scratch);
    if (st != CHARGEN_OK) return st;
    if (temperature == 0.0) {
        const int id = greedy(logits, V);
        if (id < 0) return id;
        for (j = 0; j < V; j++) probs[j] = 0.0;
        probs[id] = 1.0;
        return CHARGEN_OK;
    }
    st = prepare(logits, V, temperature, top_k, top_p, scratch, &d);
    if (st != CHARGEN_OK) return st;
    for (j = 0; j < V; j++) probs[j] = 0.0;
    for (j = 0; j < d.n; j++)
        probs[d.ids ? d.ids[j] : j] = (double)d.q[j] / d.total;
    return CHARGEN_OK;
}

const char *chargen_status_str(int status) {
    switch (status) {
    case CHARGEN_OK: return "ok";
    case CHARGEN_ERR_NULL: return "a required pointer is NULL";
    case CHARGEN_ERR_SIZE: return "size out of range (V <= 0, V too large, negative count, or row stride < V)";
    case CHARGEN_ERR_TEMPERATURE: return "temperature must be finite and >= 0";
    case CHARGEN_ERR_TOP_P: return "top_p must be > 0";
    case CHARGEN_ERR_NAN: return "logits contain NaN";
    case CHARGEN_ERR_POSINF: return "logits contain +inf";
    case CHARGEN_ERR_ALL_MASKED: return "every logit is -inf: nothing can be sampled";
    case CHARGEN_ERR_ALIGN: return "scratch must be 8-byte aligned";
    default: return status >= 0 ? "ok" : "unknown status";
    }
}
