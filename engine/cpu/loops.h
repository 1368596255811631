// cpu/loops.h: how CPU kernels walk strided tensors.
//
// Elementwise kernels see operands of one shape, each with its own strides (a broadcast operand
// has stride 0 where it was expanded, a transposed one has permuted strides). for_each_row()
// first merges ("coalesces") neighbouring dimensions that are laid out back to back in every
// operand, so a contiguous tensor of any shape becomes one long row, then calls the row function
// for each run of the innermost dimension, with OpenMP over rows (or over chunks of a long row)
// when there is enough work to pay for the threads.
#pragma once
#include <array>
#include <cstdint>
#include <omp.h>

#include "engine/shape.h"

namespace mg::cpu {

// Below this many elements an elementwise loop runs on one thread: starting a parallel region
// costs a few microseconds, which is more than the work.
constexpr int64_t kParallelThreshold = 1 << 15;
// Long rows are cut into chunks of this size so that both threads get work.
constexpr int64_t kChunk = 1 << 14;

inline bool worth_parallel(int64_t work) { return work >= kParallelThreshold && !omp_in_parallel(); }

template <int N> using Offsets = std::array<int64_t, N>;

// row(offsets, n, inner_strides): the first elements of the run in each operand (in elements),
// the run length, and each operand's stride along the run.
template <int N, typename Row>
void for_each_row(const Shape& shape, const std::array<const Shape*, N>& strides, Row&& row) {
    // 1. Keep the dimensions of size > 1, merging each into its inner neighbour when every
    //    operand steps over it exactly as if the two were one dimension.
    int64_t sizes[16];
    int64_t st[N][16];
    int nd = 0;
    for (int d = (int)shape.size() - 1; d >= 0; --d) {  // innermost first
        if (shape[d] == 1) continue;
        bool merge = nd > 0;
        for (int k = 0; k < N && merge; ++k) merge = (*strides[k])[d] == st[k][nd - 1] * sizes[nd - 1];
        if (merge) {
            sizes[nd - 1] *= shape[d];
        } else {
            if (nd == 16) throw std::invalid_argument("for_each_row: more than 16 dimensions");
            sizes[nd] = shape[d];
            for (int k = 0; k < N; ++k) st[k][nd] = (*strides[k])[d];
            ++nd;
        }
    }
    if (numel_of(shape) == 0) return;
    if (nd == 0) {  // a single element
        sizes[0] = 1;
        for (int k = 0; k < N; ++k) st[k][0] = 0;
        nd = 1;
    }
    // 2. Dimension 0 (innermost) is the run; the others enumerate rows.
    const int64_t n = sizes[0];
    int64_t rows = 1;
    for (int d = 1; d < nd; ++d) rows *= sizes[d];
    Offsets<N> inner;
    for (int k = 0; k < N; ++k) inner[k] = st[k][0];
    // A long run is split into chunks, so that one-row (contiguous) tensors use every thread.
    const int64_t chunks = (rows == 1 && n > kChunk) ? (n + kChunk - 1) / kChunk : 1;
    const int64_t chunk_len = chunks == 1 ? n : kChunk;
    const int64_t tasks = rows * chunks;

    // Tasks [t0, t1): the first one's offsets are decoded by division, the following ones by
    // stepping an odometer over the outer dimensions. (Decoding every row by division cost more
    // than copying it for runs of a few dozen elements: the (B, T, 3, H, Dh) permute of the
    // attention block's backward, 32-float runs, went at 1.2 GB/s.)
    auto run_tasks = [&](int64_t t0, int64_t t1) {
        if (t0 >= t1) return;
        int64_t idx[16] = {};
        Offsets<N> off{};
        int64_t r = t0 / chunks, c = t0 % chunks;
        for (int d = 1; d < nd; ++d) {
            idx[d] = r % sizes[d];
            r /= sizes[d];
            for (int k = 0; k < N; ++k) off[k] += idx[d] * st[k][d];
        }
        for (int64_t task = t0; task < t1; ++task) {
            const int64_t start = c * chunk_len, len = std::min(chunk_len, n - start);
            Offsets<N> at = off;
            for (int k = 0; k < N; ++k) at[k] += start * inner[k];
            row(at, len, inner);
            if (++c < chunks) continue;
            c = 0;
            for (int d = 1; d < nd; ++d) {  // the next row: carry like an odometer
                for (int k = 0; k < N; ++k) off[k] += st[k][d];
                if (++idx[d] < sizes[d]) break;
                for (int k = 0; k < N; ++k) off[k] -= sizes[d] * st[k][d];
                idx[d] = 0;
            }
        }
    };
    if (worth_parallel(rows * n) && tasks > 1) {
#pragma omp parallel
        {
            const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
            run_tasks(tasks * t / threads, tasks * (t + 1) / threads);
        }
    } else {
        run_tasks(0, tasks);
    }
}

// reduce_shape() (engine/shape.h) views a contiguous tensor as (outer, R, inner) for the
// reduction kernels.

}  // namespace mg::cpu
