// tests/test_activation_checkpoint.cpp: activation checkpointing (mg::checkpoint, engine/ops.h, and
// nn::checkpoint, nn/activation_checkpoint.h). Finite differences through a checkpointed block
// with dropout; bitwise the same gradients as without checkpointing (dropout masks replayed); a
// weight used inside and outside the block; lower peak memory on a deep stack; the errors.
#include <cstdio>

#include "nn/activation_checkpoint.h"
#include "nn/hierarchical_moe.h"
#include "nn/layers.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn;

namespace {
// A residual MLP block with dropout: y = x + W2 dropout(gelu(W1 x + b1)) + b2.
struct Block : Module {
    Block(int64_t d, int64_t hidden, double p, Generator& gen, DType dtype) {
        ff = register_module("ff", std::make_shared<FeedForward>(
                                       FeedForwardConfig{.d_in = d, .hidden = {hidden}, .dropout = p, .dtype = dtype}, gen));
    }
    Tensor forward(const Tensor& x) { return x + ff->forward(x); }
    std::shared_ptr<FeedForward> ff;
};

struct Stack : Module {
    Stack(int64_t layers, int64_t d, int64_t hidden, double p, uint64_t seed, DType dtype) {
        Generator gen(seed);
        for (int64_t i = 0; i < layers; ++i)
            blocks.push_back(register_module("blocks." + std::to_string(i), std::make_shared<Block>(d, hidden, p, gen, dtype)));
    }
    Tensor forward(const Tensor& x, bool use_checkpoint) {
        Tensor h = x;
        for (auto& block : blocks) {
            if (use_checkpoint) {
                Block& b = *block;
                h = nn::checkpoint(b, [&b](const std::vector<Tensor>& in) { return b.forward(in[0]); }, {h});
            } else {
                h = block->forward(h);
            }
        }
        return h;
    }
    std::vector<std::shared_ptr<Block>> blocks;
};

std::vector<std::vector<double>> gradients(const Tensor& x, Module& model) {
    std::vector<std::vector<double>> grads{x.grad().to_vector<double>()};
    for (const Tensor& p : model.parameters()) grads.push_back(p.grad().to_vector<double>());
    return grads;
}
}  // namespace

GRADCHECK(checkpoint, "an MLP with dropout, wrt the input and the weights it captures") {
    Tensor x = test::rand_input({4, 3}, 1), w1 = test::rand_input({3, 5}, 2), w2 = test::rand_input({5, 2}, 3);
    Generator gen(7);  // outlives f: the checkpoint's backward, after f returns, rewinds it
    auto f = [&gen](const std::vector<Tensor>& xs) {
        gen = Generator(7);  // the same masks on every call of f (finite differences need one function)
        const Tensor& W1 = xs[1];
        const Tensor& W2 = xs[2];
        auto block = [&](const std::vector<Tensor>& in) {
            return matmul(dropout(tanh(matmul(in[0], W1)), 0.4, true, gen), W2);
        };
        return checkpoint(block, {xs[0]}, {W1, W2}, {&gen});
    };
    CHECK_GRADIENTS(f, {x, w1, w2});
}

TEST_CASE("checkpoint: several outputs, finite differences") {
    Tensor x = test::rand_input({3, 4}, 4), w = test::rand_input({4, 4}, 5);
    auto f = [](const std::vector<Tensor>& xs) {
        const Tensor& W = xs[1];
        auto block = [&](const std::vector<Tensor>& in) {
            Tensor h = tanh(matmul(in[0], W));
            return std::vector<Tensor>{h, sum(h * h), exp(in[0]) * 0.5};
        };
        std::vector<Tensor> out = checkpoint(CheckpointFn(block), {xs[0]}, {W});
        REQUIRE(out.size() == 3);
        CHECK(out[0].shape() == Shape{3, 4});
        CHECK(out[1].dim() == 0);
        return concat({out[0].reshape({-1}) * 2.0, out[1].reshape({1}), out[2].reshape({-1})}, 0);
    };
    CHECK_GRADIENTS(f, {x, w});
}

TEST_CASE("checkpoint: bitwise the same gradients as without, dropout included") {
    const int64_t T = 7, d = 6;
    auto run = [&](bool use_checkpoint, Stack& model, Tensor& x) {
        Generator data(9);
        x = randn({T, d}, data, DType::Float64);
        x.set_requires_grad(true);
        Tensor w = randn({T, d}, data, DType::Float64);
        Tensor y = model.forward(x, use_checkpoint);
        sum(y * w).backward();
        return y.to_vector<double>();
    };
    Stack plain(2, d, 16, 0.3, 11, DType::Float64), checkpointed(2, d, 16, 0.3, 11, DType::Float64);
    Tensor x_plain, x_checkpointed;
    std::vector<double> y_plain = run(false, plain, x_plain);
    std::vector<double> y_checkpointed = run(true, checkpointed, x_checkpointed);
    CHECK(y_plain == y_checkpointed);
    CHECK(gradients(x_plain, plain) == gradients(x_checkpointed, checkpointed));
    // Dropout did drop something, and the recomputation left the generators where the forward did.
    CHECK(plain.blocks[0]->ff->dropouts.size() == 1);
    for (size_t i = 0; i < plain.blocks.size(); ++i) {
        Generator::State a = plain.blocks[i]->ff->dropouts[0]->generator.state();
        Generator::State b = checkpointed.blocks[i]->ff->dropouts[0]->generator.state();
        CHECK(a.offset > 0);
        CHECK(a.seed == b.seed);
        CHECK(a.offset == b.offset);
    }
    // The replay is what makes this work: the same checkpointing without the Dropout generators
    // recomputes with fresh masks, and the gradients differ.
    Stack no_replay(2, d, 16, 0.3, 11, DType::Float64);
    Generator data(9);
    Tensor x = randn({T, d}, data, DType::Float64);
    x.set_requires_grad(true);
    Tensor w = randn({T, d}, data, DType::Float64), h = x;
    for (auto& block : no_replay.blocks) {
        Block& b = *block;
        h = checkpoint([&b](const std::vector<Tensor>& in) { return b.forward(in[0]); }, {h}, b.parameters());
    }
    CHECK(h.to_vector<double>() == y_plain);
    sum(h * w).backward();
    CHECK(gradients(x, no_replay) != gradients(x_plain, plain));
}

TEST_CASE("checkpoint: a weight used inside and outside the checkpointed block") {
    // The outer backward may still be summing W's gradient when the checkpoint's backward runs;
    // the recomputation must not disturb that (it uses a fresh accumulator for W).
    auto loss = [](const Tensor& x, const Tensor& W, bool use_checkpoint) {
        auto block = [&W](const std::vector<Tensor>& in) { return tanh(matmul(in[0], W)); };
        Tensor h = matmul(x, W);                                       // W outside, before
        Tensor inner = use_checkpoint ? checkpoint(block, {h}, {W}) : block({h});
        return sum(matmul(inner, W) * 0.7 + h);                        // W outside, after
    };
    std::vector<std::vector<double>> grads[2];
    for (int use = 0; use < 2; ++use) {
        Tensor x = test::rand_input({3, 4}, 12), W = test::rand_input({4, 4}, 13);
        loss(x, W, use == 1).backward();
        grads[use] = {x.grad().to_vector<double>(), W.grad().to_vector<double>()};
    }
    for (size_t i = 0; i < 2; ++i)
        for (size_t j = 0; j < grads[0][i].size(); ++j) CHECK(grads[1][i][j] == doctest::Approx(grads[0][i][j]).epsilon(1e-12));
}

TEST_CASE("checkpoint: a hierarchical MoE layer, two outputs (y and the balance loss)") {
    // Routing is recomputed too: top-k on the same inputs picks the same experts, so the
    // gradients are those of the layer without checkpointing.
    HierarchicalMoEConfig c;
    c.d_in = 6;
    c.hidden = {10};
    c.d_out = 6;
    c.groups = 3;
    c.group_k = 2;
    c.experts_per_group = 4;
    c.k = 2;
    c.dtype = DType::Float64;
    std::vector<std::vector<double>> grads[2];
    for (int use = 0; use < 2; ++use) {
        Generator gen(14);
        HierarchicalMixtureOfExperts moe(c, gen);
        Tensor x = test::rand_input({20, 6}, 15), w = test::rand_input({20, 6}, 16);
        auto layer = [&moe](const std::vector<Tensor>& in) {
            auto out = moe(in[0]);
            return std::vector<Tensor>{out.y, out.balance_loss};
        };
        std::vector<Tensor> out = use == 1 ? nn::checkpoint(moe, CheckpointFn(layer), {x}) : layer({x});
        (sum(out[0] * w) + out[1]).backward();
        grads[use].push_back(x.grad().to_vector<double>());
        for (const Tensor& p : moe.parameters())
            grads[use].push_back(p.grad().defined() ? p.grad().to_vector<double>() : std::vector<double>(p.numel(), 0.0));
    }
    for (size_t i = 0; i < grads[0].size(); ++i)
        for (size_t j = 0; j < grads[0][i].size(); ++j) CHECK(grads[1][i][j] == doctest::Approx(grads[0][i][j]).epsilon(1e-12));
}

TEST_CASE("checkpoint: lower peak memory on a deep stack of blocks") {
    // 8 residual MLP blocks, 512 tokens, float32. Without checkpointing every block's activations
    // are alive at the end of the forward; with it, only the 8 block inputs and, during the
    // backward, one block's recomputed activations.
    const int64_t T = 512, d = 64, layers = 8;
    auto peak_bytes = [&](bool use_checkpoint) {
        Stack model(layers, d, 256, 0.1, 3, DType::Float32);
        Generator data(4);
        Tensor x = randn({T, d}, data);
        x.set_requires_grad(true);
        const int64_t before = memory_stats(Device::CPU).live_bytes;
        reset_peak_memory(Device::CPU);
        sum(model.forward(x, use_checkpoint)).backward();
        return memory_stats(Device::CPU).peak_bytes - before;
    };
    const int64_t plain = peak_bytes(false), checkpointed = peak_bytes(true);
    char line[256];
    std::snprintf(line, sizeof line,
                  "peak bytes above the parameters, forward+backward, 8 blocks 64-256-64, T=512, float32: "
                  "%lld without checkpointing, %lld with (%.1f%% less)",
                  (long long)plain, (long long)checkpointed, 100.0 * (1.0 - (double)checkpointed / (double)plain));
    MESSAGE(line);
    CHECK(checkpointed < plain / 2);
}

TEST_CASE("checkpoint: no graph without grad; checkpoint_recomputing() says when fn runs again") {
    Tensor x = test::rand_input({2, 2}, 20), W = test::rand_input({2, 2}, 21);
    int calls = 0, recomputations = 0;
    auto block = [&](const std::vector<Tensor>& in) {
        ++calls;
        if (checkpoint_recomputing()) ++recomputations;
        return matmul(in[0], W);
    };
    {
        NoGradGuard no_grad;
        CHECK_FALSE(checkpoint(block, {x}, {W}).requires_grad());
    }
    CHECK(calls == 1);
    Tensor y = checkpoint(block, {x}, {W});
    CHECK(y.requires_grad());
    CHECK(std::string(y.grad_fn()->name) == "checkpoint");
    CHECK(calls == 2);
    CHECK(recomputations == 0);
    sum(y).backward();
    CHECK(calls == 3);
    CHECK(recomputations == 1);
    CHECK_FALSE(checkpoint_recomputing());
    CHECK(W.grad().defined());
}

TEST_CASE("checkpoint errors say what is wrong") {
    Tensor x = test::rand_input({2, 2}, 30), W = test::rand_input({2, 2}, 31);
    // A captured weight that was not declared: its gradient would be lost.
    Tensor y = checkpoint([&](const std::vector<Tensor>& in) { return matmul(in[0], W); }, {x});
    CHECK_THROWS_WITH_AS(sum(y).backward(), doctest::Contains("neither one of its inputs nor one of its params"),
                         std::invalid_argument);
    // A function that draws differently the second time.
    Generator gen(1);
    auto unsteady = [&](const std::vector<Tensor>& in) {
        if (checkpoint_recomputing()) rand({3}, gen);
        return dropout(in[0], 0.5, true, gen);
    };
    CHECK_THROWS_WITH_AS(sum(checkpoint(unsteady, {x}, {}, {&gen})).backward(), doctest::Contains("different amount of random"),
                         std::logic_error);
    CHECK_THROWS_WITH_AS(checkpoint([](const std::vector<Tensor>& in) { return argmax(in[0], 1); }, {x}),
                         doctest::Contains("float tensors of one dtype; output 0 is int64"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(checkpoint([](const std::vector<Tensor>& in) { return in[0]; }, {x}, {x * 2.0}),
                         doctest::Contains("params[0] must be a leaf tensor (a parameter), got the output of 'mul'"),
                         std::invalid_argument);
    // The saved input changed in place before the backward.
    Tensor leaf = test::rand_input({2, 2}, 32);
    Tensor h = leaf * 1.0;
    Tensor z = checkpoint([](const std::vector<Tensor>& in) { return tanh(in[0]); }, {h});
    {
        NoGradGuard no_grad;
        h.add_(Tensor::ones({2, 2}, DType::Float64));
    }
    CHECK_THROWS_WITH_AS(sum(z).backward(), doctest::Contains("modified in place"), std::logic_error);
}
