// cuda/caching_allocator.h: device memory without a cudaMalloc/cudaFree per tensor.
//
// cudaMalloc and cudaFree are slow (they can synchronise the whole device), and a training step
// creates and frees thousands of tensors of the same few sizes. So freed blocks are kept in a
// cache, one free list per size class, and the next request of that class takes one back.
//
// Why this is safe with one stream: every kernel runs in the order it was queued. When the host
// frees a tensor, kernels still queued may read it; a kernel queued later that writes into the
// same block runs after them. So a block can be handed out again at once (the "stream-ordered"
// part); nothing waits.
//
// Size classes: requests are rounded up to 512 bytes times 1, 1.25, 1.5 or 1.75 times a power of
// two, so at most ~20% of a block is wasted and a repeated shape always hits the same class.
//
// Plain C++: the backing memory comes from two function pointers (cudaMalloc/cudaFree in
// engine/cuda/register.cu, a fake in tests/test_cuda_host.cpp), so the CPU tests check it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace mg::cuda {

struct AllocatorStats {
    int64_t live_bytes = 0;       // in blocks handed out (their class size)
    int64_t cached_bytes = 0;     // in free blocks kept for reuse
    int64_t peak_bytes = 0;       // the most live + cached bytes held from the device so far
    int64_t device_allocs = 0;    // calls to the backing allocator (cudaMalloc)
    int64_t device_frees = 0;     // calls to the backing free (cudaFree)
    int64_t cache_hits = 0;       // requests served from the cache
};

class CachingAllocator {
public:
    struct Backend {
        void* (*alloc)(size_t bytes) = nullptr;  // returns nullptr when out of memory
        void (*free)(void* ptr) = nullptr;
    };
    explicit CachingAllocator(Backend backend) : backend_(backend) {}
    CachingAllocator(const CachingAllocator&) = delete;
    CachingAllocator& operator=(const CachingAllocator&) = delete;

    // A block of at least `bytes` bytes (nullptr for 0). Out of memory: frees the cache and
    // tries again, then throws std::runtime_error with the sizes.
    void* allocate(size_t bytes);
    // Returns a block to the cache. Throws std::invalid_argument for a pointer it did not give.
    void deallocate(void* ptr);
    // Gives every cached block back to the device.
    void empty_cache();
    AllocatorStats stats() const;

    // The class a request of `bytes` is rounded up to.
    static size_t size_class(size_t bytes);

private:
    void release_cache_locked();

    Backend backend_;
    mutable std::mutex mutex_;
    std::unordered_map<void*, size_t> live_;               // block -> class size
    std::map<size_t, std::vector<void*>> free_;            // class size -> free blocks
    AllocatorStats stats_;
};

}  // namespace mg::cuda
