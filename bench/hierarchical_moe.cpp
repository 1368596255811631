// bench/hierarchical_moe.cpp: the three building blocks of docs/nn/hierarchical_moe.md, timed.
//
// Part 1, DomainSpecificAttention: expert cost should grow with k, not with E. The sparse forward
// runs the k chosen queries as k*H heads of one attention call, so k = E is the "every expert on
// every token" cost through the same code; the straightforward reference (one attention_reference
// per expert, O(T^2) memory) is timed too.
// Part 2, HierarchicalMixtureOfExperts: sparse against its dense reference (every expert of every
// group on every token), and against a flat SpecializedExpertNetwork with the same experts per token.
// Part 3, activation checkpointing: 4 residual MLP blocks with dropout, forward + backward with
// and without nn::checkpoint, T = 256, 512, 1024 tokens: the time it costs and the peak bytes it saves.
//
//   OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE build/bench/hierarchical_moe [--quick]
// Forward + backward (sum(y * w)), median process CPU time of a few runs after a warm-up; one line
// per configuration.
#include <omp.h>

#include <algorithm>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/storage.h"
#include "nn/activation_checkpoint.h"
#include "nn/domain_attention.h"
#include "nn/hierarchical_moe.h"
#include "nn/layers.h"

using namespace mg;
using namespace mg::nn;

namespace {
// Process CPU time (all threads), not wall time: on a shared machine the wall clock also counts
// the time other jobs hold the cores, CPU time counts only the work done here. Run with
// OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE so that no thread spins while it waits.
double seconds_now() { return (double)std::clock() / CLOCKS_PER_SEC; }

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

// A residual MLP block with dropout, as in tests/test_activation_checkpoint.cpp.
struct Block : Module {
    Block(int64_t d, int64_t hidden, Generator& gen) {
        ff = register_module("ff", std::make_shared<FeedForward>(
                                       FeedForwardConfig{.d_in = d, .hidden = {hidden}, .dropout = 0.1}, gen));
    }
    Tensor forward(const Tensor& x) { return x + ff->forward(x); }
    std::shared_ptr<FeedForward> ff;
};
}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int runs = quick ? 1 : 5;
    double load = 0;
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf", &load) != 1) load = 0;
        std::fclose(f);
    }
    std::printf("hierarchical_moe: %d threads, load average %.1f; forward+backward, median process CPU time of %d runs\n",
                omp_get_max_threads(), load, runs);

    // ---- Part 1: DomainSpecificAttention -----------------------------------------------------------
    {
        const int64_t B = quick ? 2 : 4, T = quick ? 128 : 256, d = 256, E = 8;
        for (int64_t k : {1, 2, 4, 8}) {
            Generator gen(1);
            DomainSpecificAttention attn({.d_model = d, .experts = E, .k = k, .heads = 1, .head_dim = 64}, gen);
            Tensor x = randn({B, T, d}, gen), w = randn({B, T, d}, gen);
            double t = median_seconds([&] { sum(attn(x).y * w).backward(); attn.zero_grad(); }, runs);
            std::printf("domain attention B=%lld T=%lld d=%lld E=%lld heads=1x64  k=%lld: %8.2f ms  (%.1f MFLOP/token)\n",
                        (long long)B, (long long)T, (long long)d, (long long)E, (long long)k, t * 1e3,
                        attn.flops_per_token(T) / 1e6);
            std::fflush(stdout);
            if (k == 2) {
                double dense = median_seconds([&] { sum(attn.forward_dense_reference(x) * w).backward(); attn.zero_grad(); }, runs);
                std::printf("domain attention k=2 straightforward reference (8 x attention_reference): %8.2f ms  "
                            "reference/sparse %.2f\n", dense * 1e3, dense / t);
            }
        }
    }

    // ---- Part 2: HierarchicalMixtureOfExperts ----------------------------------------------------
    {
        const int64_t T = quick ? 512 : 2048, d = quick ? 128 : 256, hidden = quick ? 512 : 1024;
        Generator gen(2);
        HierarchicalMoEConfig hc{.d_in = d, .hidden = {hidden}, .d_out = d, .groups = 4, .group_k = 1,
                                 .experts_per_group = 4, .k = 2};
        HierarchicalMixtureOfExperts moe(hc, gen);
        MoEConfig fc{.d_in = d, .hidden = {hidden}, .d_out = d, .experts = 16, .k = 2};
        SpecializedExpertNetwork flat(fc, gen);
        Tensor x = randn({T, d}, gen), w = randn({T, d}, gen);
        double sparse = median_seconds([&] { sum(moe(x).y * w).backward(); moe.zero_grad(); }, runs);
        double dense = median_seconds([&] { sum(moe.forward_dense_reference(x) * w).backward(); moe.zero_grad(); }, runs);
        double flat_time = median_seconds([&] { sum(flat(x).y * w).backward(); flat.zero_grad(); }, runs);
        std::printf("hierarchical moe T=%lld expert %lld-%lld-%lld, 4 groups x 4 experts, k_g=1 k=2: sparse %8.2f ms, "
                    "dense reference %8.2f ms (dense/sparse %.2f, FLOP ratio %.1f); flat 16 experts k=2: %8.2f ms\n",
                    (long long)T, (long long)d, (long long)hidden, (long long)d, sparse * 1e3, dense * 1e3, dense / sparse,
                    16.0 / 2.0, flat_time * 1e3);
        std::fflush(stdout);
    }

    // ---- Part 3: activation checkpointing ------------------------------------------------------
    // 4 blocks, as demo 05's measurement; at short sequences the parameter gradients (which no
    // checkpointing removes) are as large as the activations, at long ones the activations dominate.
    for (int64_t T : quick ? std::vector<int64_t>{256} : std::vector<int64_t>{256, 512, 1024}) {
        const int64_t layers = 4, d = 256, hidden = 1024;
        Generator gen(3);
        std::vector<std::shared_ptr<Block>> blocks;
        for (int64_t i = 0; i < layers; ++i) blocks.push_back(std::make_shared<Block>(d, hidden, gen));
        Tensor x = randn({T, d}, gen);
        auto step = [&](bool use_checkpoint) {
            Tensor h = x;
            for (auto& block : blocks) {
                Block& b = *block;
                h = use_checkpoint ? nn::checkpoint(b, [&b](const std::vector<Tensor>& in) { return b.forward(in[0]); }, {h})
                                   : b.forward(h);
            }
            sum(h).backward();
            for (auto& block : blocks) block->zero_grad();
        };
        // Interleaved runs (plain, checkpointed, forward alone), so that a change in the machine's
        // load hits all three alike. The forward alone, recording nothing, is what checkpointing
        // adds to a step: the expected time ratio is 1 + forward / plain.
        std::vector<double> times[3];
        step(false);
        step(true);
        for (int r = 0; r < runs; ++r) {
            for (int which = 0; which < 3; ++which) {
                double t0 = seconds_now();
                if (which < 2) {
                    step(which == 1);
                } else {
                    NoGradGuard no_grad;
                    Tensor h = x;
                    for (auto& block : blocks) h = block->forward(h);
                }
                times[which].push_back(seconds_now() - t0);
            }
        }
        double seconds[3];
        for (int which = 0; which < 3; ++which) {
            std::sort(times[which].begin(), times[which].end());
            seconds[which] = times[which][times[which].size() / 2];
        }
        int64_t peak[2];
        for (int use = 0; use < 2; ++use) {
            const int64_t before = memory_stats(Device::CPU).live_bytes;
            reset_peak_memory(Device::CPU);
            step(use == 1);
            peak[use] = memory_stats(Device::CPU).peak_bytes - before;  // activations and gradients
        }
        // Activation memory as demo 05 defines it: the peak minus parameters (allocated before
        // `before`) and their gradients (float32, one per parameter).
        int64_t grad_bytes = 0;
        for (auto& block : blocks) grad_bytes += 4 * block->num_parameters();
        const double act[2] = {(double)(peak[0] - grad_bytes), (double)(peak[1] - grad_bytes)};
        std::printf("checkpointing %lld blocks %lld-%lld-%lld (dropout 0.1), T=%lld: time plain %.2f ms, checkpointed %.2f ms "
                    "(x%.2f; forward alone %.2f ms, so x%.2f expected); peak above parameters: plain %.1f MB, checkpointed "
                    "%.1f MB; minus %.1f MB of gradients: %.1f MB vs %.1f MB (%.1f%% less)\n",
                    (long long)layers, (long long)d, (long long)hidden, (long long)d, (long long)T, seconds[0] * 1e3,
                    seconds[1] * 1e3, seconds[1] / seconds[0], seconds[2] * 1e3, 1.0 + seconds[2] / seconds[0],
                    peak[0] / 1e6, peak[1] / 1e6, grad_bytes / 1e6, act[0] / 1e6, act[1] / 1e6, 100.0 * (1.0 - act[1] / act[0]));
    }
    return 0;
}
