// Forward values and errors of the neural-network ops (engine/ops_nn.cpp): softmax, log_softmax,
// cross_entropy, layer_norm, embedding, dropout. Expected numbers are worked out by hand in the
// comments (exp(1) = 2.718281828, exp(2) = 7.389056099, exp(3) = 20.08553692).
#include <omp.h>

#include <cmath>
#include <cstring>

#include "engine/cpu/fast_math.h"
#include "tests/helpers.h"

using namespace mg;
using mg::test::check_values;

namespace {
Tensor f64(const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }
Tensor i64(const std::vector<int64_t>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }
}  // namespace

// ---- softmax / log_softmax ---------------------------------------------------------------------
TEST_CASE("softmax of [1, 2, 3]") {
    // sum = e + e^2 + e^3 = 30.19287485
    Tensor y = softmax(Tensor::from_vector({1.f, 2.f, 3.f}, {3}));
    check_values(y, {0.09003057, 0.24472847, 0.66524096});
    check_values(log_softmax(Tensor::from_vector({1.f, 2.f, 3.f}, {3})), {-2.40760596, -1.40760596, -0.40760596});
}

TEST_CASE("softmax along dim 0 and a middle dim matches the last-dim softmax of the transpose") {
    Generator gen(3);
    Tensor x = randn({3, 4, 5}, gen, DType::Float64);
    for (int64_t dim : {0, 1, 2}) {
        CAPTURE(dim);
        Tensor moved = x.transpose(dim, 2).contiguous();
        Tensor expected = softmax(moved, -1).transpose(dim, 2);
        CHECK(mg::test::allclose(softmax(x, dim), expected.contiguous(), 1e-12, 1e-14));
        Tensor expected_log = log_softmax(moved, -1).transpose(dim, 2);
        CHECK(mg::test::allclose(log_softmax(x, dim), expected_log.contiguous(), 1e-12, 1e-14));
        // Each line sums to 1.
        CHECK(mg::test::allclose(sum(softmax(x, dim), dim), Tensor::ones(sum(x, dim).shape(), DType::Float64)));
    }
}

TEST_CASE("softmax: short contiguous rows (8 at a time) give the same bits as the one-row-at-a-time path") {
    // Rows of up to 32 values along the last dim take softmax_short_rows; the same values laid out
    // along dim 0 (inner > 1) take softmax_line. Row counts that are not multiples of 8 mix both
    // within one call; some rows hold -inf, a huge value, or NaN.
    Generator gen(31);
    for (DType dtype : {DType::Float32, DType::Float64})
        for (int64_t R : {1, 2, 5, 8, 32})
            for (int64_t rows : {3, 8, 77, 300}) {
                CAPTURE(R);
                CAPTURE(rows);
                Tensor x = randn({rows, R}, gen, dtype) * 4.0;
                x.slice(0, 1, 2).slice(1, 0, 1).fill_(-INFINITY);
                if (rows > 10) x.slice(0, 9, 10).slice(1, 0, 1).fill_(1e30);
                if (rows > 20) x.slice(0, 20, 21).slice(1, R - 1, R).fill_(NAN);
                Tensor xt = x.t().contiguous();  // (R, rows): softmax over dim 0 walks the same rows
                for (bool log_out : {false, true}) {
                    Tensor fast = log_out ? log_softmax(x, 1) : softmax(x, 1);
                    Tensor line = (log_out ? log_softmax(xt, 0) : softmax(xt, 0)).t().contiguous();
                    CHECK(std::memcmp(fast.raw_data_ptr(), line.raw_data_ptr(), fast.numel() * dtype_size(dtype)) ==
                          0);
                }
            }
}

TEST_CASE("softmax of a non-contiguous view and of a 0-d tensor") {
    Tensor x = f64({1, 4, 2, 5, 3, 6}, {3, 2}).t();  // [[1, 2, 3], [4, 5, 6]] as a view
    check_values(softmax(x, 1), {0.09003057, 0.24472847, 0.66524096, 0.09003057, 0.24472847, 0.66524096});
    check_values(softmax(Tensor::scalar(7.0)), {1.0});
    check_values(log_softmax(Tensor::scalar(7.0)), {0.0});
}

TEST_CASE("softmax / log_softmax of extreme values stay finite") {
    Tensor y = softmax(Tensor::from_vector({1000.f, 0.f}, {2}));
    check_values(y, {1.0, 0.0});
    Tensor ly = log_softmax(Tensor::from_vector({1000.f, 0.f}, {2}));
    check_values(ly, {0.0, -1000.0});
    Tensor neg = softmax(Tensor::from_vector({-1000.f, -1001.f}, {2}));
    check_values(neg, {0.7310585786, 0.2689414214});
    // A masked position (-inf) gets exactly 0.
    Tensor masked = softmax(f64({0, -INFINITY, 0}, {3}));
    check_values(masked, {0.5, 0.0, 0.5});
}

TEST_CASE("softmax: errors name the op") {
    CHECK_THROWS_WITH_AS(softmax(i64({1, 2}, {2})), doctest::Contains("softmax"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(log_softmax(f64({1, 2}, {2}), 3), doctest::Contains("log_softmax"), std::exception);
}

TEST_CASE("softmax: float32 and float64 agree, and threads do not change the bits") {
    Generator gen(11);
    Tensor x = randn({300, 257}, gen, DType::Float64) * 4.0;  // big enough to run in parallel
    Tensor y64 = softmax(x);
    Tensor y32 = softmax(x.to(DType::Float32));
    CHECK(mg::test::allclose(y32.to(DType::Float64), y64, 1e-5, 1e-7));
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    Tensor serial = log_softmax(x);
    omp_set_num_threads(threads);
    CHECK(serial.to_vector<double>() == log_softmax(x).to_vector<double>());
}

// ---- cross_entropy -----------------------------------------------------------------------------
TEST_CASE("cross_entropy on a 2x3 example computed by hand") {
    // Row 0: logits [1, 2, 3], target 2: lse = 3.40760596, loss 0.40760596.
    // Row 1: logits [1, 1, 1], target 0: loss log 3 = 1.09861229. Mean: 0.75310912.
    Tensor logits = f64({1, 2, 3, 1, 1, 1}, {2, 3});
    check_values(cross_entropy(logits, i64({2, 0}, {2})), {0.75310912});
    // int32 targets and float32 logits work too.
    Tensor t32 = Tensor::from_vector(std::vector<int32_t>{2, 0}, {2});
    check_values(cross_entropy(logits.to(DType::Float32), t32), {0.75310912});
    // Equals the unfused -mean(log_softmax[target]).
    Tensor lsm = log_softmax(logits, 1);
    CHECK(cross_entropy(logits, i64({2, 0}, {2})).item() ==
          doctest::Approx(-(lsm.at({0, 2}) + lsm.at({1, 0})) / 2).epsilon(1e-12));
}

TEST_CASE("cross_entropy ignores ignore_index targets") {
    Tensor logits = f64({1, 2, 3, 1, 1, 1, 5, 0, 0}, {3, 3});
    // Only row 0 counts.
    check_values(cross_entropy(logits, i64({2, -100, -100}, {3})), {0.40760596});
    // Another ignore_index.
    check_values(cross_entropy(logits, i64({2, 0, 7}, {3}), 7), {0.75310912});
    // All ignored: 0 (documented), and a zero gradient.
    Tensor x = logits.clone().set_requires_grad(true);
    Tensor loss = cross_entropy(x, i64({-100, -100, -100}, {3}));
    CHECK(loss.item() == 0.0);
    loss.backward();
    CHECK(mg::test::allclose(x.grad(), Tensor::zeros({3, 3}, DType::Float64)));
}

TEST_CASE("cross_entropy of extreme logits stays finite") {
    Tensor logits = Tensor::from_vector({1000.f, 0.f, 0.f, 1000.f}, {2, 2});
    check_values(cross_entropy(logits, i64({0, 0}, {2})), {500.0});
}

TEST_CASE("cross_entropy: errors name the op, the shapes and the bad values") {
    Tensor logits = f64({1, 2, 3, 1, 1, 1}, {2, 3});
    CHECK_THROWS_WITH_AS(cross_entropy(logits, i64({2, 3}, {2})),
                         doctest::Contains("cross_entropy: target 3 at row 1 is out of range for 3 classes"),
                         std::out_of_range);
    CHECK_THROWS_WITH_AS(cross_entropy(logits, i64({-1, 0}, {2})), doctest::Contains("target -1"), std::out_of_range);
    CHECK_THROWS_WITH_AS(cross_entropy(logits, i64({0, 0, 0}, {3})), doctest::Contains("[2, 3]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(cross_entropy(f64({1, 2, 3}, {3}), i64({0}, {1})), doctest::Contains("cross_entropy"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(cross_entropy(logits, f64({0, 1}, {2})), doctest::Contains("cross_entropy: targets"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(cross_entropy(i64({0, 1}, {1, 2}), i64({0}, {1})), doctest::Contains("cross_entropy"),
                         std::invalid_argument);
}

// ---- layer_norm --------------------------------------------------------------------------------
TEST_CASE("layer_norm of a small row, with and without weight and bias") {
    // x = [1, 2, 3, 4]: mean 2.5, var 1.25, rstd = 1/sqrt(1.25 + 1e-5) = 0.894423613
    // xhat = [-1.341635, -0.447212, 0.447212, 1.341635]
    Tensor x = f64({1, 2, 3, 4}, {1, 4});
    check_values(layer_norm(x, Tensor(), Tensor()), {-1.3416354, -0.4472118, 0.4472118, 1.3416354});
    // weight [1, 2, 0.5, -1], bias [0, 1, 0, 10]
    Tensor w = f64({1, 2, 0.5, -1}, {4}), b = f64({0, 1, 0, 10}, {4});
    check_values(layer_norm(x, w, b), {-1.3416354, 0.1055764, 0.2236059, 8.6583646});
    // bias only, weight only
    check_values(layer_norm(x, Tensor(), b), {-1.3416354, 0.5527882, 0.4472118, 11.3416354});
    check_values(layer_norm(x, w, Tensor()), {-1.3416354, -0.8944236, 0.2236059, -1.3416354});
    // eps = 0 and a 3-d input: rows are normalised independently.
    Tensor x3 = f64({1, 2, 3, 4, 10, 10, 10, 12}, {2, 1, 4});
    Tensor y3 = layer_norm(x3, Tensor(), Tensor(), 0.0);
    CHECK(y3.shape() == Shape{2, 1, 4});
    // second row: mean 10.5, var 0.75
    check_values(y3, {-1.3416408, -0.4472136, 0.4472136, 1.3416408, -0.5773503, -0.5773503, -0.5773503, 1.7320508});
}

TEST_CASE("layer_norm: float32 matches float64") {
    Generator gen(4);
    Tensor x = randn({64, 33}, gen, DType::Float64) * 3.0 + 5.0;
    Tensor w = randn({33}, gen, DType::Float64), b = randn({33}, gen, DType::Float64);
    Tensor y64 = layer_norm(x, w, b);
    Tensor y32 = layer_norm(x.to(DType::Float32), w.to(DType::Float32), b.to(DType::Float32));
    CHECK(mg::test::allclose(y32.to(DType::Float64), y64, 1e-4, 1e-5));
}

TEST_CASE("layer_norm: errors name the op and the shapes") {
    Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3});
    CHECK_THROWS_WITH_AS(layer_norm(x, f64({1, 1}, {2}), Tensor()),
                         doctest::Contains("layer_norm: weight of shape [2]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(layer_norm(x, Tensor(), f64({1, 1, 1, 1}, {4})), doctest::Contains("[2, 3]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(layer_norm(x, Tensor::ones({3}), Tensor()), doctest::Contains("layer_norm"),
                         std::invalid_argument);  // float32 weight, float64 input
    CHECK_THROWS_WITH_AS(layer_norm(i64({1, 2}, {2}), Tensor(), Tensor()), doctest::Contains("layer_norm"),
                         std::invalid_argument);
}

TEST_CASE("layer_norm float32: within rounding of the same computation in float64, even far from zero") {
    // The float32 row sums use sixteen double lanes (engine/cpu/kernels_nn.cpp, row_sum). The inputs are
    // the same float32 numbers in both runs, so y32 should be y64 rounded to float32: within half
    // an ulp (relative 6e-8) plus the tiny effect of a different order of double additions. Rows
    // with a large mean (1000, spread 1) and long ones (D = 4099) would show float32 accumulation
    // at once: the mean of 4099 values near 1000 summed in float is off by about 1e-4.
    Generator gen(12);
    for (int64_t D : {int64_t(1), int64_t(3), int64_t(8), int64_t(257), int64_t(4099)}) {
        CAPTURE(D);
        Tensor x = (randn({9, D}, gen, DType::Float64) + 1000.0).to(DType::Float32);
        Tensor w = randn({D}, gen), b = randn({D}, gen);
        Tensor y32 = layer_norm(x, w, b);
        Tensor y64 = layer_norm(x.to(DType::Float64), w.to(DType::Float64), b.to(DType::Float64));
        CHECK(mg::test::closeness(y32.to(DType::Float64), y64, 1.2e-7, 1e-7) <= 1.0);
    }
}

// ---- layer_norm_backward (the fused kernel) against the engine-op reference ----------------------
namespace {
struct LayerNormBackwardInputs {
    Tensor x, w, mean, rstd, g;
};
// Random x, weight and upstream gradient, and each row's mean and rstd worked out in float64 with
// engine ops (the backward only needs them to be consistent with x), all converted to dtype.
LayerNormBackwardInputs layer_norm_backward_inputs(const Shape& shape, uint64_t seed, DType dtype) {
    Generator gen(seed);
    const int64_t D = shape.back();
    Tensor x = randn(shape, gen, DType::Float64) * 2.0 + 0.5;
    Tensor mu = mean(x, -1, true);
    Tensor var = mean((x - mu) * (x - mu), -1, true);
    Tensor rstd = 1.0 / sqrt(var + 1e-5);
    Tensor w = randn({D}, gen, DType::Float64), g = randn(shape, gen, DType::Float64);
    return {x.to(dtype), w.to(dtype), mu.to(dtype), rstd.to(dtype), g.to(dtype)};
}
}  // namespace

TEST_CASE("layer_norm_backward equals the engine-op reference: float32 and float64, odd sizes, with and "
          "without weight") {
    // 1 row, D = 1 (dx is then 0: xhat is 0), odd D, more rows than one block of 64 (dw and db add
    // several blocks' partial sums), a 3-d input.
    const std::vector<Shape> shapes = {{1, 1}, {1, 3}, {1, 257}, {5, 1}, {7, 3}, {130, 257}, {2, 3, 5}, {200, 8}};
    for (DType dtype : {DType::Float32, DType::Float64})
        for (const Shape& shape : shapes)
            for (bool with_weight : {true, false}) {
                CAPTURE(std::string(dtype_name(dtype)));
                CAPTURE(shape_str(shape));
                CAPTURE(with_weight);
                LayerNormBackwardInputs in = layer_norm_backward_inputs(shape, 300 + shape.back(), dtype);
                Tensor w = with_weight ? in.w : Tensor();
                LayerNormGrads fused = layer_norm_backward(in.x, w, in.mean, in.rstd, in.g);
                LayerNormGrads ref = layer_norm_backward_reference(in.x, w, in.mean, in.rstd, in.g);
                REQUIRE(fused.x.shape() == shape);
                REQUIRE(fused.weight.shape() == Shape{shape.back()});
                REQUIRE(fused.bias.shape() == Shape{shape.back()});
                CHECK(fused.x.dtype() == dtype);
                // float64: the same math in another order. float32: the reference rounds to float
                // after every op (a chain of ~12), the kernel once at the end.
                const double rtol = dtype == DType::Float64 ? 1e-12 : 1e-4;
                const double atol = dtype == DType::Float64 ? 1e-12 : 1e-5;
                CHECK(mg::test::closeness(fused.x, ref.x, rtol, atol) <= 1.0);
                CHECK(mg::test::closeness(fused.weight, ref.weight, rtol, atol) <= 1.0);
                CHECK(mg::test::closeness(fused.bias, ref.bias, rtol, atol) <= 1.0);
                if (dtype == DType::Float32) {
                    // ... and the float32 kernel is close to the float64 answer itself.
                    LayerNormGrads exact = layer_norm_backward_reference(
                        in.x.to(DType::Float64), with_weight ? in.w.to(DType::Float64) : Tensor(),
                        in.mean.to(DType::Float64), in.rstd.to(DType::Float64), in.g.to(DType::Float64));
                    CHECK(mg::test::closeness(fused.x.to(DType::Float64), exact.x, 1e-5, 1e-6) <= 1.0);
                    CHECK(mg::test::closeness(fused.weight.to(DType::Float64), exact.weight, 1e-6, 1e-6) <= 1.0);
                    CHECK(mg::test::closeness(fused.bias.to(DType::Float64), exact.bias, 1e-6, 1e-6) <= 1.0);
                }
            }
}

TEST_CASE("layer_norm_backward: dw and db worked out by hand on two rows") {
    // x rows [1, 3] and [2, 2], mean [2, 2] and rstd [1, 1] given directly: xhat = [-1, 1] and [0, 0].
    // g = [[1, 2], [3, 4]], w = [2, 1]: dw = sum g * xhat = [-1, 2], db = [4, 6].
    // Row 0: dxhat = [2, 2], a = 2, b = mean([2 * -1, 2 * 1]) = 0 -> dx = [0, 0].
    // Row 1: dxhat = [6, 4], a = 5, b = 0 (xhat = 0) -> dx = [1, -1].
    Tensor x = f64({1, 3, 2, 2}, {2, 2}), w = f64({2, 1}, {2}), mu = f64({2, 2}, {2, 1}), rstd = f64({1, 1}, {2, 1});
    Tensor g = f64({1, 2, 3, 4}, {2, 2});
    LayerNormGrads grad = layer_norm_backward(x, w, mu, rstd, g);
    check_values(grad.x, {0, 0, 1, -1});
    check_values(grad.weight, {-1, 2});
    check_values(grad.bias, {4, 6});
}

TEST_CASE("layer_norm_backward: each row of dx sums to 0, and is orthogonal to xhat when eps = 0") {
    // y does not change when a constant is added to a row (nor, with eps = 0, when the row is
    // scaled), so dx has no component along (1, ..., 1) nor along xhat (docs/nn/transformer.md).
    Generator gen(77);
    Tensor x = randn({9, 37}, gen, DType::Float64) * 3.0 + 2.0;
    Tensor mu = mean(x, -1, true);
    Tensor rstd = 1.0 / sqrt(mean((x - mu) * (x - mu), -1, true));  // eps = 0
    Tensor w = randn({37}, gen, DType::Float64), g = randn({9, 37}, gen, DType::Float64);
    LayerNormGrads grad = layer_norm_backward(x, w, mu, rstd, g);
    Tensor xhat = (x - mu) * rstd;
    for (double v : sum(grad.x, -1).to_vector<double>()) CHECK(std::abs(v) < 1e-12);
    for (double v : sum(grad.x * xhat, -1).to_vector<double>()) CHECK(std::abs(v) < 1e-12);
    // ... while the gradient itself is not small.
    CHECK(max(abs(grad.x)).item() > 0.1);
}

TEST_CASE("layer_norm's backward uses the fused op: the gradients of x, weight and bias match the reference") {
    for (DType dtype : {DType::Float32, DType::Float64})
        for (int variant = 0; variant < 4; ++variant) {
            const bool with_weight = variant & 1, with_bias = variant & 2;
            CAPTURE(std::string(dtype_name(dtype)));
            CAPTURE(variant);
            Generator gen(500 + variant);
            Tensor x = randn({70, 33}, gen, dtype), g = randn({70, 33}, gen, dtype);
            Tensor w = with_weight ? randn({33}, gen, dtype) : Tensor();
            Tensor b = with_bias ? randn({33}, gen, dtype) : Tensor();
            for (Tensor* t : {&x, &w, &b})
                if (t->defined()) t->set_requires_grad(true);
            layer_norm(x, w, b).backward(g);
            // The reference, from the same mean and rstd (float64 engine ops on x).
            Tensor x64 = x.detach().to(DType::Float64);
            Tensor mu = mean(x64, -1, true);
            Tensor rstd = 1.0 / sqrt(mean((x64 - mu) * (x64 - mu), -1, true) + 1e-5);
            Tensor w64 = with_weight ? w.detach().to(DType::Float64) : Tensor();
            LayerNormGrads ref = layer_norm_backward_reference(x64, w64, mu, rstd, g.to(DType::Float64));
            const double tol = dtype == DType::Float64 ? 1e-12 : 1e-5;
            CHECK(mg::test::closeness(x.grad().to(DType::Float64), ref.x, tol, tol) <= 1.0);
            if (with_weight) CHECK(mg::test::closeness(w.grad().to(DType::Float64), ref.weight, tol, tol) <= 1.0);
            if (with_bias) CHECK(mg::test::closeness(b.grad().to(DType::Float64), ref.bias, tol, tol) <= 1.0);
        }
}

TEST_CASE("layer_norm forward and backward are bitwise equal on 1 and 2 threads") {
    // 1000 rows: above the kernels' parallel threshold, and 16 row blocks of dw / db partial sums.
    // float64 too: there a different order of the double additions would show in the last bits
    // (in float32 the final rounding would usually hide it).
    for (DType dtype : {DType::Float32, DType::Float64}) {
        CAPTURE(std::string(dtype_name(dtype)));
        Generator gen(31);
        Tensor x = randn({1000, 257}, gen, dtype), w = randn({257}, gen, dtype), b = randn({257}, gen, dtype);
        Tensor g = randn({1000, 257}, gen, dtype);
        auto run = [&] {
            Tensor xr = x.detach(), wr = w.detach(), br = b.detach();
            for (Tensor* t : {&xr, &wr, &br}) t->set_requires_grad(true);
            Tensor y = layer_norm(xr, wr, br);
            y.backward(g);
            return std::vector<std::vector<double>>{y.to_vector<double>(), xr.grad().to_vector<double>(),
                                                    wr.grad().to_vector<double>(), br.grad().to_vector<double>()};
        };
        const int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        auto one = run();
        omp_set_num_threads(2);
        auto two = run();
        omp_set_num_threads(threads);
        for (size_t i = 0; i < one.size(); ++i) {
            CAPTURE(i);
            CHECK(one[i] == two[i]);
        }
    }
}

TEST_CASE("layer_norm_backward: errors name the op and the shapes") {
    Tensor x = f64({1, 2, 3, 4, 5, 6}, {2, 3}), g = f64({1, 1, 1, 1, 1, 1}, {2, 3});
    Tensor mu = f64({2, 5}, {2, 1}), rstd = f64({1, 1}, {2, 1});
    CHECK_THROWS_WITH_AS(layer_norm_backward(x, f64({1, 1}, {2}), mu, rstd, g),
                         doctest::Contains("layer_norm_backward: expected x (..., D)"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(layer_norm_backward(x, Tensor(), f64({1, 2, 3}, {3}), rstd, g),
                         doctest::Contains("mean [3]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(layer_norm_backward(x, Tensor(), mu, rstd, f64({1, 2}, {2})),
                         doctest::Contains("grad_out [2]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(layer_norm_backward(x, Tensor(), mu, rstd.to(DType::Float32), g),
                         doctest::Contains("layer_norm_backward"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(layer_norm_backward_reference(x, Tensor(), mu, f64({1}, {1}), g),
                         doctest::Contains("layer_norm_backward_reference"), std::invalid_argument);
}

// ---- embedding ---------------------------------------------------------------------------------
TEST_CASE("embedding looks up rows, keeping the indices' shape") {
    Tensor table = f64({0, 1, 10, 11, 20, 21}, {3, 2});  // 3 tokens, D = 2
    Tensor out = embedding(table, i64({2, 0, 2, 1}, {2, 2}));
    CHECK(out.shape() == Shape{2, 2, 2});
    check_values(out, {20, 21, 0, 1, 20, 21, 10, 11});
    Tensor one = embedding(table, Tensor::from_vector(std::vector<int32_t>{1}, {1}));
    check_values(one, {10, 11});
}

TEST_CASE("embedding: a bad id names the op and the table size") {
    Tensor table = f64({0, 1, 10, 11, 20, 21}, {3, 2});
    CHECK_THROWS_WITH_AS(embedding(table, i64({0, 3}, {2})), doctest::Contains("embedding"), std::out_of_range);
    CHECK_THROWS_WITH_AS(embedding(table, i64({0, 3}, {2})), doctest::Contains("index 3"), std::out_of_range);
    CHECK_THROWS_WITH_AS(embedding(table, f64({0}, {1})), doctest::Contains("embedding: indices"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(embedding(f64({1, 2}, {2}), i64({0}, {1})), doctest::Contains("embedding: weight"),
                         std::invalid_argument);
}

// ---- dropout -----------------------------------------------------------------------------------
TEST_CASE("dropout drops about p of the values and scales the rest by 1/(1-p)") {
    Generator gen(7);
    const double p = 0.3;
    Tensor x = Tensor::ones({200, 100}, DType::Float32);
    std::vector<float> y = dropout(x, p, true, gen).to_vector<float>();
    int64_t dropped = 0;
    for (float v : y) {
        if (v == 0.f) ++dropped;
        else CHECK(v == doctest::Approx(1.0 / (1.0 - p)));
    }
    double frac = (double)dropped / (double)y.size();
    double se = std::sqrt(p * (1 - p) / (double)y.size());  // ~0.0032
    CHECK(std::abs(frac - p) < 4 * se);
}

TEST_CASE("dropout is the identity in eval mode or with p = 0, and checks p") {
    Generator gen(7);
    Tensor x = f64({1, 2, 3}, {3});
    CHECK(dropout(x, 0.5, false, gen).same(x));
    CHECK(dropout(x, 0.0, true, gen).same(x));
    CHECK(gen.offset() == 0);  // nothing drawn
    CHECK_THROWS_WITH_AS(dropout(x, 1.0, true, gen), doctest::Contains("dropout: p"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(dropout(x, -0.1, true, gen), doctest::Contains("dropout"), std::invalid_argument);
}

TEST_CASE("dropout: the same generator state replays the same mask") {
    Generator gen(99);
    gen.reserve(12);
    auto state = gen.state();
    Tensor x = Tensor::ones({1000}, DType::Float64);
    std::vector<double> first = dropout(x, 0.5, true, gen).to_vector<double>();
    std::vector<double> second = dropout(x, 0.5, true, gen).to_vector<double>();
    CHECK(first != second);  // the generator moved on
    gen.set_state(state);
    CHECK(dropout(x, 0.5, true, gen).to_vector<double>() == first);
}

// ---- fused backward passes: relu_backward, gelu_backward ------------------------------------------
// Each equals its derivative written out in engine ops (the plain reference), in both float
// types, and relu's and gelu's gradients (GRADCHECK in test_gradcheck_core.cpp) run through them.
TEST_CASE("relu_backward and gelu_backward equal their composite formulas") {
    for (DType dtype : {DType::Float32, DType::Float64}) {
        CAPTURE(std::string(dtype_name(dtype)));
        Generator gen(11);
        Tensor x = randn({37, 19}, gen, dtype) * 3.0, g = randn({37, 19}, gen, dtype);
        Tensor relu_ref = where(gt(relu(x), Tensor::zeros({1}, dtype)), g, Tensor::zeros(g.shape(), dtype));
        CHECK(mg::test::allclose(relu_backward(g, relu(x)), relu_ref, 0, 0));
        Tensor cdf = (erf(x * M_SQRT1_2) + 1.0) * 0.5;                    // Phi(x)
        Tensor pdf = exp(x * x * -0.5) * (1.0 / std::sqrt(2.0 * M_PI));  // phi(x)
        // float32 uses the fast erf / exp of engine/cpu/fast_math.h (within 5e-7 of the exact ones).
        const double tol = dtype == DType::Float32 ? 2e-6 : 1e-14;
        CHECK(mg::test::allclose(gelu_backward(g, x), g * (cdf + x * pdf), tol, tol));
    }
    // Hand values: gelu'(0) = 0.5, gelu'(1) = Phi(1) + phi(1) = 0.8413447461 + 0.2419707245.
    check_values(gelu_backward(f64({2, 1}, {2}), f64({0, 1}, {2})), {1.0, 1.0833154706}, 1e-9);
    check_values(relu_backward(f64({5, 5, 5}, {3}), f64({0, 2, -1}, {3})), {0, 5, 0});
    CHECK_THROWS_WITH_AS(gelu_backward(i64({1}, {1}), i64({1}, {1})), doctest::Contains("gelu_backward"), std::exception);
}

// The vectorisable float32 erf and exp (engine/cpu/fast_math.h) against the exact functions in
// double, on a dense grid: the accuracy its header promises.
TEST_CASE("fast_math: erf_f32 within 5e-7, exp_f32 within 3e-7 relative") {
    double worst_erf = 0, worst_exp = 0;
    for (int i = -600000; i <= 600000; ++i) {
        const float x = (float)i * 1e-5f;  // [-6, 6]
        worst_erf = std::max(worst_erf, std::abs((double)mg::cpu::erf_f32(x) - std::erf((double)x)));
    }
    for (int i = -870000; i <= 880000; ++i) {
        const float x = (float)i * 1e-4f;  // [-87, 88]
        const double exact = std::exp((double)x);
        worst_exp = std::max(worst_exp, std::abs((double)mg::cpu::exp_f32(x) - exact) / exact);
    }
    CHECK(worst_erf < 5e-7);
    CHECK(worst_exp < 3e-7);
    CHECK(mg::cpu::exp_f32(-100.0f) == 0.0f);
    CHECK(mg::cpu::erf_f32(10.0f) == doctest::Approx(1.0).epsilon(1e-6));
    CHECK(mg::cpu::erf_f32(-10.0f) == doctest::Approx(-1.0).epsilon(1e-6));
    // gelu in float32 against float64 (exact std::erf) on the same values.
    Generator gen(5);
    Tensor x = randn({1000}, gen, DType::Float64) * 4.0;
    CHECK(mg::test::allclose(gelu(x.to(DType::Float32)).to(DType::Float64), gelu(x), 1e-6, 1e-6));
}
