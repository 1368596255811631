// cpu/kernels_matmul.cpp: the CPU matmul kernel: a batch loop around the GEMM (engine/cpu/gemm.h),
// which takes general strides, so transposed operands are never copied here.
#include <cmath>

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

}  // namespace

void register_matmul_kernels() { register_kernel(Device::CPU, OpId::matmul, matmul_kernel); }

}  // namespace mg::cpu
