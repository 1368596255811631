// cuda/device.cu: the CUDA device for the backend registry: memory, copies, synchronisation.
//
// Compiled wherever nvcc exists (CUDA=auto), so CI builds it; at run time any failure of the
// device query (no driver, no GPU, a broken runtime) means "no CUDA device", with the reason
// kept for error messages and for the CUDA tests' skip line. The CUDA kernels of the op table
// are the CUDA backend issue; until they exist, run_kernel names the op that has none.
#include <cuda_runtime.h>

#include <atomic>
#include <stdexcept>
#include <string>

#include "engine/backend.h"

namespace mg {
namespace {

std::string g_reason;
std::atomic<int64_t> g_synchronizations{0};

void check(cudaError_t err, const char* call) {
    if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + call + ": " + cudaGetErrorString(err));
}

// Stream-ordered allocation on the default stream: the driver's pool reuses freed blocks, so
// there is no cudaMalloc/cudaFree per op.
void* cuda_alloc(size_t bytes) {
    void* p = nullptr;
    check(cudaMallocAsync(&p, bytes, 0), "cudaMallocAsync");
    return p;
}
void cuda_free(void* p, size_t) { cudaFreeAsync(p, 0); }
void cuda_copy(void* dst, const void* src, size_t bytes, bool to_device) {
    check(cudaMemcpyAsync(dst, src, bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost, 0),
          "cudaMemcpyAsync");
    if (!to_device) {  // the host is about to read dst
        g_synchronizations++;
        check(cudaStreamSynchronize(0), "cudaStreamSynchronize");
    }
}
void cuda_synchronize() {
    g_synchronizations++;
    check(cudaStreamSynchronize(0), "cudaStreamSynchronize");
}

}  // namespace

bool register_cuda_backend(const char** why) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        g_reason = err != cudaSuccess ? std::string("no usable GPU (cudaGetDeviceCount: ") + cudaGetErrorString(err) + ")"
                                      : std::string("no GPU found (cudaGetDeviceCount returned 0)");
        *why = g_reason.c_str();
        return false;
    }
    register_device(Device::CUDA, DeviceHooks{cuda_alloc, cuda_free, cuda_copy, cuda_synchronize});
    return true;
}

}  // namespace mg
