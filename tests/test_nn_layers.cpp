// tests/test_nn_layers.cpp: Module bookkeeping and the basic layers (Linear, Embedding, LayerNorm,
// Dropout, FeedForward): shapes, names, PyTorch's default initialisation, forward values computed
// by hand or by plain loops, and gradients by finite differences.
#include <cmath>

#include "helpers.h"
#include "nn/init.h"
#include "nn/layers.h"

using namespace mg;
using namespace mg::nn;

namespace {
// A model with nesting, to test names and traversal: embed -> ffn -> norm.
class Tiny : public Module {
public:
    explicit Tiny(Generator& gen) {
        embed = register_module("embed", std::make_shared<Embedding>(10, 4, gen));
        ffn = register_module("ffn", std::make_shared<FeedForward>(FeedForwardConfig{.d_in = 4, .hidden = {6}, .dropout = 0.5}, gen));
        norm = register_module("norm", std::make_shared<LayerNorm>(4));
    }
    std::shared_ptr<Embedding> embed;
    std::shared_ptr<FeedForward> ffn;
    std::shared_ptr<LayerNorm> norm;
};

double max_abs(const Tensor& t) {
    double m = 0;
    for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
    return m;
}
}  // namespace

TEST_CASE("Linear: shapes, names and torch's default init bounds") {
    Generator gen(1);
    Linear fc(20, 64, gen);
    CHECK(fc.weight.shape() == Shape{64, 20});  // (out, in) as in PyTorch
    CHECK(fc.bias.shape() == Shape{64});
    CHECK(fc.num_parameters() == 20 * 64 + 64);
    auto named = fc.named_parameters();
    REQUIRE(named.size() == 2);
    CHECK(named[0].first == "weight");
    CHECK(named[1].first == "bias");
    CHECK(fc.weight.requires_grad());
    // kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(20), 1/sqrt(20)) for weight and bias alike. With 1280
    // draws the extremes come close to the bound and the mean is near 0.
    double bound = 1.0 / std::sqrt(20.0);
    CHECK(max_abs(fc.weight) <= bound);
    CHECK(max_abs(fc.weight) > 0.95 * bound);
    CHECK(max_abs(fc.bias) <= bound);
    CHECK(std::abs(fc.weight.mean().item()) < 0.02);
    // Uniform on [-b, b] has variance b^2/3.
    double var = mg::mean(fc.weight * fc.weight).item();
    CHECK(var == doctest::Approx(bound * bound / 3).epsilon(0.1));
    // The general formula gives the same bound.
    Generator g1(5), g2(5);
    CHECK(test::allclose(init::kaiming_uniform({3, 20}, 20, std::sqrt(5.0), g1), init::uniform({3, 20}, -bound, bound, g2)));

    Linear no_bias(3, 2, gen, {.bias = false});
    CHECK_FALSE(no_bias.bias.defined());
    CHECK(no_bias.num_parameters() == 6);
    CHECK_THROWS_AS(Linear(0, 2, gen), std::invalid_argument);
}

TEST_CASE("Linear: the same seed gives the same weights") {
    Generator a(123), b(123), c(124);
    Linear la(5, 3, a), lb(5, 3, b), lc(5, 3, c);
    CHECK(la.weight.to_vector<float>() == lb.weight.to_vector<float>());
    CHECK(la.bias.to_vector<float>() == lb.bias.to_vector<float>());
    CHECK(la.weight.to_vector<float>() != lc.weight.to_vector<float>());
}

TEST_CASE("Linear: forward is x W^T + b, for 1-d, 2-d and 3-d inputs") {
    Generator gen(2);
    Linear fc(3, 2, gen, {.dtype = DType::Float64});
    Tensor x = randn({2, 4, 3}, gen, DType::Float64);
    Tensor y = fc(x);
    REQUIRE(y.shape() == Shape{2, 4, 2});
    // The plain loop: y[b][t][o] = sum_i x[b][t][i] * W[o][i] + bias[o].
    std::vector<double> xs = x.to_vector<double>(), w = fc.weight.to_vector<double>(), bias = fc.bias.to_vector<double>();
    std::vector<double> expected;
    for (int r = 0; r < 8; ++r)
        for (int o = 0; o < 2; ++o) {
            double s = bias[o];
            for (int i = 0; i < 3; ++i) s += xs[r * 3 + i] * w[o * 3 + i];
            expected.push_back(s);
        }
    test::check_values(y, expected, 1e-12);
    CHECK(fc(x.select(0, 1)).shape() == Shape{4, 2});
    CHECK(fc(x.select(0, 1).select(0, 2)).shape() == Shape{2});
    CHECK_THROWS_WITH_AS(fc(randn({4, 5}, gen)), doctest::Contains("Linear"), std::invalid_argument);
}

TEST_CASE("linear op: the fused GEMM + bias + ReLU equals matmul, add and relu, bitwise, and names bad shapes") {
    Generator gen(5);
    for (bool relu : {false, true})
        for (bool with_bias : {false, true}) {
            CAPTURE(relu);
            CAPTURE(with_bias);
            // Large enough for the threaded, packed GEMM path (and K cut into two blocks), and small.
            for (Shape xs : {Shape{300, 520}, Shape{2, 7, 5}}) {
                const int64_t in = xs.back(), out = 37;
                Tensor x = randn(xs, gen), w = randn({out, in}, gen), b = randn({out}, gen);
                Tensor fused = linear(x, w, with_bias ? b : Tensor(), relu);
                Tensor plain = matmul(x, w.t());
                if (with_bias) plain = plain + b;
                if (relu) plain = mg::relu(plain);
                REQUIRE(fused.shape() == plain.shape());
                CHECK(fused.to_vector<float>() == plain.to_vector<float>());
            }
        }
    // A transposed (strided) x reads in place and gives the same values.
    Tensor xt = randn({6, 9}, gen), w = randn({4, 6}, gen);
    CHECK(linear(xt.t(), w).to_vector<float>() == matmul(xt.t().contiguous(), w.t()).to_vector<float>());
    CHECK_THROWS_WITH_AS(linear(randn({3, 5}, gen), randn({4, 6}, gen)), doctest::Contains("linear: expected x"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(linear(randn({3, 6}, gen), randn({4, 6}, gen), randn({5}, gen)),
                         doctest::Contains("linear: bias must be (4)"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(linear(randn({3, 6}, gen, DType::Float64), randn({4, 6}, gen)), doctest::Contains("linear"),
                         std::invalid_argument);
}

TEST_CASE("Linear: gradients by finite differences") {
    Generator gen(3);
    Linear fc(4, 3, gen, {.dtype = DType::Float64});
    Tensor x = test::rand_input({2, 5, 4}, 9);
    CHECK_GRADIENTS([&](const std::vector<Tensor>& in) {
        // weight and bias enter through the inputs list, so the checker can perturb them.
        Tensor y = matmul(in[0].reshape({-1, 4}), in[1].t()) + in[2];
        return y;
    }, {x, fc.weight, fc.bias});
    // And through the module itself: backward reaches weight and bias.
    fc.zero_grad();
    mg::sum(fc(x)).backward();
    REQUIRE(fc.weight.grad().defined());
    // d sum(y) / d bias[o] = number of rows = 10; d/dW[o][i] = sum over rows of x[.., i].
    test::check_values(fc.bias.grad(), {10, 10, 10}, 1e-12);
    Tensor col_sums = mg::sum(x.detach().reshape({-1, 4}), 0);
    for (int o = 0; o < 3; ++o) CHECK(test::allclose(fc.weight.grad().select(0, o), col_sums, 1e-12, 1e-12));
}

TEST_CASE("Embedding: N(0, 1) init and lookup") {
    Generator gen(4);
    Embedding emb(500, 16, gen);
    CHECK(emb.weight.shape() == Shape{500, 16});
    CHECK(std::abs(emb.weight.mean().item()) < 0.03);
    CHECK(mg::mean(emb.weight * emb.weight).item() == doctest::Approx(1.0).epsilon(0.05));
    Tensor ids = Tensor::from_vector(std::vector<int64_t>{3, 0, 499, 3}, {2, 2});
    Tensor out = emb(ids);
    REQUIRE(out.shape() == Shape{2, 2, 16});
    CHECK(out.select(0, 0).select(0, 0).to_vector<float>() == emb.weight.select(0, 3).to_vector<float>());
    CHECK(out.select(0, 1).select(0, 0).to_vector<float>() == emb.weight.select(0, 499).to_vector<float>());
}

TEST_CASE("LayerNorm: ones/zeros init and normalised output") {
    LayerNorm norm(4);
    test::check_values(norm.weight, {1, 1, 1, 1});
    test::check_values(norm.bias, {0, 0, 0, 0});
    // x = [1, 2, 3, 4]: mean 2.5, variance 1.25, y = (x - 2.5) / sqrt(1.25 + 1e-5).
    Tensor x = Tensor::from_vector({1.f, 2.f, 3.f, 4.f}, {1, 4});
    double s = std::sqrt(1.25 + 1e-5);
    test::check_values(norm(x), {-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s}, 1e-5);
    LayerNorm plain(4, {.elementwise_affine = false});
    CHECK(plain.num_parameters() == 0);
    test::check_values(plain(x), {-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s}, 1e-5);
    CHECK_THROWS_AS(norm(Tensor::zeros({2, 3})), std::invalid_argument);
}

TEST_CASE("Dropout: identity in eval, drops about p in training, replays from its state") {
    Generator gen(5);
    Dropout drop(gen, {.p = 0.25});
    Tensor x = Tensor::ones({4000});
    drop.eval();
    CHECK(drop(x).same(x));
    drop.train();
    auto state = drop.extra_state();
    std::vector<float> y = drop(x).to_vector<float>();
    int zeros = 0;
    for (float v : y) {
        if (v == 0) ++zeros;
        else CHECK(v == doctest::Approx(1.0 / 0.75));
    }
    CHECK(zeros == doctest::Approx(1000).epsilon(0.15));
    // Restoring the generator replays the same mask; without restoring, the next mask differs.
    CHECK(drop(x).to_vector<float>() != y);
    drop.set_extra_state(state);
    CHECK(drop(x).to_vector<float>() == y);
    CHECK_THROWS_AS(drop.set_extra_state({{"generator.seed", "x"}, {"generator.offset", "0"}}), std::invalid_argument);
    CHECK_THROWS_AS(Dropout(gen, {.p = 1.0}), std::invalid_argument);
}

TEST_CASE("FeedForward: demo 01's 20-64-32-3 ReLU expert and the transformer FFN") {
    Generator gen(6);
    FeedForward expert({.d_in = 20, .hidden = {64, 32}, .d_out = 3, .activation = Activation::ReLU}, gen);
    CHECK(expert.num_parameters() == (20 * 64 + 64) + (64 * 32 + 32) + (32 * 3 + 3));
    auto named = expert.named_parameters();
    REQUIRE(named.size() == 6);
    CHECK(named[0].first == "layers.0.weight");
    CHECK(named[5].first == "layers.2.bias");
    Tensor x = randn({5, 20}, gen);
    Tensor y = expert(x);
    CHECK(y.shape() == Shape{5, 3});
    // The same composition written out.
    Tensor h = relu((*expert.layers[0])(x));
    h = relu((*expert.layers[1])(h));
    CHECK(test::allclose((*expert.layers[2])(h), y));

    FeedForward ffn({.d_in = 8}, gen);  // 8 -> 32 -> 8, GELU
    CHECK(ffn.layers.size() == 2);
    CHECK(ffn.layers[0]->weight.shape() == Shape{32, 8});
    CHECK(ffn.layers[1]->weight.shape() == Shape{8, 32});
    Tensor t = randn({2, 3, 8}, gen);
    CHECK(test::allclose(ffn(t), (*ffn.layers[1])(gelu((*ffn.layers[0])(t)))));
}

TEST_CASE("FeedForward: gradients by finite differences (float64, GELU)") {
    Generator gen(7);
    FeedForward ffn({.d_in = 3, .hidden = {4}, .d_out = 2, .dtype = DType::Float64}, gen);
    Tensor x = test::rand_input({5, 3}, 11);
    std::vector<Tensor> inputs{x};
    for (const Tensor& p : ffn.parameters()) inputs.push_back(p);
    CHECK_GRADIENTS([&](const std::vector<Tensor>& in) {
        Tensor h = gelu(matmul(in[0], in[1].t()) + in[2]);
        return matmul(h, in[3].t()) + in[4];
    }, inputs);
    // The module's own forward gives the same output as the composition checked above.
    Tensor direct = ffn(x);
    Tensor by_hand = matmul(gelu(matmul(x, inputs[1].t()) + inputs[2]), inputs[3].t()) + inputs[4];
    CHECK(test::allclose(direct, by_hand, 1e-12, 1e-12));
}

TEST_CASE("Module: nested names, train/eval, named_modules, to(cpu)") {
    Generator gen(8);
    Tiny model(gen);
    std::vector<std::string> names;
    for (auto& [n, t] : model.named_parameters()) names.push_back(n);
    CHECK(names == std::vector<std::string>{"embed.weight", "ffn.layers.0.weight", "ffn.layers.0.bias", "ffn.layers.1.weight",
                                            "ffn.layers.1.bias", "norm.weight", "norm.bias"});
    CHECK(model.num_parameters() == 10 * 4 + (4 * 6 + 6) + (6 * 4 + 4) + 4 + 4);
    std::vector<std::string> modules;
    for (auto& [n, m] : model.named_modules()) modules.push_back(n + ":" + m->type_name());
    CHECK(modules == std::vector<std::string>{":Module", "embed.:Embedding", "ffn.:FeedForward", "ffn.layers.0.:Linear",
                                              "ffn.layers.1.:Linear", "ffn.dropouts.0.:Dropout", "norm.:LayerNorm"});
    CHECK(model.ffn->dropouts[0]->is_training());
    model.eval();
    CHECK_FALSE(model.ffn->dropouts[0]->is_training());
    model.train();
    CHECK(model.ffn->layers[1]->is_training());
    Tensor w = model.norm->weight;
    model.to(Device::CPU);
    CHECK(w.same(model.norm->weight));
}
