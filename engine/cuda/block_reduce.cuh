// cuda/block_reduce.cuh: combining one value per thread into one value per warp or per block,
// in a fixed order, for the reduction kernels (kernels_reduce.cu) and the row-wise nn kernels
// (kernels_nn.cu).
//
// Determinism: the pairs that are combined depend only on the lane and warp numbers, never on
// timing, so a reduction gives the same bits run after run. (A float atomicAdd per thread would
// add in whatever order the threads arrive.)
//
// Every thread gets the result (an "all-reduce"), because the row kernels need the row's max and
// sum in every thread. The warp step is a butterfly: at offset 16 lane l combines with lane l^16,
// then 8, 4, 2, 1. Lane a computes op(a, b) where its partner computes op(b, a); with a
// commutative op (+, max, the argmax rule) both get the same bits, so all 32 lanes agree.
//
// WarpPerRow and BlockPerRow (at the end) name who works on one row of a row-wise kernel.
#pragma once
#include <algorithm>
#include <cstdint>

namespace mg::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// One shuffle of a plain value. Reduction states that are structs (argmax's value and index)
// provide their own shfl_xor overload next to their type; the calls below find it by argument-
// dependent lookup.
template <typename T> __device__ inline T shfl_xor(T v, int mask) { return __shfl_xor_sync(kFullMask, v, mask); }

// All 32 lanes must call this (the full mask), each with its own v; all get op over the warp.
template <typename T, typename Op> __device__ inline T warp_allreduce(T v, Op op) {
    for (int mask = 16; mask > 0; mask >>= 1) v = op(v, shfl_xor(v, mask));
    return v;
}

// Every thread of the block must call this (blockDim.x a multiple of 32, at most 1024). Each warp
// reduces itself, its lane 0 parks the result in shared memory, and then every thread combines
// the (at most 32) warp results in warp order: a few broadcast reads from shared memory, and the
// same order in every thread, so the same bits everywhere.
template <typename T, typename Op> __device__ inline T block_allreduce(T v, Op op) {
    __shared__ T warp_results[32];  // T must be a plain struct or number (no constructor)
    v = warp_allreduce(v, op);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) warp_results[warp] = v;
    __syncthreads();
    T total = warp_results[0];
    for (int w = 1; w < warps; ++w) total = op(total, warp_results[w]);
    __syncthreads();  // nobody may overwrite warp_results (a next call) before everyone has read it
    return total;
}

// The usual ops, as function objects usable in device code.
struct AddOp {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
// The max that skips NaN (fmax): the CPU's std::max(m, x) keeps m when x is NaN, so a row's max
// is the largest non-NaN value, or the starting -inf when there is none.
struct MaxIgnoringNanOp {
    __device__ double operator()(double a, double b) const { return fmax(a, b); }
};

// ---- who works on one row ----------------------------------------------------------------------
// A row-wise kernel loops `for (row = G::first_row(); row < rows; row += G::row_step())` and
// combines its threads' partial results with G::allreduce. A warp per row suits short rows (up to
// about a thousand values: each lane then handles a few dozen); a whole block per row suits long
// ones. The loop bound is the same for every thread of the group, so all of them reach the
// shuffles and __syncthreads() inside allreduce together.
constexpr int kRowThreads = 256;  // threads per block of the row-wise kernels (8 warps)

struct WarpPerRow {
    __device__ static int64_t first_row() { return (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; }
    __device__ static int64_t row_step() { return (int64_t)gridDim.x * (blockDim.x / 32); }
    __device__ static int rank() { return threadIdx.x % 32; }  // this thread's place in its group
    __device__ static int size() { return 32; }
    template <typename T, typename Op> __device__ static T allreduce(T v, Op op) { return warp_allreduce(v, op); }
    // Blocks of kRowThreads for `rows` rows (8 per block), capped: the row loop covers the rest.
    static unsigned grid(int64_t rows) {
        return (unsigned)std::clamp<int64_t>((rows + kRowThreads / 32 - 1) / (kRowThreads / 32), 1, 1 << 16);
    }
};

struct BlockPerRow {
    __device__ static int64_t first_row() { return blockIdx.x; }
    __device__ static int64_t row_step() { return gridDim.x; }
    __device__ static int rank() { return threadIdx.x; }
    __device__ static int size() { return blockDim.x; }
    template <typename T, typename Op> __device__ static T allreduce(T v, Op op) { return block_allreduce(v, op); }
    static unsigned grid(int64_t rows) { return (unsigned)std::clamp<int64_t>(rows, 1, 1 << 16); }
};

}  // namespace mg::cuda
