// cpu/register.cpp: the CPU device (64-byte aligned host memory) and all its kernels.
#include <cstdlib>
#include <cstring>

#include "engine/backend.h"
#include "engine/cpu/kernels.h"

namespace mg {

namespace {
// Large buffers are 64-byte aligned (a cache line, what AVX-512 loads like best); small ones
// come from plain malloc (16-byte aligned), whose per-thread caches make tiny tensors cheap.
void* cpu_alloc(size_t bytes) {
    void* p = bytes < 4096 ? std::malloc(bytes) : std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return p;
}
void cpu_free(void* p, size_t) { std::free(p); }
void cpu_copy(void* dst, const void* src, size_t bytes, bool) { std::memcpy(dst, src, bytes); }
void cpu_synchronize() {}
}  // namespace

void register_cpu_backend() {
    register_device(Device::CPU, DeviceHooks{cpu_alloc, cpu_free, cpu_copy, cpu_synchronize});
    cpu::register_elementwise_kernels();
    cpu::register_reduce_kernels();
    cpu::register_memory_kernels();
    cpu::register_matmul_kernels();
    cpu::register_nn_kernels();
    cpu::register_index_kernels();
    cpu::register_sort_kernels();
    cpu::register_attention_kernels();
    cpu::register_optim_kernels();
}


}  // namespace mg
