// cuda/kernels_elementwise.cu: the CUDA kernels for elementwise ops, mirroring
// engine/cpu/kernels_elementwise.cpp (the plain reference they are tested against).
//
// How an op becomes a kernel: one GPU thread per output element (a grid-stride loop, so a grid
// capped at 65536 blocks of 256 threads still covers any size). Each op's math is a small functor
// (a struct with a __device__ operator()), the GPU's version of the CPU file's lambdas; map1 /
// map2 / where apply it over the operands.
//
// The ops hand us a contiguous output and inputs that may be strided: a transposed view, or a
// broadcast operand expanded to the output's shape (stride 0 along the expanded dimensions). Two
// kernels per map cover that:
//   - flat:    every operand is one unit-stride run (the common case after the indexer merges
//              dimensions): element i is simply x[i], y[i], out[i];
//   - strided: each thread turns its linear index i into one offset per operand with the Indexer
//              (engine/cuda/indexer.h: a few integer divisions per dimension).
// Neighbouring threads touch neighbouring elements, so in the flat case the loads and stores of a
// warp are coalesced into a few wide memory transactions. Elementwise kernels do a handful of
// flops per element: their speed is the memory bandwidth.
//
// Math: the device's own functions (expf / exp, erff / erf, log1pf / log1p, ...), which are within
// a few ulp of the exact values. float32 results are therefore close to, but not always bitwise
// equal to, the CPU's (which uses fast_math.h's erf_f32 / exp_f32 for gelu); the parity tests
// compare with a tolerance. Comparisons, selects and integer arithmetic are exact on both devices.
#include <type_traits>

#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {
namespace {

// ---- the float32 / float64 versions of each math function -------------------------------------------
// CUDA names the float32 versions with an f suffix (expf). Calling exp() on a float would
// silently compute in double, which is much slower on most GPUs, so each call is explicit.
template <typename T> constexpr bool is_f32 = std::is_same_v<T, float>;
template <typename T> __device__ T exp_of(T v) { if constexpr (is_f32<T>) return expf(v); else return exp(v); }
template <typename T> __device__ T log_of(T v) { if constexpr (is_f32<T>) return logf(v); else return log(v); }
template <typename T> __device__ T log1p_of(T v) { if constexpr (is_f32<T>) return log1pf(v); else return log1p(v); }
template <typename T> __device__ T sqrt_of(T v) { if constexpr (is_f32<T>) return sqrtf(v); else return sqrt(v); }
template <typename T> __device__ T pow_of(T v, T p) { if constexpr (is_f32<T>) return powf(v, p); else return pow(v, p); }
template <typename T> __device__ T erf_of(T v) { if constexpr (is_f32<T>) return erff(v); else return erf(v); }
template <typename T> __device__ T tanh_of(T v) { if constexpr (is_f32<T>) return tanhf(v); else return tanh(v); }
template <typename T> __device__ T abs_of(T v) { if constexpr (is_f32<T>) return fabsf(v); else return fabs(v); }

constexpr double kSqrtHalf = 0.7071067811865476;        // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.3989422804014327;      // 1 / sqrt(2 pi), the normal density at 0

// ---- unary functors: out = f(x) ----------------------------------------------------------------------
struct Neg { template <typename T> __device__ T operator()(T v) const { return -v; } };
struct Abs { template <typename T> __device__ T operator()(T v) const { return abs_of(v); } };
struct Exp { template <typename T> __device__ T operator()(T v) const { return exp_of(v); } };
struct Log { template <typename T> __device__ T operator()(T v) const { return log_of(v); } };
struct Sqrt { template <typename T> __device__ T operator()(T v) const { return sqrt_of(v); } };
template <typename T> struct Pow {
    T p;
    __device__ T operator()(T v) const { return pow_of(v, p); }
};
// std::min(std::max(v, low), high) spelled out as the CPU's std::min/std::max compute it, so a NaN
// passes through unchanged (fminf/fmaxf would instead return the bound).
template <typename T> struct Clamp {
    T low, high;
    __device__ T operator()(T v) const {
        const T at_least_low = (v < low) ? low : v;
        return (high < at_least_low) ? high : at_least_low;
    }
};
struct Relu { template <typename T> __device__ T operator()(T v) const { return v > 0 ? v : T(0); } };
// gelu(x) = x * Phi(x), with the exact normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2.
struct Gelu {
    template <typename T> __device__ T operator()(T v) const { return T(0.5) * v * (T(1) + erf_of(v * T(kSqrtHalf))); }
};
struct Erf { template <typename T> __device__ T operator()(T v) const { return erf_of(v); } };
struct Tanh { template <typename T> __device__ T operator()(T v) const { return tanh_of(v); } };
struct Sigmoid { template <typename T> __device__ T operator()(T v) const { return T(1) / (T(1) + exp_of(-v)); } };
// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^-|x|): e^-|x| <= 1 never overflows.
struct Softplus {
    template <typename T> __device__ T operator()(T v) const {
        return ((v < T(0)) ? T(0) : v) + log1p_of(exp_of(-abs_of(v)));
    }
};
struct LogicalNot { __device__ bool operator()(bool v) const { return !v; } };

// ---- binary functors: out = f(a, b) --------------------------------------------------------------------
struct Add { template <typename T> __device__ T operator()(T a, T b) const { return a + b; } };
struct Sub { template <typename T> __device__ T operator()(T a, T b) const { return a - b; } };
struct Mul { template <typename T> __device__ T operator()(T a, T b) const { return a * b; } };
struct Div { template <typename T> __device__ T operator()(T a, T b) const { return a / b; } };
// Ties go to a (maximum's backward assumes "a >= b"); a NaN on either side gives b, as on the CPU.
struct Maximum { template <typename T> __device__ T operator()(T a, T b) const { return a >= b ? a : b; } };
// The fused backward passes: g is the incoming gradient, v the saved forward value.
struct ReluBackward { template <typename T> __device__ T operator()(T g, T v) const { return v > 0 ? g : T(0); } };
// d/dx gelu(x) = Phi(x) + x * phi(x), with phi the normal density, times g.
struct GeluBackward {
    template <typename T> __device__ T operator()(T g, T v) const {
        const T cdf = T(0.5) * (T(1) + erf_of(v * T(kSqrtHalf)));
        const T pdf = exp_of(T(-0.5) * v * v) * T(kInvSqrt2Pi);
        return g * (cdf + v * pdf);
    }
};
// Comparisons: bool output, any input dtype (bool included, as on the CPU).
struct Eq { template <typename T> __device__ bool operator()(T a, T b) const { return a == b; } };
struct Ne { template <typename T> __device__ bool operator()(T a, T b) const { return a != b; } };
struct Lt { template <typename T> __device__ bool operator()(T a, T b) const { return a < b; } };
struct Le { template <typename T> __device__ bool operator()(T a, T b) const { return a <= b; } };
struct Gt { template <typename T> __device__ bool operator()(T a, T b) const { return a > b; } };
struct Ge { template <typename T> __device__ bool operator()(T a, T b) const { return a >= b; } };
struct LogicalAnd { template <typename T> __device__ bool operator()(T a, T b) const { return a && b; } };

// ---- the kernels ----------------------------------------------------------------------------------------
// The functor is passed by value: it becomes a kernel argument (in constant memory), like its
// captured scalars (pow's exponent, clamp's bounds).
template <typename T, typename U, typename F>
__global__ void map1_flat_kernel(const T* __restrict__ x, U* __restrict__ out, int64_t n, F f) {
    MG_GRID_STRIDE_LOOP(i, n) out[i] = f(x[i]);
}

// Operand 0 is the output, operand 1 the input.
template <typename T, typename U, typename F>
__global__ void map1_strided_kernel(const T* __restrict__ x, U* __restrict__ out, Indexer<2> ix, F f) {
    MG_GRID_STRIDE_LOOP(i, ix.numel) {
        int64_t off[2];
        ix.offsets(i, off);
        out[off[0]] = f(x[off[1]]);
    }
}

template <typename T, typename U, typename F>
__global__ void map2_flat_kernel(const T* __restrict__ a, const T* __restrict__ b, U* __restrict__ out, int64_t n, F f) {
    MG_GRID_STRIDE_LOOP(i, n) out[i] = f(a[i], b[i]);
}

// Operands: 0 the output, 1 and 2 the inputs (a broadcast input has stride 0 where expanded).
template <typename T, typename U, typename F>
__global__ void map2_strided_kernel(const T* __restrict__ a, const T* __restrict__ b, U* __restrict__ out,
                                    Indexer<3> ix, F f) {
    MG_GRID_STRIDE_LOOP(i, ix.numel) {
        int64_t off[3];
        ix.offsets(i, off);
        out[off[0]] = f(a[off[1]], b[off[2]]);
    }
}

// out = cond ? a : b. Always through the indexer: `where` is mostly called with a broadcast
// operand (masked_fill's scalar, a mask over rows), where the flat path would not apply anyway.
template <typename T>
__global__ void where_kernel_impl(const bool* __restrict__ cond, const T* __restrict__ a, const T* __restrict__ b,
                                  T* __restrict__ out, Indexer<4> ix) {
    MG_GRID_STRIDE_LOOP(i, ix.numel) {
        int64_t off[4];
        ix.offsets(i, off);
        out[off[0]] = cond[off[1]] ? a[off[2]] : b[off[3]];
    }
}

// ---- host side: pick the kernel, launch it --------------------------------------------------------------
// out = f(x) over out's shape; x has out's shape and any strides.
template <typename T, typename U, typename F> void map1(const KernelArgs& args, const Tensor& x, const Tensor& out, F f) {
    const int64_t n = out.numel();
    if (n == 0) return;
    const Indexer<2> ix = make_indexer<2>(out.shape(), {&out.strides(), &x.strides()});
    if (is_flat(ix))
        map1_flat_kernel<<<grid_for(n), kThreads>>>(x.data_ptr<T>(), out.data_ptr<U>(), n, f);
    else
        map1_strided_kernel<<<grid_for(n), kThreads>>>(x.data_ptr<T>(), out.data_ptr<U>(), ix, f);
    check_launch(op_name(args.op));
}

// out = f(a, b); a and b already expanded to out's shape by the op.
template <typename T, typename U, typename F>
void map2(const KernelArgs& args, const Tensor& a, const Tensor& b, const Tensor& out, F f) {
    const int64_t n = out.numel();
    if (n == 0) return;
    const Indexer<3> ix = make_indexer<3>(out.shape(), {&out.strides(), &a.strides(), &b.strides()});
    if (is_flat(ix))
        map2_flat_kernel<<<grid_for(n), kThreads>>>(a.data_ptr<T>(), b.data_ptr<T>(), out.data_ptr<U>(), n, f);
    else
        map2_strided_kernel<<<grid_for(n), kThreads>>>(a.data_ptr<T>(), b.data_ptr<T>(), out.data_ptr<U>(), ix, f);
    check_launch(op_name(args.op));
}

// ---- the registered kernels (same dtypes and checks as the CPU's) ---------------------------------------
void unary_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &out = args.out[0];
    dispatch_floating(x.dtype(), op_name(args.op), [&](auto tag) {
        using T = decltype(tag);
        const T p = (T)args.attrs.scalar, q = (T)args.attrs.scalar2;
        switch (args.op) {
            case OpId::neg: return map1<T, T>(args, x, out, Neg{});
            case OpId::abs: return map1<T, T>(args, x, out, Abs{});
            case OpId::exp: return map1<T, T>(args, x, out, Exp{});
            case OpId::log: return map1<T, T>(args, x, out, Log{});
            case OpId::sqrt: return map1<T, T>(args, x, out, Sqrt{});
            case OpId::pow: return map1<T, T>(args, x, out, Pow<T>{p});
            case OpId::clamp: return map1<T, T>(args, x, out, Clamp<T>{p, q});
            case OpId::relu: return map1<T, T>(args, x, out, Relu{});
            case OpId::gelu: return map1<T, T>(args, x, out, Gelu{});
            case OpId::erf: return map1<T, T>(args, x, out, Erf{});
            case OpId::tanh: return map1<T, T>(args, x, out, Tanh{});
            case OpId::sigmoid: return map1<T, T>(args, x, out, Sigmoid{});
            case OpId::softplus: return map1<T, T>(args, x, out, Softplus{});
            default: throw std::logic_error("unary_kernel: not a unary op");
        }
    });
}

void binary_kernel(const KernelArgs& args) {
    const Tensor &a = args.in[0], &b = args.in[1], &out = args.out[0];
    if (a.dtype() == DType::Bool) throw std::invalid_argument(std::string(op_name(args.op)) + ": bool operands");
    dispatch_dtype(a.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, bool>) {
            switch (args.op) {
                case OpId::add: return map2<T, T>(args, a, b, out, Add{});
                case OpId::sub: return map2<T, T>(args, a, b, out, Sub{});
                case OpId::mul: return map2<T, T>(args, a, b, out, Mul{});
                case OpId::div: return map2<T, T>(args, a, b, out, Div{});
                case OpId::maximum: return map2<T, T>(args, a, b, out, Maximum{});
                case OpId::relu_backward: return map2<T, T>(args, a, b, out, ReluBackward{});
                case OpId::gelu_backward:
                    // The op only passes float tensors (require_floating); integers have no gelu.
                    if constexpr (std::is_floating_point_v<T>) return map2<T, T>(args, a, b, out, GeluBackward{});
                    throw std::invalid_argument("gelu_backward: expected a float32 or float64 tensor");
                default: throw std::logic_error("binary_kernel: not a binary op");
            }
        }
    });
}

void compare_kernel(const KernelArgs& args) {
    const Tensor &a = args.in[0], &b = args.in[1], &out = args.out[0];
    dispatch_dtype(a.dtype(), [&](auto tag) {
        using T = decltype(tag);
        switch (args.op) {
            case OpId::eq: return map2<T, bool>(args, a, b, out, Eq{});
            case OpId::ne: return map2<T, bool>(args, a, b, out, Ne{});
            case OpId::lt: return map2<T, bool>(args, a, b, out, Lt{});
            case OpId::le: return map2<T, bool>(args, a, b, out, Le{});
            case OpId::gt: return map2<T, bool>(args, a, b, out, Gt{});
            case OpId::ge: return map2<T, bool>(args, a, b, out, Ge{});
            case OpId::logical_and: return map2<T, bool>(args, a, b, out, LogicalAnd{});
            default: throw std::logic_error("compare_kernel: not a comparison");
        }
    });
}

void logical_not_kernel(const KernelArgs& args) { map1<bool, bool>(args, args.in[0], args.out[0], LogicalNot{}); }

void where_kernel(const KernelArgs& args) {
    const Tensor &cond = args.in[0], &a = args.in[1], &b = args.in[2], &out = args.out[0];
    const int64_t n = out.numel();
    if (n == 0) return;
    const Indexer<4> ix = make_indexer<4>(out.shape(), {&out.strides(), &cond.strides(), &a.strides(), &b.strides()});
    dispatch_dtype(a.dtype(), [&](auto tag) {
        using T = decltype(tag);
        where_kernel_impl<<<grid_for(n), kThreads>>>(cond.data_ptr<bool>(), a.data_ptr<T>(), b.data_ptr<T>(),
                                                     out.data_ptr<T>(), ix);
    });
    check_launch("where");
}

}  // namespace

void register_elementwise_kernels() {
    for (OpId op : {OpId::neg, OpId::abs, OpId::exp, OpId::log, OpId::sqrt, OpId::pow, OpId::clamp, OpId::relu,
                    OpId::gelu, OpId::erf, OpId::tanh, OpId::sigmoid, OpId::softplus})
        register_kernel(Device::CUDA, op, unary_kernel);
    for (OpId op : {OpId::add, OpId::sub, OpId::mul, OpId::div, OpId::maximum, OpId::relu_backward, OpId::gelu_backward})
        register_kernel(Device::CUDA, op, binary_kernel);
    for (OpId op : {OpId::eq, OpId::ne, OpId::lt, OpId::le, OpId::gt, OpId::ge, OpId::logical_and})
        register_kernel(Device::CUDA, op, compare_kernel);
    register_kernel(Device::CUDA, OpId::logical_not, logical_not_kernel);
    register_kernel(Device::CUDA, OpId::where, where_kernel);
}

}  // namespace mg::cuda
