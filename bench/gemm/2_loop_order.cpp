// bench/gemm/2_loop_order.cpp: step 2 of 6, the same arithmetic in i-k-j order.
//
// What changed: the k and j loops are swapped. Row i of C is now built as a sum of rows of B,
// each scaled by one number A(i,k):  C(i,:) += A(i,k) * B(k,:).  The inner loop reads B and C
// contiguously, every cache line is fully used, and the iterations are independent, so the
// compiler turns it into AVX2 fused multiply-adds (8 floats at a time). Same flops, many
// times faster. What is left: for large N the row of C and the rows of B no longer fit in L1/L2,
// so each multiply-add needs a load and a store from far away (memory-bound).
//
//   ./build/bench/gemm/2_loop_order       next: 3_blocked.cpp
#include <cstring>

#include "bench/common.h"

static void gemm_loop_order(int M, int N, int K, const float* A, const float* B, float* C) {
    std::memset(C, 0, sizeof(float) * size_t(M) * N);
    for (int i = 0; i < M; ++i)
        for (int k = 0; k < K; ++k) {
            const float a_ik = A[i * K + k];
            for (int j = 0; j < N; ++j) C[i * N + j] += a_ik * B[k * N + j];
        }
}

int main() {
    return bench::run_gemm_steps("2_loop_order: i-k-j, inner loop contiguous and vectorised",
                                 gemm_loop_order, {256, 512, 1024, 2048});
}
