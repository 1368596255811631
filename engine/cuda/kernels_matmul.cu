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
        GemmArgs<T> g;
        g.M = n;
        g.N = m;
        g.K = k;
        g.alpha = 1;
        g.A = a.data_ptr<T>();
        g.rs_a = a.strides()[nd - 2];
        g.cs_a = a.strides()[nd - 1];
        g.B = b.data_ptr<T>();
        g.rs_b = b.strides()[nd - 2];
        g.cs_b = b.strides()[nd - 1];
        g.beta = 0;  // C is write-only: the op allocated it uninitialised
        g.C = c.data_ptr<T>();
        g.rs_c = c.strides()[nd - 2];
        g.cs_c = c.strides()[nd - 1];
        g.batch = products;
        if constexpr (std::is_same_v<T, float>) sgemm_batched(g);
        else dgemm_batched(g);
    });
}

}  // namespace

void register_matmul_kernels() { register_kernel(Device::CUDA, OpId::matmul, matmul_kernel); }

}  // namespace mg::cuda
