// tests/test_metrics.cpp: the metrics of nn/metrics.h on hand-made routings whose numbers can
// be worked out on paper (docs/nn/metrics.md shows the same examples).
#include <cmath>

#include "nn/metrics.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn::metrics;

namespace {
// k slots per token, token-major: ids_of({{0, 1}, {2, 3}}) = {0, 1, 2, 3}.
std::vector<int64_t> ids_of(const std::vector<std::vector<int64_t>>& per_token) {
    std::vector<int64_t> ids;
    for (auto& slots : per_token) ids.insert(ids.end(), slots.begin(), slots.end());
    return ids;
}
}  // namespace

TEST_CASE("metrics: accuracy from logits and from predictions") {
    Tensor logits = Tensor::from_vector({0.1f, 0.9f, 0.0f,  //
                                         2.0f, 1.0f, 0.0f,  //
                                         0.0f, 0.0f, 5.0f,  //
                                         1.0f, 3.0f, 2.0f},
                                        {4, 3});
    Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 0, 1, 1}, {4});
    CHECK(accuracy(logits, labels) == 0.75);
    CHECK(accuracy(std::vector<int64_t>{0, 1, 2}, std::vector<int64_t>{0, 1, 1}) == doctest::Approx(2.0 / 3.0));
    CHECK_THROWS_WITH_AS(accuracy(logits, Tensor::from_vector(std::vector<int64_t>{1, 0}, {2})),
                         doctest::Contains("[4, 3]"), std::invalid_argument);
}

TEST_CASE("metrics: uniform routing is perfectly balanced and unspecialized") {
    // E = 4, k = 2, C = 2: the four tokens use the pairs {0,1}, {2,3}, {0,1}, {2,3} with
    // labels 0, 0, 1, 1: every expert gets 2 slots, one of each class.
    RoutingStats s = compute_routing_stats(ids_of({{0, 1}, {2, 3}, {0, 1}, {2, 3}}), 2, {0, 0, 1, 1}, 4, 2);
    CHECK(s.tokens == 4);
    CHECK(s.expert_slot_counts == std::vector<int64_t>{2, 2, 2, 2});
    CHECK(s.utilization == std::vector<double>{0.25, 0.25, 0.25, 0.25});
    CHECK(s.balance_variance == 0.0);
    CHECK(s.specialization_entropy_bits == doctest::Approx(1.0));  // log2(2): no specialization
    CHECK(s.specialization_index == doctest::Approx(0.0));
    CHECK(s.dropped_fraction == 0.0);
    CHECK(s.expert_class_counts == std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1});
}

TEST_CASE("metrics: collapsed routings give DESIGN.md's variances") {
    // E = 4, k = 2, every token on experts 0 and 1: utilization (1/2, 1/2, 0, 0), mean 1/4,
    // variance (4 * (1/4)^2) / 4 = 0.0625.
    RoutingStats two = compute_routing_stats(ids_of({{0, 1}, {1, 0}, {0, 1}}), 2, {}, 4, 0);
    CHECK(two.utilization == std::vector<double>{0.5, 0.5, 0.0, 0.0});
    CHECK(two.balance_variance == doctest::Approx(0.0625));
    CHECK(two.expert_class_counts.empty());
    CHECK(two.specialization_entropy_bits == 0.0);
    // k = 1, everything on expert 2: utilization (0, 0, 1, 0): ((3/4)^2 + 3 (1/4)^2) / 4 = 0.1875.
    RoutingStats one = compute_routing_stats({2, 2, 2, 2, 2}, 1, {}, 4, 0);
    CHECK(one.utilization == std::vector<double>{0.0, 0.0, 1.0, 0.0});
    CHECK(one.balance_variance == doctest::Approx(0.1875));
}

TEST_CASE("metrics: perfectly specialized experts") {
    // k = 1, expert e sees only class e: H(class | expert) = 0 for each, index 1.
    RoutingStats s = compute_routing_stats({0, 1, 2, 0, 1, 2}, 1, {0, 1, 2, 0, 1, 2}, 3, 3);
    CHECK(s.specialization_entropy_bits == 0.0);
    CHECK(s.specialization_index == 1.0);
    CHECK(s.balance_variance == doctest::Approx(0.0));
    CHECK(s.expert_class_counts == std::vector<int64_t>{2, 0, 0, 0, 2, 0, 0, 0, 2});
}

TEST_CASE("metrics: a partly specialized routing, worked by hand") {
    // E = 2, C = 2, k = 1. Expert 0 gets classes (0, 0, 0, 1); expert 1 gets (1, 1, 1, 1).
    // H0 = -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.811278..., H1 = 0, both utilizations 1/2:
    // entropy = 0.405639..., index = 1 - 0.405639 / log2(2) = 0.594361...
    RoutingStats s = compute_routing_stats({0, 0, 0, 0, 1, 1, 1, 1}, 1, {0, 0, 0, 1, 1, 1, 1, 1}, 2, 2);
    const double h0 = -(0.75 * std::log2(0.75) + 0.25 * std::log2(0.25));
    CHECK(h0 == doctest::Approx(0.8112781244591328));
    CHECK(s.specialization_entropy_bits == doctest::Approx(0.5 * h0));
    CHECK(s.specialization_index == doctest::Approx(1.0 - 0.5 * h0));
    CHECK(s.expert_class_counts == std::vector<int64_t>{3, 1, 0, 4});
}

TEST_CASE("metrics: dropped slots") {
    // T = 4, k = 2, -1 = dropped. Token 0 loses one slot, token 1 both, tokens 2 and 3 none:
    // dropped_fraction = 2/4. Utilization counts the 5 kept slots only.
    RoutingStats s = compute_routing_stats(ids_of({{0, -1}, {-1, -1}, {1, 0}, {0, 2}}), 2, {}, 3, 0);
    CHECK(s.dropped_fraction == 0.5);
    CHECK(s.expert_slot_counts == std::vector<int64_t>{3, 1, 1});
    CHECK(s.utilization[0] == doctest::Approx(0.6));
    CHECK(s.utilization[1] == doctest::Approx(0.2));
    CHECK(s.utilization[2] == doctest::Approx(0.2));
    // Everything dropped: utilization all zero, nothing divides by zero.
    RoutingStats none = compute_routing_stats({-1, -1}, 1, {}, 2, 0);
    CHECK(none.dropped_fraction == 1.0);
    CHECK(none.utilization == std::vector<double>{0.0, 0.0});
}

TEST_CASE("metrics: entropy and variance helpers") {
    CHECK(entropy_bits({1, 1, 1, 1}) == doctest::Approx(2.0));
    CHECK(entropy_bits({5, 0}) == 0.0);
    CHECK(entropy_bits({}) == 0.0);
    CHECK(population_variance({1.0, 3.0}) == 1.0);
    CHECK(population_variance({}) == 0.0);
}

TEST_CASE("metrics: bad routing inputs name the problem") {
    CHECK_THROWS_WITH_AS(compute_routing_stats({0, 1, 2}, 2, {}, 4, 0), doctest::Contains("multiple of k"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(compute_routing_stats({0, 7}, 1, {}, 4, 0), doctest::Contains("expert id 7"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(compute_routing_stats({0, 1}, 1, {0}, 4, 2), doctest::Contains("1 labels for 2 tokens"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(compute_routing_stats({0, 1}, 1, {0, 3}, 4, 2), doctest::Contains("label 3"),
                         std::invalid_argument);
}

TEST_CASE("metrics: class_fractions is P(class | expert) per row, zeros for an idle expert") {
    // 3 experts, 2 classes, k = 1: expert 0 gets classes {0, 0, 1}, expert 1 gets {1}, expert 2 nothing.
    RoutingStats s = compute_routing_stats({0, 0, 0, 1}, 1, {0, 0, 1, 1}, 3, 2);
    const auto rows = class_fractions(s);
    REQUIRE(rows.size() == 3);
    CHECK(rows[0][0] == doctest::Approx(2.0 / 3));
    CHECK(rows[0][1] == doctest::Approx(1.0 / 3));
    CHECK(rows[1] == std::vector<double>{0.0, 1.0});
    CHECK(rows[2] == std::vector<double>{0.0, 0.0});
}
