// bench/train_step_devices.cpp: one training step of the MoE language model on the CPU and on
// the GPU, same model, same batch, in one run; prints the median step time on each and the ratio.
// Issue 5's target: the GPU step at least 20x faster than the 2-core CPU step.
//
// The model is --peer-config of demo 03 (../shared/peers/moe_lm.py): d_model 256, 2 layers,
// 8 heads, seq 128, batch 16, 8 experts of 256-1024-256, top-2, learned positions, untied head,
// AdamW 3e-4. Each step is forward + backward + optimizer step, ending with loss.item() (a
// host read, as a training loop that logs its loss does), so the GPU time includes the wait.
// Without a usable GPU it prints the CPU figure and one line saying why, and exits 0.
//
//   build/bench/train_step_devices [--quick] [--cpu-steps N] [--gpu-steps N]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/common.h"
#include "engine/backend.h"
#include "nn/lm.h"
#include "nn/optim.h"

using namespace mg;

namespace {

nn::LanguageModelConfig peer_config() {
    nn::LanguageModelConfig c;
    c.vocab = 256;
    c.d_model = 256;
    c.layers = 2;
    c.heads = 8;
    c.max_seq = 128;
    c.positions = nn::PositionKind::Learned;
    c.ffn = nn::FFNKind::MoE;
    c.ffn_hidden = 1024;
    c.experts = 8;
    c.k = 2;
    c.tie_head = false;
    return c;
}

// Median milliseconds per step over `steps` timed steps after `warmup` untimed ones.
double median_step_ms(Device device, int warmup, int steps, double* last_loss) {
    Generator gen(0);
    nn::LanguageModel model(peer_config(), gen);
    model.to(device);
    nn::AdamW opt(model.parameters(), {.lr = 3e-4});
    const int64_t B = 16, T = 128;
    std::vector<int64_t> ids(B * (T + 1));
    for (auto& v : ids) v = gen.randint(0, 256);
    Tensor all = Tensor::from_vector(ids, {B, T + 1});
    Tensor input = all.slice(1, 0, T).contiguous().to(device), target = all.slice(1, 1, T + 1).contiguous().to(device);
    std::vector<double> ms;
    for (int i = 0; i < warmup + steps; ++i) {
        const double t0 = bench::now_seconds();
        opt.zero_grad();
        auto out = model(input);
        Tensor loss = nn::LanguageModel::loss(out.logits, target) + out.balance_loss;
        loss.backward();
        opt.step();
        *last_loss = loss.item();
        if (i >= warmup) ms.push_back(1e3 * (bench::now_seconds() - t0));
    }
    return bench::median(ms);
}

}  // namespace

int main(int argc, char** argv) {
    bool quick = false;
    int cpu_steps = 10, gpu_steps = 50;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) quick = true;
        else if (!std::strcmp(argv[i], "--cpu-steps") && i + 1 < argc) cpu_steps = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--gpu-steps") && i + 1 < argc) gpu_steps = std::atoi(argv[++i]);
    }
    if (quick) cpu_steps = 3, gpu_steps = 10;
    const int64_t tokens = 16 * 128;
    double loss_cpu = 0, loss_gpu = 0;
    const double cpu_ms = median_step_ms(Device::CPU, 2, cpu_steps, &loss_cpu);
    std::printf("train_step_devices: peer-config MoE LM (d256 l2 e8 k2, batch 16 x seq 128), AdamW\n");
    std::printf("  cpu  (%2d threads): median %9.2f ms/step  %10.0f tok/s  (loss after %d steps %.4f)\n",
                omp_get_max_threads(), cpu_ms, tokens / (cpu_ms / 1e3), 2 + cpu_steps, loss_cpu);
    if (!device_available(Device::CUDA)) {
        std::printf("  cuda: skipped: %s\n", cuda_unavailable_reason());
        return 0;
    }
    const double gpu_ms = median_step_ms(Device::CUDA, 5, gpu_steps, &loss_gpu);
    std::printf("  cuda             : median %9.2f ms/step  %10.0f tok/s  (loss after %d steps %.4f)\n", gpu_ms,
                tokens / (gpu_ms / 1e3), 5 + gpu_steps, loss_gpu);
    std::printf("  gpu / cpu speed-up: %.1fx (target >= 20x)\n", cpu_ms / gpu_ms);
    return 0;
}
