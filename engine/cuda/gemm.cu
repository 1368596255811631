// engine/cuda/gemm.cu: our SGEMM, as five numbered versions, each a step of the well-known path
// from a naive kernel to one within reach of cuBLAS; and the dispatcher that picks one.
//
// The interface and its contract (strides, alpha/beta, batches, determinism) are in gemm.h.
// Every version computes each element of C in ONE thread, summing over k in order, so the
// result is deterministic. What changes from version to version is where the operands are read
// from (global memory, shared memory, registers) and how many times each loaded value is reused:
//
//   version               block tile   outputs/thread   each A,B value loaded from global is used
//   v1 naive              8 x 32       1                once (per thread that reads it)
//   v2 smem_tiled         32 x 32      1                32 times, from shared memory
//   v3 register_blocked   128 x 128    8 x 8            128 times; 8x8 outer product per k in registers
//   v4 vectorized         128 x 128    8 x 8            as v3, but 4 floats per load instruction
//   v5 double_buffered    128 x 128    8 x 8            as v4, next tile's loads overlap this tile's math
//
// A GPU does many FLOPs in the time it reads one float from DRAM (H100 SXM spec sheet: ~67
// TFLOP/s fp32 against ~3.35 TB/s, so ~80 FLOPs per float read), so a GEMM is fast only when each
// value read is reused many times from faster memory: shared memory (per block) and, fastest,
// registers (per thread).
//
// Batches: blockIdx.z is the product's index; the block finds its operands with GemmBatch.
// Grid: blockIdx.x walks tiles of columns of C, blockIdx.y tiles of rows (the host splits a
// problem whose grid would exceed CUDA's 65535 limit on y or z into several launches).
// Edges: every kernel checks bounds, so every M, N, K works (1, odd, not a multiple of the tile).
#include <stdexcept>

#include "engine/cuda/common.cuh"
#include "engine/cuda/gemm.h"

namespace mg::cuda {

GemmBatch single_product() {
    GemmBatch b;
    b.numel = 1;  // nd = 0: every offset is 0
    return b;
}

GemmBatch strided_batch(int64_t count, int64_t stride_a, int64_t stride_b, int64_t stride_c) {
    GemmBatch b;
    b.numel = count;
    if (count > 1) {
        b.nd = 1;
        b.sizes[0] = count;
        b.strides[0][0] = stride_a;
        b.strides[0][1] = stride_b;
        b.strides[0][2] = stride_c;
    }
    return b;
}

namespace {

// alpha * acc, where alpha == 0 means "A and B are not used" (as in BLAS and the CPU GEMM): 0, even
// if A or B hold Inf or NaN.
template <typename T> __device__ __forceinline__ T scaled(T alpha, T acc) { return alpha == T(0) ? T(0) : alpha * acc; }

// C(i,j) = alpha * acc + beta * C(i,j), reading C only when beta != 0 (beta == 0: write-only).
template <typename T> __device__ __forceinline__ void write_c(T* c, T acc, T alpha, T beta) {
    *c = beta == T(0) ? scaled(alpha, acc) : scaled(alpha, acc) + beta * *c;
}

// =================================================================================================
// v1: naive. One thread per element of C: acc = sum_k A(i,k) * B(k,j), read straight from global
// memory. threadIdx.x walks columns j, so the 32 threads of a warp read 32 neighbouring B(k,j)
// (one coalesced transaction for row-major B) and the same A(i,k) (a broadcast). Swapping x and y
// (threadIdx.x -> rows) makes every warp read 32 scattered values: try it with bench/gpu_gemm.
// Every A and B value is fetched again by every thread that needs it: memory bound.
constexpr int kV1Cols = 32, kV1Rows = 8;

template <typename T> __global__ void __launch_bounds__(kV1Cols* kV1Rows) sgemm_v1_naive(GemmArgs<T> g, int64_t z0) {
    const int64_t j = (int64_t)blockIdx.x * kV1Cols + threadIdx.x;
    const int64_t i = (int64_t)blockIdx.y * kV1Rows + threadIdx.y;
    if (i >= g.M || j >= g.N) return;
    int64_t off[3];
    g.batch.offsets(z0 + blockIdx.z, off);
    const T* a = g.A + off[0] + i * g.rs_a;  // row i of A
    const T* b = g.B + off[1] + j * g.cs_b;  // column j of B
    T acc = 0;
    for (int64_t k = 0; k < g.K; ++k) acc += a[k * g.cs_a] * b[k * g.rs_b];
    write_c(g.C + off[2] + i * g.rs_c + j * g.cs_c, acc, g.alpha, g.beta);
}

// =================================================================================================
// Shared by v2 and v3: copy a BK x BMN tile of an operand from global memory into shared memory,
// stored k-major: tile[k][mn]. The operand is "MN x K": A is M x K as it is; B is read as its
// transpose, N x K, so both tiles have the same layout and the inner loops read tile[k][...] rows.
// Element (mn, k) is X[mn*s_mn + k*s_k]; outside MN x K the tile gets zeros (so edges need no
// special case in the math). Consecutive threads take consecutive addresses of whichever index
// has unit stride, so the global reads coalesce for row-major and transposed operands alike.
// LD, the row length of the tile in shared memory, is padded (BMN + 1 or + 4) so that threads
// writing down a column of the tile (the k-contiguous case) hit different memory banks.
template <typename T, int BK, int BMN, int LD, int THREADS>
__device__ __forceinline__ void load_tile_scalar(T (*tile)[LD], const T* X, int64_t s_mn, int64_t s_k, int64_t mn0,
                                                 int64_t k0, int64_t MN, int64_t K) {
    const bool k_contiguous = s_k == 1;
    for (int e = threadIdx.y * blockDim.x + threadIdx.x; e < BK * BMN; e += THREADS) {
        const int k = k_contiguous ? e % BK : e / BMN;
        const int mn = k_contiguous ? e / BK : e % BMN;
        const int64_t gmn = mn0 + mn, gk = k0 + k;
        tile[k][mn] = (gmn < MN && gk < K) ? X[gmn * s_mn + gk * s_k] : T(0);
    }
}

// =================================================================================================
// v2: shared-memory tiling. A block of 32 x 32 threads computes a 32 x 32 tile of C. It walks K
// in steps of 32: the block copies a 32x32 tile of A and one of B into shared memory (each thread
// one element of each), waits (__syncthreads), then each thread does 32 multiply-adds from shared
// memory. Each value read from global memory now serves 32 threads: 32x fewer global loads per
// FMA than v1. Shared memory is still read twice per FMA, which is what v3 removes.
// Also the float64 kernel (dgemm): any T.
constexpr int kV2Tile = 32;

template <typename T> __global__ void __launch_bounds__(kV2Tile* kV2Tile) sgemm_v2_smem_tiled(GemmArgs<T> g, int64_t z0) {
    __shared__ T As[kV2Tile][kV2Tile + 1];  // As[k][m]: A(m0+m, k0+k)
    __shared__ T Bs[kV2Tile][kV2Tile + 1];  // Bs[k][n]: B(k0+k, n0+n)
    const int tx = threadIdx.x, ty = threadIdx.y;  // this thread's column and row in the tile
    const int64_t m0 = (int64_t)blockIdx.y * kV2Tile, n0 = (int64_t)blockIdx.x * kV2Tile;
    int64_t off[3];
    g.batch.offsets(z0 + blockIdx.z, off);
    const T* A = g.A + off[0];
    const T* B = g.B + off[1];
    T acc = 0;
    for (int64_t k0 = 0; k0 < g.K; k0 += kV2Tile) {
        load_tile_scalar<T, kV2Tile, kV2Tile, kV2Tile + 1, kV2Tile * kV2Tile>(As, A, g.rs_a, g.cs_a, m0, k0, g.M, g.K);
        load_tile_scalar<T, kV2Tile, kV2Tile, kV2Tile + 1, kV2Tile * kV2Tile>(Bs, B, g.cs_b, g.rs_b, n0, k0, g.N, g.K);
        __syncthreads();  // the tiles are complete
        // A warp is 32 threads of one row ty: As[k][ty] is one broadcast, Bs[k][tx] 32 banks.
        for (int k = 0; k < kV2Tile; ++k) acc += As[k][ty] * Bs[k][tx];
        __syncthreads();  // everyone is done reading before the next tiles overwrite them
    }
    const int64_t i = m0 + ty, j = n0 + tx;
    if (i < g.M && j < g.N) write_c(g.C + off[2] + i * g.rs_c + j * g.cs_c, acc, g.alpha, g.beta);
}

// =================================================================================================
// v3: register blocking. A block of 256 threads computes a 128 x 128 tile of C, each thread an
// 8 x 8 sub-tile held in 64 registers. Per step of k the thread reads 8 values of A and 8 of B
// from shared memory into registers and does their 8 x 8 outer product: 64 FMAs for 16 shared
// reads (v2: 1 FMA for 2). K advances in steps of BK = 8 (a 128 x 8 tile of A and 8 x 128 of B).
// The thread's rows are ty + 16*i and columns tx + 16*j (i, j < 8): in a warp (16 columns x 2
// rows of threads) neighbouring threads read neighbouring Bs entries (no bank conflicts) and
// write neighbouring C entries (coalesced).
// Still scalar loads with bounds checks, any strides: v3 is the general fast path.
// BM x BN may be 128 x 128 or 64 x 64 (smaller tiles when a problem has few tiles; see use_small_tiles).
constexpr int kBK = 8;       // the k-depth of one tile (v3, v4, v5)
constexpr int kTM = 8;       // rows of C per thread
constexpr int kTN = 8;       // columns of C per thread

template <int BM, int BN> __global__ void __launch_bounds__((BM / kTM) * (BN / kTN))
    sgemm_v3_register_blocked(GemmArgs<float> g, int64_t z0) {
    constexpr int TX = BN / kTN, TY = BM / kTM, THREADS = TX * TY;
    __shared__ float As[kBK][BM + 4];  // As[k][m]
    __shared__ float Bs[kBK][BN + 4];  // Bs[k][n]
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const int64_t m0 = (int64_t)blockIdx.y * BM, n0 = (int64_t)blockIdx.x * BN;
    int64_t off[3];
    g.batch.offsets(z0 + blockIdx.z, off);
    float acc[kTM][kTN] = {};
    for (int64_t k0 = 0; k0 < g.K; k0 += kBK) {
        load_tile_scalar<float, kBK, BM, BM + 4, THREADS>(As, g.A + off[0], g.rs_a, g.cs_a, m0, k0, g.M, g.K);
        load_tile_scalar<float, kBK, BN, BN + 4, THREADS>(Bs, g.B + off[1], g.cs_b, g.rs_b, n0, k0, g.N, g.K);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kBK; ++k) {
            float a[kTM], b[kTN];
#pragma unroll
            for (int i = 0; i < kTM; ++i) a[i] = As[k][ty + TY * i];
#pragma unroll
            for (int j = 0; j < kTN; ++j) b[j] = Bs[k][tx + TX * j];
#pragma unroll
            for (int i = 0; i < kTM; ++i)
#pragma unroll
                for (int j = 0; j < kTN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    float* C = g.C + off[2];
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
        const int64_t row = m0 + ty + TY * i;
        if (row >= g.M) continue;
#pragma unroll
        for (int j = 0; j < kTN; ++j) {
            const int64_t col = n0 + tx + TX * j;
            if (col < g.N) write_c(C + row * g.rs_c + col * g.cs_c, acc[i][j], g.alpha, g.beta);
        }
    }
}

// =================================================================================================
// Shared by v4 and v5: float4 tile loads. One load instruction moves 16 bytes instead of 4, so a
// tile takes a quarter of the instructions. A thread loads its float4s into registers (load) and
// then writes them to shared memory (store); v5 puts the math of the current tile between the two.
// Each float4 is 4 neighbours along the operand's unit-stride index:
//  - K_CONTIGUOUS (row-major A, transposed B): 4 consecutive k of one row mn; the store
//    transposes them into tile[k..k+3][mn], so the inner loop still reads tile[k][...] rows.
//  - otherwise (transposed A, row-major B): 4 consecutive mn at one k, stored as one float4.
// ld is the operand's other stride: element (mn, k) is X[mn*ld + k] or X[k*ld + mn].
// Vector loads need the whole tile inside the matrix and 16-byte alignment (the dispatcher
// checks the alignment once for the whole problem); edge tiles take the `vector == false` path:
// the same float4 groups read element by element with bounds checks, zero outside.
template <int BMN, int THREADS, bool K_CONTIGUOUS> struct TileLoader {
    static constexpr int kGroups = kBK * BMN / 4;  // float4 groups in one BK x BMN tile
    static constexpr int kPerThread = kGroups / THREADS;
    static_assert(kGroups % THREADS == 0, "every thread loads the same number of float4s");
    float4 r[kPerThread];

    // Where group g of the tile starts: row mn, depth k (the 4 elements run along k or mn).
    __device__ static void group(int g, int& mn, int& k) {
        if (K_CONTIGUOUS) {
            mn = g / (kBK / 4);
            k = (g % (kBK / 4)) * 4;
        } else {
            k = g / (BMN / 4);
            mn = (g % (BMN / 4)) * 4;
        }
    }
    __device__ static int64_t at(int64_t mn, int64_t k, int64_t ld) { return K_CONTIGUOUS ? mn * ld + k : k * ld + mn; }

    __device__ void load(const float* X, int64_t ld, int64_t mn0, int64_t k0, int64_t MN, int64_t K, bool vector) {
#pragma unroll
        for (int q = 0; q < kPerThread; ++q) {
            int mn, k;
            group(threadIdx.x + q * THREADS, mn, k);
            const int64_t gmn = mn0 + mn, gk = k0 + k;
            if (vector) {
                r[q] = *reinterpret_cast<const float4*>(X + at(gmn, gk, ld));
            } else {
                float v[4];
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    const int64_t emn = K_CONTIGUOUS ? gmn : gmn + c, ek = K_CONTIGUOUS ? gk + c : gk;
                    v[c] = (emn < MN && ek < K) ? X[at(emn, ek, ld)] : 0.0f;
                }
                r[q] = make_float4(v[0], v[1], v[2], v[3]);
            }
        }
    }
    __device__ void store(float (*tile)[BMN + 4]) const {
#pragma unroll
        for (int q = 0; q < kPerThread; ++q) {
            int mn, k;
            group(threadIdx.x + q * THREADS, mn, k);
            if (K_CONTIGUOUS) {  // transpose: 4 values of k go down column mn
                tile[k + 0][mn] = r[q].x;
                tile[k + 1][mn] = r[q].y;
                tile[k + 2][mn] = r[q].z;
                tile[k + 3][mn] = r[q].w;
            } else {
                *reinterpret_cast<float4*>(&tile[k][mn]) = r[q];
            }
        }
    }
};

// The thread's 8 x 8 sub-tile in v4 and v5: rows ty*4 + {0..3} and BM/2 + ty*4 + {0..3}, columns
// likewise with tx. Two float4s per operand per k: neighbouring threads read neighbouring 16-byte
// chunks of shared memory (conflict-free) and write neighbouring float4s of C (coalesced).
template <int HALF> __device__ __forceinline__ int sub_tile_index(int t, int i) {
    return i < 4 ? t * 4 + i : HALF + t * 4 + (i - 4);
}

// acc += As^T Bs over one BK-deep tile, reading shared memory as float4s.
template <int BM, int BN>
__device__ __forceinline__ void multiply_tile(const float (*As)[BM + 4], const float (*Bs)[BN + 4], float (&acc)[kTM][kTN],
                                              int tx, int ty) {
#pragma unroll
    for (int k = 0; k < kBK; ++k) {
        const float4 a0 = *reinterpret_cast<const float4*>(&As[k][ty * 4]);
        const float4 a1 = *reinterpret_cast<const float4*>(&As[k][BM / 2 + ty * 4]);
        const float4 b0 = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
        const float4 b1 = *reinterpret_cast<const float4*>(&Bs[k][BN / 2 + tx * 4]);
        const float a[kTM] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float b[kTN] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int i = 0; i < kTM; ++i)
#pragma unroll
            for (int j = 0; j < kTN; ++j) acc[i][j] += a[i] * b[j];
    }
}

// Writes the thread's 8 x 8 results: float4 stores where C allows it (c_vector: unit column
// stride, aligned rows) and the tile is inside C, otherwise element by element with bounds checks.
template <int BM, int BN>
__device__ __forceinline__ void write_sub_tile(const GemmArgs<float>& g, float* C, const float (&acc)[kTM][kTN], int64_t m0,
                                               int64_t n0, int tx, int ty, bool c_vector) {
    const bool inside = m0 + BM <= g.M && n0 + BN <= g.N;
#pragma unroll
    for (int i = 0; i < kTM; ++i) {
        const int64_t row = m0 + sub_tile_index<BM / 2>(ty, i);
        if (c_vector && inside) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float4* p = reinterpret_cast<float4*>(C + row * g.rs_c + n0 + sub_tile_index<BN / 2>(tx, 4 * h));
                float4 v = make_float4(scaled(g.alpha, acc[i][4 * h]), scaled(g.alpha, acc[i][4 * h + 1]),
                                       scaled(g.alpha, acc[i][4 * h + 2]), scaled(g.alpha, acc[i][4 * h + 3]));
                if (g.beta != 0.0f) {
                    const float4 old = *p;
                    v.x += g.beta * old.x;
                    v.y += g.beta * old.y;
                    v.z += g.beta * old.z;
                    v.w += g.beta * old.w;
                }
                *p = v;
            }
        } else if (row < g.M) {
#pragma unroll
            for (int j = 0; j < kTN; ++j) {
                const int64_t col = n0 + sub_tile_index<BN / 2>(tx, j);
                if (col < g.N) write_c(C + row * g.rs_c + col * g.cs_c, acc[i][j], g.alpha, g.beta);
            }
        }
    }
}

// What the host works out once for v4/v5: each operand's unit-stride direction and other stride.
struct VectorLayout {
    int64_t lda = 0, ldb = 0;  // the non-unit stride of A and of B
    bool c_vector = false;     // C can take float4 stores
};

// =================================================================================================
// v4: vectorised loads. v3's tiles and 8x8 register blocking, but global loads move a float4
// each (one per operand per thread per tile, at 128 x 128), A's tile is transposed on its way
// into shared memory (As[k][m], so that the 8 values of A a thread needs at step k are 2 float4s
// in a row), and the inner loop reads shared memory as float4s too: 4x fewer load instructions
// everywhere. Load, wait, compute, wait: while a block waits for its loads its warps are idle,
// which only other resident blocks can hide.
template <int BM, int BN, bool A_K_CONTIGUOUS, bool B_K_CONTIGUOUS>
__global__ void __launch_bounds__((BM / kTM) * (BN / kTN), 2) sgemm_v4_vectorized(GemmArgs<float> g, VectorLayout v, int64_t z0) {
    constexpr int TX = BN / kTN, TY = BM / kTM, THREADS = TX * TY;
    __shared__ __align__(16) float As[kBK][BM + 4];  // As[k][m]
    __shared__ __align__(16) float Bs[kBK][BN + 4];  // Bs[k][n]
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const int64_t m0 = (int64_t)blockIdx.y * BM, n0 = (int64_t)blockIdx.x * BN;
    int64_t off[3];
    g.batch.offsets(z0 + blockIdx.z, off);
    TileLoader<BM, THREADS, A_K_CONTIGUOUS> load_a;
    TileLoader<BN, THREADS, B_K_CONTIGUOUS> load_b;  // B read as N x K
    const bool a_inside = m0 + BM <= g.M, b_inside = n0 + BN <= g.N;
    float acc[kTM][kTN] = {};
    for (int64_t k0 = 0; k0 < g.K; k0 += kBK) {
        const bool k_inside = k0 + kBK <= g.K;
        load_a.load(g.A + off[0], v.lda, m0, k0, g.M, g.K, a_inside && k_inside);
        load_b.load(g.B + off[1], v.ldb, n0, k0, g.N, g.K, b_inside && k_inside);
        load_a.store(As);
        load_b.store(Bs);
        __syncthreads();
        multiply_tile<BM, BN>(As, Bs, acc, tx, ty);
        __syncthreads();
    }
    write_sub_tile<BM, BN>(g, g.C + off[2], acc, m0, n0, tx, ty, v.c_vector);
}

// =================================================================================================
// v5: double buffering. Two pairs of shared tiles. While the block multiplies the tiles in buffer
// `cur`, each thread has already issued the global loads of the NEXT tiles into registers; the
// loads travel while the FMAs run, and only then are the registers written to the other buffer.
// One __syncthreads per tile instead of two: the buffer being written was last read one step ago,
// before the previous barrier. Same math and the same order of additions as v4 (bitwise equal).
template <int BM, int BN, bool A_K_CONTIGUOUS, bool B_K_CONTIGUOUS>
__global__ void __launch_bounds__((BM / kTM) * (BN / kTN), 2)
    sgemm_v5_double_buffered(GemmArgs<float> g, VectorLayout v, int64_t z0) {
    constexpr int TX = BN / kTN, TY = BM / kTM, THREADS = TX * TY;
    __shared__ __align__(16) float As[2][kBK][BM + 4];
    __shared__ __align__(16) float Bs[2][kBK][BN + 4];
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX;
    const int64_t m0 = (int64_t)blockIdx.y * BM, n0 = (int64_t)blockIdx.x * BN;
    int64_t off[3];
    g.batch.offsets(z0 + blockIdx.z, off);
    const float* A = g.A + off[0];
    const float* B = g.B + off[1];
    TileLoader<BM, THREADS, A_K_CONTIGUOUS> load_a;
    TileLoader<BN, THREADS, B_K_CONTIGUOUS> load_b;
    const bool a_inside = m0 + BM <= g.M, b_inside = n0 + BN <= g.N;
    float acc[kTM][kTN] = {};
    const int64_t tiles = (g.K + kBK - 1) / kBK;
    if (tiles > 0) {  // prologue: tile 0 into buffer 0
        const bool k_inside = kBK <= g.K;
        load_a.load(A, v.lda, m0, 0, g.M, g.K, a_inside && k_inside);
        load_b.load(B, v.ldb, n0, 0, g.N, g.K, b_inside && k_inside);
        load_a.store(As[0]);
        load_b.store(Bs[0]);
        __syncthreads();
    }
    for (int64_t t = 0; t < tiles; ++t) {
        const int cur = (int)(t & 1);
        const bool more = t + 1 < tiles;
        if (more) {  // issue the next tile's global loads now; their data is needed only after the math
            const int64_t k0 = (t + 1) * kBK;
            const bool k_inside = k0 + kBK <= g.K;
            load_a.load(A, v.lda, m0, k0, g.M, g.K, a_inside && k_inside);
            load_b.load(B, v.ldb, n0, k0, g.N, g.K, b_inside && k_inside);
        }
        multiply_tile<BM, BN>(As[cur], Bs[cur], acc, tx, ty);
        if (more) {
            load_a.store(As[cur ^ 1]);
            load_b.store(Bs[cur ^ 1]);
        }
        __syncthreads();  // buffer cur^1 is complete; buffer cur is free to be overwritten next step
    }
    write_sub_tile<BM, BN>(g, g.C + off[2], acc, m0, n0, tx, ty, v.c_vector);
}

// =================================================================================================
// Host side: launching, checking what a version needs, choosing.

constexpr int64_t kMaxGridYZ = 65535;  // CUDA's limit on gridDim.y and gridDim.z

// Launches kernel(args_for_part, extra..., z0) over the whole problem: batch chunks of 65535
// along z, row chunks of 65535 tiles along y (rarely more than one launch).
template <typename T, typename Launch>
void launch_tiled(const GemmArgs<T>& g, int64_t tile_rows, int64_t tile_cols, const char* name, Launch launch) {
    const int64_t batches = g.batch.numel;
    const int64_t rows_per_launch = kMaxGridYZ * tile_rows;
    for (int64_t z0 = 0; z0 < batches; z0 += kMaxGridYZ) {
        for (int64_t r0 = 0; r0 < g.M; r0 += rows_per_launch) {
            GemmArgs<T> part = g;
            part.M = std::min(rows_per_launch, g.M - r0);
            part.A = g.A + r0 * g.rs_a;
            part.C = g.C + r0 * g.rs_c;
            const dim3 grid((unsigned)((g.N + tile_cols - 1) / tile_cols), (unsigned)((part.M + tile_rows - 1) / tile_rows),
                            (unsigned)std::min(kMaxGridYZ, batches - z0));
            launch(grid, part, z0);
            check_launch(name);
        }
    }
}

bool nothing_to_do(int64_t M, int64_t N, const GemmBatch& batch) { return M == 0 || N == 0 || batch.numel == 0; }

void check_sizes(int64_t M, int64_t N, int64_t K, const char* who) {
    if (M < 0 || N < 0 || K < 0)
        throw std::invalid_argument(std::string(who) + ": negative size M=" + std::to_string(M) + " N=" +
                                    std::to_string(N) + " K=" + std::to_string(K));
}

// An operand read as MN x K (A as it is, B transposed) with strides (s_mn, s_k) can be read as
// float4s when one stride is 1 and the other a multiple of 4 (so every float4 starts 16-byte aligned
// given an aligned base). Returns the other stride in *ld and which index is contiguous.
bool vector_layout(int64_t s_mn, int64_t s_k, int64_t* ld, bool* k_contiguous) {
    if (s_k == 1 && s_mn % 4 == 0) {
        *ld = s_mn;
        *k_contiguous = true;
        return true;
    }
    if (s_mn == 1 && s_k % 4 == 0) {
        *ld = s_k;
        *k_contiguous = false;
        return true;
    }
    return false;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool batch_strides_multiple_of_4(const GemmBatch& batch, int operand) {
    for (int d = 0; d < batch.nd; ++d)
        if (batch.strides[d][operand] % 4 != 0) return false;
    return true;
}

// 128 x 128 tiles give the most reuse; when that leaves fewer blocks than the GPU has
// multiprocessors (small M x N, few products), 64 x 64 tiles keep more of the GPU busy.
bool use_small_tiles(const GemmArgs<float>& g) {
    static const int sm_count = [] {
        int device = 0, count = 0;
        if (cudaGetDevice(&device) != cudaSuccess ||
            cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
            cudaGetLastError();
            return 1;
        }
        return count;
    }();
    const int64_t big_blocks = ((g.M + 127) / 128) * ((g.N + 127) / 128) * g.batch.numel;
    return big_blocks < sm_count;
}

template <typename T> void run_v1(const GemmArgs<T>& g, const char* name) {
    launch_tiled(g, kV1Rows, kV1Cols, name, [](dim3 grid, const GemmArgs<T>& part, int64_t z0) {
        sgemm_v1_naive<T><<<grid, dim3(kV1Cols, kV1Rows), 0, 0>>>(part, z0);
    });
}

template <typename T> void run_v2(const GemmArgs<T>& g, const char* name) {
    launch_tiled(g, kV2Tile, kV2Tile, name, [](dim3 grid, const GemmArgs<T>& part, int64_t z0) {
        sgemm_v2_smem_tiled<T><<<grid, dim3(kV2Tile, kV2Tile), 0, 0>>>(part, z0);
    });
}

template <int BM, int BN> void run_v3_tiles(const GemmArgs<float>& g) {
    launch_tiled(g, BM, BN, "sgemm_v3_register_blocked", [](dim3 grid, const GemmArgs<float>& part, int64_t z0) {
        sgemm_v3_register_blocked<BM, BN><<<grid, (BM / kTM) * (BN / kTN), 0, 0>>>(part, z0);
    });
}

void run_v3(const GemmArgs<float>& g) {
    if (use_small_tiles(g)) run_v3_tiles<64, 64>(g);
    else run_v3_tiles<128, 128>(g);
}

// v4 and v5 are compiled for each of the 4 layouts of (A, B) and 2 tile sizes; this picks one.
template <int BM, int BN, bool A_K, bool B_K, bool DOUBLE_BUFFERED> void run_vector_kernel(const GemmArgs<float>& g, VectorLayout v) {
    const char* name = DOUBLE_BUFFERED ? "sgemm_v5_double_buffered" : "sgemm_v4_vectorized";
    launch_tiled(g, BM, BN, name, [v](dim3 grid, const GemmArgs<float>& part, int64_t z0) {
        constexpr int threads = (BM / kTM) * (BN / kTN);
        if constexpr (DOUBLE_BUFFERED) sgemm_v5_double_buffered<BM, BN, A_K, B_K><<<grid, threads, 0, 0>>>(part, v, z0);
        else sgemm_v4_vectorized<BM, BN, A_K, B_K><<<grid, threads, 0, 0>>>(part, v, z0);
    });
}

template <int BM, int BN, bool DOUBLE_BUFFERED>
void run_vector_layouts(const GemmArgs<float>& g, VectorLayout v, bool a_k_contiguous, bool b_k_contiguous) {
    if (a_k_contiguous && b_k_contiguous) run_vector_kernel<BM, BN, true, true, DOUBLE_BUFFERED>(g, v);
    else if (a_k_contiguous) run_vector_kernel<BM, BN, true, false, DOUBLE_BUFFERED>(g, v);
    else if (b_k_contiguous) run_vector_kernel<BM, BN, false, true, DOUBLE_BUFFERED>(g, v);
    else run_vector_kernel<BM, BN, false, false, DOUBLE_BUFFERED>(g, v);
}

template <bool DOUBLE_BUFFERED> void run_vectorized(const GemmArgs<float>& g) {
    VectorLayout v;
    bool a_k = false, b_k = false;
    vector_layout(g.rs_a, g.cs_a, &v.lda, &a_k);  // A is M x K
    vector_layout(g.cs_b, g.rs_b, &v.ldb, &b_k);  // B read as N x K
    v.c_vector = g.cs_c == 1 && g.rs_c % 4 == 0 && aligned16(g.C) && batch_strides_multiple_of_4(g.batch, 2);
    if (use_small_tiles(g)) run_vector_layouts<64, 64, DOUBLE_BUFFERED>(g, v, a_k, b_k);
    else run_vector_layouts<128, 128, DOUBLE_BUFFERED>(g, v, a_k, b_k);
}

}  // namespace

// ---- public -----------------------------------------------------------------------------------------

const char* sgemm_version_name(SgemmVersion version) {
    switch (version) {
        case SgemmVersion::naive: return "sgemm_v1_naive";
        case SgemmVersion::smem_tiled: return "sgemm_v2_smem_tiled";
        case SgemmVersion::register_blocked: return "sgemm_v3_register_blocked";
        case SgemmVersion::vectorized: return "sgemm_v4_vectorized";
        case SgemmVersion::double_buffered: return "sgemm_v5_double_buffered";
    }
    return "sgemm_v?";
}

bool sgemm_version_supports(SgemmVersion version, const GemmArgs<float>& g, std::string* why) {
    auto fail = [&](const std::string& reason) {
        if (why) *why = std::string(sgemm_version_name(version)) + ": " + reason;
        return false;
    };
    const int v = (int)version;
    if (v < 1 || v > kSgemmVersions) return fail("no such version " + std::to_string(v));
    if (v <= 3) return true;
    int64_t ld = 0;
    bool k_contiguous = false;
    if (!vector_layout(g.rs_a, g.cs_a, &ld, &k_contiguous))
        return fail("A's strides (" + std::to_string(g.rs_a) + ", " + std::to_string(g.cs_a) +
                    ") need one unit stride and the other a multiple of 4");
    if (!vector_layout(g.cs_b, g.rs_b, &ld, &k_contiguous))
        return fail("B's strides (" + std::to_string(g.rs_b) + ", " + std::to_string(g.cs_b) +
                    ") need one unit stride and the other a multiple of 4");
    if (!aligned16(g.A) || !aligned16(g.B)) return fail("A and B must start at 16-byte aligned addresses");
    if (!batch_strides_multiple_of_4(g.batch, 0) || !batch_strides_multiple_of_4(g.batch, 1))
        return fail("the batch strides of A and B must be multiples of 4");
    return true;
}

void sgemm_run_version(SgemmVersion version, const GemmArgs<float>& g) {
    check_sizes(g.M, g.N, g.K, "sgemm");
    std::string why;
    if (!sgemm_version_supports(version, g, &why)) throw std::invalid_argument(why);
    if (nothing_to_do(g.M, g.N, g.batch)) return;
    switch (version) {
        case SgemmVersion::naive: run_v1(g, "sgemm_v1_naive"); break;
        case SgemmVersion::smem_tiled: run_v2(g, "sgemm_v2_smem_tiled"); break;
        case SgemmVersion::register_blocked: run_v3(g); break;
        case SgemmVersion::vectorized: run_vectorized<false>(g); break;
        case SgemmVersion::double_buffered: run_vectorized<true>(g); break;
    }
}

// The choice: v5 when its alignment rules hold, v3 (any strides) otherwise; v2 when C is so
// thin (fewer than 32 rows or columns) that a 64-wide tile would be mostly empty. v1 is never
// picked: it is the plain reference (and the first rung of the benchmark's ladder).
SgemmVersion sgemm_pick_version(const GemmArgs<float>& g) {
    if (g.M < 32 || g.N < 32) return SgemmVersion::smem_tiled;
    if (sgemm_version_supports(SgemmVersion::double_buffered, g)) return SgemmVersion::double_buffered;
    return SgemmVersion::register_blocked;
}

void sgemm_batched(const GemmArgs<float>& g) { sgemm_run_version(sgemm_pick_version(g), g); }

void dgemm_batched(const GemmArgs<double>& g) {
    check_sizes(g.M, g.N, g.K, "dgemm");
    if (nothing_to_do(g.M, g.N, g.batch)) return;
    run_v2(g, "dgemm_smem_tiled");
}

void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a, int64_t cs_a, const float* B,
           int64_t rs_b, int64_t cs_b, float beta, float* C, int64_t rs_c, int64_t cs_c) {
    sgemm_batched(GemmArgs<float>{M, N, K, alpha, A, rs_a, cs_a, B, rs_b, cs_b, beta, C, rs_c, cs_c, single_product()});
}

void dgemm(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t rs_a, int64_t cs_a, const double* B,
           int64_t rs_b, int64_t cs_b, double beta, double* C, int64_t rs_c, int64_t cs_c) {
    dgemm_batched(GemmArgs<double>{M, N, K, alpha, A, rs_a, cs_a, B, rs_b, cs_b, beta, C, rs_c, cs_c, single_product()});
}

void sgemm_strided_batched(int64_t batch, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a,
                           int64_t cs_a, int64_t stride_a, const float* B, int64_t rs_b, int64_t cs_b, int64_t stride_b,
                           float beta, float* C, int64_t rs_c, int64_t cs_c, int64_t stride_c) {
    sgemm_batched(GemmArgs<float>{M, N, K, alpha, A, rs_a, cs_a, B, rs_b, cs_b, beta, C, rs_c, cs_c,
                                  strided_batch(batch, stride_a, stride_b, stride_c)});
}

}  // namespace mg::cuda
