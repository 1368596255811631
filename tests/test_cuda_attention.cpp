// CUDA attention (engine/cuda/kernels_attention.cu) against the CPU kernel it mirrors
// (engine/cpu/kernels_attention.cpp): outputs and gradients through the engine's attention op,
// the forward's logsumexp and a strided grad_out through the kernels directly, head dims that
// take the generic paths, determinism, and the O(T) memory claim on the device.
//
// Tolerances. float32: rtol 1e-4, atol 1e-4. Both sides sum in float32 but in different orders
// (the CPU's packed GEMM against the GPU's 16-dim steps and 16-lane shuffle trees; the CPU keeps
// the running max and sum in double), and the gradients pile up several such sums (dS = P (dP - D)
// subtracts two O(sqrt(Dh)) numbers, then dq, dk, dv sum up to T of those). Observed gaps of
// float32 sums of a few hundred O(1) terms are ~1e-6 relative; 1e-4 leaves room for the
// cancellation in dS without hiding a wrong mask or a lost tile (those are O(1) errors). The atol
// covers entries that cancel to ~0 (with T = 1, dq and dk are 0 in exact arithmetic).
// float64: rtol 1e-10, atol 1e-10, the same reasoning at double's epsilon.
// (Before any GPU run, these kernels were run through a CPU emulation of the CUDA thread model
// on the shapes below: the worst gap was under 1% of these tolerances, in both dtypes.)
#include <cmath>
#include <cstdio>

#include "engine/backend.h"
#include "tests/cuda_parity.h"

using namespace mg;
using mg::test::check_cuda_parity;
using mg::test::closeness;
using mg::test::ParityTolerance;
using mg::test::randn_input;

namespace {

constexpr ParityTolerance kFloat32Tol{1e-4, 1e-4};
constexpr ParityTolerance kFloat64Tol{1e-10, 1e-10};

// Parity of out, dq, dk, dv for (B, H, Tq, Dh) queries and (B, H, Tk, Dh) keys.
void check_attention_parity(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t Dh, bool causal, DType dtype,
                            uint64_t seed, double q_scale = 1.0) {
    CAPTURE(B);
    CAPTURE(H);
    CAPTURE(Tq);
    CAPTURE(Tk);
    CAPTURE(Dh);
    CAPTURE(causal);
    const double scale = 1.0 / std::sqrt((double)std::max<int64_t>(Dh, 1));
    Tensor q = randn_input({B, H, Tq, Dh}, seed, dtype);
    if (q_scale != 1.0) {  // large scores: a fresh leaf holding q * q_scale
        q = (q.detach() * q_scale).detach();
        q.set_requires_grad(true);
    }
    check_cuda_parity(
        "attention", [causal, scale](const std::vector<Tensor>& in) {
            return std::vector<Tensor>{attention(in[0], in[1], in[2], causal, scale)};
        },
        {q, randn_input({B, H, Tk, Dh}, seed + 1, dtype), randn_input({B, H, Tk, Dh}, seed + 2, dtype)},
        dtype == DType::Float64 ? kFloat64Tol : kFloat32Tol);
}

struct Grads {
    Tensor out, dq, dk, dv;
};

// Forward and backward of attention on device copies of q, k, v with upstream gradient g.
Grads run_on(Device device, const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& g, bool causal,
             double scale) {
    Tensor q = q0.detach().to(device), k = k0.detach().to(device), v = v0.detach().to(device);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    Tensor out = attention(q, k, v, causal, scale);
    out.backward(g.to(device));
    return {out.detach().to(Device::CPU), q.grad().to(Device::CPU), k.grad().to(Device::CPU),
            v.grad().to(Device::CPU)};
}

}  // namespace

TEST_SUITE("cuda") {

// ---- parity through the op (forward and backward) ----------------------------------------------------
TEST_CASE("cuda attention: float32 parity with the CPU, T = 1..300, Dh = 16 and 64, causal and not") {
    struct Heads {
        int64_t B, H;
    };
    // The float32 tile is 64 rows: below, at, just past and several tiles with a ragged end.
    const Heads heads[] = {{1, 1}, {2, 3}, {1, 4}, {3, 2}};
    uint64_t seed = 1000;
    int which = 0;
    for (int64_t T : {1, 7, 64, 129, 300})
        for (int64_t Dh : {16, 64})
            for (bool causal : {true, false}) {
                const Heads& bh = heads[which++ % 4];
                check_attention_parity(bh.B, bh.H, T, T, Dh, causal, DType::Float32, seed += 10);
            }
}

TEST_CASE("cuda attention: float64 parity (tile 32), odd head dims and Dh > 128 (several column slices)") {
    uint64_t seed = 2000;
    for (bool causal : {true, false}) {
        check_attention_parity(2, 2, 7, 7, 16, causal, DType::Float64, seed += 10);
        check_attention_parity(1, 3, 129, 129, 64, causal, DType::Float64, seed += 10);
        check_attention_parity(1, 2, 33, 33, 5, causal, DType::Float64, seed += 10);     // Dh not a multiple of 16
        check_attention_parity(1, 1, 70, 70, 160, causal, DType::Float64, seed += 10);   // 2 slices of 128 columns
        check_attention_parity(2, 1, 65, 65, 3, causal, DType::Float32, seed += 10);     // the same in float32
        check_attention_parity(1, 2, 100, 100, 128, causal, DType::Float32, seed += 10);  // exactly one slice of 128
        check_attention_parity(1, 1, 70, 70, 200, causal, DType::Float32, seed += 10);
        check_attention_parity(1, 2, 50, 50, 1, causal, DType::Float32, seed += 10);
    }
}

TEST_CASE("cuda attention: more keys than queries (non-causal), large scores, and no queries") {
    check_attention_parity(2, 2, 70, 130, 16, false, DType::Float32, 3001);
    check_attention_parity(1, 2, 130, 70, 32, false, DType::Float32, 3002);
    check_attention_parity(2, 2, 70, 130, 8, false, DType::Float64, 3003);
    // Scores in the hundreds: the running max must keep exp() finite. In float32 one ulp of a
    // score of ~300 is ~3e-5, which exp() turns into relative errors of that size in P on both
    // sides independently, so this case is compared in float64, where the tolerance stays tight.
    check_attention_parity(1, 2, 100, 100, 8, true, DType::Float64, 3004, 30.0);
    check_attention_parity(1, 2, 100, 100, 8, false, DType::Float64, 3005, 30.0);
    // Tq = 0, Tk = 5: an empty output; dk and dv are zeros (every key row still written).
    check_attention_parity(1, 2, 0, 5, 16, false, DType::Float32, 3006);
}

TEST_CASE("cuda attention: strided q, k, v ((B, T, H, Dh) transposed to (B, H, T, Dh)), causal and not") {
    for (bool causal : {true, false}) {
        CAPTURE(causal);
        // One (B, T, 3, H, Dh) tensor holding q, k and v, as a fused projection produces them.
        check_cuda_parity(
            "attention on transposed views", [causal](const std::vector<Tensor>& in) {
                Tensor q = in[0].select(2, 0).transpose(1, 2), k = in[0].select(2, 1).transpose(1, 2),
                       v = in[0].select(2, 2).transpose(1, 2);
                return std::vector<Tensor>{attention(q, k, v, causal, 0.3)};
            },
            {randn_input({2, 90, 3, 3, 16}, 4000 + causal)}, kFloat32Tol);
    }
}

// ---- the kernels directly: lse, and a strided grad_out -------------------------------------------------
TEST_CASE("cuda attention: the forward's logsumexp, and the backward with a strided grad_out, match the CPU") {
    for (DType dtype : {DType::Float32, DType::Float64})
        for (bool causal : {true, false}) {
            CAPTURE(causal);
            const ParityTolerance tol = dtype == DType::Float64 ? kFloat64Tol : kFloat32Tol;
            Generator gen(5000 + causal);
            const int64_t B = 2, H = 3, T = 150, Dh = 32;
            Tensor q = randn({B, H, T, Dh}, gen, dtype), k = randn({B, H, T, Dh}, gen, dtype),
                   v = randn({B, H, T, Dh}, gen, dtype);
            // (B, H, Dh, T) stored, viewed as (B, H, T, Dh): the last dim has stride T.
            Tensor g = randn({B, H, Dh, T}, gen, dtype).transpose(2, 3);
            REQUIRE_FALSE(g.is_contiguous());
            Attrs attrs;
            attrs.flag = causal;
            attrs.scalar = 0.2;
            Tensor out_cpu = Tensor::empty({B, H, T, Dh}, dtype), lse_cpu = Tensor::empty({B, H, T}, dtype);
            run_kernel(OpId::attention, {q, k, v}, {out_cpu, lse_cpu}, attrs);
            Tensor qc = q.to(Device::CUDA), kc = k.to(Device::CUDA), vc = v.to(Device::CUDA);
            Tensor out_gpu = Tensor::empty({B, H, T, Dh}, dtype, Device::CUDA);
            Tensor lse_gpu = Tensor::empty({B, H, T}, dtype, Device::CUDA);
            run_kernel(OpId::attention, {qc, kc, vc}, {out_gpu, lse_gpu}, attrs);
            CHECK(closeness(out_gpu.to(Device::CPU), out_cpu, tol.rtol, tol.atol) <= 1.0);
            CHECK(closeness(lse_gpu.to(Device::CPU), lse_cpu, tol.rtol, tol.atol) <= 1.0);

            AttentionGrads cpu = attention_backward(q, k, v, out_cpu, lse_cpu, g, causal, 0.2);
            // The same strided layout on the device: copy the storage order, then transpose.
            Tensor g_gpu = g.transpose(2, 3).to(Device::CUDA).transpose(2, 3);
            REQUIRE_FALSE(g_gpu.is_contiguous());
            AttentionGrads gpu = attention_backward(qc, kc, vc, out_gpu, lse_gpu, g_gpu, causal, 0.2);
            CHECK(closeness(gpu.q.to(Device::CPU), cpu.q, tol.rtol, tol.atol) <= 1.0);
            CHECK(closeness(gpu.k.to(Device::CPU), cpu.k, tol.rtol, tol.atol) <= 1.0);
            CHECK(closeness(gpu.v.to(Device::CPU), cpu.v, tol.rtol, tol.atol) <= 1.0);
        }
}

// ---- determinism ------------------------------------------------------------------------------------
TEST_CASE("cuda attention: forward and backward are bitwise equal run after run") {
    Generator gen(6000);
    const Shape shape{2, 3, 300, 64};
    Tensor q = randn(shape, gen), k = randn(shape, gen), v = randn(shape, gen), g = randn(shape, gen);
    for (bool causal : {true, false}) {
        CAPTURE(causal);
        Grads one = run_on(Device::CUDA, q, k, v, g, causal, 0.125);
        Grads two = run_on(Device::CUDA, q, k, v, g, causal, 0.125);
        CHECK(one.out.to_vector<float>() == two.out.to_vector<float>());
        CHECK(one.dq.to_vector<float>() == two.dq.to_vector<float>());
        CHECK(one.dk.to_vector<float>() == two.dk.to_vector<float>());
        CHECK(one.dv.to_vector<float>() == two.dv.to_vector<float>());
    }
}

// ---- memory: O(T) on the device --------------------------------------------------------------------------
namespace {
// Peak live device bytes above what was live before, over the forward (and the backward when
// `backward`) of causal attention on (1, 2, T, 32) float32 inputs allocated beforehand.
int64_t device_peak_bytes(int64_t T, bool backward) {
    Generator gen(31);
    Tensor q = randn({1, 2, T, 32}, gen).to(Device::CUDA), k = randn({1, 2, T, 32}, gen).to(Device::CUDA),
           v = randn({1, 2, T, 32}, gen).to(Device::CUDA), g = randn({1, 2, T, 32}, gen).to(Device::CUDA);
    for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
    const int64_t before = memory_stats(Device::CUDA).live_bytes;
    reset_peak_memory(Device::CUDA);
    {
        Tensor out = attention(q, k, v, true, 1.0 / std::sqrt(32.0));
        if (backward) out.backward(g);
        (void)out.to(Device::CPU);  // wait for the GPU, so that any kernel error surfaces here
    }
    return memory_stats(Device::CUDA).peak_bytes - before;
}
}  // namespace

TEST_CASE("cuda attention memory: device peak bytes grow ~2x from T=1024 to T=2048 (no T x T tensor)") {
    for (bool backward : {false, true}) {
        CAPTURE(backward);
        const int64_t at_1k = device_peak_bytes(1024, backward), at_2k = device_peak_bytes(2048, backward);
        char line[200];
        std::snprintf(line, sizeof line, "CUDA attention peak device bytes (%s), B=1 H=2 Dh=32: %lld -> %lld (x%.2f)",
                      backward ? "forward+backward" : "forward", (long long)at_1k, (long long)at_2k,
                      (double)at_2k / (double)at_1k);
        MESSAGE(line);
        CHECK(at_1k > 0);
        CHECK((double)at_2k < 2.5 * (double)at_1k);
        // A (T, T) float32 score matrix per head would be 2 * 2048^2 * 4 = 32 MiB at T = 2048.
        CHECK(at_2k < 2 * 2048 * 2048 * 4);
    }
}

}  // TEST_SUITE("cuda")
