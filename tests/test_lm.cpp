// tests/test_lm.cpp: the transformer parts (nn/transformer.h) and the language model (nn/lm.h):
// shapes, the sinusoidal table by hand, causality (a later token never changes an earlier
// logit), the two attention paths agreeing, finite-difference gradients of a block and of whole
// models in float64, the parameter and FLOP counters against numbers worked out by hand, the tied
// head, seeded generation, a tiny model that learns, and the error messages.
#include <cmath>
#include <string>

#include "nn/lm.h"
#include "nn/optim.h"
#include "nn/transformer.h"
#include "tests/helpers.h"

using namespace mg;
using namespace mg::nn;
using mg::test::grad_or_zeros;
using mg::test::set_parameter;
using mg::test::topk_margin;
using mg::test::closeness;

namespace {
LanguageModelConfig tiny_lm(FFNKind ffn, DType dtype = DType::Float32) {
    LanguageModelConfig c;
    c.vocab = 11;
    c.d_model = 8;
    c.layers = 2;
    c.heads = 2;
    c.max_seq = 6;
    c.positions = PositionKind::Learned;
    c.ffn = ffn;
    c.ffn_hidden = 6;
    c.experts = 3;
    c.k = 2;
    c.dtype = dtype;
    return c;
}

Tensor ids_of(const std::vector<int64_t>& values, int64_t B, int64_t T) { return Tensor::from_vector(values, {B, T}); }

// The smallest gap between the k-th and (k+1)-th router logit over every token of every MoE layer:
// a finite-difference step must not be able to change which experts a token uses.
double routing_margin(const std::vector<Routing>& routings, int64_t k) {
    double margin = 1e30;
    for (const Routing& r : routings) {
        const int64_t T = r.logits.size(0), E = r.logits.size(1);
        std::vector<double> v = r.logits.to_vector<double>();
        for (int64_t t = 0; t < T; ++t) {
            std::vector<double> row(v.begin() + t * E, v.begin() + (t + 1) * E);
            std::sort(row.begin(), row.end(), std::greater<double>());
            if (k < E) margin = std::min(margin, row[k - 1] - row[k]);
        }
    }
    return margin;
}

// Finite differences of f wrt every parameter of `module` (and `extra` leading inputs), where f
// reads the parameters from the module: gradcheck hands in fresh tensors, copied in here.
void check_module_gradients(Module& module, std::vector<Tensor> leading,
                            const std::function<Tensor(const std::vector<Tensor>&)>& run) {
    std::vector<Tensor> params = module.parameters();
    std::vector<Tensor> base;
    for (const Tensor& p : params) base.push_back(p.detach().clone());
    const size_t n_lead = leading.size();
    std::vector<Tensor> inputs = leading;
    inputs.insert(inputs.end(), params.begin(), params.end());
    auto f = [&](const std::vector<Tensor>& xs) {
        for (size_t i = 0; i < params.size(); ++i)
            set_parameter(params[i], xs[i + n_lead].same(params[i]) ? base[i] : xs[i + n_lead]);
        return run(std::vector<Tensor>(xs.begin(), xs.begin() + (long)n_lead));
    };
    CHECK_GRADIENTS(f, inputs);
    for (size_t i = 0; i < params.size(); ++i) set_parameter(params[i], base[i]);
}
}  // namespace

TEST_CASE("lm positional encoding: the sinusoidal table worked by hand") {
    PositionalEncoding pe(5, 4);
    Tensor t = pe(3);
    REQUIRE(t.shape() == Shape{3, 4});
    std::vector<double> v = t.to_vector<double>();
    // Row t: sin(t), cos(t), sin(t / 100), cos(t / 100)   (10000^(2/4) = 100)
    for (int64_t row = 0; row < 3; ++row) {
        CHECK(v[row * 4 + 0] == doctest::Approx(std::sin((double)row)).epsilon(1e-6));
        CHECK(v[row * 4 + 1] == doctest::Approx(std::cos((double)row)).epsilon(1e-6));
        CHECK(v[row * 4 + 2] == doctest::Approx(std::sin(row / 100.0)).epsilon(1e-6));
        CHECK(v[row * 4 + 3] == doctest::Approx(std::cos(row / 100.0)).epsilon(1e-6));
    }
    CHECK(pe.num_parameters() == 0);  // a buffer, not learnt
    CHECK_THROWS_WITH_AS(pe(6), doctest::Contains("longer than max_len 5"), std::invalid_argument);
}

TEST_CASE("lm attention module: shapes, both paths agree, heads must divide d_model") {
    Generator gen(1);
    CausalSelfAttention fast({.d_model = 8, .heads = 2}, gen);
    Generator gen2(1);
    CausalSelfAttention slow({.d_model = 8, .heads = 2, .impl = AttentionImpl::Reference}, gen2);
    Tensor x = randn({3, 5, 8}, gen);
    Tensor a = fast(x), b = slow(x);
    REQUIRE(a.shape() == Shape{3, 5, 8});
    CHECK(closeness(a, b, 1e-5, 1e-6) <= 1.0);
    CHECK_THROWS_WITH_AS(CausalSelfAttention({.d_model = 10, .heads = 4}, gen), doctest::Contains("not a multiple of heads"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(fast(randn({5, 8}, gen)), doctest::Contains("expected input (batch, seq, 8)"),
                         std::invalid_argument);
}

TEST_CASE("lm model: output shapes, routings per MoE layer, balance loss is their sum") {
    for (FFNKind ffn : {FFNKind::MoE, FFNKind::Dense}) {
        Generator gen(2);
        LanguageModel lm(tiny_lm(ffn), gen);
        Tensor ids = randint(0, 11, {3, 6}, gen);
        auto out = lm(ids);
        CHECK(out.logits.shape() == Shape{3, 6, 11});
        CHECK(out.balance_loss.dim() == 0);
        if (ffn == FFNKind::MoE) {
            REQUIRE(out.routings.size() == 2);
            CHECK(out.routings[0].indices.shape() == Shape{18, 2});
            CHECK(out.balance_loss.item() ==
                  doctest::Approx(out.routings[0].balance_loss.item() + out.routings[1].balance_loss.item()));
        } else {
            CHECK(out.routings.empty());
            CHECK(out.balance_loss.item() == 0.0);
        }
        Tensor loss = LanguageModel::loss(out.logits, randint(0, 11, {3, 6}, gen));
        // A fresh model is close to uniform over 11 tokens: loss near log(11) = 2.40.
        CHECK(loss.item() > 1.5);
        CHECK(loss.item() < 4.0);
    }
}

TEST_CASE("lm causality: changing a later token never changes an earlier position's logits") {
    for (FFNKind ffn : {FFNKind::MoE, FFNKind::Dense})
        for (AttentionImpl impl : {AttentionImpl::MemoryEfficient, AttentionImpl::Reference})
            for (PositionKind pos : {PositionKind::Learned, PositionKind::Sinusoidal}) {
                CAPTURE((int)ffn);
                CAPTURE((int)impl);
                Generator gen(3);
                LanguageModelConfig c = tiny_lm(ffn, DType::Float64);
                c.attention = impl;
                c.positions = pos;
                LanguageModel lm(c, gen);
                std::vector<int64_t> a = {1, 4, 2, 7, 3, 9};
                const int64_t j = 3;  // change token 3
                std::vector<int64_t> b = a;
                b[j] = 5;
                Tensor la = lm(ids_of(a, 1, 6)).logits, lb = lm(ids_of(b, 1, 6)).logits;
                // positions 0..j-1 identical, bit for bit (nothing of token j reaches them)
                CHECK(closeness(la.slice(1, 0, j), lb.slice(1, 0, j), 0, 0) == 0.0);
                // position j and after do change
                CHECK(closeness(la.slice(1, j, 6), lb.slice(1, j, 6), 1e-6, 1e-9) > 1.0);
            }
}

TEST_CASE("lm model: memory-efficient and reference attention give the same logits and gradients") {
    Generator g1(4), g2(4);
    LanguageModelConfig c = tiny_lm(FFNKind::MoE);
    LanguageModel fast(c, g1);
    c.attention = AttentionImpl::Reference;
    LanguageModel slow(c, g2);
    Generator gen(5);
    Tensor ids = randint(0, 11, {2, 6}, gen), targets = randint(0, 11, {2, 6}, gen);
    Tensor lf = LanguageModel::loss(fast(ids).logits, targets), ls = LanguageModel::loss(slow(ids).logits, targets);
    CHECK(lf.item() == doctest::Approx(ls.item()).epsilon(1e-5));
    lf.backward();
    ls.backward();
    auto pf = fast.parameters(), ps = slow.parameters();
    REQUIRE(pf.size() == ps.size());
    for (size_t i = 0; i < pf.size(); ++i) {
        CAPTURE(i);
        // An expert that no token chose has no gradient, in both models alike.
        REQUIRE(pf[i].grad().defined() == ps[i].grad().defined());
        if (pf[i].grad().defined()) CHECK(closeness(pf[i].grad(), ps[i].grad(), 1e-4, 1e-5) <= 1.0);
    }
}

TEST_CASE("lm block: finite-difference gradients of a dense and an MoE block (float64)") {
    for (FFNKind ffn : {FFNKind::Dense, FFNKind::MoE}) {
        CAPTURE((int)ffn);
        Generator gen(6);
        TransformerBlock block({.d_model = 4, .heads = 2, .ffn = ffn, .ffn_hidden = 5, .experts = 3, .k = 2,
                                .balance_alpha = 0.2, .dtype = DType::Float64},
                               gen);
        if (block.moe) set_parameter(block.moe->router->weight, block.moe->router->weight * 4.0);
        Tensor x = test::rand_input({2, 3, 4}, 7);
        if (block.moe) REQUIRE(routing_margin({*block(x).routing}, 2) > 1e-3);
        check_module_gradients(block, {x}, [&](const std::vector<Tensor>& xs) {
            auto out = block(xs[0]);
            return concat({out.y.reshape({-1}), out.balance_loss.reshape({1})}, 0);
        });
    }
}

TEST_CASE("lm model: finite-difference gradients of whole models (float64; tied and untied, MoE and dense)") {
    struct Case {
        FFNKind ffn;
        bool tie;
        PositionKind pos;
    };
    for (Case cs : {Case{FFNKind::MoE, false, PositionKind::Learned}, Case{FFNKind::MoE, true, PositionKind::Sinusoidal},
                    Case{FFNKind::Dense, true, PositionKind::Learned}}) {
        CAPTURE((int)cs.ffn);
        CAPTURE(cs.tie);
        Generator gen(8);
        LanguageModelConfig c = tiny_lm(cs.ffn, DType::Float64);
        c.vocab = 5;
        c.d_model = 4;
        c.heads = 2;
        c.ffn_hidden = 3;
        c.max_seq = 4;
        c.tie_head = cs.tie;
        c.positions = cs.pos;
        c.balance_alpha = 0.1;
        LanguageModel lm(c, gen);
        for (auto& b : lm.blocks)
            if (b->moe) set_parameter(b->moe->router->weight, b->moe->router->weight * 4.0);
        Tensor ids = ids_of({0, 3, 1, 4, 2, 2}, 2, 3);
        if (cs.ffn == FFNKind::MoE) REQUIRE(routing_margin(lm(ids).routings, 2) > 1e-3);
        check_module_gradients(lm, {}, [&](const std::vector<Tensor>&) {
            auto out = lm(ids);
            return concat({out.logits.reshape({-1}), out.balance_loss.reshape({1})}, 0);
        });
    }
}

TEST_CASE("lm counters: parameters, active parameters and FLOPs per token worked out by hand") {
    // d = 8, L = 2, V = 16, max_seq = 10, learned positions, 4 experts of 8-12-8, k = 2, untied.
    Generator gen(9);
    LanguageModelConfig c{.vocab = 16, .d_model = 8, .layers = 2, .heads = 2, .max_seq = 10,
                          .positions = PositionKind::Learned, .ffn = FFNKind::MoE, .ffn_hidden = 12, .experts = 4, .k = 2};
    LanguageModel lm(c, gen);
    ModelCounts m = lm.counts(10);
    // parameters
    CHECK(m.parameters.embedding == 16 * 8 + 10 * 8);                // 208: tokens + positions
    CHECK(m.parameters.attention == 2 * (8 * 24 + 24 + 8 * 8 + 8)); // 576: qkv (w, b) + proj (w, b), 2 layers
    CHECK(m.parameters.router == 2 * 8 * 4);                        // 64
    CHECK(m.parameters.experts == 2 * 4 * (8 * 12 + 12 + 12 * 8 + 8));  // 1696: 2 layers x 4 experts x 212
    CHECK(m.parameters.norms == 5 * 2 * 8);                         // 80: 2L + 1 LayerNorms, weight + bias
    CHECK(m.parameters.head == 16 * 8);                             // 128
    CHECK(m.parameters.total() == 2752);
    CHECK(lm.num_parameters() == 2752);                             // the counter agrees with the tensors
    // active: only k = 2 of the 4 experts per layer
    CHECK(m.active_parameters.experts == 2 * 2 * 212);              // 848
    CHECK(m.active_parameters.total() == 2752 - 848);
    // FLOPs per token at T = 10
    CHECK(m.flops_per_token.embedding == 8);                        // the position add
    // qkv 2*8*24 = 384, proj 2*8*8 = 128, scores + weighted sum 2*8*(10+1) = 176: 688 per layer
    CHECK(m.flops_per_token.attention == 2 * 688);
    CHECK(m.flops_per_token.router == 2 * 2 * 8 * 4);               // 128
    CHECK(m.flops_per_token.experts == 2 * 2 * 2 * (8 * 12 + 12 * 8));  // layers x k x 2 x MACs = 1536
    CHECK(m.flops_per_token.norms == 5 * 7 * 8);                    // 280
    CHECK(m.flops_per_token.head == 2 * 8 * 16);                    // 256
    CHECK(m.flops_per_token.total() == 3584);

    // Dense, tied, sinusoidal: the counters still match the tensors, and the head has no parameters.
    LanguageModelConfig d = c;
    d.ffn = FFNKind::Dense;
    d.ffn_hidden = 24;
    d.tie_head = true;
    d.positions = PositionKind::Sinusoidal;
    LanguageModel dense(d, gen);
    ModelCounts md = dense.counts(4);
    CHECK(md.parameters.head == 0);
    CHECK(md.parameters.embedding == 16 * 8);
    CHECK(md.parameters.experts == 2 * (8 * 24 + 24 + 24 * 8 + 8));
    CHECK(md.parameters.total() == dense.num_parameters());
    CHECK(md.active_parameters.total() == md.parameters.total());
    CHECK(md.flops_per_token.attention == 2 * (384 + 128 + 2 * 8 * 5));
    CHECK(md.flops_per_token.experts == 2 * 2 * (8 * 24 + 24 * 8));
    CHECK(md.flops_per_token.head == 2 * 8 * 16);  // tied: no parameters, same FLOPs
}

TEST_CASE("lm tied head: the output matrix is the embedding table (one tensor, both gradients)") {
    Generator gen(10);
    LanguageModelConfig c = tiny_lm(FFNKind::Dense);
    c.tie_head = true;
    LanguageModel lm(c, gen);
    CHECK(!lm.head);
    for (auto& [name, p] : lm.named_parameters()) CHECK(name.find("head") == std::string::npos);
    // Token 10 is not in the input, so its embedding row is used only as the head's column 10:
    // changing it changes exactly that column of the logits.
    Tensor ids = ids_of({0, 1, 2, 3}, 1, 4);
    Tensor before = lm(ids).logits;
    {
        NoGradGuard g;
        // (a constant shift would not do: LayerNorm's output sums to 0, so h . (c, ..., c) = 0)
        lm.token_embedding->weight.select(0, 10).add_(randn({8}, gen), 0.5);
    }
    Tensor after = lm(ids).logits;
    CHECK(closeness(before.slice(2, 0, 10), after.slice(2, 0, 10), 0, 0) == 0.0);
    CHECK(closeness(before.slice(2, 10, 11), after.slice(2, 10, 11), 1e-6, 1e-9) > 1.0);
    // The loss's gradient reaches row 10 of the table (through the head only).
    Tensor loss = LanguageModel::loss(lm(ids).logits, ids_of({1, 2, 3, 10}, 1, 4));
    loss.backward();
    double row10 = sum(abs(lm.token_embedding->weight.grad().select(0, 10))).item();
    CHECK(row10 > 0);
}

TEST_CASE("lm generate: seeded, reproducible, greedy = top-1, windows past max_seq") {
    Generator gen(11);
    LanguageModel lm(tiny_lm(FFNKind::MoE), gen);
    std::vector<int64_t> prompt = {1, 2, 3};
    SamplingConfig sc{.max_new_tokens = 20, .temperature = 1.0, .top_k = 0};
    Generator s1(42), s2(42), s3(43);
    auto a = generate(lm, prompt, sc, s1), b = generate(lm, prompt, sc, s2), other = generate(lm, prompt, sc, s3);
    CHECK(a.size() == 23);
    CHECK(std::vector<int64_t>(a.begin(), a.begin() + 3) == prompt);
    CHECK(a == b);
    CHECK(a != other);  // 20 draws from a near-uniform 11-way distribution: equal by chance ~1e-20
    for (int64_t t : a) CHECK((t >= 0 && t < 11));
    CHECK(lm.is_training());  // the mode is restored

    Generator g1(1), g2(2);
    auto greedy1 = generate(lm, prompt, {.max_new_tokens = 8, .temperature = 0}, g1);
    auto greedy2 = generate(lm, prompt, {.max_new_tokens = 8, .temperature = 0}, g2);
    auto top1 = generate(lm, prompt, {.max_new_tokens = 8, .temperature = 0.7, .top_k = 1}, g2);
    CHECK(greedy1 == greedy2);  // no randomness
    CHECK(top1 == greedy1);     // top-1 sampling is greedy
    // top_k = 2: every new token is one of the two most likely at its step.
    Generator g3(3);
    auto top2 = generate(lm, prompt, {.max_new_tokens = 6, .temperature = 1.0, .top_k = 2}, g3);
    for (size_t i = 3; i < top2.size(); ++i) {
        std::vector<int64_t> ctx(top2.begin() + (long)std::max<size_t>(i, 6) - 6, top2.begin() + (long)i);
        NoGradGuard ng;
        lm.eval();
        Tensor logits = lm(ids_of(ctx, 1, (int64_t)ctx.size())).logits.select(0, 0).select(0, (int64_t)ctx.size() - 1);
        lm.train();
        auto top = topk(logits, 2, 0).indices.to_vector<int64_t>();
        CHECK((top2[i] == top[0] || top2[i] == top[1]));
    }
    // Longer than max_seq = 6: the model sees the last 6 tokens.
    Generator g4(4);
    CHECK(generate(lm, prompt, {.max_new_tokens = 10}, g4).size() == 13);

    Generator g5(5);
    CHECK_THROWS_WITH_AS(generate(lm, {}, sc, g5), doctest::Contains("prompt is empty"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(generate(lm, {11}, sc, g5), doctest::Contains("outside [0, 11)"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(generate(lm, {1}, {.temperature = -1}, g5), doctest::Contains("temperature"),
                         std::invalid_argument);
}

TEST_CASE("lm errors: bad configurations, too-long sequences, bad ids") {
    Generator gen(12);
    auto bad = [&](auto edit, const char* message) {
        LanguageModelConfig c = tiny_lm(FFNKind::MoE);
        edit(c);
        CHECK_THROWS_WITH_AS(LanguageModel(c, gen), doctest::Contains(message), std::invalid_argument);
    };
    bad([](LanguageModelConfig& c) { c.heads = 3; }, "multiple of heads");
    bad([](LanguageModelConfig& c) { c.k = 4; }, "k = 4 must be in [1, experts = 3]");
    bad([](LanguageModelConfig& c) { c.ffn_hidden = 0; }, "ffn_hidden must be positive");
    bad([](LanguageModelConfig& c) { c.layers = 0; }, "layers must be positive");
    bad([](LanguageModelConfig& c) { c.max_seq = 0; }, "max_seq must be positive");
    bad([](LanguageModelConfig& c) { c.dtype = DType::Int64; }, "dtype must be float32 or float64");

    LanguageModel lm(tiny_lm(FFNKind::MoE), gen);
    CHECK_THROWS_WITH_AS(lm(Tensor::zeros({1, 7}, DType::Int64)), doctest::Contains("sequence length 7 is outside [1, max_seq = 6]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(lm(Tensor::zeros({6}, DType::Int64)), doctest::Contains("expected token ids (batch, seq)"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(lm(Tensor::zeros({1, 3})), doctest::Contains("must be int32 or int64"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(lm(ids_of({1, 11}, 1, 2)), doctest::Contains("token id 11 is outside the vocabulary"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(lm.counts(7), doctest::Contains("outside [1, max_seq]"), std::invalid_argument);
}

TEST_CASE("lm training: a tiny MoE model learns a repeating byte pattern") {
    // "abcd" repeated: after a few Adam steps the next byte is nearly certain. A model with a
    // broken mask, position or backward would stay near log(4) or worse.
    Generator gen(13);
    LanguageModelConfig c = tiny_lm(FFNKind::MoE);
    c.vocab = 8;
    c.d_model = 16;
    c.ffn_hidden = 16;
    c.max_seq = 8;
    LanguageModel lm(c, gen);
    AdamW opt(lm.parameters(), {.lr = 1e-2, .weight_decay = 0});
    std::vector<int64_t> seq;
    for (int i = 0; i < 9 * 4; ++i) seq.push_back(i % 4);
    std::vector<int64_t> in, tgt;
    for (int b = 0; b < 4; ++b)
        for (int t = 0; t < 8; ++t) {
            in.push_back(seq[b + t]);
            tgt.push_back(seq[b + t + 1]);
        }
    Tensor ids = ids_of(in, 4, 8), targets = ids_of(tgt, 4, 8);
    double first = 0, last = 0;
    for (int step = 0; step < 60; ++step) {
        auto out = lm(ids);
        Tensor loss = LanguageModel::loss(out.logits, targets);
        if (step == 0) first = loss.item();
        last = loss.item();
        opt.zero_grad();
        (loss + out.balance_loss).backward();
        opt.step();
    }
    CHECK(first > 1.0);
    CHECK(last < 0.05);
}
