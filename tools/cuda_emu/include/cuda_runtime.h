// cuda_emu/include/cuda_runtime.h: a CPU emulation of the CUDA device, enough to run moegrad's
// engine/cuda/*.cu as host C++ (kernel LOGIC only: no timing, no memory model, no real warps).
//
// Each CUDA thread of a block is a fiber (ucontext) run by one OS thread. A fiber runs until it
// reaches __syncthreads() or a warp shuffle, then the next fiber runs; a barrier opens when every
// live thread of the block (or of the warp) waits at it. Blocks run one after another.
// __shared__ = static thread_local (one copy per instantiation, shared by the block's fibers).
// EMU_ORDER=reverse / random runs the fibers (and blocks) in another order between barriers:
// a result that changes with the order is a race (a missing __syncthreads or a cross-block race).
#pragma once
#include <math.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

// ---- qualifiers --------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __constant__ static

// ---- vector types -----------------------------------------------------------------------------------
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }

extern thread_local dim3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ---- runtime API ---------------------------------------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2,
                   cudaErrorInvalidConfiguration = 9, cudaErrorLaunchFailure = 719 };
using cudaError = cudaError_t;
using cudaStream_t = struct CUstream_st*;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                      cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
struct cudaDeviceProp { char name[256]; int multiProcessorCount; int major, minor; size_t totalGlobalMem; };
constexpr unsigned cudaHostAllocMapped = 2, cudaHostAllocDefault = 0;

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaMalloc(void** p, size_t bytes);
template <typename T> cudaError_t cudaMalloc(T** p, size_t bytes) { return cudaMalloc((void**)p, bytes); }
cudaError_t cudaFree(void* p);
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaHostGetDevicePointer(void** device, void* host, unsigned flags);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = 0);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s = 0);
using cudaEvent_t = struct CUevent_st*;
constexpr unsigned cudaEventDisableTiming = 2;
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);

// ---- device intrinsics ---------------------------------------------------------------------------------
namespace emu {
void syncthreads(const char* file, int line);
// A warp-wide exchange: every live lane of the warp must arrive; returns the bytes of lane src_lane.
void warp_exchange(const void* mine, void* theirs, size_t bytes, int kind, int arg, int width, const char* file, int line);
int lane_id();
}  // namespace emu
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::emu::warp_exchange(nullptr, nullptr, 0, 4, 0, 32, __FILE__, __LINE__)

namespace emu {
template <typename T> T shuffle(T v, int kind, int arg, int width, const char* file, int line) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16, "shuffle of a plain value");
    T out;
    warp_exchange(&v, &out, sizeof(T), kind, arg, width, file, line);
    return out;
}
}  // namespace emu
#define __shfl_sync(mask, v, src, ...) ::emu::shuffle(v, 0, src, 32, __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, m, ...) ::emu::shuffle(v, 1, m, 32, __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...) ::emu::shuffle(v, 2, d, 32, __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...) ::emu::shuffle(v, 3, d, 32, __FILE__, __LINE__)

template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
template <typename T> inline T atomicCAS(T* p, T expected, T desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
template <typename T> inline T atomicMax(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old < v && !a.compare_exchange_weak(old, v)) {}
    return old;
}
template <typename T> inline T atomicMin(T* p, T v) {
    std::atomic_ref<T> a(*p);
    T old = a.load();
    while (old > v && !a.compare_exchange_weak(old, v)) {}
    return old;
}
template <typename T> inline T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// CUDA's global min/max overloads (device code calls them unqualified).
template <typename A, typename B> inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <typename A, typename B> inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a < (C)b ? (C)b : (C)a;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0 ? 0.f : (x > 1 ? 1.f : x); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; std::memcpy(&x, &i, 8); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned long long clock64() { return 0; }
using std::isinf;
using std::isnan;
using std::isfinite;

// ---- launches --------------------------------------------------------------------------------------------
// kernel<<<grid, block, smem, stream>>>(args) is rewritten (rewrite.py) into
// ::emu::launch(::emu::cfg(grid, block, smem, stream), [&](auto... a) { kernel(a...); }, args);
namespace emu {
struct Cfg {
    dim3 grid, block;
    size_t smem;
};
template <typename G, typename B> Cfg cfg(G grid, B block, size_t smem = 0, cudaStream_t = 0) {
    return Cfg{dim3(grid), dim3(block), smem};
}
inline Cfg cfg(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = 0) { return Cfg{grid, block, smem}; }
void run_grid(const Cfg& c, const std::function<void()>& body);
template <typename F, typename... Args> void launch(const Cfg& c, F f, Args... args) {
    run_grid(c, [&] { f(args...); });
}
}  // namespace emu
