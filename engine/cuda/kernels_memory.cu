// cuda/kernels_memory.cu: filling, copying (with dtype conversion, between any two strided views)
// and random numbers on the GPU, mirroring engine/cpu/kernels_memory.cpp.
//
// Thread layout: one thread per element, grid-stride loops (common.cuh), 256 threads a block.
//   - fill / copy: the output may be a strided view (x.slice(...).fill_(v), concat copying each
//     input into its slice of the result), the copy's source any view (transposed, expanded).
//     As in kernels_elementwise.cu, a flat kernel serves the case where every operand is one
//     unit-stride run, and a strided kernel finds each element's offsets with the Indexer.
//   - arange / rand_uniform / rand_normal: the op allocates a fresh contiguous output, so element
//     i is out[i].
//
// Bitwise agreement with the CPU. Random draws are counter-based (engine/random.h): element i of
// a draw is a pure function of (seed, offset, i), the same __host__ __device__ code on both
// devices, so a seed gives the same tensor on the CPU and on the GPU:
//   - rand_uniform: integer Philox bits, then an exact scaling: bitwise equal for both dtypes;
//   - rand_normal: Box-Muller calls log, sqrt, cos and sin in double. sqrt is correctly rounded
//     everywhere, but CUDA's log/cos/sin may differ from glibc's by an ulp or two of a double, so
//     float64 normals agree to ~1e-15 rather than bitwise. Rounded to float32 (the working dtype)
//     such a difference survives only when the double lies within an ulp or two of a float32
//     rounding boundary (float32's ulp is 2^29 double ulps: a few chances in 10^9 per element),
//     so float32 normals are bitwise equal in practice.
//   - arange: see arange_kernel_impl for the one rounding detail (a fused multiply-add).
#include <type_traits>

#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"
#include "engine/random.h"

namespace mg::cuda {
namespace {

// ---- fill -----------------------------------------------------------------------------------------------
template <typename T> __global__ void fill_flat_kernel(T* __restrict__ out, int64_t n, T value) {
    MG_GRID_STRIDE_LOOP(i, n) out[i] = value;
}

template <typename T> __global__ void fill_strided_kernel(T* __restrict__ out, Indexer<1> ix, T value) {
    MG_GRID_STRIDE_LOOP(i, ix.numel) {
        int64_t off[1];
        ix.offsets(i, off);
        out[off[0]] = value;
    }
}

void fill_kernel(const KernelArgs& args) {
    const Tensor& out = args.out[0];
    const int64_t n = out.numel();
    if (n == 0) return;
    const Indexer<1> ix = make_indexer<1>(out.shape(), {&out.strides()});
    dispatch_dtype(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T value = (T)args.attrs.scalar;  // converted on the host, exactly as the CPU does
        if (is_flat(ix)) fill_flat_kernel<<<grid_for(n), kThreads>>>(out.data_ptr<T>(), n, value);
        else fill_strided_kernel<<<grid_for(n), kThreads>>>(out.data_ptr<T>(), ix, value);
    });
    check_launch("fill");
}

// ---- arange ---------------------------------------------------------------------------------------------
// out[i] = start + i * step, computed in double and then converted. The CPU build (GCC,
// -march=native on an FMA machine, contraction on by default) evaluates that expression as one
// fused multiply-add, rounding once; fma() here rounds exactly the same way, whatever nvcc's own
// contraction settings. (For the usual integer start and step every way is exact anyway.)
template <typename T> __global__ void arange_kernel_impl(T* __restrict__ out, int64_t n, double start, double step) {
    MG_GRID_STRIDE_LOOP(i, n) out[i] = (T)fma((double)i, step, start);
}

void arange_kernel(const KernelArgs& args) {
    const Tensor& out = args.out[0];
    const int64_t n = out.numel();
    if (n == 0) return;
    dispatch_dtype(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        arange_kernel_impl<<<grid_for(n), kThreads>>>(out.data_ptr<T>(), n, args.attrs.scalar, args.attrs.scalar2);
    });
    check_launch("arange");
}

// ---- copy -----------------------------------------------------------------------------------------------
// (D)v is C++'s conversion, the same on both devices: float -> int truncates toward zero, any
// nonzero value (NaN included) -> bool is true, bool -> number is 0 or 1. (Out-of-range float ->
// int conversions are undefined behaviour in C++; x86 and CUDA give different values there.)
template <typename S, typename D> __global__ void copy_flat_kernel(const S* src, D* dst, int64_t n) {
    MG_GRID_STRIDE_LOOP(i, n) dst[i] = (D)src[i];
}

// Operand 0 is the destination, operand 1 the source. No __restrict__ here: copy_ may be
// handed overlapping views of one storage (the result is then as undefined as on the CPU, but the
// compiler must not assume otherwise).
template <typename S, typename D> __global__ void copy_strided_kernel(const S* src, D* dst, Indexer<2> ix) {
    MG_GRID_STRIDE_LOOP(i, ix.numel) {
        int64_t off[2];
        ix.offsets(i, off);
        dst[off[0]] = (D)src[off[1]];
    }
}

void copy_kernel(const KernelArgs& args) {
    const Tensor &src = args.in[0], &dst = args.out[0];
    if (src.shape() != dst.shape())
        throw std::invalid_argument("copy: source " + shape_str(src.shape()) + " and destination " +
                                    shape_str(dst.shape()) + " differ");
    const int64_t n = dst.numel();
    if (n == 0) return;
    const Indexer<2> ix = make_indexer<2>(dst.shape(), {&dst.strides(), &src.strides()});
    const bool flat = is_flat(ix);
    // Same dtype, both contiguous runs: a plain device-to-device memcpy, queued on the same stream.
    if (flat && src.dtype() == dst.dtype()) {
        check(cudaMemcpyAsync(dst.raw_data_ptr(), src.raw_data_ptr(), (size_t)n * dtype_size(dst.dtype()),
                              cudaMemcpyDeviceToDevice, 0),
              "cudaMemcpyAsync", "copy");
        return;
    }
    dispatch_dtype(src.dtype(), [&](auto src_tag) {
        using S = decltype(src_tag);
        dispatch_dtype(dst.dtype(), [&](auto dst_tag) {
            using D = decltype(dst_tag);
            if (flat) copy_flat_kernel<<<grid_for(n), kThreads>>>(src.data_ptr<S>(), dst.data_ptr<D>(), n);
            else copy_strided_kernel<<<grid_for(n), kThreads>>>(src.data_ptr<S>(), dst.data_ptr<D>(), ix);
        });
    });
    check_launch("copy");
}

// ---- random numbers -------------------------------------------------------------------------------------
// Uniform in (0, 1). float32 keeps the top 24 bits (a float's significand), so that rounding can
// never give exactly 1; float64 uses all 32 bits. The same arithmetic as the CPU's
// uniform_from_bits: every operation is exact or correctly rounded, so the bits agree.
template <typename T> __device__ T uniform_from_bits(uint32_t bits) {
    if constexpr (std::is_same_v<T, float>) return ((float)(bits >> 8) + 0.5f) * (1.0f / 16777216.0f);
    else return (T)uniform_open(bits);
}

// Element i takes lane i % 4 of Philox block offset + i / 4, exactly as the CPU's loop does. Each
// thread recomputes its block (4 threads share one): simple, and the arithmetic is cheap next
// to the store.
template <typename T>
__global__ void random_kernel_impl(T* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset, bool normal) {
    MG_GRID_STRIDE_LOOP(i, n) {
        out[i] = normal ? (T)philox_normal(seed, offset, (uint64_t)i)
                        : uniform_from_bits<T>(philox_bits(seed, offset, (uint64_t)i));
    }
}

void random_kernel(const KernelArgs& args) {
    const Tensor& out = args.out[0];
    const int64_t n = out.numel();
    const bool normal = args.op == OpId::rand_normal;
    dispatch_floating(out.dtype(), op_name(args.op), [&](auto tag) {
        using T = decltype(tag);
        if (n == 0) return;
        random_kernel_impl<<<grid_for(n), kThreads>>>(out.data_ptr<T>(), n, args.attrs.seed, args.attrs.offset, normal);
        check_launch(op_name(args.op));
    });
}

}  // namespace

void register_memory_kernels() {
    register_kernel(Device::CUDA, OpId::fill, fill_kernel);
    register_kernel(Device::CUDA, OpId::arange, arange_kernel);
    register_kernel(Device::CUDA, OpId::copy, copy_kernel);
    register_kernel(Device::CUDA, OpId::rand_uniform, random_kernel);
    register_kernel(Device::CUDA, OpId::rand_normal, random_kernel);
}

}  // namespace mg::cuda
