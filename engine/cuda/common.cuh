// cuda/common.cuh: what every CUDA kernel file shares: error checks, launch sizes, the strided
// indexer, and the device-side error flag for out-of-range indices.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/backend.h"
#include "engine/cuda/indexer.h"

namespace mg::cuda {

// Throws std::runtime_error "CUDA error in <call> (<op>): <message>" when err is not cudaSuccess.
void check(cudaError_t err, const char* call, const char* op = nullptr);
// After a kernel launch: a bad launch configuration shows up here, named by the op.
void check_launch(const char* op);

// ---- launch sizes ---------------------------------------------------------------------------------
constexpr int kThreads = 256;  // threads per block for simple elementwise kernels
// Enough blocks to give each thread about one element, capped: the loops are grid-stride, so a
// capped grid still covers any n.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
    const int64_t blocks = (n + threads - 1) / threads;
    return (unsigned)std::clamp<int64_t>(blocks, 1, 1 << 16);
}
// for (i = this thread; i < n; i += every thread of the grid)
#define MG_GRID_STRIDE_LOOP(i, n)                                                           \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)(n); \
         i += (int64_t)gridDim.x * blockDim.x)

// ---- device-side errors -----------------------------------------------------------------------------
// A kernel cannot throw. When it meets an index out of range it records the first such index here
// and carries on (writing nothing for it); the host reads the record at its next synchronisation
// (item(), to(cpu), synchronize()) and throws std::out_of_range naming the op, the index and the bound.
struct DeviceError {
    int code;        // 0: none; 1: index out of range; 2: a row of invalid values (index = the row)
    int op;          // OpId
    long long index;
    long long bound;  // the valid range is [0, bound)
};
// The record in device memory; kernels that index take it as an argument.
DeviceError* device_error();

__device__ inline void report_index_error(DeviceError* err, OpId op, long long index, long long bound) {
    if (atomicCAS(&err->code, 0, 1) == 0) {
        err->op = (int)op;
        err->index = index;
        err->bound = bound;
    }
}

// A row whose values the op cannot use (multinomial: a negative, NaN or infinite weight, or a
// zero sum); raised as std::invalid_argument, as the CPU kernel throws.
__device__ inline void report_invalid_row(DeviceError* err, OpId op, long long row) {
    if (atomicCAS(&err->code, 0, 2) == 0) {
        err->op = (int)op;
        err->index = row;
        err->bound = 0;
    }
}

// ---- small device math -------------------------------------------------------------------------------
// Numeric limits usable in device code for the engine's dtypes.
template <typename T> __host__ __device__ constexpr T lowest_value();
template <> __host__ __device__ constexpr float lowest_value<float>() { return -3.402823466e+38f; }
template <> __host__ __device__ constexpr double lowest_value<double>() { return -1.7976931348623157e+308; }
template <> __host__ __device__ constexpr int32_t lowest_value<int32_t>() { return INT32_MIN; }
template <> __host__ __device__ constexpr int64_t lowest_value<int64_t>() { return INT64_MIN; }
template <> __host__ __device__ constexpr bool lowest_value<bool>() { return false; }
template <typename T> __host__ __device__ constexpr T highest_value();
template <> __host__ __device__ constexpr float highest_value<float>() { return 3.402823466e+38f; }
template <> __host__ __device__ constexpr double highest_value<double>() { return 1.7976931348623157e+308; }
template <> __host__ __device__ constexpr int32_t highest_value<int32_t>() { return INT32_MAX; }
template <> __host__ __device__ constexpr int64_t highest_value<int64_t>() { return INT64_MAX; }
template <> __host__ __device__ constexpr bool highest_value<bool>() { return true; }

}  // namespace mg::cuda
