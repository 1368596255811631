// storage.h: a block of device memory that one or more tensor views share, plus the per-device
// memory accounting (live and peak bytes) that every memory claim in moegrad is measured with.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/device.h"

namespace mg {

struct Storage {
    void* data = nullptr;
    size_t bytes = 0;
    Device device = Device::CPU;
    // Bumped by every in-place write. Autograd records it when it saves a tensor and refuses to
    // run a backward if it changed since ("an in-place change of a tensor that backward needs").
    uint64_t version = 0;

    Storage(size_t nbytes, Device dev);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
};

struct MemoryStats {
    int64_t live_bytes = 0;   // bytes held by storages alive right now
    int64_t peak_bytes = 0;   // the most live_bytes has been since the last reset
    int64_t allocations = 0;  // storages created since start
};

MemoryStats memory_stats(Device device);
// Sets peak_bytes to the current live_bytes, so that a measurement can start from here.
void reset_peak_memory(Device device);

}  // namespace mg
