// Attention (engine/ops_attention.cpp, engine/cpu/kernels_attention.cpp): the memory-efficient
// kernel against the straightforward composite (outputs and gradients, float32 and float64),
// finite-difference checks of both, the memory claim in bytes, determinism across thread counts,
// and the errors.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tests/helpers.h"

using namespace mg;
using mg::test::closeness;
using mg::test::rand_input;
using Inputs = std::vector<Tensor>;

namespace {
using AttentionFn = Tensor (*)(const Tensor&, const Tensor&, const Tensor&, bool, double);

struct Run {
    Tensor out, dq, dk, dv;
};

// Forward, then backward with the upstream gradient g, on fresh leaves holding q0, k0, v0's values.
Run run_attention(AttentionFn f, const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& g, bool causal,
                  double scale) {
    Tensor q = q0.detach().clone(), k = k0.detach().clone(), v = v0.detach().clone();
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    Tensor out = f(q, k, v, causal, scale);
    out.backward(g);
    return {out.detach(), q.grad(), k.grad(), v.grad()};
}

// |a - b| <= rtol * (|b| + max(max|b|, 1)): relative to the values, with a floor set by the
// largest one (a gradient entry that cancels to ~0 is compared at the scale of its neighbours;
// with T = 1, dq and dk are exactly 0 in exact arithmetic and rounding-sized in both versions).
void check_close(const Tensor& a, const Tensor& b, double rtol, const char* what) {
    const double biggest = std::max(1.0, max(abs(b.detach())).item());
    const double score = closeness(a, b, rtol, rtol * biggest);
    INFO(what << ": worst |a - b| / (rtol * (|b| + max(max|b|, 1))) = " << score);
    CHECK(score <= 1.0);
}

// q, k, v drawn for (B, H, Tq, Dh) queries and (B, H, Tk, Dh) keys; the two versions compared.
void check_agreement(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t Dh, bool causal, DType dtype,
                     double rtol, uint64_t seed, double q_scale = 1.0) {
    CAPTURE(B);
    CAPTURE(H);
    CAPTURE(Tq);
    CAPTURE(Tk);
    CAPTURE(Dh);
    CAPTURE(causal);
    Generator gen(seed);
    Tensor q = randn({B, H, Tq, Dh}, gen, dtype) * q_scale;
    Tensor k = randn({B, H, Tk, Dh}, gen, dtype);
    Tensor v = randn({B, H, Tk, Dh}, gen, dtype);
    Tensor g = randn({B, H, Tq, Dh}, gen, dtype);
    const double scale = 1.0 / std::sqrt((double)Dh);
    Run fast = run_attention(attention, q, k, v, g, causal, scale);
    Run ref = run_attention(attention_reference, q, k, v, g, causal, scale);
    check_close(fast.out, ref.out, rtol, "out");
    check_close(fast.dq, ref.dq, rtol, "dq");
    check_close(fast.dk, ref.dk, rtol, "dk");
    check_close(fast.dv, ref.dv, rtol, "dv");
}

std::vector<float> values(const Tensor& t) { return t.to_vector<float>(); }
}  // namespace

// ---- agreement with the straightforward version --------------------------------------------------
TEST_CASE("attention agrees with attention_reference, float32 and float64, causal and not") {
    struct Case {
        int64_t B, H, T, Dh;
    };
    // The kernel's tile is 64: below, at, just past, and several tiles with a ragged end.
    const Case cases[] = {{1, 1, 1, 4}, {2, 3, 5, 3}, {2, 2, 63, 8}, {1, 2, 64, 16},
                          {2, 2, 65, 32}, {1, 2, 130, 32}, {2, 1, 200, 5}};
    uint64_t seed = 100;
    for (const Case& c : cases)
        for (bool causal : {true, false}) {
            check_agreement(c.B, c.H, c.T, c.T, c.Dh, causal, DType::Float32, 1e-5, ++seed);
            check_agreement(c.B, c.H, c.T, c.T, c.Dh, causal, DType::Float64, 1e-12, ++seed);
        }
}

TEST_CASE("attention agrees with attention_reference: more keys than queries, and large scores") {
    check_agreement(2, 2, 70, 130, 8, false, DType::Float32, 1e-5, 1);
    check_agreement(2, 2, 70, 130, 8, false, DType::Float64, 1e-12, 2);
    check_agreement(1, 2, 150, 150, 16, false, DType::Float64, 1e-12, 3);
    // Scores in the hundreds: the running max keeps exp() finite, as softmax's max does.
    check_agreement(1, 2, 100, 100, 8, true, DType::Float32, 1e-4, 4, 30.0);
    check_agreement(1, 2, 100, 100, 8, true, DType::Float64, 1e-12, 5, 30.0);
}

TEST_CASE("attention reads strided q, k, v: (B, T, H, Dh) transposed to (B, H, T, Dh)") {
    Generator gen(21);
    Tensor x = randn({2, 90, 3, 3, 8}, gen, DType::Float64);  // (B, T, 3 for q/k/v, H, Dh)
    Tensor q = x.select(2, 0).transpose(1, 2), k = x.select(2, 1).transpose(1, 2), v = x.select(2, 2).transpose(1, 2);
    REQUIRE_FALSE(q.is_contiguous());
    Tensor g = randn({2, 3, 90, 8}, gen, DType::Float64).transpose(2, 3).contiguous().transpose(2, 3);
    REQUIRE_FALSE(g.is_contiguous());
    Run fast = run_attention(attention, q, k, v, g, true, 0.3);
    Run ref = run_attention(attention_reference, q.contiguous(), k.contiguous(), v.contiguous(), g, true, 0.3);
    check_close(fast.out, ref.out, 1e-12, "out");
    check_close(fast.dq, ref.dq, 1e-12, "dq");
    check_close(fast.dk, ref.dk, 1e-12, "dk");
    check_close(fast.dv, ref.dv, 1e-12, "dv");
}

TEST_CASE("attention: causal row 0 copies v's row 0; without grad no graph is recorded") {
    Generator gen(22);
    Tensor q = randn({1, 1, 3, 2}, gen), k = randn({1, 1, 3, 2}, gen), v = randn({1, 1, 3, 2}, gen);
    Tensor out = attention(q, k, v, true, 0.5);
    CHECK(out.at({0, 0, 0, 0}) == doctest::Approx(v.at({0, 0, 0, 0})));
    CHECK(out.at({0, 0, 0, 1}) == doctest::Approx(v.at({0, 0, 0, 1})));
    CHECK_FALSE(out.requires_grad());
    q.set_requires_grad(true);
    {
        NoGradGuard no_grad;
        CHECK_FALSE(attention(q, k, v, true, 0.5).requires_grad());
    }
    CHECK(attention(q, k, v, true, 0.5).requires_grad());
}

// ---- finite differences ----------------------------------------------------------------------------
GRADCHECK(attention, "causal and not, T = 5..9, Dh = 3; more keys than queries; several tiles") {
    for (bool causal : {true, false})
        for (int64_t T : {5, 7, 9}) {
            CAPTURE(causal);
            CAPTURE(T);
            CHECK_GRADIENTS([causal](const Inputs& in) { return attention(in[0], in[1], in[2], causal, 0.6); },
                            {rand_input({2, 2, T, 3}, 200 + T), rand_input({2, 2, T, 3}, 300 + T),
                             rand_input({2, 2, T, 3}, 400 + T)});
        }
    CHECK_GRADIENTS([](const Inputs& in) { return attention(in[0], in[1], in[2], false, 0.5); },
                    {rand_input({1, 2, 4, 3}, 501), rand_input({1, 2, 6, 3}, 502), rand_input({1, 2, 6, 3}, 503)});
    // One tile with its diagonal strips (T <= 128 is a single tile), then past it: several 64-row
    // tiles, so the online rescaling and the tiled backward are checked too.
    for (int64_t T : {70, 140}) {
        CAPTURE(T);
        CHECK_GRADIENTS([](const Inputs& in) { return attention(in[0], in[1], in[2], true, 0.7); },
                        {rand_input({1, 1, T, 2}, 504), rand_input({1, 1, T, 2}, 505), rand_input({1, 1, T, 2}, 506)});
    }
}

GRADCHECK(attention_reference, "causal and not, T = 5..9, Dh = 3") {
    for (bool causal : {true, false})
        for (int64_t T : {5, 8}) {
            CAPTURE(causal);
            CAPTURE(T);
            CHECK_GRADIENTS(
                [causal](const Inputs& in) { return attention_reference(in[0], in[1], in[2], causal, 0.6); },
                {rand_input({2, 2, T, 3}, 600 + T), rand_input({2, 2, T, 3}, 700 + T),
                 rand_input({2, 2, T, 3}, 800 + T)});
        }
}

// ---- memory: O(T) vs O(T^2) --------------------------------------------------------------------------
namespace {
// Peak live bytes above what was live before, over forward + backward of causal attention on
// (1, 2, T, 32) float32 inputs (the inputs and the upstream gradient are allocated beforehand).
int64_t peak_bytes_forward_backward(AttentionFn f, int64_t T) {
    Generator gen(31);
    Tensor q = randn({1, 2, T, 32}, gen), k = randn({1, 2, T, 32}, gen), v = randn({1, 2, T, 32}, gen);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    Tensor g = randn({1, 2, T, 32}, gen);
    const int64_t before = memory_stats(Device::CPU).live_bytes;
    reset_peak_memory(Device::CPU);
    {
        Tensor out = f(q, k, v, true, 1.0 / std::sqrt(32.0));
        out.backward(g);
    }
    return memory_stats(Device::CPU).peak_bytes - before;
}
}  // namespace

TEST_CASE("attention memory: peak bytes grow ~2x from T=1024 to T=2048; the reference's grow ~4x") {
    const int64_t fast_1k = peak_bytes_forward_backward(attention, 1024);
    const int64_t fast_2k = peak_bytes_forward_backward(attention, 2048);
    const int64_t ref_1k = peak_bytes_forward_backward(attention_reference, 1024);
    const int64_t ref_2k = peak_bytes_forward_backward(attention_reference, 2048);
    const double fast_growth = (double)fast_2k / (double)fast_1k, ref_growth = (double)ref_2k / (double)ref_1k;
    char line[256];
    std::snprintf(line, sizeof line,
                  "peak bytes, forward+backward, B=1 H=2 Dh=32 float32: attention %lld -> %lld (x%.2f), "
                  "attention_reference %lld -> %lld (x%.2f)",
                  (long long)fast_1k, (long long)fast_2k, fast_growth, (long long)ref_1k, (long long)ref_2k,
                  ref_growth);
    MESSAGE(line);
    CHECK(fast_growth < 2.5);
    CHECK(ref_growth > 3.5);
    CHECK(fast_2k * 10 < ref_2k);  // and it is far smaller in absolute terms
}

// ---- determinism ------------------------------------------------------------------------------------
TEST_CASE("attention forward and backward are bitwise equal on 1 and 2 threads") {
    Generator gen(41);
    Tensor q = randn({2, 2, 200, 16}, gen), k = randn({2, 2, 200, 16}, gen), v = randn({2, 2, 200, 16}, gen);
    Tensor g = randn({2, 2, 200, 16}, gen);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    Run one = run_attention(attention, q, k, v, g, true, 0.25);
    omp_set_num_threads(2);
    Run two = run_attention(attention, q, k, v, g, true, 0.25);
    omp_set_num_threads(threads);
    CHECK(values(one.out) == values(two.out));
    CHECK(values(one.dq) == values(two.dq));
    CHECK(values(one.dk) == values(two.dk));
    CHECK(values(one.dv) == values(two.dv));
}

// ---- errors ---------------------------------------------------------------------------------------
TEST_CASE("attention errors name the op and the shapes") {
    Tensor q = Tensor::zeros({2, 2, 5, 4}), k = Tensor::zeros({2, 2, 5, 3}), v = Tensor::zeros({2, 2, 5, 4});
    CHECK_THROWS_WITH_AS(attention(q, k, v, true, 1.0),
                         doctest::Contains("attention: q (B, H, Tq, Dh), k and v (B, H, Tk, Dh) must agree, got q "
                                           "[2, 2, 5, 4], k [2, 2, 5, 3], v [2, 2, 5, 4]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(attention_reference(q, k, v, false, 1.0), doctest::Contains("attention_reference: q"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(attention(Tensor::zeros({2, 5, 4}), v, v, true, 1.0),
                         doctest::Contains("expected q, k, v of shape (B, H, T, Dh), got q [2, 5, 4]"),
                         std::invalid_argument);
    Tensor k7 = Tensor::zeros({2, 2, 7, 4});
    CHECK_THROWS_WITH_AS(attention(q, k7, k7, true, 1.0), doctest::Contains("causal attention needs as many queries"),
                         std::invalid_argument);
    CHECK_NOTHROW(attention(q, k7, k7, false, 1.0));
    CHECK_THROWS_WITH_AS(attention(q, v.to(DType::Float64), v, true, 1.0), doctest::Contains("attention"),
                         std::invalid_argument);
    CHECK_THROWS_AS(attention(Tensor::zeros({1, 1, 2, 2}, DType::Int64), Tensor::zeros({1, 1, 2, 2}, DType::Int64),
                              Tensor::zeros({1, 1, 2, 2}, DType::Int64), true, 1.0),
                    std::invalid_argument);
    Tensor out = attention(q, v, v, true, 1.0);
    CHECK_THROWS_WITH_AS(attention_backward(q, v, v, out, Tensor::zeros({2, 2, 4}), out, true, 1.0),
                         doctest::Contains("attention_backward: expected out and grad_out [2, 2, 5, 4] and lse [2, 2, 5]"),
                         std::invalid_argument);
}
