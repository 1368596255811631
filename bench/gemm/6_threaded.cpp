// bench/gemm/6_threaded.cpp: step 6 of 6, all cores: the engine's own sgemm (engine/cpu/gemm.cpp).
//
// What changed from step 5, all inside mg::cpu::sgemm:
//  - OpenMP threads. C is cut into a grid of rectangles, one per thread (2 threads: two halves,
//    by rows or by columns, whichever packs less twice); each thread runs step 5's loop nest on
//    its rectangle with its own buffers, so there is no barrier and nothing shared. K is never
//    split, so the result is bitwise the same for any thread count.
//  - The tile is written back as C = alpha * AB + beta * C straight from registers (no temporary
//    tile) when it is whole; general strides (transposed views) are handled by the packing.
//  - Small products run on one thread and skip packing A (the kernel reads A in place).
// The table shows 1 thread and then all threads.
//
//   ./build/bench/gemm/6_threaded         compare: ./build/bench/gemm_vs_openblas
#include <omp.h>

#include "bench/common.h"
#include "engine/cpu/gemm.h"

static void gemm_engine(int M, int N, int K, const float* A, const float* B, float* C) {
    mg::cpu::sgemm(M, N, K, 1.0f, A, K, 1, B, N, 1, 0.0f, C, N, 1);
}

int main() {
    const int threads = omp_get_max_threads();
    int status = 0;
    for (int t : {1, threads}) {
        omp_set_num_threads(t);
        std::printf("[%d thread%s, kernel %s]\n", t, t > 1 ? "s" : "", mg::cpu::sgemm_kernel_name());
        // One thread: CPU time, like steps 1-5. Several: wall clock (what the user waits for).
        status |= bench::run_gemm_steps("6_threaded: mg::cpu::sgemm", gemm_engine, {256, 512, 1024, 2048},
                                        /*cpu_time=*/t == 1);
        if (threads == 1) break;
    }
    return status;
}
