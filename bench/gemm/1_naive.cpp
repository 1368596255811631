// bench/gemm/1_naive.cpp: step 1 of 6, the textbook triple loop.
//
// C(i,j) = sum_k A(i,k) * B(k,j), all row-major. The inner loop walks down a column of B: each
// step jumps N floats, so nearly every load of B misses the cache line the previous one used,
// and the loop is one long dependency chain on `sum` (no vectorisation, no overlap). Expect
// around 1 GFLOP/s, a few percent of the machine's peak (bench/peak_flops).
//
//   ./build/bench/gemm/1_naive            next: 2_loop_order.cpp
#include "bench/common.h"

static void gemm_naive(int M, int N, int K, const float* A, const float* B, float* C) {
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            float sum = 0;
            for (int k = 0; k < K; ++k) sum += A[i * K + k] * B[k * N + j];
            C[i * N + j] = sum;
        }
}

int main() { return bench::run_gemm_steps("1_naive: i-j-k triple loop", gemm_naive, {256, 512, 1024}); }
