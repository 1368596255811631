// cuda/kernels_grouped.cu: grouped_matmul and its weight gradient, the MoE layer's experts in
// one launch each (engine/ops_matmul.cpp has the op; engine/cpu/kernels_matmul.cpp the CPU twin).
//
// The rows of x come grouped by expert: group g is rows [off[g], off[g+1]). The output is cut
// into tiles of 64 rows x 64 columns, and every tile lies inside ONE group (a group's rows are
// tiled on their own, the last tile of a group may be short). So one launch computes all the
// experts: block (bx, by) first finds which group its row tile bx belongs to (a short walk over
// the G group sizes, done by one thread), then runs an ordinary shared-memory tiled product with
// that group's weight. The grid has ceil(N/64) + G row tiles, an upper bound on the real count
// (each group adds at most one partial tile); blocks past the end return at once. No host round
// trip: the offsets stay on the device.
//
// Inside a block: 256 threads as 16 x 16, each computing a 4 x 4 patch of the 64 x 64 tile, over
// K in steps of 16 staged through shared memory (the "register-blocked" step of docs/engine/
// cuda.md's SGEMM ladder, without its vector loads: the groups' row counts are arbitrary).
// Deterministic: every output element is one thread's sum, in a fixed order.
#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {
namespace {

constexpr int kTile = 64;    // output tile: kTile x kTile
constexpr int kStep = 16;    // K (or, for the weight gradient, rows) per shared-memory stage
constexpr int kPatch = 4;    // each thread: kPatch x kPatch outputs
constexpr int kBlock = 256;  // (kTile / kPatch)^2 threads

// Thread 0 of block 0 checks the offsets once: 0 first, never decreasing, N last.
__device__ void check_offsets(const int64_t* off, int64_t G, int64_t N, OpId op, DeviceError* err) {
    if (blockIdx.x != 0 || blockIdx.y != 0 || blockIdx.z != 0 || threadIdx.x != 0) return;
    if (off[0] != 0) report_index_error(err, op, off[0], N + 1);
    for (int64_t g = 0; g < G; ++g)
        if (off[g + 1] < off[g] || off[g + 1] > N) report_index_error(err, op, off[g + 1], N + 1);
    if (off[G] != N) report_index_error(err, op, off[G], N + 1);
}

// y (N, M) = x_g (n_g, K) @ B_g, with B_g = w_g^T (w (G, M, K)) or, when w_as_is, w_g (w (G, K, M)).
template <typename T>
__global__ void grouped_matmul_kernel(const T* __restrict__ x, const T* __restrict__ w, const int64_t* __restrict__ off,
                                      T* __restrict__ y, int64_t G, int64_t N, int64_t K, int64_t M, bool w_as_is,
                                      DeviceError* err) {
    check_offsets(off, G, N, OpId::grouped_matmul, err);
    __shared__ int64_t s_group, s_row0, s_row_end;
    if (threadIdx.x == 0) {  // which group, and which of its row tiles, is block bx?
        int64_t tile = blockIdx.x, group = -1;
        for (int64_t g = 0; g < G; ++g) {
            const int64_t rows = off[g + 1] - off[g];
            const int64_t tiles = rows > 0 ? (rows + kTile - 1) / kTile : 0;
            if (tile < tiles) {
                group = g;
                break;
            }
            tile -= tiles;
        }
        s_group = group;
        s_row0 = group >= 0 ? off[group] + tile * kTile : 0;
        s_row_end = group >= 0 ? min(off[group + 1], N) : 0;
    }
    __syncthreads();
    if (s_group < 0) return;  // past the last tile (the grid is an upper bound)
    const int64_t row0 = s_row0, row_end = s_row_end, col0 = (int64_t)blockIdx.y * kTile;
    const T* wg = w + s_group * K * M;

    __shared__ T As[kStep][kTile];  // As[k][r]: x rows, transposed so a thread reads a column
    __shared__ T Bs[kStep][kTile];  // Bs[k][c]
    const int tx = threadIdx.x % (kTile / kPatch), ty = threadIdx.x / (kTile / kPatch);
    T acc[kPatch][kPatch] = {};
    for (int64_t k0 = 0; k0 < K; k0 += kStep) {
        // x tile: consecutive threads read consecutive k of one row (coalesced).
        for (int i = threadIdx.x; i < kTile * kStep; i += kBlock) {
            const int r = i / kStep, kk = i % kStep;
            const int64_t row = row0 + r, k = k0 + kk;
            As[kk][r] = (row < row_end && k < K) ? x[row * K + k] : T(0);
        }
        // weight tile: read along the weight's contiguous axis in either layout.
        for (int i = threadIdx.x; i < kTile * kStep; i += kBlock) {
            int kk, c;
            if (w_as_is) kk = i / kTile, c = i % kTile;  // w_g (K, M): consecutive columns
            else kk = i % kStep, c = i / kStep;          // w_g (M, K): consecutive k of one column
            const int64_t k = k0 + kk, col = col0 + c;
            Bs[kk][c] = (k < K && col < M) ? (w_as_is ? wg[k * M + col] : wg[col * K + k]) : T(0);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kStep; ++kk) {
            T a[kPatch], b[kPatch];
#pragma unroll
            for (int i = 0; i < kPatch; ++i) a[i] = As[kk][ty * kPatch + i], b[i] = Bs[kk][tx * kPatch + i];
#pragma unroll
            for (int i = 0; i < kPatch; ++i)
#pragma unroll
                for (int j = 0; j < kPatch; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < kPatch; ++i)
        for (int j = 0; j < kPatch; ++j) {
            const int64_t row = row0 + ty * kPatch + i, col = col0 + tx * kPatch + j;
            if (row < row_end && col < M) y[row * M + col] = acc[i][j];
        }
}

// dw_g (M, K) = dy_g^T (M, n_g) @ x_g (n_g, K): block (bx, by, g) computes one 64 x 64 tile of
// dw_g, summing over the group's rows in steps of 16 (both operands read row by row, coalesced).
// An empty group writes zeros.
template <typename T>
__global__ void grouped_weight_grad_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                           const int64_t* __restrict__ off, T* __restrict__ dw, int64_t G, int64_t N,
                                           int64_t K, int64_t M, DeviceError* err) {
    check_offsets(off, G, N, OpId::grouped_matmul_weight_grad, err);
    const int64_t g = blockIdx.z;
    const int64_t r0 = off[g], r1 = min(max(off[g + 1], r0), N);
    const int64_t k_base = (int64_t)blockIdx.x * kTile, m_base = (int64_t)blockIdx.y * kTile;
    __shared__ T Ds[kStep][kTile];  // Ds[r][m] = dy[row r, m]
    __shared__ T Xs[kStep][kTile];  // Xs[r][k] = x[row r, k]
    const int tx = threadIdx.x % (kTile / kPatch), ty = threadIdx.x / (kTile / kPatch);
    T acc[kPatch][kPatch] = {};  // acc[i][j]: dw[m_base + ty*4 + i][k_base + tx*4 + j]
    for (int64_t row0 = r0; row0 < r1; row0 += kStep) {
        for (int i = threadIdx.x; i < kTile * kStep; i += kBlock) {
            const int rr = i / kTile, c = i % kTile;
            const int64_t row = row0 + rr;
            Ds[rr][c] = (row < r1 && m_base + c < M) ? dy[row * M + m_base + c] : T(0);
            Xs[rr][c] = (row < r1 && k_base + c < K) ? x[row * K + k_base + c] : T(0);
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < kStep; ++rr) {
            T a[kPatch], b[kPatch];
#pragma unroll
            for (int i = 0; i < kPatch; ++i) a[i] = Ds[rr][ty * kPatch + i], b[i] = Xs[rr][tx * kPatch + i];
#pragma unroll
            for (int i = 0; i < kPatch; ++i)
#pragma unroll
                for (int j = 0; j < kPatch; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    T* dwg = dw + g * M * K;
    for (int i = 0; i < kPatch; ++i)
        for (int j = 0; j < kPatch; ++j) {
            const int64_t m = m_base + ty * kPatch + i, k = k_base + tx * kPatch + j;
            if (m < M && k < K) dwg[m * K + k] = acc[i][j];
        }
}

int64_t tiles(int64_t n) { return (n + kTile - 1) / kTile; }

void grouped_matmul(const KernelArgs& args) {
    const Tensor &x = args.in[0], &w = args.in[1], &off = args.in[2], &y = args.out[0];
    const int64_t N = x.size(0), K = x.size(1), M = y.size(1), G = off.numel() - 1;
    if (N == 0 || M == 0) return;
    dispatch_floating(x.dtype(), "grouped_matmul", [&](auto tag) {
        using T = decltype(tag);
        dim3 grid((unsigned)(tiles(N) + G), (unsigned)tiles(M));
        grouped_matmul_kernel<T><<<grid, kBlock>>>(x.data_ptr<T>(), w.data_ptr<T>(), off.data_ptr<int64_t>(),
                                                    y.data_ptr<T>(), G, N, K, M, args.attrs.flag, device_error());
        check_launch("grouped_matmul");
    });
}

void grouped_matmul_weight_grad(const KernelArgs& args) {
    const Tensor &dy = args.in[0], &x = args.in[1], &off = args.in[2], &dw = args.out[0];
    const int64_t N = x.size(0), K = x.size(1), M = dy.size(1), G = off.numel() - 1;
    if (G == 0 || M == 0 || K == 0) return;
    dispatch_floating(x.dtype(), "grouped_matmul_weight_grad", [&](auto tag) {
        using T = decltype(tag);
        dim3 grid((unsigned)tiles(K), (unsigned)tiles(M), (unsigned)G);
        grouped_weight_grad_kernel<T><<<grid, kBlock>>>(dy.data_ptr<T>(), x.data_ptr<T>(), off.data_ptr<int64_t>(),
                                                         dw.data_ptr<T>(), G, N, K, M, device_error());
        check_launch("grouped_matmul_weight_grad");
    });
}

}  // namespace

void register_grouped_kernels() {
    register_kernel(Device::CUDA, OpId::grouped_matmul, grouped_matmul);
    register_kernel(Device::CUDA, OpId::grouped_matmul_weight_grad, grouped_matmul_weight_grad);
}

}  // namespace mg::cuda
