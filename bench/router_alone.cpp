// bench/router_alone.cpp: the MoE router by itself, warm caches, many calls: the number the demo 04
// grid cannot give cleanly (there the layer runs between router calls and evicts x from the
// caches). One TopKRouter (d_model 512, E 8, k 2, the demo's defaults) on 8 x 1024 random tokens,
// forward with no graph, plus the argsort that groups the slots by expert, as demo 04 times it.
//
//   build/bench/router_alone [--quick] [--calls N]
// Prints, per capacity factor (1.0, 1.5 and dropless), the median ms per call and million tokens/s.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "nn/moe.h"

using namespace mg;

int main(int argc, char** argv) {
    int calls = 200;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) calls = 20;
        else if (!std::strcmp(argv[i], "--calls") && i + 1 < argc) calls = std::max(1, std::atoi(argv[++i]));
        else {
            std::fprintf(stderr, "router_alone: unknown flag %s (flags: --quick, --calls N)\n", argv[i]);
            return 2;
        }
    }
    const int64_t tokens = 8 * 1024;
    for (double cf : {1.0, 1.5, 0.0}) {
        Generator gen(1);
        nn::RouterConfig config;
        config.d_in = 512;
        config.experts = 8;
        config.k = 2;
        config.capacity_factor = cf;
        nn::TopKRouter router(config, gen);
        router.eval();
        const Tensor x = randn({tokens, 512}, gen);
        NoGradGuard no_grad;
        std::vector<double> seconds;
        for (int i = 0; i < calls + 2; ++i) {  // the first two are warm-up
            const auto start = std::chrono::steady_clock::now();
            nn::Routing r = router.forward(x);
            Tensor order = argsort(r.indices.reshape({-1}), 0);
            if (i >= 2) seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        std::sort(seconds.begin(), seconds.end());
        const double median = seconds[seconds.size() / 2];
        std::printf("router_alone d 512 E 8 k 2 tokens %lld cf %s: %.3f ms, %.2f million tokens/s (median of %d)\n",
                    (long long)tokens, cf == 0 ? "dropless" : (cf == 1.0 ? "1.0" : "1.5"), median * 1e3,
                    (double)tokens / median / 1e6, calls);
    }
    return 0;
}
