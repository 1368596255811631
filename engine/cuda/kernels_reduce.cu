// cuda/kernels_reduce.cu: reductions (sum, mean, max, min, argmax, logsumexp) and cumsum on the GPU.
// The CPU reference is engine/cpu/kernels_reduce.cpp; the op layer (engine/ops_reduce.cpp) hands
// every kernel a contiguous input, seen as (outer, R, inner) around attrs.dim, and a contiguous
// output of outer * inner values (output oi = o * inner + i reduces x[o, :, i]).
//
// One set of kernels serves every reduction. A "reducer" says what is reduced:
//     State                       the running value (a double sum, a (value, index) pair, ...)
//     identity()                  the state of no values at all
//     load(x, r, oi)              the state of one input value, r its place on the reduced axis
//     combine(a, b)               merges two states; the kernels fix the order of the merges
//     store(state, oi)            writes output oi
// and the shape picks the thread layout:
//   inner == 1 (the reduced axis is the contiguous one): a warp per row when R <= 512 (the lanes
//     read neighbouring values: coalesced), otherwise a block per row. With few rows and long ones
//     (the sum of a whole 1M tensor is one row) a block per row would leave the GPU idle, so each
//     row is cut into chunks of kRowChunk values, one block per chunk writes a partial state to a
//     scratch tensor, and a second small launch reduces each row's partials.
//   inner > 1: a block covers 32 neighbouring inner positions (threadIdx.x, coalesced reads) and
//     8 slices of the reduced axis (threadIdx.y); each thread walks its slice, then the 8 partial
//     results of each column are merged in shared memory, 8 -> 4 -> 2 -> 1. Again, when there are
//     few such blocks and R is long, R is chunked and a second launch merges the chunks.
// Whether and how a reduction is chunked depends on the shape only (not on the GPU model), and
// every merge happens in a fixed tree, so results are bitwise reproducible. No float atomics.
//
// Float values accumulate in double, integers (and bool) in int64, as on the CPU; the results
// then differ from the CPU's only by the order of the double additions (far below float32's
// precision). max/min/argmax follow the CPU's rule: NaN wins, and among equal values the first
// index wins.
//
// cumsum: with inner > 1 (or short rows) a thread per line adds in the CPU's order; with a long
// contiguous row a block scans it in chunks of 2048 values (a scan in shared memory).
#include <cmath>
#include <stdexcept>
#include <type_traits>

#include "engine/cuda/block_reduce.cuh"
#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {
namespace {

// ---- shapes and tuning constants (changing them changes which additions happen in which order,
// ---- so results stay reproducible for a given build) ---------------------------------------------
// (outer, R, inner) around the reduced dim: reduce_shape() in engine/shape.h.

constexpr int64_t kWarpRowMax = 512;   // inner == 1: rows up to this length get one warp each
constexpr int64_t kRowChunk = 4096;    // inner == 1: values per block when long rows are split
constexpr int64_t kFewRows = 256;      // ... which happens when there are fewer rows than this
constexpr int kTileInner = 32;         // inner > 1: inner positions per block (one warp wide)
constexpr int kTileRows = 8;           // inner > 1: slices of the reduced axis per block
constexpr int64_t kInnerChunk = 512;   // inner > 1: R values per block when R is split
constexpr int64_t kFewTiles = 128;     // ... which happens when there are fewer blocks than this

template <typename T> using Accum = std::conditional_t<std::is_floating_point_v<T>, double, int64_t>;

// ---- reducers -----------------------------------------------------------------------------------------
// sum and mean: T in, U out (T for floats, int64 for integers and bool), summed in Accum<T>.
template <typename T, typename U> struct SumReducer {
    using State = Accum<T>;
    U* out;
    bool mean;
    double scale;  // 1 / R for mean
    __device__ State identity() const { return 0; }
    __device__ State load(T v, int64_t, int64_t) const { return (State)v; }
    __device__ State combine(State a, State b) const { return a + b; }
    __device__ void store(State s, int64_t oi) const { out[oi] = mean ? (U)((double)s * scale) : (U)s; }
};

// max, min, argmax: the best value and its index; r < 0 marks "no value yet".
template <typename T> struct Extreme {
    T value;
    int64_t r;
};
// Shuffling a struct is shuffling its fields (bool travels as an int: there is no bool shuffle).
template <typename T> __device__ Extreme<T> shfl_xor(Extreme<T> e, int mask) {
    Extreme<T> o;
    if constexpr (std::is_same_v<T, bool>) o.value = __shfl_xor_sync(kFullMask, (int)e.value, mask) != 0;
    else o.value = __shfl_xor_sync(kFullMask, e.value, mask);
    o.r = __shfl_xor_sync(kFullMask, e.r, mask);
    return o;
}

template <typename T> struct ExtremeReducer {
    using State = Extreme<T>;
    T* values;         // nullptr for argmax
    int64_t* indices;
    bool want_max;
    __device__ State identity() const { return State{T(), -1}; }
    __device__ State load(T v, int64_t r, int64_t) const { return State{v, r}; }
    // The CPU scans left to right keeping the first NaN, else the first strictly better value.
    // The same winner, decided for any pair whatever the merge order: a NaN beats a number, a
    // better value beats a worse one, and otherwise (two NaNs, equal values) the smaller index.
    // (The rule is symmetric, as block_allreduce's butterfly needs.)
    __device__ State combine(State a, State b) const {
        if (a.r < 0) return b;
        if (b.r < 0) return a;
        const bool a_nan = a.value != a.value, b_nan = b.value != b.value;
        if (a_nan != b_nan) return a_nan ? a : b;
        if (!a_nan && a.value != b.value) {
            const bool a_better = want_max ? a.value > b.value : a.value < b.value;
            return a_better ? a : b;
        }
        return a.r < b.r ? a : b;
    }
    __device__ void store(State s, int64_t oi) const {
        if (values) values[oi] = s.value;
        indices[oi] = s.r;
    }
};

// logsumexp = m + log(sum exp(x - m)) takes two reductions: first the max m of each output (NaN
// skipped, as the CPU's std::max does), into a double scratch tensor, then the sum of exp(x - m).
template <typename T> struct MaxReducer {
    using State = double;
    double* m_out;
    __device__ State identity() const { return -INFINITY; }
    __device__ State load(T v, int64_t, int64_t) const { return (double)v; }
    __device__ State combine(State a, State b) const { return fmax(a, b); }
    __device__ void store(State s, int64_t oi) const { m_out[oi] = s; }
};
template <typename T> struct SumExpReducer {
    using State = double;
    const double* m;
    T* out;
    __device__ State identity() const { return 0; }
    __device__ State load(T v, int64_t, int64_t oi) const { return exp((double)v - m[oi]); }
    __device__ State combine(State a, State b) const { return a + b; }
    // m = +-inf (an infinite value, an empty row, or only NaN and -inf): the CPU answers m itself.
    __device__ void store(State s, int64_t oi) const { out[oi] = isinf(m[oi]) ? (T)m[oi] : (T)(m[oi] + log(s)); }
};

// ---- where the kernels read ----------------------------------------------------------------------------
// The input: value r of output (o, i). R is the full length of the reduced axis, r its global index.
template <typename Red, typename T> struct ReadInput {
    Red red;
    const T* x;
    int64_t R, inner;
    __device__ typename Red::State operator()(int64_t o, int64_t r, int64_t i) const {
        return red.load(x[(o * R + r) * inner + i], r, o * inner + i);
    }
};
// The second launch of a chunked reduction reads the partial states, laid out (outer, chunks, inner).
template <typename State> struct ReadPartials {
    const State* partial;
    int64_t chunks, inner;
    __device__ State operator()(int64_t o, int64_t c, int64_t i) const { return partial[(o * chunks + c) * inner + i]; }
};

// ---- the kernels --------------------------------------------------------------------------------------
// inner == 1. Each group G (a warp or a block) takes a (row, chunk) item: the values
// [c * chunk_len, min(R, (c + 1) * chunk_len)) of the row. Its threads stride through them (thread
// t reads t, t + G::size(), ...: neighbours read neighbours), then the group merges its threads'
// states. Without chunking (chunks == 1, partial == nullptr) the result is the output itself.
template <typename G, typename Red, typename Source>
__global__ void reduce_rows(Red red, Source src, int64_t rows, int64_t R, int64_t chunk_len, int64_t chunks,
                            typename Red::State* partial) {
    using State = typename Red::State;
    auto combine = [&](State a, State b) { return red.combine(a, b); };
    for (int64_t item = G::first_row(); item < rows * chunks; item += G::row_step()) {
        const int64_t row = item / chunks, c = item % chunks;
        const int64_t begin = c * chunk_len, end = min(R, begin + chunk_len);
        State s = red.identity();
        for (int64_t r = begin + G::rank(); r < end; r += G::size()) s = red.combine(s, src(row, r, 0));
        s = G::allreduce(s, combine);
        if (G::rank() == 0) {
            if (partial) partial[item] = s;  // item = row * chunks + c: the (rows, chunks, 1) layout
            else red.store(s, row);
        }
    }
}

// inner > 1. Block (kTileInner, kTileRows); each block item is (o, chunk c, tile of 32 inner
// positions). Thread (x, y) reduces column i = tile * 32 + x over r = begin + y, begin + y + 8, ...;
// then the 8 states of each column meet in shared memory in a fixed tree.
template <typename Red, typename Source>
__global__ void reduce_inner(Red red, Source src, int64_t outer, int64_t R, int64_t inner, int64_t chunk_len,
                             int64_t chunks, typename Red::State* partial) {
    using State = typename Red::State;
    __shared__ State tile[kTileRows][kTileInner];
    const int x = threadIdx.x, y = threadIdx.y;
    const int64_t inner_tiles = (inner + kTileInner - 1) / kTileInner;
    for (int64_t item = blockIdx.x; item < outer * chunks * inner_tiles; item += gridDim.x) {
        const int64_t i = (item % inner_tiles) * kTileInner + x;
        const int64_t c = (item / inner_tiles) % chunks, o = item / inner_tiles / chunks;
        const int64_t begin = c * chunk_len, end = min(R, begin + chunk_len);
        State s = red.identity();
        if (i < inner)
            for (int64_t r = begin + y; r < end; r += kTileRows) s = red.combine(s, src(o, r, i));
        tile[y][x] = s;
        __syncthreads();
        for (int half = kTileRows / 2; half > 0; half /= 2) {
            if (y < half) tile[y][x] = red.combine(tile[y][x], tile[y + half][x]);
            __syncthreads();
        }
        if (y == 0 && i < inner) {
            if (partial) partial[(o * chunks + c) * inner + i] = tile[0][x];
            else red.store(tile[0][x], o * inner + i);
        }
        __syncthreads();  // the next item refills the tile
    }
}

// A scratch array of n states on the GPU, from the caching allocator. The Tensor must outlive the
// launches that use it only on the host side: the kernels queued on the one stream run in order,
// so memory freed here and handed to a later op is written only after these kernels are done.
template <typename State> State* scratch(Tensor& holder, int64_t n) {
    const int64_t words = ((int64_t)sizeof(State) * n + 7) / 8;
    holder = Tensor::empty({words}, DType::Int64, Device::CUDA);
    return reinterpret_cast<State*>(holder.data_ptr<int64_t>());
}

// inner == 1 over rows of length R read through src: a warp or a block per row, no chunking.
template <typename Red, typename Source>
void launch_rows(const Red& red, const Source& src, int64_t rows, int64_t R, const char* op) {
    using State = typename Red::State;
    if (R <= kWarpRowMax)
        reduce_rows<WarpPerRow><<<WarpPerRow::grid(rows), kRowThreads>>>(red, src, rows, R, R, 1, (State*)nullptr);
    else
        reduce_rows<BlockPerRow><<<BlockPerRow::grid(rows), kRowThreads>>>(red, src, rows, R, R, 1, (State*)nullptr);
    check_launch(op);
}

// Runs the reduction `red` of x (contiguous, shape s) with the layout the shape calls for.
template <typename Red, typename T> void launch_reduce(const Red& red, const T* x, ReduceShape s, const char* op) {
    using State = typename Red::State;
    if (s.outer * s.inner == 0) return;  // no outputs
    const ReadInput<Red, T> input{red, x, s.reduced, s.inner};
    Tensor holder;
    if (s.inner == 1) {
        const int64_t chunks = s.outer < kFewRows ? (s.reduced + kRowChunk - 1) / kRowChunk : 1;
        if (chunks <= 1) return launch_rows(red, input, s.outer, s.reduced, op);
        State* partial = scratch<State>(holder, s.outer * chunks);  // (outer, chunks)
        reduce_rows<BlockPerRow><<<BlockPerRow::grid(s.outer * chunks), kRowThreads>>>(red, input, s.outer, s.reduced,
                                                                                       kRowChunk, chunks, partial);
        check_launch(op);
        return launch_rows(red, ReadPartials<State>{partial, chunks, 1}, s.outer, chunks, op);
    }
    const dim3 block(kTileInner, kTileRows);
    const int64_t inner_tiles = (s.inner + kTileInner - 1) / kTileInner;
    const int64_t chunks =
        s.outer * inner_tiles < kFewTiles ? std::max<int64_t>(1, (s.reduced + kInnerChunk - 1) / kInnerChunk) : 1;
    auto grid = [](int64_t items) { return (unsigned)std::clamp<int64_t>(items, 1, 1 << 16); };
    if (chunks == 1) {
        reduce_inner<<<grid(s.outer * inner_tiles), block>>>(red, input, s.outer, s.reduced, s.inner, s.reduced, 1,
                                                             (State*)nullptr);
        check_launch(op);
        return;
    }
    State* partial = scratch<State>(holder, s.outer * chunks * s.inner);  // (outer, chunks, inner)
    reduce_inner<<<grid(s.outer * chunks * inner_tiles), block>>>(red, input, s.outer, s.reduced, s.inner,
                                                                  kInnerChunk, chunks, partial);
    check_launch(op);
    reduce_inner<<<grid(s.outer * inner_tiles), block>>>(red, ReadPartials<State>{partial, chunks, s.inner}, s.outer,
                                                         chunks, s.inner, chunks, 1, (State*)nullptr);
    check_launch(op);
}

// ---- the ops -----------------------------------------------------------------------------------------
void sum_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &out = args.out[0];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    const bool mean = args.op == OpId::mean;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        using U = std::conditional_t<std::is_floating_point_v<T>, T, int64_t>;
        const bool is_mean = mean && std::is_floating_point_v<T>;  // the op allows mean on floats only
        const SumReducer<T, U> red{out.data_ptr<U>(), is_mean, is_mean ? 1.0 / (double)s.reduced : 1.0};
        launch_reduce(red, x.data_ptr<T>(), s, op_name(args.op));
    });
}

void extreme_kernel(const KernelArgs& args) {
    const Tensor& x = args.in[0];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    const bool with_values = args.op != OpId::argmax;
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const ExtremeReducer<T> red{with_values ? args.out[0].data_ptr<T>() : nullptr,
                                    args.out[with_values ? 1 : 0].data_ptr<int64_t>(), args.op != OpId::min};
        launch_reduce(red, x.data_ptr<T>(), s, op_name(args.op));
    });
}

void logsumexp_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &out = args.out[0];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    if (s.outer * s.inner == 0) return;
    dispatch_floating(x.dtype(), "logsumexp", [&](auto tag) {
        using T = decltype(tag);
        Tensor m = Tensor::empty({s.outer * s.inner}, DType::Float64, Device::CUDA);  // each output's max
        launch_reduce(MaxReducer<T>{m.data_ptr<double>()}, x.data_ptr<T>(), s, "logsumexp");
        launch_reduce(SumExpReducer<T>{m.data_ptr<double>(), out.data_ptr<T>()}, x.data_ptr<T>(), s, "logsumexp");
    });
}

// ---- cumsum -------------------------------------------------------------------------------------------
// A thread per line (o, i), adding along r in the CPU's order: for inner > 1 the threads of a warp
// hold neighbouring i, so each step reads 32 neighbouring values.
template <typename T> __global__ void cumsum_lines(const T* x, T* y, int64_t outer, int64_t R, int64_t inner) {
    MG_GRID_STRIDE_LOOP(line, outer * inner) {
        const int64_t base = (line / inner) * R * inner + line % inner;
        Accum<T> running = 0;
        for (int64_t r = 0; r < R; ++r) {
            running += x[base + r * inner];
            y[base + r * inner] = (T)running;
        }
    }
}

// The sum of v over the threads before this one in the block (an exclusive scan). Within a warp,
// Hillis-Steele: at offset 1, 2, 4, 8, 16 each lane adds the running value of the lane that far
// below it; then each thread adds the totals of the warps before its own.
template <typename A> __device__ A block_exclusive_scan(A v, A* warp_totals) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    A inclusive = v;
    for (int offset = 1; offset < 32; offset *= 2) {
        const A below = __shfl_up_sync(kFullMask, inclusive, offset);
        if (lane >= offset) inclusive += below;
    }
    A exclusive = __shfl_up_sync(kFullMask, inclusive, 1);
    if (lane == 0) exclusive = 0;
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    A before = 0;
    for (int w = 0; w < warp; ++w) before += warp_totals[w];
    return before + exclusive;
}

// A block per long contiguous row, which it scans in chunks of kScanChunk values: load the chunk
// into shared memory (coalesced), each thread scans its kScanPerThread neighbouring values, an
// exclusive scan over the threads' totals gives each thread what comes before it, add that and
// the carry (the sum of the earlier chunks), store (coalesced).
constexpr int kScanPerThread = 8;
constexpr int kScanChunk = kRowThreads * kScanPerThread;  // 2048 values

template <typename T> __global__ void cumsum_rows(const T* x, T* y, int64_t rows, int64_t R) {
    using A = Accum<T>;
    __shared__ A chunk[kScanChunk];
    __shared__ A warp_totals[kRowThreads / 32];
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * R;
        T* yr = y + row * R;
        A carry = 0;
        for (int64_t start = 0; start < R; start += kScanChunk) {
            const int n = (int)min((int64_t)kScanChunk, R - start);
            for (int k = threadIdx.x; k < kScanChunk; k += blockDim.x) chunk[k] = k < n ? (A)xr[start + k] : A(0);
            __syncthreads();
            A* mine = chunk + threadIdx.x * kScanPerThread;
            A running = 0;
            for (int j = 0; j < kScanPerThread; ++j) {
                running += mine[j];
                mine[j] = running;
            }
            const A offset = carry + block_exclusive_scan(running, warp_totals);
            for (int j = 0; j < kScanPerThread; ++j) mine[j] += offset;
            __syncthreads();
            for (int k = threadIdx.x; k < n; k += blockDim.x) yr[start + k] = (T)chunk[k];
            carry = chunk[kScanChunk - 1];  // the padding zeros leave the last value = the total so far
            __syncthreads();                // before the next chunk is loaded
        }
    }
}

void cumsum_kernel(const KernelArgs& args) {
    const Tensor &x = args.in[0], &out = args.out[0];
    const ReduceShape s = reduce_shape(x.shape(), args.attrs.dim);
    dispatch_dtype(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, bool>) {
            throw std::invalid_argument("cumsum: bool tensor; convert it to an integer type first");
        } else {
            if (x.numel() == 0) return;
            if (s.inner > 1 || s.reduced <= 32)
                cumsum_lines<<<grid_for(s.outer * s.inner), kThreads>>>(x.data_ptr<T>(), out.data_ptr<T>(), s.outer,
                                                                       s.reduced, s.inner);
            else
                cumsum_rows<<<BlockPerRow::grid(s.outer), kRowThreads>>>(x.data_ptr<T>(), out.data_ptr<T>(), s.outer,
                                                                        s.reduced);
            check_launch("cumsum");
        }
    });
}

}  // namespace

void register_reduce_kernels() {
    register_kernel(Device::CUDA, OpId::sum, sum_kernel);
    register_kernel(Device::CUDA, OpId::mean, sum_kernel);
    register_kernel(Device::CUDA, OpId::max, extreme_kernel);
    register_kernel(Device::CUDA, OpId::min, extreme_kernel);
    register_kernel(Device::CUDA, OpId::argmax, extreme_kernel);
    register_kernel(Device::CUDA, OpId::logsumexp, logsumexp_kernel);
    register_kernel(Device::CUDA, OpId::cumsum, cumsum_kernel);
}

}  // namespace mg::cuda
