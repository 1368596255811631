// bench/autograd_overhead.cpp: what the engine's bookkeeping costs when the arithmetic is nothing.
// A chain of 1,000 adds of 16-element tensors, forward + backward; median of 5 runs; reports
// microseconds per op and storage allocations per op (from the CPU allocator's counters).
//
//   build/bench/autograd_overhead [--quick]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

using namespace mg;

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int ops = 1000, runs = quick ? 1 : 5, inner = quick ? 1 : 20;
    Tensor x = Tensor::ones({16});
    x.set_requires_grad(true);
    Tensor c = Tensor::full({16}, 0.5);
    std::vector<double> us_per_op;
    int64_t allocs_per_chain = 0;
    for (int run = 0; run < runs + 1; ++run) {  // run 0 warms up
        auto t0 = std::chrono::steady_clock::now();
        int64_t allocs0 = memory_stats(Device::CPU).allocations;
        for (int rep = 0; rep < inner; ++rep) {
            Tensor y = x;
            for (int i = 0; i < ops; ++i) y = y + c;
            y.sum().backward();
            x.zero_grad();
        }
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        allocs_per_chain = (memory_stats(Device::CPU).allocations - allocs0) / inner;
        if (run > 0) us_per_op.push_back(seconds * 1e6 / (inner * ops));
    }
    std::sort(us_per_op.begin(), us_per_op.end());
    std::printf("autograd_overhead chain=%d numel=16 forward+backward: median %.3f us/op (min %.3f, max %.3f), "
                "%.2f storage allocations/op\n",
                ops, us_per_op[us_per_op.size() / 2], us_per_op.front(), us_per_op.back(), (double)allocs_per_chain / ops);
    return 0;
}
