// engine/cpu/gemm.h: matrix multiply on the CPU, the kernel that most of the running time goes to.
//
// Every Linear layer, every expert and every backward pass ends up here. The fast sgemm follows
// the BLIS/GotoBLAS design: cache blocking (MC/KC/NC), packing of A and B into aligned panels,
// a SIMD register-blocked micro-kernel, and OpenMP threads over blocks of rows. The plain triple
// loops (sgemm_reference, dgemm_reference) sit beside it as the oracle for the tests.
// Walk-through with measured numbers: docs/engine/gemm.md. Teaching versions: bench/gemm/1..6.
//
// Matrices are addressed BLIS-style by a row stride and a column stride, so a transposed or
// strided view costs nothing to pass in:
//   A(i,k) = A[i*rs_a + k*cs_a]   A is M x K
//   B(k,j) = B[k*rs_b + j*cs_b]   B is K x N
//   C(i,j) = C[i*rs_c + j*cs_c]   C is M x N
// Row-major A is (rs_a = K, cs_a = 1); its transpose, read from the same memory, is (1, K).
//
// All functions compute C = alpha * A @ B + beta * C.
//  - beta == 0 means C is write-only: its old contents (even NaN or Inf) are never read.
//  - K == 0 gives C = beta * C; M == 0 or N == 0 does nothing.
//  - C must not overlap A or B.
//  - Deterministic: the same inputs give bitwise-identical results on every call and for every
//    thread count (K is never split across threads).
//  - Thread-safe and callable from inside an OpenMP parallel region (it then runs on the calling
//    thread only).
#pragma once
#include <cstdint>

namespace mg::cpu {

// What happens to each element of C after the product, while its tile is still in registers
// (a fused "epilogue"): C(i,j) += bias[j], then C(i,j) = max(C(i,j), 0) when relu. A Linear layer
// `relu(x @ W^T + b)` then costs one pass over its output instead of three (the GEMM, the bias
// add, the activation), with bitwise the same result: each step rounds as the separate op would.
struct Epilogue {
    const float* bias = nullptr;  // N values, one per column of C; nullptr: no bias
    bool relu = false;
};

// Fast single precision GEMM (packed, SIMD micro-kernel, OpenMP).
void sgemm(int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t rs_a, int64_t cs_a,
           const float* B, int64_t rs_b, int64_t cs_b,
           float beta, float* C, int64_t rs_c, int64_t cs_c, const Epilogue& epilogue = {});

// Small products on one thread with no packing, for many small tiles (the attention kernels):
// B(k,j) = B[k*ldb + j] and C(i,j) = C[i*ldc + j] (contiguous rows), A through its strides.
// Same contract as sgemm otherwise; runs on the calling thread only.
void sgemm_small(int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t rs_a, int64_t cs_a,
                 const float* B, int64_t ldb,
                 float beta, float* C, int64_t ldc);

// The plain triple loop: slow, obviously right, the oracle for sgemm.
void sgemm_reference(int64_t M, int64_t N, int64_t K, float alpha,
                     const float* A, int64_t rs_a, int64_t cs_a,
                     const float* B, int64_t rs_b, int64_t cs_b,
                     float beta, float* C, int64_t rs_c, int64_t cs_c);

// Double precision GEMM for gradient checks: loop-ordered and blocked, OpenMP over rows of C,
// no hand-written SIMD (the compiler vectorises the inner loop when B and C rows are contiguous).
void dgemm(int64_t M, int64_t N, int64_t K, double alpha,
           const double* A, int64_t rs_a, int64_t cs_a,
           const double* B, int64_t rs_b, int64_t cs_b,
           double beta, double* C, int64_t rs_c, int64_t cs_c);

void dgemm_reference(int64_t M, int64_t N, int64_t K, double alpha,
                     const double* A, int64_t rs_a, int64_t cs_a,
                     const double* B, int64_t rs_b, int64_t cs_b,
                     double beta, double* C, int64_t rs_c, int64_t cs_c);

// Which micro-kernel this build uses, e.g. "avx2+fma 6x16"; printed by the benchmarks.
const char* sgemm_kernel_name();

}  // namespace mg::cpu
