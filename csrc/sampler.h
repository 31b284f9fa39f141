/*
 * chargen sampler: draw one symbol id from a row of logits.  Pure C99.
 *
 * No Python headers, no allocation (the caller owns the RNG state and the
 * scratch), no exit(), no libm transcendental calls: every invalid argument
 * comes back as a negative status code.
 *
 * ---------------------------------------------------------------------------
 * Semantics (one row of V logits, parameters temperature, top_k, top_p)
 *
 *   temperature == 0   greedy: the argmax; ties go to the lowest id.  top_k
 *                      and top_p are still validated but play no part, and
 *                      the RNG is NOT advanced.
 *   temperature  > 0   p_i ~ exp((x_i - max) / temperature)  (stable softmax)
 *   top_k <= 0 or >= V no top-k cut; otherwise keep the top_k heaviest ids.
 *   top_p >= 1         no nucleus cut; otherwise, over what top-k kept and
 *                      renormalised, keep the smallest set of heaviest ids
 *                      whose probability reaches (>=) top_p: the smallest
 *                      prefix of the probabilities sorted in decreasing
 *                      order.  Both cuts may combine (top-k first).
 *                      "Heaviest" orders ids by weight, equal weights by the
 *                      lower id: the logit order (weights are monotone in
 *                      the logits) up to logits too close to tell apart.
 *   -inf logit         masked: probability exactly 0, never drawn.  So is an
 *                      id whose weight underflows, below 2^-124 of the max
 *                      (a logit about 85.9 * temperature below the row max).
 *
 * Speed: never a full sort.  The weights come from one vectorised pass (an
 * AVX2 build of it is picked at run time on x86, with identical results);
 * the draw is a two-level inverse-CDF search (blocks of 8).  Top-k is a
 * quickselect of the k-th weight, top-p a mass-weighted quickselect over
 * only the ids that can be in the nucleus (weight >= (1 - top_p) S / (n - 1),
 * as llama2.c does), both on contiguous weight values with a branch-free
 * partition (O(V) expected, heapsort fallback); then one pass in id order
 * builds the kept ids, ties taken by the lower id.
 *
 * Errors (negative return values, see CHARGEN_ERR_*): NULL pointer, V <= 0,
 * temperature < 0 / NaN / inf, top_p <= 0 / NaN, a NaN in the row, a +inf in
 * the row, a row that is all -inf, a misaligned scratch pointer.  A call that
 * fails consumes no randomness and leaves the RNG state untouched.
 *
 * A stochastic draw (temperature > 0) advances its RNG stream by exactly one
 * 64-bit output, whatever the cuts: u = uniform [0, 1) with 53 bits, and the
 * id is the inverse CDF of the kept, renormalised distribution at u.  If
 * rounding puts u * total past the last boundary, the last kept id with a
 * non-zero probability is returned (the llama2.c fallback).
 *
 * The kept ids are drawn in increasing id order: the id is the first one
 * whose cumulative (renormalised) probability exceeds u.
 *
 * Reproducibility: the same seed, logits and parameters give the same ids on
 * every platform.  The weight is 2^((x - max) * log2(e) / temperature) by a
 * fixed polynomial (Cephes exp2f) in IEEE-754 binary32 arithmetic, the sums
 * are double in a fixed order, nothing depends on libm or on vectorisation.
 * It assumes IEEE float/double with round-to-nearest and no FMA contraction
 * (the source turns contraction off for GCC and clang).
 *
 * ---------------------------------------------------------------------------
 * RNG: xoshiro256** 1.0 (Blackman & Vigna, https://prng.di.unimi.it/),
 * seeded through splitmix64.  Stream s of seed S takes its four state words
 * from outputs 4s, 4s+1, 4s+2, 4s+3 of the splitmix64 sequence started at S
 * (splitmix64 is a counter, so any stream is seeded in O(1)).  Stream 0 is
 * therefore exactly the reference seeding of xoshiro256** with splitmix64(S).
 * A uniform is (next() >> 11) * 2^-53: exact, in [0, 1), never 1.0.
 *
 * Scratch: chargen_scratch_bytes(V) bytes (= CHARGEN_SCRATCH_BYTES(V), about
 * 17 V bytes: 3 V floats of weights and selection buffers, V int32 ids and
 * V/8 doubles of block sums), aligned to 8 bytes (any malloc result is).
 * One scratch serves any V up to the V it was sized for, and a batch reuses
 * it row after row.  Not thread-safe: one scratch and one set of RNG states
 * per thread.
 */
#ifndef CHARGEN_SAMPLER_H
#define CHARGEN_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHARGEN_SAMPLER_VERSION 1

/* Status codes: 0 is success, everything else is negative. */
#define CHARGEN_OK               0
#define CHARGEN_ERR_NULL        -1 /* a required pointer is NULL */
#define CHARGEN_ERR_SIZE        -2 /* V <= 0, V > CHARGEN_MAX_V, B < 0, n < 0, ld < V */
#define CHARGEN_ERR_TEMPERATURE -3 /* temperature < 0, NaN or infinite */
#define CHARGEN_ERR_TOP_P       -4 /* top_p <= 0 or NaN */
#define CHARGEN_ERR_NAN         -5 /* a logit is NaN */
#define CHARGEN_ERR_POSINF      -6 /* a logit is +inf */
#define CHARGEN_ERR_ALL_MASKED  -7 /* every logit is -inf: nothing to draw */
#define CHARGEN_ERR_ALIGN       -8 /* scratch is not 8-byte aligned */

#define CHARGEN_MAX_V (1 << 26)

/* Bytes of scratch for rows of up to V logits (0 < V <= CHARGEN_MAX_V). */
#define CHARGEN_SCRATCH_BYTES(V) \
    ((size_t)8 * (((size_t)(V) + 7) / 8) + (size_t)16 * (size_t)(V))

typedef struct chargen_rng {
    uint64_t s[4]; /* xoshiro256** state; never all zero */
} chargen_rng;

/* splitmix64: advances *x by the golden gamma and returns the mixed value. */
uint64_t chargen_splitmix64(uint64_t *x);

/* Seed one stream: stream `stream` of `seed` (see above). */
void chargen_rng_seed(chargen_rng *rng, uint64_t seed, uint64_t stream);

/* Seed rngs[0..count) as streams first_stream .. first_stream + count - 1. */
void chargen_rng_seed_streams(chargen_rng *rngs, size_t count, uint64_t seed,
                              uint64_t first_stream);

/* The next 64-bit output, and the exact inverse step (rng_prev(rng_next(s))
 * restores s; used to roll a batch back on error). */
uint64_t chargen_rng_next(chargen_rng *rng);
void chargen_rng_prev(chargen_rng *rng);

/* 53 high bits of x as a double in [0, 1): exact, never 1.0. */
static inline double chargen_unit(uint64_t x) {
    return (double)(x >> 11) * (1.0 / 9007199254740992.0); /* 2^-53 */
}

/* chargen_unit(chargen_rng_next(rng)). */
double chargen_rng_uniform(chargen_rng *rng);

/* Scratch bytes for rows of up to V logits; 0 if V <= 0 or V > CHARGEN_MAX_V. */
size_t chargen_scratch_bytes(int V);

/* Sample one row.  Returns the id (0 <= id < V) or a negative status. */
int chargen_sample(const float *logits, int V, double temperature, int top_k,
                   double top_p, chargen_rng *rng, void *scratch);

/* Draw n ids from one row with one stream: out[j] is exactly what the j-th
 * of n successive chargen_sample calls would return (the distribution is
 * prepared once; each draw is a binary search).  Returns 0 or a status; on
 * error nothing is drawn. */
int chargen_sample_n(const float *logits, int V, double temperature, int top_k,
                     double top_p, chargen_rng *rng, void *scratch, int64_t n,
                     int64_t *out);

/* Sample B rows: row b is logits[b * ld .. b * ld + V) (ld >= V; ld == V for
 * a C-contiguous [B, V] array) and is drawn with its own stream rngs[b], as
 * chargen_sample(row b, ..., &rngs[b], scratch) would.  out[b] gets the id.
 * Returns 0 or a status.  On error, *err_row (if err_row is not NULL) gets
 * the failing row (-1 for an argument error), the streams are rolled back to
 * their state before the call, and out is unspecified. */
int chargen_sample_batch(const float *logits, int64_t B, int V, int64_t ld,
                         double temperature, int top_k, double top_p,
                         chargen_rng *rngs, void *scratch, int64_t *out,
                         int64_t *err_row);

/* Sample the rows of a batch whose streams each have their own settings: row b
 * (logits[b * ld .. b * ld + V)) is drawn with temperature[b], top_k[b],
 * top_p[b] and its own stream rngs[b], exactly as chargen_sample(row b,
 * temperature[b], top_k[b], top_p[b], &rngs[b], scratch) would.  Rows with
 * active[b] == 0 are skipped: out[b] and rngs[b] stay as they are (active
 * NULL: every row).  What a row draws depends on that row alone, never on the
 * others.  Returns 0 or a status; on error *err_row (if not NULL) gets the
 * failing row (-1 for an argument error), the streams drawn in this call are
 * rolled back, and out is unspecified. */
int chargen_sample_rows(const float *logits, int64_t B, int V, int64_t ld,
                        const double *temperature, const int32_t *top_k,
                        const double *top_p, const uint8_t *active,
                        chargen_rng *rngs, void *scratch, int64_t *out,
                        int64_t *err_row);

/* The exact distribution chargen_sample draws from: probs[i] for i < V
 * (renormalised over the kept ids, 0 elsewhere; one-hot at the argmax for
 * temperature 0).  Does not touch any RNG.  Returns 0 or a status. */
int chargen_distribution(const float *logits, int V, double temperature,
                         int top_k, double top_p, void *scratch, double *probs);

/* A static English description of a status code. */
const char *chargen_status_str(int status);

#ifdef __cplusplus
}
#endif

#endif /* CHARGEN_SAMPLER_H */
