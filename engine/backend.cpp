#include "engine/backend.h"

#include <mutex>
#include <stdexcept>
#include <string>

namespace mg {

// ---- the op table as data --------------------------------------------------------------------
static const OpInfo kOpInfo[] = {
#define MG_OP_INFO(name, kind, grad) {#name, OpKind::kind, grad},
    MG_OP_TABLE(MG_OP_INFO)
#undef MG_OP_INFO
};
static_assert(sizeof(kOpInfo) / sizeof(kOpInfo[0]) == kNumOps, "op table and OpId disagree");

const OpInfo& op_info(OpId op) { return kOpInfo[(int)op]; }

// ---- kernels and devices -----------------------------------------------------------------------
namespace {
Kernel g_kernels[kNumDevices][kNumOps] = {};
DeviceHooks g_devices[kNumDevices] = {};
bool g_device_ok[kNumDevices] = {};
const char* g_cuda_reason = "moegrad was built without CUDA (nvcc not found or CUDA=0)";
std::once_flag g_init_once;
}  // namespace

void register_kernel(Device device, OpId op, Kernel kernel) { g_kernels[(int)device][(int)op] = kernel; }
bool has_kernel(Device device, OpId op) {
    init_backends();
    return g_kernels[(int)device][(int)op] != nullptr;
}

void register_device(Device device, const DeviceHooks& hooks) {
    g_devices[(int)device] = hooks;
    g_device_ok[(int)device] = true;
}

void init_backends() {
    std::call_once(g_init_once, [] {
        register_cpu_backend();
#ifdef MG_CUDA
        const char* why = "";
        if (register_cuda_backend(&why)) g_cuda_reason = "";
        else g_cuda_reason = why;
#endif
    });
}

bool device_available(Device device) {
    init_backends();
    return g_device_ok[(int)device];
}

const char* cuda_unavailable_reason() {
    init_backends();
    return g_cuda_reason;
}

const DeviceHooks& device_hooks(Device device) {
    init_backends();
    if (!g_device_ok[(int)device])
        throw std::runtime_error(std::string("device ") + device_name(device) + " is not available: " +
                                 (device == Device::CUDA ? g_cuda_reason : "not registered"));
    return g_devices[(int)device];
}

void run_kernel(OpId op, std::initializer_list<Tensor> in, std::initializer_list<Tensor> out, const Attrs& attrs) {
    init_backends();
    const Tensor& first = out.size() ? *out.begin() : *in.begin();
    Device device = first.device();
    for (const Tensor* group : {in.begin(), out.begin()}) {
        const Tensor* end = group == in.begin() ? in.end() : out.end();
        for (const Tensor* t = group; t != end; ++t)
            if (t->defined() && t->device() != device)
                throw std::invalid_argument(std::string(op_name(op)) + ": tensors on different devices (" +
                                            device_name(device) + " and " + device_name(t->device()) + ")");
    }
    Kernel kernel = g_kernels[(int)device][(int)op];
    if (!kernel)
        throw std::logic_error(std::string(op_name(op)) + ": no kernel registered for device " + device_name(device));
    kernel(KernelArgs{op, std::span<const Tensor>(in.begin(), in.size()),
                      std::span<const Tensor>(out.begin(), out.size()), attrs});
}

}  // namespace mg
