// cuda/indexer.h: how a CUDA thread finds its elements in strided tensors.
//
// The CPU walks rows (engine/cpu/loops.h); a GPU thread instead gets one linear index i in
// [0, numel) and must find, for each operand, where element i lives. The host first merges
// neighbouring dimensions that every operand lays out back to back (as for_each_row does), so
// a contiguous tensor of any shape becomes one dimension and the division loop below runs once.
// Then element i's offset in operand k is sum_d idx_d * stride_d[k], with idx_d the digits of i
// in the mixed radix of the sizes, innermost first.
//
// Plain C++ with MG_HD on the functions the device calls, so the CPU tests check it
// (tests/test_cuda_host.cpp) on machines without a GPU.
#pragma once
#include <array>
#include <cstdint>
#include <stdexcept>

#include "engine/random.h"  // MG_HD
#include "engine/shape.h"

namespace mg::cuda {

template <int N> struct Indexer {
    int nd = 0;                       // dimensions after merging (0: a single element)
    int64_t numel = 0;
    int64_t sizes[kMaxDims] = {};     // innermost first
    int64_t strides[kMaxDims][N] = {};

    // The offsets (in elements) of linear element i in each of the N operands.
    MG_HD void offsets(int64_t i, int64_t (&off)[N]) const {
        for (int k = 0; k < N; ++k) off[k] = 0;
        for (int d = 0; d < nd; ++d) {
            const int64_t idx = i % sizes[d];
            i /= sizes[d];
            for (int k = 0; k < N; ++k) off[k] += idx * strides[d][k];
        }
    }
};

// Builds the indexer of N operands viewed with one shape, each with its own strides (a broadcast
// operand has stride 0 where it was expanded). Host only.
template <int N> Indexer<N> make_indexer(const Shape& shape, const std::array<const Shape*, N>& strides) {
    Indexer<N> ix;
    ix.numel = numel_of(shape);
    for (int d = (int)shape.size() - 1; d >= 0; --d) {  // innermost first
        if (shape[d] == 1) continue;
        bool merge = ix.nd > 0;
        for (int k = 0; k < N && merge; ++k)
            merge = (*strides[k])[d] == ix.strides[ix.nd - 1][k] * ix.sizes[ix.nd - 1];
        if (merge) {
            ix.sizes[ix.nd - 1] *= shape[d];
        } else {
            ix.sizes[ix.nd] = shape[d];
            for (int k = 0; k < N; ++k) ix.strides[ix.nd][k] = (*strides[k])[d];
            ++ix.nd;
        }
    }
    return ix;
}

// True when the merged view is one unit-stride run in every operand: the kernel can then use
// plain pointer arithmetic (and vector loads) instead of the division loop.
template <int N> bool is_flat(const Indexer<N>& ix) {
    if (ix.nd == 0) return true;
    if (ix.nd > 1) return false;
    for (int k = 0; k < N; ++k)
        if (ix.strides[0][k] != 1) return false;
    return true;
}

}  // namespace mg::cuda
