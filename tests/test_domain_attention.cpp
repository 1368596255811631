// tests/test_domain_attention.cpp: DomainSpecificAttention (nn/domain_attention.h). The sparse
// forward against the straightforward one (values and gradients), causality, the one-expert case
// against plain multi-head attention written out here, finite differences, counts, errors.
#include <algorithm>
#include <cmath>

#include "nn/domain_attention.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn;
using mg::test::grad_or_zeros;
using mg::test::set_parameter;
using mg::test::topk_margin;

namespace {
DomainAttentionConfig tiny_config(DType dtype, int64_t experts, int64_t k, int64_t heads) {
    DomainAttentionConfig c;
    c.d_model = 8;
    c.experts = experts;
    c.k = k;
    c.heads = heads;
    c.balance_alpha = 0.01;
    c.dtype = dtype;
    return c;
}

}  // namespace

TEST_CASE("domain attention: sparse equals the straightforward dense version, values and gradients") {
    for (DType dtype : {DType::Float32, DType::Float64}) {
        for (auto [experts, k, heads] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{4, 1, 1}, {4, 2, 2}, {3, 3, 4}}) {
            for (bool memory_efficient : {true, false}) {
                CAPTURE(dtype_name(dtype));
                CAPTURE(experts);
                CAPTURE(k);
                CAPTURE(heads);
                CAPTURE(memory_efficient);
                Generator gen(51);
                DomainAttentionConfig c = tiny_config(dtype, experts, k, heads);
                c.memory_efficient = memory_efficient;
                DomainSpecificAttention attn(c, gen);
                Tensor x = randn({2, 9, 8}, gen, dtype);
                x.set_requires_grad(true);
                Tensor w = randn({2, 9, 8}, gen, dtype);

                auto out = attn(x);
                CHECK(out.y.shape() == Shape{2, 9, 8});
                CHECK(out.routing.indices.shape() == Shape{18, k});
                sum(out.y * w).backward();
                std::vector<Tensor> sparse_grads{x.grad()};
                for (const Tensor& p : attn.parameters()) sparse_grads.push_back(grad_or_zeros(p));

                x.zero_grad();
                attn.zero_grad();
                Tensor dense = attn.forward_dense_reference(x);
                sum(dense * w).backward();
                std::vector<Tensor> dense_grads{x.grad()};
                for (const Tensor& p : attn.parameters()) dense_grads.push_back(grad_or_zeros(p));

                const double tol = dtype == DType::Float32 ? 2e-5 : 1e-12;
                CHECK(test::allclose(out.y, dense, tol, tol));
                auto names = attn.named_parameters();
                for (size_t i = 0; i < sparse_grads.size(); ++i) {
                    CAPTURE(i == 0 ? std::string("x") : names[i - 1].first);
                    CHECK(test::allclose(sparse_grads[i], dense_grads[i], tol, tol));
                }
            }
        }
    }
}

TEST_CASE("domain attention: causal, a later token never changes an earlier output") {
    Generator gen(52);
    DomainSpecificAttention attn(tiny_config(DType::Float64, 4, 2, 2), gen);
    const int64_t B = 2, T = 12, d = 8, changed = 7;
    Tensor x = randn({B, T, d}, gen, DType::Float64);
    std::vector<double> values = x.to_vector<double>();
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < d; ++i) values[(b * T + changed) * d + i] += 3.0;  // a different token at position 7
    Tensor x2 = Tensor::from_vector(values, {B, T, d});
    Tensor y = attn(x).y, y2 = attn(x2).y;
    // Positions 0..6 agree (to rounding: the experts' row groups differ); 7.. differ.
    CHECK(test::allclose(y.slice(1, 0, changed), y2.slice(1, 0, changed), 1e-12, 1e-12));
    for (int64_t t = changed; t < T; ++t) {
        CAPTURE(t);
        CHECK_FALSE(test::allclose(y.slice(1, t, t + 1), y2.slice(1, t, t + 1), 1e-6, 1e-6));
    }
}

TEST_CASE("domain attention: one expert and k = 1 is plain multi-head attention") {
    for (int64_t heads : {1, 2, 4}) {
        CAPTURE(heads);
        Generator gen(53);
        DomainSpecificAttention attn(tiny_config(DType::Float64, 1, 1, heads), gen);
        const int64_t B = 3, T = 5, d = 8, Dh = d / heads;
        Tensor x = randn({B, T, d}, gen, DType::Float64);
        // Multi-head attention written out: q, k, v projections, heads, causal softmax, output projection.
        auto split_heads = [&](const Tensor& t) { return t.reshape({B, T, heads, Dh}).transpose(1, 2); };
        Tensor q = split_heads(matmul(x, attn.experts[0]->q_proj->weight.t()));
        Tensor k = split_heads(matmul(x, attn.k_proj->weight.t()));
        Tensor v = split_heads(matmul(x, attn.v_proj->weight.t()));
        Tensor o = attention_reference(q, k, v, true, 1.0 / std::sqrt((double)Dh)).transpose(1, 2).reshape({B, T, d});
        Tensor expected = matmul(o, attn.experts[0]->o_proj->weight.t());
        auto out = attn(x);
        CHECK(test::allclose(out.y, expected, 1e-12, 1e-12));
        test::check_values(out.routing.weights, std::vector<double>(B * T, 1.0), 1e-15);  // the only expert, gate 1
    }
}

TEST_CASE("domain attention: finite-difference gradients (float64)") {
    for (auto [k, heads] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {2, 2}}) {
        CAPTURE(k);
        CAPTURE(heads);
        Generator gen(54);
        DomainAttentionConfig c;
        c.d_model = 4;
        c.experts = 3;
        c.k = k;
        c.heads = heads;
        c.balance_alpha = 0.3;
        c.dtype = DType::Float64;
        DomainSpecificAttention attn(c, gen);
        set_parameter(attn.router->weight, attn.router->weight * 4.0);
        Tensor x = test::rand_input({2, 4, 4}, 55);
        REQUIRE(topk_margin(attn.router->forward(x.reshape({8, 4})).logits, k) > 1e-3);

        std::vector<Tensor> params = attn.parameters();
        std::vector<Tensor> base;
        for (const Tensor& p : params) base.push_back(p.detach().clone());
        std::vector<Tensor> inputs{x};
        inputs.insert(inputs.end(), params.begin(), params.end());
        auto f = [&](const std::vector<Tensor>& xs) {
            for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], xs[i + 1].same(params[i]) ? base[i] : xs[i + 1]);
            auto out = attn(xs[0]);
            return concat({out.y.reshape({-1}), out.balance_loss.reshape({1})}, 0);
        };
        CHECK_GRADIENTS(f, inputs);
        for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], base[i]);
    }
}

TEST_CASE("domain attention: parameter names, active parameters and FLOPs") {
    Generator gen(56);
    DomainAttentionConfig c;
    c.d_model = 32;
    c.experts = 8;
    c.k = 2;
    c.heads = 2;
    c.head_dim = 8;
    DomainSpecificAttention attn(c, gen);
    CHECK(attn.head_dim() == 8);
    const int64_t inner = 16, router = 8 * 32, shared = 2 * inner * 32, expert = 2 * inner * 32;
    CHECK(attn.num_parameters() == router + shared + 8 * expert);
    CHECK(attn.active_parameters() == router + shared + 2 * expert);
    CHECK(attn.flops_per_token(64) == 2 * 32 * 8 + 4 * 32 * inner + 2 * (4 * 32 * inner + 2 * inner * 65));
    auto named = attn.named_parameters();
    CHECK(named[0].first == "router.weight");
    CHECK(named[1].first == "k_proj.weight");
    CHECK(named[2].first == "v_proj.weight");
    CHECK(named[3].first == "experts.0.q_proj.weight");
    CHECK(named[3].second.shape() == Shape{16, 32});
    CHECK(named.back().first == "experts.7.o_proj.weight");
    CHECK(named.back().second.shape() == Shape{32, 16});
    auto out = attn(randn({2, 5, 32}, gen));
    CHECK(out.y.shape() == Shape{2, 5, 32});
    CHECK(out.balance_loss.dim() == 0);
    CHECK(out.routing.flat_expert_ids().size() == 2 * 5 * 2);
}

TEST_CASE("domain attention errors name the module and what was expected") {
    Generator gen(0);
    DomainAttentionConfig c = tiny_config(DType::Float32, 4, 5, 2);
    CHECK_THROWS_WITH_AS(DomainSpecificAttention(c, gen), doctest::Contains("DomainSpecificAttention: k = 5 must be in [1, experts = 4]"),
                         std::invalid_argument);
    c = tiny_config(DType::Float32, 4, 2, 3);
    CHECK_THROWS_WITH_AS(DomainSpecificAttention(c, gen), doctest::Contains("d_model = 8 is not divisible by heads = 3"),
                         std::invalid_argument);
    c.head_dim = 4;  // an explicit head size lifts the divisibility rule
    CHECK_NOTHROW(DomainSpecificAttention(c, gen));
    c = tiny_config(DType::Float32, 0, 1, 1);
    CHECK_THROWS_WITH_AS(DomainSpecificAttention(c, gen), doctest::Contains("experts = 0"), std::invalid_argument);

    DomainSpecificAttention attn(tiny_config(DType::Float32, 4, 2, 2), gen);
    CHECK_THROWS_WITH_AS(attn(Tensor::zeros({5, 8})),
                         doctest::Contains("DomainSpecificAttention: expected input of shape (batch, time, 8), got [5, 8]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(attn(Tensor::zeros({2, 3, 7})), doctest::Contains("got [2, 3, 7]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(attn(Tensor::zeros({2, 3, 8}, DType::Float64)), doctest::Contains("float64"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(attn(Tensor::zeros({2, 0, 8})), doctest::Contains("empty input [2, 0, 8]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(attn(Tensor::zeros({0, 3, 8})), doctest::Contains("empty input [0, 3, 8]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(attn.forward_dense_reference(Tensor::zeros({8})), doctest::Contains("forward_dense_reference"),
                         std::invalid_argument);
}
