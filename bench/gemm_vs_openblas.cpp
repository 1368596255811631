// bench/gemm_vs_openblas.cpp: our sgemm (engine/cpu/gemm.cpp) against OpenBLAS's cblas_sgemm,
// both on the same number of threads (2 by default), row-major C = A @ B.
//
// The two are measured alternately (ours, OpenBLAS, ours, ...) so that slow drifts of a noisy
// machine hit both; each repetition calls the GEMM back to back for at least 0.5 s, and we report
// the median GFLOP/s over the repetitions. Between phases we sleep briefly so that the other
// library's idle threads (OpenBLAS spins for a while after each call) are asleep.
//
//   ./build/bench/gemm_vs_openblas [--quick] [--threads N] [--reps N] [--seconds S] [--cpu-time]
//
// --cpu-time: for a machine busy with other work. Both libraries run on 1 thread (the caller's)
// and are timed by that thread's CPU time, which does not count time spent waiting for a core;
// this compares the kernels, not the threading.
//
// Output, one line per shape (MxKxN names the demo shapes; the line gives M N K):
//   gemm M N K ours_gflops openblas_gflops ratio
// Run it through bench/run_all.sh, which clears the OpenBLAS tuning variables so it picks its
// own best kernel for this CPU.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench/common.h"
#include "engine/cpu/gemm.h"

extern "C" char* openblas_get_corename();
extern "C" void openblas_set_num_threads(int);

namespace {

struct Shape {
    int64_t M, N, K;
};

struct Result {
    double ours_gflops, openblas_gflops;
};

Result compare(const Shape& s, int reps, double seconds, bool cpu_time) {
    std::vector<float> A(s.M * s.K), B(s.K * s.N), C(s.M * s.N);  // row-major (M,K) (K,N) (M,N)
    bench::fill_random(A, 1);
    bench::fill_random(B, 2);
    const double flops = 2.0 * double(s.M) * double(s.N) * double(s.K);
    auto ours = [&] {
        mg::cpu::sgemm(s.M, s.N, s.K, 1.0f, A.data(), s.K, 1, B.data(), s.N, 1, 0.0f, C.data(),
                       s.N, 1);
    };
    auto openblas = [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(s.M), int(s.N), int(s.K), 1.0f,
                    A.data(), int(s.K), B.data(), int(s.N), 0.0f, C.data(), int(s.N));
    };
    std::vector<double> ours_runs, openblas_runs;
    for (int r = 0; r < reps; ++r) {
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
        ours_runs.push_back(flops / bench::seconds_per_call(ours, seconds, cpu_time) * 1e-9);
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
        openblas_runs.push_back(flops / bench::seconds_per_call(openblas, seconds, cpu_time) * 1e-9);
    }
    return {bench::median(ours_runs), bench::median(openblas_runs)};
}

// Checks our result against OpenBLAS once per shape, so a fast wrong kernel cannot hide here.
bool agrees_with_openblas(const Shape& s) {
    std::vector<float> A(s.M * s.K), B(s.K * s.N), ours(s.M * s.N), theirs(s.M * s.N);
    bench::fill_random(A, 3);
    bench::fill_random(B, 4);
    mg::cpu::sgemm(s.M, s.N, s.K, 1.0f, A.data(), s.K, 1, B.data(), s.N, 1, 0.0f, ours.data(), s.N,
                   1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(s.M), int(s.N), int(s.K), 1.0f,
                A.data(), int(s.K), B.data(), int(s.N), 0.0f, theirs.data(), int(s.N));
    for (size_t i = 0; i < ours.size(); ++i)  // values are sums of K products of [-1,1] numbers
        if (std::abs(ours[i] - theirs[i]) > 1e-5f * float(s.K) + 1e-5f) return false;
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, reps = 5;
    double seconds = 0.5;
    bool cpu_time = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--quick") {
            reps = 1;
            seconds = 0.1;
        } else if (arg == "--cpu-time") {
            cpu_time = true;
        } else if (arg == "--threads" && i + 1 < argc) {
            threads = std::atoi(argv[++i]);
        } else if (arg == "--reps" && i + 1 < argc) {
            reps = std::atoi(argv[++i]);
        } else if (arg == "--seconds" && i + 1 < argc) {
            seconds = std::atof(argv[++i]);
        } else {
            std::fprintf(stderr,
                         "usage: %s [--quick] [--threads N] [--reps N] [--seconds S] [--cpu-time]\n",
                         argv[0]);
            return 2;
        }
    }
    if (cpu_time) threads = 1;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);

    const double peak = bench::measure_peak_gflops(threads, std::max(seconds, 0.3), cpu_time);
    std::printf("openblas corename: %s\n", openblas_get_corename());
    std::printf("ours: %s kernel, %d threads; peak fp32 on %d threads: %.1f GFLOP/s\n",
                mg::cpu::sgemm_kernel_name(), threads, threads, peak);
    std::printf("%d repetitions of >= %.2f s each (%s), alternating; medians\n", reps, seconds,
                cpu_time ? "thread CPU time" : "wall clock");
    std::printf("columns: gemm M N K ours_gflops openblas_gflops ratio | ours_fraction_of_peak\n");

    const Shape shapes[] = {
        {256, 256, 256},   {512, 512, 512},   {1024, 1024, 1024}, {2048, 2048, 2048},
        {2048, 1024, 256},  // demo MxKxN 2048x256x1024
        {512, 1024, 256},   // demo MxKxN 512x256x1024
        {64, 64, 20},       // demo MxKxN 64x20x64
        {2048, 256, 1024},  // MxKxN 2048x1024x256
    };
    bool all_correct = true;
    for (const Shape& s : shapes) {
        const bool correct = agrees_with_openblas(s);
        all_correct = all_correct && correct;
        const Result r = compare(s, reps, seconds, cpu_time);
        std::printf("gemm %lld %lld %lld %.1f %.1f %.2f | %.0f%%%s\n", (long long)s.M,
                    (long long)s.N, (long long)s.K, r.ours_gflops, r.openblas_gflops,
                    r.ours_gflops / r.openblas_gflops, 100.0 * r.ours_gflops / peak,
                    correct ? "" : "  MISMATCH vs OpenBLAS");
        std::fflush(stdout);
    }
    return all_correct ? 0 : 1;
}
