// Finite-difference gradient checks (float64) for the elementwise, reduction, shape, index and
// matmul ops: random inputs of several shapes, with broadcasting, views and size-1 dimensions.
// Inputs keep away from kinks (relu/abs at 0, clamp's bounds, ties in max/min).
#include "tests/helpers.h"

using namespace mg;
using mg::test::rand_input;
using Inputs = std::vector<Tensor>;

namespace {
// Positive values (for log, sqrt, pow with fractional exponents): exp(N(0, 0.5^2)).
Tensor pos_input(const Shape& shape, uint64_t seed) {
    Generator gen(seed);
    Tensor t = exp(randn(shape, gen, DType::Float64) * 0.5);
    t.set_requires_grad(true);
    return t;
}
// Values at least 0.1 away from zero (relu, abs).
Tensor away_from_zero(const Shape& shape, uint64_t seed) {
    Generator gen(seed);
    Tensor r = randn(shape, gen, DType::Float64);
    Tensor t = where(ge(r, Tensor::scalar(0, DType::Float64)), r + 0.1, r - 0.1);
    t.set_requires_grad(true);
    return t;
}
const std::vector<Shape> kShapes = {{}, {1}, {5}, {3, 4}, {2, 1, 3}};
}  // namespace

// ---- the checker itself ------------------------------------------------------------------------
TEST_CASE("gradcheck catches a backward that is 1% off") {
    auto twice_wrong = [](const Inputs& in) {
        Tensor y = in[0] * 2.0;
        if (any_requires_grad({in[0]})) {
            Tensor x = in[0];
            Tensor out = y.detach();
            record(out, OpId::mul, {x}, [](const Tensor& g) { return std::vector<Tensor>{g * (2.0 * 1.01)}; });
            return out;
        }
        return y;
    };
    auto result = mg::test::gradcheck(twice_wrong, {rand_input({4, 3}, 1)});
    CHECK_FALSE(result.ok);
    auto right = [](const Inputs& in) { return in[0] * 2.0; };
    CHECK(mg::test::gradcheck(right, {rand_input({4, 3}, 1)}).ok);
}

// ---- unary ---------------------------------------------------------------------------------------
#define UNARY_GRADCHECK(op, make_input)                                                      \
    GRADCHECK(op, "several shapes") {                                                        \
        for (size_t s = 0; s < kShapes.size(); ++s) {                                        \
            CAPTURE(s);                                                                      \
            CHECK_GRADIENTS([](const Inputs& in) { return op(in[0]); }, {make_input(kShapes[s], 10 + s)}); \
        }                                                                                    \
    }
UNARY_GRADCHECK(neg, rand_input)
UNARY_GRADCHECK(abs, away_from_zero)
UNARY_GRADCHECK(exp, rand_input)
UNARY_GRADCHECK(log, pos_input)
UNARY_GRADCHECK(sqrt, pos_input)
UNARY_GRADCHECK(relu, away_from_zero)
UNARY_GRADCHECK(gelu, rand_input)
UNARY_GRADCHECK(erf, rand_input)
UNARY_GRADCHECK(tanh, rand_input)
UNARY_GRADCHECK(sigmoid, rand_input)
UNARY_GRADCHECK(softplus, rand_input)

GRADCHECK(pow, "integer and fractional exponents") {
    for (double p : {2.0, 3.0, 0.5, -1.5})
        CHECK_GRADIENTS([p](const Inputs& in) { return pow(in[0], p); }, {pos_input({3, 4}, 7)});
}

GRADCHECK(clamp, "values inside, below and above") {
    // randn * 2 puts many values outside [-0.5, 0.5]; none within eps of the bounds for this seed.
    CHECK_GRADIENTS([](const Inputs& in) { return clamp(in[0], -0.5, 0.5); }, {rand_input({6, 5}, 3, 2.0)});
}

// ---- binary, with broadcasting ---------------------------------------------------------------------
namespace {
const std::vector<std::pair<Shape, Shape>> kBroadcastPairs = {
    {{3, 4}, {3, 4}}, {{3, 4}, {4}}, {{3, 1}, {1, 4}}, {{2, 3, 4}, {3, 1}}, {{}, {2, 3}}, {{5}, {}}};
}
#define BINARY_GRADCHECK(op, expr, make_b)                                                         \
    GRADCHECK(op, "broadcast shapes") {                                                            \
        for (size_t s = 0; s < kBroadcastPairs.size(); ++s) {                                      \
            CAPTURE(s);                                                                            \
            auto [sa, sb] = kBroadcastPairs[s];                                                    \
            CHECK_GRADIENTS([](const Inputs& in) { return expr; }, {rand_input(sa, 20 + s), make_b(sb, 40 + s)}); \
        }                                                                                          \
    }
BINARY_GRADCHECK(add, in[0] + in[1], rand_input)
BINARY_GRADCHECK(sub, in[0] - in[1], rand_input)
BINARY_GRADCHECK(mul, in[0] * in[1], rand_input)
BINARY_GRADCHECK(div, in[0] / in[1], pos_input)
BINARY_GRADCHECK(maximum, maximum(in[0], in[1]), rand_input)

GRADCHECK(mul, "one operand without grad, and a transposed view") {
    Tensor a = rand_input({4, 3}, 1), b = rand_input({3, 4}, 2);
    b.set_requires_grad(false);
    CHECK_GRADIENTS([](const Inputs& in) { return in[0] * in[1].t(); }, {a, b});
}

GRADCHECK(where, "broadcast condition") {
    Tensor cond = gt(Tensor::from_vector({1.f, -1.f, 2.f, -3.f}, {4}), Tensor::scalar(0));
    CHECK_GRADIENTS([cond](const Inputs& in) { return where(cond, in[0], in[1]); },
                    {rand_input({3, 4}, 1), rand_input({4}, 2)});
}

GRADCHECK(masked_fill, "causal mask") {
    Tensor mask = gt(Tensor::arange(0, 4).reshape({1, 4}), Tensor::arange(0, 4).reshape({4, 1}));
    // A fill value like -1e9 would drown the finite differences; any value has the same gradient.
    CHECK_GRADIENTS([mask](const Inputs& in) { return masked_fill(in[0], mask, -5.0) * 1.0; },
                    {rand_input({2, 4, 4}, 3)});
}

// ---- reductions --------------------------------------------------------------------------------------
GRADCHECK(sum, "all, one dim, several dims, keepdim") {
    Tensor x = rand_input({2, 3, 4}, 5);
    CHECK_GRADIENTS([](const Inputs& in) { return sum(in[0]); }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return sum(in[0], 1); }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return sum(in[0], -1, true); }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return sum(in[0], std::vector<int64_t>{0, 2}); }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return sum(in[0].t()); }, {rand_input({3, 5}, 6)});
}

GRADCHECK(mean, "all, one dim, several dims") {
    Tensor x = rand_input({2, 3, 4}, 7);
    CHECK_GRADIENTS([](const Inputs& in) { return mean(in[0]); }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return mean(in[0], 0, true); }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return mean(in[0], std::vector<int64_t>{1, 2}); }, {x});
}

GRADCHECK(max, "along a dim and over all") {
    Tensor x = rand_input({3, 5}, 8);
    CHECK_GRADIENTS([](const Inputs& in) { return max(in[0], 1).values; }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return max(in[0], 0, true).values; }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return max(in[0]); }, {x});
}

GRADCHECK(min, "along a dim") {
    CHECK_GRADIENTS([](const Inputs& in) { return min(in[0], -1).values; }, {rand_input({4, 3}, 9)});
}

GRADCHECK(logsumexp, "rows and columns") {
    Tensor x = rand_input({3, 5}, 10, 3.0);
    CHECK_GRADIENTS([](const Inputs& in) { return logsumexp(in[0], 1); }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return logsumexp(in[0], 0, true); }, {x});
}

GRADCHECK(cumsum, "each dim") {
    Tensor x = rand_input({3, 4}, 11);
    CHECK_GRADIENTS([](const Inputs& in) { return cumsum(in[0], 0); }, {x});
    CHECK_GRADIENTS([](const Inputs& in) { return cumsum(in[0], 1); }, {x});
}

// ---- matmul ---------------------------------------------------------------------------------------------
GRADCHECK(matmul, "2-d, batched, broadcast batch, vectors, transposed views") {
    CHECK_GRADIENTS([](const Inputs& in) { return matmul(in[0], in[1]); }, {rand_input({3, 4}, 1), rand_input({4, 5}, 2)});
    CHECK_GRADIENTS([](const Inputs& in) { return matmul(in[0], in[1]); },
                    {rand_input({2, 3, 4}, 3), rand_input({2, 4, 2}, 4)});
    CHECK_GRADIENTS([](const Inputs& in) { return matmul(in[0], in[1]); },
                    {rand_input({2, 1, 3, 4}, 5), rand_input({3, 4, 2}, 6)});
    CHECK_GRADIENTS([](const Inputs& in) { return matmul(in[0], in[1]); }, {rand_input({4}, 7), rand_input({4, 3}, 8)});
    CHECK_GRADIENTS([](const Inputs& in) { return matmul(in[0], in[1]); }, {rand_input({3, 4}, 9), rand_input({4}, 10)});
    CHECK_GRADIENTS([](const Inputs& in) { return matmul(in[0].t(), in[1].t()); },
                    {rand_input({4, 3}, 11), rand_input({5, 4}, 12)});
}

GRADCHECK(linear, "with and without bias, with ReLU, 3-d input, a transposed (strided) x") {
    auto lin = [](bool bias, bool relu) {
        return [bias, relu](const Inputs& in) { return linear(in[0], in[1], bias ? in[2] : Tensor(), relu); };
    };
    CHECK_GRADIENTS(lin(true, false), {rand_input({5, 4}, 1), rand_input({3, 4}, 2), rand_input({3}, 3)});
    CHECK_GRADIENTS(lin(false, false), {rand_input({5, 4}, 4), rand_input({3, 4}, 5), rand_input({3}, 6)});
    CHECK_GRADIENTS(lin(true, true), {rand_input({2, 6, 4}, 7), rand_input({5, 4}, 8), rand_input({5}, 9)});
    CHECK_GRADIENTS([](const Inputs& in) { return linear(in[0].t(), in[1], in[2], true); },
                    {rand_input({4, 7}, 10), rand_input({3, 4}, 11), rand_input({3}, 12)});
}

GRADCHECK(grouped_matmul, "groups of 3, 0, 1 and 4 rows (an empty group included), and a transposed x") {
    Tensor offsets = Tensor::from_vector(std::vector<int64_t>{0, 3, 3, 4, 8}, {5});
    CHECK_GRADIENTS([offsets](const Inputs& in) { return grouped_matmul(in[0], in[1], offsets); },
                    {rand_input({8, 5}, 1), rand_input({4, 3, 5}, 2)});
    CHECK_GRADIENTS([offsets](const Inputs& in) { return grouped_matmul(in[0].t(), in[1], offsets); },
                    {rand_input({5, 8}, 3), rand_input({4, 2, 5}, 4)});
}

TEST_CASE("grouped_matmul: each group's rows times its own weight, like matmul per group; clear errors") {
    Generator gen(5);
    Tensor x = randn({9, 6}, gen), w = randn({3, 4, 6}, gen);
    const std::vector<int64_t> off{0, 2, 9, 9};  // groups of 2, 7 and 0 rows
    Tensor y = grouped_matmul(x, w, Tensor::from_vector(off, {4}));
    REQUIRE(y.shape() == Shape{9, 4});
    for (int64_t g = 0; g < 3; ++g) {
        if (off[g + 1] == off[g]) continue;
        Tensor expected = matmul(x.slice(0, off[g], off[g + 1]), w.select(0, g).t());
        CHECK(mg::test::allclose(y.slice(0, off[g], off[g + 1]), expected, 1e-5, 1e-5));
    }
    CHECK_THROWS_WITH_AS(grouped_matmul(x, w, Tensor::from_vector(std::vector<int64_t>{0, 2, 9}, {3})),
                         doctest::Contains("expected x (N, K), w (G, M, K) and offsets (G+1)"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(grouped_matmul(x, w, Tensor::from_vector(std::vector<int64_t>{0, 5, 2, 9}, {4})),
                         doctest::Contains("offsets must start at 0, never decrease and end at 9"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(grouped_matmul(x, w, Tensor::from_vector(std::vector<int64_t>{0, 2, 9, 10}, {4})),
                         doctest::Contains("end at 9"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(grouped_matmul(x, w, Tensor::from_vector(std::vector<int32_t>{0, 2, 9, 9}, {4})),
                         doctest::Contains("offsets must be int64"), std::invalid_argument);
}

// ---- shape ops (views) ----------------------------------------------------------------------------------
GRADCHECK(reshape, "contiguous and from a transposed view") {
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].reshape({4, 3}); }, {rand_input({3, 4}, 1)});
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].t().reshape({-1}); }, {rand_input({3, 4}, 2)});
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].unsqueeze(1).squeeze(1); }, {rand_input({3, 4}, 3)});
}
GRADCHECK(transpose, "3-d") {
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].transpose(0, 2) * 1.0; }, {rand_input({2, 3, 4}, 4)});
}
GRADCHECK(permute, "3-d") {
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].permute({2, 0, 1}) * 1.0; }, {rand_input({2, 3, 4}, 5)});
}
GRADCHECK(expand, "size-1 and new leading dims") {
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].expand({2, 3, 4}) * 1.0; }, {rand_input({3, 1}, 6)});
}
GRADCHECK(slice, "with a step, and select") {
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].slice(1, 1, 5, 2) * 1.0; }, {rand_input({3, 6}, 7)});
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].select(0, -1) * 1.0; }, {rand_input({3, 6}, 8)});
}
GRADCHECK(copy, "contiguous copy of a view, float64 -> float64") {
    CHECK_GRADIENTS([](const Inputs& in) { return in[0].t().contiguous(); }, {rand_input({3, 5}, 9)});
}
GRADCHECK(concat, "along dims 0 and 1") {
    CHECK_GRADIENTS([](const Inputs& in) { return concat({in[0], in[1]}, 0); }, {rand_input({2, 3}, 1), rand_input({4, 3}, 2)});
    CHECK_GRADIENTS([](const Inputs& in) { return concat({in[0], in[1], in[0]}, 1); },
                    {rand_input({2, 3}, 3), rand_input({2, 1}, 4)});
}
GRADCHECK(split, "unequal parts") {
    CHECK_GRADIENTS([](const Inputs& in) {
        auto parts = split(in[0], std::vector<int64_t>{1, 3}, 1);
        return parts[0] * 2.0 + parts[1].sum(1, true);
    }, {rand_input({3, 4}, 5)});
}

// ---- indexing ---------------------------------------------------------------------------------------------
GRADCHECK(gather, "dim 1 with repeated indices") {
    Tensor idx = Tensor::from_vector(std::vector<int64_t>{0, 2, 2, 1, 1, 0}, {3, 2});
    CHECK_GRADIENTS([idx](const Inputs& in) { return gather(in[0], 1, idx); }, {rand_input({3, 4}, 6)});
}
GRADCHECK(scatter_add, "into x, from src") {
    Tensor idx = Tensor::from_vector(std::vector<int64_t>{0, 2, 2, 1, 1, 0}, {3, 2});
    CHECK_GRADIENTS([idx](const Inputs& in) { return scatter_add(in[0], 1, idx, in[1]); },
                    {rand_input({3, 4}, 7), rand_input({3, 2}, 8)});
}
GRADCHECK(index_select, "rows, with repeats") {
    Tensor idx = Tensor::from_vector(std::vector<int64_t>{3, 0, 3}, {3});
    CHECK_GRADIENTS([idx](const Inputs& in) { return index_select(in[0], 0, idx); }, {rand_input({4, 2}, 9)});
    CHECK_GRADIENTS([idx](const Inputs& in) { return index_select(in[0], 1, idx); }, {rand_input({2, 5}, 10)});
}
GRADCHECK(index_add, "rows, with repeats") {
    Tensor idx = Tensor::from_vector(std::vector<int64_t>{1, 0, 1}, {3});
    CHECK_GRADIENTS([idx](const Inputs& in) { return index_add(in[0], 0, idx, in[1]); },
                    {rand_input({2, 4}, 11), rand_input({3, 4}, 12)});
}
