#include "engine/storage.h"

#include <mutex>

#include "engine/backend.h"

namespace mg {

namespace {
// One set of counters per device. Atomics, because storages are freed from any thread.
struct Counters {
    std::atomic<int64_t> live{0}, peak{0}, allocations{0};
};
Counters g_counters[kNumDevices];

void count_alloc(Device d, int64_t bytes) {
    Counters& c = g_counters[(int)d];
    int64_t live = c.live.fetch_add(bytes) + bytes;
    int64_t peak = c.peak.load();
    while (live > peak && !c.peak.compare_exchange_weak(peak, live)) {}
    c.allocations.fetch_add(1);
}
}  // namespace

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
    data = device_hooks(dev).alloc(nbytes);
    count_alloc(dev, (int64_t)nbytes);
}

Storage::~Storage() {
    device_hooks(device).free(data, bytes);
    g_counters[(int)device].live.fetch_sub((int64_t)bytes);
}

MemoryStats memory_stats(Device device) {
    const Counters& c = g_counters[(int)device];
    return {c.live.load(), c.peak.load(), c.allocations.load()};
}

void reset_peak_memory(Device device) {
    Counters& c = g_counters[(int)device];
    c.peak.store(c.live.load());
}

}  // namespace mg
