// cpu/kernels_index.cpp: gather / scatter_add / index_select / index_add / one_hot / bincount.
// These are the MoE dispatch and combine. They are deterministic: where several source elements
// add into one destination, the additions happen in index order on one thread; threads split
// the work only over positions that can never collide.
//
// Every index is range-checked. A bad index found inside a parallel loop is remembered and
// reported after it (an exception must not leave an OpenMP region).
#include <atomic>
#include <cstring>

#include "engine/backend.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"

namespace mg::cpu {
namespace {

// Remembers the first bad index seen by any thread.
struct BadIndex {
    std::atomic<bool> seen{false};
    int64_t value = 0;
    void report(int64_t v) {
        bool expected = false;
        if (seen.compare_exchange_strong(expected, true)) value = v;
    }
    void throw_if_seen(const char* op, int64_t size) const {
        if (seen)
            throw std::out_of_range(std::string(op) + ": index " + std::to_string(value) +
                                    " out of range for a dimension of size " + std::to_string(size));
    }
};

// Decomposes the positions of `shape` without dimension `dim` (the "lines" along dim).
struct Lines {
    Shape sizes;    // shape without dim
    int64_t count;  // product of sizes
    explicit Lines(const Shape& shape, int64_t dim) {
        for (int64_t d = 0; d < (int64_t)shape.size(); ++d)
            if (d != dim) sizes.push_back(shape[d]);
        count = numel_of(sizes);
    }
    // Offset of line `line` in a tensor with `strides` (dim skipped).
    int64_t offset(int64_t line, const Shape& strides, int64_t dim) const {
        int64_t off = 0;
        for (int64_t d = (int64_t)sizes.size() - 1; d >= 0; --d) {
            int64_t i = line % sizes[d];
            line /= sizes[d];
            off += i * strides[d < dim ? d : d + 1];
        }
        return off;
    }
};

// gather: out[..., j, ...] = x[..., index[..., j, ...], ...] along dim. out has index's shape.
// scatter_add: out (a copy of x, made by the op) [..., index[..., j, ...], ...] += src[..., j, ...].
void gather_scatter_kernel(const KernelArgs& args) {
    const bool gather = args.op == OpId::gather;
    const Tensor& x = gather ? args.in[0] : args.out[0];   // the tensor indexed along dim
    const Tensor& index = args.in[1];
    const Tensor& values = gather ? args.out[0] : args.in[2];  // shaped like index
    const int64_t dim = args.attrs.dim, n = x.shape()[dim];
    const Lines lines(index.shape(), dim);
    const int64_t len = index.shape()[dim];
    BadIndex bad;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(index.dtype(), op_name(args.op), [&](auto itag) {
            using I = decltype(itag);
            T* px = x.data_ptr<T>();
            T* pv = values.data_ptr<T>();
            const I* pi = index.data_ptr<I>();
            // Lines never share destination elements, so they may run on different threads.
#pragma omp parallel for schedule(static) if (worth_parallel(index.numel()))
            for (int64_t line = 0; line < lines.count; ++line) {
                int64_t ox = lines.offset(line, x.strides(), dim);
                int64_t oi = lines.offset(line, index.strides(), dim);
                int64_t ov = lines.offset(line, values.strides(), dim);
                for (int64_t j = 0; j < len; ++j) {
                    int64_t k = (int64_t)pi[oi + j * index.strides()[dim]];
                    if (k < 0 || k >= n) { bad.report(k); continue; }
                    T& xe = px[ox + k * x.strides()[dim]];
                    T& ve = pv[ov + j * values.strides()[dim]];
                    if (gather) ve = xe;
                    else xe += ve;
                }
            }
        });
    });
    bad.throw_if_seen(op_name(args.op), n);
}

// index_select: out (outer, L, inner) = x (outer, N, inner) at rows index[l].
// index_add: out (a copy of x) (outer, N, inner) rows index[l] += src (outer, L, inner).
// Both with contiguous x/out/src, so a row of `inner` values is one contiguous run.
void index_rows_kernel(const KernelArgs& args) {
    const bool select = args.op == OpId::index_select;
    const Tensor& big = select ? args.in[0] : args.out[0];    // (outer, N, inner)
    const Tensor& index = args.in[1];                         // (L)
    const Tensor& small = select ? args.out[0] : args.in[2];  // (outer, L, inner)
    const int64_t dim = args.attrs.dim;
    ReduceShape sb = reduce_shape(big.shape(), dim);
    const int64_t L = index.numel(), N = sb.reduced, outer = sb.outer, inner = sb.inner;
    BadIndex bad;
    dispatch_dtype(big.dtype(), [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(index.dtype(), op_name(args.op), [&](auto itag) {
            using I = decltype(itag);
            T* pb = big.data_ptr<T>();
            T* ps = small.data_ptr<T>();
            const I* pi = index.data_ptr<I>();
            if (select) {
#pragma omp parallel for schedule(static) if (worth_parallel(outer * L * inner))
                for (int64_t ol = 0; ol < outer * L; ++ol) {
                    int64_t o = ol / L, l = ol % L, k = (int64_t)pi[l];
                    if (k < 0 || k >= N) { bad.report(k); continue; }
                    std::memcpy(ps + ol * inner, pb + (o * N + k) * inner, sizeof(T) * inner);
                }
            } else {
                // Several l may name the same row k: each thread owns a slice of the inner
                // columns (and of outer), and adds the rows in order of l.
                const int64_t col_block = 256;
                const int64_t col_blocks = (inner + col_block - 1) / col_block;
#pragma omp parallel for schedule(static) if (worth_parallel(outer * L * inner))
                for (int64_t task = 0; task < outer * col_blocks; ++task) {
                    int64_t o = task / col_blocks, c0 = (task % col_blocks) * col_block;
                    int64_t c1 = std::min(inner, c0 + col_block);
                    for (int64_t l = 0; l < L; ++l) {
                        int64_t k = (int64_t)pi[l];
                        if (k < 0 || k >= N) { bad.report(k); continue; }
                        T* dst = pb + (o * N + k) * inner;
                        const T* src = ps + (o * L + l) * inner;
                        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
                    }
                }
            }
        });
    });
    bad.throw_if_seen(op_name(args.op), N);
}

// one_hot: out (..., C) = 1 at the index, 0 elsewhere.
void one_hot_kernel(const KernelArgs& args) {
    const Tensor &index = args.in[0], &out = args.out[0];
    const int64_t C = args.attrs.k;
    BadIndex bad;
    dispatch_dtype(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(index.dtype(), "one_hot", [&](auto itag) {
            using I = decltype(itag);
            const I* pi = index.data_ptr<I>();
            T* po = out.data_ptr<T>();
            for (int64_t i = 0; i < index.numel(); ++i) {
                for (int64_t c = 0; c < C; ++c) po[i * C + c] = T(0);
                int64_t k = (int64_t)pi[i];
                if (k < 0 || k >= C) bad.report(k);
                else po[i * C + k] = T(1);
            }
        });
    });
    bad.throw_if_seen("one_hot", C);
}

void bincount_kernel(const KernelArgs& args) {
    const Tensor &index = args.in[0], &out = args.out[0];
    const int64_t bins = args.attrs.k;
    BadIndex bad;
    int64_t* counts = out.data_ptr<int64_t>();
    std::fill(counts, counts + bins, 0);
    dispatch_index(index.dtype(), "bincount", [&](auto itag) {
        using I = decltype(itag);
        const I* pi = index.data_ptr<I>();
        for (int64_t i = 0; i < index.numel(); ++i) {
            int64_t k = (int64_t)pi[i];
            if (k < 0 || k >= bins) bad.report(k);
            else counts[k]++;
        }
    });
    bad.throw_if_seen("bincount", bins);
}

}  // namespace

void register_index_kernels() {
    register_kernel(Device::CPU, OpId::gather, gather_scatter_kernel);
    register_kernel(Device::CPU, OpId::scatter_add, gather_scatter_kernel);
    register_kernel(Device::CPU, OpId::index_select, index_rows_kernel);
    register_kernel(Device::CPU, OpId::index_add, index_rows_kernel);
    register_kernel(Device::CPU, OpId::one_hot, one_hot_kernel);
    register_kernel(Device::CPU, OpId::bincount, bincount_kernel);
}

}  // namespace mg::cpu
