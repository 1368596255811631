// tests/test_cuda_reduce_nn.cpp: the CUDA reductions (engine/cuda/kernels_reduce.cu) and nn kernels
// (engine/cuda/kernels_nn.cu) against the CPU kernels, which are the reference. Each check runs an
// op on the CPU and on the GPU through check_cuda_parity (tests/cuda_parity.h), which also compares
// the gradients; the backward passes are written in engine ops, so that checks the whole chain.
//
// The shapes are chosen to reach every thread layout of the kernels (see the header comments of the
// two .cu files): rows of 1 and 7 values (a thread per line, a warp with idle lanes), 33 (just over
// a warp), 1000 (a block per row), 100000 and (3, 70000) (long rows cut into chunks: two launches),
// (70000, 3) and (4, 600, 40) along dim 0/1 (the tiled inner > 1 kernel, chunked), and every dim of
// each shape (first, middle, last).
#include <doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "tests/cuda_parity.h"

using namespace mg;
using namespace mg::test;

namespace {

const std::vector<Shape> kShapes = {{1},         {7},         {33},      {1000},      {100000},     {3, 70000},
                                    {2, 33, 7},  {5, 1, 9},   {1000, 3}, {70000, 3},  {4, 600, 40}, {2, 5000}};

// Tolerances for a reduction over R values.
// float32: both devices accumulate in double and round once to float, so they differ only by the
// order of the double additions (relative 1e-16 or so); but a float result can still come out one
// float ulp apart when the two double sums straddle a rounding boundary. For long sums of unit
// normals the results reach ~|1e3| (and the gradients of softmax / logsumexp over them are small
// differences of such sums), so an ulp there is ~1e-4 absolute: looser atol for R >= 10000.
// float64: the order of additions alone; over 1e5 values of size 1 that is well under 1e-9.
ParityTolerance tolerance(DType dtype, int64_t R) {
    const bool long_sum = R >= 10000;
    if (dtype == DType::Float32) return long_sum ? ParityTolerance{1e-5, 1e-4} : ParityTolerance{1e-5, 1e-6};
    return long_sum ? ParityTolerance{1e-10, 1e-9} : ParityTolerance{1e-12, 1e-12};
}
// Integer results, indices and exact selections (max values) must match exactly.
const ParityTolerance kExact{0, 0};

std::string describe(const char* op, const Shape& shape, int64_t dim, bool keepdim, DType dtype) {
    return std::string(op) + " of " + shape_str(shape) + " (" + dtype_name(dtype) + ") over dim " +
           std::to_string(dim) + (keepdim ? " keepdim" : "");
}

// Same shape, dtype and bytes (the determinism checks: run twice on the GPU, expect the same bits).
bool same_bits(const Tensor& a, const Tensor& b) {
    Tensor ca = a.to(Device::CPU).contiguous(), cb = b.to(Device::CPU).contiguous();
    if (ca.shape() != cb.shape() || ca.dtype() != cb.dtype()) return false;
    return std::memcmp(ca.raw_data_ptr(), cb.raw_data_ptr(), (size_t)ca.numel() * dtype_size(ca.dtype())) == 0;
}

// A float tensor built from values on the CPU (for NaN / inf / tie patterns).
Tensor from_values(const std::vector<double>& v, const Shape& shape, DType dtype) {
    return Tensor::from_vector(v, shape).to(dtype);
}

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

}  // namespace

TEST_SUITE("cuda") {
    // ---- sum / mean --------------------------------------------------------------------------------
    TEST_CASE("cuda sum, mean: every dim of every shape, keepdim, float32 and float64, forward and gradient") {
        for (DType dtype : {DType::Float32, DType::Float64})
            for (size_t k = 0; k < kShapes.size(); ++k) {
                const Shape& shape = kShapes[k];
                Tensor x = randn_input(shape, 100 + k, dtype);
                for (int64_t dim = 0; dim < (int64_t)shape.size(); ++dim)
                    for (bool keepdim : {false, true})
                        check_cuda_parity(
                            describe("sum/mean", shape, dim, keepdim, dtype),
                            [dim, keepdim](const std::vector<Tensor>& in) {
                                return std::vector<Tensor>{sum(in[0], dim, keepdim), mean(in[0], dim, keepdim)};
                            },
                            {x}, tolerance(dtype, shape[dim]));
                // Over everything (several launches, one per dim, the last one often a single row).
                check_cuda_parity(
                    describe("sum/mean of all", shape, -1, false, dtype),
                    [](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum(in[0]), mean(in[0])}; }, {x},
                    tolerance(dtype, x.numel()));
            }
    }

    TEST_CASE("cuda sum: one huge row (two launches: chunk partials, then the partials of each row)") {
        // 2^20 values: 256 chunks, merged by a warp; 2^22: 1024 chunks, merged by a block.
        for (int64_t n : {int64_t(1) << 20, int64_t(1) << 22}) {
            Tensor x = randn_input({n}, 7, DType::Float32);
            check_cuda_parity(
                "sum of " + std::to_string(n) + " values",
                [](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum(in[0]), mean(in[0], 0, true)}; },
                {x}, tolerance(DType::Float32, n));
            Tensor x64 = randn_input({n}, 8, DType::Float64);
            check_cuda_parity(
                "sum of " + std::to_string(n) + " float64 values",
                [](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum(in[0])}; }, {x64},
                tolerance(DType::Float64, n));
        }
    }

    TEST_CASE("cuda sum, mean: several dims at once, and strided (transposed) inputs") {
        Tensor x = randn_input({6, 35, 40}, 11);
        check_cuda_parity(
            "sum over {0, 2} keepdim, mean over {1, 2}",
            [](const std::vector<Tensor>& in) {
                return std::vector<Tensor>{sum(in[0], {0, 2}, true), mean(in[0], {1, 2})};
            },
            {x});
        check_cuda_parity(
            "sum of a transposed view",
            [](const std::vector<Tensor>& in) {
                Tensor t = in[0].transpose(0, 2);  // (40, 35, 6), strided
                return std::vector<Tensor>{sum(t, 0), sum(t, 2, true), mean(t, 1)};
            },
            {x});
    }

    TEST_CASE("cuda sum: int32, int64 and bool inputs give exact int64 sums") {
        Generator gen(5);
        for (const Shape& shape : kShapes) {
            Tensor i64 = randint(-1000, 1000, shape, gen);
            Tensor i32 = i64.to(DType::Int32);
            Tensor flags = gt(i64, Tensor::scalar(0, DType::Int64));
            for (int64_t dim = 0; dim < (int64_t)shape.size(); ++dim)
                check_cuda_parity(
                    "integer sums of " + shape_str(shape) + " over dim " + std::to_string(dim),
                    [dim](const std::vector<Tensor>& in) {
                        return std::vector<Tensor>{sum(in[0], dim), sum(in[1], dim, true), sum(in[2], dim),
                                                   sum(in[0]), sum(in[2])};
                    },
                    {i64, i32, flags}, kExact);
        }
    }

    // ---- max / min / argmax ------------------------------------------------------------------------
    TEST_CASE("cuda max, min, argmax: every dim of every shape, values, indices and gradients") {
        for (DType dtype : {DType::Float32, DType::Float64})
            for (size_t k = 0; k < kShapes.size(); ++k) {
                const Shape& shape = kShapes[k];
                Tensor x = randn_input(shape, 200 + k, dtype);
                for (int64_t dim = 0; dim < (int64_t)shape.size(); ++dim)
                    for (bool keepdim : {false, true})
                        check_cuda_parity(
                            describe("max/min/argmax", shape, dim, keepdim, dtype),
                            [dim, keepdim](const std::vector<Tensor>& in) {
                                ValuesIndices hi = max(in[0], dim, keepdim), lo = min(in[0], dim, keepdim);
                                return std::vector<Tensor>{hi.values, hi.indices, lo.values, lo.indices,
                                                           argmax(in[0], dim, keepdim)};
                            },
                            {x}, kExact);
                check_cuda_parity(
                    describe("max/min of all", shape, -1, false, dtype),
                    [](const std::vector<Tensor>& in) { return std::vector<Tensor>{max(in[0]), min(in[0])}; }, {x},
                    kExact);
            }
    }

    TEST_CASE("cuda max, min, argmax: ties go to the first index, as on the CPU") {
        Generator gen(21);
        // Values in {-3, ..., 2}: every line has many ties, also across the chunks of a long row.
        for (const Shape& shape : kShapes) {
            Tensor x = randint(-3, 3, shape, gen).to(DType::Float32);
            x.set_requires_grad(true);  // the gradient goes to the first maximum only
            Tensor xi = randint(-3, 3, shape, gen).to(DType::Int32);
            for (int64_t dim = 0; dim < (int64_t)shape.size(); ++dim)
                check_cuda_parity(
                    "ties in " + shape_str(shape) + " over dim " + std::to_string(dim),
                    [dim](const std::vector<Tensor>& in) {
                        ValuesIndices hi = max(in[0], dim), lo = min(in[0], dim);
                        ValuesIndices hi_int = max(in[1], dim, true);
                        return std::vector<Tensor>{hi.values, hi.indices, lo.values, lo.indices, argmax(in[0], dim),
                                                   hi_int.values, hi_int.indices, argmax(in[1], dim)};
                    },
                    {x, xi}, kExact);
        }
    }

    TEST_CASE("cuda max, min, argmax: the first NaN wins, as on the CPU; bool and int64 inputs") {
        // Rows: no NaN, one NaN, two NaNs, all NaN, NaN first, inf and -inf beside a NaN.
        const std::vector<double> v = {1,    5,    -2,   5,    0,  //
                                       1,    kNaN, 9,    3,    2,  //
                                       kNaN, 4,    kNaN, 7,    1,  //
                                       kNaN, kNaN, kNaN, kNaN, kNaN,
                                       2,    3,    kNaN, 1,    kNaN,  //
                                       kInf, -kInf, kNaN, kInf, 0};
        for (DType dtype : {DType::Float32, DType::Float64}) {
            Tensor x = from_values(v, {6, 5}, dtype);
            for (int64_t dim : {0, 1})
                check_cuda_parity(
                    std::string("NaN rows, ") + dtype_name(dtype) + " dim " + std::to_string(dim),
                    [dim](const std::vector<Tensor>& in) {
                        ValuesIndices hi = max(in[0], dim), lo = min(in[0], dim);
                        return std::vector<Tensor>{hi.values, hi.indices, lo.values, lo.indices, argmax(in[0], dim)};
                    },
                    {x}, kExact);
        }
        Generator gen(22);
        Tensor i64 = randint(-1000000, 1000000, {9, 40000}, gen);
        Tensor flags = gt(i64, Tensor::scalar(900000, DType::Int64));
        for (int64_t dim : {0, 1})
            check_cuda_parity(
                "int64 and bool over dim " + std::to_string(dim),
                [dim](const std::vector<Tensor>& in) {
                    ValuesIndices hi = max(in[0], dim), lo = min(in[1], dim);
                    return std::vector<Tensor>{hi.values, hi.indices, lo.values, lo.indices, argmax(in[1], dim)};
                },
                {i64, flags}, kExact);
    }

    // ---- logsumexp ---------------------------------------------------------------------------------
    TEST_CASE("cuda logsumexp: every dim of every shape, keepdim, float32 and float64, forward and gradient") {
        for (DType dtype : {DType::Float32, DType::Float64})
            for (size_t k = 0; k < kShapes.size(); ++k) {
                const Shape& shape = kShapes[k];
                Tensor x = randn_input(shape, 300 + k, dtype);
                for (int64_t dim = 0; dim < (int64_t)shape.size(); ++dim)
                    for (bool keepdim : {false, true})
                        check_cuda_parity(
                            describe("logsumexp", shape, dim, keepdim, dtype),
                            [dim, keepdim](const std::vector<Tensor>& in) {
                                return std::vector<Tensor>{logsumexp(in[0], dim, keepdim)};
                            },
                            {x}, tolerance(dtype, shape[dim]));
            }
    }

    TEST_CASE("cuda logsumexp, softmax, log_softmax: large, infinite and NaN values as on the CPU") {
        // Rows: huge values (no overflow), a +inf, only -inf, a -inf among numbers, a NaN, only NaN.
        const std::vector<double> v = {1000, 999,  -1000, 0,     //
                                       1,    kInf, 2,     3,     //
                                       -kInf, -kInf, -kInf, -kInf,  //
                                       -kInf, 1,    2,     3,     //
                                       1,    kNaN, 2,     3,     //
                                       kNaN, kNaN, kNaN,  kNaN};
        // The same rows repeated 10 times over (6, 40): rows of 4 take the thread-per-line softmax
        // kernel, rows of 40 the warp-per-row one.
        std::vector<double> v40;
        for (int row = 0; row < 6; ++row)
            for (int copy = 0; copy < 10; ++copy) v40.insert(v40.end(), v.begin() + row * 4, v.begin() + row * 4 + 4);
        for (DType dtype : {DType::Float32, DType::Float64})
            for (Tensor x : {from_values(v, {6, 4}, dtype), from_values(v40, {6, 40}, dtype)})
                check_cuda_parity(
                    std::string("special values ") + shape_str(x.shape()) + ", " + dtype_name(dtype),
                    [](const std::vector<Tensor>& in) {
                        return std::vector<Tensor>{logsumexp(in[0], 1), logsumexp(in[0], 0), softmax(in[0], 1),
                                                   log_softmax(in[0], 1), softmax(in[0], 0)};
                    },
                    {x}, tolerance(dtype, 4));
    }

    // ---- cumsum ------------------------------------------------------------------------------------
    TEST_CASE("cuda cumsum: every dim of every shape, float32, float64, int32, int64; bool is refused") {
        Generator gen(31);
        for (size_t k = 0; k < kShapes.size(); ++k) {
            const Shape& shape = kShapes[k];
            Tensor x32 = randn_input(shape, 400 + k, DType::Float32);
            Tensor x64 = randn_input(shape, 500 + k, DType::Float64);
            Tensor i64 = randint(-1000, 1000, shape, gen);
            Tensor i32 = i64.to(DType::Int32);
            for (int64_t dim = 0; dim < (int64_t)shape.size(); ++dim) {
                auto f = [dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{cumsum(in[0], dim)}; };
                // A running sum of R unit normals wanders up to ~sqrt(R): tolerance as for a sum of R values.
                check_cuda_parity(describe("cumsum", shape, dim, false, DType::Float32), f, {x32},
                                  tolerance(DType::Float32, shape[dim]));
                check_cuda_parity(describe("cumsum", shape, dim, false, DType::Float64), f, {x64},
                                  tolerance(DType::Float64, shape[dim]));
                check_cuda_parity(describe("cumsum", shape, dim, false, DType::Int64), f, {i64}, kExact);
                check_cuda_parity(describe("cumsum", shape, dim, false, DType::Int32), f, {i32}, kExact);
            }
        }
        Tensor flags = Tensor::ones({5}, DType::Bool, Device::CUDA);
        CHECK_THROWS_AS(cumsum(flags, 0), std::invalid_argument);
    }

    // ---- softmax / log_softmax ---------------------------------------------------------------------
    TEST_CASE("cuda softmax, log_softmax: every dim of every shape, float32 and float64, forward and gradient") {
        for (DType dtype : {DType::Float32, DType::Float64})
            for (size_t k = 0; k < kShapes.size(); ++k) {
                const Shape& shape = kShapes[k];
                Tensor x = randn_input(shape, 600 + k, dtype);
                for (int64_t dim = 0; dim < (int64_t)shape.size(); ++dim)
                    check_cuda_parity(
                        describe("softmax/log_softmax", shape, dim, false, dtype),
                        [dim](const std::vector<Tensor>& in) {
                            return std::vector<Tensor>{softmax(in[0], dim), log_softmax(in[0], dim)};
                        },
                        {x}, tolerance(dtype, shape[dim]));
            }
        // A transposed view (the op makes it contiguous) and rows between 33 and 1024 (a warp each)
        // beside rows over 1024 (a block each).
        Tensor x = randn_input({300, 2000}, 650);
        check_cuda_parity(
            "softmax of a transposed view, and of rows of 2000",
            [](const std::vector<Tensor>& in) {
                return std::vector<Tensor>{softmax(in[0].t(), 1), log_softmax(in[0], 1), softmax(in[0] * 30.0, 1)};
            },
            {x});
    }

    // ---- cross_entropy -----------------------------------------------------------------------------
    TEST_CASE("cuda cross_entropy: loss, gradient, int32 and int64 targets, ignore_index") {
        Generator gen(41);
        // (N, C): C <= 1024 gives a warp per row, larger C a block per row.
        const std::vector<std::pair<int64_t, int64_t>> sizes = {{1, 1},    {7, 33},  {33, 1000},
                                                                {5, 5000}, {1000, 7}, {64, 1025}};
        for (DType dtype : {DType::Float32, DType::Float64})
            for (auto [N, C] : sizes) {
                Tensor logits = randn_input({N, C}, 700 + N + C, dtype);
                // Every third target becomes the default ignore_index -100.
                std::vector<int64_t> t = randint(0, C, {N}, gen).to_vector<int64_t>();
                for (int64_t i = 0; i < N; i += 3) t[i] = -100;
                Tensor targets = Tensor::from_vector(t, {N});
                // The same as int32 with class 0 as ignore_index (the -100s become 0: ignored again).
                for (int64_t& target : t) target = target < 0 ? 0 : target;
                Tensor targets32 = Tensor::from_vector(t, {N}).to(DType::Int32);
                // Float32 gradients go through several float32 ops (exp, one_hot, mul) on each
                // device: rtol 1e-4 rather than the elementwise 1e-5.
                ParityTolerance tol = tolerance(dtype, C);
                if (dtype == DType::Float32) tol.rtol = 1e-4;
                const std::string what = "cross_entropy " + shape_str({N, C}) + " " + dtype_name(dtype);
                check_cuda_parity(
                    what + ", int64 targets",
                    [](const std::vector<Tensor>& in) { return std::vector<Tensor>{cross_entropy(in[0], in[1])}; },
                    {logits, targets}, tol);
                check_cuda_parity(
                    what + ", int32 targets, ignore_index 0",
                    [](const std::vector<Tensor>& in) { return std::vector<Tensor>{cross_entropy(in[0], in[1], 0)}; },
                    {logits, targets32}, tol);
            }
    }

    TEST_CASE("cuda cross_entropy: every target ignored gives loss 0 and gradient 0") {
        Tensor logits = randn_input({9, 40}, 800);
        Tensor targets = Tensor::full({9}, -100, DType::Int64);
        check_cuda_parity(
            "all ignored",
            [](const std::vector<Tensor>& in) { return std::vector<Tensor>{cross_entropy(in[0], in[1])}; },
            {logits, targets});
        Tensor loss = cross_entropy(logits.detach().to(Device::CUDA), targets.to(Device::CUDA));
        CHECK(loss.item() == 0.0);
    }

    TEST_CASE("cuda cross_entropy: an out-of-range target raises std::out_of_range at the next synchronisation") {
        Generator gen(42);
        for (int64_t C : {int64_t(10), int64_t(3000)}) {  // the warp and the block layouts
            Tensor logits = randn({6, C}, gen).to(Device::CUDA);
            for (int64_t bad : {C, int64_t(-1), C + 1000}) {
                Tensor targets = Tensor::from_vector(std::vector<int64_t>{0, 1, bad, 2, -100, 3}, {6}).to(Device::CUDA);
                CHECK_THROWS_AS(cross_entropy(logits, targets).to(Device::CPU), std::out_of_range);
                CHECK_THROWS_AS(cross_entropy(logits, targets.to(DType::Int32)).item(), std::out_of_range);
            }
            // The error was reported and cleared: the next good call works.
            Tensor good = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 2, -100, 3}, {6}).to(Device::CUDA);
            CHECK(std::isfinite(cross_entropy(logits, good).item()));
        }
    }

    // ---- layer_norm --------------------------------------------------------------------------------
    TEST_CASE("cuda layer_norm: outputs and gradients of x, weight and bias; without weight and bias") {
        // D <= 1024: a warp per row; D = 2000: a block per row.
        const std::vector<Shape> shapes = {{1, 1}, {7, 33}, {5, 1000}, {3, 2000}, {2, 3, 64}, {100, 7}};
        for (DType dtype : {DType::Float32, DType::Float64})
            for (size_t k = 0; k < shapes.size(); ++k) {
                const Shape& shape = shapes[k];
                const int64_t D = shape.back();
                Tensor x = randn_input(shape, 900 + k, dtype);
                Tensor w = randn_input({D}, 950 + k, dtype), b = randn_input({D}, 980 + k, dtype);
                // The gradients come from layer_norm_backward on each device (sums in double), from
                // mean and rstd rounded to float32 by each device's forward: rtol 1e-4 and atol 1e-5.
                ParityTolerance tol = dtype == DType::Float32 ? ParityTolerance{1e-4, 1e-5} : tolerance(dtype, D);
                check_cuda_parity(
                    "layer_norm " + shape_str(shape) + " " + dtype_name(dtype),
                    [](const std::vector<Tensor>& in) {
                        return std::vector<Tensor>{layer_norm(in[0], in[1], in[2]),
                                                   layer_norm(in[0], Tensor(), Tensor(), 1e-3)};
                    },
                    {x, w, b}, tol);
            }
    }

    TEST_CASE("cuda layer_norm_backward: dx, dw and db against the CPU kernel, odd sizes, no rows; deterministic") {
        // D <= 1024: a warp per row for dx; 2000: a block per row. 130 and 300 rows: dw and db add
        // 3 and 5 blocks of 64 rows' partial sums; (0, 5): no rows, dw = db = 0 (a memset).
        const std::vector<Shape> shapes = {{1, 1}, {1, 3}, {7, 33}, {130, 257}, {5, 1000}, {3, 2000}, {300, 8},
                                           {2, 3, 5}, {0, 5}};
        for (DType dtype : {DType::Float32, DType::Float64})
            for (size_t k = 0; k < shapes.size(); ++k) {
                const Shape& shape = shapes[k];
                const int64_t D = shape.back();
                Generator gen(1200 + k);
                Tensor x = randn(shape, gen, DType::Float64) * 2.0 + 0.5;
                Tensor mu = mean(x, -1, true);
                Tensor rstd = 1.0 / sqrt(mean((x - mu) * (x - mu), -1, true) + 1e-5);
                Tensor w = randn({D}, gen, DType::Float64), g = randn(shape, gen, DType::Float64);
                std::vector<Tensor> in;
                for (const Tensor& t : {x, w, mu, rstd, g}) in.push_back(t.to(dtype));
                // Both devices sum in double; only the order of additions (and the GPU's fused
                // multiply-adds) differ before the final rounding.
                ParityTolerance tol = dtype == DType::Float32 ? ParityTolerance{1e-5, 1e-5} : tolerance(dtype, D);
                check_cuda_parity(
                    "layer_norm_backward " + shape_str(shape) + " " + dtype_name(dtype),
                    [](const std::vector<Tensor>& t) {
                        LayerNormGrads with_w = layer_norm_backward(t[0], t[1], t[2], t[3], t[4]);
                        LayerNormGrads no_w = layer_norm_backward(t[0], Tensor(), t[2], t[3], t[4]);
                        return std::vector<Tensor>{with_w.x, with_w.weight, with_w.bias, no_w.x};
                    },
                    in, tol);
                // Run twice on the GPU: the same bits (no atomics in dw and db).
                std::vector<Tensor> gpu;
                for (const Tensor& t : in) gpu.push_back(t.to(Device::CUDA));
                LayerNormGrads first = layer_norm_backward(gpu[0], gpu[1], gpu[2], gpu[3], gpu[4]);
                LayerNormGrads second = layer_norm_backward(gpu[0], gpu[1], gpu[2], gpu[3], gpu[4]);
                CHECK(same_bits(first.x, second.x));
                CHECK(same_bits(first.weight, second.weight));
                CHECK(same_bits(first.bias, second.bias));
            }
    }

    // ---- random shapes -----------------------------------------------------------------------------
    TEST_CASE("cuda reductions and softmax: random shapes, dims and keepdim") {
        std::mt19937 rng(2024);
        for (int trial = 0; trial < 40; ++trial) {
            Shape shape;
            const int ndim = 1 + (int)(rng() % 4);
            for (int d = 0; d < ndim; ++d) shape.push_back(1 + (int64_t)(rng() % 40));
            const int64_t dim = (int64_t)(rng() % ndim);
            const bool keepdim = rng() % 2;
            Tensor x = randn_input(shape, 1000 + trial);
            check_cuda_parity(
                describe("random", shape, dim, keepdim, DType::Float32),
                [dim, keepdim](const std::vector<Tensor>& in) {
                    return std::vector<Tensor>{sum(in[0], dim, keepdim), mean(in[0], dim, keepdim),
                                               max(in[0], dim, keepdim).values, argmax(in[0], dim, keepdim),
                                               logsumexp(in[0], dim, keepdim), cumsum(in[0], dim),
                                               softmax(in[0], dim), log_softmax(in[0], dim)};
                },
                {x});
        }
    }

    // ---- determinism -------------------------------------------------------------------------------
    TEST_CASE("cuda reductions and nn kernels are deterministic: the same bits run after run") {
        Generator gen(77);
        Tensor big = randn({1 << 20}, gen).to(Device::CUDA);       // two-launch row reduction
        Tensor tall = randn({70000, 3}, gen).to(Device::CUDA);     // chunked inner > 1 reduction
        Tensor wide = randn({64, 5000}, gen).to(Device::CUDA);     // a block per row
        Tensor big64 = randn({1 << 20}, gen, DType::Float64).to(Device::CUDA);
        Tensor targets = randint(0, 5000, {64}, gen).to(Device::CUDA);
        Tensor w = randn({5000}, gen).to(Device::CUDA), b = randn({5000}, gen).to(Device::CUDA);
        auto run = [&] {
            return std::vector<Tensor>{sum(big),
                                       mean(big),
                                       sum(big64),
                                       sum(tall, 0),
                                       max(big, 0).indices,
                                       argmax(tall, 0),
                                       logsumexp(big, 0),
                                       logsumexp(tall, 0),
                                       cumsum(big, 0),
                                       softmax(wide, 1),
                                       log_softmax(wide, 0),
                                       cross_entropy(wide, targets),
                                       layer_norm(wide, w, b)};
        };
        std::vector<Tensor> first = run(), second = run();
        for (size_t i = 0; i < first.size(); ++i) {
            INFO("result " << i);
            CHECK(same_bits(first[i], second[i]));
        }
    }
}
