// cuda/register.cu: the CUDA device for the backend registry (memory, copies, synchronisation,
// kernel errors) and the registration of every CUDA kernel.
//
// Compiled wherever nvcc exists (CUDA=auto), so CI builds it. The kernels are registered even
// without a GPU, so that tests/test_op_table.cpp can check on any machine that none is missing;
// the device itself is registered only when a GPU is usable (any failure of the device query
// means none), and the reason is kept for error messages and for the CUDA tests' skip line.
//
// One stream (the legacy default stream, 0) carries every kernel and copy, so the work runs in
// the order the host queued it; the host waits only in synchronize() and in copies to the host.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/cuda/common.cuh"
#include "engine/cuda/cuda.h"
#include "engine/cuda/kernels.h"

namespace mg::cuda {

void check(cudaError_t err, const char* call, const char* op) {
    if (err == cudaSuccess) return;
    std::string where = op ? std::string(" (") + op + ")" : "";
    throw std::runtime_error(std::string("CUDA error in ") + call + where + ": " + cudaGetErrorString(err));
}

void check_launch(const char* op) { check(cudaGetLastError(), "kernel launch", op); }

namespace {

std::string g_reason;
std::string g_device_name;
std::atomic<int64_t> g_synchronizations{0};
DeviceError* g_error_host = nullptr;    // pinned, mapped host memory: the GPU writes, the host reads
DeviceError* g_error_device = nullptr;  // the same memory as the kernels address it
CachingAllocator* g_allocator = nullptr;  // never destroyed: the CUDA context may be gone at exit

void* raw_alloc(size_t bytes) {
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();  // clear the out-of-memory error; the allocator decides what to do
        return nullptr;
    }
    return p;
}
void raw_free(void* p) { cudaFree(p); }

// After every wait for the GPU: did a kernel flag an error since the last check?
void raise_kernel_errors() {
    DeviceError e = *g_error_host;
    if (e.code == 0) return;
    *g_error_host = DeviceError{0, 0, 0, 0};
    if (e.code == 2)
        throw std::invalid_argument(std::string(op_name((OpId)e.op)) + ": row " + std::to_string(e.index) +
                                    " has a negative, NaN or infinite value or sums to 0 (found by a CUDA kernel, "
                                    "reported at the next synchronisation)");
    throw std::out_of_range(std::string(op_name((OpId)e.op)) + ": index " + std::to_string(e.index) +
                            " is out of range [0, " + std::to_string(e.bound) +
                            ") (found by a CUDA kernel, reported at the next synchronisation)");
}

void wait_for_gpu() {
    g_synchronizations++;
    check(cudaStreamSynchronize(0), "cudaStreamSynchronize");
    raise_kernel_errors();
}

void* device_alloc(size_t bytes) { return g_allocator->allocate(bytes); }
void device_free(void* p, size_t) { g_allocator->deallocate(p); }
// ---- host -> device copies without a wait ----------------------------------------------------------
// cudaMemcpyAsync from ordinary (pageable) host memory first waits for the stream to drain: a
// hidden synchronisation, and the MoE layer uploads small tensors (group offsets, masks) in every
// forward. From pinned memory the copy is truly asynchronous, so small uploads go through a pool
// of pinned staging blocks: copy into a free block, queue the DMA, record an event; the block is
// free again once its event has completed (cudaEventQuery never waits). Large uploads (model
// weights, once) go directly.
constexpr size_t kStagingMax = 1 << 20;
struct StagingBlock {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t done = nullptr;
};
std::vector<StagingBlock> g_staging;
std::mutex g_staging_mutex;

void upload_small(void* dst, const void* src, size_t bytes) {
    std::lock_guard<std::mutex> lock(g_staging_mutex);
    StagingBlock* block = nullptr;
    for (StagingBlock& b : g_staging)
        if (b.bytes >= bytes && cudaEventQuery(b.done) == cudaSuccess) {
            block = &b;
            break;
        }
    cudaGetLastError();  // cudaEventQuery's "not ready" is not an error to keep
    if (!block) {
        StagingBlock b;
        b.bytes = std::max<size_t>(4096, std::bit_ceil(bytes));
        check(cudaHostAlloc(&b.host, b.bytes, cudaHostAllocDefault), "cudaHostAlloc");
        check(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
        g_staging.push_back(b);
        block = &g_staging.back();
    }
    std::memcpy(block->host, src, bytes);
    check(cudaMemcpyAsync(dst, block->host, bytes, cudaMemcpyHostToDevice, 0), "cudaMemcpyAsync");
    check(cudaEventRecord(block->done, 0), "cudaEventRecord");
}

void device_copy(void* dst, const void* src, size_t bytes, bool to_device) {
    if (bytes == 0) return;
    if (to_device && bytes <= kStagingMax) return upload_small(dst, src, bytes);
    check(cudaMemcpyAsync(dst, src, bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, 0),
          "cudaMemcpyAsync");
    if (!to_device) wait_for_gpu();  // the host is about to read dst
}

void register_all_kernels() {
    register_elementwise_kernels();
    register_memory_kernels();
    register_reduce_kernels();
    register_nn_kernels();
    register_index_kernels();
    register_sort_kernels();
    register_matmul_kernels();
    register_attention_kernels();
    register_grouped_kernels();
    register_optim_kernels();
}

bool init_device() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        g_reason = std::string("no usable GPU (cudaGetDeviceCount: ") + cudaGetErrorString(err) + ")";
        return false;
    }
    if (count == 0) {
        g_reason = "no GPU found (cudaGetDeviceCount returned 0)";
        return false;
    }
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, 0);
    if (err == cudaSuccess) err = cudaHostAlloc((void**)&g_error_host, sizeof(DeviceError), cudaHostAllocMapped);
    if (err == cudaSuccess) err = cudaHostGetDevicePointer((void**)&g_error_device, g_error_host, 0);
    if (err != cudaSuccess) {
        g_reason = std::string("the GPU cannot be set up (") + cudaGetErrorString(err) + ")";
        return false;
    }
    *g_error_host = DeviceError{0, 0, 0, 0};
    g_device_name = prop.name;
    g_allocator = new CachingAllocator({raw_alloc, raw_free});
    return true;
}

}  // namespace

DeviceError* device_error() { return g_error_device; }

int64_t synchronizations() { return g_synchronizations.load(); }
AllocatorStats allocator_stats() {
    device_hooks(Device::CUDA);  // throws the clear "not available" error without a GPU
    return g_allocator->stats();
}
void empty_cache() {
    device_hooks(Device::CUDA);
    g_allocator->empty_cache();
}
void synchronize() { device_hooks(Device::CUDA).synchronize(); }
const char* device_name() {
    device_hooks(Device::CUDA);
    return g_device_name.c_str();
}

}  // namespace mg::cuda

namespace mg {

bool register_cuda_backend(const char** why) {
    cuda::register_all_kernels();
    if (!cuda::init_device()) {
        *why = cuda::g_reason.c_str();
        return false;
    }
    register_device(Device::CUDA, DeviceHooks{cuda::device_alloc, cuda::device_free, cuda::device_copy, cuda::wait_for_gpu});
    return true;
}

}  // namespace mg
