// cpu/kernels_elementwise.cpp: the plain CPU kernels for elementwise ops. Each op's math is one
// lambda; map1/map2/map3 apply it over strided operands (see loops.h). The inner loop has a
// unit-stride branch so that the compiler can vectorise the common contiguous case.
#include <cmath>

#include "engine/backend.h"
#include "engine/cpu/fast_math.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"

namespace mg::cpu {
namespace {

// out = f(x)
template <typename T, typename U, typename F> void map1(const Tensor& x, const Tensor& out, F f) {
    const T* px = x.data_ptr<T>();
    U* po = out.data_ptr<U>();
    for_each_row<2>(out.shape(), {&out.strides(), &x.strides()}, [&](const Offsets<2>& off, int64_t n, const Offsets<2>& s) {
        U* o = po + off[0];
        const T* a = px + off[1];
        if (s[0] == 1 && s[1] == 1) {
            for (int64_t j = 0; j < n; ++j) o[j] = f(a[j]);
        } else {
            for (int64_t j = 0; j < n; ++j) o[j * s[0]] = f(a[j * s[1]]);
        }
    });
}

// out = f(x, y); x and y already expanded to out's shape by the op.
template <typename T, typename U, typename F> void map2(const Tensor& x, const Tensor& y, const Tensor& out, F f) {
    const T* px = x.data_ptr<T>();
    const T* py = y.data_ptr<T>();
    U* po = out.data_ptr<U>();
    for_each_row<3>(out.shape(), {&out.strides(), &x.strides(), &y.strides()},
                    [&](const Offsets<3>& off, int64_t n, const Offsets<3>& s) {
                        U* o = po + off[0];
                        const T* a = px + off[1];
                        const T* b = py + off[2];
                        if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
                            for (int64_t j = 0; j < n; ++j) o[j] = f(a[j], b[j]);
                        } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {  // tensor op scalar/row
                            const T bv = b[0];
                            for (int64_t j = 0; j < n; ++j) o[j] = f(a[j], bv);
                        } else {
                            for (int64_t j = 0; j < n; ++j) o[j * s[0]] = f(a[j * s[1]], b[j * s[2]]);
                        }
                    });
}

// erf and exp of float32 come from fast_math.h (vectorisable, within 5e-7 of the exact functions);
// float64 keeps std::erf / std::exp, the references.
template <typename T> [[gnu::always_inline]] inline T erf_of(T v) {
    if constexpr (std::is_same_v<T, float>) return erf_f32(v);
    else return std::erf(v);
}
template <typename T> [[gnu::always_inline]] inline T exp_of(T v) {
    if constexpr (std::is_same_v<T, float>) return exp_f32(v);
    else return std::exp(v);
}
template <typename T> [[gnu::always_inline]] inline T gelu_exact(T v) { return T(0.5) * v * (T(1) + erf_of(v * T(M_SQRT1_2))); }
// d/dx gelu(x) = Phi(x) + x * phi(x), times the incoming gradient g.
template <typename T> [[gnu::always_inline]] inline T gelu_grad(T g, T v) {  // inlined: the loop vectorises
    const T cdf = T(0.5) * (T(1) + erf_of(v * T(M_SQRT1_2)));
    const T pdf = exp_of(T(-0.5) * v * v) * T(0.3989422804014327);  // 1 / sqrt(2 pi)
    return g * (cdf + v * pdf);
}
template <typename T> T softplus_stable(T v) { return std::max(v, T(0)) + std::log1p(std::exp(-std::abs(v))); }

void unary_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &out = args.out[0];
    dispatch_floating(x.dtype(), op_name(args.op), [&](auto tag) {
        using T = decltype(tag);
        const T p = (T)args.attrs.scalar, q = (T)args.attrs.scalar2;
        switch (args.op) {
            case OpId::neg: return map1<T, T>(x, out, [](T v) { return -v; });
            case OpId::abs: return map1<T, T>(x, out, [](T v) { return std::abs(v); });
            case OpId::exp: return map1<T, T>(x, out, [](T v) { return std::exp(v); });
            case OpId::log: return map1<T, T>(x, out, [](T v) { return std::log(v); });
            case OpId::sqrt: return map1<T, T>(x, out, [](T v) { return std::sqrt(v); });
            case OpId::pow: return map1<T, T>(x, out, [p](T v) { return std::pow(v, p); });
            case OpId::clamp: return map1<T, T>(x, out, [p, q](T v) { return std::min(std::max(v, p), q); });
            case OpId::relu: return map1<T, T>(x, out, [](T v) { return v > 0 ? v : T(0); });
            case OpId::gelu: return map1<T, T>(x, out, [](T v) { return gelu_exact(v); });
            case OpId::erf: return map1<T, T>(x, out, [](T v) { return std::erf(v); });
            case OpId::tanh: return map1<T, T>(x, out, [](T v) { return std::tanh(v); });
            case OpId::sigmoid: return map1<T, T>(x, out, [](T v) { return T(1) / (T(1) + std::exp(-v)); });
            case OpId::softplus: return map1<T, T>(x, out, [](T v) { return softplus_stable(v); });
            default: throw std::logic_error("unary_kernel: not a unary op");
        }
    });
}

void binary_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &y = args.in[1], &out = args.out[0];
    if (x.dtype() == DType::Bool) throw std::invalid_argument(std::string(op_name(args.op)) + ": bool operands");
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (!std::is_same_v<T, bool>) {
            switch (args.op) {
                case OpId::add: return map2<T, T>(x, y, out, [](T a, T b) { return a + b; });
                case OpId::sub: return map2<T, T>(x, y, out, [](T a, T b) { return a - b; });
                case OpId::mul: return map2<T, T>(x, y, out, [](T a, T b) { return a * b; });
                case OpId::div: return map2<T, T>(x, y, out, [](T a, T b) { return a / b; });
                case OpId::maximum: return map2<T, T>(x, y, out, [](T a, T b) { return a >= b ? a : b; });
                case OpId::relu_backward: return map2<T, T>(x, y, out, [](T g, T v) { return v > 0 ? g : T(0); });
                case OpId::gelu_backward:
                    if constexpr (std::is_floating_point_v<T>) return map2<T, T>(x, y, out, [](T g, T v) { return gelu_grad(g, v); });
                    break;
                default: throw std::logic_error("binary_kernel: not a binary op");
            }
        }
    });
}

void compare_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &y = args.in[1], &out = args.out[0];
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        switch (args.op) {
            case OpId::eq: return map2<T, bool>(x, y, out, [](T a, T b) { return a == b; });
            case OpId::ne: return map2<T, bool>(x, y, out, [](T a, T b) { return a != b; });
            case OpId::lt: return map2<T, bool>(x, y, out, [](T a, T b) { return a < b; });
            case OpId::le: return map2<T, bool>(x, y, out, [](T a, T b) { return a <= b; });
            case OpId::gt: return map2<T, bool>(x, y, out, [](T a, T b) { return a > b; });
            case OpId::ge: return map2<T, bool>(x, y, out, [](T a, T b) { return a >= b; });
            case OpId::logical_and: return map2<T, bool>(x, y, out, [](T a, T b) { return a && b; });
            default: throw std::logic_error("compare_kernel: not a comparison");
        }
    });
}

void logical_not_kernel(const KernelArgs& args) {
    map1<bool, bool>(args.in[0], args.out[0], [](bool v) { return !v; });
}

// out = cond ? a : b
void where_kernel(const KernelArgs& args) {
    const Tensor &cond = args.in[0], &x = args.in[1], &y = args.in[2], &out = args.out[0];
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const bool* pc = cond.data_ptr<bool>();
        const T* px = x.data_ptr<T>();
        const T* py = y.data_ptr<T>();
        T* po = out.data_ptr<T>();
        for_each_row<4>(out.shape(), {&out.strides(), &cond.strides(), &x.strides(), &y.strides()},
                        [&](const Offsets<4>& off, int64_t n, const Offsets<4>& s) {
                            for (int64_t j = 0; j < n; ++j)
                                po[off[0] + j * s[0]] = pc[off[1] + j * s[1]] ? px[off[2] + j * s[2]] : py[off[3] + j * s[3]];
                        });
    });
}

}  // namespace

void register_elementwise_kernels() {
    for (OpId op : {OpId::neg, OpId::abs, OpId::exp, OpId::log, OpId::sqrt, OpId::pow, OpId::clamp, OpId::relu,
                    OpId::gelu, OpId::erf, OpId::tanh, OpId::sigmoid, OpId::softplus})
        register_kernel(Device::CPU, op, unary_kernel);
    for (OpId op : {OpId::add, OpId::sub, OpId::mul, OpId::div, OpId::maximum, OpId::relu_backward, OpId::gelu_backward})
        register_kernel(Device::CPU, op, binary_kernel);
    for (OpId op : {OpId::eq, OpId::ne, OpId::lt, OpId::le, OpId::gt, OpId::ge, OpId::logical_and})
        register_kernel(Device::CPU, op, compare_kernel);
    register_kernel(Device::CPU, OpId::logical_not, logical_not_kernel);
    register_kernel(Device::CPU, OpId::where, where_kernel);
}

}  // namespace mg::cpu
