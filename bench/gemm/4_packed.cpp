// bench/gemm/4_packed.cpp: step 4 of 6, the BLIS loop nest with packed panels and a register tile.
//
// What changed: (1) C is computed in small MR x NR = 6 x 16 tiles held in local variables for the
// whole k loop, so C is loaded and stored once per tile instead of once per multiply-add. Each k
// step is a rank-1 update: 6 values of A times 16 values of B, 96 multiply-adds for 22 loads.
// (2) Packing: before the tiles run, a KC x NC panel of B is copied into NR-wide strips and an
// MC x KC block of A into MR-tall strips, both laid out in the exact order the tile reads them
// (contiguous, aligned, zero-padded at the edges). The copy costs O(MK + KN) and is reused
// O(N) / O(M) times; the tile loop then streams through memory with no strides at all.
// Blocks: MC x KC of A (144 x 256, 144 KiB) in L2, KC x NR of B (16 KiB) in L1, B panel in L3.
// The tile is plain C++ here; whether it stays in registers is up to the compiler (step 5 makes
// sure of it with intrinsics).
//
//   ./build/bench/gemm/4_packed           next: 5_microkernel.cpp
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "bench/common.h"

constexpr int MR = 6, NR = 16;                  // register tile
constexpr int MC = 144, KC = 256, NC = 4080;    // cache blocks (MC % MR == 0, NC % NR == 0)

// A(ic.., pc..) (mc x kc) -> strips of MR rows, each stored k-major: strip[k * MR + i].
static void pack_a(int mc, int kc, const float* A, int lda, float* dst) {
    for (int ir = 0; ir < mc; ir += MR, dst += MR * kc)
        for (int k = 0; k < kc; ++k)
            for (int i = 0; i < MR; ++i) dst[k * MR + i] = ir + i < mc ? A[(ir + i) * lda + k] : 0.0f;
}

// B(pc.., jc..) (kc x nc) -> strips of NR columns, each stored k-major: strip[k * NR + j].
static void pack_b(int kc, int nc, const float* B, int ldb, float* dst) {
    for (int jr = 0; jr < nc; jr += NR, dst += NR * kc)
        for (int k = 0; k < kc; ++k)
            for (int j = 0; j < NR; ++j) dst[k * NR + j] = jr + j < nc ? B[k * ldb + jr + j] : 0.0f;
}

// C(0:mr, 0:nr) += a_strip @ b_strip over kc. The unroll pragmas matter: with both loops fully
// unrolled g++ 12 keeps acc in vector registers; without them it keeps acc in memory and this
// step runs at ~4 GFLOP/s, slower than step 2.
static void micro_tile(int kc, const float* a, const float* b, float* C, int ldc, int mr, int nr) {
    float acc[MR][NR] = {};
    for (int k = 0; k < kc; ++k, a += MR, b += NR)
#pragma GCC unroll 6
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
            for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
    for (int i = 0; i < mr; ++i)
        for (int j = 0; j < nr; ++j) C[i * ldc + j] += acc[i][j];
}

static void gemm_packed(int M, int N, int K, const float* A, const float* B, float* C) {
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
                        micro_tile(kc, a_pack + ir * kc, b_pack + jr * kc, C + (ic + ir) * N + jc + jr,
                                   N, std::min(MR, mc - ir), std::min(NR, nc - jr));
            }
        }
    }
    std::free(a_pack);
    std::free(b_pack);
}

int main() {
    return bench::run_gemm_steps("4_packed: MC/KC/NC blocks, packed panels, 6x16 C++ tile", gemm_packed,
                                 {256, 512, 1024, 2048});
}
