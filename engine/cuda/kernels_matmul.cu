// cuda/kernels_matmul.cu: the CUDA matmul kernel: ONE batched launch of our GEMM (engine/cuda/gemm.h)
// for every product of the batch, which takes general strides, so transposed operands are never
// copied here (as in engine/cpu/kernels_matmul.cpp).
//
// The op (engine/ops_matmul.cpp) gives A as a (batch..., n, k) view and B as a (batch..., k, m)
// view, strides and all: a broadcast batch dimension has stride 0, a transposed operand (the
// backward pass's B^T and A^T) has its last two strides swapped. C is contiguous (batch..., n, m).
// Where the CPU loops over the batch on the host, the GPU takes the whole batch in one launch:
// blockIdx.z is the product, and each block finds its A, B and C from the batch strides (a
// GemmBatch, the same strided walk as engine/cuda/indexer.h) without any copy or host round trip.
#include <type_traits>

#include "engine/cuda/common.cuh"
#include "engine/cuda/gemm.h"
#include "engine/cuda/kernels.h"

namespace mg::cuda {
namespace {

// C = A @ B with any strides (C written, never read: beta = 0), one product or a batch.
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rs_a, int64_t cs_a, const T* B, int64_t rs_b,
          int64_t cs_b, T* C, int64_t rs_c, int64_t cs_c, const GemmBatch& batch = single_product()) {
    GemmArgs<T> g;
    g.M = M;
    g.N = N;
    g.K = K;
    g.A = A;
    g.rs_a = rs_a;
    g.cs_a = cs_a;
    g.B = B;
    g.rs_b = rs_b;
    g.cs_b = cs_b;
    g.beta = 0;  // the ops allocate C uninitialised
    g.C = C;
    g.rs_c = rs_c;
    g.cs_c = cs_c;
    g.batch = batch;
    if constexpr (std::is_same_v<T, float>) sgemm_batched(g);
    else dgemm_batched(g);
}

void matmul_kernel(const KernelArgs& args) {
    const Tensor &a = args.in[0], &b = args.in[1], &c = args.out[0];
    const int64_t nd = c.dim(), n = c.shape()[nd - 2], m = c.shape()[nd - 1], k = a.shape()[nd - 1];
    if (c.numel() == 0) return;  // K == 0 is not empty: C is then all zeros, which the GEMM writes
    // The batch dimensions and each operand's strides over them (merged where they line up).
    const Shape batch(c.shape().begin(), c.shape().end() - 2);
    const Shape a_batch_strides(a.strides().begin(), a.strides().end() - 2);
    const Shape b_batch_strides(b.strides().begin(), b.strides().end() - 2);
    const Shape c_batch_strides(c.strides().begin(), c.strides().end() - 2);
    const GemmBatch products = make_indexer<3>(batch, {&a_batch_strides, &b_batch_strides, &c_batch_strides});
    dispatch_floating(a.dtype(), "matmul", [&](auto tag) {
        using T = decltype(tag);
        gemm<T>(n, m, k, a.data_ptr<T>(), a.strides()[nd - 2], a.strides()[nd - 1], b.data_ptr<T>(), b.strides()[nd - 2],
                b.strides()[nd - 1], c.data_ptr<T>(), c.strides()[nd - 2], c.strides()[nd - 1], products);
    });
}

// ---- linear: the GEMM, then bias and ReLU in one elementwise pass ------------------------------------
// (The CPU fuses them into the GEMM's epilogue; here they are a second, memory-bound launch: fusing
// them into engine/cuda/gemm.cu's kernels is a known next step.)
template <typename T>
__global__ void bias_relu_kernel(T* y, const T* bias, int64_t rows, int64_t cols, bool relu) {
    MG_GRID_STRIDE_LOOP(i, rows * cols) {
        T v = y[i];
        if (bias) v += bias[i % cols];
        if (relu) v = v > T(0) ? v : T(0);
        y[i] = v;
    }
}

// in: x (rows, in) and w (out, in), any strides; bias (out) contiguous or undefined; attrs.flag = relu.
// out: y (rows, out) contiguous.
void linear_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &w = args.in[1], &bias = args.in[2], &y = args.out[0];
    const int64_t rows = x.shape()[0], in = x.shape()[1], out = w.shape()[0];
    if (y.numel() == 0) return;
    const bool relu = args.attrs.flag;
    dispatch_floating(x.dtype(), "linear", [&](auto tag) {
        using T = decltype(tag);
        // B = w^T: B(k, j) = w[j, k].
        gemm<T>(rows, out, in, x.data_ptr<T>(), x.strides()[0], x.strides()[1], w.data_ptr<T>(), w.strides()[1],
                w.strides()[0], y.data_ptr<T>(), out, 1);
        if (!bias.defined() && !relu) return;
        bias_relu_kernel<T><<<grid_for(rows * out), kThreads>>>(
            y.data_ptr<T>(), bias.defined() ? bias.data_ptr<T>() : nullptr, rows, out, relu);
        check_launch("linear");
    });
}

}  // namespace

void register_matmul_kernels() {
    register_kernel(Device::CUDA, OpId::matmul, matmul_kernel);
    register_kernel(Device::CUDA, OpId::linear, linear_kernel);
}

}  // namespace mg::cuda
