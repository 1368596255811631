// tests/test_moe.cpp: the MoE core of nn/moe.h. The router on numbers worked by hand; the sparse
// layer against its dense reference (values and gradients, float32 and float64); finite
// differences through the whole layer; determinism; and the error messages.
#include <cmath>

#include "nn/moe.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn;
using mg::test::grad_or_zeros;
using mg::test::set_parameter;
using mg::test::topk_margin;
using mg::test::check_values;

namespace {
MoEConfig tiny_config(DType dtype, int64_t k = 2, ExpertActivation act = ExpertActivation::ReLU) {
    MoEConfig c;
    c.d_in = 5;
    c.hidden = {7, 6};
    c.d_out = 3;
    c.experts = 4;
    c.k = k;
    c.balance_alpha = 0.01;
    c.act = act;
    c.dtype = dtype;
    return c;
}

}  // namespace

TEST_CASE("moe router: logits, top-k, gate weights and balance loss worked by hand") {
    Generator gen(0);
    RouterConfig rc;
    rc.d_in = 2;
    rc.experts = 3;
    rc.k = 2;
    rc.balance_alpha = 0.1;
    TopKRouter router(rc, gen);
    // W (E=3, d_in=2); x = identity, so logits = W^T's rows: token 0 -> (1, 0, 3), token 1 -> (0, 2, -1).
    set_parameter(router.weight, Tensor::from_vector({1.f, 0.f, 0.f, 2.f, 3.f, -1.f}, {3, 2}));
    Tensor x = Tensor::from_vector({1.f, 0.f, 0.f, 1.f}, {2, 2});
    Routing r = router(x);
    check_values(r.logits, {1, 0, 3, 0, 2, -1});
    // Top-2, best first: token 0 -> experts (2, 0), logits (3, 1); token 1 -> (1, 0), logits (2, 0).
    CHECK(r.indices.dtype() == DType::Int64);
    CHECK(r.indices.to_vector<int64_t>() == std::vector<int64_t>{2, 0, 1, 0});
    // softmax of two logits 2 apart: (1 / (1 + e^-2), 1 / (1 + e^2)) = (0.880797, 0.119203).
    const double hi = 1.0 / (1.0 + std::exp(-2.0)), lo = 1.0 - hi;
    check_values(r.weights, {hi, lo, hi, lo});
    // Slots: expert 0 twice, experts 1 and 2 once: f = (1/2, 1/4, 1/4).
    CHECK(r.expert_counts == std::vector<int64_t>{2, 1, 1});
    // P = mean over tokens of softmax(logits); loss = alpha * E * sum_e f_e P_e.
    auto softmax3 = [](double a, double b, double c) {
        double z = std::exp(a) + std::exp(b) + std::exp(c);
        return std::vector<double>{std::exp(a) / z, std::exp(b) / z, std::exp(c) / z};
    };
    std::vector<double> p0 = softmax3(1, 0, 3), p1 = softmax3(0, 2, -1), f{0.5, 0.25, 0.25};
    check_values(r.probs, {p0[0], p0[1], p0[2], p1[0], p1[1], p1[2]});
    double expected = 0;
    for (int e = 0; e < 3; ++e) expected += f[e] * 0.5 * (p0[e] + p1[e]);
    expected *= 0.1 * 3;
    CHECK(r.balance_loss.dim() == 0);
    CHECK(r.balance_loss.item() == doctest::Approx(expected).epsilon(1e-6));
    CHECK(r.flat_expert_ids() == std::vector<int64_t>{2, 0, 1, 0});

    // softmax over all, then renormalise: the same numbers. Without renormalising: the raw probs.
    rc.softmax_over_topk = false;
    TopKRouter renorm(rc, gen);
    set_parameter(renorm.weight, router.weight);
    check_values(renorm(x).weights, {hi, lo, hi, lo});
    rc.renormalize = false;
    TopKRouter raw(rc, gen);
    set_parameter(raw.weight, router.weight);
    check_values(raw(x).weights, {p0[2], p0[0], p1[1], p1[0]});

    // alpha = 0 turns the loss off (a 0-d zero, so that `loss + out.balance_loss` still works).
    rc.balance_alpha = 0;
    TopKRouter off(rc, gen);
    CHECK(off(x).balance_loss.item() == 0.0);
}

TEST_CASE("moe router: balance loss is alpha when routing is perfectly even") {
    // f_e = P_e = 1/E for all e gives alpha * E * E * (1/E)^2 = alpha: the loss's minimum.
    Generator gen(0);
    RouterConfig rc;
    rc.d_in = 4;
    rc.experts = 4;
    rc.k = 1;
    rc.balance_alpha = 0.5;
    TopKRouter router(rc, gen);
    // Token t sends a large logit to expert t and equal small ones elsewhere, so P is uniform.
    set_parameter(router.weight, Tensor::zeros({4, 4}));
    Tensor x = Tensor::zeros({4, 4});
    { NoGradGuard g; x.copy_(Tensor::from_vector({1.f, 0, 0, 0, 0, 1.f, 0, 0, 0, 0, 1.f, 0, 0, 0, 0, 1.f}, {4, 4})); }
    set_parameter(router.weight, Tensor::from_vector({3.f, 0, 0, 0, 0, 3.f, 0, 0, 0, 0, 3.f, 0, 0, 0, 0, 3.f}, {4, 4}));
    Routing r = router(x);
    CHECK(r.expert_counts == std::vector<int64_t>{1, 1, 1, 1});
    CHECK(r.balance_loss.item() == doctest::Approx(0.5).epsilon(1e-6));
}

TEST_CASE("moe expert layer: shapes, parameter names and torch.nn.Linear init bounds") {
    Generator gen(3);
    ExpertLayer expert({20, {64, 32}, 3, ExpertActivation::ReLU, DType::Float32}, gen);
    auto named = expert.named_parameters();
    REQUIRE(named.size() == 6);
    CHECK(named[0].first == "layers.0.weight");
    CHECK(named[0].second.shape() == Shape{64, 20});
    CHECK(named[5].first == "layers.2.bias");
    CHECK(named[5].second.shape() == Shape{3});
    CHECK(expert.num_parameters() == 20 * 64 + 64 + 64 * 32 + 32 + 32 * 3 + 3);
    CHECK(expert.flops_per_token() == 2 * (20 * 64 + 64 * 32 + 32 * 3));
    for (auto& [name, p] : named) {
        const double fan_in = (double)(name.find("layers.0") == 0 ? 20 : name.find("layers.1") == 0 ? 64 : 32);
        std::vector<double> v = p.to_vector<double>();
        double largest = 0;
        for (double value : v) largest = std::max(largest, std::abs(value));
        CHECK(largest <= 1.0 / std::sqrt(fan_in));
        CHECK(largest > 0.5 / std::sqrt(fan_in));  // actually spread over the interval
    }
    Generator data(4);
    CHECK(expert(randn({10, 20}, data)).shape() == Shape{10, 3});
}

TEST_CASE("moe layer: sparse equals the dense reference, values and gradients") {
    for (DType dtype : {DType::Float32, DType::Float64}) {
        for (int64_t k : {1, 2, 3}) {
            CAPTURE(dtype_name(dtype));
            CAPTURE(k);
            Generator gen(11);
            SpecializedExpertNetwork moe(tiny_config(dtype, k), gen);
            Tensor x = randn({33, 5}, gen, dtype);
            x.set_requires_grad(true);
            Tensor w = randn({33, 3}, gen, dtype);

            auto out = moe(x);
            CHECK(out.y.shape() == Shape{33, 3});
            (sum(out.y * w) + out.balance_loss).backward();
            std::vector<Tensor> sparse_grads{x.grad()};
            for (const Tensor& p : moe.parameters()) sparse_grads.push_back(grad_or_zeros(p));

            x.zero_grad();
            moe.zero_grad();
            Tensor dense = moe.forward_dense_reference(x);
            (sum(dense * w) + moe.router->forward(x).balance_loss).backward();
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

TEST_CASE("moe layer: experts that get no tokens") {
    // A router bias that sends every token to experts 0 and 1 leaves 2 and 3 empty: their groups
    // are skipped, they get no gradient, and the output still equals the dense reference.
    Generator gen(5);
    MoEConfig c = tiny_config(DType::Float64);
    c.router_bias = true;
    SpecializedExpertNetwork moe(c, gen);
    set_parameter(moe.router->bias, Tensor::from_vector(std::vector<double>{50, 50, -50, -50}, {4}));
    Tensor x = randn({9, 5}, gen, DType::Float64);
    auto out = moe(x);
    CHECK(out.routing.expert_counts == std::vector<int64_t>{9, 9, 0, 0});
    CHECK(test::allclose(out.y, moe.forward_dense_reference(x), 1e-12, 1e-12));
    sum(out.y).backward();
    CHECK(moe.experts[0]->weights[0].grad().defined());
    CHECK_FALSE(moe.experts[2]->weights[0].grad().defined());
}

TEST_CASE("moe layer: finite-difference gradients of the whole layer (float64)") {
    // y and the balance loss, wrt x and every parameter. GELU (no kinks) and a router scaled up
    // so that the k-th and (k+1)-th logits are far apart compared with eps: top-k cannot flip.
    for (int64_t k : {1, 2}) {
        CAPTURE(k);
        Generator gen(21);
        MoEConfig c;
        c.d_in = 3;
        c.hidden = {4};
        c.d_out = 2;
        c.experts = 3;
        c.k = k;
        c.balance_alpha = 0.3;
        c.act = ExpertActivation::GELU;
        c.dtype = DType::Float64;
        SpecializedExpertNetwork moe(c, gen);
        set_parameter(moe.router->weight, moe.router->weight * 4.0);
        Tensor x = test::rand_input({6, 3}, 22);
        REQUIRE(topk_margin(moe.router->forward(x).logits, k) > 1e-3);

        std::vector<Tensor> params = moe.parameters();
        std::vector<Tensor> base;
        for (const Tensor& p : params) base.push_back(p.detach().clone());
        std::vector<Tensor> inputs{x};
        inputs.insert(inputs.end(), params.begin(), params.end());
        // gradcheck passes fresh tensors for the perturbed input; copy them into the module.
        auto f = [&](const std::vector<Tensor>& xs) {
            for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], xs[i + 1].same(params[i]) ? base[i] : xs[i + 1]);
            auto out = moe(xs[0]);
            return concat({out.y.reshape({-1}), out.balance_loss.reshape({1})}, 0);
        };
        CHECK_GRADIENTS(f, inputs);
        for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], base[i]);
    }
}

TEST_CASE("moe layer: deterministic, and serial and parallel schedules agree bitwise") {
    Generator gen(8);
    MoEConfig c = tiny_config(DType::Float32);
    c.d_in = 16;
    c.hidden = {32};
    c.d_out = 8;
    c.experts = 6;
    SpecializedExpertNetwork moe(c, gen);
    Tensor x = randn({200, 16}, gen);
    std::vector<float> first = moe(x).y.to_vector<float>();
    CHECK(moe(x).y.to_vector<float>() == first);
    for (ExpertSchedule schedule : {ExpertSchedule::Serial, ExpertSchedule::Parallel}) {
        Generator same(8);
        c.schedule = schedule;
        SpecializedExpertNetwork other(c, same);
        CHECK(other(x).y.to_vector<float>() == first);
    }
}

TEST_CASE("moe layer: the grouped schedule (one grouped_matmul per layer) gives the serial schedule's outputs and gradients") {
    // float64, so the only difference allowed is summation order inside the products.
    for (double capacity : {0.0, 1.0}) {  // dropless, and a capacity that drops slots
        INFO("capacity factor " << capacity);
        MoEConfig c = tiny_config(DType::Float64);
        c.d_in = 6;
        c.hidden = {7, 5};
        c.d_out = 3;
        c.experts = 5;
        c.capacity_factor = capacity;
        c.act = ExpertActivation::GELU;
        Generator g1(21), g2(21), data(22);
        c.schedule = ExpertSchedule::Serial;
        SpecializedExpertNetwork serial(c, g1);
        c.schedule = ExpertSchedule::Grouped;
        SpecializedExpertNetwork grouped(c, g2);
        Tensor x = randn({40, 6}, data, DType::Float64);
        auto a = serial(x), b = grouped(x);
        if (capacity > 0) CHECK(a.routing.dropped_slots > 0);
        CHECK(mg::test::allclose(b.y, a.y, 1e-12, 1e-12));
        sum(a.y * a.y).backward();
        sum(b.y * b.y).backward();
        auto pa = serial.named_parameters(), pb = grouped.named_parameters();
        for (size_t i = 0; i < pa.size(); ++i) {
            INFO(pa[i].first);
            CHECK(mg::test::allclose(grad_or_zeros(pb[i].second), grad_or_zeros(pa[i].second), 1e-10, 1e-12));
        }
    }
}

TEST_CASE("moe layer: the parallel schedule respects NoGradGuard and records under grad") {
    Generator gen(9);
    MoEConfig c = tiny_config(DType::Float32);
    c.schedule = ExpertSchedule::Parallel;
    SpecializedExpertNetwork moe(c, gen);
    Tensor x = randn({40, 5}, gen);
    {
        NoGradGuard no_grad;
        CHECK_FALSE(moe(x).y.requires_grad());
    }
    auto out = moe(x);
    CHECK(out.y.requires_grad());
    sum(out.y).backward();
    for (auto& expert : moe.experts) CHECK(expert->weights[0].grad().defined());
}

TEST_CASE("moe layer: active parameters count the router and k experts") {
    Generator gen(1);
    MoEConfig c;
    c.d_in = 20;
    c.hidden = {64, 32};
    c.d_out = 3;
    c.experts = 4;
    c.k = 2;
    SpecializedExpertNetwork moe(c, gen);  // demo 01's layer
    const int64_t expert = 20 * 64 + 64 + 64 * 32 + 32 + 32 * 3 + 3, router = 4 * 20;
    CHECK(moe.num_parameters() == router + 4 * expert);
    CHECK(moe.active_parameters() == router + 2 * expert);
    auto named = moe.named_parameters();
    CHECK(named.front().first == "router.weight");
    CHECK(named.back().first == "experts.3.layers.2.bias");
}

TEST_CASE("moe errors name the module and the shapes") {
    Generator gen(0);
    MoEConfig c = tiny_config(DType::Float32);
    c.k = 5;
    CHECK_THROWS_WITH_AS(SpecializedExpertNetwork(c, gen), doctest::Contains("TopKRouter: k = 5 must be in [1, experts = 4]"),
                         std::invalid_argument);
    c.k = 2;
    SpecializedExpertNetwork moe(c, gen);
    CHECK_THROWS_WITH_AS(moe(Tensor::zeros({3, 4})),
                         doctest::Contains("SpecializedExpertNetwork: expected input of shape (tokens, 5), got [3, 4]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(moe.forward_dense_reference(Tensor::zeros({5})), doctest::Contains("got [5]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(moe(Tensor::zeros({3, 5}, DType::Float64)), doctest::Contains("float64"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(moe.router->forward(Tensor::zeros({2, 6})), doctest::Contains("TopKRouter: expected input"),
                         std::invalid_argument);
    c.capacity_factor = -1.25;  // the router options' own errors: tests/test_routing.cpp
    CHECK_THROWS_WITH_AS(SpecializedExpertNetwork(c, gen), doctest::Contains("TopKRouter: capacity_factor"),
                         std::invalid_argument);
}
