// bench/gemm/3_blocked.cpp: step 3 of 6, cache blocking.
//
// What changed: the i-k-j loops of step 2 now run over blocks. A block of B (KB x NB floats,
// 128 x 512 = 256 KiB, sized for the 512 KiB L2) is reused by every row of A before we move
// on, and the slice of a C row (NB floats, 2 KiB) stays in L1 while k runs over the block.
// Data comes from L1/L2 instead of memory, so big sizes no longer fall off a cliff. What is
// left: each multiply-add still loads and stores C, two memory operations per FMA; the
// FMA units are waiting on loads and stores.
//
//   ./build/bench/gemm/3_blocked          next: 4_packed.cpp
#include <algorithm>
#include <cstring>

#include "bench/common.h"

static void gemm_blocked(int M, int N, int K, const float* A, const float* B, float* C) {
    constexpr int MB = 64, KB = 128, NB = 512;
    std::memset(C, 0, sizeof(float) * size_t(M) * N);
    for (int j0 = 0; j0 < N; j0 += NB)
        for (int k0 = 0; k0 < K; k0 += KB)
            for (int i0 = 0; i0 < M; i0 += MB) {
                const int j1 = std::min(N, j0 + NB), k1 = std::min(K, k0 + KB), i1 = std::min(M, i0 + MB);
                for (int i = i0; i < i1; ++i)
                    for (int k = k0; k < k1; ++k) {
                        const float a_ik = A[i * K + k];
                        for (int j = j0; j < j1; ++j) C[i * N + j] += a_ik * B[k * N + j];
                    }
            }
}

int main() {
    return bench::run_gemm_steps("3_blocked: i-k-j over 64 x 128 x 512 blocks", gemm_blocked,
                                 {256, 512, 1024, 2048});
}
