// backend.h: the contract between the ops (engine/ops_*.cpp) and the devices (engine/cpu/,
// engine/cuda/). An op checks its arguments, allocates its outputs and calls run_kernel(); the
// kernel registered for (device, op) does the arithmetic. Nothing else in the engine knows which
// device it runs on.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <span>

#include "engine/device.h"
#include "engine/op_table.h"
#include "engine/tensor.h"

namespace mg {

// Per-op settings a kernel may need. Each op documents which fields it uses.
struct Attrs {
    int64_t dim = 0;        // the axis (reductions, softmax, gather, topk, cumsum, ...)
    bool keepdim = false;   // reductions: keep the reduced axis with size 1
    int64_t k = 0;          // topk's k, one_hot's classes, multinomial's samples, bincount's bins
    bool flag = false;      // topk: largest; argsort: descending; multinomial: replacement
    double scalar = 0;      // fill value, pow exponent, clamp low, layer_norm eps, ...
    double scalar2 = 0;     // clamp high, arange step, ...
    int64_t index = 0;      // cross_entropy's ignore_index
    uint64_t seed = 0;      // Philox key ...
    uint64_t offset = 0;    // ... and counter offset (random kernels)
    double hyper[8] = {};   // optimizer updates: their hyper-parameters (see the op, e.g. adam_update_)
};

// What a kernel receives: inputs (possibly strided views, as each op documents) and outputs
// that the op has already allocated.
struct KernelArgs {
    OpId op;
    std::span<const Tensor> in;
    std::span<const Tensor> out;
    const Attrs& attrs;
};

using Kernel = void (*)(const KernelArgs&);

// Registration is explicit (a static initialiser in a static library can be dropped by the linker).
void register_kernel(Device device, OpId op, Kernel kernel);
// Is a kernel registered for (device, op)? Used by the test that walks the op table.
bool has_kernel(Device device, OpId op);
// Checks that inputs and outputs share one device (naming the op and the devices otherwise),
// then calls the registered kernel.
void run_kernel(OpId op, std::initializer_list<Tensor> in, std::initializer_list<Tensor> out,
                const Attrs& attrs = {});

// What a device offers besides kernels: memory and copies.
struct DeviceHooks {
    void* (*alloc)(size_t bytes) = nullptr;
    void (*free)(void* ptr, size_t bytes) = nullptr;
    // Copies between this device and the host; `to_device` says which way.
    void (*copy)(void* dst, const void* src, size_t bytes, bool to_device) = nullptr;
    // Waits until the device has finished queued work (CUDA); counts host synchronisations.
    void (*synchronize)() = nullptr;
};
void register_device(Device device, const DeviceHooks& hooks);
// Throws a clear error if the device is not usable (e.g. CUDA not compiled, no GPU found).
const DeviceHooks& device_hooks(Device device);
bool device_available(Device device);

// Registers the CPU backend and, where compiled and usable, the CUDA backend. Called once,
// lazily, by the first kernel run or allocation; calling it again does nothing.
void init_backends();
// Each backend's registration function (engine/cpu/register.cpp, engine/cuda/register.cu).
void register_cpu_backend();
#ifdef MG_CUDA
// Returns false, with the reason in *why, when no GPU is usable (any failure counts).
bool register_cuda_backend(const char** why);
#endif
// Why the CUDA device is not usable ("" when it is).
const char* cuda_unavailable_reason();

}  // namespace mg
