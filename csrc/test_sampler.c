/* Tests of the chargen C sampler.  Builds and runs alone:
 *
 *   cc -std=c99 -O2 -Wall -Wextra -Werror csrc/sampler.c csrc/test_sampler.c -lm
 *   ./a.out
 *
 * Prints one line per group, a "golden" line of ids that the Python tests
 * compare with the Cython build, and a summary; exits 1 on any failure.
 */
#include "sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_checks = 0, n_failed = 0;

#define CHECK(cond)                                                        \
    do {                                                                   \
        n_checks++;                                                        \
        if (!(cond)) {                                                     \
            n_failed++;                                                    \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                  \
    } while (0)

#define CHECK_EQ(a, b)                                                     \
    do {                                                                   \
        long long a_ = (long long)(a), b_ = (long long)(b);                \
        n_checks++;                                                        \
        if (a_ != b_) {                                                    \
            n_failed++;                                                    \
            printf("FAIL %s:%d: %s == %s (%lld != %lld)\n", __FILE__,      \
                   __LINE__, #a, #b, a_, b_);                              \
        }                                                                  \
    } while (0)

/* A scratch big enough for every test (V <= 100000). */
#define MAX_V 100000
static double scratch_store[CHARGEN_SCRATCH_BYTES(MAX_V) / sizeof(double) + 1];
static void *const scratch = scratch_store;

static int same_rng(const chargen_rng *a, const chargen_rng *b) {
    return memcmp(a->s, b->s, sizeof a->s) == 0;
}

/* Platform-independent test logits: one correctly rounded division each
 * (nothing a compiler could contract into an FMA).  97 distinct values, so
 * V > 97 has ties. */
static void make_logits(float *x, int V, int mult, float div) {
    int i;
    for (i = 0; i < V; i++) x[i] = (float)((i * mult) % 97 - 33) / div;
}

/* ------------------------------------------------------------ reference */

static const double *ref_key;
static int ref_cmp(const void *pa, const void *pb) {
    const int a = *(const int *)pa, b = *(const int *)pb;
    if (ref_key[a] > ref_key[b]) return -1;
    if (ref_key[a] < ref_key[b]) return 1;
    return a < b ? -1 : (a > b);
}

/* Independent reference: libm exp in double, full sorts, plain loops. */
static void reference(const float *x, int V, double T, int top_k, double top_p,
                      double *probs) {
    double *w = malloc(sizeof(double) * V), *xs = malloc(sizeof(double) * V);
    int *order = malloc(sizeof(int) * V);
    double m = -INFINITY, S = 0.0, cum = 0.0, total = 0.0;
    int i, n;
    for (i = 0; i < V; i++) m = x[i] > m ? x[i] : m;
    for (i = 0; i < V; i++) {
        xs[i] = x[i];
        /* documented: weights under 2^-124 are exactly 0 */
        const double t = ((double)x[i] - m) / T;
        w[i] = t * 1.4426950408889634 < -124.0 ? 0.0 : exp(t);
        order[i] = i;
    }
    ref_key = xs;
    qsort(order, V, sizeof(int), ref_cmp);
    n = (top_k > 0 && top_k < V) ? top_k : V;
    for (i = 0; i < n; i++) S += w[order[i]];
    if (top_p < 1.0) {
        int m2 = 0;
        while (m2 < n) {
            cum += w[order[m2++]] / S;
            if (cum >= top_p) break;
        }
        n = m2;
    }
    for (i = 0; i < V; i++) probs[i] = 0.0;
    for (i = 0; i < n; i++) total += w[order[i]];
    for (i = 0; i < n; i++) probs[order[i]] = w[order[i]] / total;
    free(w);
    free(xs);
    free(order);
}

/* Chi-square upper tail, Wilson-Hilferty approximation (good for df >= 3
 * at the p-values that matter here). */
static double chi2_sf(double x, double df) {
    const double a = 2.0 / (9.0 * df);
    const double z = (cbrt(x / df) - (1.0 - a)) / sqrt(a);
    return 0.5 * erfc(z / sqrt(2.0));
}

/* Chi-square goodness of fit of n draws against probs; bins whose expected
 * count is under 5 are pooled.  Draws outside the support fail outright. */
static double chi2_pvalue(const int64_t *ids, int64_t n, const double *probs,
                          int V, int *outside) {
    int64_t *cnt = calloc((size_t)V, sizeof(int64_t));
    double stat = 0.0, pool_e = 0.0, pool_o = 0.0;
    int64_t j;
    int i, bins = 0;
    *outside = 0;
    for (j = 0; j < n; j++) {
        if (ids[j] < 0 || ids[j] >= V || probs[ids[j]] == 0.0)
            (*outside)++;
        else
            cnt[ids[j]]++;
    }
    for (i = 0; i < V; i++) {
        const double e = probs[i] * (double)n;
        if (probs[i] == 0.0) continue;
        if (e < 5.0) {
            pool_e += e;
            pool_o += (double)cnt[i];
            continue;
        }
        stat += ((double)cnt[i] - e) * ((double)cnt[i] - e) / e;
        bins++;
    }
    if (pool_e > 0.0) {
        stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        bins++;
    }
    free(cnt);
    if (bins < 2) return 1.0;
    return chi2_sf(stat, bins - 1);
}

/* ---------------------------------------------------------------- tests */

static void test_rng(void) {
    chargen_rng a, b, streams[5];
    uint64_t x = 0, v;
    int i;
    /* splitmix64 reference values (seed 0). */
    CHECK(chargen_splitmix64(&x) == UINT64_C(0xe220a8397b1dcdaf));
    CHECK(chargen_splitmix64(&x) == UINT64_C(0x6e789e6aa1b965f4));
    /* stream 0 == xoshiro256** seeded with the splitmix64 outputs */
    chargen_rng_seed(&a, 0, 0);
    CHECK(a.s[0] == UINT64_C(0xe220a8397b1dcdaf));
    CHECK(a.s[1] == UINT64_C(0x6e789e6aa1b965f4));
    /* streams: O(1) seeding == the splitmix64 sequence continued */
    x = 12345;
    for (i = 0; i < 8; i++) v = chargen_splitmix64(&x);
    chargen_rng_seed(&a, 12345, 1);
    CHECK(a.s[3] == v);
    chargen_rng_seed_streams(streams, 5, 99, 0);
    for (i = 0; i < 5; i++) {
        chargen_rng_seed(&a, 99, (uint64_t)i);
        CHECK(same_rng(&a, &streams[i]));
    }
    chargen_rng_seed_streams(streams, 2, 99, 3);
    chargen_rng_seed(&a, 99, 4);
    CHECK(same_rng(&a, &streams[1]));
    /* different seeds and streams differ */
    chargen_rng_seed(&a, 1, 0);
    chargen_rng_seed(&b, 2, 0);
    CHECK(chargen_rng_next(&a) != chargen_rng_next(&b));
    chargen_rng_seed(&a, 1, 0);
    chargen_rng_seed(&b, 1, 1);
    CHECK(chargen_rng_next(&a) != chargen_rng_next(&b));
    /* prev is the exact inverse of next */
    chargen_rng_seed(&a, 7, 3);
    b = a;
    for (i = 0; i < 1000; i++) chargen_rng_next(&a);
    for (i = 0; i < 1000; i++) chargen_rng_prev(&a);
    CHECK(same_rng(&a, &b));
    /* uniform: exact 53-bit grid, [0, 1), never 1 */
    CHECK(chargen_unit(0) == 0.0);
    CHECK(chargen_unit(UINT64_MAX) < 1.0);
    CHECK(chargen_unit(UINT64_MAX) == 1.0 - ldexp(1.0, -53));
    CHECK(chargen_unit(UINT64_C(1) << 63) == 0.5);
    chargen_rng_seed(&a, 5, 0);
    {
        double mean = 0.0;
        for (i = 0; i < 100000; i++) {
            const double u = chargen_rng_uniform(&a);
            CHECK(u >= 0.0 && u < 1.0);
            mean += u;
        }
        mean /= 100000.0;
        CHECK(fabs(mean - 0.5) < 0.005);
    }
    printf("rng: ok so far (%d failed)\n", n_failed);
}

static void test_errors(void) {
    float x[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    float bad[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    chargen_rng rng, before;
    int64_t out[4], err_row = 99;
    double probs[4];
    chargen_rng_seed(&rng, 1, 0);
    before = rng;
    CHECK_EQ(chargen_sample(NULL, 4, 1.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_NULL);
    CHECK_EQ(chargen_sample(x, 4, 1.0, 0, 1.0, NULL, scratch), CHARGEN_ERR_NULL);
    CHECK_EQ(chargen_sample(x, 4, 1.0, 0, 1.0, &rng, NULL), CHARGEN_ERR_NULL);
    CHECK_EQ(chargen_sample(x, 4, 1.0, 0, 1.0, &rng, (char *)scratch + 4), CHARGEN_ERR_ALIGN);
    CHECK_EQ(chargen_sample(x, 0, 1.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_SIZE);
    CHECK_EQ(chargen_sample(x, -3, 1.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_SIZE);
    CHECK_EQ(chargen_sample(x, 4, -0.5, 0, 1.0, &rng, scratch), CHARGEN_ERR_TEMPERATURE);
    CHECK_EQ(chargen_sample(x, 4, NAN, 0, 1.0, &rng, scratch), CHARGEN_ERR_TEMPERATURE);
    CHECK_EQ(chargen_sample(x, 4, INFINITY, 0, 1.0, &rng, scratch), CHARGEN_ERR_TEMPERATURE);
    CHECK_EQ(chargen_sample(x, 4, 1.0, 0, 0.0, &rng, scratch), CHARGEN_ERR_TOP_P);
    CHECK_EQ(chargen_sample(x, 4, 1.0, 0, -0.1, &rng, scratch), CHARGEN_ERR_TOP_P);
    CHECK_EQ(chargen_sample(x, 4, 1.0, 0, NAN, &rng, scratch), CHARGEN_ERR_TOP_P);
    /* invalid parameters are errors even for greedy */
    CHECK_EQ(chargen_sample(x, 4, 0.0, 0, 0.0, &rng, scratch), CHARGEN_ERR_TOP_P);
    bad[2] = NAN;
    CHECK_EQ(chargen_sample(bad, 4, 1.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_NAN);
    CHECK_EQ(chargen_sample(bad, 4, 0.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_NAN);
    CHECK_EQ(chargen_sample(bad, 4, 1.0, 2, 0.5, &rng, scratch), CHARGEN_ERR_NAN);
    bad[2] = INFINITY;
    CHECK_EQ(chargen_sample(bad, 4, 1.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_POSINF);
    bad[0] = bad[1] = bad[2] = bad[3] = -INFINITY;
    CHECK_EQ(chargen_sample(bad, 4, 1.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_ALL_MASKED);
    CHECK_EQ(chargen_sample(bad, 4, 0.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_ALL_MASKED);
    CHECK_EQ(chargen_sample(bad, 4, 1.0, 1, 0.3, &rng, scratch), CHARGEN_ERR_ALL_MASKED);
    bad[3] = NAN; /* NaN wins over all -inf */
    CHECK_EQ(chargen_sample(bad, 4, 1.0, 0, 1.0, &rng, scratch), CHARGEN_ERR_NAN);
    CHECK(same_rng(&rng, &before)); /* errors consume no randomness */
    CHECK_EQ(chargen_sample_n(x, 4, 1.0, 0, 1.0, &rng, scratch, 4, NULL), CHARGEN_ERR_NULL);
    CHECK_EQ(chargen_sample_n(x, 4, 1.0, 0, 1.0, &rng, scratch, -1, out), CHARGEN_ERR_SIZE);
    CHECK_EQ(chargen_sample_batch(x, 1, 4, 3, 1.0, 0, 1.0, &rng, scratch, out, &err_row), CHARGEN_ERR_SIZE);
    CHECK_EQ(chargen_sample_batch(x, -1, 4, 4, 1.0, 0, 1.0, &rng, scratch, out, &err_row), CHARGEN_ERR_SIZE);
    CHECK_EQ(err_row, -1);
    CHECK_EQ(chargen_sample_batch(x, 1, 4, 4, 1.0, 0, 1.0, &rng, scratch, NULL, NULL), CHARGEN_ERR_NULL);
    CHECK_EQ(chargen_sample_batch(x, 0, 4, 4, 1.0, 0, 1.0, &rng, scratch, out, NULL), CHARGEN_OK);
    CHECK_EQ(chargen_distribution(x, 4, 1.0, 0, 1.0, scratch, NULL), CHARGEN_ERR_NULL);
    CHECK_EQ(chargen_distribution(x, 4, -1.0, 0, 1.0, scratch, probs), CHARGEN_ERR_TEMPERATURE);
    CHECK(same_rng(&rng, &before));
    CHECK(chargen_scratch_bytes(0) == 0 && chargen_scratch_bytes(-1) == 0);
    CHECK(chargen_scratch_bytes(CHARGEN_MAX_V + 1) == 0);
    CHECK(chargen_scratch_bytes(65) == CHARGEN_SCRATCH_BYTES(65));
    CHECK(chargen_scratch_bytes(65) >= 65 * (2 * sizeof(float) + 2 * sizeof(int32_t)));
    CHECK(strcmp(chargen_status_str(CHARGEN_ERR_NAN), "logits contain NaN") == 0);
    CHECK(strcmp(chargen_status_str(-1000), "unknown status") == 0);
    printf("errors: ok so far (%d failed)\n", n_failed);
}

static void test_greedy_and_masking(void) {
    float x[6] = {1.0f, 3.0f, -INFINITY, 3.0f, 2.0f, 3.0f};
    float y[3] = {-INFINITY, -INFINITY, -50.0f};
    float one[1] = {-7.0f};
    chargen_rng rng, before;
    int64_t out[1000];
    int i, masked_seen = 0;
    chargen_rng_seed(&rng, 3, 0);
    before = rng;
    CHECK_EQ(chargen_sample(x, 6, 0.0, 0, 1.0, &rng, scratch), 1); /* ties: lowest */
    CHECK_EQ(chargen_sample(x, 6, 0.0, 3, 0.2, &rng, scratch), 1);
    CHECK_EQ(chargen_sample(y, 3, 0.0, 0, 1.0, &rng, scratch), 2);
    CHECK(same_rng(&rng, &before)); /* greedy does not advance the stream */
    CHECK_EQ(chargen_sample_n(x, 6, 0.0, 0, 1.0, &rng, scratch, 5, out), 0);
    CHECK_EQ(out[4], 1);
    CHECK(same_rng(&rng, &before));
    /* top_k = 1 is the argmax (ties: lowest id) and advances by one draw */
    for (i = 0; i < 200; i++) {
        chargen_rng c = rng;
        CHECK_EQ(chargen_sample(x, 6, 2.5, 1, 1.0, &rng, scratch), 1);
        chargen_rng_next(&c);
        CHECK(same_rng(&rng, &c));
    }
    /* a single finite logit is always drawn; V = 1 works */
    for (i = 0; i < 100; i++) CHECK_EQ(chargen_sample(y, 3, 1.0, 0, 1.0, &rng, scratch), 2);
    CHECK_EQ(chargen_sample(one, 1, 1.0, 0, 0.5, &rng, scratch), 0);
    CHECK_EQ(chargen_sample(one, 1, 1.0, 5, 1.0, &rng, scratch), 0);
    /* -inf never drawn, with or without cuts */
    CHECK_EQ(chargen_sample_n(x, 6, 50.0, 0, 1.0, &rng, scratch, 1000, out), 0);
    for (i = 0; i < 1000; i++) masked_seen += out[i] == 2;
    CHECK_EQ(chargen_sample_n(x, 6, 50.0, 6, 0.999, &rng, scratch, 1000, out), 0);
    for (i = 0; i < 1000; i++) masked_seen += out[i] == 2;
    CHECK_EQ(masked_seen, 0);
    /* a tiny positive temperature is (almost) greedy and never fails */
    for (i = 0; i < 50; i++) {
        const int id = chargen_sample(x, 6, 1e-300, 0, 1.0, &rng, scratch);
        CHECK(id == 1 || id == 3 || id == 5);
    }
    printf("greedy/masking: ok so far (%d failed)\n", n_failed);
}

/* sample_n == n successive samples; batch row b == sample with stream b. */
static void test_paths_agree(void) {
    enum { V = 65, B = 7, N = 300 };
    static float x[B * V];
    const double temps[3] = {1.0, 0.7, 1.6};
    const int ks[3] = {0, 10, 40};
    const double ps[3] = {1.0, 0.9, 0.5};
    chargen_rng s1, s2, rows[B], rows0[B];
    int64_t out[N], bo[B], err_row;
    int t, c, b, j;
    for (b = 0; b < B; b++) make_logits(x + b * V, V, 13 + b, 9.0f);
    x[2 * V + 5] = -INFINITY;
    for (t = 0; t < 3; t++) {
        for (c = 0; c < 3; c++) {
            chargen_rng_seed(&s1, 42, 0);
            s2 = s1;
            CHECK_EQ(chargen_sample_n(x, V, temps[t], ks[c], ps[c], &s1, scratch, N, out), 0);
            for (j = 0; j < N; j++)
                CHECK_EQ(chargen_sample(x, V, temps[t], ks[c], ps[c], &s2, scratch), out[j]);
            CHECK(same_rng(&s1, &s2));
            chargen_rng_seed_streams(rows, B, 42, 0);
            CHECK_EQ(chargen_sample_batch(x, B, V, V, temps[t], ks[c], ps[c], rows, scratch, bo, NULL), 0);
            for (b = 0; b < B; b++) {
                chargen_rng_seed(&s1, 42, (uint64_t)b);
                CHECK_EQ(chargen_sample(x + b * V, V, temps[t], ks[c], ps[c], &s1, scratch), bo[b]);
                CHECK(same_rng(&s1, &rows[b]));
            }
        }
    }
    /* a strided batch (ld > V) reads the same rows */
    {
        static float wide[B * (V + 3)];
        int64_t bo2[B];
        for (b = 0; b < B; b++) memcpy(wide + b * (V + 3), x + b * V, sizeof(float) * V);
        chargen_rng_seed_streams(rows, B, 5, 0);
        chargen_rng_seed_streams(rows0, B, 5, 0);
        CHECK_EQ(chargen_sample_batch(x, B, V, V, 1.0, 0, 1.0, rows, scratch, bo, NULL), 0);
        CHECK_EQ(chargen_sample_batch(wide, B, V, V + 3, 1.0, 0, 1.0, rows0, scratch, bo2, NULL), 0);
        for (b = 0; b < B; b++) CHECK_EQ(bo[b], bo2[b]);
    }
    /* a bad row fails the batch, names the row, and rolls every stream back */
    x[4 * V + 9] = NAN;
    chargen_rng_seed_streams(rows, B, 8, 0);
    memcpy(rows0, rows, sizeof rows);
    CHECK_EQ(chargen_sample_batch(x, B, V, V, 1.0, 5, 0.9, rows, scratch, bo, &err_row), CHARGEN_ERR_NAN);
    CHECK_EQ(err_row, 4);
    CHECK(memcmp(rows, rows0, sizeof rows) == 0);
    CHECK_EQ(chargen_sample_batch(x, B, V, V, 0.0, 0, 1.0, rows, scratch, bo, &err_row), CHARGEN_ERR_NAN);
    CHECK_EQ(err_row, 4);
    CHECK(memcmp(rows, rows0, sizeof rows) == 0);
    printf("paths agree: ok so far (%d failed)\n", n_failed);
}

/* sample_rows: each row with its own settings and stream is chargen_sample of
 * that row; inactive rows are left alone; a bad row rolls back the drawn ones. */
static void test_rows(void) {
    enum { V = 65, B = 6 };
    static float x[B * V];
    const double temps[B] = {1.0, 0.0, 0.7, 1.6, 1.0, 0.9};
    const int32_t ks[B] = {0, 0, 10, 40, 3, 0};
    const double ps[B] = {1.0, 1.0, 0.9, 0.5, 1.0, 0.3};
    const uint8_t active[B] = {1, 1, 0, 1, 1, 1};
    chargen_rng rows[B], rows0[B], one;
    int64_t out[B], err_row;
    int b, round;
    for (b = 0; b < B; b++) make_logits(x + b * V, V, 31 + b, 9.0f);
    for (b = 0; b < B; b++) chargen_rng_seed(&rows[b], 100 + (uint64_t)b, 0);
    memcpy(rows0, rows, sizeof rows);
    for (round = 0; round < 50; round++) {
        out[2] = -7;
        CHECK_EQ(chargen_sample_rows(x, B, V, V, temps, ks, ps, active, rows, scratch, out, NULL), 0);
        CHECK_EQ(out[2], -7);
        for (b = 0; b < B; b++) {
            if (!active[b]) continue;
            CHECK_EQ(chargen_sample(x + b * V, V, temps[b], ks[b], ps[b], &rows0[b], scratch), out[b]);
            CHECK(same_rng(&rows0[b], &rows[b]));
        }
        CHECK(same_rng(&rows0[2], &rows[2]));
    }
    /* NULL active: every row */
    CHECK_EQ(chargen_sample_rows(x, B, V, V, temps, ks, ps, NULL, rows, scratch, out, NULL), 0);
    one = rows0[2];
    CHECK_EQ(chargen_sample(x + 2 * V, V, temps[2], ks[2], ps[2], &one, scratch), out[2]);
    CHECK(same_rng(&one, &rows[2]));
    /* argument errors */
    CHECK_EQ(chargen_sample_rows(x, B, V, V - 1, temps, ks, ps, active, rows, scratch, out, &err_row), CHARGEN_ERR_SIZE);
    CHECK_EQ(err_row, -1);
    CHECK_EQ(chargen_sample_rows(x, B, V, V, NULL, ks, ps, active, rows, scratch, out, NULL), CHARGEN_ERR_NULL);
    /* a bad setting or a NaN names its row and rolls the drawn streams back */
    {
        double bad_t[B];
        memcpy(bad_t, temps, sizeof bad_t);
        bad_t[4] = -1.0;
        memcpy(rows0, rows, sizeof rows);
        CHECK_EQ(chargen_sample_rows(x, B, V, V, bad_t, ks, ps, active, rows, scratch, out, &err_row),
                 CHARGEN_ERR_TEMPERATURE);
        CHECK_EQ(err_row, 4);
        CHECK(memcmp(rows, rows0, sizeof rows) == 0);
        x[5 * V + 3] = NAN;
        CHECK_EQ(chargen_sample_rows(x, B, V, V, temps, ks, ps, active, rows, scratch, out, &err_row), CHARGEN_ERR_NAN);
        CHECK_EQ(err_row, 5);
        CHECK(memcmp(rows, rows0, sizeof rows) == 0);
    }
    printf("rows: ok so far (%d failed)\n", n_failed);
}

/* The exact distribution equals an independent reference, and 10^6 draws
 * fit it (chi-square p > 1e-3). */
static void test_distribution(void) {
    enum { N = 1000000 };
    static float x[5000];
    static double probs[5000], ref[5000];
    static int64_t ids[N];
    struct {
        int V, mult;
        float div;
        double T;
        int k;
        double p;
        const char *name;
    } cases[] = {
        {65, 13, 9.0f, 1.0, 0, 1.0, "V=65 T=1"},
        {65, 13, 9.0f, 0.6, 0, 1.0, "V=65 T=0.6"},
        {65, 13, 1.0f, 1.0, 0, 1.0, "V=65 peaked"},
        {65, 13, 1000.0f, 1.0, 0, 1.0, "V=65 flat"},
        {65, 13, 9.0f, 1.0, 10, 1.0, "V=65 top_k=10"},
        {65, 13, 9.0f, 1.0, 1, 1.0, "V=65 top_k=1"},
        {65, 13, 9.0f, 1.0, 0, 0.5, "V=65 top_p=0.5"},
        {65, 13, 9.0f, 0.8, 20, 0.9, "V=65 top_k=20 top_p=0.9"},
        {5000, 31, 100.0f, 1.0, 0, 1.0, "V=5000 flat-ish"},
        {5000, 31, 5.0f, 1.0, 0, 1.0, "V=5000 peaked"},
        {5000, 31, 100.0f, 1.0, 0, 0.5, "V=5000 top_p=0.5"},
        {5000, 31, 100.0f, 1.0, 300, 0.8, "V=5000 top_k=300 top_p=0.8"},
    };
    chargen_rng rng;
    size_t c;
    int i;
    for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int V = cases[c].V;
        double maxdiff = 0.0, pval;
        int outside, support = 0, ref_support = 0;
        make_logits(x, V, cases[c].mult, cases[c].div);
        x[V / 3] = -INFINITY;
        CHECK_EQ(chargen_distribution(x, V, cases[c].T, cases[c].k, cases[c].p, scratch, probs), 0);
        reference(x, V, cases[c].T, cases[c].k, cases[c].p, ref);
        for (i = 0; i < V; i++) {
            const double d = fabs(probs[i] - ref[i]);
            maxdiff = d > maxdiff ? d : maxdiff;
            support += probs[i] > 0.0;
            ref_support += ref[i] > 0.0;
        }
        CHECK(maxdiff < 1e-6);
        CHECK_EQ(support, ref_support);
        chargen_rng_seed(&rng, 2024 + c, 0);
        CHECK_EQ(chargen_sample_n(x, V, cases[c].T, cases[c].k, cases[c].p, &rng, scratch, N, ids), 0);
        pval = chi2_pvalue(ids, N, probs, V, &outside);
        CHECK_EQ(outside, 0);
        CHECK(pval > 1e-3);
        printf("chi2 %-28s support %4d  max|p - ref| %.1e  p-value %.4f\n",
               cases[c].name, support, maxdiff, pval);
    }
    /* ties: the cuts keep the lowest ids among equal weights */
    {
        static float flat[5000];
        int nz;
        for (i = 0; i < 5000; i++) flat[i] = 0.25f;
        CHECK_EQ(chargen_distribution(flat, 5000, 1.0, 10, 1.0, scratch, probs), 0);
        for (i = 0, nz = 0; i < 5000; i++) nz += probs[i] > 0.0;
        CHECK_EQ(nz, 10);
        for (i = 0; i < 10; i++) CHECK(probs[i] == 0.1);
        CHECK_EQ(chargen_distribution(flat, 10, 1.0, 0, 0.5, scratch, probs), 0);
        for (i = 0; i < 10; i++) CHECK(probs[i] == (i < 5 ? 0.2 : 0.0));
        CHECK_EQ(chargen_distribution(flat, 5000, 1.0, 0, 0.3, scratch, probs), 0);
        for (i = 0, nz = 0; i < 5000; i++) nz += probs[i] > 0.0;
        CHECK_EQ(nz, 1500);
        CHECK(probs[1499] > 0.0 && probs[1500] == 0.0);
        flat[4000] = 1.0f; /* one above the crowd, then the lowest ids */
        CHECK_EQ(chargen_distribution(flat, 5000, 1.0, 3, 1.0, scratch, probs), 0);
        CHECK(probs[4000] > 0.0 && probs[0] > 0.0 && probs[1] > 0.0 && probs[2] == 0.0);
    }
    /* a large vocabulary works */
    {
        static float big[MAX_V];
        chargen_rng_seed(&rng, 1, 0);
        make_logits(big, MAX_V, 7, 20.0f);
        for (i = 0; i < 20; i++) {
            const int id = chargen_sample(big, MAX_V, 1.0, 0, 0.95, &rng, scratch);
            CHECK(id >= 0 && id < MAX_V);
        }
        CHECK_EQ(chargen_sample(big, MAX_V, 1.0, 1, 1.0, &rng, scratch),
                 chargen_sample(big, MAX_V, 0.0, 0, 1.0, &rng, scratch));
    }
}

/* Ids for fixed inputs: the Python tests check that the Cython build gives
 * the very same ones (and pin them). */
static void print_golden(void) {
    float x[65];
    chargen_rng rng;
    int i;
    make_logits(x, 65, 13, 9.0f);
    chargen_rng_seed(&rng, 42, 0);
    printf("golden T=1:");
    for (i = 0; i < 16; i++) printf(" %d", chargen_sample(x, 65, 1.0, 0, 1.0, &rng, scratch));
    printf("\ngolden T=0.8 k=20 p=0.9:");
    for (i = 0; i < 16; i++) printf(" %d", chargen_sample(x, 65, 0.8, 20, 0.9, &rng, scratch));
    printf("\n");
    /* every bit of the probabilities, not only the ids */
    {
        static float w[5000];
        static double probs[130 + 5000];
        uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */
        size_t j;
        make_logits(w, 5000, 31, 100.0f);
        chargen_distribution(x, 65, 1.0, 0, 1.0, scratch, probs);
        chargen_distribution(x, 65, 0.8, 20, 0.9, scratch, probs + 65);
        chargen_distribution(w, 5000, 0.7, 0, 1.0, scratch, probs + 130);
        for (j = 0; j < sizeof(double) * (130 + 5000); j++) {
            h ^= ((const unsigned char *)probs)[j];
            h *= UINT64_C(0x100000001b3);
        }
        printf("golden probs fnv1a: %016llx\n", (unsigned long long)h);
    }
}

int main(void) {
    test_rng();
    test_errors();
    test_greedy_and_masking();
    test_paths_agree();
    test_rows();
    test_distribution();
    print_golden();
    printf("test_sampler: %d checks, %d failed\n", n_checks, n_failed);
    return n_failed == 0 ? 0 : 1;
}
