// tests/test_gemm.cpp: the fast GEMMs (engine/cpu/gemm.cpp) against their plain references.
//
// sgemm is checked against sgemm_reference (and dgemm against dgemm_reference) on odd sizes that
// hit every edge of the micro-kernel tiles and cache blocks, every transpose combination (given
// as strides on the same memory, as the engine passes views), strided C, alpha/beta cases
// (beta = 0 with NaN in C must give no NaN), K = 0, M or N = 0, calls on offsets of one big
// buffer (batched use), zero strides (broadcast views), calls from inside an OpenMP parallel
// region, and determinism.
//
// Tolerance: values are uniform in [-1, 1], so each entry of A @ B is a sum of K terms of size
// <= 1 and its rounding error is bounded by about K * eps * |alpha|; we allow a few times that.
#include <doctest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "engine/cpu/gemm.h"

namespace {

template <typename T>
void fill(std::vector<T>& v, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<T> dist(T(-1), T(1));
    for (T& x : v) x = dist(rng);
}

template <typename T>
using GemmFn = void (*)(int64_t, int64_t, int64_t, T, const T*, int64_t, int64_t, const T*,
                        int64_t, int64_t, T, T*, int64_t, int64_t);

template <typename T>
GemmFn<T> fast_gemm() {
    // sgemm's last parameter, the epilogue, has a default: wrap it to fit the common signature.
    if constexpr (std::is_same_v<T, float>)
        return [](int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a, int64_t cs_a,
                  const float* B, int64_t rs_b, int64_t cs_b, float beta, float* C, int64_t rs_c, int64_t cs_c) {
            mg::cpu::sgemm(M, N, K, alpha, A, rs_a, cs_a, B, rs_b, cs_b, beta, C, rs_c, cs_c);
        };
    else return mg::cpu::dgemm;
}
template <typename T>
GemmFn<T> reference_gemm() {
    if constexpr (std::is_same_v<T, float>) return mg::cpu::sgemm_reference;
    else return mg::cpu::dgemm_reference;
}

// How C is laid out in its buffer.
enum class CLayout { RowMajor, ColMajor, Strided };  // Strided: row-major with cs_c = 2, padded rows

struct Case {
    int64_t M, N, K;
    bool trans_a, trans_b;  // A (or B) stored transposed: the same memory read column-major
    CLayout c_layout;
    double alpha, beta;
};

// Runs one case with the fast and the reference GEMM and compares every element; also checks
// that the gaps of a strided C are never written.
template <typename T>
void check_case(const Case& c, uint32_t seed) {
    const int64_t M = c.M, N = c.N, K = c.K;
    std::vector<T> A(std::max<int64_t>(1, M * K)), B(std::max<int64_t>(1, K * N));
    fill(A, seed);
    fill(B, seed + 1);
    // A(i,k): row-major (K, 1) or, stored transposed as (K x M) row-major, strides (1, M).
    const int64_t rs_a = c.trans_a ? 1 : K, cs_a = c.trans_a ? M : 1;
    const int64_t rs_b = c.trans_b ? 1 : N, cs_b = c.trans_b ? K : 1;
    int64_t rs_c = N, cs_c = 1, c_size = M * N;
    if (c.c_layout == CLayout::ColMajor) rs_c = 1, cs_c = M;
    if (c.c_layout == CLayout::Strided) rs_c = 2 * N + 3, cs_c = 2, c_size = M * rs_c;
    std::vector<T> C(std::max<int64_t>(1, c_size));
    fill(C, seed + 2);
    if (c.beta == 0) {  // write-only C: garbage (NaN) there must not leak into the result
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) C[i * rs_c + j * cs_c] = std::numeric_limits<T>::quiet_NaN();
    }
    std::vector<T> expected = C, got = C;
    reference_gemm<T>()(M, N, K, T(c.alpha), A.data(), rs_a, cs_a, B.data(), rs_b, cs_b, T(c.beta),
                        expected.data(), rs_c, cs_c);
    fast_gemm<T>()(M, N, K, T(c.alpha), A.data(), rs_a, cs_a, B.data(), rs_b, cs_b, T(c.beta),
                   got.data(), rs_c, cs_c);

    const double eps = std::numeric_limits<T>::epsilon();
    const double tol = 4 * eps * (double(K) * std::abs(c.alpha) + std::abs(c.beta) + 1);
    int64_t bad = 0;
    for (size_t idx = 0; idx < got.size(); ++idx) {
        const double diff = std::abs(double(got[idx]) - double(expected[idx]));
        if (!(diff <= tol)) {  // also catches NaN
            if (bad++ < 3)
                INFO("M=" << M << " N=" << N << " K=" << K << " tA=" << c.trans_a
                          << " tB=" << c.trans_b << " C=" << int(c.c_layout) << " alpha=" << c.alpha
                          << " beta=" << c.beta << " at " << idx << ": got " << got[idx]
                          << " expected " << expected[idx] << " tol " << tol);
            if (bad <= 1) CHECK(diff <= tol);
        }
    }
    CHECK(bad == 0);
}

template <typename T>
void check_odd_sizes() {
    // Sizes around the tiles (6x16 / 12x32 / 4x8) and blocks (MC=144, KC=256, NC=4080).
    const int64_t shapes[][3] = {
        {1, 1, 1},     {1, 3, 17},    {3, 1, 255},  {17, 17, 17},  {17, 255, 3},
        {255, 3, 17},  {3, 17, 1023}, {1, 255, 255}, {255, 1, 255}, {255, 255, 1},
        {255, 255, 255}, {1023, 17, 3}, {17, 1023, 17}, {1023, 3, 255}, {33, 47, 300},
    };
    uint32_t seed = 10;
    for (const auto& s : shapes) {
        // Every transpose and C layout on the small shapes; on the big ones (slow references)
        // the four transposes with row-major C and one case for each other C layout.
        const bool big = s[0] * s[1] * s[2] > 1'000'000;
        for (int t = 0; t < 4; ++t)
            for (CLayout layout : {CLayout::RowMajor, CLayout::ColMajor, CLayout::Strided})
                if (!big || layout == CLayout::RowMajor || t == int(layout))
                    check_case<T>({s[0], s[1], s[2], bool(t & 1), bool(t & 2), layout, 1.0, 0.0},
                                  seed++);
    }
}

template <typename T>
void check_alpha_beta() {
    const double pairs[][2] = {{1, 1}, {2.5, 0}, {-1, 0.5}, {0.5, -2}, {1, 1}};
    uint32_t seed = 100;
    for (const auto& p : pairs)
        for (int64_t K : {1, 7, 300, 600})
            check_case<T>({37, 70, K, false, false, CLayout::RowMajor, p[0], p[1]}, seed++);
    // Large enough to run threaded, with several K blocks.
    check_case<T>({150, 1000, 300, false, true, CLayout::RowMajor, 1.5, -0.5}, seed++);
    check_case<T>({300, 200, 520, true, false, CLayout::Strided, 1.0, 0.0}, seed++);
    // One thread, packed, N wider than one NC block (4080 columns).
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    check_case<T>({20, 4100, 300, false, false, CLayout::RowMajor, 1.0, 1.0}, seed++);
    omp_set_num_threads(threads);
}

template <typename T>
void check_degenerate() {
    // K == 0: C = beta * C (beta == 0: C = 0 even over NaN).
    for (double beta : {0.0, 1.0, -2.0}) {
        std::vector<T> C(6, T(3)), A(1), B(1);
        if (beta == 0) C.assign(6, std::numeric_limits<T>::quiet_NaN());
        fast_gemm<T>()(2, 3, 0, T(1), A.data(), 0, 1, B.data(), 3, 1, T(beta), C.data(), 3, 1);
        for (T x : C) CHECK(x == T(beta == 0 ? 0 : 3 * beta));
    }
    // alpha == 0: A and B are not read (NaN there does not leak), C = beta * C.
    {
        std::vector<T> A(12, std::numeric_limits<T>::quiet_NaN()), B(12, T(1)), C(9, T(2));
        fast_gemm<T>()(3, 3, 4, T(0), A.data(), 4, 1, B.data(), 3, 1, T(0.5), C.data(), 3, 1);
        for (T x : C) CHECK(x == T(1));
    }
    // M == 0 or N == 0: nothing is touched.
    {
        std::vector<T> A(8, T(1)), B(8, T(1)), C(8, T(7));
        fast_gemm<T>()(0, 4, 2, T(1), A.data(), 2, 1, B.data(), 4, 1, T(0), C.data(), 4, 1);
        fast_gemm<T>()(4, 0, 2, T(1), A.data(), 2, 1, B.data(), 1, 1, T(0), C.data(), 1, 1);
        for (T x : C) CHECK(x == T(7));
    }
}

// Broadcast views have stride 0: A(i,k) = a[k] for every row, B(k,j) = b[j] for every k.
template <typename T>
void check_zero_strides() {
    for (int64_t size : {5, 40, 200}) {  // serial unpacked, serial packed and threaded paths
        const int64_t M = size, N = size + 3, K = size + 1;
        std::vector<T> a_row(K), b_row(N), expected(M * N), got(M * N);
        fill(a_row, 21);
        fill(b_row, 22);
        reference_gemm<T>()(M, N, K, T(1), a_row.data(), 0, 1, b_row.data(), 0, 1, T(0),
                            expected.data(), N, 1);
        fast_gemm<T>()(M, N, K, T(1), a_row.data(), 0, 1, b_row.data(), 0, 1, T(0), got.data(), N, 1);
        const double tol = 4 * std::numeric_limits<T>::epsilon() * (K + 1);
        int64_t bad = 0;
        for (int64_t i = 0; i < M * N; ++i) bad += !(std::abs(double(got[i]) - double(expected[i])) <= tol);
        CHECK(bad == 0);
    }
}

// Many small GEMMs on offsets of one buffer (as a batched matmul or the MoE experts do),
// sequentially and then from inside a parallel region, against the reference.
template <typename T>
void check_batched_and_nested() {
    const int64_t batch = 8, M = 45, N = 70, K = 33;  // offsets are not multiples of anything
    std::vector<T> A(batch * M * K), B(batch * K * N), expected(batch * M * N), got(batch * M * N);
    fill(A, 7);
    fill(B, 8);
    for (int64_t b = 0; b < batch; ++b)
        reference_gemm<T>()(M, N, K, T(1), A.data() + b * M * K, K, 1, B.data() + b * K * N, N, 1,
                            T(0), expected.data() + b * M * N, N, 1);
    const double tol = 4 * std::numeric_limits<T>::epsilon() * (K + 1);
    auto compare = [&] {
        for (size_t i = 0; i < got.size(); ++i) {
            if (!(std::abs(double(got[i]) - double(expected[i])) <= tol)) {
                CHECK(got[i] == doctest::Approx(expected[i]));
                return;
            }
        }
    };
    for (int64_t b = 0; b < batch; ++b)
        fast_gemm<T>()(M, N, K, T(1), A.data() + b * M * K, K, 1, B.data() + b * K * N, N, 1, T(0),
                       got.data() + b * M * N, N, 1);
    compare();

    std::fill(got.begin(), got.end(), T(0));
    std::vector<T> big_a(300 * 300), big_b(300 * 300), big_c(omp_get_max_threads() * 300 * 300);
    fill(big_a, 9);
    fill(big_b, 10);
#pragma omp parallel
    {
#pragma omp for schedule(dynamic)
        for (int64_t b = 0; b < batch; ++b)
            fast_gemm<T>()(M, N, K, T(1), A.data() + b * M * K, K, 1, B.data() + b * K * N, N, 1,
                           T(0), got.data() + b * M * N, N, 1);
        // A product big enough that it would be threaded outside a parallel region.
        T* c = big_c.data() + omp_get_thread_num() * 300 * 300;
        fast_gemm<T>()(300, 300, 300, T(1), big_a.data(), 300, 1, big_b.data(), 300, 1, T(0), c, 300,
                       1);
    }
    compare();
    std::vector<T> big_expected(300 * 300);
    reference_gemm<T>()(300, 300, 300, T(1), big_a.data(), 300, 1, big_b.data(), 300, 1, T(0),
                        big_expected.data(), 300, 1);
    const double big_tol = 4 * std::numeric_limits<T>::epsilon() * 301;
    for (int t = 0; t < omp_get_max_threads(); ++t) {
        int64_t bad = 0;
        for (int64_t i = 0; i < 300 * 300; ++i)
            bad += !(std::abs(double(big_c[t * 300 * 300 + i]) - double(big_expected[i])) <= big_tol);
        CHECK(bad == 0);
        // Every thread computed the same product: bitwise the same result.
        CHECK(std::memcmp(big_c.data() + t * 300 * 300, big_c.data(), 300 * 300 * sizeof(T)) == 0);
    }
}

// Skinny products (N <= 8 columns, A rows contiguous: the MoE router's logits = x @ W^T) take
// their own dot-product path in sgemm; every N from 1 to 16 and past it, odd M, K with a tail.
template <typename T>
void check_skinny() {
    uint32_t seed = 500;
    for (int64_t N = 1; N <= 18; ++N)
        for (int64_t M : {12, 13, 97})
            for (int64_t K : {1, 8, 21, 512})
                check_case<T>({M, N, K, false, N % 2 == 1, N % 3 == 0 ? CLayout::Strided : CLayout::RowMajor,
                               1.0, N % 4 == 0 ? 0.5 : 0.0},
                              seed++);
    // Big enough to run threaded, then the same product on one thread: the same bits.
    const int64_t M = 4099, N = 8, K = 515;
    std::vector<T> A(M * K), B(K * N), two(M * N), one(M * N);
    fill(A, 7);
    fill(B, 8);
    fast_gemm<T>()(M, N, K, T(1), A.data(), K, 1, B.data(), 1, K, T(0), two.data(), N, 1);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    fast_gemm<T>()(M, N, K, T(1), A.data(), K, 1, B.data(), 1, K, T(0), one.data(), N, 1);
    omp_set_num_threads(threads);
    CHECK(std::memcmp(two.data(), one.data(), two.size() * sizeof(T)) == 0);
    check_case<T>({M, N, K, false, true, CLayout::RowMajor, 1.0, 0.0}, seed++);
}

// Same inputs give bitwise-identical outputs: on repeated calls and on 1 thread vs all threads.
template <typename T>
void check_deterministic() {
    const int64_t M = 301, N = 257, K = 700;
    std::vector<T> A(M * K), B(K * N), first(M * N), again(M * N), one_thread(M * N);
    fill(A, 11);
    fill(B, 12);
    fast_gemm<T>()(M, N, K, T(1), A.data(), K, 1, B.data(), N, 1, T(0), first.data(), N, 1);
    fast_gemm<T>()(M, N, K, T(1), A.data(), K, 1, B.data(), N, 1, T(0), again.data(), N, 1);
    CHECK(std::memcmp(first.data(), again.data(), first.size() * sizeof(T)) == 0);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    fast_gemm<T>()(M, N, K, T(1), A.data(), K, 1, B.data(), N, 1, T(0), one_thread.data(), N, 1);
    omp_set_num_threads(threads);
    CHECK(std::memcmp(first.data(), one_thread.data(), first.size() * sizeof(T)) == 0);
}

}  // namespace

TEST_CASE("sgemm matches sgemm_reference on odd sizes, transposes and strided C") {
    check_odd_sizes<float>();
}
TEST_CASE("sgemm alpha, beta, K blocks and threaded sizes") { check_alpha_beta<float>(); }
TEST_CASE("sgemm K == 0, alpha == 0, M or N == 0") { check_degenerate<float>(); }
TEST_CASE("sgemm batched on offsets and inside omp parallel") { check_batched_and_nested<float>(); }
TEST_CASE("sgemm with zero strides (broadcast views)") { check_zero_strides<float>(); }
TEST_CASE("sgemm is deterministic") { check_deterministic<float>(); }
TEST_CASE("sgemm skinny products (N <= 8) match the reference, on any thread count") { check_skinny<float>(); }

// The fused epilogue (bias per column, then ReLU) gives bitwise what the plain product followed by
// the two separate passes gives, on every path: skinny (N <= 8), small unpacked A, packed, K cut
// into several blocks (the epilogue must see only finished sums), threaded, strided C, beta != 0,
// and K == 0 (the epilogue still applies).
TEST_CASE("sgemm epilogue: bias and ReLU fused equal the separate passes, bitwise, on every path") {
    uint32_t seed = 900;
    struct Shape3 {
        int64_t M, N, K;
    };
    for (Shape3 sh : {Shape3{13, 5, 21}, Shape3{97, 8, 512}, Shape3{7, 33, 9}, Shape3{50, 70, 40},
                      Shape3{130, 150, 600}, Shape3{300, 260, 300}, Shape3{20, 17, 0}})
        for (bool strided_c : {false, true})
            for (double beta : {0.0, 0.5})
                for (bool relu : {false, true})
                    for (bool with_bias : {false, true}) {
                        const int64_t M = sh.M, N = sh.N, K = sh.K;
                        CAPTURE(M);
                        CAPTURE(N);
                        CAPTURE(K);
                        CAPTURE(strided_c);
                        CAPTURE(beta);
                        std::vector<float> A(std::max<int64_t>(1, M * K)), B(std::max<int64_t>(1, N * K)), bias(N);
                        fill(A, seed++);
                        fill(B, seed++);
                        fill(bias, seed++);
                        const int64_t rs_c = strided_c ? 2 * N + 1 : N, cs_c = strided_c ? 2 : 1;
                        std::vector<float> C0(M * rs_c + 1);
                        fill(C0, seed++);
                        std::vector<float> fused = C0, separate = C0;
                        // B stored as (N, K), read transposed: the Linear layer's W^T.
                        mg::cpu::Epilogue ep;
                        ep.bias = with_bias ? bias.data() : nullptr;
                        ep.relu = relu;
                        mg::cpu::sgemm(M, N, K, 1.0f, A.data(), K, 1, B.data(), 1, K, (float)beta, fused.data(), rs_c,
                                       cs_c, ep);
                        mg::cpu::sgemm(M, N, K, 1.0f, A.data(), K, 1, B.data(), 1, K, (float)beta, separate.data(),
                                       rs_c, cs_c);
                        for (int64_t i = 0; i < M; ++i)
                            for (int64_t j = 0; j < N; ++j) {
                                float& v = separate[i * rs_c + j * cs_c];
                                if (with_bias) v += bias[j];
                                if (relu) v = v > 0 ? v : 0.0f;
                            }
                        CHECK(std::memcmp(fused.data(), separate.data(), fused.size() * sizeof(float)) == 0);
                    }
}

TEST_CASE("dgemm matches dgemm_reference on odd sizes, transposes and strided C") {
    check_odd_sizes<double>();
}
TEST_CASE("dgemm alpha, beta and threaded sizes") { check_alpha_beta<double>(); }
TEST_CASE("dgemm K == 0, alpha == 0, M or N == 0") { check_degenerate<double>(); }
TEST_CASE("dgemm batched on offsets and inside omp parallel") { check_batched_and_nested<double>(); }
TEST_CASE("dgemm with zero strides (broadcast views)") { check_zero_strides<double>(); }
TEST_CASE("dgemm is deterministic") { check_deterministic<double>(); }

// sgemm_small (the attention kernels' tile products): the micro-kernel on A and B in place. Sizes
// around its MR x NR panels (partial last panels are copied), A plain or transposed, B and C with
// padded rows (the padding must stay untouched), beta 0 (C holds NaN) and 1.
TEST_CASE("sgemm_small matches sgemm_reference on tile-sized products") {
    uint32_t seed = 100;
    for (int64_t M : {1, 5, 6, 13, 16, 64})
        for (int64_t N : {1, 15, 16, 17, 33, 64})
            for (int64_t K : {0, 1, 7, 32, 64})
                for (bool trans_a : {false, true})
                    for (float beta : {0.0f, 1.0f}) {
                        const int64_t ldb = N + 3, ldc = N + 5;
                        std::vector<float> A(std::max<int64_t>(1, M * K)), B(std::max<int64_t>(1, K * ldb)), C(M * ldc);
                        fill(A, seed++);
                        fill(B, seed++);
                        fill(C, seed++);
                        if (beta == 0)
                            for (int64_t i = 0; i < M; ++i)
                                for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = std::numeric_limits<float>::quiet_NaN();
                        const int64_t rs_a = trans_a ? 1 : K, cs_a = trans_a ? M : 1;
                        std::vector<float> expected = C, got = C;
                        mg::cpu::sgemm_reference(M, N, K, 0.5f, A.data(), rs_a, cs_a, B.data(), ldb, 1, beta,
                                                 expected.data(), ldc, 1);
                        mg::cpu::sgemm_small(M, N, K, 0.5f, A.data(), rs_a, cs_a, B.data(), ldb, beta, got.data(),
                                             ldc);
                        for (int64_t i = 0; i < M; ++i)
                            for (int64_t j = 0; j < ldc; ++j) {
                                const float e = expected[i * ldc + j], g = got[i * ldc + j];
                                if (j >= N) REQUIRE(std::memcmp(&e, &g, sizeof e) == 0);  // padding untouched
                                else REQUIRE(std::abs(g - e) <= 1e-5f * (K + 1));
                            }
                    }
}
