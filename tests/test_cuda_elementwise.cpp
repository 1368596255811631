// CUDA parity of the elementwise and memory kernels (engine/cuda/kernels_elementwise.cu,
// engine/cuda/kernels_memory.cu) against the CPU kernels, which are the reference.
//
// Elementwise math: values and gradients via check_cuda_parity, on odd sizes (1, 7, 33, 1031: not
// multiples of the 256-thread block), with transposed, sliced and broadcast operands (made inside
// the tested function, so the same view is taken on both devices), float32 and float64, and the
// integer and bool dtypes where the CPU accepts them. Tolerances: float32 rtol 1e-5 / atol 1e-5
// (the devices' exp/erf/pow differ by a few ulp, and the CPU's gelu uses its fast erf, within
// 5e-7); float64 rtol 1e-10 / atol 1e-12. Comparisons, selects, copies, fills and integer
// arithmetic are compared bit for bit.
//
// Random numbers: a seed must give the same tensor on both devices. rand is bitwise equal in both
// dtypes, randn bitwise in float32; float64 randn goes through CUDA's log/cos/sin, which may
// differ from glibc's by an ulp, so it is compared to 1e-13 (see kernels_memory.cu).
#include <doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "tests/cuda_parity.h"

using namespace mg;
using mg::test::check_cuda_parity;
using mg::test::ParityTolerance;
using mg::test::randn_input;

namespace {

const ParityTolerance kF32{1e-5, 1e-5};
const ParityTolerance kF64{1e-10, 1e-12};
ParityTolerance tol_for(DType dtype) { return dtype == DType::Float64 ? kF64 : kF32; }

// Shapes of odd sizes: a single element, fewer than a warp, not a multiple of the block, and a
// multi-dimensional one whose innermost size is not a multiple of anything.
const std::vector<Shape> kShapes = {{}, {1}, {7}, {33}, {1031}, {3, 5, 7}, {2, 257}};

// NaN at the same places (closeness() skips a NaN on one side only).
bool same_nans(const Tensor& a, const Tensor& b) {
    std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
    if (va.size() != vb.size()) return false;
    for (size_t i = 0; i < va.size(); ++i)
        if (std::isnan(va[i]) != std::isnan(vb[i])) return false;
    return true;
}

// Same shape, dtype and bytes (bool as its stored 0/1 byte): exact equality, NaNs included.
bool same_bits(const Tensor& a, const Tensor& b) {
    if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
    Tensor ca = a.detach().to(Device::CPU).contiguous(), cb = b.detach().to(Device::CPU).contiguous();
    if (ca.numel() == 0) return true;
    return std::memcmp(ca.raw_data_ptr(), cb.raw_data_ptr(), (size_t)ca.numel() * dtype_size(ca.dtype())) == 0;
}

// Away from 0, where log, sqrt and fractional powers are steep or undefined.
Tensor positive_input(const Shape& shape, uint64_t seed, DType dtype) {
    Generator gen(seed);
    Tensor t = (abs(randn(shape, gen, dtype)) + 0.5).detach();
    t.set_requires_grad(true);
    return t;
}

// Small integers in [low, high) as `dtype`: many ties, for comparisons and maximum.
Tensor small_ints(const Shape& shape, uint64_t seed, DType dtype, int64_t low = -3, int64_t high = 4) {
    Generator gen(seed);
    return copy(randint(low, high, shape, gen), dtype);
}

struct UnaryCase {
    const char* name;
    std::function<Tensor(const Tensor&)> f;
    bool positive_only;  // needs inputs > 0
};
std::vector<UnaryCase> unary_cases() {
    return {
        {"neg", [](const Tensor& x) { return neg(x); }, false},
        {"abs", [](const Tensor& x) { return abs(x); }, false},
        {"exp", [](const Tensor& x) { return exp(x); }, false},
        {"log", [](const Tensor& x) { return log(x); }, true},
        {"sqrt", [](const Tensor& x) { return sqrt(x); }, true},
        {"pow 3", [](const Tensor& x) { return pow(x, 3); }, false},      // odd power of negatives
        {"pow -1.5", [](const Tensor& x) { return pow(x, -1.5); }, true},
        {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, false},
        {"relu", [](const Tensor& x) { return relu(x); }, false},
        {"gelu", [](const Tensor& x) { return gelu(x); }, false},
        {"erf", [](const Tensor& x) { return erf(x); }, false},
        {"tanh", [](const Tensor& x) { return tanh(x); }, false},
        {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, false},
        {"softplus", [](const Tensor& x) { return softplus(x * 10.0); }, false},  // large |x| too
    };
}

}  // namespace

TEST_SUITE("cuda") {

// ---- unary ---------------------------------------------------------------------------------------
TEST_CASE("cuda unary: every op, values and gradients, float32 and float64, odd sizes") {
    uint64_t seed = 1;
    for (const UnaryCase& c : unary_cases())
        for (DType dtype : {DType::Float32, DType::Float64})
            for (const Shape& shape : kShapes) {
                Tensor x = c.positive_only ? positive_input(shape, seed++, dtype) : randn_input(shape, seed++, dtype);
                check_cuda_parity(std::string(c.name) + " " + dtype_name(dtype) + " " + shape_str(shape),
                                  [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{c.f(in[0])}; },
                                  {x}, tol_for(dtype));
            }
}

TEST_CASE("cuda unary: transposed and sliced inputs take the strided kernel") {
    uint64_t seed = 100;
    for (const UnaryCase& c : unary_cases())
        for (DType dtype : {DType::Float32, DType::Float64}) {
            Tensor x = c.positive_only ? positive_input({9, 40}, seed++, dtype) : randn_input({9, 40}, seed++, dtype);
            check_cuda_parity(std::string(c.name) + " transposed",
                              [&](const std::vector<Tensor>& in) { return std::vector<Tensor>{c.f(in[0].t())}; }, {x},
                              tol_for(dtype));
            check_cuda_parity(std::string(c.name) + " every third column",
                              [&](const std::vector<Tensor>& in) {
                                  return std::vector<Tensor>{c.f(in[0].slice(1, 1, 40, 3))};
                              },
                              {x}, tol_for(dtype));
        }
}

TEST_CASE("cuda unary: NaN, infinities and signed zero behave as on the CPU") {
    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    for (DType dtype : {DType::Float32, DType::Float64}) {
        Tensor x = Tensor::from_vector(std::vector<double>{nan, inf, -inf, 0.0, -0.0, 1e30, -1e30, 80, -80}, {9})
                       .to(dtype);
        for (const UnaryCase& c : unary_cases()) {
            if (c.positive_only) continue;  // log(-inf) etc.: NaN on both, but not worth pinning
            Tensor cpu = c.f(x), gpu = c.f(x.to(Device::CUDA));
            INFO(c.name << " " << dtype_name(dtype));
            // Same NaNs and infinities; finite values within the usual tolerance.
            CHECK(same_nans(gpu, cpu));
            CHECK(mg::test::closeness(gpu.to(Device::CPU), cpu, 1e-5, 1e-6) <= 1.0);
        }
        // relu, clamp and abs pass NaN through (or drop it) exactly like the CPU's comparisons.
        for (auto f : {+[](const Tensor& t) { return relu(t); }, +[](const Tensor& t) { return clamp(t, -1, 1); },
                       +[](const Tensor& t) { return abs(t); }})
            CHECK(same_bits(f(x.to(Device::CUDA)), f(x)));
    }
}

// ---- binary --------------------------------------------------------------------------------------
TEST_CASE("cuda binary: add sub mul div maximum, same shape and broadcast, with gradients") {
    using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);
    const std::pair<const char*, BinaryFn> ops[] = {{"add", add}, {"sub", sub}, {"mul", mul}, {"div", div},
                                                    {"maximum", maximum}};
    // (a's shape, b's shape): equal; b a row; b a column; both broadcast; b a single value.
    const std::pair<Shape, Shape> shapes[] = {{{1031}, {1031}}, {{4, 33}, {33}}, {{4, 33}, {4, 1}},
                                              {{5, 1, 7}, {3, 1}}, {{6, 7}, {}}, {{1}, {1}}};
    // Broadcast gradients are sums over up to 33 elements, added in a different order on each
    // device: a looser atol in float32.
    const ParityTolerance f32_sums{1e-5, 1e-4};
    uint64_t seed = 200;
    for (auto [name, op] : ops)
        for (DType dtype : {DType::Float32, DType::Float64})
            for (auto [sa, sb] : shapes) {
                Tensor a = randn_input(sa, seed++, dtype);
                Tensor b = std::string(name) == "div" ? positive_input(sb, seed++, dtype) : randn_input(sb, seed++, dtype);
                check_cuda_parity(std::string(name) + " " + dtype_name(dtype) + " " + shape_str(sa) + " " + shape_str(sb),
                                  [op](const std::vector<Tensor>& in) { return std::vector<Tensor>{op(in[0], in[1])}; },
                                  {a, b}, dtype == DType::Float32 ? f32_sums : kF64);
            }
}

TEST_CASE("cuda binary: transposed operands and maximum's ties") {
    using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);
    uint64_t seed = 300;
    for (BinaryFn op : {BinaryFn(add), BinaryFn(sub), BinaryFn(mul), BinaryFn(maximum)}) {
        Tensor a = randn_input({8, 35}, seed++), b = randn_input({35, 8}, seed++);
        check_cuda_parity("transposed b",
                          [op](const std::vector<Tensor>& in) { return std::vector<Tensor>{op(in[0], in[1].t())}; },
                          {a, b}, kF32);
        check_cuda_parity("both transposed, one sliced",
                          [op](const std::vector<Tensor>& in) {
                              return std::vector<Tensor>{op(in[0].t().slice(0, 0, 35, 2), in[1].slice(0, 0, 35, 2))};
                          },
                          {a, b}, kF32);
    }
    // Integer-valued floats tie often; the gradient goes to a on a tie, on both devices.
    Tensor a = small_ints({200}, 1, DType::Float32), b = small_ints({200}, 2, DType::Float32);
    a.set_requires_grad(true);
    b.set_requires_grad(true);
    check_cuda_parity("maximum with ties",
                      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{maximum(in[0], in[1])}; }, {a, b},
                      ParityTolerance{0, 0});
}

TEST_CASE("cuda binary: integer dtypes are exact") {
    for (DType dtype : {DType::Int32, DType::Int64}) {
        Tensor a = small_ints({7, 33}, 10, dtype, -1000, 1000), b = small_ints({33}, 11, dtype, 1, 50);  // no zero divisor
        Tensor ga = a.to(Device::CUDA), gb = b.to(Device::CUDA);
        INFO(dtype_name(dtype));
        CHECK(same_bits(add(ga, gb), add(a, b)));
        CHECK(same_bits(sub(ga, gb), sub(a, b)));
        CHECK(same_bits(mul(ga, gb), mul(a, b)));
        CHECK(same_bits(div(ga, gb), div(a, b)));          // truncates toward zero on both
        CHECK(same_bits(maximum(ga, gb), maximum(a, b)));
    }
    Tensor t = Tensor::ones({3}, DType::Bool, Device::CUDA);
    CHECK_THROWS_AS(add(t, t), std::invalid_argument);  // as on the CPU: no arithmetic on bool
}

TEST_CASE("cuda fused backward: relu_backward and gelu_backward") {
    uint64_t seed = 400;
    for (DType dtype : {DType::Float32, DType::Float64})
        for (const Shape& shape : kShapes) {
            Tensor g = randn_input(shape, seed++, dtype), v = randn_input(shape, seed++, dtype);
            g.set_requires_grad(false);
            v.set_requires_grad(false);
            check_cuda_parity("relu_backward",
                              [](const std::vector<Tensor>& in) { return std::vector<Tensor>{relu_backward(in[0], in[1])}; },
                              {g, v}, tol_for(dtype));
            check_cuda_parity("gelu_backward",
                              [](const std::vector<Tensor>& in) { return std::vector<Tensor>{gelu_backward(in[0], in[1])}; },
                              {g, v}, tol_for(dtype));
        }
    // A broadcast gradient operand takes the strided path.
    Tensor g = randn_input({33}, 5), v = randn_input({4, 33}, 6);
    g.set_requires_grad(false);
    v.set_requires_grad(false);
    check_cuda_parity("gelu_backward broadcast",
                      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{gelu_backward(in[0], in[1])}; },
                      {g, v}, kF32);
}

// ---- comparisons, logic, where ----------------------------------------------------------------------
TEST_CASE("cuda compare: eq ne lt le gt ge in every dtype, with ties and broadcasting (exact)") {
    using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);
    const BinaryFn ops[] = {eq, ne, lt, le, gt, ge};
    for (DType dtype : {DType::Float32, DType::Float64, DType::Int32, DType::Int64, DType::Bool}) {
        // Bool operands: 0/1 from small integers in [0, 2).
        const int64_t low = dtype == DType::Bool ? 0 : -3, high = dtype == DType::Bool ? 2 : 4;
        Tensor a = small_ints({5, 33}, 20, dtype, low, high), b = small_ints({33}, 21, dtype, low, high);
        Tensor ga = a.to(Device::CUDA), gb = b.to(Device::CUDA);
        for (BinaryFn op : ops) {
            INFO(dtype_name(dtype));
            Tensor r = op(ga, gb);
            CHECK(r.dtype() == DType::Bool);
            CHECK(same_bits(r, op(a, b)));
            CHECK(same_bits(op(ga.t(), gb.unsqueeze(1)), op(a.t(), b.unsqueeze(1))));  // strided
        }
    }
    // NaN compares unequal to everything, itself included.
    Tensor n = Tensor::from_vector(std::vector<float>{NAN, 1, NAN}, {3}), m = Tensor::from_vector({NAN, 1, 2}, {3});
    for (BinaryFn op : ops) CHECK(same_bits(op(n.to(Device::CUDA), m.to(Device::CUDA)), op(n, m)));
}

TEST_CASE("cuda logical_and, logical_not (exact)") {
    Tensor a = small_ints({1031}, 30, DType::Bool, 0, 2), b = small_ints({1031}, 31, DType::Bool, 0, 2);
    Tensor ga = a.to(Device::CUDA), gb = b.to(Device::CUDA);
    CHECK(same_bits(logical_and(ga, gb), logical_and(a, b)));
    CHECK(same_bits(logical_not(ga), logical_not(a)));
    Tensor a2 = a.slice(0, 0, 1030).reshape({10, 103}), b2 = b.slice(0, 0, 103);
    CHECK(same_bits(logical_and(ga.slice(0, 0, 1030).reshape({10, 103}).t(), gb.slice(0, 0, 103).unsqueeze(1)),
                    logical_and(a2.t(), b2.unsqueeze(1))));
    CHECK(same_bits(logical_not(ga.slice(0, 0, 1031, 2)), logical_not(a.slice(0, 0, 1031, 2))));
}

TEST_CASE("cuda where: broadcast condition and operands, gradients, every dtype") {
    Tensor cond = small_ints({4, 1, 33}, 40, DType::Bool, 0, 2);
    Tensor a = randn_input({3, 33}, 41), b = randn_input({}, 42);  // b a single value, as in masked_fill
    // cond is an input without gradient (bool); the parity check copies it too.
    check_cuda_parity("where broadcast",
                      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{where(in[0], in[1], in[2])}; },
                      {cond, a, b}, ParityTolerance{1e-5, 1e-4});  // b's gradient sums 396 values
    check_cuda_parity("masked_fill",
                      [](const std::vector<Tensor>& in) {
                          return std::vector<Tensor>{masked_fill(in[1], in[0].squeeze(1).slice(0, 0, 3), -1e9)};
                      },
                      {cond, a}, kF32);
    for (DType dtype : {DType::Float64, DType::Int32, DType::Int64, DType::Bool}) {
        Tensor x = small_ints({7, 33}, 43, dtype, 0, 2), y = small_ints({33}, 44, dtype, 0, 2);
        Tensor c = small_ints({7, 1}, 45, DType::Bool, 0, 2);
        INFO(dtype_name(dtype));
        CHECK(same_bits(where(c.to(Device::CUDA), x.to(Device::CUDA), y.to(Device::CUDA)), where(c, x, y)));
    }
}

// ---- copy ------------------------------------------------------------------------------------------
TEST_CASE("cuda copy: every pair of dtypes, contiguous and transposed sources, bool semantics (exact)") {
    const DType dtypes[] = {DType::Float32, DType::Float64, DType::Int32, DType::Int64, DType::Bool};
    // Negative, fractional (truncated toward zero by integer targets), zero and large values.
    std::vector<double> values;
    for (int i = 0; i < 60; ++i) values.push_back((i % 7 - 3) * 1.75 + (i % 5 == 0 ? 0.0 : 0.3 * (i % 3)));
    values[10] = 0;
    values[11] = -0.4;     // -> 0 as an integer, true as a bool
    values[12] = 123456.5;
    Tensor base = Tensor::from_vector(values, {6, 10});
    for (DType from : dtypes) {
        Tensor src = base.to(from);  // the CPU kernel makes each source dtype
        Tensor gsrc = src.to(Device::CUDA);
        for (DType to : dtypes) {
            INFO(dtype_name(from) << " -> " << dtype_name(to));
            CHECK(same_bits(copy(gsrc, to), copy(src, to)));
            CHECK(same_bits(copy(gsrc.t(), to), copy(src.t(), to)));                            // strided source
            CHECK(same_bits(copy(gsrc.slice(1, 0, 1).expand({6, 5}), to), copy(src.slice(1, 0, 1).expand({6, 5}), to)));
        }
    }
}

TEST_CASE("cuda copy_: into strided destinations, broadcast sources, concat") {
    Tensor src = randn_input({5, 7}, 50).detach(), row = randn_input({12}, 51).detach();
    for (DType dtype : {DType::Float32, DType::Int64}) {
        Tensor big = Tensor::zeros({12, 9}, dtype), gbig = big.to(Device::CUDA);
        // Every other row, columns 1..7: a destination with strides (18, 1) and an offset.
        big.slice(0, 1, 11, 2).slice(1, 1, 8).copy_(src.to(dtype));
        gbig.slice(0, 1, 11, 2).slice(1, 1, 8).copy_(src.to(dtype).to(Device::CUDA));
        CHECK(same_bits(gbig, big));
        // A transposed destination and a broadcast source.
        big.slice(1, 0, 5).t().copy_(row.to(dtype));
        gbig.slice(1, 0, 5).t().copy_(row.to(dtype).to(Device::CUDA));
        CHECK(same_bits(gbig, big));
    }
    Tensor a = randn_input({3, 4}, 52), b = randn_input({3, 2}, 53);
    check_cuda_parity("concat (copies into slices)",
                      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{concat({in[0], in[1]}, 1)}; }, {a, b},
                      ParityTolerance{0, 0});
    check_cuda_parity("copy to float64 and back, with gradient",
                      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{copy(in[0].t(), DType::Float64)}; },
                      {a}, kF32);
}

// ---- fill, arange ------------------------------------------------------------------------------------
TEST_CASE("cuda fill: full, zeros, ones in every dtype and fill_ of a strided view (exact)") {
    for (DType dtype : {DType::Float32, DType::Float64, DType::Int32, DType::Int64, DType::Bool})
        for (double value : {0.0, 1.0, -2.75, 0.1}) {
            INFO(dtype_name(dtype) << " " << value);
            CHECK(same_bits(Tensor::full({3, 333}, value, dtype, Device::CUDA), Tensor::full({3, 333}, value, dtype)));
            Tensor big = Tensor::zeros({10, 20}, dtype), gbig = Tensor::zeros({10, 20}, dtype, Device::CUDA);
            big.slice(1, 3, 20, 4).fill_(value);
            gbig.slice(1, 3, 20, 4).fill_(value);
            CHECK(same_bits(gbig, big));
        }
    CHECK(same_bits(Tensor::scalar(3.5, DType::Float32, Device::CUDA), Tensor::scalar(3.5)));
}

TEST_CASE("cuda arange: integer and fractional steps, every dtype (exact)") {
    struct Range { double start, end, step; };
    const Range ranges[] = {{0, 1031, 1}, {5, -3, -1}, {0, 1, 0.1}, {-2.5, 7.3, 0.37}, {1e6, 1e6 + 50, 0.3}};
    for (DType dtype : {DType::Float32, DType::Float64, DType::Int32, DType::Int64})
        for (const Range& r : ranges) {
            INFO(dtype_name(dtype) << " [" << r.start << ", " << r.end << ") step " << r.step);
            CHECK(same_bits(Tensor::arange(r.start, r.end, r.step, dtype, Device::CUDA),
                            Tensor::arange(r.start, r.end, r.step, dtype)));
        }
}

// ---- random numbers -------------------------------------------------------------------------------------
TEST_CASE("cuda rand / randn: a seed gives the same tensor on both devices") {
    // Sizes that are not multiples of 4 (the Philox block) and draws that start mid-stream.
    for (int64_t n : {1, 3, 7, 1031, 100003}) {
        for (DType dtype : {DType::Float32, DType::Float64}) {
            INFO(n << " " << dtype_name(dtype));
            Generator cpu_gen(1234), gpu_gen(1234);
            for (int draw = 0; draw < 3; ++draw) {
                Tensor u = rand({n}, cpu_gen, dtype), gu = rand({n}, gpu_gen, dtype, Device::CUDA);
                CHECK(gu.device() == Device::CUDA);
                CHECK(same_bits(gu, u));
                Tensor z = randn({n}, cpu_gen, dtype), gz = randn({n}, gpu_gen, dtype, Device::CUDA);
                if (dtype == DType::Float32) CHECK(same_bits(gz, z));
                else CHECK(mg::test::closeness(gz.to(Device::CPU), z, 1e-13, 1e-13) <= 1.0);  // CUDA's log/cos/sin vs glibc's
            }
            CHECK(cpu_gen.offset() == gpu_gen.offset());
        }
    }
    // randint goes through rand (float64), mul, copy (float64 -> int64, truncation) and add.
    Generator cpu_gen(7), gpu_gen(7);
    CHECK(same_bits(randint(-5, 17, {1000}, gpu_gen, Device::CUDA), randint(-5, 17, {1000}, cpu_gen)));
    // Shaped draws are the same numbers in row-major order.
    Generator g1(9), g2(9);
    CHECK(same_bits(randn({3, 5, 7}, g1, DType::Float32, Device::CUDA), randn({3, 5, 7}, g2)));
    // Integer dtypes are refused as on the CPU.
    Generator g3(1);
    CHECK_THROWS_AS(rand({4}, g3, DType::Int32, Device::CUDA), std::invalid_argument);
}

// ---- empty tensors, determinism -------------------------------------------------------------------------
TEST_CASE("cuda elementwise and memory ops on empty tensors launch nothing and keep shapes") {
    for (const Shape& shape : {Shape{0}, Shape{3, 0}, Shape{0, 5}}) {
        Tensor x = Tensor::zeros(shape, DType::Float32, Device::CUDA), y = Tensor::ones(shape, DType::Float32, Device::CUDA);
        CHECK(exp(x).shape() == shape);
        CHECK(add(x, y).shape() == shape);
        CHECK(gelu_backward(x, y).shape() == shape);
        CHECK(lt(x, y).dtype() == DType::Bool);
        CHECK(where(lt(x, y), x, y).shape() == shape);
        CHECK(copy(x, DType::Int64).shape() == shape);
        Generator gen(1);
        CHECK(randn(shape, gen, DType::Float32, Device::CUDA).numel() == 0);
        CHECK(x.to(Device::CPU).numel() == 0);  // synchronises: no kernel error was flagged
    }
    CHECK(Tensor::arange(3, 3, 1, DType::Int64, Device::CUDA).numel() == 0);
    // Broadcasting an empty dimension against a full one.
    Tensor e = Tensor::zeros({0, 1}, DType::Float32, Device::CUDA), f = Tensor::ones({1, 4}, DType::Float32, Device::CUDA);
    CHECK(mul(e, f).shape() == Shape{0, 4});
}

TEST_CASE("cuda elementwise: the same inputs give bitwise the same outputs, run after run") {
    Tensor x = randn_input({33, 70}, 60).detach().to(Device::CUDA), y = randn_input({70}, 61).detach().to(Device::CUDA);
    auto run = [&] { return std::vector<Tensor>{gelu(x.t()), div(x, y), gelu_backward(x, y), copy(x.t(), DType::Float64)}; };
    std::vector<Tensor> first = run(), second = run();
    for (size_t i = 0; i < first.size(); ++i) CHECK(same_bits(first[i], second[i]));
}

}  // TEST_SUITE("cuda")
