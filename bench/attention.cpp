// bench/attention.cpp: causal multi-head attention, the straightforward version
// (attention_reference: matmul, masked_fill, softmax, matmul in engine ops) against the
// memory-efficient kernel (attention: tiled, online softmax, backward recomputes the tiles).
// Forward + backward on float32 (B=4, H=8, T, Dh=32) inputs, T = 128, 512, 1024: the median
// milliseconds of a few runs, and the peak live bytes above what was live before (the inputs and
// the upstream gradient are allocated beforehand), from mg::memory_stats.
// The math and these numbers, explained: docs/nn/attention.md.
//
//   build/bench/attention [--quick]        (--quick: T = 128 and 512 only, fewer runs)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/cpu/gemm.h"

using namespace mg;

namespace {
using AttentionFn = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, bool, double);

double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Measurement {
    double forward_ms = 0, forward_backward_ms = 0;
    int64_t peak_bytes = 0;
};

Measurement measure(AttentionFn f, int64_t B, int64_t H, int64_t T, int64_t Dh, int runs) {
    Generator gen(7);
    Tensor q = randn({B, H, T, Dh}, gen), k = randn({B, H, T, Dh}, gen), v = randn({B, H, T, Dh}, gen);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    Tensor g = randn({B, H, T, Dh}, gen);
    const double scale = 1.0 / std::sqrt((double)Dh);
    auto step = [&] {
        for (Tensor* t : {&q, &k, &v}) t->zero_grad();
        Tensor out = f(q, k, v, true, scale);
        out.backward(g);
    };
    auto forward_only = [&] {
        NoGradGuard no_grad;
        f(q, k, v, true, scale);
    };
    auto median_ms = [runs](const std::function<void()>& fn) {
        fn();  // warm-up
        std::vector<double> times;
        for (int i = 0; i < runs; ++i) {
            const double t0 = seconds_now();
            fn();
            times.push_back(1e3 * (seconds_now() - t0));
        }
        std::sort(times.begin(), times.end());
        return times[times.size() / 2];
    };
    Measurement m;
    m.forward_ms = median_ms(forward_only);
    m.forward_backward_ms = median_ms(step);
    for (Tensor* t : {&q, &k, &v}) t->zero_grad();
    const int64_t before = memory_stats(Device::CPU).live_bytes;
    reset_peak_memory(Device::CPU);
    step();
    m.peak_bytes = memory_stats(Device::CPU).peak_bytes - before;
    return m;
}
}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int64_t B = 4, H = 8, Dh = 32;
    const int runs = quick ? 3 : 5;
    std::printf("causal attention, forward + backward, float32, B=%lld H=%lld Dh=%lld, %d threads, GEMM %s\n",
                (long long)B, (long long)H, (long long)Dh, omp_get_max_threads(), cpu::sgemm_kernel_name());
    std::printf("%6s  %-20s %12s %14s %14s\n", "T", "version", "forward ms", "fwd+bwd ms", "peak MiB");
    std::vector<int64_t> lengths = quick ? std::vector<int64_t>{128, 512} : std::vector<int64_t>{128, 512, 1024};
    for (int64_t T : lengths) {
        const struct {
            const char* name;
            AttentionFn f;
        } versions[] = {{"attention_reference", attention_reference}, {"attention", attention}};
        for (const auto& version : versions) {
            Measurement m = measure(version.f, B, H, T, Dh, runs);
            std::printf("%6lld  %-20s %12.1f %14.1f %14.1f\n", (long long)T, version.name, m.forward_ms,
                        m.forward_backward_ms, (double)m.peak_bytes / (1 << 20));
            std::fflush(stdout);
        }
    }
    return 0;
}
