// bench/peak_flops.cpp: the machine's peak fp32 FLOP/s, the roof that every GEMM number is
// compared with. A register-only loop of independent fused multiply-adds on 1 thread and on all
// threads (no memory traffic at all, so nothing real can go faster).
//
//   ./build/bench/peak_flops [--quick | seconds]   (default 1 s per measurement, median of 3;
//                                                   --quick: 0.1 s)
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench/common.h"

int main(int argc, char** argv) {
    double seconds = 1.0;
    if (argc > 1) seconds = std::strcmp(argv[1], "--quick") == 0 ? 0.1 : std::atof(argv[1]);
    const int all = omp_get_max_threads();
    std::printf("peak fp32 FMA throughput (register-only loop, median of 3 x %.1f s)\n", seconds);
    for (int threads : {1, all}) {
        std::vector<double> runs;
        for (int r = 0; r < 3; ++r) runs.push_back(bench::measure_peak_gflops(threads, seconds));
        std::printf("peak threads=%d gflops=%.1f\n", threads, bench::median(runs));
        if (all == 1) break;
    }
    return 0;
}
