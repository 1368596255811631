// engine/cpu/gemm.cpp: the CPU matrix multiply (API and conventions in gemm.h).
//
// sgemm follows the BLIS/GotoBLAS loop nest. For C (M x N) += A (M x K) @ B (K x N):
//
//   for jc in N step NC:              B panel (KC x NC) lives in L3
//     for pc in K step KC:
//       pack B(pc:pc+kc, jc:jc+nc)    into NR-wide micro-panels
//       for ic in M step MC:
//         pack A(ic:ic+mc, pc:pc+kc)  into MR-tall micro-panels (MC x KC lives in L2)
//         for jr in nc step NR:       one B micro-panel (KC x NR) stays in L1 ...
//           for ir in mc step MR:     ... while MR x NR tiles of C are computed in registers
//             micro_kernel(kc, A micro-panel, B micro-panel, C tile)
//
// The micro-kernel keeps an MR x NR tile of C in vector registers and, for each k, does one
// rank-1 update: load NR values of B, broadcast MR values of A, 2*MR vector fused multiply-adds.
// Packing makes every load in that loop contiguous and aligned whatever the strides of A and B,
// and pads edge panels with zeros so the kernel never needs a remainder loop over k or j.
//
// Threads split C into a grid of rectangles (2 threads: two halves) and each runs that loop nest
// on its own rectangle with its own packing buffers: no barrier, nothing shared. Threads are only
// started when the product is big enough to pay for them. Small products (the demo's 64x20x64)
// also skip packing A: the kernel broadcasts A straight from memory through its strides, and
// only B (tiny) is packed.
//
// The bench/gemm/ programs 1..6 build this up one step at a time; docs/engine/gemm.md has the
// measured GFLOP/s of each step.
#include "engine/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace mg::cpu {
namespace {

// ---------------------------------------------------------------------------------------------
// SIMD vector "traits": the micro-kernel below is written once against these few operations.
// W = floats per vector. The tile is MR rows x NR = 2*W columns of C.
#if defined(__AVX512F__)
struct Vec {
    using V = __m512;
    static constexpr int W = 16;
    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float x) { return _mm512_set1_ps(x); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V relu(V a) { return _mm512_max_ps(a, zero()); }  // NaN -> 0, as x > 0 ? x : 0
    // out[i] = the sum of the lanes of the i-th vector (halves added, then the AVX2 tree below).
    static void hsum4(V a, V b, V c, V d, float* out) {
        auto half = [](V v) {
            return _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        };
        const __m256 ab = _mm256_hadd_ps(half(a), half(b)), cd = _mm256_hadd_ps(half(c), half(d));
        const __m256 abcd = _mm256_hadd_ps(ab, cd);
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
    }
};
constexpr int MR = 12;  // 12 x 32 tile: 24 accumulators + 2 B vectors + 1 A broadcast <= 32 zmm
constexpr const char* kKernelName = "avx512f 12x32";
#elif defined(__AVX2__) && defined(__FMA__)
struct Vec {
    using V = __m256;
    static constexpr int W = 8;
    static V zero() { return _mm256_setzero_ps(); }
    static V set1(float x) { return _mm256_set1_ps(x); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V relu(V a) { return _mm256_max_ps(a, zero()); }  // NaN -> 0, as x > 0 ? x : 0
    // out[i] = the sum of the 8 lanes of the i-th vector, four at once: two rounds of pairwise
    // horizontal adds leave (a, b, c, d) partial sums in each 128-bit half; adding the halves
    // finishes them. 5 instructions for 4 sums, always in the same order.
    static void hsum4(V a, V b, V c, V d, float* out) {
        const V abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
    }
};
constexpr int MR = 6;  // 6 x 16 tile: 12 accumulators + 2 B vectors + 1 A broadcast <= 16 ymm
constexpr const char* kKernelName = "avx2+fma 6x16";
#else
// Portable fallback: a "vector" of 4 floats in plain C++; the compiler vectorises what it can.
struct Vec {
    struct V {
        float x[4];
    };
    static constexpr int W = 4;
    static V zero() { return V{{0, 0, 0, 0}}; }
    static V set1(float s) { return V{{s, s, s, s}}; }
    static V load(const float* p) { return V{{p[0], p[1], p[2], p[3]}}; }
    static void store(float* p, V v) { std::memcpy(p, v.x, sizeof v.x); }
    static V fmadd(V a, V b, V c) {
        for (int l = 0; l < 4; ++l) c.x[l] = std::fma(a.x[l], b.x[l], c.x[l]);
        return c;
    }
    static V mul(V a, V b) {
        for (int l = 0; l < 4; ++l) a.x[l] *= b.x[l];
        return a;
    }
    static V add(V a, V b) {
        for (int l = 0; l < 4; ++l) a.x[l] += b.x[l];
        return a;
    }
    static V relu(V a) {
        for (int l = 0; l < 4; ++l) a.x[l] = a.x[l] > 0 ? a.x[l] : 0.0f;
        return a;
    }
    static void hsum4(V a, V b, V c, V d, float* out) {
        const V* v[4] = {&a, &b, &c, &d};
        for (int i = 0; i < 4; ++i) out[i] = (v[i]->x[0] + v[i]->x[1]) + (v[i]->x[2] + v[i]->x[3]);
    }
};
constexpr int MR = 4;
constexpr const char* kKernelName = "portable scalar 4x8";
#endif
constexpr int NR = 2 * Vec::W;

// Cache blocking, tuned on a 2-core AMD EPYC (Zen 3: 32 KiB L1d and 512 KiB L2 per core, 32 MiB
// L3) with bench/gemm_vs_openblas; see docs/engine/gemm.md. KC*NR*4 bytes (one B micro-panel,
// 16 KiB) fits L1, MC*KC*4 (one A block, <= 144 KiB) fits L2, KC*NC*4 (the B panel, 4 MiB) L3.
constexpr int64_t MC = 144;  // multiple of MR
constexpr int64_t KC = 256;
constexpr int64_t NC = 4080 / NR * NR;  // multiple of NR
static_assert(MC % MR == 0 && NC % NR == 0, "blocks must hold whole micro-panels");

// Below this many multiply-adds (M*N*K) the product runs on one thread: waking the team costs
// more than it saves. Below kNoPackALimit, A is not packed either (the copy would cost more than
// the strided reads it saves).
constexpr int64_t kThreadLimit = 96 * 96 * 96;
constexpr int64_t kNoPackALimit = 128 * 128 * 128;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// ---------------------------------------------------------------------------------------------
// Scratch buffers. Each thread owns its own (thread_local), grown on demand and kept between
// calls: no allocation (and no page faults) in the steady state, and no buffer is ever shared by
// two threads or two concurrent sgemm calls.
struct AlignedBuffer {
    float* data = nullptr;
    int64_t capacity = 0;  // floats
    float* get(int64_t count) {
        if (count > capacity) {
            std::free(data);
            capacity = round_up(count, 1024);
            data = static_cast<float*>(std::aligned_alloc(64, capacity * sizeof(float)));
            if (!data) throw std::bad_alloc();
        }
        return data;
    }
    ~AlignedBuffer() { std::free(data); }
};
thread_local AlignedBuffer t_a_buffer;  // one packed A block, MC x KC
thread_local AlignedBuffer t_b_buffer;  // one packed B panel, KC x NC

// ---------------------------------------------------------------------------------------------
// Packing. A block (mc x kc) -> micro-panels of MR rows, each stored k-major: panel[k*MR + i].
// B panel (kc x nc) -> micro-panels of NR columns, each stored k-major: panel[k*NR + j].
// Rows/columns past the edge are filled with zeros.
void pack_a(int64_t mc, int64_t kc, const float* A, int64_t rs_a, int64_t cs_a, float* dst) {
    for (int64_t ir = 0; ir < mc; ir += MR) {
        const int64_t mr = std::min<int64_t>(MR, mc - ir);
        const float* a = A + ir * rs_a;
        if (mr == MR && rs_a == 1) {  // A stored column-major (e.g. a transposed view)
            for (int64_t k = 0; k < kc; ++k)
                for (int i = 0; i < MR; ++i) dst[k * MR + i] = a[k * cs_a + i];
        } else if (mr == MR) {
            for (int64_t k = 0; k < kc; ++k)
                for (int i = 0; i < MR; ++i) dst[k * MR + i] = a[i * rs_a + k * cs_a];
        } else {
            for (int64_t k = 0; k < kc; ++k)
                for (int i = 0; i < MR; ++i) dst[k * MR + i] = i < mr ? a[i * rs_a + k * cs_a] : 0.0f;
        }
        dst += MR * kc;
    }
}

// Packs B micro-panel number `panel` of a kc x nc block (the OpenMP team splits the panels).
void pack_b_panel(int64_t panel, int64_t kc, int64_t nc, const float* B, int64_t rs_b, int64_t cs_b,
                  float* dst) {
    const int64_t jr = panel * NR;
    const int64_t nr = std::min<int64_t>(NR, nc - jr);
    const float* b = B + jr * cs_b;
    dst += jr * kc;
    if (nr == NR && cs_b == 1) {  // B row-major: each k copies NR contiguous floats
        for (int64_t k = 0; k < kc; ++k)
            for (int j = 0; j < NR; ++j) dst[k * NR + j] = b[k * rs_b + j];
    } else {
        for (int64_t k = 0; k < kc; ++k)
            for (int j = 0; j < NR; ++j) dst[k * NR + j] = j < nr ? b[k * rs_b + j * cs_b] : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------
// The micro-kernel: C(0:mr, 0:nr) = alpha * sum_k a(:,k) b(k,:) + beta * C(0:mr, 0:nr).
// a(i,k) = a[i*a_rs + k*a_cs]: packed A has (a_rs, a_cs) = (1, MR); unpacked A its own strides.
// b(k,j) = b[k*b_rs + j]: NR contiguous floats per k (packed, zero-padded).
// The full MR x NR product is always computed (padding is zeros); only mr x nr is written.
// always_inline: each caller gets a copy specialised for its strides (constants when packed).
__attribute__((always_inline)) inline void micro_kernel(int64_t kc, const float* a, int64_t a_rs,
                                                        int64_t a_cs, const float* b, int64_t b_rs,
                                                        float alpha, float beta, float* c,
                                                        int64_t rs_c, int64_t cs_c, int64_t mr,
                                                        int64_t nr, const float* bias, bool relu) {
    using V = Vec::V;
    V acc[MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = Vec::zero();

    // Start fetching the C tile now, so it is in L1 when the k loop ends (each row of the tile
    // spans at most two cache lines when C's rows are contiguous).
    for (int64_t i = 0; i < mr; ++i) {
        __builtin_prefetch(c + i * rs_c, 1);
        __builtin_prefetch(c + i * rs_c + (nr - 1) * cs_c, 1);
    }

#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
        const V b0 = Vec::load(b);
        const V b1 = Vec::load(b + Vec::W);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const V ai = Vec::set1(a[i * a_rs]);  // broadcast A(i,k)
            acc[i][0] = Vec::fmadd(ai, b0, acc[i][0]);
            acc[i][1] = Vec::fmadd(ai, b1, acc[i][1]);
        }
        a += a_cs;
        b += b_rs;
    }

    // The epilogue (gemm.h): bias points at this tile's first column, and is null, as relu is
    // false, except in the last K block.
    const V alpha_v = Vec::set1(alpha);
    if (mr == MR && nr == NR && cs_c == 1) {  // whole tile, rows contiguous: vector stores
        const V beta_v = Vec::set1(beta);
        const V bias0 = bias ? Vec::load(bias) : Vec::zero(), bias1 = bias ? Vec::load(bias + Vec::W) : Vec::zero();
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            float* ci = c + i * rs_c;
            V r0 = Vec::mul(alpha_v, acc[i][0]);
            V r1 = Vec::mul(alpha_v, acc[i][1]);
            if (beta != 0.0f) {  // beta == 0: C is write-only, never read (it may hold NaN)
                r0 = Vec::fmadd(beta_v, Vec::load(ci), r0);
                r1 = Vec::fmadd(beta_v, Vec::load(ci + Vec::W), r1);
            }
            if (bias) {
                r0 = Vec::add(r0, bias0);
                r1 = Vec::add(r1, bias1);
            }
            if (relu) {
                r0 = Vec::relu(r0);
                r1 = Vec::relu(r1);
            }
            Vec::store(ci, r0);
            Vec::store(ci + Vec::W, r1);
        }
    } else {  // edge tile or strided C: go through a small buffer, element by element
        alignas(64) float tile[MR * NR];
        for (int i = 0; i < MR; ++i) {
            Vec::store(tile + i * NR, Vec::mul(alpha_v, acc[i][0]));
            Vec::store(tile + i * NR + Vec::W, Vec::mul(alpha_v, acc[i][1]));
        }
        for (int64_t i = 0; i < mr; ++i)
            for (int64_t j = 0; j < nr; ++j) {
                float& cij = c[i * rs_c + j * cs_c];
                float v = beta != 0.0f ? std::fma(beta, cij, tile[i * NR + j]) : tile[i * NR + j];
                if (bias) v += bias[j];
                if (relu) v = v > 0 ? v : 0.0f;
                cij = v;
            }
    }
}

// One packed A block (mc x kc) times the packed B panel (kc x nc) into C(mc x nc).
void macro_kernel_packed(int64_t mc, int64_t nc, int64_t kc, float alpha, const float* a_pack,
                         const float* b_pack, float beta, float* C, int64_t rs_c, int64_t cs_c, const float* bias,
                         bool relu) {
    for (int64_t jr = 0; jr < nc; jr += NR) {
        const int64_t nr = std::min<int64_t>(NR, nc - jr);
        for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = std::min<int64_t>(MR, mc - ir);
            micro_kernel(kc, a_pack + ir * kc, 1, MR, b_pack + jr * kc, NR, alpha, beta,
                         C + ir * rs_c + jr * cs_c, rs_c, cs_c, mr, nr, bias ? bias + jr : nullptr, relu);
        }
    }
}

// Same, A read in place through its strides (small products). A full MR-row tile broadcasts
// straight from A; the last, partial tile is packed first (the kernel reads MR rows).
void macro_kernel_unpacked_a(int64_t mc, int64_t nc, int64_t kc, float alpha, const float* A,
                             int64_t rs_a, int64_t cs_a, const float* b_pack, float beta, float* C,
                             int64_t rs_c, int64_t cs_c, const float* bias, bool relu) {
    alignas(64) float a_edge[MR * KC];  // kc <= KC
    const int64_t m_full = mc / MR * MR;
    if (m_full < mc) pack_a(mc - m_full, kc, A + m_full * rs_a, rs_a, cs_a, a_edge);
    for (int64_t jr = 0; jr < nc; jr += NR) {
        const int64_t nr = std::min<int64_t>(NR, nc - jr);
        const float* bias_jr = bias ? bias + jr : nullptr;
        for (int64_t ir = 0; ir < m_full; ir += MR)
            micro_kernel(kc, A + ir * rs_a, rs_a, cs_a, b_pack + jr * kc, NR, alpha, beta,
                         C + ir * rs_c + jr * cs_c, rs_c, cs_c, MR, nr, bias_jr, relu);
        if (m_full < mc)
            micro_kernel(kc, a_edge, 1, MR, b_pack + jr * kc, NR, alpha, beta,
                         C + m_full * rs_c + jr * cs_c, rs_c, cs_c, mc - m_full, nr, bias_jr, relu);
    }
}

// C = beta * C (K == 0 or alpha == 0: the product term vanishes), then the epilogue if any.
template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t rs_c, int64_t cs_c, const Epilogue& ep = {}) {
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            T& cij = C[i * rs_c + j * cs_c];
            cij = beta == T(0) ? T(0) : beta * cij;
            if constexpr (std::is_same_v<T, float>) {
                if (ep.bias) cij += ep.bias[j];
                if (ep.relu) cij = cij > 0 ? cij : 0.0f;
            }
        }
}

// ---------------------------------------------------------------------------------------------
// One thread's share: the serial blocked algorithm on C (M x N), with this thread's own buffers.
void sgemm_serial(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a,
                  int64_t cs_a, const float* B, int64_t rs_b, int64_t cs_b, float beta, float* C,
                  int64_t rs_c, int64_t cs_c, int64_t kc_max, bool pack_a_blocks, const Epilogue& ep) {
    const int64_t nc_max = std::min<int64_t>(NC, round_up(N, NR));
    float* b_pack = t_b_buffer.get(kc_max * nc_max);
    float* a_pack = pack_a_blocks ? t_a_buffer.get(MC * kc_max) : nullptr;
    for (int64_t jc = 0; jc < N; jc += NC) {
        const int64_t nc = std::min<int64_t>(NC, N - jc);
        for (int64_t pc = 0; pc < K; pc += kc_max) {
            const int64_t kc = std::min<int64_t>(kc_max, K - pc);
            // Only the first K block applies the caller's beta; later ones accumulate onto it.
            const float beta_block = pc == 0 ? beta : 1.0f;
            // Only the last one applies the epilogue, to the finished sums.
            const bool last = pc + kc >= K;
            const float* bias = last && ep.bias ? ep.bias + jc : nullptr;
            const bool relu = last && ep.relu;
            const float* B_block = B + pc * rs_b + jc * cs_b;
            for (int64_t panel = 0; panel < ceil_div(nc, NR); ++panel)
                pack_b_panel(panel, kc, nc, B_block, rs_b, cs_b, b_pack);
            for (int64_t ic = 0; ic < M; ic += MC) {
                const int64_t mc = std::min<int64_t>(MC, M - ic);
                const float* A_block = A + ic * rs_a + pc * cs_a;
                float* C_block = C + ic * rs_c + jc * cs_c;
                if (pack_a_blocks) {
                    pack_a(mc, kc, A_block, rs_a, cs_a, a_pack);
                    macro_kernel_packed(mc, nc, kc, alpha, a_pack, b_pack, beta_block, C_block,
                                        rs_c, cs_c, bias, relu);
                } else {
                    macro_kernel_unpacked_a(mc, nc, kc, alpha, A_block, rs_a, cs_a, b_pack,
                                            beta_block, C_block, rs_c, cs_c, bias, relu);
                }
            }
        }
    }
}

// Threads split C into a grid of thread_rows x thread_cols rectangles, with edges on multiples
// of MR and NR. Of the grids with the right number of cells, the one with the smallest
// thread_rows/M + thread_cols/N wins: every thread packs all of A for its rows and all of B for
// its columns, so that sum is the (small) cost of packing the same data twice.
struct ThreadGrid {
    int rows = 1, cols = 1;
};
ThreadGrid choose_grid(int threads, int64_t M, int64_t N) {
    ThreadGrid best;
    double best_cost = 1e300;
    for (int rows = 1; rows <= threads; ++rows) {
        if (threads % rows) continue;
        const int cols = threads / rows;
        if (rows > ceil_div(M, MR) || cols > ceil_div(N, NR)) continue;
        const double cost = double(rows) / double(M) + double(cols) / double(N);
        if (cost < best_cost) best_cost = cost, best = {rows, cols};
    }
    return best;
}

// Start of part `part` (0..parts) when `count` items, in units of `unit`, are cut into `parts`
// nearly equal parts.
int64_t split_point(int64_t count, int64_t unit, int64_t parts, int64_t part) {
    const int64_t units = ceil_div(count, unit);
    return std::min(count, (units * part / parts) * unit);
}

// ---------------------------------------------------------------------------------------------
// Skinny products: N <= kSkinnyN columns of C and rows of A contiguous along K (cs_a == 1). The
// MoE router's gate, logits (T x E) = x (T x d) @ W^T, is one for E <= 8; T is thousands. The
// packed path above would copy all of A (the biggest operand) once more and pad N to NR columns;
// here A is read once, straight from memory, and C is a set of dot products: row i of A against
// each of the N columns of B, which are first copied into a small contiguous buffer Bt (N x K,
// it stays in L1).
//
// One row of A against all its (up to 8) columns at once: 8 vector accumulators, and per W-wide
// step along K one load of A and one of each column; the 8 sums end in Vec::hsum4. Measured at
// 8192 x 8 x 512 on one thread (bench/RESULTS.md, "Router benchmark"), rows x columns per block:
// 1 x 8 ran at 59-63 GFLOP/s; 2 x 4 (the kernel before) 31; 3 x 4 and 4 x 4 31-32 (with 12-16
// accumulators GCC reloads the rows of A for every column); 3 x 3 45; 2 x 8 49. One row at a
// time also reads A exactly once, in order. Each C[i, j] is one row's dot product whatever
// thread computes it: the result does not depend on the thread count.
constexpr int64_t kSkinnyN = 8;  // at 16 and 32 columns the packed path is faster (measured)

// dots[c] = row a . column b[c] over k < k_vec, c < kCols, while the next row is fetched into
// cache (with the hardware prefetcher alone the loop waited on memory).
template <int kCols>
[[gnu::always_inline]] inline void skinny_row(const float* a, const float* const b[kCols], const float* next,
                                              int64_t k_vec, float dots[kCols]) {
    Vec::V acc[kCols];
    for (int c = 0; c < kCols; ++c) acc[c] = Vec::zero();
    for (int64_t k = 0; k < k_vec; k += Vec::W) {
        __builtin_prefetch(next + k);
        const Vec::V x = Vec::load(a + k);
        for (int c = 0; c < kCols; ++c) acc[c] = Vec::fmadd(x, Vec::load(b[c] + k), acc[c]);
    }
    for (int c = 0; c < kCols; c += 4) Vec::hsum4(acc[c], acc[c + 1], acc[c + 2], acc[c + 3], dots + c);
}

// C[i, j] for rows i0 <= i < i1 and all N columns, kCols (4 or 8, >= N) at a time; columns past N
// repeat the last one (computed, not stored).
template <int kCols>
void skinny_rows(int64_t i0, int64_t i1, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a,
                 const float* Bt, float beta, float* C, int64_t rs_c, int64_t cs_c, const Epilogue& ep) {
    const int64_t k_vec = K / Vec::W * Vec::W;
    const float* b[kCols];
    for (int64_t c = 0; c < kCols; ++c) b[c] = Bt + std::min<int64_t>(c, N - 1) * K;
    for (int64_t i = i0; i < i1; ++i) {
        const float* a = A + i * rs_a;
        float dots[kCols];
        skinny_row<kCols>(a, b, i + 1 < i1 ? a + rs_a : a, k_vec, dots);
        for (int64_t c = 0; c < N; ++c) {
            float dot = dots[c];
            for (int64_t k = k_vec; k < K; ++k) dot += a[k] * b[c][k];  // the K % W tail
            float& out = C[i * rs_c + c * cs_c];
            float v = beta == 0.0f ? alpha * dot : alpha * dot + beta * out;
            if (ep.bias) v += ep.bias[c];
            if (ep.relu) v = v > 0 ? v : 0.0f;
            out = v;
        }
    }
}

void sgemm_skinny(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a, const float* B,
                  int64_t rs_b, int64_t cs_b, float beta, float* C, int64_t rs_c, int64_t cs_c, int threads,
                  const Epilogue& ep) {
    std::vector<float> Bt(N * K);  // Bt[j*K + k] = B[k, j]
    for (int64_t j = 0; j < N; ++j)
        for (int64_t k = 0; k < K; ++k) Bt[j * K + k] = B[k * rs_b + j * cs_b];
    // Any cut works: each row's dot products are the same whichever block and thread it lands in.
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t i0 = M * t / n, i1 = M * (t + 1) / n;
        if (i1 > i0 && N <= 4) skinny_rows<4>(i0, i1, N, K, alpha, A, rs_a, Bt.data(), beta, C, rs_c, cs_c, ep);
        else if (i1 > i0) skinny_rows<8>(i0, i1, N, K, alpha, A, rs_a, Bt.data(), beta, C, rs_c, cs_c, ep);
    }
}

}  // namespace

const char* sgemm_kernel_name() { return kKernelName; }

// ---------------------------------------------------------------------------------------------
void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a, int64_t cs_a,
           const float* B, int64_t rs_b, int64_t cs_b, float beta, float* C, int64_t rs_c,
           int64_t cs_c, const Epilogue& ep) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) return scale_c(M, N, beta, C, rs_c, cs_c, ep);

    // K is cut into equal blocks (K = 300 gives 150 + 150, not 256 + 44). Every element of C
    // then sees the same operations in the same order however C is split among threads (the
    // zero padding of edge tiles adds nothing): the result does not depend on the thread count.
    const int64_t kc_max = ceil_div(K, ceil_div(K, KC));
    const int64_t work = M * N * K;
    // Inside someone else's parallel region (an expert loop, a batch loop) we run on the calling
    // thread only: nested teams would oversubscribe the cores.
    const int threads = (work < kThreadLimit || omp_in_parallel()) ? 1 : omp_get_max_threads();
    if (N <= kSkinnyN && cs_a == 1 && M >= 2 * MR)
        return sgemm_skinny(M, N, K, alpha, A, rs_a, B, rs_b, cs_b, beta, C, rs_c, cs_c, threads, ep);
    const ThreadGrid grid = choose_grid(threads, M, N);
    if (grid.rows * grid.cols == 1)
        return sgemm_serial(M, N, K, alpha, A, rs_a, cs_a, B, rs_b, cs_b, beta, C, rs_c, cs_c,
                            kc_max, work >= kNoPackALimit, ep);

#pragma omp parallel num_threads(grid.rows * grid.cols)
    {
        const int t = omp_get_thread_num();
        const int64_t i0 = split_point(M, MR, grid.rows, t / grid.cols);
        const int64_t i1 = split_point(M, MR, grid.rows, t / grid.cols + 1);
        const int64_t j0 = split_point(N, NR, grid.cols, t % grid.cols);
        const int64_t j1 = split_point(N, NR, grid.cols, t % grid.cols + 1);
        Epilogue ep_cols = ep;  // this thread's columns start at j0
        if (ep.bias) ep_cols.bias = ep.bias + j0;
        if (i1 > i0 && j1 > j0)
            sgemm_serial(i1 - i0, j1 - j0, K, alpha, A + i0 * rs_a, rs_a, cs_a, B + j0 * cs_b, rs_b,
                         cs_b, beta, C + i0 * rs_c + j0 * cs_c, rs_c, cs_c, kc_max, true, ep_cols);
    }
}

// Small products straight on the micro-kernel, for kernels that multiply many small tiles
// (attention): no packing, no threads. A is read through its strides and B in place (rows of
// contiguous floats), so a 64 x 64 x 32 product costs only its multiply-adds. The micro-kernel
// reads whole MR-row and NR-column panels: a partial last panel of A or B is first copied,
// zero-padded, into a small buffer.
void sgemm_small(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a,
                 int64_t cs_a, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) return scale_c(M, N, beta, C, ldc, int64_t(1));
    const int64_t m_full = M / MR * MR;
    float* a_edge = t_a_buffer.get(MR * K);
    float* b_edge = t_b_buffer.get(K * NR);
    if (m_full < M) pack_a(M - m_full, K, A + m_full * rs_a, rs_a, cs_a, a_edge);
    for (int64_t jr = 0; jr < N; jr += NR) {
        const int64_t nr = std::min<int64_t>(NR, N - jr);
        const float* b = B + jr;
        int64_t b_rs = ldb;
        if (nr < NR) {
            for (int64_t k = 0; k < K; ++k)
                for (int j = 0; j < NR; ++j) b_edge[k * NR + j] = j < nr ? B[k * ldb + jr + j] : 0.0f;
            b = b_edge;
            b_rs = NR;
        }
        for (int64_t ir = 0; ir < m_full; ir += MR)
            micro_kernel(K, A + ir * rs_a, rs_a, cs_a, b, b_rs, alpha, beta, C + ir * ldc + jr, ldc, 1,
                         MR, nr, nullptr, false);
        if (m_full < M)
            micro_kernel(K, a_edge, 1, MR, b, b_rs, alpha, beta, C + m_full * ldc + jr, ldc, 1,
                         M - m_full, nr, nullptr, false);
    }
}

void sgemm_reference(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t rs_a,
                     int64_t cs_a, const float* B, int64_t rs_b, int64_t cs_b, float beta, float* C,
                     int64_t rs_c, int64_t cs_c) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) return scale_c(M, N, beta, C, rs_c, cs_c);
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            double sum = 0;  // double accumulation: a tighter oracle than the code under test
            for (int64_t k = 0; k < K; ++k)
                sum += double(A[i * rs_a + k * cs_a]) * double(B[k * rs_b + j * cs_b]);
            float& cij = C[i * rs_c + j * cs_c];
            const double product = double(alpha) * sum;
            cij = float(beta == 0.0f ? product : product + double(beta) * double(cij));
        }
}

// ---------------------------------------------------------------------------------------------
// dgemm: row blocks of C across threads; within a block the loop order i, k, j makes the inner
// loop run along rows of B and C (vectorised when both are contiguous). K is cut into blocks so
// the rows of B being reused stay in cache.
void dgemm(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t rs_a,
           int64_t cs_a, const double* B, int64_t rs_b, int64_t cs_b, double beta, double* C,
           int64_t rs_c, int64_t cs_c) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0) return scale_c(M, N, beta, C, rs_c, cs_c);
    constexpr int64_t kRowBlock = 16, kKBlock = 128;
    const int64_t row_blocks = ceil_div(M, kRowBlock);
    const bool parallel = M * N * K >= kThreadLimit && !omp_in_parallel();

#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t rb = 0; rb < row_blocks; ++rb) {
        const int64_t i_end = std::min(M, (rb + 1) * kRowBlock);
        for (int64_t i = rb * kRowBlock; i < i_end; ++i) {
            double* c = C + i * rs_c;
            for (int64_t j = 0; j < N; ++j) c[j * cs_c] = beta == 0.0 ? 0.0 : beta * c[j * cs_c];
        }
        for (int64_t k0 = 0; k0 < K; k0 += kKBlock) {
            const int64_t k_end = std::min(K, k0 + kKBlock);
            for (int64_t i = rb * kRowBlock; i < i_end; ++i) {
                double* c = C + i * rs_c;
                for (int64_t k = k0; k < k_end; ++k) {
                    const double a_ik = alpha * A[i * rs_a + k * cs_a];
                    const double* b = B + k * rs_b;
                    if (cs_b == 1 && cs_c == 1) {
#pragma omp simd
                        for (int64_t j = 0; j < N; ++j) c[j] += a_ik * b[j];
                    } else {
                        for (int64_t j = 0; j < N; ++j) c[j * cs_c] += a_ik * b[j * cs_b];
                    }
                }
            }
        }
    }
}

void dgemm_reference(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t rs_a,
                     int64_t cs_a, const double* B, int64_t rs_b, int64_t cs_b, double beta,
                     double* C, int64_t rs_c, int64_t cs_c) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0) return scale_c(M, N, beta, C, rs_c, cs_c);
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            double sum = 0;
            for (int64_t k = 0; k < K; ++k) sum += A[i * rs_a + k * cs_a] * B[k * rs_b + j * cs_b];
            double& cij = C[i * rs_c + j * cs_c];
            cij = beta == 0.0 ? alpha * sum : alpha * sum + beta * cij;
        }
}

}  // namespace mg::cpu
