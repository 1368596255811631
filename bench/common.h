// bench/common.h: small helpers shared by the benchmark programs (header only).
//
//   seconds_per_call           timing (wall clock or thread CPU time): repeat a call until
//                              enough time has passed
//   median                     the statistic we report (robust on a noisy machine)
//   measure_peak_gflops        the machine's fp32 FMA peak, from a register-only loop
//   fill_random                deterministic test data
//   run_gemm_steps             the shared check-and-time table of bench/gemm/1..6
#pragma once
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <random>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace bench {

inline double now_seconds() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// CPU time used by the calling thread. On a busy machine this is what a single-threaded
// measurement should use: it does not count the time the thread spent waiting for a core.
inline double thread_cpu_seconds() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Runs fn() once to warm up, then repeatedly until at least min_seconds have passed (and at
// least once); returns the average seconds per call over that stretch. Wall-clock time, or
// with cpu_time = true the calling thread's CPU time (single-threaded work only).
template <typename Fn>
double seconds_per_call(Fn&& fn, double min_seconds, bool cpu_time = false) {
    auto clock = [cpu_time] { return cpu_time ? thread_cpu_seconds() : now_seconds(); };
    fn();
    int64_t calls = 0;
    const double start = clock();
    double elapsed = 0;
    do {
        fn();
        ++calls;
        elapsed = clock() - start;
    } while (elapsed < min_seconds);
    return elapsed / double(calls);
}

inline double median(std::vector<double> values) {
    if (values.empty()) return 0;
    std::sort(values.begin(), values.end());
    const size_t n = values.size();
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

inline void fill_random(std::vector<float>& v, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& x : v) x = dist(rng);
}

// Peak fp32 throughput: every thread runs independent chains of fused multiply-adds that never
// leave the registers. 12 chains hide the FMA latency (4 cycles on Zen 3, with 2 FMA units one
// needs at least 8 in flight). Returns GFLOP/s summed over `threads` threads (1 FMA = 2 flops).
// cpu_time = true divides each thread's flops by its own CPU time (for a busy machine).
inline double measure_peak_gflops(int threads, double seconds, bool cpu_time = false) {
    constexpr int kChains = 12;
#if defined(__AVX512F__)
    using V = __m512;
    constexpr int kLanes = 16;
    auto fma = [](V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); };
    auto set1 = [](float x) { return _mm512_set1_ps(x); };
    auto sum = [](V v) { return _mm512_reduce_add_ps(v); };
#elif defined(__AVX2__) && defined(__FMA__)
    using V = __m256;
    constexpr int kLanes = 8;
    auto fma = [](V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); };
    auto set1 = [](float x) { return _mm256_set1_ps(x); };
    auto sum = [](V v) {
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, v);
        float s = 0;
        for (float x : lanes) s += x;
        return s;
    };
#else
    using V = float;
    constexpr int kLanes = 1;
    auto fma = [](V a, V b, V c) { return a * b + c; };
    auto set1 = [](float x) { return x; };
    auto sum = [](V v) { return v; };
#endif
    constexpr int64_t kInner = 1 << 16;  // iterations between clock reads
    double total_flops = 0, cpu_gflops = 0;
    volatile float sink = 0;
    const double start = now_seconds();
#pragma omp parallel num_threads(threads) reduction(+ : total_flops, cpu_gflops)
    {
        const double cpu_start = thread_cpu_seconds();
        V acc[kChains];
        for (int c = 0; c < kChains; ++c) acc[c] = set1(0.001f * float(c + omp_get_thread_num()));
        const V x = set1(0.999999f), y = set1(1e-7f);
        int64_t iterations = 0;
        while (now_seconds() - start < seconds) {
            for (int64_t it = 0; it < kInner; ++it) {
#pragma GCC unroll 12
                for (int c = 0; c < kChains; ++c) acc[c] = fma(acc[c], x, y);
            }
            iterations += kInner;
        }
        float s = 0;
        for (int c = 0; c < kChains; ++c) s += sum(acc[c]);
        sink = sink + s;  // keeps the loop alive
        const double flops = double(iterations) * kChains * kLanes * 2;
        total_flops += flops;
        cpu_gflops += flops / (thread_cpu_seconds() - cpu_start) * 1e-9;
    }
    return cpu_time ? cpu_gflops : total_flops / (now_seconds() - start) * 1e-9;
}

}  // namespace bench

// ---------------------------------------------------------------------------------------------
// Harness for the numbered teaching programs bench/gemm/1_naive.cpp ... 6_threaded.cpp.
// Each program hands over its gemm (row-major, C = A @ B, C overwritten) and gets the same
// checks and the same table: validation against the naive triple loop on an odd-sized problem
// (every edge case of tiles and blocks), a spot check of 500 entries at each timed size, then
// time per call and GFLOP/s for square sizes. Single-threaded programs are timed by the thread's
// CPU time (cpu_time = true): the same as wall-clock time on an idle machine, and still right on
// a busy one.
namespace bench {

using RowMajorGemm = void (*)(int M, int N, int K, const float* A, const float* B, float* C);

inline void naive_gemm(int M, int N, int K, const float* A, const float* B, float* C) {
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            float sum = 0;
            for (int k = 0; k < K; ++k) sum += A[i * K + k] * B[k * N + j];
            C[i * N + j] = sum;
        }
}

// Largest |got - expected| relative to the tolerance K * 1e-6 (values in [-1, 1]); <= 1 passes.
inline bool close_enough(float got, double expected, int K) {
    return std::abs(double(got) - expected) <= 1e-6 * K + 1e-6;
}

inline int run_gemm_steps(const char* name, RowMajorGemm gemm, std::vector<int> sizes,
                          bool cpu_time = true, double seconds = 0.5) {
    std::printf("%s  [timed by %s]\n", name, cpu_time ? "thread CPU time" : "wall clock");
    bool ok = true;
    {  // 1. exact comparison with the naive loop on an awkward shape
        const int M = 203, N = 197, K = 301;
        std::vector<float> A(M * K), B(K * N), C(M * N), expected(M * N);
        fill_random(A, 1);
        fill_random(B, 2);
        naive_gemm(M, N, K, A.data(), B.data(), expected.data());
        gemm(M, N, K, A.data(), B.data(), C.data());
        for (int i = 0; i < M * N; ++i) ok = ok && close_enough(C[i], expected[i], K);
        std::printf("  check vs naive at %dx%dx%d: %s\n", M, N, K, ok ? "ok" : "WRONG");
    }
    std::printf("  %6s %12s %10s\n", "size", "ms/call", "GFLOP/s");
    for (int n : sizes) {  // 2. timing, with a spot check of the timed result
        std::vector<float> A(size_t(n) * n), B(size_t(n) * n), C(size_t(n) * n);
        fill_random(A, 3);
        fill_random(B, 4);
        const double s =
            seconds_per_call([&] { gemm(n, n, n, A.data(), B.data(), C.data()); }, seconds, cpu_time);
        std::mt19937 rng(5);
        for (int t = 0; t < 500; ++t) {
            const int i = int(rng() % n), j = int(rng() % n);
            double dot = 0;
            for (int k = 0; k < n; ++k) dot += double(A[size_t(i) * n + k]) * B[size_t(k) * n + j];
            ok = ok && close_enough(C[size_t(i) * n + j], dot, n);
        }
        std::printf("  %6d %12.3f %10.2f\n", n, s * 1e3, 2.0 * n * n * n / s * 1e-9);
        std::fflush(stdout);
    }
    if (!ok) std::printf("  RESULT WRONG\n");
    return ok ? 0 : 1;
}

}  // namespace bench
