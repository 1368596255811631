// cpu/kernels_reduce.cpp: reductions over one dimension of a contiguous tensor, seen as
// (outer, R, inner) around that dimension. The op layer (ops_reduce.cpp) makes the input
// contiguous, reduces several dims one after another, and restores keepdim shapes.
//
// Determinism: the order of additions depends only on the shape, never on the thread count,
// so results are bitwise reproducible. Float sums accumulate in double.
#include <cmath>
#include <limits>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"

namespace mg::cpu {
namespace {

template <typename T> using Acc = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

// Sum of n contiguous values, in fixed blocks of 4096 whose partial sums are added in order:
// the same bits whichever thread computes which block.
template <typename T> Acc<T> row_sum(const T* x, int64_t n) {
    constexpr int64_t kBlock = 4096;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    auto block_sum = [&](int64_t b) {
        Acc<T> s = 0;
        for (int64_t i = b * kBlock, end = std::min(n, i + kBlock); i < end; ++i) s += x[i];
        return s;
    };
    if (blocks <= 1) return blocks ? block_sum(0) : Acc<T>(0);
    std::vector<Acc<T>> partial(blocks);
    if (worth_parallel(n)) {
#pragma omp parallel for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) partial[b] = block_sum(b);
    } else {
        for (int64_t b = 0; b < blocks; ++b) partial[b] = block_sum(b);
    }
    Acc<T> s = 0;
    for (Acc<T> p : partial) s += p;
    return s;
}

// sum and mean: out (outer * inner)
template <typename T, typename U> void sum_impl(const T* x, U* out, ReduceShape s, bool mean) {
    const double scale = mean ? 1.0 / (double)s.reduced : 1.0;
    auto finish = [&](Acc<T> v) { return mean ? (U)((double)v * scale) : (U)v; };
    if (s.inner == 1) {
        if (s.outer == 1) {
            out[0] = finish(row_sum(x, s.reduced));
            return;
        }
#pragma omp parallel for schedule(static) if (worth_parallel(s.outer * s.reduced))
        for (int64_t o = 0; o < s.outer; ++o) out[o] = finish(row_sum(x + o * s.reduced, s.reduced));
        return;
    }
    // inner > 1: add whole rows of `inner` values, which vectorises over the inner index.
#pragma omp parallel for schedule(static) if (worth_parallel(s.outer * s.reduced * s.inner) && s.outer > 1)
    for (int64_t o = 0; o < s.outer; ++o) {
        std::vector<Acc<T>> acc(s.inner, 0);
        for (int64_t r = 0; r < s.reduced; ++r) {
            const T* row = x + (o * s.reduced + r) * s.inner;
            for (int64_t i = 0; i < s.inner; ++i) acc[i] += row[i];
        }
        for (int64_t i = 0; i < s.inner; ++i) out[o * s.inner + i] = finish(acc[i]);
    }
}

void sum_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &out = args.out[0];
    ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    bool mean = args.op == OpId::mean;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_floating_point_v<T>) sum_impl<T, T>(x.data_ptr<T>(), out.data_ptr<T>(), s, mean);
        else sum_impl<T, int64_t>(x.data_ptr<T>(), out.data_ptr<int64_t>(), s, false);
    });
}

// Calls f(o, i, x + o*R*inner + i) for every output position, in parallel when it pays; the
// values along the reduced dim are then at p[r * inner].
template <typename F> void for_each_output(ReduceShape s, F f) {
#pragma omp parallel for schedule(static) if (worth_parallel(s.outer * s.reduced * s.inner))
    for (int64_t oi = 0; oi < s.outer * s.inner; ++oi) f(oi / s.inner, oi % s.inner, oi);
}

// max / min / argmax: values (optional) and int64 indices; the first index wins ties, NaN wins all.
void extreme_kernel(const KernelArgs& args) {
    const Tensor& x = args.in[0];
    ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    const bool want_max = args.op != OpId::min;
    const bool with_values = args.op != OpId::argmax;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data_ptr<T>();
        T* values = with_values ? args.out[0].data_ptr<T>() : nullptr;
        int64_t* indices = args.out[with_values ? 1 : 0].data_ptr<int64_t>();
        for_each_output(s, [&](int64_t o, int64_t i, int64_t oi) {
            const T* p = px + o * s.reduced * s.inner + i;
            T best = p[0];
            int64_t best_r = 0;
            for (int64_t r = 1; r < s.reduced; ++r) {
                T v = p[r * s.inner];
                if (best != best) break;  // NaN found: it is the answer
                bool better = want_max ? (v > best) : (v < best);
                if (better || v != v) { best = v; best_r = r; }
            }
            if (values) values[oi] = best;
            indices[oi] = best_r;
        });
    });
}

// logsumexp = m + log(sum exp(x - m)), m the max: no overflow for large x.
void logsumexp_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &out = args.out[0];
    ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    dispatch_floating(x.dtype(), "logsumexp", [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data_ptr<T>();
        T* po = out.data_ptr<T>();
        for_each_output(s, [&](int64_t o, int64_t i, int64_t oi) {
            const T* p = px + o * s.reduced * s.inner + i;
            double m = -std::numeric_limits<double>::infinity();
            for (int64_t r = 0; r < s.reduced; ++r) m = std::max(m, (double)p[r * s.inner]);
            if (std::isinf(m)) { po[oi] = (T)m; return; }
            double total = 0;
            for (int64_t r = 0; r < s.reduced; ++r) total += std::exp((double)p[r * s.inner] - m);
            po[oi] = (T)(m + std::log(total));
        });
    });
}

// Running sums along the dim; out has x's shape.
void cumsum_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &out = args.out[0];
    ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, bool>) {
            throw std::invalid_argument("cumsum: bool tensor; convert it to an integer type first");
        } else {
            const T* px = x.data_ptr<T>();
            T* po = out.data_ptr<T>();
            for_each_output(s, [&](int64_t o, int64_t i, int64_t) {
                int64_t base = o * s.reduced * s.inner + i;
                Acc<T> running = 0;
                for (int64_t r = 0; r < s.reduced; ++r) {
                    running += px[base + r * s.inner];
                    po[base + r * s.inner] = (T)running;
                }
            });
        }
    });
}

}  // namespace

void register_reduce_kernels() {
    register_kernel(Device::CPU, OpId::sum, sum_kernel);
    register_kernel(Device::CPU, OpId::mean, sum_kernel);
    register_kernel(Device::CPU, OpId::max, extreme_kernel);
    register_kernel(Device::CPU, OpId::min, extreme_kernel);
    register_kernel(Device::CPU, OpId::argmax, extreme_kernel);
    register_kernel(Device::CPU, OpId::logsumexp, logsumexp_kernel);
    register_kernel(Device::CPU, OpId::cumsum, cumsum_kernel);
}

}  // namespace mg::cpu
