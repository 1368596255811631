// cpu/kernels_sort.cpp: CPU kernels for topk, argsort and multinomial sampling.
//
// topk and argsort work on the lines of a contiguous tensor seen as (outer, R, inner) around
// attrs.dim (as the reductions do): each line is copied into a small buffer of (value, index)
// pairs, selected or sorted there, and written back. Lines are independent, so threads split them
// with no effect on the result.
//
// Order: values compare as numbers, with NaN above everything (as in PyTorch's sort); equal values
// keep the lower index first, in ascending and descending order alike.
#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"
#include "engine/random.h"

namespace mg::cpu {
namespace {

// a < b, with NaN the largest value (and NaN == NaN): a strict weak order even with NaNs.
template <typename T> bool value_less(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
        if (std::isnan(a)) return false;
        if (std::isnan(b)) return true;
    }
    return a < b;
}

// Calls f(line_in, line_out, scratch) for every line, where line_in / line_out are the offsets of
// the line's first element in the input (length R) and the output (length L) and both step by
// `inner`. Parallel over lines when the work pays; each thread has its own scratch (type S).
template <typename S, typename F> void for_each_line(ReduceShape s, int64_t L, int64_t work, F f) {
    const int64_t lines = s.outer * s.inner;
#pragma omp parallel if (worth_parallel(work) && lines > 1)
    {
        S scratch;
#pragma omp for schedule(static)
        for (int64_t line = 0; line < lines; ++line) {
            const int64_t o = line / s.inner, i = line % s.inner;
            f(o * s.reduced * s.inner + i, o * L * s.inner + i, scratch);
        }
    }
}

// ---- topk ----------------------------------------------------------------------------------------
// Short float32 rows (the MoE router: T rows of E logits, E up to 64): each value becomes one
// int64 key that orders exactly as `before` below does, so that the selection needs no branches.
// With random logits the insertion's "does v beat the k-th?" branch is a coin toss: the
// mispredictions made topk over (8192, 8) cost 65 ns a row. The key: the float's bits turned into
// an int32 that orders like the value (NaN the largest, -0 == +0), in the high half; in the low
// half R - 1 - r, so that on equal values the lower index wins. The best key is found k times
// (k * R max operations, which compile to conditional moves).
inline int32_t float_order_key(float v) {
    if (std::isnan(v)) return INT32_MAX;
    const int32_t bits = std::bit_cast<int32_t>(v + 0.0f);  // + 0.0f: -0 becomes +0
    return bits >= 0 ? bits : bits ^ INT32_MAX;            // negative floats: flip the magnitude
}
constexpr int64_t kKeyedTopkMaxRow = 64;

void topk_rows_keyed(const float* px, float* pv, int64_t* pi, int64_t rows, int64_t R, int64_t k, bool largest) {
#pragma omp parallel for schedule(static) if (worth_parallel(rows * R * k) && rows > 1)
    for (int64_t line = 0; line < rows; ++line) {
        const float* row = px + line * R;
        int64_t keys[kKeyedTopkMaxRow];
        for (int64_t r = 0; r < R; ++r) {
            const int32_t key = float_order_key(row[r]);
            keys[r] = ((int64_t)(largest ? key : ~key) << 32) | (R - 1 - r);  // ~key: smallest first
        }
        for (int64_t j = 0; j < k; ++j) {
            int64_t best = INT64_MIN;
            for (int64_t r = 0; r < R; ++r) best = std::max(best, keys[r]);
            const int64_t r = R - 1 - (best & 0xffffffff);
            pv[line * k + j] = row[r];
            pi[line * k + j] = r;
            keys[r] = INT64_MIN;  // taken
        }
    }
}

// in: x contiguous; out: values and int64 indices, x's shape with k at attrs.dim.
// attrs.k = k, attrs.flag = largest. The k best of each line, best first.
void topk_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &values = args.out[0], &indices = args.out[1];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    const int64_t k = args.attrs.k, R = s.reduced, inner = s.inner;
    const bool largest = args.attrs.flag;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data_ptr<T>();
        T* pv = values.data_ptr<T>();
        int64_t* pi = indices.data_ptr<int64_t>();
        // "a goes before b": the better value, or the lower index on a tie. A strict total order,
        // so the selection does not depend on the algorithm.
        auto before = [largest](T va, int64_t ia, T vb, int64_t ib) {
            if (value_less(va, vb)) return !largest;
            if (value_less(vb, va)) return largest;
            return ia < ib;
        };
        if constexpr (std::is_same_v<T, float>) {
            if (inner == 1 && R <= kKeyedTopkMaxRow && k <= 8) {
                topk_rows_keyed(px, pv, pi, s.outer, R, k, largest);
                return;
            }
        }
        if (inner == 1 && k <= 8) {
            // Contiguous lines and small k (the MoE router: T lines of E logits): the same
            // insertion as below, in registers-sized arrays instead of a vector of pairs.
            const int64_t lines = s.outer;
#pragma omp parallel for schedule(static) if (worth_parallel(x.numel()) && lines > 1)
            for (int64_t line = 0; line < lines; ++line) {
                const T* row = px + line * R;
                T best_v[8];
                int64_t best_i[8];
                int64_t n = 0;
                for (int64_t r = 0; r < R; ++r) {
                    const T v = row[r];
                    if (n == k && !before(v, r, best_v[n - 1], best_i[n - 1])) continue;
                    int64_t j = n < k ? n++ : n - 1;  // the slot v takes before sifting up
                    for (; j > 0 && before(v, r, best_v[j - 1], best_i[j - 1]); --j) {
                        best_v[j] = best_v[j - 1];
                        best_i[j] = best_i[j - 1];
                    }
                    best_v[j] = v;
                    best_i[j] = r;
                }
                for (int64_t j = 0; j < k; ++j) {
                    pv[line * k + j] = best_v[j];
                    pi[line * k + j] = best_i[j];
                }
            }
            return;
        }
        using Scratch = std::vector<std::pair<T, int64_t>>;
        for_each_line<Scratch>(s, k, x.numel(), [&](int64_t in0, int64_t out0, Scratch& buf) {
            buf.clear();
            if (k <= 8) {
                // Small k (the MoE router's case): keep the best k seen so far, sorted, in a k-sized
                // buffer; each new value is inserted in place or dropped. About R * k comparisons
                // at worst, usually ~R since most values lose to the current k-th.
                for (int64_t r = 0; r < R; ++r) {
                    const T v = px[in0 + r * inner];
                    if ((int64_t)buf.size() == k && !before(v, r, buf.back().first, buf.back().second)) continue;
                    if ((int64_t)buf.size() < k) buf.emplace_back(v, r);
                    else buf.back() = {v, r};
                    for (size_t j = buf.size() - 1; j > 0 && before(buf[j].first, buf[j].second, buf[j - 1].first,
                                                                       buf[j - 1].second); --j)
                        std::swap(buf[j], buf[j - 1]);
                }
            } else {
                for (int64_t r = 0; r < R; ++r) buf.emplace_back(px[in0 + r * inner], r);
                std::partial_sort(buf.begin(), buf.begin() + k, buf.end(), [&](const auto& a, const auto& b) {
                    return before(a.first, a.second, b.first, b.second);
                });
            }
            for (int64_t j = 0; j < k; ++j) {
                pv[out0 + j * inner] = buf[j].first;
                pi[out0 + j * inner] = buf[j].second;
            }
        });
    });
}

// ---- argsort -------------------------------------------------------------------------------------
// One line of integers whose range (max - min + 1) is at most the line's length: a stable counting
// sort, O(R) instead of O(R log R), with exactly the order std::stable_sort gives. The MoE
// dispatch sorts T*k expert ids in 0..E-1 this way. Returns false (nothing written) otherwise.
template <typename T> bool counting_argsort(const T* x, int64_t* out, int64_t R, bool descending) {
    if (R < 2) return false;
    const auto [lo, hi] = std::minmax_element(x, x + R);
    // Differences in unsigned arithmetic: exact even for INT64_MIN..INT64_MAX (no overflow).
    const uint64_t lo_u = (uint64_t)(int64_t)*lo, hi_u = (uint64_t)(int64_t)*hi;
    if (hi_u - lo_u >= (uint64_t)R) return false;
    const uint64_t range = hi_u - lo_u + 1;
    std::vector<int64_t> start(range + 1, 0);  // start[b]: the first output position of bucket b
    auto bucket = [&](T v) { return descending ? hi_u - (uint64_t)(int64_t)v : (uint64_t)(int64_t)v - lo_u; };
    for (int64_t r = 0; r < R; ++r) ++start[bucket(x[r]) + 1];
    for (uint64_t b = 0; b < range; ++b) start[b + 1] += start[b];
    for (int64_t r = 0; r < R; ++r) out[start[bucket(x[r])]++] = r;  // in input order: stable
    return true;
}

// in: x contiguous; out: int64 indices of x's shape. attrs.flag = descending. Stable: equal values
// keep their original order (std::stable_sort), in both directions.
void argsort_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &indices = args.out[0];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    const int64_t R = s.reduced, inner = s.inner;
    const bool descending = args.attrs.flag;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data_ptr<T>();
        int64_t* pi = indices.data_ptr<int64_t>();
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
            if (s.outer * inner == 1 && counting_argsort(px, pi, R, descending)) return;
        }
        using Scratch = std::vector<std::pair<T, int64_t>>;
        for_each_line<Scratch>(s, R, x.numel(), [&](int64_t in0, int64_t out0, Scratch& buf) {
            buf.clear();
            for (int64_t r = 0; r < R; ++r) buf.emplace_back(px[in0 + r * inner], r);
            std::stable_sort(buf.begin(), buf.end(), [descending](const auto& a, const auto& b) {
                return descending ? value_less(b.first, a.first) : value_less(a.first, b.first);
            });
            for (int64_t r = 0; r < R; ++r) pi[out0 + r * inner] = buf[r].second;
        });
    });
}

// ---- multinomial ---------------------------------------------------------------------------------
// in: probs (N, C) contiguous, rows of non-negative weights (need not sum to 1).
// out: (N, S) int64 class ids, drawn with replacement. attrs.seed / attrs.offset are the Philox
// key and first counter block (the op reserved N * S elements), so sample j of row n uses
// u = uniform_open(philox_bits(seed, offset, n * S + j)) whatever the thread or device.
// Inverse CDF: the class c with cdf[c-1] <= u * total < cdf[c]; a zero-weight class has an empty
// interval and is never drawn.
void multinomial_kernel(const KernelArgs& args) {
    const Tensor &probs = args.in[0], &out = args.out[0];
    const int64_t N = probs.shape()[0], C = probs.shape()[1], S = out.shape()[1];
    const uint64_t seed = args.attrs.seed, offset = args.attrs.offset;
    // Per row: 0 = fine, 1 = a negative / NaN / infinite entry, 2 = the weights sum to 0.
    std::vector<uint8_t> row_error(N, 0);
    dispatch_floating(probs.dtype(), "multinomial", [&](auto tag) {
        using T = decltype(tag);
        const T* pp = probs.data_ptr<T>();
        int64_t* po = out.data_ptr<int64_t>();
#pragma omp parallel if (worth_parallel(N * (C + S)) && N > 1)
        {
            std::vector<double> cdf(C);
#pragma omp for schedule(static)
            for (int64_t n = 0; n < N; ++n) {
                const T* row = pp + n * C;
                double total = 0;
                int64_t last_positive = -1;
                for (int64_t c = 0; c < C; ++c) {
                    const double p = (double)row[c];
                    if (!(p >= 0) || std::isinf(p)) row_error[n] = 1;
                    if (p > 0) last_positive = c;
                    total += p;
                    cdf[c] = total;
                }
                if (row_error[n] == 0 && !(total > 0)) row_error[n] = 2;
                if (row_error[n]) continue;
                for (int64_t j = 0; j < S; ++j) {
                    const double u = uniform_open(philox_bits(seed, offset, (uint64_t)(n * S + j)));
                    const double target = u * total;
                    int64_t c = std::upper_bound(cdf.begin(), cdf.end(), target) - cdf.begin();
                    // u * total can round up to total itself: then take the last class with weight.
                    po[n * S + j] = c < C ? c : last_positive;
                }
            }
        }
    });
    for (int64_t n = 0; n < N; ++n) {
        if (row_error[n] == 1)
            throw std::invalid_argument("multinomial: row " + std::to_string(n) +
                                        " holds a negative, infinite or NaN probability");
        if (row_error[n] == 2)
            throw std::invalid_argument("multinomial: row " + std::to_string(n) +
                                        " has a non-positive sum; every row needs some positive weight");
    }
}

}  // namespace

void register_sort_kernels() {
    register_kernel(Device::CPU, OpId::topk, topk_kernel);
    register_kernel(Device::CPU, OpId::argsort, argsort_kernel);
    register_kernel(Device::CPU, OpId::multinomial, multinomial_kernel);
}

}  // namespace mg::cpu
