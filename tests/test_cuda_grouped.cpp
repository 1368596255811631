// tests/test_cuda_grouped.cpp: grouped_matmul on the GPU (engine/cuda/kernels_grouped.cu) against
// the CPU kernel, and the MoE layer's grouped schedule on the GPU against the CPU. Test suite "cuda".
#include <doctest.h>

#include "nn/moe.h"
#include "tests/cuda_parity.h"

using namespace mg;
using mg::test::check_cuda_parity;
using mg::test::randn_input;

#ifdef MG_CUDA
TEST_SUITE("cuda") {

TEST_CASE("cuda grouped_matmul: values and gradients equal the CPU's for ragged groups") {
    struct Case {
        std::vector<int64_t> sizes;  // rows per group
        int64_t K, M;
    };
    const std::vector<Case> cases = {
        {{1}, 1, 1},
        {{3, 0, 5}, 7, 9},                  // an empty group
        {{64, 65, 1, 0, 130}, 20, 64},      // groups across tile edges
        {{100, 37, 250, 3, 0, 0, 77, 512}, 256, 96},
        {{0, 0, 0}, 8, 8},                  // no rows at all
    };
    for (const Case& c : cases) {
        std::vector<int64_t> off{0};
        for (int64_t n : c.sizes) off.push_back(off.back() + n);
        const int64_t G = (int64_t)c.sizes.size(), N = off.back();
        INFO("groups " << G << " rows " << N << " K " << c.K << " M " << c.M);
        Tensor offsets = Tensor::from_vector(off, {G + 1});
        auto f = [offsets](const std::vector<Tensor>& in) {
            return std::vector<Tensor>{grouped_matmul(in[0], in[1], offsets.to(in[0].device()))};
        };
        // K up to 256 terms per dot product, in another order than the CPU GEMM's.
        check_cuda_parity("grouped_matmul", f, {randn_input({N, c.K}, 1), randn_input({G, c.M, c.K}, 2)},
                          {.rtol = 1e-4, .atol = 1e-4});
    }
}

TEST_CASE("cuda grouped_matmul: bad offsets are raised at the next synchronisation") {
    Tensor x = Tensor::ones({5, 3}).to(Device::CUDA), w = Tensor::ones({2, 4, 3}).to(Device::CUDA);
    Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, 7, 5}, {3}, Device::CUDA);  // 7 > 5 rows
    Tensor y = grouped_matmul(x, w, bad);
    CHECK_THROWS_WITH_AS(y.to(Device::CPU), doctest::Contains("grouped_matmul: index 7 is out of range [0, 6)"),
                         std::out_of_range);
}

TEST_CASE("cuda moe layer: the grouped schedule on the GPU equals the serial schedule on the CPU") {
    nn::MoEConfig c;
    c.d_in = 32;
    c.hidden = {64};
    c.d_out = 16;
    c.experts = 8;
    c.k = 2;
    Generator g1(3), g2(3);
    c.schedule = nn::ExpertSchedule::Serial;
    nn::SpecializedExpertNetwork cpu(c, g1);
    c.schedule = nn::ExpertSchedule::Auto;  // Grouped on the GPU
    nn::SpecializedExpertNetwork gpu(c, g2);
    gpu.to(Device::CUDA);
    Tensor x = randn_input({300, 32}, 4);
    Tensor xc = x.detach().clone().set_requires_grad(true), xg = x.detach().to(Device::CUDA).set_requires_grad(true);
    Tensor yc = cpu(xc).y, yg = gpu(xg).y;
    CHECK(mg::test::closeness(yg.to(Device::CPU), yc, 1e-5, 1e-5) <= 1.0);
    sum(yc * yc).backward();
    sum(yg * yg).backward();
    CHECK(mg::test::closeness(xg.grad().to(Device::CPU), xc.grad(), 1e-4, 1e-4) <= 1.0);
    auto pc = cpu.named_parameters(), pg = gpu.named_parameters();
    for (size_t i = 0; i < pc.size(); ++i) {
        INFO(pc[i].first);
        CHECK(mg::test::closeness(mg::test::grad_or_zeros(pg[i].second).to(Device::CPU),
                                  mg::test::grad_or_zeros(pc[i].second), 1e-4, 1e-4) <= 1.0);
    }
}

}  // TEST_SUITE("cuda")
#endif  // MG_CUDA
