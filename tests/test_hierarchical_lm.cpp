// tests/test_hierarchical_lm.cpp: HybridPositionalEncoding (nn/transformer.h) and MoELanguageModel
// (nn/hierarchical_lm.h): shapes, the gate at init, causality, finite differences in float64,
// checkpointed against plain gradients with dropout on, counters against hand counts, errors.
#include <cmath>
#include <functional>
#include <string>
#include <utility>

#include "nn/hierarchical_lm.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn;

namespace {
void set_parameter(Tensor param, const Tensor& value) {
    NoGradGuard no_grad;
    param.copy_(value);
}

// vocab 11, d 4, 1 layer, max_seq 6, 3 attention experts (k 2, head_dim 2), 4 FFN experts in 2
// groups (k_g 1, k 1), expert hidden 5: small enough to count by hand.
MoELanguageModelConfig tiny_config() {
    MoELanguageModelConfig c;
    c.vocab = 11;
    c.d_model = 4;
    c.layers = 1;
    c.max_seq = 6;
    c.heads = 3;
    c.attention_k = 2;
    c.head_dim = 2;
    c.experts = 4;
    c.groups = 2;
    c.group_k = 1;
    c.k = 1;
    c.expert_hidden = 5;
    return c;
}

Tensor ids_of(const std::vector<int64_t>& v, int64_t B, int64_t T) { return Tensor::from_vector(v, {B, T}); }

// Finite differences over a module's own parameters (test::gradcheck perturbs its inputs, but
// these are leaves the module holds): the gradients backward() leaves on every parameter of
// `module` against central differences of loss(), in float64. Returns the worst score
// |analytic - numeric| / (atol + rtol |numeric|) and where it was.
std::pair<double, std::string> check_parameter_gradients(Module& module, const std::function<Tensor()>& loss,
                                                         double rtol = 1e-5, double atol = 1e-8) {
    module.zero_grad();
    loss().backward();
    double worst = 0;
    std::string where;
    for (auto& [name, p] : module.named_parameters()) {
        std::vector<double> analytic =
            p.grad().defined() ? p.grad().to_vector<double>() : std::vector<double>(p.numel(), 0.0);
        std::vector<double> v = p.to_vector<double>();
        for (size_t j = 0; j < v.size(); ++j) {
            const double eps = 1e-6;
            auto loss_with = [&](double value) {
                std::vector<double> u = v;
                u[j] = value;
                set_parameter(p, Tensor::from_vector(u, p.shape()));
                NoGradGuard no_grad;
                return loss().item();
            };
            const double numeric = (loss_with(v[j] + eps) - loss_with(v[j] - eps)) / (2 * eps);
            set_parameter(p, Tensor::from_vector(v, p.shape()));
            const double err = std::abs(analytic[j] - numeric) / (atol + rtol * std::abs(numeric));
            if (err > worst) {
                worst = err;
                where = name + "[" + std::to_string(j) + "]: analytic " + std::to_string(analytic[j]) + " vs numeric " +
                        std::to_string(numeric);
            }
        }
    }
    return {worst, where};
}
}  // namespace

// ---- HybridPositionalEncoding ----------------------------------------------------------------------
TEST_CASE("hybrid positions: shape, the gate at init is an even mix, errors") {
    Generator gen(3);
    HybridPositionalEncoding pe(10, 6, gen);
    Tensor out = pe(7);
    CHECK(out.shape() == Shape{7, 6});
    // gate logits start at 0: g = sigmoid(0) = 1/2 in every channel
    test::check_values(pe.mix(), std::vector<double>(6, 0.5));
    Tensor expected = pe.sinusoidal->forward(7) * 0.5 + pe.learned.slice(0, 0, 7) * 0.5;
    CHECK(test::allclose(out, expected));
    // a gate pushed far negative leaves the sinusoid alone
    set_parameter(pe.gate, Tensor::full({6}, -40.0));
    CHECK(test::allclose(pe(4), pe.sinusoidal->forward(4), 1e-6, 1e-7));
    // parameters: the learned table and the gate (the sinusoid is a buffer)
    CHECK(pe.num_parameters() == 10 * 6 + 6);
    auto named = pe.named_parameters();
    CHECK(named[0].first == "learned");
    CHECK(named[1].first == "gate");
    CHECK_THROWS_WITH_AS(pe(11), doctest::Contains("HybridPositionalEncoding: sequence length 11"), std::invalid_argument);
    CHECK_THROWS_AS(HybridPositionalEncoding(0, 4, gen), std::invalid_argument);
}

TEST_CASE("hybrid positions: finite-difference gradients wrt the learned table and the gate (float64)") {
    Generator gen(5);
    HybridPositionalEncoding pe(5, 4, gen, {.gate_init = 0.3, .learned_std = 0.5, .dtype = DType::Float64});
    set_parameter(pe.gate, test::rand_input({4}, 7));  // a different share in every channel
    Generator wgen(9);
    Tensor w = randn({4, 4}, wgen, DType::Float64);  // L = sum(pe(4) * w): every element its own weight
    auto [worst, where] = check_parameter_gradients(pe, [&] { return sum(pe(4) * w); }, 1e-6);
    INFO("worst: " << where << " (score " << worst << ")");
    CHECK(worst <= 1.0);
    // rows past T get no gradient
    CHECK(sum(abs(pe.learned.grad().slice(0, 4, 5))).item() == 0.0);
}

// ---- MoELanguageModel --------------------------------------------------------------------------------
TEST_CASE("moe lm: named configurations") {
    MoELanguageModelConfig c = MoELanguageModelConfig::named("d256_l2_e8");
    CHECK(c.d_model == 256);
    CHECK(c.layers == 2);
    CHECK(c.experts == 8);
    CHECK(c.heads == 8);
    CHECK(c.k == 2);
    CHECK(c.groups == 2);
    CHECK(c.group_k == 1);
    CHECK(c.name() == "d256_l2_e8");
    c.k = 1;
    CHECK(c.name() == "d256_l2_e8_k1");
    CHECK_THROWS_WITH_AS(MoELanguageModelConfig::named("d256_l2"), doctest::Contains("d<D>_l<L>_e<E>"), std::invalid_argument);
    CHECK_THROWS_AS(MoELanguageModelConfig::named("d256_l2_e7"), std::invalid_argument);
    CHECK_THROWS_AS(MoELanguageModelConfig::named("d256_l2_e8x"), std::invalid_argument);
    MoELanguageModelConfig bad = tiny_config();
    bad.k = 3;  // only 2 experts per group
    CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("k = 3 must be in [1, experts per group = 2]"), std::invalid_argument);
}

TEST_CASE("moe lm: shapes, the module tree, errors") {
    Generator gen(1);
    MoELanguageModelConfig c = tiny_config();
    c.layers = 2;
    MoELanguageModel lm(c, gen);
    Tensor ids = ids_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 2, 5);
    auto out = lm(ids);
    CHECK(out.logits.shape() == Shape{2, 5, 11});
    CHECK(out.balance_loss.dim() == 0);
    REQUIRE(out.layers.size() == 2);
    CHECK(out.layers[0].attention.indices.shape() == Shape{10, 2});
    CHECK(out.layers[1].ffn.indices.shape() == Shape{10, 1});
    // the tree a dependency graph is drawn from
    std::vector<std::string> types;
    for (auto& [name, m] : lm.named_modules())
        if (name == "" || name == "blocks.0." || name == "blocks.0.attn." || name == "blocks.0.moe." || name == "positions.")
            types.push_back(m->type_name());
    CHECK(types == std::vector<std::string>{"MoELanguageModel", "HybridPositionalEncoding", "MoEBlock",
                                            "DomainSpecificAttention", "HierarchicalMixtureOfExperts"});
    CHECK_THROWS_WITH_AS(lm(ids_of({1, 2, 3, 4, 5, 6, 7}, 1, 7)), doctest::Contains("outside [1, max_seq = 6]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(lm(ids_of({1, 11}, 1, 2)), doctest::Contains("token id 11 is outside the vocabulary"),
                         std::invalid_argument);
}

TEST_CASE("moe lm: causal: changing token t leaves the logits before t unchanged") {
    Generator gen(2);
    MoELanguageModelConfig c = tiny_config();
    c.layers = 2;
    MoELanguageModel lm(c, gen);
    lm.eval();
    NoGradGuard no_grad;
    Tensor a = lm(ids_of({3, 1, 4, 1, 5, 9}, 1, 6)).logits;
    Tensor b = lm(ids_of({3, 1, 4, 7, 2, 6}, 1, 6)).logits;  // tokens 3.. differ
    CHECK(test::allclose(a.slice(1, 0, 3), b.slice(1, 0, 3), 1e-6, 1e-6));
    CHECK_FALSE(test::allclose(a.slice(1, 3, 4), b.slice(1, 3, 4), 1e-6, 1e-6));
}

TEST_CASE("moe lm: finite-difference gradients of the whole model (float64)") {
    // k = E at every router (attention, groups, experts in a group), so that no top-k choice can
    // flip under the finite-difference step: the function is smooth in every parameter. The
    // sparse dispatch with k < E is checked against its dense reference in the layers' own tests.
    Generator gen(4);
    MoELanguageModelConfig c = tiny_config();
    c.layers = 2;
    c.heads = 2;
    c.attention_k = 2;
    c.group_k = 2;
    c.k = 2;
    c.balance_alpha = 0.1;
    c.dtype = DType::Float64;
    MoELanguageModel lm(c, gen);
    Tensor ids = ids_of({1, 5, 2, 9, 3, 0, 7, 4}, 2, 4);
    Tensor targets = ids_of({5, 2, 9, 3, 0, 7, 4, 8}, 2, 4);
    auto [worst, where] = check_parameter_gradients(lm, [&] {
        auto out = lm(ids);
        return MoELanguageModel::loss(out.logits, targets) + out.balance_loss;
    });
    INFO("worst: " << where << " (score " << worst << ")");
    CHECK(worst <= 1.0);
}

TEST_CASE("moe lm: checkpointed blocks give the same gradients as plain ones, dropout on") {
    MoELanguageModelConfig c = tiny_config();
    c.layers = 3;
    c.max_seq = 8;
    c.dropout = 0.3;
    Generator gen_plain(11), gen_ckpt(11);
    MoELanguageModel plain(c, gen_plain);
    c.checkpoint_activations = true;
    MoELanguageModel ckpt(c, gen_ckpt);
    Tensor ids = ids_of({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 5}, 2, 8);
    Tensor targets = ids_of({2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 5, 6}, 2, 8);
    double losses[2];
    int i = 0;
    for (MoELanguageModel* m : {&plain, &ckpt}) {
        auto out = (*m)(ids);
        Tensor loss = MoELanguageModel::loss(out.logits, targets) + out.balance_loss;
        losses[i++] = loss.item();
        loss.backward();
        REQUIRE(out.layers.size() == 3);
        CHECK(out.layers[2].ffn.indices.shape() == Shape{16, 1});
    }
    CHECK(losses[0] == doctest::Approx(losses[1]).epsilon(1e-7));
    auto a = plain.named_parameters(), b = ckpt.named_parameters();
    REQUIRE(a.size() == b.size());
    for (size_t p = 0; p < a.size(); ++p) {
        CAPTURE(a[p].first);
        REQUIRE(a[p].second.grad().defined() == b[p].second.grad().defined());
        if (a[p].second.grad().defined()) CHECK(test::allclose(a[p].second.grad(), b[p].second.grad(), 1e-6, 1e-7));
    }
    // and dropout really was on: a second forward in train mode gives a different loss
    {
        NoGradGuard no_grad;
        auto again = plain(ids);
        CHECK(MoELanguageModel::loss(again.logits, targets).item() + again.balance_loss.item() != doctest::Approx(losses[0]).epsilon(1e-9));
    }
}

TEST_CASE("moe lm: parameter and FLOP counters against hand counts") {
    Generator gen(6);
    MoELanguageModel lm(tiny_config(), gen);
    ModelCounts m = lm.counts(6);
    // parameters
    CHECK(m.parameters.embedding == 11 * 4 + 6 * 4 + 4);       // token table, learned positions, gate
    CHECK(m.parameters.attention == 2 * 2 * 4 + 3 * (2 * 4 + 4 * 2));  // shared K, V; 3 experts' W_q, W_o
    CHECK(m.parameters.router == 3 * 4 + 2 * 4 + 2 * (2 * 4));  // attention, group, 2 group routers
    CHECK(m.parameters.experts == 4 * (4 * 5 + 5 + 5 * 4 + 4));
    CHECK(m.parameters.norms == 3 * 2 * 4);
    CHECK(m.parameters.head == 0);
    CHECK(m.parameters.total() == lm.num_parameters());
    // active: 2 of 3 attention experts, 1 group router of 2, 1 of 4 FFN experts
    CHECK(m.active_parameters.attention == 16 + 2 * 16);
    CHECK(m.active_parameters.router == 12 + 8 + 8);
    CHECK(m.active_parameters.experts == 49);
    CHECK(m.active_parameters.embedding == 72);
    // FLOPs per token at seq 6
    CHECK(m.flops_per_token.embedding == 12);
    CHECK(m.flops_per_token.attention == 2 * 2 * 4 * 2 + 2 * (2 * 2 * 4 * 2 + 2 * 2 * 7));
    CHECK(m.flops_per_token.router == 2 * 4 * 3 + 2 * 4 * 2 + 2 * 4 * 2);
    CHECK(m.flops_per_token.experts == 2 * (4 * 5 + 5 * 4));
    CHECK(m.flops_per_token.norms == 3 * 7 * 4);
    CHECK(m.flops_per_token.head == 2 * 4 * 11);
    CHECK_THROWS_AS(lm.counts(7), std::invalid_argument);
}
