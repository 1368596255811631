#include "engine/cuda/caching_allocator.h"

#include <bit>
#include <stdexcept>
#include <string>

namespace mg::cuda {

size_t CachingAllocator::size_class(size_t bytes) {
    constexpr size_t kMin = 512;
    if (bytes <= kMin) return kMin;
    // The power of two p with p < bytes <= 2p; the classes between are p * (1, 1.25, 1.5, 1.75, 2).
    const size_t p = std::bit_floor(bytes - 1);
    const size_t quarter = p / 4;
    return p + (bytes - p + quarter - 1) / quarter * quarter;
}

void* CachingAllocator::allocate(size_t bytes) {
    if (bytes == 0) return nullptr;
    const size_t size = size_class(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(size);
    void* ptr = nullptr;
    if (it != free_.end() && !it->second.empty()) {
        ptr = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= (int64_t)size;
        stats_.cache_hits++;
    } else {
        ptr = backend_.alloc(size);
        if (!ptr && stats_.cached_bytes > 0) {  // the cache may hold what we need, in other classes
            release_cache_locked();
            ptr = backend_.alloc(size);
        }
        if (!ptr)
            throw std::runtime_error("CUDA out of memory: could not allocate " + std::to_string(size) + " bytes (" +
                                     std::to_string(stats_.live_bytes) + " bytes in live tensors)");
        stats_.device_allocs++;
    }
    live_[ptr] = size;
    stats_.live_bytes += (int64_t)size;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.live_bytes + stats_.cached_bytes);
    return ptr;
}

void CachingAllocator::deallocate(void* ptr) {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(ptr);
    if (it == live_.end()) throw std::invalid_argument("CachingAllocator: freeing a pointer it did not allocate");
    const size_t size = it->second;
    live_.erase(it);
    free_[size].push_back(ptr);
    stats_.live_bytes -= (int64_t)size;
    stats_.cached_bytes += (int64_t)size;
}

void CachingAllocator::release_cache_locked() {
    for (auto& [size, blocks] : free_) {
        for (void* p : blocks) {
            backend_.free(p);
            stats_.device_frees++;
        }
        stats_.cached_bytes -= (int64_t)(size * blocks.size());
        blocks.clear();
    }
}

void CachingAllocator::empty_cache() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cache_locked();
}

AllocatorStats CachingAllocator::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

}  // namespace mg::cuda
