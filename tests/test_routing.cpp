// tests/test_routing.cpp: the router options of nn/moe.h (noisy top-k, jitter, capacity factor,
// priorities, drop policies, importance / load / z losses), each on a batch small enough to
// work out by hand: 4 tokens, 3 experts, k = 2, with the logits set directly:
//
//   token   logits (e0, e1, e2)   top-2 (best first)   Mixtral gates = softmax of the two kept
//     0        (3, 1, 0)            e0, e1               sigma(2), sigma(-2) = 0.8808, 0.1192
//     1        (2, 0, 1)            e0, e2               sigma(1), sigma(-1) = 0.7311, 0.2689
//     2        (0, 2, 1)            e1, e2               sigma(1), sigma(-1)
//     3        (1, 4, 0)            e1, e0               sigma(3), sigma(-3) = 0.9526, 0.0474
//
// Slots chosen per expert: e0 3 (t0, t1, t3), e1 3 (t0, t2, t3), e2 2 (t1, t2).
// Then finite differences (float64) for everything differentiable, with the noise fixed by the
// generator's state; train vs eval; checkpoints of the noise generator; the error messages.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "nn/checkpoint.h"
#include "nn/metrics.h"
#include "nn/moe.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn;
using mg::test::grad_or_zeros;
using mg::test::set_parameter;
using mg::test::topk_margin;
using mg::test::check_values;

namespace {
const std::vector<std::vector<double>> kLogits = {{3, 1, 0}, {2, 0, 1}, {0, 2, 1}, {1, 4, 0}};

double sigma(double z) { return 1.0 / (1.0 + std::exp(-z)); }
double normal_cdf(double z) { return 0.5 * (1.0 + std::erf(z / std::sqrt(2.0))); }

RouterConfig hand_config() {
    RouterConfig rc;
    rc.d_in = 4;
    rc.experts = 3;
    rc.k = 2;
    rc.balance_alpha = 0;
    rc.dtype = DType::Float64;
    return rc;
}

// A router whose logits for x = I (4 x 4) are kLogits: W[e][t] = kLogits[t][e].
std::unique_ptr<TopKRouter> hand_router(const RouterConfig& rc, uint64_t seed = 0) {
    Generator gen(seed);
    auto router = std::make_unique<TopKRouter>(rc, gen);
    std::vector<double> w(3 * 4);
    for (int e = 0; e < 3; ++e)
        for (int t = 0; t < 4; ++t) w[e * 4 + t] = kLogits[t][e];
    set_parameter(router->weight, Tensor::from_vector(w, {3, 4}));
    return router;
}

Tensor identity4() {
    std::vector<double> v(16, 0.0);
    for (int i = 0; i < 4; ++i) v[i * 5] = 1;
    return Tensor::from_vector(v, {4, 4});
}

double cv_squared(const std::vector<double>& v) {
    double m = 0, var = 0;
    for (double x : v) m += x;
    m /= (double)v.size();
    for (double x : v) var += (x - m) * (x - m);
    var /= (double)v.size();
    return var / (m * m + 1e-10);
}

// The smallest gap between neighbouring sorted logits of any token: a finite-difference step must
// not be able to reorder them (top-k, the load loss's thresholds, and capacity priorities).
double sorted_gap(const Tensor& logits) {
    const int64_t T = logits.size(0), E = logits.size(1);
    std::vector<double> v = logits.to_vector<double>();
    double gap = 1e30;
    for (int64_t t = 0; t < T; ++t) {
        std::vector<double> row(v.begin() + t * E, v.begin() + (t + 1) * E);
        std::sort(row.begin(), row.end());
        for (int64_t e = 0; e + 1 < E; ++e) gap = std::min(gap, row[e + 1] - row[e]);
    }
    return gap;
}

// Finite differences of f(routing) with respect to x and the router's parameters. The
// generator is reset before every forward, so every evaluation draws the same noise.
void check_router_gradients(TopKRouter& router, const Tensor& x, const std::function<Tensor(const Routing&)>& f) {
    const Generator::State noise_state = router.generator.state();
    std::vector<Tensor> params = router.parameters();
    std::vector<Tensor> base;
    for (const Tensor& p : params) base.push_back(p.detach().clone());
    std::vector<Tensor> inputs{x};
    inputs.insert(inputs.end(), params.begin(), params.end());
    auto g = [&](const std::vector<Tensor>& xs) {
        for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], xs[i + 1].same(params[i]) ? base[i] : xs[i + 1]);
        router.generator.set_state(noise_state);
        return f(router(xs[0]));
    };
    CHECK_GRADIENTS(g, inputs);
    for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], base[i]);
}
}  // namespace

// ---- capacity ------------------------------------------------------------------------------------
TEST_CASE("routing capacity: ceil(k * tokens * cf / experts), training and eval factors") {
    RouterConfig rc = hand_config();
    rc.capacity_factor = 1.0;
    auto router = hand_router(rc);
    CHECK(router->capacity(4) == 3);  // ceil(2 * 4 * 1.0 / 3) = ceil(2.67)
    rc.capacity_factor = 1.25;
    CHECK(hand_router(rc)->capacity(4) == 4);   // ceil(3.33)
    CHECK(hand_router(rc)->capacity(64) == 54); // ceil(53.33)
    rc.capacity_factor = 0.5;
    CHECK(hand_router(rc)->capacity(4) == 2);   // ceil(1.33)
    rc.capacity_factor = 0;
    CHECK(hand_router(rc)->capacity(4) == 0);   // 0 = unlimited
    // 10 * 0.3 is 3.0000000000000004 in floating point: still a capacity of 3, not 4.
    RouterConfig one = hand_config();
    one.experts = 1;
    one.k = 1;
    one.capacity_factor = 0.3;
    Generator gen(0);
    CHECK(TopKRouter(one, gen).capacity(10) == 3);
    // eval() switches to eval_capacity_factor, when it is set.
    rc.capacity_factor = 1.0;
    rc.eval_capacity_factor = 2.0;
    auto both = hand_router(rc);
    CHECK(both->capacity(4) == 3);
    both->eval();
    CHECK(both->capacity(4) == 6);  // ceil(2 * 4 * 2 / 3) = ceil(5.33)
    rc.eval_capacity_factor = 0.0;  // dropless in eval
    auto dropless_eval = hand_router(rc);
    dropless_eval->eval();
    CHECK(dropless_eval->capacity(4) == 0);
}

TEST_CASE("routing capacity: dropless by default, nothing dropped") {
    auto router = hand_router(hand_config());
    Routing r = (*router)(identity4());
    CHECK(r.capacity == 0);
    CHECK(r.dropped_slots == 0);
    CHECK(r.dropped_tokens == 0);
    CHECK(r.dropped_fraction() == 0.0);
    CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 0, 2, 1, 2, 1, 0});
    CHECK(r.expert_counts == std::vector<int64_t>{3, 3, 2});
    CHECK(r.chosen_counts == std::vector<int64_t>{3, 3, 2});
    CHECK(r.flat_expert_ids() == std::vector<int64_t>{0, 1, 0, 2, 1, 2, 1, 0});
    check_values(r.weights, {sigma(2), sigma(-2), sigma(1), sigma(-1), sigma(1), sigma(-1), sigma(3), sigma(-3)});
}

TEST_CASE("routing capacity: first come drops second choices beyond the capacity") {
    // cf = 0.5: capacity 2. First choices in token order: e0 <- t0, t1; e1 <- t2, t3 (both full).
    // Second choices: t0 -> e1 full, dropped; t1 -> e2 (1); t2 -> e2 (2); t3 -> e0 full, dropped.
    RouterConfig rc = hand_config();
    rc.capacity_factor = 0.5;
    Routing r = (*hand_router(rc))(identity4());
    CHECK(r.capacity == 2);
    CHECK(r.kept == std::vector<uint8_t>{1, 0, 1, 1, 1, 1, 1, 0});
    CHECK(r.flat_expert_ids() == std::vector<int64_t>{0, -1, 0, 2, 1, 2, 1, -1});
    CHECK(r.dropped_slots == 2);
    CHECK(r.dropped_tokens == 2);
    CHECK(r.dropped_fraction() == 0.5);
    CHECK(r.expert_counts == std::vector<int64_t>{2, 2, 2});
    CHECK(r.chosen_counts == std::vector<int64_t>{3, 3, 2});
    // DropPolicy::Zero: the lost slot's weight is 0, the kept one unchanged.
    check_values(r.weights, {sigma(2), 0, sigma(1), sigma(-1), sigma(1), sigma(-1), sigma(3), 0});
    // metrics::compute_routing_stats reads the -1s: the same dropped fraction, utilization of kept slots.
    metrics::RoutingStats s = metrics::compute_routing_stats(r.flat_expert_ids(), 2, {}, 3, 0);
    CHECK(s.dropped_fraction == r.dropped_fraction());
    CHECK(s.expert_slot_counts == r.expert_counts);
    CHECK(s.utilization[0] == doctest::Approx(1.0 / 3));
}

TEST_CASE("routing capacity: highest gate first keeps the slots the router is surest of") {
    // cf = 0.25: capacity 1 per expert.
    //   first come:   t0's e0 (0.88), t2's e1 (0.73), t1's e2 (0.27) are served first
    //   highest gate: t3's e1 (0.95) beats t2's e1 (0.73); e0 -> t0 (0.88); e2 -> t1 (0.27 ties
    //                 with t2's, first come breaks the tie)
    RouterConfig rc = hand_config();
    rc.capacity_factor = 0.25;
    Routing first = (*hand_router(rc))(identity4());
    CHECK(first.capacity == 1);
    CHECK(first.kept == std::vector<uint8_t>{1, 0, 0, 1, 1, 0, 0, 0});
    CHECK(first.dropped_slots == 5);
    CHECK(first.dropped_tokens == 4);
    rc.capacity_priority = CapacityPriority::HighestGate;
    Routing best = (*hand_router(rc))(identity4());
    CHECK(best.kept == std::vector<uint8_t>{1, 0, 0, 1, 0, 0, 1, 0});
    CHECK(best.flat_expert_ids() == std::vector<int64_t>{0, -1, -1, 2, -1, -1, 1, -1});
    CHECK(best.expert_counts == std::vector<int64_t>{1, 1, 1});
    // Token 2 lost both slots: its output is 0 (weights 0), whatever the drop policy.
    check_values(best.weights, {sigma(2), 0, 0, sigma(-1), 0, 0, sigma(3), 0});
}

TEST_CASE("routing capacity: the renormalize drop policy scales kept gates up to the sum all k had") {
    RouterConfig rc = hand_config();
    rc.capacity_factor = 0.5;  // drops t0's and t3's second slots (see above)
    rc.drop_policy = DropPolicy::Renormalize;
    check_values((*hand_router(rc))(identity4()).weights, {1, 0, sigma(1), sigma(-1), sigma(1), sigma(-1), 1, 0});
    // Raw Switch probabilities (rows sum to p_a + p_b < 1): the kept gate becomes p_a + p_b.
    rc.softmax_over_topk = false;
    rc.renormalize = false;
    auto p = [](int t, int e) {
        double z = 0;
        for (double l : kLogits[t]) z += std::exp(l);
        return std::exp(kLogits[t][e]) / z;
    };
    check_values((*hand_router(rc))(identity4()).weights,
                 {p(0, 0) + p(0, 1), 0, p(1, 0), p(1, 2), p(2, 1), p(2, 2), p(3, 1) + p(3, 0), 0});
    // A token that loses every slot gets weights 0, not 0/0.
    rc.softmax_over_topk = true;
    rc.renormalize = true;
    rc.capacity_factor = 0.25;
    rc.capacity_priority = CapacityPriority::HighestGate;
    check_values((*hand_router(rc))(identity4()).weights, {1, 0, 0, 1, 0, 0, 1, 0});
}

// ---- auxiliary losses ------------------------------------------------------------------------------
TEST_CASE("routing losses: importance, load and z-loss worked by hand, and their sum") {
    RouterConfig rc = hand_config();
    rc.balance_alpha = 0.1;
    rc.importance_alpha = 0.5;
    rc.z_loss_alpha = 0.01;
    rc.noise = RouterNoise::NoisyTopK;
    rc.load_alpha = 0.2;
    auto router = hand_router(rc);
    router->eval();  // no noise: logits = clean logits; W_noise = 0, so the noise std is log 2
    Routing r = (*router)(identity4());
    check_values(r.logits, {3, 1, 0, 2, 0, 1, 0, 2, 1, 1, 4, 0});

    // importance_e = sum of e's gates: e0 = s(2) + s(1) + s(-3), e1 = s(-2) + s(1) + s(3), e2 = 2 s(-1).
    std::vector<double> importance{sigma(2) + sigma(1) + sigma(-3), sigma(-2) + sigma(1) + sigma(3), 2 * sigma(-1)};
    CHECK(r.importance_loss.item() == doctest::Approx(0.5 * cv_squared(importance)).epsilon(1e-9));

    // load: P(t, e) = Phi((logit - threshold) / log 2) with threshold = the 3rd largest logit
    // (k+1 = 3) for the two chosen experts and the 2nd largest for the one left out.
    const double sd = std::log(2.0);
    std::vector<double> load(3, 0.0);
    for (int t = 0; t < 4; ++t) {
        std::vector<double> sorted = kLogits[t];
        std::sort(sorted.begin(), sorted.end(), std::greater<double>());
        for (int e = 0; e < 3; ++e) {
            const bool in_top2 = kLogits[t][e] > sorted[2];
            load[e] += normal_cdf((kLogits[t][e] - (in_top2 ? sorted[2] : sorted[1])) / sd);
        }
    }
    // Token 0 for example: e0 Phi(3/ln2), e1 Phi(1/ln2), e2 (left out) Phi((0 - 1)/ln2).
    CHECK(normal_cdf(-1 / sd) == doctest::Approx(0.0743).epsilon(1e-3));
    CHECK(r.load_loss.item() == doctest::Approx(0.2 * cv_squared(load)).epsilon(1e-9));

    // z-loss: alpha * mean_t logsumexp(logits_t)^2.
    double z = 0;
    for (const auto& row : kLogits) {
        double lse = std::log(std::exp(row[0]) + std::exp(row[1]) + std::exp(row[2]));
        z += lse * lse / 4;
    }
    CHECK(r.z_loss.item() == doctest::Approx(0.01 * z).epsilon(1e-9));

    // Switch balance: f = (3, 3, 2) / 8 counted before any capacity limit.
    std::vector<double> P(3, 0.0);
    for (const auto& row : kLogits) {
        double zsum = std::exp(row[0]) + std::exp(row[1]) + std::exp(row[2]);
        for (int e = 0; e < 3; ++e) P[e] += std::exp(row[e]) / zsum / 4;
    }
    const double balance = 0.1 * 3 * (3.0 / 8 * P[0] + 3.0 / 8 * P[1] + 2.0 / 8 * P[2]);
    CHECK(r.balance_loss.item() == doctest::Approx(balance).epsilon(1e-9));
    CHECK(r.aux_loss.item() ==
          doctest::Approx(balance + 0.5 * cv_squared(importance) + 0.2 * cv_squared(load) + 0.01 * z).epsilon(1e-9));

    // Off (alpha = 0): 0-d zeros, and aux_loss is just the balance loss.
    auto plain = hand_router(hand_config());
    Routing q = (*plain)(identity4());
    CHECK(q.importance_loss.dim() == 0);
    CHECK(q.importance_loss.item() == 0.0);
    CHECK(q.load_loss.item() == 0.0);
    CHECK(q.z_loss.item() == 0.0);
    CHECK(q.aux_loss.item() == 0.0);
}

TEST_CASE("routing losses: importance is 0 for perfectly even gates, balance unaffected by drops") {
    // Two tokens with mirrored logits give every expert the same gate sum: CV = 0.
    RouterConfig rc;
    rc.d_in = 2;
    rc.experts = 2;
    rc.k = 1;
    rc.importance_alpha = 1;
    rc.softmax_over_topk = false;
    rc.renormalize = false;
    rc.dtype = DType::Float64;
    Generator gen(0);
    TopKRouter router(rc, gen);
    set_parameter(router.weight, Tensor::from_vector(std::vector<double>{2, 0, 0, 2}, {2, 2}));
    Tensor x = Tensor::from_vector(std::vector<double>{1, 0, 0, 1}, {2, 2});
    CHECK(router(x).importance_loss.item() == doctest::Approx(0.0).epsilon(1e-12));

    RouterConfig capped = hand_config();
    capped.balance_alpha = 0.1;
    Routing free = (*hand_router(capped))(identity4());
    capped.capacity_factor = 0.25;
    Routing limited = (*hand_router(capped))(identity4());
    CHECK(limited.dropped_slots == 5);
    CHECK(limited.balance_loss.item() == doctest::Approx(free.balance_loss.item()).epsilon(1e-12));
}

// ---- noise: training only, from the router's own generator ----------------------------------------------
TEST_CASE("routing noise: noisy top-k is x W + N(0,1) * softplus(x W_noise), in training only") {
    RouterConfig rc = hand_config();
    rc.noise = RouterNoise::NoisyTopK;
    auto router = hand_router(rc, 7);
    REQUIRE(router->noise_weight.defined());
    CHECK(router->named_parameters()[1].first == "noise_weight");
    CHECK(router->noise_weight.to_vector<double>() == std::vector<double>(12, 0.0));  // Shazeer's zero init
    Generator wn(3);
    set_parameter(router->noise_weight, randn({3, 4}, wn, DType::Float64));
    Tensor x = identity4();

    // Training: the same normals a copy of the generator draws, scaled by softplus(x W_noise).
    Generator replay(0);
    replay.set_state(router->generator.state());
    Routing r = (*router)(x);
    Tensor expected = r.clean_logits + randn({4, 3}, replay, DType::Float64) * softplus(matmul(x, router->noise_weight.t()));
    CHECK(test::allclose(r.logits, expected, 1e-12, 1e-12));
    check_values(r.clean_logits, {3, 1, 0, 2, 0, 1, 0, 2, 1, 1, 4, 0});
    CHECK(router->generator.offset() == replay.offset());
    CHECK_FALSE(test::allclose(r.logits, r.clean_logits));
    // Each forward draws fresh noise.
    CHECK_FALSE(test::allclose((*router)(x).logits, r.logits));

    // Eval: no noise, no draw.
    router->eval();
    const uint64_t offset = router->generator.offset();
    Routing e = (*router)(x);
    check_values(e.logits, {3, 1, 0, 2, 0, 1, 0, 2, 1, 1, 4, 0});
    CHECK(e.indices.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 0, 2, 1, 2, 1, 0});
    CHECK(router->generator.offset() == offset);

    // Reproducible: the same seed draws the same noise.
    auto again = hand_router(rc, 7);
    set_parameter(again->noise_weight, router->noise_weight);
    CHECK((*again)(x).logits.to_vector<double>() == r.logits.to_vector<double>());
}

TEST_CASE("routing noise: Switch jitter scales the router input by U(1-eps, 1+eps), in training only") {
    RouterConfig rc = hand_config();
    rc.jitter = 0.1;
    auto router = hand_router(rc, 5);
    Tensor x = identity4() * 2.0;
    Generator replay(0);
    replay.set_state(router->generator.state());
    Routing r = (*router)(x);
    Tensor u = rand({4, 4}, replay, DType::Float64);
    Tensor jittered = x * (u * 0.2 + 0.9);
    CHECK(test::allclose(r.logits, matmul(jittered, router->weight.t()), 1e-12, 1e-12));
    CHECK(r.logits.same(r.clean_logits));  // no Shazeer noise on top
    // Every logit moved by a factor in [0.9, 1.1] (x is diagonal: one multiplier per token).
    std::vector<double> got = r.logits.to_vector<double>();
    for (int t = 0; t < 4; ++t)
        for (int e = 0; e < 3; ++e) {
            const double clean = 2 * kLogits[t][e];
            if (clean == 0) continue;
            CHECK(got[t * 3 + e] / clean >= 0.9);
            CHECK(got[t * 3 + e] / clean <= 1.1);
        }
    router->eval();
    check_values((*router)(x).logits, {6, 2, 0, 4, 0, 2, 0, 4, 2, 2, 8, 0});
}

TEST_CASE("routing noise: a deterministic router takes nothing from gen; a noisy one saves its generator") {
    // Backward compatibility: without noise, building the router draws exactly what it always did.
    Generator a(11), b(11);
    RouterConfig plain = hand_config();
    TopKRouter r1(plain, a);
    RouterConfig noisy = hand_config();
    noisy.jitter = 0.01;
    TopKRouter r2(noisy, b);
    CHECK(r1.weight.to_vector<double>() == r2.weight.to_vector<double>());
    CHECK(b.offset() == a.offset() + 2);  // the two 32-bit draws of the noise generator's seed
    CHECK(r1.extra_state().empty());
    CHECK(r2.extra_state().count("generator.seed") == 1);

    // A checkpoint round trip continues the same noise.
    MoEConfig c;
    c.d_in = 4;
    c.hidden = {5};
    c.d_out = 2;
    c.experts = 3;
    c.noise = RouterNoise::NoisyTopK;
    c.jitter = 0.05;
    Generator gen(12), gen2(99);
    SpecializedExpertNetwork moe(c, gen), other(c, gen2);
    Tensor x = randn({6, 4}, gen);
    moe(x);  // advance the generator
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("moegrad_routing_" + std::to_string(::getpid()) + ".safetensors");
    save_checkpoint(path, moe);
    load_checkpoint(path, other);
    std::filesystem::remove(path);
    CHECK(other.router->generator.offset() == moe.router->generator.offset());
    CHECK(other(x).routing.logits.to_vector<float>() == moe(x).routing.logits.to_vector<float>());

    std::map<std::string, std::string> bad = r2.extra_state();
    bad["generator.offset"] = "12x";
    CHECK_THROWS_WITH_AS(r2.set_extra_state(bad), doctest::Contains("TopKRouter: extra state 'generator.offset'"),
                         std::invalid_argument);
}

// ---- the sparse layer with a capacity limit ----------------------------------------------------------
TEST_CASE("routing layer: dropped slots contribute nothing, and the layer equals its dense reference") {
    for (DropPolicy policy : {DropPolicy::Zero, DropPolicy::Renormalize}) {
        CAPTURE((int)policy);
        Generator gen(31);
        MoEConfig c;
        c.d_in = 5;
        c.hidden = {6};
        c.d_out = 3;
        c.experts = 4;
        c.k = 2;
        c.dtype = DType::Float64;
        c.router_bias = true;
        c.capacity_factor = 1.0;
        c.drop_policy = policy;
        SpecializedExpertNetwork moe(c, gen);
        // Bias the router towards experts 0 and 1, so that they overflow.
        set_parameter(moe.router->bias, Tensor::from_vector(std::vector<double>{2, 1.5, 0, 0}, {4}));
        Tensor x = randn({16, 5}, gen, DType::Float64);
        auto out = moe(x);
        const Routing& r = out.routing;
        CHECK(r.capacity == 8);  // ceil(2 * 16 / 4)
        REQUIRE(r.dropped_slots > 0);
        for (int64_t n : r.expert_counts) CHECK(n <= 8);
        CHECK(test::allclose(out.y, moe.forward_dense_reference(x), 1e-12, 1e-12));
        CHECK(out.aux_loss.same(r.aux_loss));

        // By hand, for every token: y_t = sum over its kept slots of weight * expert(x_t).
        std::vector<int64_t> ids = r.flat_expert_ids();
        std::vector<double> w = r.weights.to_vector<double>();
        for (int64_t t = 0; t < 16; ++t) {
            Tensor row = slice(x, 0, t, t + 1);
            Tensor expected = Tensor::zeros({1, 3}, DType::Float64);
            for (int64_t j = 0; j < 2; ++j)
                if (ids[t * 2 + j] >= 0) expected = expected + moe.experts[ids[t * 2 + j]]->forward(row) * w[t * 2 + j];
                else CHECK(w[t * 2 + j] == 0.0);
            CHECK(test::allclose(slice(out.y, 0, t, t + 1), expected, 1e-12, 1e-12));
        }
    }
}

TEST_CASE("routing layer: eval uses the eval capacity factor") {
    Generator gen(32);
    MoEConfig c;
    c.d_in = 5;
    c.hidden = {6};
    c.d_out = 3;
    c.experts = 4;
    c.router_bias = true;
    c.capacity_factor = 1.0;
    c.eval_capacity_factor = 0.0;  // dropless at evaluation
    SpecializedExpertNetwork moe(c, gen);
    set_parameter(moe.router->bias, Tensor::from_vector({3.f, 3.f, 0.f, 0.f}, {4}));
    Tensor x = randn({16, 5}, gen);
    CHECK(moe(x).routing.dropped_slots > 0);
    moe.eval();
    auto out = moe(x);
    CHECK(out.routing.capacity == 0);
    CHECK(out.routing.dropped_slots == 0);
}

// ---- finite differences (float64) -------------------------------------------------------------------------
TEST_CASE("routing gradients: z-loss, importance loss, load loss and noisy gates by finite differences") {
    // E = 4, k = 2; router weights scaled up so that neighbouring logits are far apart compared
    // with eps (no top-k, threshold or priority can flip between the two sides of a difference).
    for (bool noisy : {false, true}) {
        for (bool over_topk : {true, false}) {
            CAPTURE(noisy);
            CAPTURE(over_topk);
            RouterConfig rc;
            rc.d_in = 3;
            rc.experts = 4;
            rc.k = 2;
            rc.bias = true;
            rc.dtype = DType::Float64;
            rc.softmax_over_topk = over_topk;
            rc.renormalize = false;
            rc.balance_alpha = 0.3;
            rc.importance_alpha = 0.7;
            rc.z_loss_alpha = 0.05;
            if (noisy) {
                rc.noise = RouterNoise::NoisyTopK;
                rc.load_alpha = 0.4;
                rc.jitter = 0.2;
            }
            Generator gen(41);
            TopKRouter router(rc, gen);
            set_parameter(router.weight, router.weight * 4.0);
            if (noisy) {
                Generator wn(42);
                set_parameter(router.noise_weight, randn({4, 3}, wn, DType::Float64) * 0.5);
            }
            Tensor x = test::rand_input({5, 3}, 43);
            {
                const Generator::State s = router.generator.state();
                REQUIRE(sorted_gap(router(x).logits) > 1e-3);
                router.generator.set_state(s);
            }
            check_router_gradients(router, x, [](const Routing& r) {
                return concat({r.weights.reshape({-1}), r.z_loss.reshape({1}), r.importance_loss.reshape({1}),
                               r.load_loss.reshape({1}), r.balance_loss.reshape({1}), r.aux_loss.reshape({1})},
                              0);
            });
        }
    }
}

TEST_CASE("routing gradients: capacity drops with both policies, by finite differences") {
    for (DropPolicy policy : {DropPolicy::Zero, DropPolicy::Renormalize}) {
        for (CapacityPriority priority : {CapacityPriority::FirstCome, CapacityPriority::HighestGate}) {
            CAPTURE((int)policy);
            CAPTURE((int)priority);
            RouterConfig rc;
            rc.d_in = 3;
            rc.experts = 3;
            rc.k = 2;
            rc.dtype = DType::Float64;
            rc.capacity_factor = 0.6;
            rc.drop_policy = policy;
            rc.capacity_priority = priority;
            Generator gen(51);
            TopKRouter router(rc, gen);
            set_parameter(router.weight, router.weight * 4.0);
            Tensor x = test::rand_input({6, 3}, 52);
            Routing r = router(x);
            REQUIRE(r.dropped_slots > 0);
            REQUIRE(sorted_gap(r.logits) > 1e-3);
            check_router_gradients(router, x, [](const Routing& q) { return q.weights; });
        }
    }
}

TEST_CASE("routing gradients: the whole layer with noise, jitter and a capacity limit (float64)") {
    Generator gen(61);
    MoEConfig c;
    c.d_in = 3;
    c.hidden = {4};
    c.d_out = 2;
    c.experts = 3;
    c.k = 2;
    c.act = ExpertActivation::GELU;
    c.dtype = DType::Float64;
    c.noise = RouterNoise::NoisyTopK;
    c.jitter = 0.1;
    c.capacity_factor = 0.8;
    c.drop_policy = DropPolicy::Renormalize;
    c.importance_alpha = 0.2;
    c.load_alpha = 0.2;
    c.z_loss_alpha = 0.01;
    SpecializedExpertNetwork moe(c, gen);
    set_parameter(moe.router->weight, moe.router->weight * 4.0);
    Tensor x = test::rand_input({6, 3}, 62);
    const Generator::State noise_state = moe.router->generator.state();
    {
        auto out = moe(x);
        REQUIRE(out.routing.dropped_slots > 0);
        REQUIRE(sorted_gap(out.routing.logits) > 1e-3);
    }
    std::vector<Tensor> params = moe.parameters();
    std::vector<Tensor> base;
    for (const Tensor& p : params) base.push_back(p.detach().clone());
    std::vector<Tensor> inputs{x};
    inputs.insert(inputs.end(), params.begin(), params.end());
    auto f = [&](const std::vector<Tensor>& xs) {
        for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], xs[i + 1].same(params[i]) ? base[i] : xs[i + 1]);
        moe.router->generator.set_state(noise_state);
        auto out = moe(xs[0]);
        return concat({out.y.reshape({-1}), out.aux_loss.reshape({1})}, 0);
    };
    CHECK_GRADIENTS(f, inputs);
}

// ---- errors ----------------------------------------------------------------------------------------------
TEST_CASE("routing errors: bad configurations are refused with what was expected") {
    Generator gen(0);
    auto refuses = [&](RouterConfig rc, const char* message) {
        CAPTURE(message);
        CHECK_THROWS_WITH_AS(TopKRouter(rc, gen), doctest::Contains(message), std::invalid_argument);
    };
    RouterConfig rc = hand_config();
    rc.k = 4;
    refuses(rc, "TopKRouter: k = 4 must be in [1, experts = 3]");
    rc = hand_config();
    rc.capacity_factor = -1;
    refuses(rc, "TopKRouter: capacity_factor (0 = unlimited) must be a finite number >= 0, got -1");
    rc.capacity_factor = NAN;
    refuses(rc, "TopKRouter: capacity_factor");
    rc = hand_config();
    rc.eval_capacity_factor = -0.5;
    refuses(rc, "TopKRouter: eval_capacity_factor (0 = unlimited) must be a finite number >= 0");
    rc = hand_config();
    rc.jitter = 1.0;
    refuses(rc, "TopKRouter: jitter must be in [0, 1)");
    rc.jitter = -0.1;
    refuses(rc, "TopKRouter: jitter must be in [0, 1)");
    rc = hand_config();
    rc.importance_alpha = -1;
    refuses(rc, "TopKRouter: importance_alpha must be a finite number >= 0");
    rc = hand_config();
    rc.z_loss_alpha = -1;
    refuses(rc, "TopKRouter: z_loss_alpha must be a finite number >= 0");
    rc = hand_config();
    rc.load_alpha = 0.1;
    refuses(rc, "TopKRouter: load_alpha > 0 needs noise = RouterNoise::NoisyTopK");
    rc.noise = RouterNoise::NoisyTopK;
    rc.k = 3;
    refuses(rc, "TopKRouter: load_alpha > 0 needs k < experts");
    // Through the layer, too.
    MoEConfig c;
    c.d_in = 4;
    c.hidden = {4};
    c.d_out = 2;
    c.jitter = 2;
    CHECK_THROWS_WITH_AS(SpecializedExpertNetwork(c, gen), doctest::Contains("TopKRouter: jitter"), std::invalid_argument);
}

TEST_CASE("routing layer: an empty batch with every option on") {
    Generator gen(71);
    MoEConfig c;
    c.d_in = 4;
    c.hidden = {5};
    c.d_out = 2;
    c.experts = 3;
    c.noise = RouterNoise::NoisyTopK;
    c.jitter = 0.1;
    c.capacity_factor = 1.0;
    c.importance_alpha = c.load_alpha = c.z_loss_alpha = 0.1;
    SpecializedExpertNetwork moe(c, gen);
    auto out = moe(Tensor::zeros({0, 4}));
    CHECK(out.y.shape() == Shape{0, 2});
    CHECK(out.routing.capacity == 0);
    CHECK(out.routing.dropped_fraction() == 0.0);
    CHECK(out.aux_loss.item() == 0.0);
}
