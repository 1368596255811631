// cpu/kernels_matmul.cpp: the CPU matmul kernel: a batch loop around a GEMM with general strides.
#include <cmath>

#include "engine/backend.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"

namespace mg::cpu {
namespace {

// C (n, m) = A (n, k) @ B (k, m) with any strides: the plain reference loop.
template <typename T>
void matmul_plain(int64_t n, int64_t m, int64_t k, const T* A, int64_t rsa, int64_t csa, const T* B, int64_t rsb,
                  int64_t csb, T* C, int64_t rsc, int64_t csc) {
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < m; ++j) {
            T acc = 0;
            for (int64_t p = 0; p < k; ++p) acc += A[i * rsa + p * csa] * B[p * rsb + j * csb];
            C[i * rsc + j * csc] = acc;
        }
}

// Batched: the op gives A (batch..., n, k), B (batch..., k, m) views and a contiguous C.
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
        for (int64_t bi = 0; bi < batches; ++bi) {
            int64_t oa = 0, ob = 0, rest = bi;
            for (int64_t d = (int64_t)batch.size() - 1; d >= 0; --d) {
                int64_t i = rest % batch[d];
                rest /= batch[d];
                oa += i * a.strides()[d];
                ob += i * b.strides()[d];
            }
            matmul_plain<T>(n, m, k, pa + oa, a.strides()[nd - 2], a.strides()[nd - 1], pb + ob, b.strides()[nd - 2],
                            b.strides()[nd - 1], pc + bi * n * m, m, 1);
        }
    });
}

}  // namespace

void register_matmul_kernels() { register_kernel(Device::CPU, OpId::matmul, matmul_kernel); }

}  // namespace mg::cpu
