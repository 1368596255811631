// cuda/kernels_optim.cu: the in-place optimizer updates (engine/ops_optim.cpp), one thread per
// element, the CPU kernel's loop body (engine/cpu/kernels_optim.cpp) as it is.
#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {
namespace {

template <typename T>
__global__ void adam_update_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                                   int64_t n, T step, T b1, T b2, T eps, T decay, T l2, T inv_bc2) {
    MG_GRID_STRIDE_LOOP(i, n) {
        const T pi = p[i] * decay;
        const T gi = g[i] + l2 * pi;
        const T mi = b1 * m[i] + (T(1) - b1) * gi;
        const T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step * mi / (sqrt(vi) * inv_bc2 + eps);
    }
}

void adam_update(const KernelArgs& args) {
    const Tensor &grad = args.in[0], &param = args.out[0], &m = args.out[1], &v = args.out[2];
    const double* h = args.attrs.hyper;
    const int64_t n = param.numel();
    if (n == 0) return;
    dispatch_floating(param.dtype(), "adam_update_", [&](auto tag) {
        using T = decltype(tag);
        adam_update_kernel<T><<<grid_for(n), kThreads>>>(param.data_ptr<T>(), grad.data_ptr<T>(), m.data_ptr<T>(),
                                                         v.data_ptr<T>(), n, (T)h[0], (T)h[1], (T)h[2], (T)h[3],
                                                         (T)h[4], (T)h[5], (T)h[6]);
        check_launch("adam_update_");
    });
}

}  // namespace

void register_optim_kernels() { register_kernel(Device::CUDA, OpId::adam_update, adam_update); }

}  // namespace mg::cuda
