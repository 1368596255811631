// engine/cuda/gemm.h: matrix multiply on the GPU, our own SGEMM kernels (no cuBLAS in the engine).
//
// The GPU twin of engine/cpu/gemm.h, with the same addressing and the same contract, so that
// engine/cuda/kernels_matmul.cu reads like engine/cpu/kernels_matmul.cpp. Matrices are addressed
// BLIS-style by a row stride and a column stride (in elements), so a transposed or strided view
// costs nothing to pass in:
//   A(i,k) = A[i*rs_a + k*cs_a]   A is M x K
//   B(k,j) = B[k*rs_b + j*cs_b]   B is K x N
//   C(i,j) = C[i*rs_c + j*cs_c]   C is M x N
// Row-major A is (rs_a = K, cs_a = 1); its transpose, read from the same memory, is (1, K).
//
// All functions compute C = alpha * A @ B + beta * C, on DEVICE pointers, queued on the default
// stream (they never wait for the GPU).
//  - beta == 0 means C is write-only: its old contents (even NaN or Inf) are never read.
//  - K == 0 or alpha == 0 gives C = beta * C (A and B then do not matter, even if they hold NaN);
//    M == 0 or N == 0 (or an empty batch) launches nothing.
//  - C must not overlap A or B.
//  - Deterministic: one thread owns each element of C and sums over k in order; K is never split
//    across threads or blocks, so the same inputs give bitwise the same C on every call.
//
// The single precision kernels are kept as numbered teaching versions (gemm.cu explains each):
//   v1 naive              one thread per element of C, straight from global memory
//   v2 smem_tiled         32x32 tiles of A and B staged in shared memory
//   v3 register_blocked   128x128 block tiles, 8x8 outputs per thread held in registers
//   v4 vectorized         as v3 with float4 loads (global and shared); needs aligned operands
//   v5 double_buffered    as v4, loading the next tile while computing on this one
// sgemm() picks the best version whose requirements hold (sgemm_pick_version says which).
// Measured GFLOP/s per version: bench/gpu_gemm.cu, docs/engine/cuda.md.
#pragma once
#include <cstdint>
#include <string>

#include "engine/cuda/indexer.h"

namespace mg::cuda {

// Where each product of a batch starts: product z uses A + off[0], B + off[1], C + off[2], with
// batch.offsets(z, off). The batch may have several dimensions with any strides (broadcast
// operands have stride 0), exactly as engine/cuda/indexer.h walks elements; the kernels take it
// by value and each block finds its product from blockIdx.z.
using GemmBatch = Indexer<3>;

// One product (no batch).
GemmBatch single_product();
// `count` products, the z-th at A + z*stride_a, B + z*stride_b, C + z*stride_c.
GemmBatch strided_batch(int64_t count, int64_t stride_a, int64_t stride_b, int64_t stride_c);

// Everything one (batched) GEMM call needs, passed by value to the kernels.
template <typename T> struct GemmArgs {
    int64_t M = 0, N = 0, K = 0;
    T alpha = 1;
    const T* A = nullptr;
    int64_t rs_a = 0, cs_a = 0;
    const T* B = nullptr;
    int64_t rs_b = 0, cs_b = 0;
    T beta = 0;
    T* C = nullptr;
    int64_t rs_c = 0, cs_c = 0;
    GemmBatch batch = single_product();
};

// ---- the GEMM entry points (the versions are chosen automatically) --------------------------------
void sgemm(int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t rs_a, int64_t cs_a,
           const float* B, int64_t rs_b, int64_t cs_b,
           float beta, float* C, int64_t rs_c, int64_t cs_c);
void dgemm(int64_t M, int64_t N, int64_t K, double alpha,
           const double* A, int64_t rs_a, int64_t cs_a,
           const double* B, int64_t rs_b, int64_t cs_b,
           double beta, double* C, int64_t rs_c, int64_t cs_c);

// Batched: one launch for every product, blockIdx.z = product (see GemmBatch).
void sgemm_batched(const GemmArgs<float>& args);
// Double precision: a plain shared-memory tiled kernel (the v2 design), for gradient checks and
// float64 models: correct, not fast.
void dgemm_batched(const GemmArgs<double>& args);

// The common strided-batched form: `batch` products with constant strides between them.
void sgemm_strided_batched(int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                           const float* A, int64_t rs_a, int64_t cs_a, int64_t stride_a,
                           const float* B, int64_t rs_b, int64_t cs_b, int64_t stride_b,
                           float beta, float* C, int64_t rs_c, int64_t cs_c, int64_t stride_c);

// ---- the numbered versions (tests and bench/gpu_gemm.cu run each one by name) -------------------
enum class SgemmVersion : int {
    naive = 1,
    smem_tiled = 2,
    register_blocked = 3,
    vectorized = 4,
    double_buffered = 5,
};
constexpr int kSgemmVersions = 5;

// "sgemm_v1_naive", ..., "sgemm_v5_double_buffered".
const char* sgemm_version_name(SgemmVersion version);
// Can this version run this problem? v1, v2 and v3 take any sizes and strides. v4 and v5 load
// float4s: A and B must each have one unit stride (row-major or transposed), the other stride a
// multiple of 4, 16-byte aligned base pointers and batch strides that are multiples of 4.
// (Edges are handled inside every kernel, so any M, N, K works.) When not, *why says which rule failed.
bool sgemm_version_supports(SgemmVersion version, const GemmArgs<float>& args, std::string* why = nullptr);
// Runs one version; throws std::invalid_argument if it cannot run this problem.
void sgemm_run_version(SgemmVersion version, const GemmArgs<float>& args);
// The version sgemm() / sgemm_batched() use for this problem.
SgemmVersion sgemm_pick_version(const GemmArgs<float>& args);

}  // namespace mg::cuda
