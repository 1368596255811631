// bench/level1_step.cpp: one training step of demo 01's MoE (4 experts 20-64-32-3, top-2, Switch
// balance loss, Adam, batch 64), timed the way ../shared/peers/level1_moe.py times PyTorch's:
// forward + backward + optimizer step per batch, median over the steps of several epochs.
// It also runs the PyTorch peer in the same run (at its best settings, see
// ../shared/peers/README.md) and prints the ratio; --no-peer skips that.
//
//   build/bench/level1_step [--quick] [--no-peer]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "demos/common/datasets.h"
#include "nn/moe.h"
#include "nn/optim.h"

using namespace mg;
using namespace mg::demo;

int main(int argc, char** argv) {
    bool quick = false, peer = true;
    for (int i = 1; i < argc; ++i) {
        quick = quick || std::strcmp(argv[i], "--quick") == 0;
        peer = peer && std::strcmp(argv[i], "--no-peer") != 0;
    }
    Generator gen(0);
    SentimentSplits data = sentiment_dataset({}, gen);
    Standardizer::fit(data.train).apply(data.train);
    nn::SpecializedExpertNetwork moe({.d_in = 20, .hidden = {64, 32}, .d_out = 3, .experts = 4, .k = 2,
                                      .balance_alpha = 0.01}, gen);
    nn::Adam opt(moe.parameters(), {.lr = 1e-3});
    BatchIterator batches(data.train, 64, gen);
    std::vector<double> step_ms;
    const int epochs = quick ? 1 : 5;
    for (int epoch = 0; epoch < epochs; ++epoch) {
        Batch b;
        while (batches.next(b)) {
            auto t0 = std::chrono::steady_clock::now();
            auto out = moe(b.x);
            Tensor loss = cross_entropy(out.y, b.y) + out.balance_loss;
            opt.zero_grad();
            loss.backward();
            opt.step();
            step_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
    }
    std::sort(step_ms.begin(), step_ms.end());
    const double ours = step_ms[step_ms.size() / 2];
    std::printf("level1_step ours: median %.4f ms/step over %zu steps (batch 64, 4 experts, top-2, Adam)\n", ours,
                step_ms.size());
    if (peer) {
        // The peer prints one JSON line with "step_ms_median".
        std::string cmd = "cd ../shared/peers 2>/dev/null || cd /work/shared/peers; env -u OPENBLAS_CORETYPE -u "
                          "OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 level1_moe.py --threads 2 " +
                          std::string(quick ? "--epochs 1" : "--epochs 5");
        FILE* p = popen(cmd.c_str(), "r");
        char line[8192];
        std::string text;
        while (p && fgets(line, sizeof line, p)) text += line;
        if (p) pclose(p);
        size_t at = text.find("\"step_ms_median\": ");
        if (at == std::string::npos) {
            std::printf("level1_step peer: could not run the PyTorch peer (is python3-torch installed?)\n");
            return 0;
        }
        double theirs = std::stod(text.substr(at + 18));
        std::printf("level1_step peer (PyTorch, 2 threads, best settings): median %.4f ms/step\n", theirs);
        std::printf("level1_step speedup ours vs PyTorch: %.2fx\n", theirs / ours);
    }
    return 0;
}
