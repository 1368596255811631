// tests/test_pruning.cpp: expert pruning (nn/pruning.cpp) at the three levels. The promise: a token
// that never routed to a removed expert gets exactly the output it had (the router's softmax
// renormalises over the experts left, and its top-k are all still there); the ids and names are
// renumbered as documented; pruning everything, or too much of a group, is refused and changes
// nothing.
#include <algorithm>
#include <set>

#include "nn/hierarchical_lm.h"
#include "nn/hierarchical_moe.h"
#include "nn/moe.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn;

namespace {
// Rows of (T, k) int64 indices that contain none of `removed`.
std::vector<int64_t> rows_without(const Tensor& indices, const std::set<int64_t>& removed) {
    const int64_t T = indices.size(0), k = indices.size(1);
    std::vector<int64_t> v = indices.to_vector<int64_t>(), rows;
    for (int64_t t = 0; t < T; ++t) {
        bool hit = false;
        for (int64_t j = 0; j < k; ++j) hit |= removed.count(v[t * k + j]) > 0;
        if (!hit) rows.push_back(t);
    }
    return rows;
}
Tensor rows_of(const Tensor& x, const std::vector<int64_t>& rows) { return index_select(x, 0, Tensor::from_vector(rows, {(int64_t)rows.size()})); }
}  // namespace

TEST_CASE("pruning a sparse MoE layer: untouched tokens keep their output, the rest are rerouted") {
    Generator gen(3);
    MoEConfig c{.d_in = 5, .hidden = {6}, .d_out = 4, .experts = 4, .k = 2, .dtype = DType::Float64};
    SpecializedExpertNetwork moe(c, gen);
    moe.eval();
    NoGradGuard no_grad;
    Tensor x = randn({40, 5}, gen, DType::Float64);
    auto before = moe(x);
    const int64_t expert_params = moe.experts[1]->num_parameters();
    const int64_t removed = moe.prune_experts({0, 2, 3});  // expert 1 goes
    CHECK(removed == expert_params + 5);                    // its expert and its router row
    CHECK(moe.config().experts == 3);
    CHECK(moe.router->weight.shape() == Shape{3, 5});
    CHECK(moe.named_parameters().back().first == "experts.2.layers.1.bias");
    auto after = moe(x);

    std::vector<int64_t> same = rows_without(before.routing.indices, {1});
    REQUIRE(same.size() > 5);
    REQUIRE(same.size() < 40);  // some tokens did use expert 1
    CHECK(test::allclose(rows_of(after.y, same), rows_of(before.y, same), 1e-12, 1e-12));
    CHECK(test::allclose(rows_of(after.routing.weights, same), rows_of(before.routing.weights, same), 1e-12, 1e-12));
    // old ids 0, 2, 3 are now 0, 1, 2
    std::vector<int64_t> renumbered = rows_of(before.routing.indices, same).to_vector<int64_t>();
    for (int64_t& id : renumbered) id -= id > 1 ? 1 : 0;
    CHECK(rows_of(after.routing.indices, same).to_vector<int64_t>() == renumbered);
    // the others are rerouted to experts that exist, with gates that still sum to 1
    std::vector<int64_t> moved;
    for (int64_t t = 0; t < 40; ++t)
        if (std::find(same.begin(), same.end(), t) == same.end()) moved.push_back(t);
    CHECK_FALSE(test::allclose(rows_of(after.y, moved), rows_of(before.y, moved), 1e-6, 1e-6));
    test::check_values(sum(after.routing.weights, 1), std::vector<double>(40, 1.0), 1e-12);
    CHECK(max(after.routing.indices).item() <= 2);
}

TEST_CASE("pruning a sparse MoE layer: errors") {
    Generator gen(4);
    SpecializedExpertNetwork moe(MoEConfig{.d_in = 3, .hidden = {4}, .d_out = 2, .experts = 3, .k = 2}, gen);
    CHECK_THROWS_WITH_AS(moe.prune_experts({}), doctest::Contains("would prune all 3"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(moe.prune_experts({2, 1}), doctest::Contains("ascending distinct ids in [0, 3)"), std::invalid_argument);
    CHECK_THROWS_AS(moe.prune_experts({0, 3}), std::invalid_argument);
    CHECK(moe.config().experts == 3);
    // keeping one expert of a top-2 layer: k becomes 1
    moe.prune_experts({2});
    CHECK(moe.config().k == 1);
    CHECK(moe(Tensor::ones({2, 3})).y.shape() == Shape{2, 2});
}

TEST_CASE("pruning a hierarchical MoE: global ids are kept, untouched tokens keep their output") {
    Generator gen(5);
    HierarchicalMoEConfig c;
    c.d_in = 4;
    c.hidden = {6};
    c.d_out = 4;
    c.groups = 2;
    c.group_k = 1;
    c.experts_per_group = 3;
    c.k = 2;
    c.dtype = DType::Float64;
    HierarchicalMixtureOfExperts moe(c, gen);
    moe.eval();
    NoGradGuard no_grad;
    Tensor x = randn({60, 4}, gen, DType::Float64);
    auto before = moe(x);
    const int64_t params = moe.num_parameters();
    // group 1 would keep 1 expert < k = 2: refused, nothing changes
    CHECK_THROWS_WITH_AS(moe.prune_experts({3, 5}), doctest::Contains("group 1 would keep 1 of its 3 experts"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(moe.prune_experts({6}), doctest::Contains("outside [0, groups * experts_per_group = 6)"),
                         std::invalid_argument);
    CHECK(moe.num_parameters() == params);

    moe.prune_experts({4});  // group 1, local expert 1
    CHECK(moe.expert_ids(1) == std::vector<int64_t>{3, 5});
    CHECK(moe.remaining_experts() == 5);
    auto after = moe(x);
    std::vector<int64_t> same = rows_without(before.routing.indices, {4});
    REQUIRE(same.size() > 5);
    REQUIRE(same.size() < 60);
    CHECK(test::allclose(rows_of(after.y, same), rows_of(before.y, same), 1e-12, 1e-12));
    CHECK(test::allclose(rows_of(after.routing.indices, same).to(DType::Float64),
                         rows_of(before.routing.indices, same).to(DType::Float64)));
    std::vector<int64_t> ids = after.routing.flat_expert_ids();
    CHECK(std::find(ids.begin(), ids.end(), 4) == ids.end());
    // the dense reference agrees with the pruned sparse layer
    CHECK(test::allclose(after.y, moe.forward_dense_reference(x), 1e-10, 1e-12));
}

TEST_CASE("pruning the language model by utilization") {
    Generator gen(6);
    MoELanguageModelConfig c;
    c.vocab = 11;
    c.d_model = 4;
    c.layers = 2;
    c.max_seq = 6;
    c.heads = 2;
    c.attention_k = 1;
    c.experts = 6;
    c.groups = 2;
    c.k = 2;
    c.expert_hidden = 5;
    MoELanguageModel lm(c, gen);
    const int64_t expert = 4 * 5 + 5 + 5 * 4 + 4, router_row = 4;
    const int64_t params = lm.num_parameters();
    std::vector<std::vector<double>> util = {{0.3, 0.01, 0.2, 0.2, 0.2, 0.09}, {0.2, 0.2, 0.2, 0.2, 0.1, 0.1}};
    // everything under the threshold: refused, nothing changes
    CHECK_THROWS_WITH_AS(lm.prune_experts(util, 1.0), doctest::Contains("use a lower threshold"), std::invalid_argument);
    CHECK_THROWS_AS(lm.prune_experts({{0.5}}, 0.05), std::invalid_argument);
    CHECK(lm.num_parameters() == params);

    auto result = lm.prune_experts(util, 0.05);  // only layer 0's expert 1
    CHECK(result.parameters_removed == expert + router_row);
    CHECK(result.removed_experts == std::vector<std::vector<int64_t>>{{1}, {}});
    CHECK(lm.num_parameters() == params - expert - router_row);
    CHECK(lm.counts().parameters.total() == lm.num_parameters());
    CHECK(lm.counts().active_parameters.experts == 2 * 2 * expert);  // a token still uses k = 2 experts per layer
    auto out = lm(Tensor::from_vector(std::vector<int64_t>{1, 2, 3, 4}, {1, 4}));
    CHECK(out.logits.shape() == Shape{1, 4, 11});
}
