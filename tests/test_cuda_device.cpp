// tests/test_cuda_device.cpp: the CUDA device as a whole (test suite "cuda": left out, with one
// line saying why, when no GPU is usable): copies, the caching allocator at work, the count of
// host synchronisations in a training step, kernel errors raised at the next synchronisation, and
// one training step of demo 01's classifier and of the language model giving the same loss and
// the same updated parameters on both devices.
#include <doctest.h>

#include <cmath>
#include <cstdio>

#include "engine/cuda/cuda.h"
#include "nn/lm.h"
#include "nn/moe.h"
#include "nn/optim.h"
#include "tests/cuda_parity.h"

using namespace mg;
using namespace mg::nn;
using mg::test::closeness;

#ifdef MG_CUDA
namespace {

MoEConfig demo01_moe() {  // demo 01's layer: 4 experts 20 -> 64 -> 32 -> 3, top-2, balance loss on
    MoEConfig c;
    c.d_in = 20;
    c.hidden = {64, 32};
    c.d_out = 3;
    c.experts = 4;
    c.k = 2;
    c.balance_alpha = 0.1;
    return c;
}

LanguageModelConfig small_lm() {
    LanguageModelConfig c;
    c.d_model = 64;
    c.layers = 2;
    c.heads = 4;
    c.max_seq = 32;
    c.positions = PositionKind::Learned;
    c.ffn = FFNKind::MoE;
    c.ffn_hidden = 128;
    c.experts = 4;
    c.k = 2;
    return c;
}

// One Adam step of the classifier on (x, y); returns the loss.
double classifier_step(SpecializedExpertNetwork& model, Adam& opt, const Tensor& x, const Tensor& y) {
    opt.zero_grad();
    auto out = model(x);
    Tensor loss = cross_entropy(out.y, y) + out.balance_loss;
    loss.backward();
    opt.step();
    return loss.item();
}

double lm_step(LanguageModel& model, Adam& opt, const Tensor& ids, const Tensor& targets) {
    opt.zero_grad();
    auto out = model(ids);
    Tensor loss = LanguageModel::loss(out.logits, targets) + out.balance_loss;
    loss.backward();
    opt.step();
    return loss.item();
}

void check_same_parameters(const Module& cpu, const Module& gpu, double rtol, double atol) {
    auto a = cpu.named_parameters(), b = gpu.named_parameters();
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        INFO("parameter " << a[i].first);
        REQUIRE(b[i].second.device() == Device::CUDA);
        CHECK(closeness(b[i].second.to(Device::CPU), a[i].second, rtol, atol) <= 1.0);
    }
}

}  // namespace

TEST_SUITE("cuda") {

TEST_CASE("cuda device: copies to the GPU and back are exact for every dtype, views included") {
    std::printf("CUDA device: %s\n", cuda::device_name());
    Generator gen(1);
    Tensor f = randn({33, 17}, gen);
    for (DType dt : {DType::Float32, DType::Float64, DType::Int32, DType::Int64, DType::Bool}) {
        Tensor t = f.to(dt);
        Tensor back = t.to(Device::CUDA).to(Device::CPU);
        CHECK(back.dtype() == dt);
        CHECK(closeness(back, t, 0, 0) <= 1.0);
    }
    Tensor view = f.t().slice(0, 2, 9);  // a strided view moves as its values
    CHECK(closeness(view.to(Device::CUDA).to(Device::CPU), view, 0, 0) <= 1.0);
    CHECK(Tensor::zeros({0, 4}).to(Device::CUDA).numel() == 0);
    CHECK_THROWS_WITH_AS(f + f.to(Device::CUDA), doctest::Contains("tensors on different devices (cpu and cuda)"),
                         std::invalid_argument);
}

TEST_CASE("cuda allocator: after one training step, more steps take no new memory from the device") {
    Generator gen(2);
    SpecializedExpertNetwork model(demo01_moe(), gen);
    model.to(Device::CUDA);
    Adam opt(model.parameters(), {.lr = 1e-3});
    Tensor x = randn({64, 20}, gen).to(Device::CUDA);
    Tensor y = Tensor::from_vector(std::vector<int64_t>(64, 1), {64}, Device::CUDA);
    classifier_step(model, opt, x, y);
    classifier_step(model, opt, x, y);  // the optimizer's state now exists
    const auto before = cuda::allocator_stats();
    for (int i = 0; i < 3; ++i) classifier_step(model, opt, x, y);
    const auto after = cuda::allocator_stats();
    MESSAGE("cache hits over 3 steps: " << after.cache_hits - before.cache_hits
                                        << ", device allocations: " << after.device_allocs - before.device_allocs);
    CHECK(after.device_allocs == before.device_allocs);
    CHECK(after.cache_hits > before.cache_hits);
}

TEST_CASE("cuda synchronisation: a training step waits for the GPU only where the host needs a value") {
    Generator gen(3);
    SpecializedExpertNetwork model(demo01_moe(), gen);
    model.to(Device::CUDA);
    Adam opt(model.parameters(), {.lr = 1e-3});
    Tensor x = randn({64, 20}, gen).to(Device::CUDA);
    Tensor y = Tensor::from_vector(std::vector<int64_t>(64, 2), {64}, Device::CUDA);
    classifier_step(model, opt, x, y);  // warm-up
    const int64_t before = cuda::synchronizations();
    classifier_step(model, opt, x, y);
    const int64_t syncs = cuda::synchronizations() - before;
    // Exactly two: the router reads the per-expert token counts (they size the expert GEMMs: one
    // per MoE layer), and loss.item() reads the loss. Backward and the optimizer never wait.
    MESSAGE("host synchronisations in one step: " << syncs);
    CHECK(syncs == 2);
}

TEST_CASE("cuda kernel errors: an out-of-range index is raised, naming the op, at the next synchronisation") {
    Tensor table = Tensor::ones({10, 4}).to(Device::CUDA);
    Tensor bad = Tensor::from_vector(std::vector<int64_t>{1, 12, 3}, {3}, Device::CUDA);
    Tensor rows = index_select(table, 0, bad);  // queued; the kernel flags index 12 and goes on
    CHECK_THROWS_WITH_AS(rows.to(Device::CPU), doctest::Contains("index_select: index 12 is out of range [0, 10)"),
                         std::out_of_range);
    Tensor good = index_select(table, 0, Tensor::from_vector(std::vector<int64_t>{0, 9}, {2}, Device::CUDA));
    CHECK(good.sum().item() == 8.0);  // the flag was cleared: the next sync is clean
}

TEST_CASE("cuda adam_update_: the fused step equals the CPU's, Adam and AdamW, float32 and float64") {
    for (DType dt : {DType::Float32, DType::Float64}) {
        for (bool adamw : {false, true}) {
            Generator gen(8);
            Tensor p = randn({1000, 3}, gen, dt), g = randn({1000, 3}, gen, dt), m = randn({1000, 3}, gen, dt) * 0.1,
                   v = (randn({1000, 3}, gen, dt) * 0.1).pow(2);
            Tensor pg = p.to(Device::CUDA), gg = g.to(Device::CUDA), mg_ = m.to(Device::CUDA), vg = v.to(Device::CUDA);
            AdamHyper h{.step_size = 1e-3 / (1 - 0.9 * 0.9), .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                        .decay = adamw ? 1 - 1e-3 * 0.01 : 1.0, .l2 = adamw ? 0.0 : 0.01,
                        .inv_sqrt_bias_correction2 = 1 / std::sqrt(1 - 0.999 * 0.999)};
            adam_update_(p, g, m, v, h);
            adam_update_(pg, gg, mg_, vg, h);
            const double tol = dt == DType::Float32 ? 1e-6 : 1e-13;
            CHECK(closeness(pg.to(Device::CPU), p, tol, tol) <= 1.0);
            CHECK(closeness(mg_.to(Device::CPU), m, tol, tol) <= 1.0);
            CHECK(closeness(vg.to(Device::CPU), v, tol, tol) <= 1.0);
        }
    }
}

TEST_CASE("cuda parity: one training step of demo 01's MoE classifier gives the same loss and parameters") {
    Generator g1(4), g2(4);
    SpecializedExpertNetwork cpu(demo01_moe(), g1), gpu(demo01_moe(), g2);
    gpu.to(Device::CUDA);
    Adam opt_cpu(cpu.parameters(), {.lr = 1e-3}), opt_gpu(gpu.parameters(), {.lr = 1e-3});
    Generator data(5);
    Tensor x = randn({64, 20}, data);
    std::vector<int64_t> labels(64);
    for (int64_t i = 0; i < 64; ++i) labels[i] = i % 3;
    Tensor y = Tensor::from_vector(labels, {64});
    for (int step = 0; step < 3; ++step) {
        const double lc = classifier_step(cpu, opt_cpu, x, y);
        const double lg = classifier_step(gpu, opt_gpu, x.to(Device::CUDA), y.to(Device::CUDA));
        CHECK(lg == doctest::Approx(lc).epsilon(1e-5));
    }
    check_same_parameters(cpu, gpu, 1e-4, 1e-5);
}

TEST_CASE("cuda parity: one training step of the MoE language model gives the same loss and parameters") {
    Generator g1(6), g2(6);
    LanguageModel cpu(small_lm(), g1), gpu(small_lm(), g2);
    gpu.to(Device::CUDA);
    Adam opt_cpu(cpu.parameters(), {.lr = 1e-3}), opt_gpu(gpu.parameters(), {.lr = 1e-3});
    std::vector<int64_t> ids(4 * 33);
    Generator data(7);
    for (auto& v : ids) v = data.randint(0, 256);
    Tensor all = Tensor::from_vector(ids, {4, 33});
    Tensor input = all.slice(1, 0, 32).contiguous(), target = all.slice(1, 1, 33).contiguous();
    for (int step = 0; step < 2; ++step) {
        const double lc = lm_step(cpu, opt_cpu, input, target);
        const double lg = lm_step(gpu, opt_gpu, input.to(Device::CUDA), target.to(Device::CUDA));
        CHECK(lg == doctest::Approx(lc).epsilon(1e-4));
    }
    // Looser: float32 sums in another order, through attention, two layers and two Adam steps.
    check_same_parameters(cpu, gpu, 1e-3, 1e-4);
}

}  // TEST_SUITE("cuda")
#endif  // MG_CUDA
