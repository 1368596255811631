// Forward values and errors of topk, argsort and multinomial (engine/ops_sort.cpp).
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <numeric>
#include <random>

#include "tests/helpers.h"

using namespace mg;
using mg::test::check_values;

namespace {
Tensor f64(const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }
std::vector<int64_t> ints(const Tensor& t) { return t.to_vector<int64_t>(); }
}  // namespace

// ---- topk --------------------------------------------------------------------------------------
TEST_CASE("topk: sorted, ties keep the lower index first") {
    Tensor x = f64({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, {10});
    ValuesIndices top = topk(x, 3);
    check_values(top.values, {9, 6, 5});
    CHECK(ints(top.indices) == std::vector<int64_t>{5, 7, 4});  // 5 at 4 and 8: 4 first
    CHECK(top.indices.dtype() == DType::Int64);
    ValuesIndices low = topk(x, 4, -1, false);
    check_values(low.values, {1, 1, 2, 3});
    CHECK(ints(low.indices) == std::vector<int64_t>{1, 3, 6, 0});
    // All equal: the first k indices.
    ValuesIndices same = topk(Tensor::ones({6}, DType::Float64), 3);
    CHECK(ints(same.indices) == std::vector<int64_t>{0, 1, 2});
}

TEST_CASE("topk: small k (insertion) and large k (partial_sort) agree with a full stable sort") {
    Generator gen(21);
    // Rounded values make many ties.
    Tensor x = copy(randint(0, 20, {7, 50}, gen), DType::Float32);
    for (bool largest : {true, false})
        for (int64_t k : {1, 2, 5, 8, 9, 30, 50}) {
            CAPTURE(largest);
            CAPTURE(k);
            ValuesIndices top = topk(x, k, 1, largest);
            Tensor order = argsort(x, 1, largest);  // stable: ties by index in both directions
            CHECK(ints(top.indices) == ints(order.slice(1, 0, k).contiguous()));
            CHECK(top.values.to_vector<float>() == gather(x, 1, top.indices).to_vector<float>());
        }
}

TEST_CASE("topk along dim 0 of a 3-d tensor, and of an int tensor") {
    Tensor x = f64({1, 8, 5, 2, 7, 3, 6, 0, 9, 4, 2, 2}, {3, 2, 2});
    ValuesIndices top = topk(x, 2, 0);
    CHECK(top.values.shape() == Shape{2, 2, 2});
    // columns along dim 0: [1,7,9] [8,3,4] [5,6,2] [2,0,2]
    check_values(top.values, {9, 8, 6, 2, 7, 4, 5, 2});
    CHECK(ints(top.indices) == std::vector<int64_t>{2, 0, 1, 0, 1, 2, 0, 2});
    Tensor xi = Tensor::from_vector(std::vector<int64_t>{4, -2, 7}, {3});
    CHECK(ints(topk(xi, 2).values) == std::vector<int64_t>{7, 4});
}

TEST_CASE("topk: NaN counts as the largest value") {
    Tensor x = f64({1, NAN, 3}, {3});
    ValuesIndices top = topk(x, 2);
    CHECK(ints(top.indices) == std::vector<int64_t>{1, 2});
    CHECK(ints(topk(x, 2, -1, false).indices) == std::vector<int64_t>{0, 2});
}

TEST_CASE("topk: the float32 short-row path (keys, no branches) orders exactly as the general one") {
    // float32 rows of up to 64 values take topk_rows_keyed; the same rows in float64 take the
    // insertion path. Rows mix ties, -0 and +0 (equal), +-inf, and NaN of both signs (largest).
    std::mt19937 rng(7);
    const std::vector<float> specials = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1.5f, 1.5f, -2.0f};
    for (int64_t R : {1, 2, 3, 8, 17, 64, 65})
        for (int64_t k : {1, 2, 3, 8}) {
            if (k > R) continue;
            const int64_t rows = 40;
            std::vector<double> values(rows * R);
            for (double& v : values) {
                const uint32_t pick = rng() % 4;
                v = pick == 0 ? (double)specials[rng() % specials.size()] : (double)((int)(rng() % 7) - 3) * 0.5;
            }
            Tensor x64 = Tensor::from_vector(values, {rows, R});
            Tensor x32 = copy(x64, DType::Float32);
            for (bool largest : {true, false}) {
                CAPTURE(R);
                CAPTURE(k);
                CAPTURE(largest);
                ValuesIndices a = topk(x32, k, 1, largest), b = topk(x64, k, 1, largest);
                CHECK(ints(a.indices) == ints(b.indices));
                const std::vector<float> av = a.values.to_vector<float>();
                const std::vector<double> bv = b.values.to_vector<double>();
                for (size_t i = 0; i < av.size(); ++i) {
                    const bool both_nan = std::isnan(av[i]) && std::isnan(bv[i]);
                    CHECK((both_nan || (double)av[i] == bv[i]));
                }
            }
        }
}

TEST_CASE("topk: threads do not change the result") {
    Generator gen(8);
    Tensor x = randn({2000, 64}, gen);
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    ValuesIndices serial = topk(x, 4);
    omp_set_num_threads(threads);
    ValuesIndices parallel = topk(x, 4);
    CHECK(ints(serial.indices) == ints(parallel.indices));
}

TEST_CASE("topk: bad k names the op, k and the size") {
    Tensor x = f64({1, 2, 3}, {3});
    CHECK_THROWS_WITH_AS(topk(x, 4), doctest::Contains("topk: k = 4 is out of range [1, 3]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(topk(x, 0), doctest::Contains("topk"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(topk(x, 1, 2), doctest::Contains("topk"), std::exception);
}

// ---- argsort -----------------------------------------------------------------------------------
TEST_CASE("argsort is stable in both directions") {
    Tensor x = f64({2, 1, 2, 0, 1, 2}, {6});
    CHECK(ints(argsort(x)) == std::vector<int64_t>{3, 1, 4, 0, 2, 5});
    CHECK(ints(argsort(x, -1, true)) == std::vector<int64_t>{0, 2, 5, 1, 4, 3});
    // Along dim 0 of a 2-d tensor.
    Tensor m = f64({3, 0, 1, 0, 2, 0}, {3, 2});
    Tensor idx = argsort(m, 0);
    CHECK(idx.dtype() == DType::Int64);
    CHECK(ints(idx) == std::vector<int64_t>{1, 0, 2, 1, 0, 2});
    CHECK(ints(argsort(Tensor::from_vector(std::vector<int32_t>{5, -1, 5}, {3}))) == std::vector<int64_t>{1, 0, 2});
}

// Integer lines with a small range (the MoE dispatch's expert ids) take a counting sort; it must
// give exactly std::stable_sort's order, and the general path must still serve wide ranges.
TEST_CASE("argsort of small-range integers equals a stable sort, both directions") {
    std::mt19937 rng(3);
    for (int64_t n : {2, 7, 1000}) {
        for (int64_t range : {int64_t(1), int64_t(3), int64_t(16), n, int64_t(1000000)}) {
            std::vector<int64_t> values(n);
            for (auto& v : values) v = (int64_t)(rng() % (uint64_t)range) - 2;
            for (bool descending : {false, true}) {
                std::vector<int64_t> expected(n);
                std::iota(expected.begin(), expected.end(), 0);
                std::stable_sort(expected.begin(), expected.end(), [&](int64_t a, int64_t b) {
                    return descending ? values[b] < values[a] : values[a] < values[b];
                });
                CHECK(ints(argsort(Tensor::from_vector(values, {n}), 0, descending)) == expected);
                std::vector<int32_t> narrow(values.begin(), values.end());
                CHECK(ints(argsort(Tensor::from_vector(narrow, {n}), 0, descending)) == expected);
            }
        }
    }
    // The extreme int64 values: a range that does not fit, handled by the general path.
    const std::vector<int64_t> extremes{INT64_MAX, INT64_MIN, 0, INT64_MIN};
    CHECK(ints(argsort(Tensor::from_vector(extremes, {4}))) == std::vector<int64_t>{1, 3, 2, 0});
}

// ---- multinomial -------------------------------------------------------------------------------
TEST_CASE("multinomial: a one-hot row always samples its class, zero weights never") {
    Generator gen(1);
    Tensor probs = f64({0, 0, 1, 0, 0.5, 0, 0.5, 0}, {2, 4});
    Tensor s = multinomial(probs, 500, gen);
    CHECK(s.shape() == Shape{2, 500});
    CHECK(s.dtype() == DType::Int64);
    std::vector<int64_t> v = ints(s);
    for (int64_t j = 0; j < 500; ++j) CHECK(v[j] == 2);
    for (int64_t j = 500; j < 1000; ++j) CHECK((v[j] == 0 || v[j] == 2));
}

TEST_CASE("multinomial: frequencies of 20000 draws match the (unnormalised) weights") {
    Generator gen(2024);
    const std::vector<double> weights = {1, 2, 3, 4};  // probabilities 0.1 .. 0.4
    const int64_t n = 20000;
    Tensor s = multinomial(Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {1, 4}), n, gen);
    std::vector<int64_t> counts(4, 0);
    for (int64_t c : ints(s)) counts[c]++;
    for (int c = 0; c < 4; ++c) {
        double p = weights[c] / 10.0;
        double se = std::sqrt(p * (1 - p) / (double)n);
        CAPTURE(c);
        CHECK(std::abs((double)counts[c] / (double)n - p) < 4 * se);
    }
}

TEST_CASE("multinomial: the same generator state gives the same samples") {
    Generator gen(5);
    Tensor probs = f64({0.2, 0.3, 0.5, 1, 1, 1}, {2, 3});
    auto state = gen.state();
    std::vector<int64_t> first = ints(multinomial(probs, 50, gen));
    std::vector<int64_t> second = ints(multinomial(probs, 50, gen));
    CHECK(first != second);
    gen.set_state(state);
    CHECK(ints(multinomial(probs, 50, gen)) == first);
    // A 1-d row gives (num_samples).
    CHECK(multinomial(f64({1, 1}, {2}), 7, gen).shape() == Shape{7});
}

TEST_CASE("multinomial: bad rows and arguments give clear errors") {
    Generator gen(5);
    CHECK_THROWS_WITH_AS(multinomial(f64({1, 1, 0, 0}, {2, 2}), 3, gen),
                         doctest::Contains("multinomial: row 1 has a non-positive sum"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(multinomial(f64({1, -1}, {1, 2}), 3, gen), doctest::Contains("negative"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(multinomial(f64({1, NAN}, {1, 2}), 3, gen), doctest::Contains("NaN"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(multinomial(f64({1, 1}, {1, 2}), 0, gen), doctest::Contains("num_samples"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(multinomial(Tensor::ones({2, 2, 2}), 1, gen), doctest::Contains("multinomial"),
                         std::invalid_argument);
}
