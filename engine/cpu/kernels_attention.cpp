// cpu/kernels_attention.cpp: the memory-efficient attention kernels (FlashAttention on the CPU).
// The op layer (engine/ops_attention.cpp) checks the arguments and allocates the outputs; the
// math, step by step, is in docs/nn/attention.md. The plain reference these kernels are tested
// against is attention_reference (matmul, masked_fill, softmax, matmul in engine ops).
//
// Both kernels cut the (Tq, Tk) score matrix of one (batch, head) into tiles (64 x 64, or one tile
// for T <= 128) and only ever hold one tile (plus a few (tile, Dh) blocks of q, k, v) per thread.
// Causal diagonal tiles run in strips that skip the future keys (see kStrip below):
//
//   forward, one task per (b, h, block of `tile` query rows):
//     m_i = -inf, l_i = 0, acc_i = 0                       (running max, sum and output)
//     for each key block j (causal: only up to the diagonal):
//       S = q_i k_j^T * scale, masked                      (tile x tile)
//       m_new = max(m_i, rowmax S);  P = exp(S - m_new)
//       l_i = l_i * exp(m_i - m_new) + rowsum P;  acc_i = acc_i * exp(m_i - m_new) + P v_j
//     out_i = acc_i / l_i,  lse_i = m_i + log l_i
//
//   backward, one task per (b, h), key blocks outside, query blocks inside:
//     D_i = rowsum(dout_i * out_i)
//     P = exp(S - lse_i) (the forward's probabilities, rebuilt exactly)
//     dv_j += P^T dout_i;  dP = dout_i v_j^T;  dS = P * (dP - D_i)
//     dq_i += dS k_j * scale;  dk_j += dS^T q_i * scale
//
// Threads split the work over tasks that write disjoint outputs (no atomics, no cross-thread
// sums), so the results are the same bits for any thread count. dk and dv sum over query blocks
// within one (b, h), which is why the backward does not split a (b, h) across threads.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/gemm.h"
#include "engine/cpu/fast_math.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"

namespace mg::cpu {
namespace {

// Rows and columns of one score tile. 64 x 64 floats is 16 KiB: the tile, a q block and a k
// block (Dh = 32..128) sit in L1/L2 together. A sequence of up to 128 is one tile (rounded up
// to a multiple of kStrip): every row of q, k and v is then loaded once per (b, h) instead of
// once per tile it meets, and there are half as many tile products. The language model's T = 128
// is such a sequence.
constexpr int64_t kTile = 64;
constexpr int64_t kOneTileUpTo = 128;

// Causal attention's diagonal tiles (query block == key block) are half in the future. They run in
// strips of kStrip query rows, each strip only as wide as the keys its last row sees: 62.5% of a
// 64 x 64 tile's multiply-adds and exps, 56% of a 128 x 128 one, instead of 100%. The backward's
// key-side products (dv, dk) run in strips of kStrip key columns, each over the query rows that
// see them.
constexpr int64_t kStrip = 16;

// Tile products on the GEMM's micro-kernel (true) or on the plain loops below (false). Measured on
// one thread at B=4, H=8, T=1024, Dh=32, causal, float32 (docs/nn/attention.md), when the tiles
// still went through the general sgemm: forward 140-150 ms vs 220 ms on the loops,
// forward+backward 330-360 ms vs 600 ms. The loops stay as the readable version of what each
// product computes.
constexpr bool kTileProductsOnGemm = true;

// C (M x N, row stride ldc) = alpha * A @ B, or C += alpha * A @ B when accumulate.
// A(i, k) = A[i * rs_a + k * cs_a] (so a transposed tile costs nothing); B is a dense block
// with row stride ldb. The loop order i, k, j keeps the innermost loop on contiguous rows of B
// and C, which the compiler vectorises without reordering any sum.
// float32 runs on sgemm_small: the micro-kernel reading A and B in place. The general sgemm
// packed B again for every tile; at 64 x 64 x 32 that copy and the call's set-up cost about as
// much as the multiply-adds.
template <typename T>
void tile_product(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t rs_a, int64_t cs_a, const T* B,
                  int64_t ldb, bool accumulate, T* C, int64_t ldc) {
    if constexpr (kTileProductsOnGemm) {
        if constexpr (std::is_same_v<T, float>)
            sgemm_small(M, N, K, alpha, A, rs_a, cs_a, B, ldb, accumulate ? 1.0f : 0.0f, C, ldc);
        else
            dgemm(M, N, K, alpha, A, rs_a, cs_a, B, ldb, 1, accumulate ? 1.0 : 0.0, C, ldc, 1);
        return;
    }
    for (int64_t i = 0; i < M; ++i) {
        T* c = C + i * ldc;
        if (!accumulate) std::fill(c, c + N, T(0));
        for (int64_t k = 0; k < K; ++k) {
            const T a = alpha * A[i * rs_a + k * cs_a];
            const T* b = B + k * ldb;
#pragma omp simd
            for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
        }
    }
}

// One (B, H, T, Dh) operand, read through its strides.
template <typename T> struct Strided4 {
    const T* data;
    int64_t sb, sh, st, sd;
    explicit Strided4(const Tensor& t)
        : data(t.data_ptr<T>()), sb(t.strides()[0]), sh(t.strides()[1]), st(t.strides()[2]), sd(t.strides()[3]) {}
    const T* row(int64_t b, int64_t h, int64_t t) const { return data + b * sb + h * sh + t * st; }
};

// Copies rows [t0, t0 + rows) of x(b, h) into a dense (rows x Dh) block, row stride Dh. Each row
// is one contiguous copy when Dh is the innermost dimension (the heads of a qkv projection are).
// The rows of a head lie far apart (a qkv projection interleaves the three tensors and the heads
// of every token), so each is a cache miss unless asked for early: every row asks for the one
// kPrefetchRows ahead of it (perf at the LM shape: these copies went from 14% to 9% of the time).
constexpr int64_t kPrefetchRows = 8;
template <typename T>
void load_rows(const Strided4<T>& x, int64_t b, int64_t h, int64_t t0, int64_t rows, int64_t Dh, T* dst) {
    for (int64_t r = 0; r < rows; ++r) {
        const T* src = x.row(b, h, t0 + r);
        if (r + kPrefetchRows < rows) {
            const T* ahead = x.row(b, h, t0 + r + kPrefetchRows);
            __builtin_prefetch(ahead);
            __builtin_prefetch(ahead + (Dh - 1) * x.sd);
        }
        if (x.sd == 1) {
#pragma omp simd
            for (int64_t d = 0; d < Dh; ++d) dst[r * Dh + d] = src[d];
        } else
            for (int64_t d = 0; d < Dh; ++d) dst[r * Dh + d] = src[d * x.sd];
    }
}
// A dense (rows x Dh) block, transposed: (Dh x rows) with row stride ld.
template <typename T> void transpose_block(const T* src, int64_t rows, int64_t Dh, T* dst, int64_t ld) {
    for (int64_t d = 0; d < Dh; ++d)
        for (int64_t r = 0; r < rows; ++r) dst[d * ld + r] = src[r * Dh + d];
}

// The largest of s[0..n), n >= 1, in 8 lanes so that it vectorises (a max is exact in any order).
template <typename T> T row_max(const T* s, int64_t n) {
    T lanes[8];
    std::fill(lanes, lanes + 8, s[0]);
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int l = 0; l < 8; ++l) lanes[l] = s[c + l] > lanes[l] ? s[c + l] : lanes[l];
    for (; c < n; ++c) lanes[0] = s[c] > lanes[0] ? s[c] : lanes[0];
    return *std::max_element(lanes, lanes + 8);
}

// s[c] = exp(s[c] - shift) for c < n; returns the sum of the new values. For float32 the exp is
// fast_math.h's exp_f32 and the sum runs in 8 lanes, both vectorised: with glibc's scalar expf
// the exps were about half of the attention time in the MoE LM (measured with MG_PROFILE). The
// lanes are added in a fixed order, so the result does not depend on threads.
template <typename T> T exp_shifted(T* s, int64_t n, T shift) {
    if constexpr (std::is_same_v<T, float>) {
        for (int64_t c = 0; c < n; ++c) s[c] = exp_f32(s[c] - shift);
        float lanes[8] = {};
        int64_t c = 0;
        for (; c + 8 <= n; c += 8)
            for (int l = 0; l < 8; ++l) lanes[l] += s[c + l];
        for (; c < n; ++c) lanes[0] += s[c];
        return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    } else {
        T total = 0;
        for (int64_t c = 0; c < n; ++c) total += s[c] = std::exp(s[c] - shift);
        return total;
    }
}

struct Dims {
    int64_t B, H, Tq, Tk, Dh;
    explicit Dims(const Tensor& q, const Tensor& k)
        : B(q.shape()[0]), H(q.shape()[1]), Tq(q.shape()[2]), Tk(k.shape()[2]), Dh(q.shape()[3]) {}
};

// One strip of a tile: query rows [r0, r0 + rows) against key columns [0, cols). Causal attention
// has Tq == Tk, so query and key tiles line up: only the diagonal tile (i0 == j0) has future keys,
// where row r sees columns 0..r. A diagonal tile is cut into strips of kStrip rows, each as wide
// as the keys its last row sees; any other tile is one strip, all of it.
struct Strip {
    int64_t r0, rows, cols;
};
inline Strip row_strip(int64_t r0, int64_t tile_rows, int64_t tile_cols, bool diagonal) {
    if (!diagonal) return {0, tile_rows, tile_cols};
    const int64_t rows = std::min(kStrip, tile_rows - r0);
    return {r0, rows, r0 + rows};
}
// Keys row r of the tile sees (the rest of its strip is in the future).
inline int64_t keys_seen(int64_t r, int64_t strip_cols, bool diagonal) { return diagonal ? r + 1 : strip_cols; }

int64_t tile_size(const Dims& n) {
    const int64_t T = std::max(n.Tq, n.Tk);
    return T <= kOneTileUpTo ? std::max<int64_t>(1, (T + kStrip - 1) / kStrip) * kStrip : kTile;
}

// ---- forward ----------------------------------------------------------------------------------------
// in:  q (B, H, Tq, Dh), k, v (B, H, Tk, Dh), any strides; attrs.flag = causal, attrs.scalar = scale
// out: out (B, H, Tq, Dh) and lse (B, H, Tq), contiguous
template <typename T> void attention_forward(const KernelArgs& args) {
    const Dims n(args.in[0], args.in[1]);
    const Strided4<T> q(args.in[0]), k(args.in[1]), v(args.in[2]);
    T* out = args.out[0].data_ptr<T>();
    T* lse = args.out[1].data_ptr<T>();
    const bool causal = args.attrs.flag;
    const T scale = (T)args.attrs.scalar;
    const int64_t Dh = n.Dh, tile = tile_size(n), q_blocks = (n.Tq + tile - 1) / tile, tasks = n.B * n.H * q_blocks;
    const bool parallel = tasks > 1 && worth_parallel(n.B * n.H * n.Tq * n.Tk * Dh / 8);
#pragma omp parallel if (parallel)
    {
        std::vector<T> q_block(tile * Dh);      // (tile, Dh) queries of this task
        std::vector<T> k_block(tile * Dh);      // (tile, Dh) keys
        std::vector<T> k_block_t(Dh * tile);    // (Dh, tile) the same keys, transposed
        std::vector<T> v_block(tile * Dh);      // (tile, Dh) values
        std::vector<T> S(tile * tile);          // (tile, tile) scores, then probabilities
        std::vector<T> acc(tile * Dh);          // (tile, Dh) unnormalised output
        std::vector<double> m(tile), l(tile);   // running max and sum of each row
        // Causal tasks differ in work (later query blocks see more keys): hand them out dynamically.
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; ++task) {
            const int64_t b = task / (n.H * q_blocks), h = task / q_blocks % n.H, i0 = task % q_blocks * tile;
            const int64_t rows = std::min(tile, n.Tq - i0);
            load_rows(q, b, h, i0, rows, Dh, q_block.data());
            std::fill(m.begin(), m.end(), -std::numeric_limits<double>::infinity());
            std::fill(l.begin(), l.end(), 0.0);
            std::fill(acc.begin(), acc.end(), T(0));
            const int64_t kv_end = causal ? i0 + rows : n.Tk;  // keys past the last row's are all masked
            for (int64_t j0 = 0; j0 < kv_end; j0 += tile) {
                const int64_t cols = std::min(tile, kv_end - j0);
                const bool diagonal = causal && j0 == i0;
                load_rows(k, b, h, j0, cols, Dh, k_block.data());
                transpose_block(k_block.data(), cols, Dh, k_block_t.data(), tile);
                load_rows(v, b, h, j0, cols, Dh, v_block.data());
                for (int64_t r0 = 0; r0 < rows; r0 += kStrip) {
                    const Strip st = row_strip(r0, rows, cols, diagonal);
                    T* S_strip = S.data() + st.r0 * tile;
                    tile_product<T>(st.rows, st.cols, Dh, scale, q_block.data() + st.r0 * Dh, Dh, 1, k_block_t.data(),
                                    tile, false, S_strip, tile);
                    // The online softmax: rescale what is already summed to the new running max.
                    for (int64_t r = st.r0; r < st.r0 + st.rows; ++r) {
                        T* s = S.data() + r * tile;
                        const int64_t seen = keys_seen(r, st.cols, diagonal);
                        const double m_new = std::max(m[r], (double)row_max(s, seen));
                        const double row_sum = exp_shifted(s, seen, (T)m_new);
                        std::fill(s + seen, s + st.cols, T(0));     // future keys: probability 0
                        const double correction = std::exp(m[r] - m_new);  // 0 on the first block
                        l[r] = l[r] * correction + row_sum;
                        m[r] = m_new;
                        if (correction != 1.0)
                            for (int64_t d = 0; d < Dh; ++d) acc[r * Dh + d] *= (T)correction;
                    }
                    tile_product<T>(st.rows, Dh, st.cols, T(1), S_strip, tile, 1, v_block.data(), Dh, true,
                                    acc.data() + st.r0 * Dh, Dh);
                    if (!diagonal) break;  // one strip was the whole tile
                }
            }
            const int64_t row0 = (b * n.H + h) * n.Tq + i0;  // first output row of this task
            for (int64_t r = 0; r < rows; ++r) {
                const double inv_l = 1.0 / l[r];
                for (int64_t d = 0; d < Dh; ++d) out[(row0 + r) * Dh + d] = (T)(acc[r * Dh + d] * inv_l);
                lse[row0 + r] = (T)(m[r] + std::log(l[r]));
            }
        }
    }
}

// ---- backward ---------------------------------------------------------------------------------------
// in:  q, k, v (any strides), out (B, H, Tq, Dh) and lse (B, H, Tq) contiguous, grad_out (any strides)
// out: dq (B, H, Tq, Dh), dk, dv (B, H, Tk, Dh), contiguous; attrs as in the forward
template <typename T> void attention_backward(const KernelArgs& args) {
    const Dims n(args.in[0], args.in[1]);
    const Strided4<T> q(args.in[0]), k(args.in[1]), v(args.in[2]), grad_out(args.in[5]);
    const T* out = args.in[3].data_ptr<T>();
    const T* lse = args.in[4].data_ptr<T>();
    T* dq = args.out[0].data_ptr<T>();
    T* dk = args.out[1].data_ptr<T>();
    T* dv = args.out[2].data_ptr<T>();
    const bool causal = args.attrs.flag;
    const T scale = (T)args.attrs.scalar;
    const int64_t Dh = n.Dh, tile = tile_size(n), heads = n.B * n.H;
    const bool parallel = heads > 1 && worth_parallel(heads * n.Tq * n.Tk * Dh / 8);
#pragma omp parallel if (parallel)
    {
        std::vector<T> k_block(tile * Dh), k_block_t(Dh * tile);   // keys j
        std::vector<T> v_block(tile * Dh), v_block_t(Dh * tile);   // values j
        std::vector<T> q_block(tile * Dh), dout_block(tile * Dh);  // queries i
        std::vector<T> P(tile * tile), dS(tile * tile);            // (tile, tile)
        std::vector<T> D(n.Tq);  // D_i = sum_d dout_id out_id, for every query row of this (b, h)
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < heads; ++bh) {
            const int64_t b = bh / n.H, h = bh % n.H;
            const T* out_bh = out + bh * n.Tq * Dh;
            const T* lse_bh = lse + bh * n.Tq;
            T* dq_bh = dq + bh * n.Tq * Dh;
            for (int64_t i = 0; i < n.Tq; ++i) {
                const T* g = grad_out.row(b, h, i);
                double dot = 0;
                for (int64_t d = 0; d < Dh; ++d) dot += (double)g[d * grad_out.sd] * (double)out_bh[i * Dh + d];
                D[i] = (T)dot;
            }
            std::fill(dq_bh, dq_bh + n.Tq * Dh, T(0));
            for (int64_t j0 = 0; j0 < n.Tk; j0 += tile) {
                const int64_t cols = std::min(tile, n.Tk - j0);
                load_rows(k, b, h, j0, cols, Dh, k_block.data());
                transpose_block(k_block.data(), cols, Dh, k_block_t.data(), tile);
                load_rows(v, b, h, j0, cols, Dh, v_block.data());
                transpose_block(v_block.data(), cols, Dh, v_block_t.data(), tile);
                // dk_j and dv_j (cols x Dh) are contiguous rows of the outputs: sum into them directly.
                T* dk_j = dk + (bh * n.Tk + j0) * Dh;
                T* dv_j = dv + (bh * n.Tk + j0) * Dh;
                std::fill(dk_j, dk_j + cols * Dh, T(0));
                std::fill(dv_j, dv_j + cols * Dh, T(0));
                // Causal: query blocks before this key block see none of its keys.
                for (int64_t i0 = causal ? j0 : 0; i0 < n.Tq; i0 += tile) {
                    const int64_t rows = std::min(tile, n.Tq - i0);
                    const bool diagonal = causal && i0 == j0;
                    load_rows(q, b, h, i0, rows, Dh, q_block.data());
                    load_rows(grad_out, b, h, i0, rows, Dh, dout_block.data());
                    // Query-side, strip by strip of rows: P, dS, and dq_i.
                    for (int64_t r0 = 0; r0 < rows; r0 += kStrip) {
                        const Strip st = row_strip(r0, rows, cols, diagonal);
                        T* P_strip = P.data() + st.r0 * tile;
                        T* dS_strip = dS.data() + st.r0 * tile;
                        // P = exp(S - lse): the forward's probabilities, rebuilt from the scores.
                        tile_product<T>(st.rows, st.cols, Dh, scale, q_block.data() + st.r0 * Dh, Dh, 1,
                                        k_block_t.data(), tile, false, P_strip, tile);
                        for (int64_t r = st.r0; r < st.r0 + st.rows; ++r) {
                            const int64_t seen = keys_seen(r, st.cols, diagonal);
                            exp_shifted(P.data() + r * tile, seen, lse_bh[i0 + r]);
                            std::fill(P.data() + r * tile + seen, P.data() + r * tile + st.cols, T(0));
                        }
                        // dP = dout_i v_j^T, then dS = P * (dP - D_i)
                        tile_product<T>(st.rows, st.cols, Dh, T(1), dout_block.data() + st.r0 * Dh, Dh, 1,
                                        v_block_t.data(), tile, false, dS_strip, tile);
                        for (int64_t r = st.r0; r < st.r0 + st.rows; ++r) {
                            const T Di = D[i0 + r];
                            const T* p = P.data() + r * tile;
                            T* ds = dS.data() + r * tile;
                            for (int64_t c = 0; c < st.cols; ++c) ds[c] = p[c] * (ds[c] - Di);
                        }
                        // dq_i += dS k_j * scale
                        tile_product<T>(st.rows, Dh, st.cols, scale, dS_strip, tile, 1, k_block.data(), Dh, true,
                                        dq_bh + (i0 + st.r0) * Dh, Dh);
                        if (!diagonal) break;
                    }
                    // Key-side, strip by strip of columns, each over the rows that see it:
                    // dv_j += P^T dout_i;  dk_j += dS^T q_i * scale
                    for (int64_t c0 = 0; c0 < cols; c0 += kStrip) {
                        const int64_t width = diagonal ? std::min(kStrip, cols - c0) : cols;
                        const int64_t first = diagonal ? c0 : 0;  // on the diagonal, rows before c0 see none
                        tile_product<T>(width, Dh, rows - first, T(1), P.data() + first * tile + c0, 1, tile,
                                        dout_block.data() + first * Dh, Dh, true, dv_j + c0 * Dh, Dh);
                        tile_product<T>(width, Dh, rows - first, scale, dS.data() + first * tile + c0, 1, tile,
                                        q_block.data() + first * Dh, Dh, true, dk_j + c0 * Dh, Dh);
                        if (!diagonal) break;
                    }
                }
            }
        }
    }
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
    register_kernel(Device::CPU, OpId::attention, attention_kernel);
    register_kernel(Device::CPU, OpId::attention_backward, attention_backward_kernel);
}

}  // namespace mg::cpu
