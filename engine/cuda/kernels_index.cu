// cuda/kernels_index.cu: gather / scatter_add / index_select / index_add / one_hot / bincount on the
// GPU, mirroring engine/cpu/kernels_index.cpp (the plain reference). These are the MoE dispatch
// (index_select: tokens -> expert groups) and combine (index_add / scatter_add), and the backward of
// embedding (index_add of the output gradient into the table).
//
// Reads are easy: gather, index_select and one_hot use one thread per output element; no two
// threads write the same place.
//
// Additions are the interesting part: several sources may name one destination (a token id used
// by many positions, a row picked by many experts). A float atomicAdd per source would be fast but
// the order of the additions, and so the rounding of the sum, would change from run to run. Here
// each destination's sources are first listed, in increasing source order, and then ONE thread
// per destination element adds them in that order, starting from the destination's old value:
// exactly the additions the CPU makes, in the CPU's order, so the result is bitwise the CPU's and
// the same on every run. The list is built on the GPU in three steps:
//   1. keys: source position p gets the id of its destination (a bad index: reported, and a
//      sentinel id that sorts after every real one);
//   2. a stable radix sort of the (destination id, p) pairs (CUB, via sort_pairs in
//      kernels_sort.cu) groups the sources by destination and keeps each group in increasing p;
//   3. starts[d] = the first sorted slot of destination d (a binary search in the sorted ids), so
//      destination d's sources are the slots [starts[d], starts[d + 1]): a CSR list.
// Bad indices are reported with report_index_error (the host raises std::out_of_range at the next
// synchronisation) and skipped, as the CPU skips them.
#include <bit>

#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {

// Stable (key, value) radix sort on the low key_bits bits of the key (CUB); defined in kernels_sort.cu.
void sort_pairs(const uint64_t* keys_in, uint64_t* keys_out, const int64_t* values_in, int64_t* values_out,
                int64_t n, int key_bits, const char* op);

namespace {


// A copy of `shape` without dimension `dim`.
Shape drop_dim(const Shape& shape, int64_t dim) {
    Shape r;
    for (int64_t d = 0; d < (int64_t)shape.size(); ++d)
        if (d != dim) r.push_back(shape[d]);
    return r;
}

// ---- the CSR list of sources per destination ------------------------------------------------------
// starts[d] = number of sorted keys < d, for d in [0, destinations]: destination d's sources are in
// sorted slots [starts[d], starts[d + 1]). Sentinel keys (== destinations) come after all of them.
__global__ void csr_starts_kernel(const uint64_t* sorted_keys, int64_t n, int64_t* starts, int64_t destinations) {
    MG_GRID_STRIDE_LOOP(d, destinations + 1) {
        int64_t lo = 0, hi = n;  // lower_bound of d
        while (lo < hi) {
            const int64_t mid = lo + (hi - lo) / 2;
            if (sorted_keys[mid] < (uint64_t)d) lo = mid + 1;
            else hi = mid;
        }
        starts[d] = lo;
    }
}

// Scratch of the grouping: the sorted source positions and the starts of each destination's run.
struct SourceLists {
    Tensor sorted_positions;  // (n) source positions, grouped by destination, increasing in each group
    Tensor starts;            // (destinations + 1)
};

// Steps 2 and 3 above, given the keys (n destination ids, sentinel = destinations) and positions.
SourceLists group_by_destination(const Tensor& keys, const Tensor& positions, int64_t n, int64_t destinations,
                                 const char* op) {
    SourceLists lists;
    Tensor sorted_keys = Tensor::empty({n}, DType::Int64, Device::CUDA);
    lists.sorted_positions = Tensor::empty({n}, DType::Int64, Device::CUDA);
    lists.starts = Tensor::empty({destinations + 1}, DType::Int64, Device::CUDA);
    // Keys run over [0, destinations]: sorting only their low bits is enough (fewer radix passes).
    const int key_bits = std::max(1, (int)std::bit_width((uint64_t)destinations));
    auto* keys_in = reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>());
    auto* keys_out = reinterpret_cast<uint64_t*>(sorted_keys.data_ptr<int64_t>());
    sort_pairs(keys_in, keys_out, positions.data_ptr<int64_t>(), lists.sorted_positions.data_ptr<int64_t>(), n,
               key_bits, op);
    csr_starts_kernel<<<grid_for(destinations + 1), kThreads>>>(keys_out, n, lists.starts.data_ptr<int64_t>(),
                                                                destinations);
    check_launch(op);
    return lists;
}

// ---- gather ---------------------------------------------------------------------------------------
// out[..., j, ...] = x[..., index[..., j, ...], ...] along dim; out has index's shape. One thread per
// element of index; the indexer gives its offset in out, in index, and in x with dim left out
// (x's stride at dim is set to 0), to which k * x's stride at dim is added.
template <typename T, typename I>
__global__ void gather_kernel(const T* x, const I* index, T* out, Indexer<3> ix, int64_t x_dim_stride, int64_t n,
                              DeviceError* err) {
    MG_GRID_STRIDE_LOOP(e, ix.numel) {
        int64_t off[3];  // out, index, x (without dim)
        ix.offsets(e, off);
        const int64_t k = (int64_t)index[off[1]];
        if (k < 0 || k >= n) {
            report_index_error(err, OpId::gather, k, n);
            continue;
        }
        out[off[0]] = x[off[2] + k * x_dim_stride];
    }
}

void gather_kernel_host(const KernelArgs& args) {
    const Tensor &x = args.in[0], &index = args.in[1], &out = args.out[0];
    const int64_t dim = args.attrs.dim, n = x.shape()[dim];
    if (index.numel() == 0) return;
    Shape x_strides = x.strides();
    x_strides[dim] = 0;  // the indexer walks index's shape; dim's offset comes from the index value
    auto ix = make_indexer<3>(index.shape(), {&out.strides(), &index.strides(), &x_strides});
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(index.dtype(), "gather", [&](auto itag) {
            using I = decltype(itag);
            gather_kernel<T, I><<<grid_for(ix.numel), kThreads>>>(x.data_ptr<T>(), index.data_ptr<I>(),
                                                                  out.data_ptr<T>(), ix, x.strides()[dim], n,
                                                                  device_error());
            check_launch("gather");
        });
    });
}

// ---- scatter_add ----------------------------------------------------------------------------------
// out (a copy of x, made by the op) [..., index[..., j, ...], ...] += src[..., j, ...] along dim.
// index and src share a shape, (outer, len, inner) around dim, and may be strided. A "line" is one
// (outer, inner) position; destination (line, k) has id line * n + k: lines never share
// destinations, and within a line the sources are added in increasing j, as on the CPU.

// Step 1: source position p (row-major over index's shape) -> its destination id.
template <typename I>
__global__ void scatter_keys_kernel(const I* index, Indexer<1> index_ix, uint64_t* keys, int64_t* positions,
                                    int64_t len, int64_t inner, int64_t n, int64_t destinations,
                                    DeviceError* err) {
    MG_GRID_STRIDE_LOOP(p, index_ix.numel) {
        int64_t off[1];
        index_ix.offsets(p, off);
        const int64_t k = (int64_t)index[off[0]];
        const int64_t line = p / (len * inner) * inner + p % inner;
        positions[p] = p;
        if (k < 0 || k >= n) {
            report_index_error(err, OpId::scatter_add, k, n);
            keys[p] = (uint64_t)destinations;  // the sentinel: sorts after every real destination
        } else {
            keys[p] = (uint64_t)(line * n + k);
        }
    }
}

// Step 4: one thread per destination id (line, k); line_ix maps a line (row-major over index's
// shape without dim) to its offset in out, src_ix a source position to its offset in src.
template <typename T>
__global__ void scatter_add_apply_kernel(const T* src, T* out, const int64_t* sorted_positions, const int64_t* starts,
                                         Indexer<1> line_ix, Indexer<1> src_ix, int64_t out_dim_stride, int64_t n,
                                         int64_t destinations) {
    MG_GRID_STRIDE_LOOP(d, destinations) {
        const int64_t begin = starts[d], end = starts[d + 1];
        if (begin == end) continue;  // no source: out keeps x's value
        int64_t line_off[1];
        line_ix.offsets(d / n, line_off);
        T* dst = out + line_off[0] + (d % n) * out_dim_stride;
        T acc = *dst;
        for (int64_t s = begin; s < end; ++s) {
            int64_t src_off[1];
            src_ix.offsets(sorted_positions[s], src_off);
            acc += src[src_off[0]];
        }
        *dst = acc;
    }
}

void scatter_add_kernel_host(const KernelArgs& args) {
    const Tensor &index = args.in[1], &src = args.in[2], &out = args.out[0];
    const int64_t dim = args.attrs.dim, n = out.shape()[dim];
    const int64_t count = index.numel();
    if (count == 0) return;
    const ReduceShape s = reduce_shape(index.shape(), dim);
    const int64_t destinations = s.outer * s.inner * n;
    const Shape line_shape_sizes = drop_dim(index.shape(), dim), out_line_strides = drop_dim(out.strides(), dim);
    auto index_ix = make_indexer<1>(index.shape(), {&index.strides()});
    auto src_ix = make_indexer<1>(index.shape(), {&src.strides()});
    auto line_ix = make_indexer<1>(line_shape_sizes, {&out_line_strides});
    Tensor keys = Tensor::empty({count}, DType::Int64, Device::CUDA);       // destination id per source
    Tensor positions = Tensor::empty({count}, DType::Int64, Device::CUDA);  // 0, 1, ..., count - 1
    dispatch_index(index.dtype(), "scatter_add", [&](auto itag) {
        using I = decltype(itag);
        scatter_keys_kernel<I><<<grid_for(count), kThreads>>>(
            index.data_ptr<I>(), index_ix, reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>()),
            positions.data_ptr<int64_t>(), s.reduced, s.inner, n, destinations, device_error());
        check_launch("scatter_add");
    });
    if (destinations == 0) return;  // n == 0: every index was out of range (reported)
    SourceLists lists = group_by_destination(keys, positions, count, destinations, "scatter_add");
    dispatch_dtype(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        scatter_add_apply_kernel<T><<<grid_for(destinations), kThreads>>>(
            src.data_ptr<T>(), out.data_ptr<T>(), lists.sorted_positions.data_ptr<int64_t>(),
            lists.starts.data_ptr<int64_t>(), line_ix, src_ix, out.strides()[dim], n, destinations);
        check_launch("scatter_add");
    });
}

// ---- index_select ---------------------------------------------------------------------------------
// out (outer, L, inner) = x (outer, N, inner) at rows index[l]; all contiguous. One thread per
// output element: neighbouring threads copy neighbouring columns of one row (coalesced).
template <typename T, typename I>
__global__ void index_select_kernel(const T* x, const I* index, T* out, int64_t L, int64_t N, int64_t inner,
                                    int64_t total, DeviceError* err) {
    MG_GRID_STRIDE_LOOP(e, total) {
        const int64_t c = e % inner, ol = e / inner, l = ol % L, o = ol / L;
        const int64_t k = (int64_t)index[l];
        if (k < 0 || k >= N) {
            report_index_error(err, OpId::index_select, k, N);
            continue;
        }
        out[e] = x[(o * N + k) * inner + c];
    }
}

void index_select_kernel_host(const KernelArgs& args) {
    const Tensor &x = args.in[0], &index = args.in[1], &out = args.out[0];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    const int64_t L = index.numel(), total = out.numel();
    if (total == 0) return;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(index.dtype(), "index_select", [&](auto itag) {
            using I = decltype(itag);
            index_select_kernel<T, I><<<grid_for(total), kThreads>>>(x.data_ptr<T>(), index.data_ptr<I>(),
                                                                     out.data_ptr<T>(), L, s.reduced, s.inner, total,
                                                                     device_error());
            check_launch("index_select");
        });
    });
}

// ---- index_add ------------------------------------------------------------------------------------
// out (a copy of x) (outer, N, inner) rows index[l] += src (outer, L, inner) rows l; all contiguous.
// The index is one vector shared by every (outer, column), so the source lists are built once over
// it: destination row k's sources are the l with index[l] == k, in increasing l. Then one thread
// per element (o, k, c) of out adds src[o, l, c] over that list (neighbouring threads: neighbouring
// columns, so the reads of src are coalesced). Embedding backward is this with many repeated ids;
// the MoE backward of index_select is this with a permutation (one source per row).

// Step 1: l -> its destination row (or the sentinel N).
template <typename I>
__global__ void index_add_keys_kernel(const I* index, uint64_t* keys, int64_t* positions, int64_t L, int64_t N,
                                      DeviceError* err) {
    MG_GRID_STRIDE_LOOP(l, L) {
        const int64_t k = (int64_t)index[l];
        positions[l] = l;
        if (k < 0 || k >= N) {
            report_index_error(err, OpId::index_add, k, N);
            keys[l] = (uint64_t)N;
        } else {
            keys[l] = (uint64_t)k;
        }
    }
}

template <typename T>
__global__ void index_add_apply_kernel(const T* src, T* out, const int64_t* sorted_positions, const int64_t* starts,
                                       int64_t L, int64_t N, int64_t inner, int64_t total) {
    MG_GRID_STRIDE_LOOP(e, total) {
        const int64_t c = e % inner, ok = e / inner, k = ok % N, o = ok / N;
        const int64_t begin = starts[k], end = starts[k + 1];
        if (begin == end) continue;  // row k is named by no index: out keeps x's value
        T acc = out[e];
        for (int64_t s = begin; s < end; ++s) acc += src[(o * L + sorted_positions[s]) * inner + c];
        out[e] = acc;
    }
}

void index_add_kernel_host(const KernelArgs& args) {
    const Tensor &index = args.in[1], &src = args.in[2], &out = args.out[0];
    const ReduceShape s = reduce_shape(out.shape(), args.attrs.dim);
    const int64_t L = index.numel(), N = s.reduced, total = out.numel();
    if (L == 0) return;
    Tensor keys = Tensor::empty({L}, DType::Int64, Device::CUDA);       // destination row per l
    Tensor positions = Tensor::empty({L}, DType::Int64, Device::CUDA);  // 0, 1, ..., L - 1
    dispatch_index(index.dtype(), "index_add", [&](auto itag) {
        using I = decltype(itag);
        index_add_keys_kernel<I><<<grid_for(L), kThreads>>>(index.data_ptr<I>(),
                                                            reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>()),
                                                            positions.data_ptr<int64_t>(), L, N, device_error());
        check_launch("index_add");
    });
    if (total == 0) return;  // nothing to add into (an index into an empty dim was reported)
    SourceLists lists = group_by_destination(keys, positions, L, N, "index_add");
    dispatch_dtype(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        index_add_apply_kernel<T><<<grid_for(total), kThreads>>>(src.data_ptr<T>(), out.data_ptr<T>(),
                                                                 lists.sorted_positions.data_ptr<int64_t>(),
                                                                 lists.starts.data_ptr<int64_t>(), L, N, s.inner,
                                                                 total);
        check_launch("index_add");
    });
}

// ---- one_hot / bincount ---------------------------------------------------------------------------
// out (..., C): one thread per output element (i, c) writes 1 where c == index[i], 0 elsewhere; the
// c == 0 thread reports a bad index (so it is reported once per element, not C times).
template <typename T, typename I>
__global__ void one_hot_kernel(const I* index, T* out, int64_t C, int64_t total, DeviceError* err) {
    MG_GRID_STRIDE_LOOP(e, total) {
        const int64_t i = e / C, c = e % C, k = (int64_t)index[i];
        if (c == 0 && (k < 0 || k >= C)) report_index_error(err, OpId::one_hot, k, C);
        out[e] = k == c ? T(1) : T(0);
    }
}

void one_hot_kernel_host(const KernelArgs& args) {
    const Tensor &index = args.in[0], &out = args.out[0];
    const int64_t C = args.attrs.k, total = out.numel();
    if (total == 0) return;
    dispatch_dtype(out.dtype(), [&](auto tag) {
        using T = decltype(tag);
        dispatch_index(index.dtype(), "one_hot", [&](auto itag) {
            using I = decltype(itag);
            one_hot_kernel<T, I><<<grid_for(total), kThreads>>>(index.data_ptr<I>(), out.data_ptr<T>(), C, total,
                                                                device_error());
            check_launch("one_hot");
        });
    });
}

// counts (bins) int64, zeroed first. One thread per index; integer atomics are exact, so the counts
// do not depend on the order in which threads arrive.
template <typename I>
__global__ void bincount_kernel(const I* index, unsigned long long* counts, int64_t n, int64_t bins,
                                DeviceError* err) {
    MG_GRID_STRIDE_LOOP(i, n) {
        const int64_t k = (int64_t)index[i];
        if (k < 0 || k >= bins) {
            report_index_error(err, OpId::bincount, k, bins);
            continue;
        }
        atomicAdd(counts + k, 1ull);
    }
}

void bincount_kernel_host(const KernelArgs& args) {
    const Tensor &index = args.in[0], &out = args.out[0];
    const int64_t bins = args.attrs.k, n = index.numel();
    auto* counts = reinterpret_cast<unsigned long long*>(out.data_ptr<int64_t>());
    check(cudaMemsetAsync(counts, 0, sizeof(int64_t) * bins, 0), "cudaMemsetAsync", "bincount");
    if (n == 0) return;
    dispatch_index(index.dtype(), "bincount", [&](auto itag) {
        using I = decltype(itag);
        bincount_kernel<I><<<grid_for(n), kThreads>>>(index.data_ptr<I>(), counts, n, bins, device_error());
        check_launch("bincount");
    });
}

}  // namespace

void register_index_kernels() {
    register_kernel(Device::CUDA, OpId::gather, gather_kernel_host);
    register_kernel(Device::CUDA, OpId::scatter_add, scatter_add_kernel_host);
    register_kernel(Device::CUDA, OpId::index_select, index_select_kernel_host);
    register_kernel(Device::CUDA, OpId::index_add, index_add_kernel_host);
    register_kernel(Device::CUDA, OpId::one_hot, one_hot_kernel_host);
    register_kernel(Device::CUDA, OpId::bincount, bincount_kernel_host);
}

}  // namespace mg::cuda
