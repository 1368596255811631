// CUDA GEMM and matmul against the CPU (test suite "cuda": skipped, with one line, without a GPU).
//
// Two levels:
//  - every numbered SGEMM version (engine/cuda/gemm.h) on raw device pointers, against the CPU's
//    plain sgemm_reference, over sizes that are 1, odd, not multiples of any tile, with transposed
//    operands, padded leading dimensions, alpha/beta, batches (broadcast and > 65535 products);
//    the dispatcher's choice; determinism;
//  - the matmul op on CUDA tensors with check_cuda_parity: forward and gradients for 2-D, batched,
//    broadcast-batch, transposed, strided and 1-D operands, float32 and float64.
//
// Tolerances. A float32 dot product of length K computed in any order is within about K * 2^-24
// times sum_k |a_k b_k| of the exact value (the classic error bound for summation), and so is the
// CPU reference; the GEMM tests allow (K + 2) * FLT_EPSILON * (|alpha| sum_k |A B| + |beta C|)
// per element, which a wrong index (an error of the size of the values) can never meet.
// The matmul parity tests use rtol = atol = 1e-4 for float32 (K <= 512, values of size ~sqrt(K))
// and 1e-10 for float64.
#include <doctest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "tests/cuda_parity.h"
#ifdef MG_CUDA
#include "engine/cpu/gemm.h"
#include "engine/cuda/gemm.h"
#endif

using namespace mg;
using namespace mg::test;

namespace {

// Elements where |got - want| > atol + rtol * |want|, a NaN on either side (but not both) counting as
// a mismatch (written as !(diff <= bound) so that a NaN fails).
int64_t mismatches(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol) {
    int64_t bad = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        if (std::isnan(got[i]) && std::isnan(want[i])) continue;
        bad += !(std::abs(got[i] - want[i]) <= atol + rtol * std::abs(want[i]));
    }
    return bad;
}
int64_t mismatches(const Tensor& got, const Tensor& want, double rtol, double atol) {
    REQUIRE(got.shape() == want.shape());
    return mismatches(got.to(Device::CPU).to_vector<double>(), want.to_vector<double>(), rtol, atol);
}

}  // namespace

#ifdef MG_CUDA
using cuda::GemmArgs;
using cuda::SgemmVersion;

namespace {

const SgemmVersion kAllVersions[] = {SgemmVersion::naive, SgemmVersion::smem_tiled, SgemmVersion::register_blocked,
                                     SgemmVersion::vectorized, SgemmVersion::double_buffered};

struct GemmCase {
    int64_t M, N, K;
    bool trans_a = false, trans_b = false;
    float alpha = 1, beta = 0;
    bool pad = true;  // leading dimensions rounded up to a multiple of 4 (what v4/v5 need); else tight
};

int64_t round_up4(int64_t x) { return (x + 3) / 4 * 4; }

// One problem: host matrices, their device copies and the GemmArgs pointing at the device copies.
// A stored matrix is `rows x ld` row-major; an operand may be stored transposed (trans_a: A is
// stored K x M and read with strides (1, ld)). Padding columns hold random values, which a correct
// kernel never reads (A, B) or writes (C).
struct GemmProblem {
    GemmCase c;
    Tensor a, b, c0;           // host: A storage, B storage, C before the call
    Tensor da, db, dc;         // device copies
    int64_t rs_a, cs_a, rs_b, cs_b, ldc;
    std::vector<float> want;        // the CPU's C after the call
    std::vector<double> allowed;    // per-element error allowance

    GemmProblem(const GemmCase& gc, uint64_t seed) : c(gc) {
        Generator gen(seed);
        auto ld = [&](int64_t cols) { return c.pad ? round_up4(cols) : cols; };
        const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
        const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
        const int64_t lda = ld(a_cols), ldb = ld(b_cols);
        ldc = ld(c.N);
        a = randn({a_rows, lda}, gen);
        b = randn({b_rows, ldb}, gen);
        c0 = randn({c.M, ldc}, gen);
        if (c.beta == 0) {  // beta == 0: C is write-only, so NaNs in it must not reach the result
            Tensor nan_in_valid_part = c0.clone();
            float* p = nan_in_valid_part.data_ptr<float>();
            for (int64_t i = 0; i < c.M; ++i)
                for (int64_t j = 0; j < c.N; ++j) p[i * ldc + j] = std::numeric_limits<float>::quiet_NaN();
            c0 = nan_in_valid_part;
        }
        rs_a = c.trans_a ? 1 : lda;
        cs_a = c.trans_a ? lda : 1;
        rs_b = c.trans_b ? 1 : ldb;
        cs_b = c.trans_b ? ldb : 1;
        da = a.to(Device::CUDA);
        db = b.to(Device::CUDA);
        dc = c0.to(Device::CUDA);
        expected(want, allowed);
    }

    GemmArgs<float> args() const {
        GemmArgs<float> g;
        g.M = c.M;
        g.N = c.N;
        g.K = c.K;
        g.alpha = c.alpha;
        g.A = da.data_ptr<float>();
        g.rs_a = rs_a;
        g.cs_a = cs_a;
        g.B = db.data_ptr<float>();
        g.rs_b = rs_b;
        g.cs_b = cs_b;
        g.beta = c.beta;
        g.C = dc.data_ptr<float>();
        g.rs_c = ldc;
        g.cs_c = 1;
        return g;
    }

    void reset_c() { dc = c0.to(Device::CUDA); }

    // The CPU reference result, and the per-element error allowance (see the file's header).
    void expected(std::vector<float>& ref_values, std::vector<double>& allowance) const {
        Tensor ref = c0.clone();
        cpu::sgemm_reference(c.M, c.N, c.K, c.alpha, a.data_ptr<float>(), rs_a, cs_a, b.data_ptr<float>(), rs_b, cs_b,
                             c.beta, ref.data_ptr<float>(), ldc, 1);
        ref_values = ref.to_vector<float>();
        const float* pa = a.data_ptr<float>();
        const float* pb = b.data_ptr<float>();
        const float* pc = c0.data_ptr<float>();
        allowance.assign(ref_values.size(), 0.0);
        for (int64_t i = 0; i < c.M; ++i)
            for (int64_t j = 0; j < c.N; ++j) {
                double s = 0;
                for (int64_t k = 0; k < c.K; ++k) s += std::abs((double)pa[i * rs_a + k * cs_a] * pb[k * rs_b + j * cs_b]);
                s *= std::abs(c.alpha);
                if (c.beta != 0) s += std::abs((double)c.beta * pc[i * ldc + j]);
                allowance[i * ldc + j] = (c.K + 2) * (double)FLT_EPSILON * s + 1e-30;
            }
    }

    // Compares the device C with the reference; padding columns must be untouched (bitwise).
    void check_result(const char* what) const {
        std::vector<float> got = dc.to(Device::CPU).to_vector<float>();
        std::vector<float> before = c0.to_vector<float>();
        int64_t bad = 0, first_bad = -1;
        for (int64_t i = 0; i < c.M; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
                const int64_t e = i * ldc + j;
                const bool ok = j < c.N ? std::abs((double)got[e] - want[e]) <= allowed[e]
                                        : std::memcmp(&got[e], &before[e], sizeof(float)) == 0;
                if (!ok && bad++ == 0) first_bad = e;
            }
        INFO(what << " M=" << c.M << " N=" << c.N << " K=" << c.K << " trans_a=" << c.trans_a << " trans_b=" << c.trans_b
                  << " alpha=" << c.alpha << " beta=" << c.beta << " pad=" << c.pad);
        if (first_bad >= 0)
            INFO("first bad element (" << first_bad / ldc << ", " << first_bad % ldc << "): got " << got[first_bad]
                                       << ", want " << want[first_bad]);
        CHECK(bad == 0);
    }
};

std::vector<GemmCase> gemm_cases() {
    std::vector<GemmCase> cases;
    const int64_t shapes[][3] = {{1, 1, 1},     {7, 13, 5},    {64, 64, 64},  {129, 65, 257}, {256, 512, 128},
                                 {1, 300, 33},  {300, 1, 33},  {33, 35, 1},   {128, 128, 8},  {130, 258, 9},
                                 {200, 70, 0}};
    for (const auto& s : shapes)
        for (int t = 0; t < 4; ++t) cases.push_back({s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0});
    cases.push_back({65, 67, 31, false, false, 0.5f, 2.0f});   // alpha and beta
    cases.push_back({130, 129, 20, true, false, -1.5f, 1.0f}); // beta = 1 accumulates
    cases.push_back({70, 90, 17, false, true, 1.0f, 0.0f, false});  // tight, unaligned leading dims
    cases.push_back({64, 64, 64, false, false, 1.0f, 0.5f, false});  // tight and aligned
    return cases;
}

}  // namespace
#endif  // MG_CUDA

TEST_SUITE("cuda") {
#ifdef MG_CUDA
    TEST_CASE("cuda sgemm: every version matches the CPU reference on many shapes, layouts, alpha and beta") {
        uint64_t seed = 1;
        for (const GemmCase& gc : gemm_cases()) {
            GemmProblem p(gc, seed++);
            for (SgemmVersion v : kAllVersions) {
                std::string why;
                if (!cuda::sgemm_version_supports(v, p.args(), &why)) {
                    // Only v4/v5 have requirements, and only unaligned leading dimensions break them here.
                    CHECK((int)v >= 4);
                    CHECK_FALSE(gc.pad);
                    CHECK_THROWS_AS(cuda::sgemm_run_version(v, p.args()), std::invalid_argument);
                    continue;
                }
                p.reset_c();
                cuda::sgemm_run_version(v, p.args());
                p.check_result(cuda::sgemm_version_name(v));
            }
        }
    }

    TEST_CASE("cuda sgemm: v4/v5 refuse misaligned operands; v1-v3 still compute them") {
        GemmProblem p({96, 96, 40}, 77);
        GemmArgs<float> g = p.args();
        g.M = 95;
        g.A = g.A + 1;  // row 0 now starts 4 bytes in: not 16-byte aligned
        for (SgemmVersion v : kAllVersions) {
            std::string why;
            const bool ok = cuda::sgemm_version_supports(v, g, &why);
            CHECK(ok == ((int)v <= 3));
            if (!ok) CHECK(why.find("aligned") != std::string::npos);
        }
        CHECK(cuda::sgemm_pick_version(g) == SgemmVersion::register_blocked);
        // The result of the shifted problem, against the CPU on the same shifted host data.
        Tensor shifted_a = p.a.flatten().slice(0, 1, p.a.numel()).contiguous();
        for (SgemmVersion v : {SgemmVersion::naive, SgemmVersion::smem_tiled, SgemmVersion::register_blocked}) {
            p.reset_c();
            g.C = p.dc.data_ptr<float>();
            cuda::sgemm_run_version(v, g);
            std::vector<float> got = p.dc.to(Device::CPU).to_vector<float>();
            Tensor ref = p.c0.clone();
            cpu::sgemm_reference(g.M, g.N, g.K, 1.0f, shifted_a.data_ptr<float>(), p.rs_a, p.cs_a, p.b.data_ptr<float>(),
                                 p.rs_b, p.cs_b, 0.0f, ref.data_ptr<float>(), p.ldc, 1);
            std::vector<float> want = ref.to_vector<float>();
            std::vector<double> got_rows, want_rows;  // the M x N results, padding left out
            for (int64_t i = 0; i < g.M; ++i)
                for (int64_t j = 0; j < g.N; ++j) {
                    got_rows.push_back(got[i * p.ldc + j]);
                    want_rows.push_back(want[i * p.ldc + j]);
                }
            INFO(cuda::sgemm_version_name(v));
            CHECK(mismatches(got_rows, want_rows, 1e-4, 1e-4) == 0);  // values ~sqrt(40); a wrong index errs by ~1
        }
    }

    TEST_CASE("cuda sgemm: batches (broadcast B, strided A and C, more than 65535 products) in every version") {
        // 3 products: A_z = A + z*M*K, one shared B (stride 0), C_z = C + z*M*N.
        const int64_t batch = 3, M = 37, N = 44, K = 20;
        Generator gen(5);
        Tensor a = randn({batch, M, K}, gen), b = randn({K, N}, gen);
        Tensor want = Tensor::empty({batch, M, N});
        for (int64_t z = 0; z < batch; ++z)
            cpu::sgemm_reference(M, N, K, 1.0f, a.data_ptr<float>() + z * M * K, K, 1, b.data_ptr<float>(), N, 1, 0.0f,
                                 want.data_ptr<float>() + z * M * N, N, 1);
        Tensor da = a.to(Device::CUDA), db = b.to(Device::CUDA);
        for (SgemmVersion v : kAllVersions) {
            Tensor dc = Tensor::empty({batch, M, N}, DType::Float32, Device::CUDA);
            GemmArgs<float> g{M, N, K, 1.0f, da.data_ptr<float>(), K, 1, db.data_ptr<float>(), N, 1, 0.0f,
                              dc.data_ptr<float>(), N, 1, cuda::strided_batch(batch, M * K, 0, M * N)};
            cuda::sgemm_run_version(v, g);
            INFO(cuda::sgemm_version_name(v));
            CHECK(mismatches(dc, want, 1e-4, 1e-4) == 0);
        }
        // 70000 products of 1x1x1 (strides of 4 floats, so v4/v5 accept them): more than the
        // 65535 blocks CUDA allows along z, so the host splits the batch into several launches.
        const int64_t many = 70000;
        Tensor x = randn({many, 4}, gen), y = randn({many, 4}, gen);
        std::vector<float> vx = x.to_vector<float>(), vy = y.to_vector<float>();
        Tensor dx = x.to(Device::CUDA), dy = y.to(Device::CUDA);
        for (SgemmVersion v : kAllVersions) {
            Tensor dz = Tensor::zeros({many, 4}).to(Device::CUDA);
            // Row strides of 4 (unused: one row) make each operand's layout one v4/v5 accept.
            GemmArgs<float> g{1, 1, 1, 2.0f, dx.data_ptr<float>(), 4, 1, dy.data_ptr<float>(), 1, 4, 0.0f,
                              dz.data_ptr<float>(), 4, 1, cuda::strided_batch(many, 4, 4, 4)};
            cuda::sgemm_run_version(v, g);
            std::vector<float> vz = dz.to(Device::CPU).to_vector<float>();
            int64_t bad = 0;
            for (int64_t z = 0; z < many; ++z) {
                bad += vz[z * 4] != 2.0f * vx[z * 4] * vy[z * 4];  // one product: exact
                bad += vz[z * 4 + 1] != 0.0f || vz[z * 4 + 2] != 0.0f || vz[z * 4 + 3] != 0.0f;
            }
            INFO(cuda::sgemm_version_name(v));
            CHECK(bad == 0);
        }
    }

    TEST_CASE("cuda sgemm: more rows than one launch's grid holds (v1 and v2 split them)") {
        // v1's blocks cover 8 rows and v2's 32: 2.2 million rows need more than 65535 blocks along y.
        const int64_t M = 2200000;
        Generator gen(9);
        Tensor a = randn({M, 1}, gen);
        std::vector<float> va = a.to_vector<float>();
        Tensor da = a.to(Device::CUDA), db = Tensor::full({1, 1}, 3.0).to(Device::CUDA);
        for (SgemmVersion v : {SgemmVersion::naive, SgemmVersion::smem_tiled}) {
            Tensor dc = Tensor::empty({M, 1}, DType::Float32, Device::CUDA);
            cuda::sgemm_run_version(v, GemmArgs<float>{M, 1, 1, 1.0f, da.data_ptr<float>(), 1, 1, db.data_ptr<float>(), 1,
                                                       1, 0.0f, dc.data_ptr<float>(), 1, 1, cuda::single_product()});
            std::vector<float> vc = dc.to(Device::CPU).to_vector<float>();
            int64_t bad = 0;
            for (int64_t i = 0; i < M; ++i) bad += vc[i] != 3.0f * va[i];
            INFO(cuda::sgemm_version_name(v));
            CHECK(bad == 0);
        }
    }

    TEST_CASE("cuda sgemm: the dispatcher picks v5 when aligned, v3 otherwise, v2 for thin C; results are right") {
        GemmProblem aligned({256, 256, 256}, 11);
        CHECK(cuda::sgemm_pick_version(aligned.args()) == SgemmVersion::double_buffered);
        GemmProblem transposed({256, 192, 100, true, true}, 12);
        CHECK(cuda::sgemm_pick_version(transposed.args()) == SgemmVersion::double_buffered);
        GemmProblem unaligned({256, 250, 99, false, false, 1.0f, 0.0f, false}, 13);  // lda = 99, ldb = 250
        CHECK(cuda::sgemm_pick_version(unaligned.args()) == SgemmVersion::register_blocked);
        GemmProblem thin({16, 512, 64}, 14);
        CHECK(cuda::sgemm_pick_version(thin.args()) == SgemmVersion::smem_tiled);
        for (GemmProblem* p : {&aligned, &transposed, &unaligned, &thin}) {
            const GemmArgs<float> g = p->args();
            cuda::sgemm(g.M, g.N, g.K, g.alpha, g.A, g.rs_a, g.cs_a, g.B, g.rs_b, g.cs_b, g.beta, g.C, g.rs_c, g.cs_c);
            p->check_result("sgemm (dispatcher)");
        }
    }

    TEST_CASE("cuda sgemm: deterministic, and v4 and v5 bitwise equal (same additions in the same order)") {
        GemmProblem p({300, 260, 333, false, true}, 21);
        auto run = [&](SgemmVersion v) {
            p.reset_c();
            cuda::sgemm_run_version(v, p.args());
            return p.dc.to(Device::CPU).to_vector<float>();
        };
        std::vector<float> first = run(SgemmVersion::double_buffered), second = run(SgemmVersion::double_buffered);
        std::vector<float> v4 = run(SgemmVersion::vectorized);
        CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(first.data(), v4.data(), first.size() * sizeof(float)) == 0);
    }

    TEST_CASE("cuda sgemm: alpha = 0 ignores A and B (even NaN): C = beta * C, as on the CPU") {
        // N a multiple of 4, so that v4 and v5 accept B's rows (their vector loads need it).
        const int64_t M = 70, N = 132, K = 12;
        Generator gen(41);
        Tensor c0 = randn({M, N}, gen);
        Tensor a = Tensor::full({M, K}, std::nan("")).to(Device::CUDA);
        Tensor b = Tensor::full({K, N}, std::nan("")).to(Device::CUDA);
        std::vector<float> before = c0.to_vector<float>();
        for (SgemmVersion v : kAllVersions) {
            Tensor dc = c0.to(Device::CUDA);
            cuda::sgemm_run_version(v, GemmArgs<float>{M, N, K, 0.0f, a.data_ptr<float>(), K, 1, b.data_ptr<float>(), N, 1,
                                                       2.0f, dc.data_ptr<float>(), N, 1, cuda::single_product()});
            std::vector<float> got = dc.to(Device::CPU).to_vector<float>();
            int64_t bad = 0;
            for (size_t e = 0; e < got.size(); ++e) bad += got[e] != 2.0f * before[e];
            INFO(cuda::sgemm_version_name(v));
            CHECK(bad == 0);
        }
    }

    TEST_CASE("cuda dgemm: float64 GEMM matches the CPU, transposed and strided") {
        const int64_t M = 45, N = 33, K = 70;
        Generator gen(31);
        Tensor a = randn({K, M}, gen, DType::Float64);  // used transposed: A(i,k) = a[k*M + i]
        Tensor b = randn({K, N}, gen, DType::Float64);
        Tensor want = Tensor::empty({M, N}, DType::Float64);
        cpu::dgemm_reference(M, N, K, 0.5, a.data_ptr<double>(), 1, M, b.data_ptr<double>(), N, 1, 0.0,
                             want.data_ptr<double>(), N, 1);
        Tensor da = a.to(Device::CUDA), db = b.to(Device::CUDA);
        Tensor dc = Tensor::empty({M, N}, DType::Float64, Device::CUDA);
        cuda::dgemm(M, N, K, 0.5, da.data_ptr<double>(), 1, M, db.data_ptr<double>(), N, 1, 0.0, dc.data_ptr<double>(), N, 1);
        CHECK(mismatches(dc, want, 1e-12, 1e-12) == 0);
    }
#endif  // MG_CUDA

    // ---- the matmul op: forward and gradients on CUDA equal the CPU's -------------------------------
    const ParityTolerance kFloat32{1e-4, 1e-4};  // K <= 512 (see the file's header)
    const ParityTolerance kFloat64{1e-10, 1e-10};

    TEST_CASE("cuda matmul: 2-d products of many shapes, forward and gradients") {
        const int64_t shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {64, 64, 64}, {129, 257, 65}, {256, 128, 512}, {33, 1000, 17}};
        uint64_t seed = 100;
        for (const auto& s : shapes) {
            const int64_t n = s[0], k = s[1], m = s[2];
            check_cuda_parity("matmul (" + std::to_string(n) + "," + std::to_string(k) + ")@(" + std::to_string(k) + "," +
                                  std::to_string(m) + ")",
                              [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; },
                              {randn_input({n, k}, seed), randn_input({k, m}, seed + 1)}, kFloat32);
            seed += 2;
        }
    }

    TEST_CASE("cuda linear: GEMM + bias + ReLU, forward and gradients, with and without bias") {
        for (bool relu : {false, true}) {
            check_cuda_parity(std::string("linear with bias") + (relu ? " + relu" : ""),
                              [relu](const std::vector<Tensor>& in) {
                                  return std::vector<Tensor>{linear(in[0], in[1], in[2], relu)};
                              },
                              {randn_input({70, 33}, 40), randn_input({129, 33}, 41), randn_input({129}, 42)}, kFloat32);
            check_cuda_parity(std::string("linear, 3-d x, no bias") + (relu ? " + relu" : ""),
                              [relu](const std::vector<Tensor>& in) {
                                  return std::vector<Tensor>{linear(in[0], in[1], Tensor(), relu)};
                              },
                              {randn_input({2, 9, 16}, 43), randn_input({5, 16}, 44)}, kFloat32);
        }
    }

    TEST_CASE("cuda matmul: batched and broadcast batch dimensions") {
        auto mm = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; };
        check_cuda_parity("batched (3,33,17)@(3,17,9)", mm, {randn_input({3, 33, 17}, 1), randn_input({3, 17, 9}, 2)},
                          kFloat32);
        check_cuda_parity("broadcast (2,1,5,7)@(3,7,4)", mm, {randn_input({2, 1, 5, 7}, 3), randn_input({3, 7, 4}, 4)},
                          kFloat32);
        check_cuda_parity("shared weight (4,70,64)@(64,128)", mm, {randn_input({4, 70, 64}, 5), randn_input({64, 128}, 6)},
                          kFloat32);
        check_cuda_parity("experts (8,96,128)@(8,128,256)", mm,
                          {randn_input({8, 96, 128}, 7), randn_input({8, 128, 256}, 8)}, kFloat32);
    }

    TEST_CASE("cuda matmul: transposed, strided and 1-d operands (views, not copies)") {
        check_cuda_parity("A^T @ B", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0].t(), in[1])}; },
                          {randn_input({40, 129}, 11), randn_input({40, 66}, 12)}, kFloat32);
        check_cuda_parity("A @ B^T", [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1].t())}; },
                          {randn_input({128, 64}, 13), randn_input({256, 64}, 14)}, kFloat32);
        check_cuda_parity("batched A^T @ B^T",
                          [](const std::vector<Tensor>& in) {
                              return std::vector<Tensor>{matmul(in[0].transpose(-1, -2), in[1].transpose(-1, -2))};
                          },
                          {randn_input({2, 31, 65}, 15), randn_input({2, 47, 31}, 16)}, kFloat32);
        check_cuda_parity("every other column of A (stride 2)",
                          [](const std::vector<Tensor>& in) {
                              return std::vector<Tensor>{matmul(slice(in[0], 1, 0, 70, 2), in[1])};
                          },
                          {randn_input({50, 70}, 17), randn_input({35, 60}, 18)}, kFloat32);
        check_cuda_parity("vector @ matrix and matrix @ vector",
                          [](const std::vector<Tensor>& in) {
                              return std::vector<Tensor>{matmul(in[0], in[1]), matmul(in[1], in[2])};
                          },
                          {randn_input({48}, 19), randn_input({48, 77}, 20), randn_input({77}, 21)}, kFloat32);
    }

    TEST_CASE("cuda matmul: K = 0 gives zeros; float64") {
        Tensor a = Tensor::zeros({3, 0}), b = Tensor::zeros({0, 4});
        Tensor c = matmul(a.to(Device::CUDA), b.to(Device::CUDA));
        CHECK(c.shape() == Shape({3, 4}));
        CHECK(mismatches(c, Tensor::zeros({3, 4}), 0, 0) == 0);
        auto mm = [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; };
        check_cuda_parity("float64 (2,37,50)@(50,29)", mm,
                          {randn_input({2, 37, 50}, 30, DType::Float64), randn_input({50, 29}, 31, DType::Float64)},
                          kFloat64);
        check_cuda_parity("float64 A^T @ B",
                          [](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0].t(), in[1])}; },
                          {randn_input({19, 40}, 32, DType::Float64), randn_input({19, 33}, 33, DType::Float64)}, kFloat64);
    }
}
