// cuda/cuda.h: what the rest of the program may ask the CUDA backend (host code; plain C++).
// Only declared when the backend is compiled (MG_CUDA); each call needs a usable GPU
// (device_available(Device::CUDA)) and throws otherwise.
#pragma once
#ifdef MG_CUDA
#include <cstdint>

#include "engine/cuda/caching_allocator.h"

namespace mg::cuda {

// Host synchronisations so far: every wait for the GPU (item(), to(cpu), printing, an explicit
// synchronize). tests/test_cuda_parity.cpp counts them over a training step.
int64_t synchronizations();
// The caching allocator's counters (engine/cuda/caching_allocator.h).
AllocatorStats allocator_stats();
// Gives the cached blocks back to the device (cudaFree).
void empty_cache();
// Waits for the GPU and raises any error a kernel flagged (an out-of-range index) since the last check.
void synchronize();
// The GPU's name, e.g. "NVIDIA H100 80GB HBM3".
const char* device_name();

}  // namespace mg::cuda
#endif
