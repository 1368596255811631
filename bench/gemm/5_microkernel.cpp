// bench/gemm/5_microkernel.cpp: step 5 of 6, an explicit SIMD micro-kernel.
//
// What changed from step 4: only the 6 x 16 tile. It is now written with AVX2 intrinsics so the
// whole tile lives in 12 ymm registers (6 rows x 2 vectors of 8 floats) for the entire k loop.
// Each k step: 2 vector loads of B, 6 broadcasts of A, 12 fused multiply-adds. With 2 FMA units
// of latency 4, the core needs at least 8 independent accumulators in flight; 12 keep both units
// busy, and 12 + 2 + 1 = 15 of the 16 ymm registers are used. This is the step that takes us from
// "fast loops" to a large fraction of peak on one core.
// Packing and blocking are unchanged from step 4. Without AVX2+FMA it falls back to step 4's tile.
//
//   ./build/bench/gemm/5_microkernel      next: 6_threaded.cpp
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "bench/common.h"

constexpr int MR = 6, NR = 16;
constexpr int MC = 144, KC = 256, NC = 4080;

static void pack_a(int mc, int kc, const float* A, int lda, float* dst) {
    for (int ir = 0; ir < mc; ir += MR, dst += MR * kc)
        for (int k = 0; k < kc; ++k)
            for (int i = 0; i < MR; ++i) dst[k * MR + i] = ir + i < mc ? A[(ir + i) * lda + k] : 0.0f;
}

static void pack_b(int kc, int nc, const float* B, int ldb, float* dst) {
    for (int jr = 0; jr < nc; jr += NR, dst += NR * kc)
        for (int k = 0; k < kc; ++k)
            for (int j = 0; j < NR; ++j) dst[k * NR + j] = jr + j < nc ? B[k * ldb + jr + j] : 0.0f;
}

// C(0:mr, 0:nr) += a_strip @ b_strip over kc, the tile in registers.
static void micro_kernel(int kc, const float* a, const float* b, float* C, int ldc, int mr, int nr) {
    alignas(32) float tile[MR][NR];
#if defined(__AVX2__) && defined(__FMA__)
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < kc; ++k, a += MR, b += NR) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 ai = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ai, b0, c00), c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ai, b0, c10), c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ai, b0, c20), c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ai, b0, c30), c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(ai, b0, c40), c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(ai, b0, c50), c51 = _mm256_fmadd_ps(ai, b1, c51);
    }
    const __m256 rows[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int i = 0; i < MR; ++i) {
        _mm256_store_ps(tile[i], rows[i][0]);
        _mm256_store_ps(tile[i] + 8, rows[i][1]);
    }
#else
    std::memset(tile, 0, sizeof tile);
    for (int k = 0; k < kc; ++k, a += MR, b += NR)
        for (int i = 0; i < MR; ++i)
            for (int j = 0; j < NR; ++j) tile[i][j] += a[i] * b[j];
#endif
    for (int i = 0; i < mr; ++i)
        for (int j = 0; j < nr; ++j) C[i * ldc + j] += tile[i][j];
}

static void gemm_microkernel(int M, int N, int K, const float* A, const float* B, float* C) {
    float* a_pack = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * MC * KC));
    float* b_pack = static_cast<float*>(std::aligned_alloc(64, sizeof(float) * KC * NC));
    std::memset(C, 0, sizeof(float) * size_t(M) * N);
    for (int jc = 0; jc < N; jc += NC) {
        const int nc = std::min(NC, N - jc);
        for (int pc = 0; pc < K; pc += KC) {
            const int kc = std::min(KC, K - pc);
            pack_b(kc, nc, B + pc * N + jc, N, b_pack);
            for (int ic = 0; ic < M; ic += MC) {
                const int mc = std::min(MC, M - ic);
                pack_a(mc, kc, A + ic * K + pc, K, a_pack);
                for (int jr = 0; jr < nc; jr += NR)
                    for (int ir = 0; ir < mc; ir += MR)
                        micro_kernel(kc, a_pack + ir * kc, b_pack + jr * kc, C + (ic + ir) * N + jc + jr,
                                     N, std::min(MR, mc - ir), std::min(NR, nc - jr));
            }
        }
    }
    std::free(a_pack);
    std::free(b_pack);
}

int main() {
    return bench::run_gemm_steps("5_microkernel: step 4 with a 6x16 AVX2+FMA register kernel",
                                 gemm_microkernel, {256, 512, 1024, 2048});
}
