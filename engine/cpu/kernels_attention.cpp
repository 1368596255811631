// cpu/kernels_attention.cpp: the memory-efficient attention kernels (FlashAttention on the CPU).
// The op layer (engine/ops_attention.cpp) checks the arguments and allocates the outputs; the
// math, step by step, is in docs/nn/attention.md. The plain reference these kernels are tested
// against is attention_reference (matmul, masked_fill, softmax, matmul in engine ops).
//
// Both kernels cut the (Tq, Tk) score matrix of one (batch, head) into kTile x kTile tiles and
// only ever hold one tile (plus a few (kTile, Dh) blocks of q, k, v) per thread:
//
//   forward, one task per (b, h, block of kTile query rows):
//     m_i = -inf, l_i = 0, acc_i = 0                       (running max, sum and output)
//     for each key block j (causal: only up to the diagonal):
//       S = q_i k_j^T * scale, masked                      (kTile x kTile)
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
// block (Dh = 32..128) sit in L1/L2 together.
constexpr int64_t kTile = 64;

// Tile products on the packed GEMM (true) or on the plain loops below (false). Measured on one
// thread at B=4, H=8, T=1024, Dh=32, causal, float32 (docs/nn/attention.md): forward 140-150 ms
// on the GEMM vs 220 ms on the loops, forward+backward 330-360 ms vs 600 ms. The loops stay as
// the readable version of what each product computes.
constexpr bool kTileProductsOnGemm = true;

// C (M x N, row stride ldc) = alpha * A @ B, or C += alpha * A @ B when accumulate.
// A(i, k) = A[i * rs_a + k * cs_a] (so a transposed tile costs nothing); B is a dense block
// with row stride ldb. The loop order i, k, j keeps the innermost loop on contiguous rows of B
// and C, which the compiler vectorises without reordering any sum.
template <typename T>
void tile_product(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t rs_a, int64_t cs_a, const T* B,
                  int64_t ldb, bool accumulate, T* C, int64_t ldc) {
    if constexpr (kTileProductsOnGemm) {
        if constexpr (std::is_same_v<T, float>)
            sgemm(M, N, K, alpha, A, rs_a, cs_a, B, ldb, 1, accumulate ? 1.0f : 0.0f, C, ldc, 1);
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
    T at(int64_t b, int64_t h, int64_t t, int64_t d) const { return data[b * sb + h * sh + t * st + d * sd]; }
};

// Copies rows [t0, t0 + rows) of x(b, h) into a dense block: (rows x Dh) with row stride Dh, or
// transposed, (Dh x rows) with row stride kTile.
template <typename T>
void load_rows(const Strided4<T>& x, int64_t b, int64_t h, int64_t t0, int64_t rows, int64_t Dh, T* dst) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t d = 0; d < Dh; ++d) dst[r * Dh + d] = x.at(b, h, t0 + r, d);
}
template <typename T>
void load_rows_transposed(const Strided4<T>& x, int64_t b, int64_t h, int64_t t0, int64_t rows, int64_t Dh, T* dst) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t d = 0; d < Dh; ++d) dst[d * kTile + r] = x.at(b, h, t0 + r, d);
}

// Causal: in the tile at (query i0, key j0), key j0 + c is in the future of query i0 + r when
// j0 + c > i0 + r. Those scores become -inf.
template <typename T> void mask_future(T* S, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = std::max<int64_t>(0, i0 + r - j0 + 1); c < cols; ++c)
            S[r * kTile + c] = -std::numeric_limits<T>::infinity();
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
    const int64_t Dh = n.Dh, q_blocks = (n.Tq + kTile - 1) / kTile, tasks = n.B * n.H * q_blocks;
    const bool parallel = tasks > 1 && worth_parallel(n.B * n.H * n.Tq * n.Tk * Dh / 8);
#pragma omp parallel if (parallel)
    {
        std::vector<T> q_block(kTile * Dh);     // (kTile, Dh) queries of this task
        std::vector<T> k_block_t(Dh * kTile);   // (Dh, kTile) keys, transposed
        std::vector<T> v_block(kTile * Dh);     // (kTile, Dh) values
        std::vector<T> S(kTile * kTile);        // (kTile, kTile) scores, then probabilities
        std::vector<T> acc(kTile * Dh);         // (kTile, Dh) unnormalised output
        std::vector<double> m(kTile), l(kTile);  // running max and sum of each row
        // Causal tasks differ in work (later query blocks see more keys): hand them out dynamically.
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < tasks; ++task) {
            const int64_t b = task / (n.H * q_blocks), h = task / q_blocks % n.H, i0 = task % q_blocks * kTile;
            const int64_t rows = std::min(kTile, n.Tq - i0);
            load_rows(q, b, h, i0, rows, Dh, q_block.data());
            std::fill(m.begin(), m.end(), -std::numeric_limits<double>::infinity());
            std::fill(l.begin(), l.end(), 0.0);
            std::fill(acc.begin(), acc.end(), T(0));
            const int64_t kv_end = causal ? i0 + rows : n.Tk;  // keys past the last row's are all masked
            for (int64_t j0 = 0; j0 < kv_end; j0 += kTile) {
                const int64_t cols = std::min(kTile, kv_end - j0);
                load_rows_transposed(k, b, h, j0, cols, Dh, k_block_t.data());
                load_rows(v, b, h, j0, cols, Dh, v_block.data());
                tile_product<T>(rows, cols, Dh, scale, q_block.data(), Dh, 1, k_block_t.data(), kTile, false, S.data(),
                                kTile);
                if (causal && j0 + cols - 1 > i0) mask_future(S.data(), i0, rows, j0, cols);
                // The online softmax: rescale what is already summed to the new running max.
                for (int64_t r = 0; r < rows; ++r) {
                    T* s = S.data() + r * kTile;
                    double tile_max = -std::numeric_limits<double>::infinity();
                    for (int64_t c = 0; c < cols; ++c) tile_max = std::max(tile_max, (double)s[c]);
                    if (tile_max == -std::numeric_limits<double>::infinity()) {  // every key masked
                        std::fill(s, s + cols, T(0));
                        continue;
                    }
                    const double m_new = std::max(m[r], tile_max);
                    const T shift = (T)m_new;
                    const double row_sum = exp_shifted(s, cols, shift);
                    const double correction = std::exp(m[r] - m_new);  // 0 on the first block
                    l[r] = l[r] * correction + row_sum;
                    m[r] = m_new;
                    if (correction != 1.0)
                        for (int64_t d = 0; d < Dh; ++d) acc[r * Dh + d] *= (T)correction;
                }
                tile_product<T>(rows, Dh, cols, T(1), S.data(), kTile, 1, v_block.data(), Dh, true, acc.data(), Dh);
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
    const int64_t Dh = n.Dh, heads = n.B * n.H;
    const bool parallel = heads > 1 && worth_parallel(heads * n.Tq * n.Tk * Dh / 8);
#pragma omp parallel if (parallel)
    {
        std::vector<T> k_block(kTile * Dh), k_block_t(Dh * kTile), v_block_t(Dh * kTile);  // keys j, values j
        std::vector<T> q_block(kTile * Dh), dout_block(kTile * Dh);                         // queries i
        std::vector<T> P(kTile * kTile), dS(kTile * kTile);                                 // (kTile, kTile)
        std::vector<T> dk_block(kTile * Dh), dv_block(kTile * Dh);                          // sums over i
        std::vector<T> D(n.Tq);  // D_i = sum_d dout_id out_id, for every query row of this (b, h)
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < heads; ++bh) {
            const int64_t b = bh / n.H, h = bh % n.H;
            const T* out_bh = out + bh * n.Tq * Dh;
            const T* lse_bh = lse + bh * n.Tq;
            T* dq_bh = dq + bh * n.Tq * Dh;
            for (int64_t i = 0; i < n.Tq; ++i) {
                double dot = 0;
                for (int64_t d = 0; d < Dh; ++d) dot += (double)grad_out.at(b, h, i, d) * (double)out_bh[i * Dh + d];
                D[i] = (T)dot;
            }
            std::fill(dq_bh, dq_bh + n.Tq * Dh, T(0));
            for (int64_t j0 = 0; j0 < n.Tk; j0 += kTile) {
                const int64_t cols = std::min(kTile, n.Tk - j0);
                load_rows(k, b, h, j0, cols, Dh, k_block.data());
                load_rows_transposed(k, b, h, j0, cols, Dh, k_block_t.data());
                load_rows_transposed(v, b, h, j0, cols, Dh, v_block_t.data());
                std::fill(dk_block.begin(), dk_block.end(), T(0));
                std::fill(dv_block.begin(), dv_block.end(), T(0));
                // Causal: query blocks before this key block see none of its keys.
                for (int64_t i0 = causal ? j0 : 0; i0 < n.Tq; i0 += kTile) {
                    const int64_t rows = std::min(kTile, n.Tq - i0);
                    load_rows(q, b, h, i0, rows, Dh, q_block.data());
                    load_rows(grad_out, b, h, i0, rows, Dh, dout_block.data());
                    // P = exp(S - lse): the forward's probabilities, rebuilt from the scores.
                    tile_product<T>(rows, cols, Dh, scale, q_block.data(), Dh, 1, k_block_t.data(), kTile, false,
                                    P.data(), kTile);
                    if (causal && j0 + cols - 1 > i0) mask_future(P.data(), i0, rows, j0, cols);
                    for (int64_t r = 0; r < rows; ++r) exp_shifted(P.data() + r * kTile, cols, lse_bh[i0 + r]);
                    // dv_j += P^T dout_i
                    tile_product<T>(cols, Dh, rows, T(1), P.data(), 1, kTile, dout_block.data(), Dh, true,
                                    dv_block.data(), Dh);
                    // dP = dout_i v_j^T, then dS = P * (dP - D_i)
                    tile_product<T>(rows, cols, Dh, T(1), dout_block.data(), Dh, 1, v_block_t.data(), kTile, false,
                                    dS.data(), kTile);
                    for (int64_t r = 0; r < rows; ++r) {
                        const T Di = D[i0 + r];
                        for (int64_t c = 0; c < cols; ++c)
                            dS[r * kTile + c] = P[r * kTile + c] * (dS[r * kTile + c] - Di);
                    }
                    // dq_i += dS k_j * scale;  dk_j += dS^T q_i * scale
                    tile_product<T>(rows, Dh, cols, scale, dS.data(), kTile, 1, k_block.data(), Dh, true,
                                    dq_bh + i0 * Dh, Dh);
                    tile_product<T>(cols, Dh, rows, scale, dS.data(), 1, kTile, q_block.data(), Dh, true,
                                    dk_block.data(), Dh);
                }
                std::copy(dk_block.begin(), dk_block.begin() + cols * Dh, dk + (bh * n.Tk + j0) * Dh);
                std::copy(dv_block.begin(), dv_block.begin() + cols * Dh, dv + (bh * n.Tk + j0) * Dh);
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
