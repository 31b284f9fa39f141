/*
 * How fast can this CPU do the batch-1 step's recurrent product at all?
 *
 *     gcc -O3 -march=native -fopenmp benchmarks/bench_gemv.c -o /tmp/bench_gemv
 *     OMP_WAIT_POLICY=active /tmp/bench_gemv [threads] [rounds]
 *
 * A plain matrix-vector product y = W x with W (3072 x 1024), the tutorial
 * model's W_hh, once in int8 (u8 x s8 summed in int32, as onnxruntime's int8
 * kernels do) and once in float32, on 1..threads threads. Nothing else: no
 * quantization of x, no scales, no gates. It is the lower bound that
 * benchmarks/bench_runtime.py's "floor int8" (onnxruntime's own int8 products)
 * can be held against: on the AVX-512 VNNI machine the int8 product took
 * 21-26 us here on two threads against 46-59 us for onnxruntime's, while the
 * float32 one took 75-95 us against ~100 us. So the int8 step was bounded by
 * onnxruntime's int8 kernel at batch 1, not by the weight read; which is why
 * chargen now has its own int8 step (csrc/int8_step.c, the same kind of loop,
 * 8 rows at a time), picked by chargen.runtime.engine. This file stays a
 * standalone probe of what the CPU can do.
 *
 * The kernels are the obvious ones (four rows at a time, one accumulator
 * each): AVX-512 VNNI where the compiler targets it, otherwise plain loops
 * that the compiler vectorises as it can.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define VNNI 1
#endif

enum { N = 3072, K = 1024 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void gemv_i8(int threads, const uint8_t *x, const int8_t *W, int32_t *y) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int n = 0; n < N; n += 4) {
#ifdef VNNI
        __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int k = 0; k < K; k += 64) {
            __m512i xv = _mm512_loadu_si512(x + k);
            a0 = _mm512_dpbusd_epi32(a0, xv, _mm512_loadu_si512(W + (size_t)(n + 0) * K + k));
            a1 = _mm512_dpbusd_epi32(a1, xv, _mm512_loadu_si512(W + (size_t)(n + 1) * K + k));
            a2 = _mm512_dpbusd_epi32(a2, xv, _mm512_loadu_si512(W + (size_t)(n + 2) * K + k));
            a3 = _mm512_dpbusd_epi32(a3, xv, _mm512_loadu_si512(W + (size_t)(n + 3) * K + k));
        }
        y[n] = _mm512_reduce_add_epi32(a0);
        y[n + 1] = _mm512_reduce_add_epi32(a1);
        y[n + 2] = _mm512_reduce_add_epi32(a2);
        y[n + 3] = _mm512_reduce_add_epi32(a3);
#else
        for (int r = 0; r < 4; r++) {
            const int8_t *w = W + (size_t)(n + r) * K;
            int32_t acc = 0;
            for (int k = 0; k < K; k++) acc += (int32_t)x[k] * w[k];
            y[n + r] = acc;
        }
#endif
    }
}

static void gemv_f32(int threads, const float *x, const float *W, float *y) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int n = 0; n < N; n++) {
        const float *w = W + (size_t)n * K;
        float acc[16] = {0};
        for (int k = 0; k < K; k += 16)
            for (int j = 0; j < 16; j++) acc[j] += x[k + j] * w[k + j];
        float s = 0;
        for (int j = 0; j < 16; j++) s += acc[j];
        y[n] = s;
    }
}

/* The reference the int8 kernel is checked against before it is timed. */
static int check_i8(int threads, const uint8_t *x, const int8_t *W, int32_t *y) {
    gemv_i8(threads, x, W, y);
    for (int n = 0; n < N; n++) {
        int32_t acc = 0;
        for (int k = 0; k < K; k++) acc += (int32_t)x[k] * W[(size_t)n * K + k];
        if (acc != y[n]) {
            fprintf(stderr, "bench_gemv: int8 row %d: %d, expected %d\n", n, y[n], acc);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    int max_threads = argc > 1 ? atoi(argv[1]) : 2, rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (max_threads < 1 || rounds < 1) {
        fprintf(stderr, "usage: bench_gemv [threads >= 1] [rounds >= 1]\n");
        return 2;
    }
    uint8_t *x = malloc(K);
    int8_t *W = malloc((size_t)N * K);
    int32_t *y = malloc(N * sizeof *y);
    float *xf = malloc(K * sizeof *xf), *Wf = malloc((size_t)N * K * sizeof *Wf), *yf = malloc(N * sizeof *yf);
    if (!x || !W || !y || !xf || !Wf || !yf) {
        fprintf(stderr, "bench_gemv: out of memory\n");
        return 1;
    }
    uint64_t s = 0x9E3779B97F4A7C15u;
    for (size_t i = 0; i < (size_t)N * K; i++) {
        s = s * 6364136223846793005u + 1442695040888963407u;
        W[i] = (int8_t)(s >> 56);
        Wf[i] = (float)(int8_t)(s >> 48) / 128.0f;
    }
    for (int k = 0; k < K; k++) {
        x[k] = (uint8_t)(k * 37);
        xf[k] = (float)((k * 37) % 255) / 255.0f;
    }
#ifdef VNNI
    const char *kernel = "AVX-512 VNNI";
#else
    const char *kernel = "plain loops (compile with -march=native on an AVX-512 VNNI CPU for the VNNI kernel)";
#endif
    printf("W: %d x %d; int8 kernel: %s\n", N, K, kernel);
    for (int t = 1; t <= max_threads; t++) {
        if (check_i8(t, x, W, y)) return 1;
        double best_i8 = 1e9, best_f32 = 1e9;
        for (int r = 0; r < rounds; r++) {
            double t0 = now();
            for (int i = 0; i < 2000; i++) {
                gemv_i8(t, x, W, y);
                x[i % K] ^= (uint8_t)y[i % N];  /* each product depends on the last */
            }
            double d = (now() - t0) / 2000;
            best_i8 = d < best_i8 ? d : best_i8;
            t0 = now();
            for (int i = 0; i < 500; i++) {
                gemv_f32(t, xf, Wf, yf);
                xf[i % K] = yf[i % N] * 1e-9f;
            }
            d = (now() - t0) / 500;
            best_f32 = d < best_f32 ? d : best_f32;
        }
        printf("%d thread(s): int8 %.1f us (%.0f GB/s of weights), float32 %.1f us (%.0f GB/s); best of %d rounds\n",
               t, best_i8 * 1e6, (double)N * K / best_i8 / 1e9, best_f32 * 1e6, 4.0 * N * K / best_f32 / 1e9, rounds);
    }
    free(x); free(W); free(y); free(xf); free(Wf); free(yf);
    return 0;
}
