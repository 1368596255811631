// bench/moe_layer.cpp: the sparse MoE layer against its dense reference. The claim under test:
// expert FLOPs scale with k, not with E. The sparse layer runs each token through its k experts
// only (T*k expert rows in all), the dense reference runs every expert on every token (T*E rows)
// and masks, so the dense/sparse time ratio should approach E/k once the experts dominate.
//
// Part 1: T tokens (default 4096), d 256, one expert = 256 -> 1024 -> 256 (ReLU), E = 4..32,
// k = 1, 2. Forward only (no grad) and forward + backward; median of a few runs each.
// Part 2: demo 01's size (batch 64, 4 experts 20-64-32-3, k = 2), forward + backward with the
// experts run one after another (Serial) or one expert per thread (Parallel): does running
// experts in parallel pay at that size?
//
//   build/bench/moe_layer [--quick]        (--quick: 1024 tokens, d 128, hidden 512, E <= 16)
// One line per configuration.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "nn/moe.h"

using namespace mg;
using namespace mg::nn;

namespace {
double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds of `runs` calls after one warm-up call.
double median_seconds(const std::function<void()>& fn, int runs) {
    fn();
    std::vector<double> times;
    for (int i = 0; i < runs; ++i) {
        double t0 = seconds_now();
        fn();
        times.push_back(seconds_now() - t0);
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

// forward + backward of sum(y * w), gradients dropped afterwards.
void train_step(SpecializedExpertNetwork& moe, const Tensor& x, const Tensor& w, bool dense) {
    Tensor y = dense ? moe.forward_dense_reference(x) : moe(x).y;
    sum(y * w).backward();
    moe.zero_grad();
}
}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int64_t T = quick ? 1024 : 4096, d = quick ? 128 : 256, hidden = quick ? 512 : 1024;
    const int runs = quick ? 1 : 3;
    std::vector<int64_t> expert_counts = quick ? std::vector<int64_t>{4, 16} : std::vector<int64_t>{4, 8, 16, 32};
    // The machine's load: these timings mean little when other jobs share the cores.
    double load = 0;
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf", &load) != 1) load = 0;
        std::fclose(f);
    }
    std::printf("moe_layer: %d threads, load average %.1f; tokens %lld, expert %lld -> %lld -> %lld (ReLU); median of %d runs\n",
                omp_get_max_threads(), load, (long long)T, (long long)d, (long long)hidden, (long long)d, runs);

    for (int64_t E : expert_counts) {
        for (int64_t k : {1, 2}) {
            Generator gen(1);
            MoEConfig c;
            c.d_in = d;
            c.hidden = {hidden};
            c.d_out = d;
            c.experts = E;
            c.k = k;
            SpecializedExpertNetwork moe(c, gen);
            Tensor x = randn({T, d}, gen);
            Tensor w = randn({T, d}, gen);
            const double flops_per_row = (double)moe.experts[0]->flops_per_token();
            double sparse_fwd, dense_fwd;
            {
                NoGradGuard no_grad;
                sparse_fwd = median_seconds([&] { moe(x); }, runs);
                dense_fwd = median_seconds([&] { moe.forward_dense_reference(x); }, runs);
            }
            double sparse_step = median_seconds([&] { train_step(moe, x, w, false); }, runs);
            double dense_step = median_seconds([&] { train_step(moe, x, w, true); }, runs);
            const double sparse_gflop = flops_per_row * T * k / 1e9, dense_gflop = flops_per_row * T * E / 1e9;
            std::printf("E=%-2lld k=%lld  forward: sparse %8.2f ms (%5.1f GFLOP/s) dense %8.2f ms (%5.1f GFLOP/s)"
                        "  dense/sparse %5.2f  |  fwd+bwd: sparse %8.2f ms dense %8.2f ms  dense/sparse %5.2f"
                        "  (E/k = %.1f)\n",
                        (long long)E, (long long)k, sparse_fwd * 1e3, sparse_gflop / sparse_fwd, dense_fwd * 1e3,
                        dense_gflop / dense_fwd, dense_fwd / sparse_fwd, sparse_step * 1e3, dense_step * 1e3, dense_step / sparse_step,
                        (double)E / (double)k);
            std::fflush(stdout);
        }
    }

    // Demo 01's size: is one expert per thread faster than one expert at a time?
    const int demo_runs = quick ? 50 : 400;
    for (ExpertSchedule schedule : {ExpertSchedule::Serial, ExpertSchedule::Parallel}) {
        Generator gen(2);
        MoEConfig c;
        c.d_in = 20;
        c.hidden = {64, 32};
        c.d_out = 3;
        c.experts = 4;
        c.k = 2;
        c.schedule = schedule;
        SpecializedExpertNetwork moe(c, gen);
        Tensor x = randn({64, 20}, gen);
        Tensor w = randn({64, 3}, gen);
        double fwd;
        {
            NoGradGuard no_grad;
            fwd = median_seconds([&] { for (int i = 0; i < 20; ++i) moe(x); }, demo_runs / 20) / 20;
        }
        double step = median_seconds([&] { for (int i = 0; i < 20; ++i) train_step(moe, x, w, false); }, demo_runs / 20) / 20;
        std::printf("demo01 batch=64 E=4 k=2 20-64-32-3  schedule=%-8s forward %7.1f us  fwd+bwd %7.1f us\n",
                    schedule == ExpertSchedule::Serial ? "serial" : "parallel", fwd * 1e6, step * 1e6);
    }

    // Where does one expert per thread stop paying? E = 8, k = 2 at the part-1 width, growing
    // groups: moe.cpp's Auto schedule runs experts in parallel below 256 rows per group.
    for (int64_t tokens : quick ? std::vector<int64_t>{64, 1024} : std::vector<int64_t>{64, 256, 1024, 4096}) {
        double serial = 0, parallel = 0;
        for (ExpertSchedule schedule : {ExpertSchedule::Serial, ExpertSchedule::Parallel}) {
            Generator gen(3);
            MoEConfig c;
            c.d_in = d;
            c.hidden = {hidden};
            c.d_out = d;
            c.experts = 8;
            c.k = 2;
            c.schedule = schedule;
            SpecializedExpertNetwork moe(c, gen);
            Tensor x = randn({tokens, d}, gen);
            Tensor w = randn({tokens, d}, gen);
            const int reps = (int)std::max<int64_t>(1, 4096 / tokens);
            double t = median_seconds([&] { for (int i = 0; i < reps; ++i) train_step(moe, x, w, false); }, runs) / reps;
            (schedule == ExpertSchedule::Serial ? serial : parallel) = t;
        }
        std::printf("schedule E=8 k=2 tokens=%-5lld (~%4lld rows/expert) fwd+bwd: serial %8.2f ms parallel %8.2f ms"
                    "  serial/parallel %.2f\n",
                    (long long)tokens, (long long)(tokens * 2 / 8), serial * 1e3, parallel * 1e3, serial / parallel);
    }
    return 0;
}
