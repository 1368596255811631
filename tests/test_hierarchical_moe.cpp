// tests/test_hierarchical_moe.cpp: the two-level MoE of nn/hierarchical_moe.h. Sparse against the
// dense reference (values and gradients), the joined routing against both levels, the per-level
// metrics, finite differences through the whole layer, counts of parameters and FLOPs, errors.
#include <algorithm>
#include <cmath>

#include "nn/hierarchical_moe.h"
#include "nn/metrics.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn;
using mg::test::grad_or_zeros;
using mg::test::set_parameter;
using mg::test::topk_margin;

namespace {
HierarchicalMoEConfig tiny_config(DType dtype, int64_t group_k, int64_t k) {
    HierarchicalMoEConfig c;
    c.d_in = 5;
    c.hidden = {7};
    c.d_out = 3;
    c.groups = 3;
    c.group_k = group_k;
    c.experts_per_group = 4;
    c.k = k;
    c.group_balance_alpha = 0.02;
    c.balance_alpha = 0.01;
    c.dtype = dtype;
    return c;
}

}  // namespace

TEST_CASE("hierarchical moe: sparse equals the dense reference, values and gradients") {
    for (DType dtype : {DType::Float32, DType::Float64}) {
        for (auto [group_k, k] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {1, 2}, {2, 2}, {3, 4}}) {
            CAPTURE(dtype_name(dtype));
            CAPTURE(group_k);
            CAPTURE(k);
            Generator gen(31);
            HierarchicalMixtureOfExperts moe(tiny_config(dtype, group_k, k), gen);
            Tensor x = randn({29, 5}, gen, dtype);
            x.set_requires_grad(true);
            Tensor w = randn({29, 3}, gen, dtype);

            auto out = moe(x);
            CHECK(out.y.shape() == Shape{29, 3});
            sum(out.y * w).backward();
            std::vector<Tensor> sparse_grads{x.grad()};
            for (const Tensor& p : moe.parameters()) sparse_grads.push_back(grad_or_zeros(p));

            x.zero_grad();
            moe.zero_grad();
            Tensor dense = moe.forward_dense_reference(x);
            sum(dense * w).backward();
            std::vector<Tensor> dense_grads{x.grad()};
            for (const Tensor& p : moe.parameters()) dense_grads.push_back(grad_or_zeros(p));

            const double tol = dtype == DType::Float32 ? 1e-5 : 1e-12;
            CHECK(test::allclose(out.y, dense, tol, tol));
            auto names = moe.named_parameters();
            for (size_t i = 0; i < sparse_grads.size(); ++i) {
                CAPTURE(i == 0 ? std::string("x") : names[i - 1].first);
                CHECK(test::allclose(sparse_grads[i], dense_grads[i], tol, tol));
            }
        }
    }
}

TEST_CASE("hierarchical moe: the joined routing is the product of both levels") {
    Generator gen(4);
    const int64_t T = 40, G = 3, E = 4, kg = 2, k = 2;
    HierarchicalMixtureOfExperts moe(tiny_config(DType::Float64, kg, k), gen);
    Tensor x = randn({T, 5}, gen, DType::Float64);
    auto out = moe(x);
    const HierarchicalRouting& r = out.routing;
    REQUIRE(r.indices.shape() == Shape{T, kg * k});
    REQUIRE(r.weights.shape() == Shape{T, kg * k});
    CHECK(r.indices.dtype() == DType::Int64);
    CHECK(r.experts_per_group == E);
    REQUIRE(r.experts.size() == (size_t)G);
    REQUIRE(r.group_tokens.size() == (size_t)G);

    std::vector<int64_t> group_ids = r.group.indices.to_vector<int64_t>(), ids = r.indices.to_vector<int64_t>();
    std::vector<double> group_gates = r.group.weights.to_vector<double>(), gates = r.weights.to_vector<double>();
    for (int64_t t = 0; t < T; ++t) {
        double row_sum = 0;
        for (int64_t j = 0; j < kg; ++j) {
            const int64_t g = group_ids[t * kg + j];
            // t is in group g's token list, at position p; that row of the group's routing is t's.
            const auto& tokens = r.group_tokens[g];
            auto it = std::find(tokens.begin(), tokens.end(), t);
            REQUIRE(it != tokens.end());
            const int64_t p = it - tokens.begin();
            std::vector<int64_t> inner = r.experts[g].indices.to_vector<int64_t>();
            std::vector<double> inner_gates = r.experts[g].weights.to_vector<double>();
            for (int64_t i = 0; i < k; ++i) {
                CHECK(ids[t * kg * k + j * k + i] == g * E + inner[p * k + i]);
                CHECK(gates[t * kg * k + j * k + i] == doctest::Approx(group_gates[t * kg + j] * inner_gates[p * k + i]).epsilon(1e-12));
                row_sum += gates[t * kg * k + j * k + i];
            }
        }
        CHECK(row_sum == doctest::Approx(1.0).epsilon(1e-12));  // softmax over the kept logits at both levels
    }
    // Each group saw exactly the tokens routed to it, in token order.
    for (int64_t g = 0; g < G; ++g) {
        CHECK((int64_t)r.group_tokens[g].size() == r.group.expert_counts[g]);
        CHECK(std::is_sorted(r.group_tokens[g].begin(), r.group_tokens[g].end()));
    }

    // The metrics per level: the group level is a routing of T tokens to G groups with k_g
    // slots; the expert level one of T tokens to G*E global experts with k_g*k slots.
    std::vector<int64_t> labels(T);
    for (int64_t t = 0; t < T; ++t) labels[t] = t % 2;
    auto group_stats = metrics::compute_routing_stats(r.flat_group_ids(), kg, labels, G, 2);
    auto expert_stats = metrics::compute_routing_stats(r.flat_expert_ids(), kg * k, labels, G * E, 2);
    CHECK(group_stats.expert_slot_counts == r.group.expert_counts);
    for (int64_t g = 0; g < G; ++g)
        for (int64_t e = 0; e < E; ++e) CHECK(expert_stats.expert_slot_counts[g * E + e] == r.experts[g].expert_counts[e]);
    double total = 0;
    for (double u : expert_stats.utilization) total += u;
    CHECK(total == doctest::Approx(1.0));

    // Balance losses: the group router's plus the mean of the groups' own.
    double mean_inner = 0;
    int64_t busy = 0;
    for (int64_t g = 0; g < G; ++g)
        if (r.group.expert_counts[g] > 0) {
            mean_inner += r.experts[g].balance_loss.item();
            ++busy;
        }
    mean_inner /= (double)busy;
    CHECK(out.group_balance_loss.item() == doctest::Approx(r.group.balance_loss.item()).epsilon(1e-12));
    CHECK(out.expert_balance_loss.item() == doctest::Approx(mean_inner).epsilon(1e-12));
    CHECK(out.balance_loss.item() == doctest::Approx(out.group_balance_loss.item() + mean_inner).epsilon(1e-12));
}

TEST_CASE("hierarchical moe: a group that gets no tokens is skipped") {
    Generator gen(6);
    HierarchicalMoEConfig c = tiny_config(DType::Float64, 1, 2);
    c.router_bias = true;
    HierarchicalMixtureOfExperts moe(c, gen);
    set_parameter(moe.group_router->bias, Tensor::from_vector(std::vector<double>{-50, 50, -50}, {3}));
    Tensor x = randn({11, 5}, gen, DType::Float64);
    auto out = moe(x);
    CHECK(out.routing.group.expert_counts == std::vector<int64_t>{0, 11, 0});
    CHECK(out.routing.experts[0].expert_counts == std::vector<int64_t>{0, 0, 0, 0});
    CHECK_FALSE(out.routing.experts[0].indices.defined());
    CHECK(out.expert_balance_loss.item() == doctest::Approx(out.routing.experts[1].balance_loss.item()));
    CHECK(test::allclose(out.y, moe.forward_dense_reference(x), 1e-12, 1e-12));
    (sum(out.y) + out.balance_loss).backward();
    CHECK(moe.groups[1]->router->weight.grad().defined());
    CHECK_FALSE(moe.groups[0]->router->weight.grad().defined());
    CHECK_FALSE(moe.groups[2]->experts[0]->weights[0].grad().defined());
}

// Capacity at level 1: a group takes at most ceil(k_g * T * cf / G) slots; a dropped slot adds
// nothing. With level 2 dropless each group's output on a token does not depend on the other
// tokens, so the layer must equal: sum over the token's kept group slots of gate * group(x).
TEST_CASE("hierarchical moe: a group capacity drops slots, and what is kept is exact") {
    Generator gen(9);
    HierarchicalMoEConfig c = tiny_config(DType::Float64, 2, 2);
    c.router_bias = true;
    c.group_capacity_factor = 1.0;
    HierarchicalMixtureOfExperts moe(c, gen);
    // Push every token's first choice to group 0: its demand (T) exceeds its capacity.
    set_parameter(moe.group_router->bias, Tensor::from_vector(std::vector<double>{3, 0, 0}, {3}));
    const int64_t T = 12;
    Tensor x = randn({T, 5}, gen, DType::Float64);
    auto out = moe(x);
    const Routing& gr = out.routing.group;
    CHECK(gr.capacity == 8);  // ceil(2 * 12 * 1.0 / 3)
    REQUIRE(gr.dropped_slots > 0);
    for (int64_t n : gr.expert_counts) CHECK(n <= gr.capacity);
    // The reference, token by token.
    std::vector<Tensor> group_y;
    for (auto& group : moe.groups) group_y.push_back(group->forward(x).y);  // (T, 3), dropless inside
    const std::vector<int64_t> ids = gr.indices.to_vector<int64_t>();
    const std::vector<double> w = gr.weights.to_vector<double>();
    Tensor expected = Tensor::zeros({T, 3}, DType::Float64);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < 2; ++j)
            if (gr.kept[t * 2 + j]) {
                CHECK(w[t * 2 + j] != 0);
                expected.select(0, t).add_(group_y[ids[t * 2 + j]].select(0, t) * w[t * 2 + j]);
            } else {
                CHECK(w[t * 2 + j] == 0);
            }
    CHECK(test::allclose(out.y, expected, 1e-12, 1e-12));
    // Dropped group slots are -1 in both flat id lists (k_g * k = 4 expert slots per token).
    const std::vector<int64_t> group_ids = out.routing.flat_group_ids(), expert_ids = out.routing.flat_expert_ids();
    CHECK(std::count(group_ids.begin(), group_ids.end(), -1) == gr.dropped_slots);
    CHECK(std::count(expert_ids.begin(), expert_ids.end(), -1) == 2 * gr.dropped_slots);
    const auto stats = metrics::compute_routing_stats(group_ids, 2, {}, 3, 1);
    CHECK(stats.dropped_fraction > 0);
    (sum(out.y) + out.balance_loss).backward();  // the backward runs through the dropped part
}

// Capacity at level 2: inside each group, over the tokens that group received.
TEST_CASE("hierarchical moe: an expert capacity inside the groups") {
    Generator gen(10);
    HierarchicalMoEConfig c = tiny_config(DType::Float64, 1, 2);
    c.capacity_factor = 1.0;
    HierarchicalMixtureOfExperts moe(c, gen);
    Tensor x = randn({40, 5}, gen, DType::Float64);
    auto out = moe(x);
    int64_t dropped = 0;
    for (int64_t g = 0; g < 3; ++g) {
        const Routing& r = out.routing.experts[g];
        if (out.routing.group_tokens[g].empty()) continue;
        CHECK(r.capacity == (2 * (int64_t)out.routing.group_tokens[g].size() + 3) / 4);  // ceil(k * n_g / E)
        for (int64_t n : r.expert_counts) CHECK(n <= r.capacity);
        dropped += r.dropped_slots;
    }
    const std::vector<int64_t> ids = out.routing.flat_expert_ids();
    CHECK(std::count(ids.begin(), ids.end(), -1) == dropped);
    // A kept slot's weight is the product of both gates; a dropped one's is 0.
    const std::vector<double> w = out.routing.weights.to_vector<double>();
    for (size_t s = 0; s < ids.size(); ++s)
        if (ids[s] < 0) CHECK(w[s] == 0);
}

TEST_CASE("hierarchical moe: finite-difference gradients of the whole layer (float64)") {
    // y and both balance losses, wrt x and every parameter. GELU (no kinks) and routers scaled
    // up so that no top-k choice, at either level, is within reach of the finite-difference step.
    for (auto [group_k, k] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {2, 2}}) {
        CAPTURE(group_k);
        CAPTURE(k);
        Generator gen(41);
        HierarchicalMoEConfig c;
        c.d_in = 3;
        c.hidden = {4};
        c.d_out = 2;
        c.groups = 3;
        c.group_k = group_k;
        c.experts_per_group = 3;
        c.k = k;
        c.group_balance_alpha = 0.3;
        c.balance_alpha = 0.2;
        c.act = ExpertActivation::GELU;
        c.dtype = DType::Float64;
        HierarchicalMixtureOfExperts moe(c, gen);
        set_parameter(moe.group_router->weight, moe.group_router->weight * 4.0);
        for (auto& group : moe.groups) set_parameter(group->router->weight, group->router->weight * 4.0);
        Tensor x = test::rand_input({6, 3}, 42);
        REQUIRE(topk_margin(moe.group_router->forward(x).logits, group_k) > 1e-3);
        for (auto& group : moe.groups) REQUIRE(topk_margin(group->router->forward(x).logits, k) > 1e-3);

        std::vector<Tensor> params = moe.parameters();
        std::vector<Tensor> base;
        for (const Tensor& p : params) base.push_back(p.detach().clone());
        std::vector<Tensor> inputs{x};
        inputs.insert(inputs.end(), params.begin(), params.end());
        auto f = [&](const std::vector<Tensor>& xs) {
            for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], xs[i + 1].same(params[i]) ? base[i] : xs[i + 1]);
            auto out = moe(xs[0]);
            return concat({out.y.reshape({-1}), out.group_balance_loss.reshape({1}), out.expert_balance_loss.reshape({1})}, 0);
        };
        CHECK_GRADIENTS(f, inputs);
        for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], base[i]);
    }
}

TEST_CASE("hierarchical moe: shapes, parameter names, active parameters and FLOPs") {
    Generator gen(2);
    HierarchicalMoEConfig c;
    c.d_in = 16;
    c.hidden = {32};
    c.d_out = 16;
    c.groups = 4;
    c.group_k = 2;
    c.experts_per_group = 8;
    c.k = 2;
    HierarchicalMixtureOfExperts moe(c, gen);
    const int64_t expert = 16 * 32 + 32 + 32 * 16 + 16, group_router = 4 * 16, inner_router = 8 * 16;
    CHECK(moe.total_experts() == 32);
    CHECK(moe.num_parameters() == group_router + 4 * (inner_router + 8 * expert));
    CHECK(moe.active_parameters() == group_router + 2 * (inner_router + 2 * expert));
    CHECK(moe.flops_per_token() == 2 * 16 * 4 + 2 * (2 * 16 * 8 + 2 * 2 * (16 * 32 + 32 * 16)));
    auto named = moe.named_parameters();
    CHECK(named.front().first == "group_router.weight");
    CHECK(named[1].first == "groups.0.router.weight");
    CHECK(named.back().first == "groups.3.experts.7.layers.1.bias");

    auto out = moe(randn({10, 16}, gen));
    CHECK(out.y.shape() == Shape{10, 16});
    CHECK(out.routing.group.indices.shape() == Shape{10, 2});
    CHECK(out.balance_loss.dim() == 0);
    auto empty = moe(Tensor::zeros({0, 16}));
    CHECK(empty.y.shape() == Shape{0, 16});
    CHECK(empty.routing.indices.shape() == Shape{0, 4});
    CHECK(empty.balance_loss.item() == 0.0);
}

TEST_CASE("hierarchical moe errors name the module and what was expected") {
    Generator gen(0);
    HierarchicalMoEConfig c = tiny_config(DType::Float32, 4, 2);
    CHECK_THROWS_WITH_AS(HierarchicalMixtureOfExperts(c, gen),
                         doctest::Contains("HierarchicalMixtureOfExperts: group_k = 4 must be in [1, groups = 3]"),
                         std::invalid_argument);
    c = tiny_config(DType::Float32, 1, 5);
    CHECK_THROWS_WITH_AS(HierarchicalMixtureOfExperts(c, gen),
                         doctest::Contains("k = 5 must be in [1, experts_per_group = 4]"), std::invalid_argument);
    c = tiny_config(DType::Float32, 1, 1);
    c.groups = 0;
    CHECK_THROWS_WITH_AS(HierarchicalMixtureOfExperts(c, gen), doctest::Contains("groups must be positive, got 0"),
                         std::invalid_argument);
    c = tiny_config(DType::Float32, 1, 1);
    c.d_out = -1;
    CHECK_THROWS_WITH_AS(HierarchicalMixtureOfExperts(c, gen), doctest::Contains("d_out must be positive"),
                         std::invalid_argument);
    c = tiny_config(DType::Int64, 1, 1);
    CHECK_THROWS_AS(HierarchicalMixtureOfExperts(c, gen), std::invalid_argument);

    HierarchicalMixtureOfExperts moe(tiny_config(DType::Float32, 1, 2), gen);
    CHECK_THROWS_WITH_AS(moe(Tensor::zeros({3, 4})),
                         doctest::Contains("HierarchicalMixtureOfExperts: expected input of shape (tokens, 5), got [3, 4]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(moe(Tensor::zeros({2, 3, 5})), doctest::Contains("got [2, 3, 5]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(moe(Tensor::zeros({3, 5}, DType::Float64)), doctest::Contains("float64"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(moe.forward_dense_reference(Tensor::zeros({5})), doctest::Contains("got [5]"),
                         std::invalid_argument);
}
