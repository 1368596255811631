// bench/hierarchical_lm.cpp: the measurements demo 05 (issue 8) asks for, on MoELanguageModel
// (nn/hierarchical_lm.h):
//
//   1. activation checkpointing: d256, 4 layers, 8 experts, batch 1, seq 512 and 1024. One AdamW
//      step first (so parameters, gradients and optimizer state all exist), then a second step
//      measured: activation memory = peak live bytes during the step minus the live bytes before
//      it (parameters, gradients, optimizer state, the batch). With and without
//      --checkpoint-activations; the target is at least 40% less.
//   2. attention memory: mg::attention (tiled, online softmax) against attention_reference
//      (T x T scores kept for backward), forward + backward, B=1, H=8, Dh=32, T = 1024 and 2048:
//      peak live bytes above the inputs.
//   3. expert-parallel processing: d256_l2_e8, batch 8 x seq 128, training steps (forward, backward,
//      AdamW) with the experts of each group run one after another (ExpertSchedule::Serial) or one
//      per thread (Parallel), the two alternating, median of the runs; and forward only.
//
//   build/bench/hierarchical_lm [--quick]     (--quick: seq 512 / T 1024 only, fewer runs)
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "bench/common.h"
#include "engine/ops.h"
#include "engine/storage.h"
#include "nn/hierarchical_lm.h"
#include "nn/optim.h"

using namespace mg;

namespace {
double mib(int64_t bytes) { return (double)bytes / (1 << 20); }

Tensor random_ids(int64_t B, int64_t T, Generator& gen) {
    return (rand({B, T}, gen, DType::Float64) * 255.999).to(DType::Int64);
}

// One training step of `model` on (ids, targets).
void train_step(nn::MoELanguageModel& model, nn::AdamW& opt, const Tensor& ids, const Tensor& targets) {
    auto out = model(ids);
    Tensor loss = nn::MoELanguageModel::loss(out.logits, targets) + out.balance_loss;
    opt.zero_grad();
    loss.backward();
    opt.step();
}

struct ActivationMemory {
    int64_t state_bytes = 0;       // live before the measured step: params, grads, AdamW moments, batch
    int64_t activation_bytes = 0;  // peak during the step above that
};

ActivationMemory activation_memory(int64_t seq, bool checkpoint) {
    nn::MoELanguageModelConfig c = nn::MoELanguageModelConfig::named("d256_l4_e8");
    c.max_seq = seq;
    c.checkpoint_activations = checkpoint;
    Generator gen(1);
    nn::MoELanguageModel model(c, gen);
    nn::AdamW opt(model.parameters(), {.lr = 1e-4});
    Tensor ids = random_ids(1, seq, gen), targets = random_ids(1, seq, gen);
    train_step(model, opt, ids, targets);  // gradients and optimizer state now exist
    ActivationMemory m;
    m.state_bytes = memory_stats(Device::CPU).live_bytes;
    reset_peak_memory(Device::CPU);
    train_step(model, opt, ids, targets);
    m.activation_bytes = memory_stats(Device::CPU).peak_bytes - m.state_bytes;
    return m;
}

int64_t attention_peak(bool efficient, int64_t T) {
    const int64_t B = 1, H = 8, Dh = 32;
    Generator gen(7);
    Tensor q = randn({B, H, T, Dh}, gen), k = randn({B, H, T, Dh}, gen), v = randn({B, H, T, Dh}, gen);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    Tensor g = randn({B, H, T, Dh}, gen);
    const int64_t before = memory_stats(Device::CPU).live_bytes;
    reset_peak_memory(Device::CPU);
    const double scale = 1.0 / std::sqrt((double)Dh);
    Tensor out = efficient ? attention(q, k, v, true, scale) : attention_reference(q, k, v, true, scale);
    out.backward(g);
    return memory_stats(Device::CPU).peak_bytes - before;
}

struct Throughput {
    double train_tokens_per_second = 0, forward_tokens_per_second = 0;
};

// Serial and Parallel models with the same weights, timed alternately so that a busy machine
// slows both alike.
void expert_schedules(int runs) {
    const int64_t B = 8, T = 128;
    std::vector<std::unique_ptr<nn::MoELanguageModel>> models;
    std::vector<std::unique_ptr<nn::AdamW>> opts;
    for (nn::ExpertSchedule s : {nn::ExpertSchedule::Serial, nn::ExpertSchedule::Parallel}) {
        nn::MoELanguageModelConfig c = nn::MoELanguageModelConfig::named("d256_l2_e8");
        c.max_seq = T;
        c.schedule = s;
        Generator gen(3);
        models.push_back(std::make_unique<nn::MoELanguageModel>(c, gen));
        opts.push_back(std::make_unique<nn::AdamW>(models.back()->parameters(), nn::AdamWConfig{.lr = 1e-4}));
    }
    Generator data(5);
    Tensor ids = random_ids(B, T, data), targets = random_ids(B, T, data);
    std::vector<double> train_s[2], forward_s[2];
    for (int i = 0; i < 2; ++i) train_step(*models[i], *opts[i], ids, targets);  // warm-up
    for (int r = 0; r < runs; ++r)
        for (int i = 0; i < 2; ++i) {
            double t0 = bench::now_seconds();
            train_step(*models[i], *opts[i], ids, targets);
            train_s[i].push_back(bench::now_seconds() - t0);
            NoGradGuard no_grad;
            t0 = bench::now_seconds();
            (*models[i])(ids);
            forward_s[i].push_back(bench::now_seconds() - t0);
        }
    const char* names[2] = {"Serial (one after another)", "Parallel (one per thread)"};
    std::printf("\n3. expert-parallel processing: d256_l2_e8, batch %lld x seq %lld, %d threads, median of %d runs\n",
                (long long)B, (long long)T, omp_get_max_threads(), runs);
    std::printf("%-28s %16s %18s\n", "experts in a group", "train tok/s", "forward tok/s");
    double train_tps[2], fwd_tps[2];
    for (int i = 0; i < 2; ++i) {
        train_tps[i] = (double)(B * T) / bench::median(train_s[i]);
        fwd_tps[i] = (double)(B * T) / bench::median(forward_s[i]);
        std::printf("%-28s %16.0f %18.0f\n", names[i], train_tps[i], fwd_tps[i]);
    }
    std::printf("parallel / serial: train %.2fx, forward %.2fx\n", train_tps[1] / train_tps[0], fwd_tps[1] / fwd_tps[0]);
}
}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    std::printf("MoELanguageModel measurements (demo 05), float32, CPU, %d threads\n", omp_get_max_threads());

    std::printf("\n1. activation checkpointing: d256_l4_e8, batch 1, one AdamW step; activation memory = peak live "
                "bytes during the step minus live bytes before it\n");
    std::printf("%6s %16s %18s %18s %10s\n", "seq", "state MiB", "plain act. MiB", "ckpt act. MiB", "saving");
    for (int64_t seq : quick ? std::vector<int64_t>{512} : std::vector<int64_t>{512, 1024}) {
        ActivationMemory plain = activation_memory(seq, false), ckpt = activation_memory(seq, true);
        std::printf("%6lld %16.1f %18.1f %18.1f %9.1f%%\n", (long long)seq, mib(plain.state_bytes), mib(plain.activation_bytes),
                    mib(ckpt.activation_bytes), 100.0 * (1.0 - (double)ckpt.activation_bytes / (double)plain.activation_bytes));
        std::fflush(stdout);
    }

    std::printf("\n2. attention memory: forward + backward, B=1 H=8 Dh=32, causal; peak live bytes above the inputs\n");
    std::printf("%6s %22s %22s %10s\n", "T", "attention_reference MiB", "attention MiB", "ratio");
    for (int64_t T : quick ? std::vector<int64_t>{1024} : std::vector<int64_t>{1024, 2048}) {
        const int64_t ref = attention_peak(false, T), eff = attention_peak(true, T);
        std::printf("%6lld %22.1f %22.1f %9.1fx\n", (long long)T, mib(ref), mib(eff), (double)ref / (double)eff);
        std::fflush(stdout);
    }

    expert_schedules(quick ? 3 : 7);
    return 0;
}
