// cuda/kernels_attention.cu: memory-efficient attention on the GPU (FlashAttention), forward and
// backward. Same ops, inputs, outputs and attrs as the CPU kernels (engine/cpu/kernels_attention.cpp,
// the plain reference these are tested against); the op layer is engine/ops_attention.cpp, the math
// step by step is in docs/nn/attention.md.
//
//   in:  q (B, H, Tq, Dh), k, v (B, H, Tk, Dh), any strides; attrs.flag = causal, attrs.scalar = scale
//   out: out (B, H, Tq, Dh), lse (B, H, Tq), contiguous             (OpId::attention)
//   in:  q, k, v, out, lse, grad_out (q, k, v, grad_out any strides; out, lse contiguous)
//   out: dq (B, H, Tq, Dh), dk, dv (B, H, Tk, Dh), contiguous      (OpId::attention_backward)
//
// The (Tq, Tk) score matrix of a head is never stored: it is cut into kTile x kTile tiles and each
// thread block holds one tile at a time in shared memory.
//
// Thread layout (all three tile kernels): a block is 16 x 16 = 256 threads, thread (ty, tx) with
// threadIdx.x = ty * 16 + tx. In a kTile x kTile tile it owns the kPer x kPer entries at rows
// ty + 16 a and columns tx + 16 c (kPer = kTile / 16): a strided "micro-tile", so that the 16
// threads of one row group (ty fixed) sit in 16 neighbouring lanes of one warp and can combine a
// row's values with warp shuffles. Products over Dh run in steps of kDChunk columns staged in
// shared memory, so any head dimension fits; each block writes kDV output columns (blockIdx.z
// picks which), so the per-thread accumulators have a size fixed at compile time (kPer x kDV/16).
// For Dh > 128 the z blocks of one query tile each recompute the scores (cheap next to what a
// register file twice as large would cost) and write their own slice of the output.
//
//   forward, one block per (b*h, query tile, slice of kDV output columns):
//     m_i = -inf, l_i = 0, acc_i = 0                     (running max, sum and output, registers)
//     for each key tile j (causal: only up to the diagonal; later tiles are all masked):
//       S = q_i k_j^T * scale, masked                    (registers, kPer x kPer per thread)
//       m_new = max(m_i, rowmax S);  P = exp(S - m_new)  (row max and sum: 16-lane shuffles)
//       l_i = l_i * exp(m_i - m_new) + rowsum P;  acc_i = acc_i * exp(m_i - m_new) + P v_j
//     out_i = acc_i / l_i,  lse_i = m_i + log l_i
//
//   backward (FlashAttention-2), three kernels, no atomics: every output element is summed by
//   exactly one thread in a fixed order, so the results are the same bits run after run.
//     1. row_dot:   D_i = rowsum(grad_out_i * out_i)         (one warp per row)
//     2. dk_dv:     one block per (b*h, key tile j, column slice); over the query tiles i:
//                   P = exp(S - lse_i);  dS = P * (dout_i v_j^T - D_i)
//                   dv_j += P^T dout_i;  dk_j += dS^T q_i * scale
//     3. dq:        one block per (b*h, query tile i, column slice); over the key tiles j:
//                   the same P and dS, dq_i += dS k_j * scale
//   The scores are computed twice (in 2 and in 3): the price of not adding dq across blocks.
//
// All sums are in the input dtype (float32 or float64, the dtypes the CPU kernel accepts).
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"
#include "engine/dtype.h"
#include "engine/tensor.h"

namespace mg::cuda {
namespace {

constexpr int kSide = 16;                    // a block is kSide x kSide threads
constexpr int kBlockThreads = kSide * kSide;  // 256
constexpr int kDChunk = 16;                  // head dims per step of a score product (q k^T, dout v^T)
constexpr int kRowChunk = 16;                // rows per step of an output product (P v, dS k, ...)

// Query and key rows per tile. float32: 64 (4 x 4 entries per thread); float64: 32 (2 x 2), so
// that the shared memory of every kernel stays under the 48 KiB a block gets without opting in.
template <typename T> struct TileOf;
template <> struct TileOf<float> { static constexpr int kTile = 64; };
template <> struct TileOf<double> { static constexpr int kTile = 32; };

template <typename T> __device__ __forceinline__ T exp_of(T x);
template <> __device__ __forceinline__ float exp_of(float x) { return expf(x); }
template <> __device__ __forceinline__ double exp_of(double x) { return exp(x); }
template <typename T> __device__ __forceinline__ T log_of(T x);
template <> __device__ __forceinline__ float log_of(float x) { return logf(x); }
template <> __device__ __forceinline__ double log_of(double x) { return log(x); }
template <typename T> __device__ __forceinline__ T minus_infinity() { return -static_cast<T>(INFINITY); }
__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The 16 threads of one tile row (same ty) are lanes 0-15 or 16-31 of a warp, so an xor
// butterfly over lane offsets 8, 4, 2, 1 combines exactly them. Every lane of the group ends with
// the same bits (a + b == b + a), and the order is fixed, so the result never varies. All 32
// lanes must call these together.
template <typename T> __device__ __forceinline__ T row_max(T x) {
    for (int offset = kSide / 2; offset > 0; offset /= 2) {
        const T other = __shfl_xor_sync(0xffffffffu, x, offset);
        x = x < other ? other : x;
    }
    return x;
}
template <typename T> __device__ __forceinline__ T row_sum(T x) {
    for (int offset = kSide / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

// ---- operands -------------------------------------------------------------------------------------
// One (B, H, T, Dh) input read through its strides (in elements), as the CPU's Strided4.
template <typename T> struct Operand4 {
    const T* data;
    int64_t sb, sh, st, sd;
};
template <typename T> Operand4<T> operand(const Tensor& t) {
    return {t.data_ptr<T>(), t.strides()[0], t.strides()[1], t.strides()[2], t.strides()[3]};
}

// The (T, Dh) matrix of one (b, h): element (t, d) at data[t * st + d * sd]; len rows, dim columns.
template <typename T> struct Slice {
    const T* data;
    int64_t st, sd, len, dim;
};
template <typename T>
__device__ __forceinline__ Slice<T> slice_of(const Operand4<T>& x, int64_t b, int64_t h, int64_t len, int64_t dim) {
    return {x.data + b * x.sb + h * x.sh, x.st, x.sd, len, dim};
}

// Columns [d0, d0 + kDChunk) of rows [t0, t0 + kTile) of x into cols, zeros past either end (so
// the padded rows and dims add nothing to a dot product). Neighbouring threads read neighbouring
// dims: coalesced when x's rows are contiguous. The +1 column of padding puts the kTile rows of
// one column in different shared-memory banks (the score loops read down a column).
template <typename T, int kTile>
__device__ __forceinline__ void load_columns(const Slice<T>& x, int64_t t0, int64_t d0, T (&cols)[kTile][kDChunk + 1]) {
    for (int e = threadIdx.x; e < kTile * kDChunk; e += kBlockThreads) {
        const int r = e / kDChunk, c = e % kDChunk;
        const int64_t t = t0 + r, d = d0 + c;
        cols[r][c] = (t < x.len && d < x.dim) ? x.data[t * x.st + d * x.sd] : T(0);
    }
}

// acc += tile[my rows, 0:len] @ x[t0 : t0 + len, z0 : z0 + kDV], where tile is a kTile x kTile
// matrix in shared memory (probabilities or dS), and this thread's accumulator holds rows
// ty + 16 a and output columns z0 + tx + 16 e. x goes through `rows` kRowChunk rows at a time.
// len is the same for the whole block. The caller puts a barrier between writing tile and this
// call; it ends on a barrier, so every read of tile and rows is done when it returns and the
// caller may overwrite both.
template <typename T, int kTile, int kDV>
__device__ __forceinline__ void accumulate_product(T (&acc)[kTile / kSide][kDV / kSide], const T (&tile)[kTile][kTile],
                                                   const Slice<T>& x, int64_t t0, int64_t len, int64_t z0,
                                                   T (&rows)[kRowChunk][kDV]) {
    constexpr int kPer = kTile / kSide, kCols = kDV / kSide;
    const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
    for (int r0 = 0; r0 < len; r0 += kRowChunk) {
        for (int e = threadIdx.x; e < kRowChunk * kDV; e += kBlockThreads) {
            const int r = e / kDV, c = e % kDV;
            const int64_t t = t0 + r0 + r, d = z0 + c;
            rows[r][c] = (r0 + r < len && t < x.len && d < x.dim) ? x.data[t * x.st + d * x.sd] : T(0);
        }
        __syncthreads();
        const int r_end = (int)min64(kRowChunk, len - r0);
        for (int r = 0; r < r_end; ++r)
#pragma unroll
            for (int a = 0; a < kPer; ++a) {
                const T weight = tile[ty + a * kSide][r0 + r];  // the same for the 16 threads of a row group
#pragma unroll
                for (int e = 0; e < kCols; ++e) acc[a][e] += weight * rows[r][tx + e * kSide];
            }
        __syncthreads();
    }
}

struct AttentionShape {
    int64_t H, Tq, Tk, Dh;
};

// ---- forward ----------------------------------------------------------------------------------------
// grid (B*H, query tiles, column slices), kBlockThreads threads.
template <typename T, int kDV>
__global__ void __launch_bounds__(kBlockThreads)
    attention_forward_kernel(Operand4<T> q, Operand4<T> k, Operand4<T> v, T* out, T* lse, AttentionShape n,
                             bool causal, T scale) {
    constexpr int kTile = TileOf<T>::kTile, kPer = kTile / kSide, kCols = kDV / kSide;
    __shared__ T q_cols[kTile][kDChunk + 1];  // (kTile queries, kDChunk dims)
    __shared__ T k_cols[kTile][kDChunk + 1];  // (kTile keys, kDChunk dims)
    __shared__ T p_tile[kTile][kTile];        // (queries, keys): this key tile's probabilities
    __shared__ T v_rows[kRowChunk][kDV];      // (kRowChunk keys, kDV dims)
    const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
    const int64_t bh = blockIdx.x, b = bh / n.H, h = bh % n.H;
    // Causal: the last query tiles see the most keys; start them first so that no long block is
    // left running alone at the end.
    const int64_t i0 = ((int64_t)gridDim.y - 1 - blockIdx.y) * kTile;
    const int64_t z0 = (int64_t)blockIdx.z * kDV;  // first output column of this block
    const Slice<T> qs = slice_of(q, b, h, n.Tq, n.Dh), ks = slice_of(k, b, h, n.Tk, n.Dh),
                   vs = slice_of(v, b, h, n.Tk, n.Dh);

    T m[kPer], l[kPer], acc[kPer][kCols];  // rows ty + 16 a; acc columns z0 + tx + 16 e
#pragma unroll
    for (int a = 0; a < kPer; ++a) {
        m[a] = minus_infinity<T>();
        l[a] = T(0);
#pragma unroll
        for (int e = 0; e < kCols; ++e) acc[a][e] = T(0);
    }
    // Keys past the last query of this tile are all masked (causal needs Tq == Tk).
    const int64_t kv_end = causal ? min64(i0 + kTile, n.Tq) : n.Tk;
    for (int64_t j0 = 0; j0 < kv_end; j0 += kTile) {
        // S = q_i k_j^T, kDChunk dims at a time.
        T s[kPer][kPer] = {};
        for (int64_t d0 = 0; d0 < n.Dh; d0 += kDChunk) {
            load_columns(qs, i0, d0, q_cols);
            load_columns(ks, j0, d0, k_cols);
            __syncthreads();
            for (int d = 0; d < kDChunk; ++d)
#pragma unroll
                for (int a = 0; a < kPer; ++a) {
                    const T qa = q_cols[ty + a * kSide][d];
#pragma unroll
                    for (int c = 0; c < kPer; ++c) s[a][c] += qa * k_cols[tx + c * kSide][d];
                }
            __syncthreads();
        }
        // The online softmax: scale, mask, and rescale what is already summed to the new max.
#pragma unroll
        for (int a = 0; a < kPer; ++a) {
            const int64_t i = i0 + ty + a * kSide;
            T tile_max = minus_infinity<T>();
#pragma unroll
            for (int c = 0; c < kPer; ++c) {
                const int64_t j = j0 + tx + c * kSide;
                const bool seen = j < n.Tk && !(causal && j > i);  // padding keys and the future: -inf
                s[a][c] = seen ? s[a][c] * scale : minus_infinity<T>();
                tile_max = tile_max < s[a][c] ? s[a][c] : tile_max;
            }
            tile_max = row_max(tile_max);
            const T m_new = m[a] < tile_max ? tile_max : m[a];
            // Every key so far masked (only padding rows can meet this): add nothing. A branch
            // around the shuffle below would split the warp, so both cases run the same code.
            const bool nothing = m_new == minus_infinity<T>();
            T sum = T(0);
#pragma unroll
            for (int c = 0; c < kPer; ++c) {
                s[a][c] = nothing ? T(0) : exp_of(s[a][c] - m_new);
                sum += s[a][c];
            }
            sum = row_sum(sum);
            const T correction = nothing ? T(1) : exp_of(m[a] - m_new);  // 0 on the first tile
            l[a] = l[a] * correction + sum;
            m[a] = m_new;
#pragma unroll
            for (int e = 0; e < kCols; ++e) acc[a][e] *= correction;
        }
#pragma unroll
        for (int a = 0; a < kPer; ++a)
#pragma unroll
            for (int c = 0; c < kPer; ++c) p_tile[ty + a * kSide][tx + c * kSide] = s[a][c];
        __syncthreads();
        // acc += P v_j (keys past kv_end have P = 0: not read).
        accumulate_product<T, kTile, kDV>(acc, p_tile, vs, j0, min64(kTile, kv_end - j0), z0, v_rows);
    }
#pragma unroll
    for (int a = 0; a < kPer; ++a) {
        const int64_t i = i0 + ty + a * kSide;
        if (i >= n.Tq) continue;
        const int64_t row = bh * n.Tq + i;
        const T inv_l = T(1) / l[a];
#pragma unroll
        for (int e = 0; e < kCols; ++e) {
            const int64_t d = z0 + tx + e * kSide;
            if (d < n.Dh) out[row * n.Dh + d] = acc[a][e] * inv_l;
        }
        if (blockIdx.z == 0 && tx == 0) lse[row] = m[a] + log_of(l[a]);
    }
}

// ---- backward, 1: D_i = sum_d grad_out_id out_id -------------------------------------------------------
// One warp per (b, h, i) row: lanes stride over d, then a fixed shuffle tree. rows = B*H*Tq.
template <typename T>
__global__ void row_dot_kernel(Operand4<T> grad_out, const T* out, T* D, AttentionShape n, int64_t rows) {
    const int lane = threadIdx.x % 32;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    // row is the same for the 32 lanes of a warp, so the loop test never splits a warp.
    for (int64_t row = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; row < rows; row += warps) {
        const int64_t b = row / (n.H * n.Tq), h = row / n.Tq % n.H, i = row % n.Tq;
        const T* g = grad_out.data + b * grad_out.sb + h * grad_out.sh + i * grad_out.st;
        const T* o = out + row * n.Dh;
        T dot = T(0);
        for (int64_t d = lane; d < n.Dh; d += 32) dot += g[d * grad_out.sd] * o[d];
        for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_down_sync(0xffffffffu, dot, offset);
        if (lane == 0) D[row] = dot;
    }
}

// ---- backward, 2: dk and dv, one block per key tile ------------------------------------------------------
// grid (B*H, key tiles, column slices). Here the roles of the tile's rows and columns swap: a
// thread's rows are KEYS (ty + 16 a, the rows of dk and dv it accumulates) and its columns are
// queries, so the block computes S^T = k_j q_i^T directly and needs no transpose.
template <typename T, int kDV>
__global__ void __launch_bounds__(kBlockThreads)
    attention_dk_dv_kernel(Operand4<T> q, Operand4<T> k, Operand4<T> v, Operand4<T> grad_out, const T* lse,
                           const T* D, T* dk, T* dv, AttentionShape n, bool causal, T scale) {
    constexpr int kTile = TileOf<T>::kTile, kPer = kTile / kSide, kCols = kDV / kSide;
    __shared__ T k_cols[kTile][kDChunk + 1], v_cols[kTile][kDChunk + 1];  // (keys, dims)
    __shared__ T q_cols[kTile][kDChunk + 1], g_cols[kTile][kDChunk + 1];  // (queries, dims)
    __shared__ T pt_tile[kTile][kTile];    // (keys, queries): P^T, then dS^T * scale
    __shared__ T rows[kRowChunk][kDV];     // (kRowChunk queries, kDV dims): grad_out, then q
    __shared__ T lse_tile[kTile], D_tile[kTile];  // per query of the current query tile
    const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
    const int64_t bh = blockIdx.x, b = bh / n.H, h = bh % n.H;
    const int64_t j0 = (int64_t)blockIdx.y * kTile;  // causal: the first key tiles have the most work
    const int64_t z0 = (int64_t)blockIdx.z * kDV;
    const Slice<T> qs = slice_of(q, b, h, n.Tq, n.Dh), ks = slice_of(k, b, h, n.Tk, n.Dh),
                   vs = slice_of(v, b, h, n.Tk, n.Dh), gs = slice_of(grad_out, b, h, n.Tq, n.Dh);

    T dk_acc[kPer][kCols] = {}, dv_acc[kPer][kCols] = {};  // key rows ty + 16 a, columns z0 + tx + 16 e
    // Causal (Tq == Tk, same tiles): query tiles before this key tile see none of its keys.
    for (int64_t i0 = causal ? j0 : 0; i0 < n.Tq; i0 += kTile) {
        const int64_t q_rows = min64(kTile, n.Tq - i0);
        for (int r = threadIdx.x; r < kTile; r += kBlockThreads) {
            lse_tile[r] = r < q_rows ? lse[bh * n.Tq + i0 + r] : T(0);
            D_tile[r] = r < q_rows ? D[bh * n.Tq + i0 + r] : T(0);
        }
        __syncthreads();
        // S^T = k_j q_i^T and dP^T = v_j grad_out_i^T, kDChunk dims at a time.
        T s[kPer][kPer] = {}, dp[kPer][kPer] = {};
        for (int64_t d0 = 0; d0 < n.Dh; d0 += kDChunk) {
            load_columns(ks, j0, d0, k_cols);
            load_columns(vs, j0, d0, v_cols);
            load_columns(qs, i0, d0, q_cols);
            load_columns(gs, i0, d0, g_cols);
            __syncthreads();
            for (int d = 0; d < kDChunk; ++d)
#pragma unroll
                for (int a = 0; a < kPer; ++a) {
                    const T ka = k_cols[ty + a * kSide][d], va = v_cols[ty + a * kSide][d];
#pragma unroll
                    for (int c = 0; c < kPer; ++c) {
                        s[a][c] += ka * q_cols[tx + c * kSide][d];
                        dp[a][c] += va * g_cols[tx + c * kSide][d];
                    }
                }
            __syncthreads();
        }
        // P = exp(S - lse), the forward's probabilities rebuilt; dS = P * (dP - D), times scale
        // here once instead of on every dk and dq term.
#pragma unroll
        for (int a = 0; a < kPer; ++a) {
            const int64_t j = j0 + ty + a * kSide;
#pragma unroll
            for (int c = 0; c < kPer; ++c) {
                const int r = tx + c * kSide;
                const int64_t i = i0 + r;
                const bool seen = j < n.Tk && r < q_rows && !(causal && j > i);
                const T p = seen ? exp_of(s[a][c] * scale - lse_tile[r]) : T(0);
                s[a][c] = p;
                dp[a][c] = p * (dp[a][c] - D_tile[r]) * scale;
            }
        }
#pragma unroll
        for (int a = 0; a < kPer; ++a)
#pragma unroll
            for (int c = 0; c < kPer; ++c) pt_tile[ty + a * kSide][tx + c * kSide] = s[a][c];
        __syncthreads();
        accumulate_product<T, kTile, kDV>(dv_acc, pt_tile, gs, i0, q_rows, z0, rows);  // dv_j += P^T grad_out_i
#pragma unroll
        for (int a = 0; a < kPer; ++a)
#pragma unroll
            for (int c = 0; c < kPer; ++c) pt_tile[ty + a * kSide][tx + c * kSide] = dp[a][c];
        __syncthreads();
        accumulate_product<T, kTile, kDV>(dk_acc, pt_tile, qs, i0, q_rows, z0, rows);  // dk_j += dS^T q_i * scale
    }
#pragma unroll
    for (int a = 0; a < kPer; ++a) {
        const int64_t j = j0 + ty + a * kSide;
        if (j >= n.Tk) continue;
        const int64_t row = bh * n.Tk + j;
#pragma unroll
        for (int e = 0; e < kCols; ++e) {
            const int64_t d = z0 + tx + e * kSide;
            if (d >= n.Dh) continue;
            dk[row * n.Dh + d] = dk_acc[a][e];
            dv[row * n.Dh + d] = dv_acc[a][e];
        }
    }
}

// ---- backward, 3: dq, one block per query tile ---------------------------------------------------------
// grid (B*H, query tiles, column slices); rows are queries, as in the forward.
template <typename T, int kDV>
__global__ void __launch_bounds__(kBlockThreads)
    attention_dq_kernel(Operand4<T> q, Operand4<T> k, Operand4<T> v, Operand4<T> grad_out, const T* lse,
                        const T* D, T* dq, AttentionShape n, bool causal, T scale) {
    constexpr int kTile = TileOf<T>::kTile, kPer = kTile / kSide, kCols = kDV / kSide;
    __shared__ T q_cols[kTile][kDChunk + 1], g_cols[kTile][kDChunk + 1];  // (queries, dims)
    __shared__ T k_cols[kTile][kDChunk + 1], v_cols[kTile][kDChunk + 1];  // (keys, dims)
    __shared__ T ds_tile[kTile][kTile];  // (queries, keys): dS * scale
    __shared__ T rows[kRowChunk][kDV];   // (kRowChunk keys, kDV dims) of k
    const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
    const int64_t bh = blockIdx.x, b = bh / n.H, h = bh % n.H;
    const int64_t i0 = ((int64_t)gridDim.y - 1 - blockIdx.y) * kTile;  // longest (causal) first
    const int64_t z0 = (int64_t)blockIdx.z * kDV;
    const Slice<T> qs = slice_of(q, b, h, n.Tq, n.Dh), ks = slice_of(k, b, h, n.Tk, n.Dh),
                   vs = slice_of(v, b, h, n.Tk, n.Dh), gs = slice_of(grad_out, b, h, n.Tq, n.Dh);

    T row_lse[kPer], row_D[kPer], dq_acc[kPer][kCols] = {};  // query rows ty + 16 a
#pragma unroll
    for (int a = 0; a < kPer; ++a) {
        const int64_t i = i0 + ty + a * kSide;
        row_lse[a] = i < n.Tq ? lse[bh * n.Tq + i] : T(0);
        row_D[a] = i < n.Tq ? D[bh * n.Tq + i] : T(0);
    }
    const int64_t kv_end = causal ? min64(i0 + kTile, n.Tq) : n.Tk;
    for (int64_t j0 = 0; j0 < kv_end; j0 += kTile) {
        T s[kPer][kPer] = {}, dp[kPer][kPer] = {};
        for (int64_t d0 = 0; d0 < n.Dh; d0 += kDChunk) {
            load_columns(qs, i0, d0, q_cols);
            load_columns(gs, i0, d0, g_cols);
            load_columns(ks, j0, d0, k_cols);
            load_columns(vs, j0, d0, v_cols);
            __syncthreads();
            for (int d = 0; d < kDChunk; ++d)
#pragma unroll
                for (int a = 0; a < kPer; ++a) {
                    const T qa = q_cols[ty + a * kSide][d], ga = g_cols[ty + a * kSide][d];
#pragma unroll
                    for (int c = 0; c < kPer; ++c) {
                        s[a][c] += qa * k_cols[tx + c * kSide][d];
                        dp[a][c] += ga * v_cols[tx + c * kSide][d];
                    }
                }
            __syncthreads();
        }
#pragma unroll
        for (int a = 0; a < kPer; ++a) {
            const int64_t i = i0 + ty + a * kSide;
#pragma unroll
            for (int c = 0; c < kPer; ++c) {
                const int64_t j = j0 + tx + c * kSide;
                const bool seen = j < n.Tk && i < n.Tq && !(causal && j > i);
                const T p = seen ? exp_of(s[a][c] * scale - row_lse[a]) : T(0);
                ds_tile[ty + a * kSide][tx + c * kSide] = p * (dp[a][c] - row_D[a]) * scale;
            }
        }
        __syncthreads();
        accumulate_product<T, kTile, kDV>(dq_acc, ds_tile, ks, j0, min64(kTile, kv_end - j0), z0, rows);
    }
#pragma unroll
    for (int a = 0; a < kPer; ++a) {
        const int64_t i = i0 + ty + a * kSide;
        if (i >= n.Tq) continue;
#pragma unroll
        for (int e = 0; e < kCols; ++e) {
            const int64_t d = z0 + tx + e * kSide;
            if (d < n.Dh) dq[(bh * n.Tq + i) * n.Dh + d] = dq_acc[a][e];
        }
    }
}

// ---- host side ----------------------------------------------------------------------------------------
AttentionShape shape_of(const Tensor& q, const Tensor& k) {
    return {q.shape()[1], q.shape()[2], k.shape()[2], q.shape()[3]};
}

// (B*H, tiles, column slices) for kernels whose rows tile a sequence of `len` with tiles of kTile.
dim3 tile_grid(const char* op, int64_t heads, int64_t len, int64_t kTile, int64_t Dh, int64_t kDV) {
    const int64_t tiles = (len + kTile - 1) / kTile, slices = std::max<int64_t>(1, (Dh + kDV - 1) / kDV);
    if (heads > INT32_MAX || tiles > 65535 || slices > 65535)
        throw std::invalid_argument(std::string(op) + ": too large for one CUDA grid (B*H " + std::to_string(heads) +
                                    ", " + std::to_string(tiles) + " tiles of " + std::to_string(kTile) + ", " +
                                    std::to_string(slices) + " column slices)");
    return dim3((unsigned)heads, (unsigned)tiles, (unsigned)slices);
}

// Calls f.template operator()<kDV>() with the output columns per block for head dim Dh: the
// smallest of 16, 32, 64 that holds Dh, else 128 (and Dh > 128 takes several column slices).
template <typename F> void with_column_slice(int64_t Dh, F&& f) {
    if (Dh <= 16) f.template operator()<16>();
    else if (Dh <= 32) f.template operator()<32>();
    else if (Dh <= 64) f.template operator()<64>();
    else f.template operator()<128>();
}

template <typename T> void attention_forward(const KernelArgs& args) {
    const Tensor &q = args.in[0], &k = args.in[1], &v = args.in[2];
    const AttentionShape n = shape_of(q, k);
    const int64_t heads = q.shape()[0] * n.H;
    if (heads == 0 || n.Tq == 0) return;  // out and lse are empty (Tk == 0 with Tq > 0: the op refuses)
    T* out = args.out[0].data_ptr<T>();
    T* lse = args.out[1].data_ptr<T>();
    const bool causal = args.attrs.flag;
    const T scale = (T)args.attrs.scalar;
    with_column_slice(n.Dh, [&]<int kDV>() {
        const dim3 grid = tile_grid("attention", heads, n.Tq, TileOf<T>::kTile, n.Dh, kDV);
        attention_forward_kernel<T, kDV><<<grid, kBlockThreads, 0, 0>>>(operand<T>(q), operand<T>(k), operand<T>(v),
                                                                       out, lse, n, causal, scale);
        check_launch("attention");
    });
}

template <typename T> void attention_backward(const KernelArgs& args) {
    const Tensor &q = args.in[0], &k = args.in[1], &v = args.in[2], &out = args.in[3], &lse = args.in[4],
                 &grad_out = args.in[5];
    const AttentionShape n = shape_of(q, k);
    const int64_t heads = q.shape()[0] * n.H;
    if (heads == 0 || n.Dh == 0) return;  // dq, dk, dv are all empty
    T* dq = args.out[0].data_ptr<T>();
    T* dk = args.out[1].data_ptr<T>();
    T* dv = args.out[2].data_ptr<T>();
    const bool causal = args.attrs.flag;
    const T scale = (T)args.attrs.scalar;
    const int64_t rows = heads * n.Tq;
    Tensor D = Tensor::empty({rows}, q.dtype(), Device::CUDA);  // (B*H*Tq) scratch: D_i
    if (rows > 0) {
        row_dot_kernel<T><<<grid_for(rows * 32), kThreads, 0, 0>>>(operand<T>(grad_out), out.data_ptr<T>(),
                                                                    D.data_ptr<T>(), n, rows);
        check_launch("attention_backward");
    }
    with_column_slice(n.Dh, [&]<int kDV>() {
        constexpr int kTile = TileOf<T>::kTile;
        // dk and dv: every key row is written, zeros where no query sees it (also when Tq == 0).
        if (n.Tk > 0) {
            const dim3 grid = tile_grid("attention_backward", heads, n.Tk, kTile, n.Dh, kDV);
            attention_dk_dv_kernel<T, kDV><<<grid, kBlockThreads, 0, 0>>>(
                operand<T>(q), operand<T>(k), operand<T>(v), operand<T>(grad_out), lse.data_ptr<T>(),
                D.data_ptr<T>(), dk, dv, n, causal, scale);
            check_launch("attention_backward");
        }
        if (n.Tq > 0) {
            const dim3 grid = tile_grid("attention_backward", heads, n.Tq, kTile, n.Dh, kDV);
            attention_dq_kernel<T, kDV><<<grid, kBlockThreads, 0, 0>>>(operand<T>(q), operand<T>(k), operand<T>(v),
                                                                      operand<T>(grad_out), lse.data_ptr<T>(),
                                                                      D.data_ptr<T>(), dq, n, causal, scale);
            check_launch("attention_backward");
        }
    });
}

void attention_kernel(const KernelArgs& args) {
    dispatch_floating(args.in[0].dtype(), "attention", [&](auto tag) { attention_forward<decltype(tag)>(args); });
}
void attention_backward_kernel(const KernelArgs& args) {
    dispatch_floating(args.in[0].dtype(), "attention_backward",
                      [&](auto tag) { attention_backward<decltype(tag)>(args); });
}

}  // namespace

void register_attention_kernels() {
    register_kernel(Device::CUDA, OpId::attention, attention_kernel);
    register_kernel(Device::CUDA, OpId::attention_backward, attention_backward_kernel);
}

}  // namespace mg::cuda
