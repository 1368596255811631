// tests/test_optim.cpp: SGD, Adam, AdamW, clip_grad_norm and the warmup + cosine schedule against
// values worked out by hand (each in a comment). The same numbers come out of PyTorch 1.13:
//     p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
//     opt = torch.optim.Adam([p], lr=0.1)          # or SGD(..., momentum=0.9, weight_decay=0.1), AdamW
//     for g in [0.5, -1.0, 2.0]: p.grad = torch.tensor([g], dtype=torch.float64); opt.step(); print(p.item())
#include <cmath>

#include "helpers.h"
#include "nn/optim.h"

using namespace mg;
using namespace mg::nn;

namespace {
// A one-element float64 parameter holding `value`.
Tensor scalar_param(double value) {
    Tensor p = Tensor::from_vector(std::vector<double>{value}, {1});
    p.set_requires_grad(true);
    return p;
}
void set_grad(const Tensor& p, double g) { p.set_grad(Tensor::from_vector(std::vector<double>{g}, {1})); }
double value(const Tensor& p) { return p.to_vector<double>()[0]; }
}  // namespace

TEST_CASE("optim SGD with momentum and weight decay: three steps by hand") {
    // lr = 0.1, momentum = 0.9, weight_decay = 0.1, p0 = 1, gradient 0.5 every step.
    //   step 1: d = 0.5 + 0.1*1     = 0.6      buf = d (first step)       = 0.6
    //           p = 1 - 0.1*0.6                                          = 0.94
    //   step 2: d = 0.5 + 0.1*0.94  = 0.594    buf = 0.9*0.6 + 0.594      = 1.134
    //           p = 0.94 - 0.1*1.134                                     = 0.8266
    //   step 3: d = 0.5 + 0.08266   = 0.58266  buf = 0.9*1.134 + 0.58266  = 1.60326
    //           p = 0.8266 - 0.160326                                    = 0.666274
    for (bool generic : {false, true}) {
        Tensor p = scalar_param(1.0);
        SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1});
        opt.use_generic_path = generic;
        const double expected[3] = {0.94, 0.8266, 0.666274};
        for (int s = 0; s < 3; ++s) {
            set_grad(p, 0.5);
            opt.step();
            CHECK(value(p) == doctest::Approx(expected[s]).epsilon(1e-12));
        }
        CHECK(opt.state()[0].buffers.at("momentum_buffer").item() == doctest::Approx(1.60326).epsilon(1e-12));
    }
}

TEST_CASE("optim SGD nesterov and plain SGD by hand") {
    // Nesterov, lr = 0.1, momentum = 0.9, gradient 0.5:
    //   step 1: buf = 0.5;               d = 0.5 + 0.9*0.5   = 0.95;   p = 1 - 0.095       = 0.905
    //   step 2: buf = 0.45 + 0.5 = 0.95; d = 0.5 + 0.9*0.95  = 1.355;  p = 0.905 - 0.1355  = 0.7695
    //   step 3: buf = 1.355;             d = 0.5 + 0.9*1.355 = 1.7195; p = 0.7695 - 0.17195 = 0.59755
    Tensor p = scalar_param(1.0);
    SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
    for (double e : {0.905, 0.7695, 0.59755}) {
        set_grad(p, 0.5);
        opt.step();
        CHECK(value(p) == doctest::Approx(e).epsilon(1e-12));
    }
    // Plain SGD: p -= lr * g. A parameter without a gradient is skipped.
    Tensor q = scalar_param(2.0), untouched = scalar_param(3.0);
    SGD plain({q, untouched}, {.lr = 0.5});
    CHECK(plain.state_keys().empty());
    set_grad(q, 1.0);
    plain.step();
    CHECK(value(q) == 1.5);
    CHECK(value(untouched) == 3.0);
    CHECK(plain.state()[1].step == 0);
}

TEST_CASE("optim Adam: three steps by hand") {
    // lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, p0 = 1, gradients 0.5, -1, 2.
    //   step 1: m = 0.1*0.5 = 0.05;  v = 0.001*0.25 = 0.00025
    //           m_hat = 0.05/(1-0.9) = 0.5;  v_hat = 0.00025/(1-0.999) = 0.25
    //           p = 1 - 0.1 * 0.5/(sqrt(0.25) + 1e-8) = 1 - 0.1*(1 - 2e-8)             = 0.900000002
    //   step 2: m = 0.045 - 0.1 = -0.055;  v = 0.999*0.00025 + 0.001*1 = 0.00124975
    //           m_hat = -0.055/0.19 = -0.28947368;  v_hat = 0.00124975/0.001999 = 0.62518759
    //           p = 0.900000002 + 0.1*0.28947368/0.79068805                        = 0.936610354241
    //   step 3: m = -0.0495 + 0.2 = 0.1505;  v = 0.999*0.00124975 + 0.001*4 = 0.00524850025
    //           m_hat = 0.1505/0.271 = 0.55535055;  v_hat = 0.00524850025/0.002997001 = 1.75125738
    //           p = 0.936610354241 - 0.1*0.55535055/1.32335081                     = 0.894644792718
    for (bool generic : {false, true}) {
        Tensor p = scalar_param(1.0);
        Adam opt({p}, {.lr = 0.1});
        opt.use_generic_path = generic;
        const double grads[3] = {0.5, -1.0, 2.0};
        const double expected[3] = {0.900000002, 0.936610354241, 0.894644792718};
        for (int s = 0; s < 3; ++s) {
            set_grad(p, grads[s]);
            opt.step();
            CHECK(value(p) == doctest::Approx(expected[s]).epsilon(1e-11));
        }
        CHECK(opt.state()[0].step == 3);
        CHECK(opt.state()[0].buffers.at("exp_avg").item() == doctest::Approx(0.1505).epsilon(1e-12));
        CHECK(opt.state()[0].buffers.at("exp_avg_sq").item() == doctest::Approx(0.00524850025).epsilon(1e-12));
    }
}

TEST_CASE("optim Adam with L2 weight decay and AdamW with decoupled decay: by hand") {
    // Adam, weight_decay = 0.1 (added to the gradient): step 1: g = 0.5 + 0.1*1 = 0.6,
    //   m = 0.06, v = 0.00036, m_hat = 0.6, v_hat = 0.36, p = 1 - 0.1*0.6/(0.6 + 1e-8) = 0.900000001667
    //   step 2: g = -1 + 0.09 = -0.91 -> p = 0.925263519446;  step 3: g = 2.0925 -> p = 0.877617260805
    // AdamW, weight_decay = 0.1: p *= 1 - 0.1*0.1 = 0.99 first, then Adam with the plain gradient:
    //   step 1: p = 0.99 - 0.099999998 = 0.890000002
    //   step 2: p = 0.99*0.890000002 + 0.036610352 = 0.917710354221;  step 3: p = 0.866567689156
    for (bool generic : {false, true}) {
        Tensor p = scalar_param(1.0), q = scalar_param(1.0);
        Adam adam({p}, {.lr = 0.1, .weight_decay = 0.1});
        AdamW adamw({q}, {.lr = 0.1, .weight_decay = 0.1});
        adam.use_generic_path = adamw.use_generic_path = generic;
        CHECK(adamw.type_name() == "AdamW");
        const double grads[3] = {0.5, -1.0, 2.0};
        const double adam_expected[3] = {0.900000001667, 0.925263519446, 0.877617260805};
        const double adamw_expected[3] = {0.890000002, 0.917710354221, 0.866567689156};
        for (int s = 0; s < 3; ++s) {
            set_grad(p, grads[s]);
            set_grad(q, grads[s]);
            adam.step();
            adamw.step();
            CHECK(value(p) == doctest::Approx(adam_expected[s]).epsilon(1e-11));
            CHECK(value(q) == doctest::Approx(adamw_expected[s]).epsilon(1e-11));
        }
    }
}

TEST_CASE("optim loop path and engine-ops path agree on float32 tensors") {
    auto run = [&](bool generic, int which) {
        Generator g(42);
        Tensor w = randn({37, 5}, g);
        w.set_requires_grad(true);
        std::unique_ptr<Optimizer> opt;
        if (which == 0) opt = std::make_unique<SGD>(std::vector<Tensor>{w}, SGDConfig{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
        if (which == 1) opt = std::make_unique<Adam>(std::vector<Tensor>{w}, AdamConfig{.lr = 0.01, .weight_decay = 0.01});
        if (which == 2) opt = std::make_unique<AdamW>(std::vector<Tensor>{w}, AdamWConfig{.lr = 0.01});
        opt->use_generic_path = generic;
        for (int s = 0; s < 4; ++s) {
            w.set_grad(randn({37, 5}, g));
            opt->step();
        }
        return w.detach().clone();
    };
    for (int which = 0; which < 3; ++which) {
        INFO("optimizer " << which);
        CHECK(test::allclose(run(false, which), run(true, which), 1e-5, 1e-6));
    }
}

TEST_CASE("optim updates keep the parameter handle and work after backward") {
    Generator gen(3);
    Tensor w = randn({3, 2}, gen, DType::Float64);
    w.set_requires_grad(true);
    Tensor before = w.detach().clone();
    Adam opt({w}, {.lr = 0.01});
    Tensor loss = mg::sum(w * w);
    loss.backward();
    opt.step();
    // Adam's first step moves every coordinate by lr * sign(g) (up to eps): here g = 2w.
    std::vector<double> b = before.to_vector<double>(), a = w.to_vector<double>();
    for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i] - 0.01 * (b[i] > 0 ? 1 : -1)).epsilon(1e-6));
    CHECK(w.requires_grad());
    opt.zero_grad();
    CHECK_FALSE(w.grad().defined());
}

TEST_CASE("optim rejects bad configurations and parameters") {
    Tensor p = scalar_param(1.0);
    CHECK_THROWS_AS(Adam({p}, {.beta1 = 1.0}), std::invalid_argument);
    CHECK_THROWS_AS(SGD({p}, {.lr = -1}), std::invalid_argument);
    CHECK_THROWS_AS(SGD({p}, {.nesterov = true}), std::invalid_argument);
    CHECK_THROWS_AS(SGD({p, p}), std::invalid_argument);
    Tensor not_leaf = p * 2.0;
    CHECK_THROWS_AS(SGD({not_leaf}), std::invalid_argument);
}

TEST_CASE("optim clip_grad_norm: global norm by hand") {
    // grads [3, 4] and [12]: total = sqrt(9 + 16 + 144) = 13. max_norm 6.5 scales every gradient by
    // 6.5 / (13 + 1e-6) ~ 0.5: [1.5, 2] and [6] (torch.nn.utils.clip_grad_norm_ gives the same).
    Tensor a = Tensor::from_vector({3.f, 4.f}, {2}), b = Tensor::from_vector({12.f}, {1});
    a.set_requires_grad(true);
    b.set_requires_grad(true);
    a.set_grad(Tensor::from_vector({3.f, 4.f}, {2}));
    b.set_grad(Tensor::from_vector({12.f}, {1}));
    Tensor c = Tensor::from_vector({1.f}, {1});
    c.set_requires_grad(true);  // no gradient: ignored
    CHECK(clip_grad_norm({a, b, c}, 20.0) == doctest::Approx(13.0));
    test::check_values(a.grad(), {3, 4});  // under max_norm: unchanged
    CHECK(clip_grad_norm({a, b, c}, 6.5) == doctest::Approx(13.0));
    test::check_values(a.grad(), {1.5, 2.0});
    test::check_values(b.grad(), {6.0});
    CHECK(clip_grad_norm({a, b}, 100.0) == doctest::Approx(6.5).epsilon(1e-6));
}

TEST_CASE("optim clip_grad_norm: the float64 sum of each gradient's float32 sum of squares, in order") {
    // The total is added up where the gradients are and read once; on the CPU it must be exactly
    // the double a loop over item() values gives (float32 sums of squares, added in a double in
    // parameter order), so that runs are bitwise the same as before.
    Generator gen(5);
    std::vector<Tensor> params;
    double expected = 0.0;
    for (int64_t n : {7, 1000, 33, 1}) {
        Tensor p = randn({n}, gen);
        p.set_requires_grad(true);
        Tensor g = randn({n}, gen) * 3.0;
        p.set_grad(g);
        expected += sum(g * g).item();
        params.push_back(p);
    }
    CHECK(clip_grad_norm(params, 1e9) == std::sqrt(expected));  // bitwise, no tolerance
    CHECK(clip_grad_norm({}, 1.0) == 0.0);                      // nothing to clip
}

TEST_CASE("optim warmup + cosine schedule by hand") {
    // lr 1, min_lr 0.1, warmup 4, total 12:
    //   step 0: 0;  step 2: 1 * 2/4 = 0.5;  step 4: progress 0 -> 1.0
    //   step 8: progress (8-4)/8 = 0.5 -> 0.1 + 0.9 * (1 + cos(pi/2))/2 = 0.55
    //   step 10: progress 0.75 -> 0.1 + 0.45 * (1 + cos(3pi/4)) = 0.1 + 0.45 * 0.29289 = 0.231802
    //   step 12 and after: 0.1
    WarmupCosine sched({.lr = 1.0, .min_lr = 0.1, .warmup_steps = 4, .total_steps = 12});
    CHECK(sched.lr_at(0) == 0.0);
    CHECK(sched.lr_at(2) == doctest::Approx(0.5));
    CHECK(sched.lr_at(4) == doctest::Approx(1.0));
    CHECK(sched.lr_at(8) == doctest::Approx(0.55));
    CHECK(sched.lr_at(10) == doctest::Approx(0.23180194846605365));
    CHECK(sched.lr_at(12) == doctest::Approx(0.1));
    CHECK(sched.lr_at(1000) == doctest::Approx(0.1));
    for (int s = 4; s < 12; ++s) CHECK(sched.lr_at(s + 1) <= sched.lr_at(s));  // decays monotonically
    Tensor p = scalar_param(1.0);
    SGD opt({p}, {.lr = 123});
    CHECK(sched.apply(opt, 2) == doctest::Approx(0.5));
    CHECK(opt.lr() == doctest::Approx(0.5));
    // No warmup: starts at the peak.
    CHECK(warmup_cosine_lr(0, {.lr = 2.0, .warmup_steps = 0, .total_steps = 10}) == doctest::Approx(2.0));
    CHECK_THROWS_AS(WarmupCosine({.warmup_steps = 10, .total_steps = 5}), std::invalid_argument);
}

TEST_CASE("optim state tensors round-trip and are validated") {
    Tensor p = scalar_param(1.0);
    Tensor q = Tensor::zeros({2, 3}, DType::Float64);
    q.set_requires_grad(true);
    Adam opt({p, q}, {.lr = 0.1});
    set_grad(p, 0.5);
    opt.step();  // only p has a gradient: only p has state
    auto named = opt.state_tensors();
    REQUIRE(named.size() == 3);  // 0.step, 0.exp_avg, 0.exp_avg_sq
    std::map<std::string, Tensor> state(named.begin(), named.end());
    CHECK(state.at("0.step").item() == 1);

    Tensor p2 = scalar_param(1.0), q2 = Tensor::zeros({2, 3}, DType::Float64);
    q2.set_requires_grad(true);
    Adam other({p2, q2}, {.lr = 0.1});
    other.load_state_tensors(state);
    CHECK(other.state()[0].step == 1);
    CHECK(other.state()[0].buffers.at("exp_avg").item() == doctest::Approx(0.05));
    CHECK(other.state()[1].step == 0);

    auto bad = state;
    bad["1.exp_avg"] = Tensor::zeros({3, 2}, DType::Float64);  // wrong shape, and no step
    CHECK_THROWS_WITH_AS(other.check_state_tensors(bad), doctest::Contains("shape"), std::invalid_argument);
    bad = state;
    bad.erase("0.exp_avg_sq");
    CHECK_THROWS_WITH_AS(other.check_state_tensors(bad), doctest::Contains("exp_avg_sq"), std::invalid_argument);
    bad = state;
    bad["7.step"] = Tensor::scalar(1, DType::Int64);
    CHECK_THROWS_WITH_AS(other.check_state_tensors(bad), doctest::Contains("2 parameters"), std::invalid_argument);
    bad = state;
    bad["0.momentum_buffer"] = Tensor::zeros({1}, DType::Float64);
    CHECK_THROWS_AS(other.check_state_tensors(bad), std::invalid_argument);
}

TEST_CASE("adam_update_: one step by hand, and clear errors for mismatched state") {
    // p = 1, g = 0.5, m = v = 0, beta1 0.9, beta2 0.999, lr 0.1, step 1 (bias corrections 0.1 and 0.001):
    // m = 0.05, v = 0.00025, m_hat = 0.5, v_hat = 0.25, p = 1 - 0.1 * 0.5 / (0.5 + 1e-8).
    Tensor p = Tensor::ones({3}), g = Tensor::full({3}, 0.5), m = Tensor::zeros({3}), v = Tensor::zeros({3});
    mg::adam_update_(p, g, m, v,
                     {.step_size = 0.1 / 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .decay = 1.0, .l2 = 0.0,
                      .inv_sqrt_bias_correction2 = 1.0 / std::sqrt(0.001)});
    CHECK(m.at({1}) == doctest::Approx(0.05).epsilon(1e-6));
    CHECK(v.at({1}) == doctest::Approx(0.00025).epsilon(1e-6));
    CHECK(p.at({2}) == doctest::Approx(1.0 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-6));
    CHECK_THROWS_WITH_AS(mg::adam_update_(p, Tensor::zeros({4}), m, v, {}),
                         doctest::Contains("adam_update_: grad, m and v must match the parameter [3]"),
                         std::invalid_argument);
    Tensor wide = Tensor::zeros({3, 2});
    CHECK_THROWS_WITH_AS(mg::adam_update_(wide.t(), wide.t(), wide.t(), wide.t(), {}), doctest::Contains("contiguous"),
                         std::invalid_argument);
}
