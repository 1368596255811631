// cuda/kernels_sort.cu: topk, argsort and multinomial on the GPU, mirroring engine/cpu/kernels_sort.cpp
// (the plain reference: same order, same tie rule, same random numbers).
//
// The order every kernel here follows (the CPU's): values compare as numbers, NaN above everything,
// -0.0 equal to +0.0, and equal values keep the lower index first, ascending and descending alike.
//
// How each op becomes kernels (x is contiguous, seen as (outer, R, inner) around attrs.dim; a
// "line" is the R values of one (outer, inner) position):
//   topk, k <= 8 (the MoE router: T lines of E logits): one warp per line. Each of the 32 lanes
//     reads every 32nd value of the line and keeps its own best k, sorted, in a small array (the
//     CPU's insertion). Then k rounds of a warp "tournament": every lane offers its best remaining
//     value, a butterfly of shuffles finds the best offer, lane 0 writes it, its owner drops it.
//   topk, k > 8: argsort the lines (below), keep the first k of each.
//   argsort: a stable radix sort of the whole tensor by value (CUB), then a stable radix sort by
//     line (only when there are several lines). Stability of the second sort keeps each line's value
//     order; stability of the first keeps equal values in index order. Floats are turned into
//     unsigned keys whose integer order is the number order (the classic sign-flip trick).
//   multinomial: one thread per row builds the row's running sum (in double, in order, exactly as
//     the CPU does), then one thread per sample draws u from Philox with the CPU's counter and
//     binary-searches it. Same u, same sums, same search: the same class as the CPU.
//
// CUB (shipped with the CUDA toolkit) provides the device-wide radix sort: writing our own would
// teach little here and be slower. Its scratch memory is a CUDA tensor (the caching allocator).
#include <cub/device/device_radix_sort.cuh>

#include <bit>
#include <stdexcept>
#include <type_traits>

#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"
#include "engine/random.h"

namespace mg::cuda {

// ---- the stable pair sort shared with kernels_index.cu ---------------------------------------------
// Sorts n (key, value) pairs by the low `key_bits` bits of the key, stably (equal keys keep their
// input order). Outputs go to keys_out / values_out. Asynchronous on stream 0, like every kernel.
template <typename K>
static void sort_pairs_impl(const K* keys_in, K* keys_out, const int64_t* values_in, int64_t* values_out,
                            int64_t n, int key_bits, const char* op) {
    if (n == 0) return;
    key_bits = std::clamp(key_bits, 1, (int)sizeof(K) * 8);
    // First call: how much scratch CUB needs (a host-side computation, no GPU work).
    size_t temp_bytes = 0;
    check(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, values_in, values_out, n, 0,
                                          key_bits, cudaStream_t(0)),
          "cub::DeviceRadixSort::SortPairs", op);
    Tensor temp = Tensor::empty({(int64_t)(temp_bytes + 7) / 8 + 1}, DType::Int64, Device::CUDA);
    check(cub::DeviceRadixSort::SortPairs(temp.raw_data_ptr(), temp_bytes, keys_in, keys_out, values_in,
                                          values_out, n, 0, key_bits, cudaStream_t(0)),
          "cub::DeviceRadixSort::SortPairs", op);
}
void sort_pairs(const uint64_t* keys_in, uint64_t* keys_out, const int64_t* values_in, int64_t* values_out,
                int64_t n, int key_bits, const char* op) {
    sort_pairs_impl(keys_in, keys_out, values_in, values_out, n, key_bits, op);
}
void sort_pairs(const uint32_t* keys_in, uint32_t* keys_out, const int64_t* values_in, int64_t* values_out,
                int64_t n, int key_bits, const char* op) {
    sort_pairs_impl(keys_in, keys_out, values_in, values_out, n, key_bits, op);
}

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarp = 32;
constexpr int kSmallK = 8;  // topk's per-lane arrays hold this many; larger k sorts the lines


// Int32 / Int64 tensors of n elements viewed as unsigned keys (same bits, unsigned order is what
// the radix sort uses).
template <typename K> K* as_keys(const Tensor& t) {
    if constexpr (sizeof(K) == 8) return reinterpret_cast<K*>(t.data_ptr<int64_t>());
    else return reinterpret_cast<K*>(t.data_ptr<int32_t>());
}
template <typename K> Tensor empty_keys(int64_t n) {
    return Tensor::empty({n}, sizeof(K) == 8 ? DType::Int64 : DType::Int32, Device::CUDA);
}

// ---- the order ------------------------------------------------------------------------------------
// a < b with NaN the largest value (the CPU's value_less).
template <typename T> __device__ bool value_less(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
        if (isnan(a)) return false;
        if (isnan(b)) return true;
    }
    return a < b;
}
// "a goes before b" in topk's output: the better value, or the lower index on a tie.
template <typename T> __device__ bool before(T va, int64_t ia, T vb, int64_t ib, bool largest) {
    if (value_less(va, vb)) return !largest;
    if (value_less(vb, va)) return largest;
    return ia < ib;
}

// The unsigned radix-sort key of a value: key(a) < key(b) exactly when value_less(a, b), and equal
// keys for equal values. Floats: positive numbers get the sign bit set (so they sort above all
// negatives); negative numbers get every bit flipped (so a more negative number, with a larger
// magnitude, gets a smaller key). -0.0 becomes +0.0 and every NaN the largest key.
template <typename T> struct KeyOf;
template <> struct KeyOf<float> { using type = uint32_t; };
template <> struct KeyOf<int32_t> { using type = uint32_t; };
template <> struct KeyOf<double> { using type = uint64_t; };
template <> struct KeyOf<int64_t> { using type = uint64_t; };

template <typename T> __device__ typename KeyOf<T>::type order_key(T v) {
    using K = typename KeyOf<T>::type;
    constexpr K sign = K(1) << (sizeof(K) * 8 - 1);
    if constexpr (std::is_floating_point_v<T>) {
        if (isnan(v)) return ~K(0);
        if (v == T(0)) v = T(0);  // -0.0 -> +0.0
        K bits;
        memcpy(&bits, &v, sizeof(K));
        return (bits & sign) ? ~bits : (bits | sign);
    } else {
        return (K)v ^ sign;  // two's complement: flipping the sign bit gives the unsigned order
    }
}

// ---- topk, small k: one warp per line ---------------------------------------------------------------
template <typename T> __device__ T shfl_xor(T v, int lane_mask) {
    if constexpr (std::is_same_v<T, int64_t>) return (int64_t)__shfl_xor_sync(kFullMask, (long long)v, lane_mask);
    else return __shfl_xor_sync(kFullMask, v, lane_mask);
}

template <typename T>
__global__ void topk_warp_kernel(const T* x, T* values, int64_t* indices, int64_t lines, int64_t R, int64_t inner,
                                 int k, bool largest) {
    const int lane = threadIdx.x % kWarp;
    const int64_t first_line = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / kWarp;
    const int64_t warps = (int64_t)gridDim.x * blockDim.x / kWarp;
    // The loop bound is the same for every lane of a warp, so whole warps enter the shuffles.
    for (int64_t line = first_line; line < lines; line += warps) {
        const int64_t o = line / inner, i = line % inner;
        const T* row = x + o * R * inner + i;  // element r of the line at row[r * inner]
        // This lane's best k among r = lane, lane + 32, ...: sorted, best first (the CPU's insertion).
        T best_v[kSmallK];
        int64_t best_i[kSmallK];
        int n = 0;
        for (int64_t r = lane; r < R; r += kWarp) {
            const T v = row[r * inner];
            if (n == k && !before(v, r, best_v[n - 1], best_i[n - 1], largest)) continue;
            int j = n < k ? n++ : n - 1;  // the slot v takes before sifting up
            for (; j > 0 && before(v, r, best_v[j - 1], best_i[j - 1], largest); --j) {
                best_v[j] = best_v[j - 1];
                best_i[j] = best_i[j - 1];
            }
            best_v[j] = v;
            best_i[j] = r;
        }
        // The line's best k lie among the lanes' best k. Round j: each lane offers its best value
        // not yet taken; an xor butterfly leaves the best offer in every lane (the order is total,
        // indices are unique, so all lanes agree); the owner moves on to its next value.
        int taken = 0;
        for (int j = 0; j < k; ++j) {
            bool has = taken < n;
            T v = has ? best_v[taken] : T(0);
            int64_t r = has ? best_i[taken] : -1;
            for (int mask = kWarp / 2; mask > 0; mask /= 2) {
                const T other_v = shfl_xor(v, mask);
                const int64_t other_r = shfl_xor(r, mask);
                const bool other_has = __shfl_xor_sync(kFullMask, (int)has, mask) != 0;
                if (other_has && (!has || before(other_v, other_r, v, r, largest))) {
                    v = other_v;
                    r = other_r;
                    has = true;
                }
            }
            if (taken < n && best_i[taken] == r) ++taken;
            if (lane == 0) {
                values[(o * k + j) * inner + i] = v;
                indices[(o * k + j) * inner + i] = r;
            }
        }
    }
}

// ---- argsort: keys, two stable sorts, write back ------------------------------------------------------
// Element e (row-major over x) gets its value's key (flipped for descending) and carries e along.
template <typename T, typename K>
__global__ void value_keys_kernel(const T* x, K* keys, int64_t* positions, int64_t n, bool descending) {
    MG_GRID_STRIDE_LOOP(e, n) {
        const K key = order_key(x[e]);
        keys[e] = descending ? ~key : key;  // flipping every bit reverses the order; ties stay ties
        positions[e] = e;
    }
}

// The line of each element now in sorted slot p: the key of the second sort.
__global__ void line_keys_kernel(const int64_t* positions, uint64_t* line_keys, int64_t n, int64_t R, int64_t inner) {
    MG_GRID_STRIDE_LOOP(p, n) {
        const int64_t e = positions[p];
        line_keys[p] = (uint64_t)((e / (R * inner)) * inner + e % inner);
    }
}

// Slot p now holds, line by line, each line's elements in sorted order: p = line * R + rank.
// Writes the element's index along dim (r) at its rank. Optionally (topk) only ranks < k, with
// the values too.
template <typename T>
__global__ void write_sorted_kernel(const int64_t* positions, const T* x, int64_t* out_indices, T* out_values,
                                    int64_t n, int64_t R, int64_t inner, int64_t keep) {
    MG_GRID_STRIDE_LOOP(p, n) {
        const int64_t line = p / R, rank = p % R;
        if (rank >= keep) continue;
        const int64_t o = line / inner, i = line % inner, e = positions[p];
        const int64_t r = (e / inner) % R;
        const int64_t out = (o * keep + rank) * inner + i;
        out_indices[out] = r;
        if (out_values) out_values[out] = x[e];
    }
}

// Sorts every line of x (contiguous, (outer, R, inner)) and writes the first `keep` ranks of each:
// indices (outer, keep, inner) and, when values is given, the values too.
template <typename T>
void sort_lines(const T* x, const ReduceShape& s, bool descending, int64_t keep, int64_t* indices, T* values,
                const char* op) {
    using K = typename KeyOf<T>::type;
    const int64_t n = s.outer * s.reduced * s.inner, lines = s.outer * s.inner;
    if (n == 0) return;
    Tensor keys = empty_keys<K>(n), sorted_keys = empty_keys<K>(n);
    Tensor positions = Tensor::empty({n}, DType::Int64, Device::CUDA);
    Tensor sorted_positions = Tensor::empty({n}, DType::Int64, Device::CUDA);
    value_keys_kernel<<<grid_for(n), kThreads>>>(x, as_keys<K>(keys), positions.data_ptr<int64_t>(), n, descending);
    check_launch(op);
    sort_pairs(as_keys<K>(keys), as_keys<K>(sorted_keys), positions.data_ptr<int64_t>(),
               sorted_positions.data_ptr<int64_t>(), n, (int)sizeof(K) * 8, op);
    Tensor by_line = sorted_positions;
    if (lines > 1) {
        // Regroup by line; the stable sort keeps the value order inside each line.
        Tensor line_keys = empty_keys<uint64_t>(n), sorted_line_keys = empty_keys<uint64_t>(n);
        line_keys_kernel<<<grid_for(n), kThreads>>>(sorted_positions.data_ptr<int64_t>(),
                                                    as_keys<uint64_t>(line_keys), n, s.reduced, s.inner);
        check_launch(op);
        by_line = Tensor::empty({n}, DType::Int64, Device::CUDA);
        sort_pairs(as_keys<uint64_t>(line_keys), as_keys<uint64_t>(sorted_line_keys),
                   sorted_positions.data_ptr<int64_t>(), by_line.data_ptr<int64_t>(), n,
                   (int)std::bit_width((uint64_t)(lines - 1)), op);
    }
    write_sorted_kernel<T><<<grid_for(n), kThreads>>>(by_line.data_ptr<int64_t>(), x, indices, values, n, s.reduced,
                                                      s.inner, keep);
    check_launch(op);
}

// in: x contiguous; out: values and int64 indices, x's shape with k at attrs.dim.
// attrs.k = k, attrs.flag = largest.
void topk_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &values = args.out[0], &indices = args.out[1];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    const int64_t k = args.attrs.k, lines = s.outer * s.inner;
    const bool largest = args.attrs.flag;
    if (values.numel() == 0) return;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, bool>) {
            throw std::invalid_argument("topk: bool tensors cannot be ranked; convert them first");
        } else {
            if (k <= kSmallK) {
                topk_warp_kernel<T><<<grid_for(lines * kWarp), kThreads>>>(
                    x.data_ptr<T>(), values.data_ptr<T>(), indices.data_ptr<int64_t>(), lines, s.reduced, s.inner,
                    (int)k, largest);
                check_launch("topk");
            } else {
                // Largest first is a descending stable sort; smallest first an ascending one.
                sort_lines<T>(x.data_ptr<T>(), s, largest, k, indices.data_ptr<int64_t>(), values.data_ptr<T>(), "topk");
            }
        }
    });
}

// in: x contiguous; out: int64 indices of x's shape. attrs.flag = descending. Stable.
void argsort_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &indices = args.out[0];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, bool>) {
            throw std::invalid_argument("argsort: bool tensors cannot be sorted; convert them first");
        } else {
            sort_lines<T>(x.data_ptr<T>(), s, args.attrs.flag, s.reduced, indices.data_ptr<int64_t>(), nullptr,
                          "argsort");
        }
    });
}

// ---- multinomial ----------------------------------------------------------------------------------
// One thread per row: the running sum in double, in column order (the CPU's exact arithmetic), into
// cdf (N, C). A row the CPU would reject (a negative / NaN / infinite weight, or a zero sum) is
// reported and gets total 0, which the draw kernel skips.
template <typename T>
__global__ void multinomial_cdf_kernel(const T* probs, double* cdf, double* totals, int64_t* last_positive,
                                       int64_t N, int64_t C, DeviceError* err) {
    MG_GRID_STRIDE_LOOP(n, N) {
        const T* row = probs + n * C;
        double* row_cdf = cdf + n * C;
        double total = 0;
        int64_t last = -1;
        bool bad = false;
        for (int64_t c = 0; c < C; ++c) {
            const double p = (double)row[c];
            if (!(p >= 0) || isinf(p)) bad = true;
            if (p > 0) last = c;
            total += p;
            row_cdf[c] = total;
        }
        if (bad || !(total > 0)) {
            // A kernel cannot throw: the error flag names the op and the row; the host raises it
            // (std::invalid_argument, as the CPU kernel throws) at the next synchronisation.
            report_invalid_row(err, OpId::multinomial, n);
            total = 0;
        }
        totals[n] = total;
        last_positive[n] = last;
    }
}

// One thread per sample j of row n: u from the CPU's Philox counter n * S + j, then the first class
// whose running sum exceeds u * total (std::upper_bound).
__global__ void multinomial_draw_kernel(const double* cdf, const double* totals, const int64_t* last_positive,
                                        int64_t* out, int64_t N, int64_t C, int64_t S, uint64_t seed,
                                        uint64_t offset) {
    MG_GRID_STRIDE_LOOP(ns, N * S) {
        const int64_t n = ns / S;
        const double total = totals[n];
        if (!(total > 0)) continue;  // a rejected row (already reported)
        const double u = uniform_open(philox_bits(seed, offset, (uint64_t)ns));
        const double target = u * total;
        const double* row_cdf = cdf + n * C;
        int64_t lo = 0, hi = C;  // the first c with target < cdf[c] lies in [lo, hi]
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo) / 2;
            if (target < row_cdf[mid]) hi = mid;
            else lo = mid + 1;
        }
        // u * total can round up to total itself: then take the last class with weight.
        out[ns] = lo < C ? lo : last_positive[n];
    }
}

// in: probs (N, C) contiguous; out: (N, S) int64. attrs.seed / attrs.offset: Philox key and first
// block. With replacement (the only mode the op offers, as on the CPU).
void multinomial_kernel(const KernelArgs& args) {
    const Tensor &probs = args.in[0], &out = args.out[0];
    const int64_t N = probs.shape()[0], C = probs.shape()[1], S = out.shape()[1];
    if (N == 0 || S == 0) return;
    dispatch_floating(probs.dtype(), "multinomial", [&](auto tag) {
        using T = decltype(tag);
        Tensor cdf = Tensor::empty({N, C}, DType::Float64, Device::CUDA);  // (N, C) running sums
        Tensor totals = Tensor::empty({N}, DType::Float64, Device::CUDA);
        Tensor last_positive = Tensor::empty({N}, DType::Int64, Device::CUDA);
        multinomial_cdf_kernel<T><<<grid_for(N), kThreads>>>(probs.data_ptr<T>(), cdf.data_ptr<double>(),
                                                             totals.data_ptr<double>(),
                                                             last_positive.data_ptr<int64_t>(), N, C, device_error());
        check_launch("multinomial");
        multinomial_draw_kernel<<<grid_for(N * S), kThreads>>>(cdf.data_ptr<double>(), totals.data_ptr<double>(),
                                                               last_positive.data_ptr<int64_t>(),
                                                               out.data_ptr<int64_t>(), N, C, S, args.attrs.seed,
                                                               args.attrs.offset);
        check_launch("multinomial");
    });
}

}  // namespace

void register_sort_kernels() {
    register_kernel(Device::CUDA, OpId::topk, topk_kernel);
    register_kernel(Device::CUDA, OpId::argsort, argsort_kernel);
    register_kernel(Device::CUDA, OpId::multinomial, multinomial_kernel);
}

}  // namespace mg::cuda
