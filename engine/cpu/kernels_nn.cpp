// cpu/kernels_nn.cpp: CPU kernels for the neural-network ops (softmax, log_softmax,
// cross_entropy, layer_norm) and layer_norm's fused backward (layer_norm_backward). The op layer
// (engine/ops_nn.cpp) checks arguments, makes inputs contiguous, allocates outputs and writes the
// other backward passes in engine ops; these are the forward loops.
//
// Numerics: every row first finds its max m and works with x - m, so exp() never overflows
// (softmax([1000, 0]) = [1, 0], not NaN). Sums accumulate in double. Threads split the work over
// independent rows only (layer_norm_backward's column sums use fixed row blocks), so the result
// is the same bits for any thread count.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/fast_math.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"

namespace mg::cpu {
namespace {

// ---- softmax / log_softmax ------------------------------------------------------------------------
// x and y contiguous, seen as (outer, R, inner) around attrs.dim. A "line" is the R values at a
// fixed (outer, inner) position, p[r * inner]; each line is normalised on its own:
//   softmax:     y_r = exp(x_r - m) / sum_j exp(x_j - m)
//   log_softmax: y_r = x_r - m - log(sum_j exp(x_j - m))
// A line that holds +inf, or only -inf, gives NaN, as in PyTorch.
template <typename T> void softmax_line(const T* x, T* y, int64_t R, int64_t stride, bool log_output) {
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t r = 0; r < R; ++r) m = std::max(m, (double)x[r * stride]);
    // One exp per value, in T's precision (for float32 the vectorisable exp_f32 of fast_math.h,
    // within 3e-7 of expf: the softmax of the MoE router spends most of its time here), summed in
    // double.
    const T mt = (T)m;
    double total = 0;
    for (int64_t r = 0; r < R; ++r) {
        T e;
        if constexpr (std::is_same_v<T, float>) e = exp_f32(x[r * stride] - mt);
        else e = std::exp(x[r * stride] - mt);
        if (!log_output) y[r * stride] = e;
        total += (double)e;
    }
    if (log_output) {
        const double log_total = std::log(total);
        for (int64_t r = 0; r < R; ++r) y[r * stride] = (T)((double)x[r * stride] - m - log_total);
    } else {
        const T inv_total = (T)(1.0 / total);
        for (int64_t r = 0; r < R; ++r) y[r * stride] *= inv_total;
    }
}

// Short contiguous rows (the MoE router's T rows of E logits): rows one at a time are a chain of
// dependent steps (the max, then the running sum, each waiting for the one before), and a row of 8
// took ~40 ns. Eight rows at a time, interleaved, keep eight independent chains in flight. Each
// row's arithmetic is softmax_line's, in the same order: the same bits.
constexpr int64_t kShortRow = 32;
template <typename T> void softmax_short_rows(const T* x, T* y, int64_t rows, int64_t R, bool log_output) {
    constexpr int L = 8;
    int64_t r0 = 0;
    for (; r0 + L <= rows; r0 += L) {
        const T* xr = x + r0 * R;
        T* yr = y + r0 * R;
        double m[L], total[L];
        T mt[L];
        for (int l = 0; l < L; ++l) m[l] = -std::numeric_limits<double>::infinity(), total[l] = 0;
        for (int64_t j = 0; j < R; ++j)
            for (int l = 0; l < L; ++l) m[l] = std::max(m[l], (double)xr[l * R + j]);
        for (int l = 0; l < L; ++l) mt[l] = (T)m[l];
        for (int64_t j = 0; j < R; ++j)
            for (int l = 0; l < L; ++l) {
                T e;
                if constexpr (std::is_same_v<T, float>) e = exp_f32(xr[l * R + j] - mt[l]);
                else e = std::exp(xr[l * R + j] - mt[l]);
                if (!log_output) yr[l * R + j] = e;
                total[l] += (double)e;
            }
        for (int l = 0; l < L; ++l) {
            if (log_output) {
                const double log_total = std::log(total[l]);
                for (int64_t j = 0; j < R; ++j) yr[l * R + j] = (T)((double)xr[l * R + j] - m[l] - log_total);
            } else {
                const T inv_total = (T)(1.0 / total[l]);
                for (int64_t j = 0; j < R; ++j) yr[l * R + j] *= inv_total;
            }
        }
    }
    for (; r0 < rows; ++r0) softmax_line(x + r0 * R, y + r0 * R, R, 1, log_output);
}

void softmax_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &y = args.out[0];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    const bool log_output = args.op == OpId::log_softmax;
    dispatch_floating(x.dtype(), op_name(args.op), [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data_ptr<T>();
        T* py = y.data_ptr<T>();
        const int64_t lines = s.outer * s.inner;
        if (s.inner == 1 && s.reduced <= kShortRow) {
            // Blocks of 64 rows per task: whole groups of 8, so every row takes the same path.
            const int64_t blocks = (lines + 63) / 64;
#pragma omp parallel for schedule(static) if (worth_parallel(lines * s.reduced) && blocks > 1)
            for (int64_t b = 0; b < blocks; ++b) {
                const int64_t r0 = b * 64, n = std::min<int64_t>(64, lines - r0);
                softmax_short_rows(px + r0 * s.reduced, py + r0 * s.reduced, n, s.reduced, log_output);
            }
            return;
        }
#pragma omp parallel for schedule(static) if (worth_parallel(lines * s.reduced) && lines > 1)
        for (int64_t line = 0; line < lines; ++line) {
            const int64_t o = line / s.inner, i = line % s.inner;
            const int64_t base = o * s.reduced * s.inner + i;
            softmax_line(px + base, py + base, s.reduced, s.inner, log_output);
        }
    });
}

// ---- cross_entropy --------------------------------------------------------------------------------
// in:  logits (N, C) contiguous float, targets (N) contiguous int32/int64
// out: loss () = sum_i w_i * (lse_i - logits[i, t_i])
//      lse (N)        = log sum_c exp(logits[i, c]), per row (the backward's softmax is exp(logits - lse))
//      row_weight (N) = 1 / n_valid for rows whose target is not attrs.index (ignore_index), else 0
// With no valid row at all the loss is 0 and every weight is 0 (so is the gradient).
void cross_entropy_kernel(const KernelArgs& args) {
    const Tensor &logits = args.in[0], &targets = args.in[1];
    const Tensor &loss = args.out[0], &lse = args.out[1], &row_weight = args.out[2];
    const int64_t N = logits.shape()[0], C = logits.shape()[1];
    const int64_t ignore_index = args.attrs.index;
    std::vector<double> row_loss(N, 0.0);
    std::vector<uint8_t> valid(N, 0);
    std::atomic<int64_t> first_bad_row{N};  // the smallest row with an out-of-range target
    dispatch_floating(logits.dtype(), "cross_entropy", [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(targets.dtype(), "cross_entropy", [&](auto itag) {
            using I = decltype(itag);
            const T* pl = logits.data_ptr<T>();
            const I* pt = targets.data_ptr<I>();
            T* plse = lse.data_ptr<T>();
#pragma omp parallel for schedule(static) if (worth_parallel(N * C) && N > 1)
            for (int64_t i = 0; i < N; ++i) {
                const T* row = pl + i * C;
                double m = -std::numeric_limits<double>::infinity();
                for (int64_t c = 0; c < C; ++c) m = std::max(m, (double)row[c]);
                double total = 0;
                for (int64_t c = 0; c < C; ++c) total += std::exp((double)row[c] - m);
                const double row_lse = m + std::log(total);
                plse[i] = (T)row_lse;
                const int64_t t = (int64_t)pt[i];
                if (t == ignore_index) continue;
                if (t < 0 || t >= C) {
                    int64_t seen = first_bad_row.load();
                    while (i < seen && !first_bad_row.compare_exchange_weak(seen, i)) {}
                    continue;
                }
                valid[i] = 1;
                row_loss[i] = row_lse - (double)row[t];
            }
            if (first_bad_row.load() < N) {
                const int64_t i = first_bad_row.load();
                throw std::out_of_range("cross_entropy: target " + std::to_string((int64_t)pt[i]) + " at row " +
                                        std::to_string(i) + " is out of range for " + std::to_string(C) +
                                        " classes (valid: 0.." + std::to_string(C - 1) + ", or ignore_index " +
                                        std::to_string(ignore_index) + ")");
            }
            // The mean, added in row order on one thread: the same bits for any thread count.
            int64_t n_valid = 0;
            double total_loss = 0;
            for (int64_t i = 0; i < N; ++i) {
                n_valid += valid[i];
                total_loss += row_loss[i];
            }
            const double inv_n = n_valid > 0 ? 1.0 / (double)n_valid : 0.0;
            loss.data_ptr<T>()[0] = (T)(total_loss * inv_n);
            T* pw = row_weight.data_ptr<T>();
            for (int64_t i = 0; i < N; ++i) pw[i] = valid[i] ? (T)inv_n : T(0);
        });
    });
}

// ---- layer_norm -----------------------------------------------------------------------------------
// A row sum, accumulated in double. value(d) gives the d-th term (a lambda over the row's values).
//   float64: one running sum, in order d = 0, 1, 2, ... (the plain reference, unchanged).
//   float32: sixteen running sums ("lanes"): lane j adds the terms d = j, j + 16, j + 32, ...; at
//            the end the lanes are added in lane order, then the few tail terms. A single running
//            sum is a chain of dependent additions that the compiler may not reorder (that would
//            change the result), so it runs one addition at a time, each waiting ~4 cycles for
//            the previous one. Sixteen independent sums become four 4-wide AVX registers of doubles
//            that add in parallel. Still double precision, and the order depends only on D, never on
//            the thread count. Measured on (2048, 256): 4 lanes 0.55 ms, 8 lanes 0.43, 16 lanes
//            0.40, 32 lanes 0.49 (too many registers) for the whole forward on one thread.
template <typename T, typename Value> inline double row_sum(int64_t D, Value value) {
    if constexpr (std::is_same_v<T, double>) {
        double sum = 0;
        for (int64_t d = 0; d < D; ++d) sum += value(d);
        return sum;
    } else {
        constexpr int kLanes = 16;
        double lane[kLanes] = {};
        int64_t d = 0;
        for (; d + kLanes <= D; d += kLanes)
            for (int j = 0; j < kLanes; ++j) lane[j] += value(d + j);
        double sum = 0;
        for (int j = 0; j < kLanes; ++j) sum += lane[j];
        for (; d < D; ++d) sum += value(d);
        return sum;
    }
}

// weight or bias as doubles, converted once per call instead of once per row (a float -> double
// conversion costs about as much as the multiply that uses it).
template <typename T> std::vector<double> to_double(const T* p, int64_t n) { return std::vector<double>(p, p + n); }

// in:  x (rows, D) contiguous, weight (D), bias (D) (the op passes ones / zeros when absent)
// out: y (rows, D) = (x - mean) * rstd * weight + bias
//      mean (rows), rstd (rows) = 1 / sqrt(var + eps), var the biased variance (divide by D)
// Two passes over each row (mean, then the squared deviations) in double: no cancellation, as
// E[x^2] - mean^2 would have. The row is 1 KB for D = 256: the second pass reads it from L1.
void layer_norm_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &weight = args.in[1], &bias = args.in[2];
    const Tensor &y = args.out[0], &mean_out = args.out[1], &rstd_out = args.out[2];
    const int64_t D = x.shape().empty() ? 1 : x.shape().back();
    const int64_t rows = D == 0 ? 0 : x.numel() / D;
    const double eps = args.attrs.scalar;
    dispatch_floating(x.dtype(), "layer_norm", [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data_ptr<T>();
        const std::vector<double> w64 = to_double(weight.data_ptr<T>(), D), b64 = to_double(bias.data_ptr<T>(), D);
        const double* pw = w64.data();
        const double* pb = b64.data();
        T* py = y.data_ptr<T>();
        T* pmean = mean_out.data_ptr<T>();
        T* prstd = rstd_out.data_ptr<T>();
#pragma omp parallel for schedule(static) if (worth_parallel(rows * D) && rows > 1)
        for (int64_t r = 0; r < rows; ++r) {
            const T* row = px + r * D;
            const double mean = row_sum<T>(D, [row](int64_t d) { return (double)row[d]; }) / (double)D;
            const double squares = row_sum<T>(D, [row, mean](int64_t d) {
                const double dev = (double)row[d] - mean;
                return dev * dev;
            });
            const double rstd = 1.0 / std::sqrt(squares / (double)D + eps);
            for (int64_t d = 0; d < D; ++d)
                py[r * D + d] = (T)(((double)row[d] - mean) * rstd * pw[d] + pb[d]);
            pmean[r] = (T)mean;
            prstd[r] = (T)rstd;
        }
    });
}

// ---- layer_norm_backward ----------------------------------------------------------------------------
// in:  x (rows, D), weight (D) (ones when the layer has none), mean (rows), rstd (rows), g (rows, D),
//      all contiguous
// out: dx (rows, D), dw (D), db (D)
// Per row, with xhat = (x - mean) * rstd and dxhat = g * w (docs/nn/transformer.md derives it):
//   dx = rstd * (dxhat - a - xhat * b),  a = mean over the row of dxhat,  b = mean of dxhat * xhat
// and over all rows: dw = sum g * xhat, db = sum g.
//
// dx: two row sums (a, b), then one elementwise pass; the row stays in L1 between them, so memory
// sees x and g read once and dx written once (the engine-op version makes about twelve passes).
// Row sums as in the forward: row_sum (eight double lanes for float32).
//
// dw, db: a sum over rows, i.e. down the columns. Threads cannot add into one shared dw (a race,
// and an order that would depend on timing). Instead the rows are cut into blocks of a fixed
// size (kRowsPerBlock, independent of the thread count); each block sums its rows in order into
// its own partial dw and db (in double), and then each column adds the blocks' partials in block
// order. So the bits are the same for 1, 2 or 16 threads. The partials take 16 bytes per column
// per 64 rows: 1/16 of a float32 x.
constexpr int64_t kRowsPerBlock = 64;

void layer_norm_backward_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &weight = args.in[1], &mean_in = args.in[2], &rstd_in = args.in[3],
                 &g = args.in[4];
    const Tensor &dx = args.out[0], &dw = args.out[1], &db = args.out[2];
    const int64_t D = x.shape().back();
    const int64_t rows = D == 0 ? 0 : x.numel() / D;
    const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
    // partial[(2 * block) * D + d]: the block's sum of g * xhat; partial[(2 * block + 1) * D + d]: of g.
    std::vector<double> partial(2 * blocks * D, 0.0);
    dispatch_floating(x.dtype(), "layer_norm_backward", [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data_ptr<T>();
        const std::vector<double> w64 = to_double(weight.data_ptr<T>(), D);
        const double* pw = w64.data();
        const T* pmean = mean_in.data_ptr<T>();
        const T* prstd = rstd_in.data_ptr<T>();
        const T* pg = g.data_ptr<T>();
        T* pdx = dx.data_ptr<T>();
#pragma omp parallel for schedule(static) if (worth_parallel(rows * D) && blocks > 1)
        for (int64_t block = 0; block < blocks; ++block) {
            double* dw_part = partial.data() + (2 * block) * D;
            double* db_part = partial.data() + (2 * block + 1) * D;
            const int64_t end = std::min(rows, (block + 1) * kRowsPerBlock);
            for (int64_t r = block * kRowsPerBlock; r < end; ++r) {
                const T* xr = px + r * D;
                const T* gr = pg + r * D;
                T* dxr = pdx + r * D;
                const double mean = (double)pmean[r], rstd = (double)prstd[r];
                // xhat and dxhat are recomputed in each pass rather than stored: two multiplies are
                // cheaper than a round trip through memory.
                auto xhat = [&](int64_t d) { return ((double)xr[d] - mean) * rstd; };
                auto dxhat = [&](int64_t d) { return (double)gr[d] * pw[d]; };
                const double a = row_sum<T>(D, dxhat) / (double)D;
                const double b = row_sum<T>(D, [&](int64_t d) { return dxhat(d) * xhat(d); }) / (double)D;
                for (int64_t d = 0; d < D; ++d) {
                    const double xh = xhat(d), gd = (double)gr[d];
                    dxr[d] = (T)(rstd * (dxhat(d) - a - xh * b));
                    dw_part[d] += gd * xh;
                    db_part[d] += gd;
                }
            }
        }
        // Each column adds the blocks' partial sums in block order (columns are independent).
        T* pdw = dw.data_ptr<T>();
        T* pdb = db.data_ptr<T>();
#pragma omp parallel for schedule(static) if (worth_parallel(blocks * D) && D > 1)
        for (int64_t d = 0; d < D; ++d) {
            double sum_w = 0, sum_b = 0;
            for (int64_t block = 0; block < blocks; ++block) {
                sum_w += partial[(2 * block) * D + d];
                sum_b += partial[(2 * block + 1) * D + d];
            }
            pdw[d] = (T)sum_w;
            pdb[d] = (T)sum_b;
        }
    });
}

}  // namespace

void register_nn_kernels() {
    register_kernel(Device::CPU, OpId::softmax, softmax_kernel);
    register_kernel(Device::CPU, OpId::log_softmax, softmax_kernel);
    register_kernel(Device::CPU, OpId::cross_entropy, cross_entropy_kernel);
    register_kernel(Device::CPU, OpId::layer_norm, layer_norm_kernel);
    register_kernel(Device::CPU, OpId::layer_norm_backward, layer_norm_backward_kernel);
}

}  // namespace mg::cpu
