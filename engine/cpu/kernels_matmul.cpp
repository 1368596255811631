// cpu/kernels_matmul.cpp: the CPU matmul kernel: a batch loop around the GEMM (engine/cpu/gemm.h),
// which takes general strides, so transposed operands are never copied here.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/gemm.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"

namespace mg::cpu {
namespace {

// One (n x k) @ (k x m) product with any strides, on the GEMM of engine/cpu/gemm.h (whose
// plain reference, sgemm_reference/dgemm_reference, is what tests/test_gemm.cpp checks it against).
template <typename T>
void gemm(int64_t n, int64_t m, int64_t k, const T* A, int64_t rsa, int64_t csa, const T* B, int64_t rsb, int64_t csb,
          T* C, int64_t rsc, int64_t csc) {
    if constexpr (std::is_same_v<T, float>) sgemm(n, m, k, 1.0f, A, rsa, csa, B, rsb, csb, 0.0f, C, rsc, csc);
    else dgemm(n, m, k, 1.0, A, rsa, csa, B, rsb, csb, 0.0, C, rsc, csc);
}

// Batched: the op gives A (batch..., n, k), B (batch..., k, m) views and a contiguous C.
// Many small products (attention heads, experts' small groups) run one per thread; a few big
// ones run one after another, each using every thread inside the GEMM.
void matmul_kernel(const KernelArgs& args) {
    const Tensor &a = args.in[0], &b = args.in[1], &c = args.out[0];
    const int64_t nd = c.dim(), n = c.shape()[nd - 2], m = c.shape()[nd - 1], k = a.shape()[nd - 1];
    const Shape batch(c.shape().begin(), c.shape().end() - 2);
    const int64_t batches = numel_of(batch);
    dispatch_floating(a.dtype(), "matmul", [&](auto tag) {
        using T = decltype(tag);
        const T* pa = a.data_ptr<T>();
        const T* pb = b.data_ptr<T>();
        T* pc = c.data_ptr<T>();
        auto one = [&](int64_t bi) {
            int64_t oa = 0, ob = 0, rest = bi;
            for (int64_t d = (int64_t)batch.size() - 1; d >= 0; --d) {
                int64_t i = rest % batch[d];
                rest /= batch[d];
                oa += i * a.strides()[d];
                ob += i * b.strides()[d];
            }
            gemm<T>(n, m, k, pa + oa, a.strides()[nd - 2], a.strides()[nd - 1], pb + ob, b.strides()[nd - 2],
                    b.strides()[nd - 1], pc + bi * n * m, m, 1);
        };
        const bool small_products = n * m * k < 128 * 128 * 128;
        if (batches > 1 && small_products && worth_parallel(batches * n * m * k / 8)) {
#pragma omp parallel for schedule(static)
            for (int64_t bi = 0; bi < batches; ++bi) one(bi);
        } else {
            for (int64_t bi = 0; bi < batches; ++bi) one(bi);
        }
    });
}

// ---- linear ------------------------------------------------------------------------------------
// in: x (rows, in) and w (out, in), any strides; bias (out) contiguous or undefined.
// out: y (rows, out) contiguous = x w^T + bias, then ReLU when attrs.flag. float32 fuses the bias
// and ReLU into the GEMM's epilogue (gemm.h); float64 (gradient checks) adds them after dgemm.
void linear_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &w = args.in[1], &bias = args.in[2], &y = args.out[0];
    const int64_t rows = x.shape()[0], in = x.shape()[1], out = w.shape()[0];
    const bool relu = args.attrs.flag;
    dispatch_floating(x.dtype(), "linear", [&](auto tag) {
        using T = decltype(tag);
        const T* pb = bias.defined() ? bias.data_ptr<T>() : nullptr;
        T* py = y.data_ptr<T>();
        // B = w^T: B(k, j) = w[j, k].
        if constexpr (std::is_same_v<T, float>) {
            Epilogue ep;
            ep.bias = pb;
            ep.relu = relu;
            sgemm(rows, out, in, 1.0f, x.data_ptr<float>(), x.strides()[0], x.strides()[1], w.data_ptr<float>(),
                  w.strides()[1], w.strides()[0], 0.0f, py, out, 1, ep);
        } else {
            dgemm(rows, out, in, 1.0, x.data_ptr<T>(), x.strides()[0], x.strides()[1], w.data_ptr<T>(), w.strides()[1],
                  w.strides()[0], 0.0, py, out, 1);
            if (!pb && !relu) return;
#pragma omp parallel for if (worth_parallel(rows * out))
            for (int64_t i = 0; i < rows; ++i)
                for (int64_t j = 0; j < out; ++j) {
                    T v = py[i * out + j] + (pb ? pb[j] : T(0));
                    py[i * out + j] = relu ? (v > 0 ? v : T(0)) : v;
                }
        }
    });
}

// ---- grouped_matmul ------------------------------------------------------------------------------
// Checks offsets (0 first, never decreasing, N last) and returns them as a vector.
std::vector<int64_t> group_offsets(const Tensor& offsets, int64_t rows, const char* op) {
    const int64_t* o = offsets.data_ptr<int64_t>();
    const int64_t G = offsets.numel() - 1;
    bool ok = o[0] == 0 && o[G] == rows;
    for (int64_t g = 0; g < G && ok; ++g) ok = o[g] <= o[g + 1];
    if (!ok)
        throw std::invalid_argument(std::string(op) + ": offsets must start at 0, never decrease and end at " +
                                    std::to_string(rows) + " (the number of rows), got " + offsets.to_string());
    return std::vector<int64_t>(o, o + G + 1);
}

// Runs body(g) for every group: one group per thread when there are many small groups (each
// GEMM then runs on its thread), else one after another with every thread inside each GEMM.
template <typename F> void for_each_group(const std::vector<int64_t>& off, int64_t flops_per_row, F&& body) {
    const int64_t G = (int64_t)off.size() - 1, rows = off[G];
    const bool parallel = G > 1 && rows / G < 256 && worth_parallel(rows * flops_per_row / 8);
    if (parallel) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t g = 0; g < G; ++g) body(g);
    } else {
        for (int64_t g = 0; g < G; ++g) body(g);
    }
}

// in: x (N, K), w (G, M, K) [flag: (G, K, M)], offsets (G+1); out: y (N, M), all contiguous.
void grouped_matmul_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &w = args.in[1], &y = args.out[0];
    const std::vector<int64_t> off = group_offsets(args.in[2], x.size(0), "grouped_matmul");
    const bool w_as_is = args.attrs.flag;
    const int64_t K = x.size(1), M = y.size(1);
    dispatch_floating(x.dtype(), "grouped_matmul", [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data_ptr<T>();
        const T* pw = w.data_ptr<T>();
        T* py = y.data_ptr<T>();
        for_each_group(off, 2 * K * M, [&](int64_t g) {
            const int64_t n = off[g + 1] - off[g];
            if (n == 0) return;
            // B = w_g^T: B(k, j) = w_g[j, k] (row stride 1, column stride K); or w_g itself.
            const T* wg = pw + g * K * M;
            gemm<T>(n, M, K, px + off[g] * K, K, 1, wg, w_as_is ? M : 1, w_as_is ? 1 : K, py + off[g] * M, M, 1);
        });
    });
}

// in: dy (N, M), x (N, K), offsets (G+1); out: dw (G, M, K) with dw_g = dy_g^T x_g (zero for an
// empty group).
void grouped_matmul_weight_grad_kernel(const KernelArgs& args) {
    const Tensor &dy = args.in[0], &x = args.in[1], &dw = args.out[0];
    const std::vector<int64_t> off = group_offsets(args.in[2], x.size(0), "grouped_matmul_weight_grad");
    const int64_t K = x.size(1), M = dy.size(1);
    dispatch_floating(x.dtype(), "grouped_matmul_weight_grad", [&](auto tag) {
        using T = decltype(tag);
        const T* pdy = dy.data_ptr<T>();
        const T* px = x.data_ptr<T>();
        T* pdw = dw.data_ptr<T>();
        for_each_group(off, 2 * K * M, [&](int64_t g) {
            const int64_t n = off[g + 1] - off[g];
            T* dwg = pdw + g * M * K;
            if (n == 0) {
                std::fill(dwg, dwg + M * K, T(0));
                return;
            }
            // A = dy_g^T: A(i, r) = dy[off + r, i] (row stride 1, column stride M).
            gemm<T>(M, K, n, pdy + off[g] * M, 1, M, px + off[g] * K, K, 1, dwg, K, 1);
        });
    });
}

}  // namespace

void register_matmul_kernels() {
    register_kernel(Device::CPU, OpId::matmul, matmul_kernel);
    register_kernel(Device::CPU, OpId::linear, linear_kernel);
    register_kernel(Device::CPU, OpId::grouped_matmul, grouped_matmul_kernel);
    register_kernel(Device::CPU, OpId::grouped_matmul_weight_grad, grouped_matmul_weight_grad_kernel);
}

}  // namespace mg::cpu
