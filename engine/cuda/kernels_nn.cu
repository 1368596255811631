// cuda/kernels_nn.cu: softmax, log_softmax, cross_entropy and layer_norm on the GPU, and
// layer_norm's fused backward. The CPU reference is engine/cpu/kernels_nn.cpp; the ops
// (engine/ops_nn.cpp) make the inputs contiguous, allocate the outputs and write the other backward
// passes in engine ops, so apart from layer_norm_backward only the forwards live here.
//
// All four are row-wise: each row (a softmax line, a sample's logits, a layer_norm vector) needs
// one or two reductions over itself (its max, its sum of exponentials, its mean and variance) and
// then an elementwise pass that uses them. So a row belongs to one group of threads that can
// combine values quickly: a warp (rows up to 1024 values: reductions by register shuffles only)
// or a whole block of 256 threads (longer rows: shuffles, then shared memory). The threads of the
// group stride through the row (thread t reads t, t + size, ...: neighbours read neighbours) and
// G::allreduce (block_reduce.cuh) gives every thread the row's total in a fixed order, so results
// are bitwise reproducible.
//
// softmax over a dim that is not the last one (inner > 1) or over very short lines instead gets a
// thread per line, which walks the line alone in the CPU's order; the threads of a warp then hold
// neighbouring inner positions, so their reads are coalesced too.
//
// Numerics as on the CPU: subtract the row max before exp (no overflow), accumulate in double,
// exp in T's precision for softmax (CPU float32 uses exp_f32, within 3e-7 of expf), in double
// for cross_entropy.
#include <cmath>
#include <type_traits>

#include "engine/cuda/block_reduce.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {
namespace {

constexpr int64_t kWarpRowMax = 1024;  // rows up to this length get a warp each, longer ones a block

__device__ inline float exp_t(float v) { return expf(v); }
__device__ inline double exp_t(double v) { return exp(v); }

// ---- softmax / log_softmax ------------------------------------------------------------------------
// One line of R values at x[r * stride], handled by the threads first, first + step, ... of a group
// whose partial results `reduce` combines (for a lone thread: first 0, step 1, reduce = identity).
//   softmax:     y_r = exp(x_r - m) / sum_j exp(x_j - m)
//   log_softmax: y_r = x_r - m - log(sum_j exp(x_j - m))
// A line holding +inf, or only -inf, gives NaN, as on the CPU.
template <typename T, typename Reduce>
__device__ void softmax_line(const T* x, T* y, int64_t R, int64_t stride, bool log_output, int64_t first, int64_t step,
                             Reduce reduce) {
    double m = -INFINITY;
    for (int64_t r = first; r < R; r += step) m = fmax(m, (double)x[r * stride]);
    m = reduce(m, MaxIgnoringNanOp{});
    const T mt = (T)m;
    double total = 0;
    for (int64_t r = first; r < R; r += step) total += (double)exp_t(x[r * stride] - mt);
    total = reduce(total, AddOp{});
    if (log_output) {
        const double log_total = log(total);
        for (int64_t r = first; r < R; r += step) y[r * stride] = (T)((double)x[r * stride] - m - log_total);
    } else {
        // The CPU stores e = exp(x - m) and then scales it by (T)(1 / total): the same two roundings.
        const T inv_total = (T)(1.0 / total);
        for (int64_t r = first; r < R; r += step) y[r * stride] = exp_t(x[r * stride] - mt) * inv_total;
    }
}

// A thread per line (o, i) of the (outer, R, inner) view.
template <typename T>
__global__ void softmax_lines(const T* x, T* y, int64_t outer, int64_t R, int64_t inner, bool log_output) {
    MG_GRID_STRIDE_LOOP(line, outer * inner) {
        const int64_t base = (line / inner) * R * inner + line % inner;
        softmax_line(x + base, y + base, R, inner, log_output, 0, 1, [](auto v, auto) { return v; });
    }
}

// A group G per contiguous row (inner == 1).
template <typename G, typename T> __global__ void softmax_rows(const T* x, T* y, int64_t rows, int64_t R, bool log_output) {
    for (int64_t row = G::first_row(); row < rows; row += G::row_step())
        softmax_line(x + row * R, y + row * R, R, 1, log_output, G::rank(), G::size(),
                     [](auto v, auto op) { return G::allreduce(v, op); });
}

void softmax_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &y = args.out[0];
    int64_t outer = 1, R = 1, inner = 1;  // (outer, R, inner) around attrs.dim
    for (int64_t d = 0; d < x.dim(); ++d) {
        if (d < args.attrs.dim) outer *= x.shape()[d];
        else if (d == args.attrs.dim) R = x.shape()[d];
        else inner *= x.shape()[d];
    }
    const bool log_output = args.op == OpId::log_softmax;
    const char* op = op_name(args.op);
    dispatch_floating(x.dtype(), op, [&](auto tag) {
        using T = decltype(tag);
        if (x.numel() == 0) return;
        const T* px = x.data_ptr<T>();
        T* py = y.data_ptr<T>();
        // Lines shorter than a warp would leave most lanes idle: a thread per line instead.
        if (inner > 1 || R < 32)
            softmax_lines<<<grid_for(outer * inner), kThreads>>>(px, py, outer, R, inner, log_output);
        else if (R <= kWarpRowMax)
            softmax_rows<WarpPerRow><<<WarpPerRow::grid(outer), kRowThreads>>>(px, py, outer, R, log_output);
        else
            softmax_rows<BlockPerRow><<<BlockPerRow::grid(outer), kRowThreads>>>(px, py, outer, R, log_output);
        check_launch(op);
    });
}

// ---- cross_entropy --------------------------------------------------------------------------------
// in:  logits (N, C) contiguous float, targets (N) contiguous int32/int64
// out: loss () = sum_i w_i * (lse_i - logits[i, t_i]),  lse (N),  row_weight (N) = 1/n_valid or 0
// (the same outputs as the CPU kernel; the backward uses lse and row_weight).
// Two launches: a group per row computes lse_i, checks the target and leaves the row's loss and
// whether it counts in scratch arrays; then a single block adds the row losses and counts in a
// fixed tree (the mean must see every row, and a second launch is the simplest way to wait for
// all of them) and writes the loss and the weights.
template <typename G, typename T, typename I>
__global__ void cross_entropy_rows(const T* logits, const I* targets, int64_t N, int64_t C, int64_t ignore_index,
                                   T* lse, double* row_loss, int* row_valid, DeviceError* err) {
    for (int64_t i = G::first_row(); i < N; i += G::row_step()) {
        const T* row = logits + i * C;
        double m = -INFINITY;
        for (int64_t c = G::rank(); c < C; c += G::size()) m = fmax(m, (double)row[c]);
        m = G::allreduce(m, MaxIgnoringNanOp{});
        double total = 0;
        for (int64_t c = G::rank(); c < C; c += G::size()) total += exp((double)row[c] - m);
        total = G::allreduce(total, AddOp{});
        if (G::rank() != 0) continue;
        const double row_lse = m + log(total);
        lse[i] = (T)row_lse;
        const int64_t t = (int64_t)targets[i];
        double loss = 0;
        int valid = 0;
        if (t != ignore_index) {
            // The CPU throws std::out_of_range here; a kernel records it for the next synchronisation.
            if (t < 0 || t >= C) report_index_error(err, OpId::cross_entropy, t, C);
            else {
                valid = 1;
                loss = row_lse - (double)row[t];
            }
        }
        row_loss[i] = loss;
        row_valid[i] = valid;
    }
}

// One block: the mean over the valid rows, and each row's weight for the backward.
template <typename T>
__global__ void cross_entropy_mean(const double* row_loss, const int* row_valid, int64_t N, T* loss, T* row_weight) {
    double total = 0;
    int64_t n_valid = 0;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
        total += row_loss[i];
        n_valid += row_valid[i];
    }
    total = block_allreduce(total, AddOp{});
    n_valid = block_allreduce(n_valid, AddOp{});
    const double inv_n = n_valid > 0 ? 1.0 / (double)n_valid : 0.0;  // no valid row: loss 0, weights 0
    if (threadIdx.x == 0) loss[0] = (T)(total * inv_n);
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) row_weight[i] = row_valid[i] ? (T)inv_n : T(0);
}

void cross_entropy_kernel(const KernelArgs& args) {
    const Tensor &logits = args.in[0], &targets = args.in[1];
    const Tensor &loss = args.out[0], &lse = args.out[1], &row_weight = args.out[2];
    const int64_t N = logits.shape()[0], C = logits.shape()[1];
    Tensor row_loss = Tensor::empty({std::max<int64_t>(N, 1)}, DType::Float64, Device::CUDA);  // (N) scratch
    Tensor row_valid = Tensor::empty({std::max<int64_t>(N, 1)}, DType::Int32, Device::CUDA);   // (N) scratch
    dispatch_floating(logits.dtype(), "cross_entropy", [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(targets.dtype(), "cross_entropy", [&](auto itag) {
            using I = decltype(itag);
            if (N > 0) {
                const auto rows_args = [&](auto kernel, unsigned grid) {
                    kernel<<<grid, kRowThreads>>>(logits.data_ptr<T>(), targets.data_ptr<I>(), N, C, args.attrs.index,
                                                  lse.data_ptr<T>(), row_loss.data_ptr<double>(),
                                                  row_valid.data_ptr<int>(), device_error());
                };
                if (C <= kWarpRowMax) rows_args(cross_entropy_rows<WarpPerRow, T, I>, WarpPerRow::grid(N));
                else rows_args(cross_entropy_rows<BlockPerRow, T, I>, BlockPerRow::grid(N));
                check_launch("cross_entropy");
            }
            // Launched even for N == 0: the loss (a 0-d tensor) is then 0, as on the CPU.
            cross_entropy_mean<<<1, 1024>>>(row_loss.data_ptr<double>(), row_valid.data_ptr<int>(), N,
                                            loss.data_ptr<T>(), row_weight.data_ptr<T>());
            check_launch("cross_entropy");
        });
    });
}

// ---- layer_norm -----------------------------------------------------------------------------------
// in:  x (rows, D) contiguous, weight (D), bias (D) (ones / zeros when the layer has none)
// out: y (rows, D) = (x - mean) * rstd * weight + bias,  mean (rows),  rstd (rows) = 1 / sqrt(var + eps)
// Two reductions per row in double, as on the CPU: the mean, then the squared deviations from it
// (no cancellation, unlike E[x^2] - E[x]^2); the row is re-read from global memory for each pass
// (it is small and stays in the cache).
template <typename G, typename T>
__global__ void layer_norm_rows(const T* x, const T* weight, const T* bias, T* y, T* mean_out, T* rstd_out,
                                int64_t rows, int64_t D, double eps) {
    for (int64_t r = G::first_row(); r < rows; r += G::row_step()) {
        const T* xr = x + r * D;
        T* yr = y + r * D;
        double sum = 0;
        for (int64_t d = G::rank(); d < D; d += G::size()) sum += (double)xr[d];
        const double mean = G::allreduce(sum, AddOp{}) / (double)D;
        double squares = 0;
        for (int64_t d = G::rank(); d < D; d += G::size()) {
            const double dev = (double)xr[d] - mean;
            squares += dev * dev;
        }
        const double rstd = 1.0 / sqrt(G::allreduce(squares, AddOp{}) / (double)D + eps);
        for (int64_t d = G::rank(); d < D; d += G::size())
            yr[d] = (T)(((double)xr[d] - mean) * rstd * (double)weight[d] + (double)bias[d]);
        if (G::rank() == 0) {
            mean_out[r] = (T)mean;
            rstd_out[r] = (T)rstd;
        }
    }
}

void layer_norm_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &weight = args.in[1], &bias = args.in[2];
    const Tensor &y = args.out[0], &mean_out = args.out[1], &rstd_out = args.out[2];
    const int64_t D = x.shape().empty() ? 1 : x.shape().back();
    const int64_t rows = D == 0 ? 0 : x.numel() / D;
    if (rows == 0) return;
    dispatch_floating(x.dtype(), "layer_norm", [&](auto tag) {
        using T = decltype(tag);
        const auto launch = [&](auto kernel, unsigned grid) {
            kernel<<<grid, kRowThreads>>>(x.data_ptr<T>(), weight.data_ptr<T>(), bias.data_ptr<T>(), y.data_ptr<T>(),
                                          mean_out.data_ptr<T>(), rstd_out.data_ptr<T>(), rows, D, args.attrs.scalar);
        };
        if (D <= kWarpRowMax) launch(layer_norm_rows<WarpPerRow, T>, WarpPerRow::grid(rows));
        else launch(layer_norm_rows<BlockPerRow, T>, BlockPerRow::grid(rows));
        check_launch("layer_norm");
    });
}

// ---- layer_norm_backward --------------------------------------------------------------------------
// in:  x (rows, D), weight (D) (ones when the layer has none), mean (rows), rstd (rows), g (rows, D),
//      all contiguous
// out: dx (rows, D), dw (D), db (D)
// The CPU kernel (engine/cpu/kernels_nn.cpp) is the reference. With xhat = (x - mean) * rstd and
// dxhat = g * w, per row: dx = rstd * (dxhat - a - xhat * b), a = mean of dxhat, b = mean of
// dxhat * xhat; over all rows: dw = sum g * xhat, db = sum g.
//
// dx is row-wise like the forward: a warp or a block per row, two all-reduces (a, b), then the
// elementwise pass. dw and db are sums down the columns, over every row: a float atomicAdd per row
// into dw would add in arrival order (different bits each run), so instead, as on the CPU, the rows
// are cut into blocks of kLnRowsPerBlock and
//   1. layer_norm_param_partials: thread (column d, row block k) sums its block's rows in order
//      into partial[k] (double). The threads of a warp hold neighbouring columns, so each row is
//      read coalesced.
//   2. layer_norm_param_sum: thread d adds partial[0..blocks) of its column in block order.
// Both orders are fixed, so the result is the same bits every run.
constexpr int64_t kLnRowsPerBlock = 64;  // the CPU kernel's kRowsPerBlock

template <typename G, typename T>
__global__ void layer_norm_backward_rows(const T* x, const T* weight, const T* mean_in, const T* rstd_in, const T* g,
                                         T* dx, int64_t rows, int64_t D) {
    for (int64_t r = G::first_row(); r < rows; r += G::row_step()) {
        const T* xr = x + r * D;
        const T* gr = g + r * D;
        T* dxr = dx + r * D;
        const double mean = (double)mean_in[r], rstd = (double)rstd_in[r];
        double sum_dxhat = 0, sum_dxhat_xhat = 0;
        for (int64_t d = G::rank(); d < D; d += G::size()) {
            const double dxhat = (double)gr[d] * (double)weight[d];
            sum_dxhat += dxhat;
            sum_dxhat_xhat += dxhat * (((double)xr[d] - mean) * rstd);
        }
        const double a = G::allreduce(sum_dxhat, AddOp{}) / (double)D;
        const double b = G::allreduce(sum_dxhat_xhat, AddOp{}) / (double)D;
        for (int64_t d = G::rank(); d < D; d += G::size()) {
            const double xhat = ((double)xr[d] - mean) * rstd;
            dxr[d] = (T)(rstd * ((double)gr[d] * (double)weight[d] - a - xhat * b));
        }
    }
}

// grid (column tiles, row blocks); partial holds 2 * blocks rows of D doubles: block k's sum of
// g * xhat at row 2k, of g at row 2k + 1.
template <typename T>
__global__ void layer_norm_param_partials(const T* x, const T* mean_in, const T* rstd_in, const T* g,
                                          double* partial, int64_t rows, int64_t D, int64_t blocks) {
    const int64_t d = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D) return;
    for (int64_t k = blockIdx.y; k < blocks; k += gridDim.y) {
        const int64_t end = (k + 1) * kLnRowsPerBlock < rows ? (k + 1) * kLnRowsPerBlock : rows;
        double sum_w = 0, sum_b = 0;
        for (int64_t r = k * kLnRowsPerBlock; r < end; ++r) {
            const double gd = (double)g[r * D + d];
            sum_w += gd * (((double)x[r * D + d] - (double)mean_in[r]) * (double)rstd_in[r]);
            sum_b += gd;
        }
        partial[(2 * k) * D + d] = sum_w;
        partial[(2 * k + 1) * D + d] = sum_b;
    }
}

template <typename T>
__global__ void layer_norm_param_sum(const double* partial, T* dw, T* db, int64_t D, int64_t blocks) {
    MG_GRID_STRIDE_LOOP(d, D) {
        double sum_w = 0, sum_b = 0;
        for (int64_t k = 0; k < blocks; ++k) {
            sum_w += partial[(2 * k) * D + d];
            sum_b += partial[(2 * k + 1) * D + d];
        }
        dw[d] = (T)sum_w;
        db[d] = (T)sum_b;
    }
}

void layer_norm_backward_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &weight = args.in[1], &mean_in = args.in[2], &rstd_in = args.in[3],
                 &g = args.in[4];
    const Tensor &dx = args.out[0], &dw = args.out[1], &db = args.out[2];
    const int64_t D = x.shape().back();
    if (D == 0) return;
    const int64_t rows = x.numel() / D;
    dispatch_floating(x.dtype(), "layer_norm_backward", [&](auto tag) {
        using T = decltype(tag);
        if (rows == 0) {  // no rows: dw = db = 0
            check(cudaMemsetAsync(dw.data_ptr<T>(), 0, D * sizeof(T), 0), "cudaMemsetAsync", "layer_norm_backward");
            check(cudaMemsetAsync(db.data_ptr<T>(), 0, D * sizeof(T), 0), "cudaMemsetAsync", "layer_norm_backward");
            return;
        }
        const auto launch_rows = [&](auto kernel, unsigned grid) {
            kernel<<<grid, kRowThreads>>>(x.data_ptr<T>(), weight.data_ptr<T>(), mean_in.data_ptr<T>(),
                                          rstd_in.data_ptr<T>(), g.data_ptr<T>(), dx.data_ptr<T>(), rows, D);
        };
        if (D <= kWarpRowMax) launch_rows(layer_norm_backward_rows<WarpPerRow, T>, WarpPerRow::grid(rows));
        else launch_rows(layer_norm_backward_rows<BlockPerRow, T>, BlockPerRow::grid(rows));
        check_launch("layer_norm_backward");

        const int64_t blocks = (rows + kLnRowsPerBlock - 1) / kLnRowsPerBlock;
        Tensor partial = Tensor::empty({2 * blocks * D}, DType::Float64, Device::CUDA);  // scratch
        const dim3 grid((unsigned)((D + kThreads - 1) / kThreads), (unsigned)std::min<int64_t>(blocks, 65535));
        layer_norm_param_partials<T><<<grid, kThreads>>>(x.data_ptr<T>(), mean_in.data_ptr<T>(),
                                                         rstd_in.data_ptr<T>(), g.data_ptr<T>(),
                                                         partial.data_ptr<double>(), rows, D, blocks);
        check_launch("layer_norm_backward");
        layer_norm_param_sum<T><<<grid_for(D), kThreads>>>(partial.data_ptr<double>(), dw.data_ptr<T>(),
                                                           db.data_ptr<T>(), D, blocks);
        check_launch("layer_norm_backward");
    });
}

}  // namespace

void register_nn_kernels() {
    register_kernel(Device::CUDA, OpId::softmax, softmax_kernel);
    register_kernel(Device::CUDA, OpId::log_softmax, softmax_kernel);
    register_kernel(Device::CUDA, OpId::cross_entropy, cross_entropy_kernel);
    register_kernel(Device::CUDA, OpId::layer_norm, layer_norm_kernel);
    register_kernel(Device::CUDA, OpId::layer_norm_backward, layer_norm_backward_kernel);
}

}  // namespace mg::cuda
