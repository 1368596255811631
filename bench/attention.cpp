// bench/attention.cpp: causal multi-head attention, the straightforward version
// (attention_reference: matmul, masked_fill, softmax, matmul in engine ops) against the
// memory-efficient kernel (attention: tiled, online softmax, backward recomputes the tiles).
// Forward + backward on float32 (B=4, H=8, T, Dh=32) inputs, T = 128, 512, 1024: the median
// milliseconds of a few runs, and the peak live bytes above what was live before (the inputs and
// the upstream gradient are allocated beforehand), from mg::memory_stats.
// The math and these numbers, explained: docs/nn/attention.md.
// Then the kernels alone at the shape of demo 03's language model (--peer-config): B=16, H=8,
// T=128, Dh=32, causal, q, k, v strided views of one (B, T, 3, H, Dh) qkv tensor, as
// CausalSelfAttention makes them; forward and backward (attention_backward) timed apart.
//
//   build/bench/attention [--quick]        (--quick: T = 128 and 512 only, fewer runs)
//   build/bench/attention --lm [runs]      (only the language-model shape, median of `runs`, 21)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
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
// CPU seconds of this process, all threads: unlike the wall clock, it does not count the time
// other programs on a shared machine hold our cores.
double cpu_seconds_now() {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
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

double median_of(std::vector<double> times) {
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

// The language model's attention: the forward kernel and the backward kernel, each timed alone
// (median milliseconds of `runs` calls after one warm-up call; wall clock and CPU time).
void measure_lm_shape(int runs) {
    const int64_t B = 16, T = 128, H = 8, Dh = 32;
    Generator gen(11);
    NoGradGuard no_grad;
    Tensor qkv = randn({B, T, 3, H, Dh}, gen).permute({2, 0, 3, 1, 4});  // (3, B, H, T, Dh) view
    Tensor q = qkv.select(0, 0), k = qkv.select(0, 1), v = qkv.select(0, 2);
    Tensor grad_out = randn({B, H, T, Dh}, gen);
    const double scale = 1.0 / std::sqrt((double)Dh);
    // The forward's lse (logsumexp of each row of scaled, masked scores), from plain ops.
    Tensor scores = matmul(q, k.transpose(-2, -1)) * scale;
    Tensor future = gt(Tensor::arange(0, (double)T).unsqueeze(0), Tensor::arange(0, (double)T).unsqueeze(1));
    Tensor lse = logsumexp(masked_fill(scores, future, -INFINITY), -1);
    Tensor out = attention(q, k, v, true, scale);
    std::vector<double> forward, backward, forward_cpu, backward_cpu;
    attention(q, k, v, true, scale);  // warm-up
    attention_backward(q, k, v, out, lse, grad_out, true, scale);
    for (int i = 0; i < runs; ++i) {
        double t0 = seconds_now(), c0 = cpu_seconds_now();
        attention(q, k, v, true, scale);
        forward.push_back(1e3 * (seconds_now() - t0));
        forward_cpu.push_back(1e3 * (cpu_seconds_now() - c0));
        t0 = seconds_now(), c0 = cpu_seconds_now();
        attention_backward(q, k, v, out, lse, grad_out, true, scale);
        backward.push_back(1e3 * (seconds_now() - t0));
        backward_cpu.push_back(1e3 * (cpu_seconds_now() - c0));
    }
    std::printf("LM shape: B=%lld H=%lld T=%lld Dh=%lld causal float32, q/k/v strides (%lld, %lld, %lld, %lld), "
                "%d threads, median of %d\n",
                (long long)B, (long long)H, (long long)T, (long long)Dh, (long long)q.strides()[0],
                (long long)q.strides()[1], (long long)q.strides()[2], (long long)q.strides()[3],
                omp_get_max_threads(), runs);
    std::printf("  attention forward  %8.2f ms wall %8.2f ms CPU\n", median_of(forward), median_of(forward_cpu));
    std::printf("  attention backward %8.2f ms wall %8.2f ms CPU\n", median_of(backward), median_of(backward_cpu));
}
}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--lm") == 0) {
        measure_lm_shape(argc > 2 ? std::atoi(argv[2]) : 21);
        return 0;
    }
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
    measure_lm_shape(quick ? 5 : 21);
    return 0;
}
