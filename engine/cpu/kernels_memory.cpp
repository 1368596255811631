// cpu/kernels_memory.cpp: filling, copying (with dtype conversion, between any two strided
// views) and random numbers. Random kernels compute element i from (seed, offset, i) alone
// (Philox, see engine/random.h), so the result does not depend on the number of threads.
#include <cmath>

#include "engine/backend.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"
#include "engine/random.h"

namespace mg::cpu {
namespace {

void fill_kernel(const KernelArgs& args) {
    const Tensor& out = args.out[0];
    dispatch_dtype(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T value = (T)args.attrs.scalar;
        T* po = out.data_ptr<T>();
        for_each_row<1>(out.shape(), {&out.strides()}, [&](const Offsets<1>& off, int64_t n, const Offsets<1>& s) {
            for (int64_t j = 0; j < n; ++j) po[off[0] + j * s[0]] = value;
        });
    });
}

void arange_kernel(const KernelArgs& args) {
    const Tensor& out = args.out[0];
    dispatch_dtype(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        T* po = out.data_ptr<T>();
        for (int64_t i = 0; i < out.numel(); ++i) po[i] = (T)(args.attrs.scalar + (double)i * args.attrs.scalar2);
    });
}

// out = (dtype of out) in, elementwise, over any strides.
void copy_kernel(const KernelArgs& args) {
    const Tensor &src = args.in[0], &dst = args.out[0];
    if (src.shape() != dst.shape())
        throw std::invalid_argument("copy: source " + shape_str(src.shape()) + " and destination " +
                                    shape_str(dst.shape()) + " differ");
    dispatch_dtype(src.dtype(), [&](auto src_tag) {
        using S = decltype(src_tag);
        dispatch_dtype(dst.dtype(), [&](auto dst_tag) {
            using D = decltype(dst_tag);
            const S* ps = src.data_ptr<S>();
            D* pd = dst.data_ptr<D>();
            for_each_row<2>(dst.shape(), {&dst.strides(), &src.strides()},
                            [&](const Offsets<2>& off, int64_t n, const Offsets<2>& s) {
                                D* d = pd + off[0];
                                const S* a = ps + off[1];
                                if (s[0] == 1 && s[1] == 1) {
                                    for (int64_t j = 0; j < n; ++j) d[j] = (D)a[j];
                                } else {
                                    for (int64_t j = 0; j < n; ++j) d[j * s[0]] = (D)a[j * s[1]];
                                }
                            });
        });
    });
}

// Uniform in (0, 1) for float64; for float32 the top 24 bits, so that rounding never gives 1.
template <typename T> T uniform_from_bits(uint32_t bits) {
    if constexpr (std::is_same_v<T, float>) return ((float)(bits >> 8) + 0.5f) * (1.0f / 16777216.0f);
    else return (T)uniform_open(bits);
}

void random_kernel(const KernelArgs& args) {
    const Tensor& out = args.out[0];
    const uint64_t seed = args.attrs.seed, offset = args.attrs.offset;
    const bool normal = args.op == OpId::rand_normal;
    dispatch_floating(out.dtype(), op_name(args.op), [&](auto tag) {
        using T = decltype(tag);
        T* po = out.data_ptr<T>();
        const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (worth_parallel(n * 8))
        for (int64_t i = 0; i < n; ++i)
            po[i] = normal ? (T)philox_normal(seed, offset, (uint64_t)i)
                           : uniform_from_bits<T>(philox_bits(seed, offset, (uint64_t)i));
    });
}

}  // namespace

void register_memory_kernels() {
    register_kernel(Device::CPU, OpId::fill, fill_kernel);
    register_kernel(Device::CPU, OpId::arange, arange_kernel);
    register_kernel(Device::CPU, OpId::copy, copy_kernel);
    register_kernel(Device::CPU, OpId::rand_uniform, random_kernel);
    register_kernel(Device::CPU, OpId::rand_normal, random_kernel);
}

}  // namespace mg::cpu
