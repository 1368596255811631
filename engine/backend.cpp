#include "engine/backend.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

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

// ---- the kernel profiler (MG_PROFILE=1) --------------------------------------------------------
// With MG_PROFILE set, every kernel call is timed on the host and, when the program ends, a table
// of the ops by total time goes to stderr; MG_PROFILE=2 splits each op by its input shapes and
// strides (which matmul is slow: the transposed one of the backward?). On the CPU a kernel's time is its whole run; on CUDA it
// is only the launch (kernels run asynchronously), so profile CUDA with nsys instead.
namespace {
struct OpTotals {
    int64_t calls = 0;
    double seconds = 0;
};
struct Profiler {
    const int level = std::getenv("MG_PROFILE") ? std::atoi(std::getenv("MG_PROFILE")) : 0;
    const bool on = level > 0;
    OpTotals totals[kNumDevices][kNumOps] = {};
    std::map<std::string, OpTotals> by_shape;  // level 2: "op [shape/strides, ...]"
    std::mutex mutex;  // ops may run on several threads at once (experts in parallel)
    ~Profiler() {
        if (!on) return;
        struct Row {
            const char* op;
            const char* device;
            OpTotals t;
        };
        std::vector<Row> rows;
        double all = 0;
        for (int d = 0; d < kNumDevices; ++d)
            for (int o = 0; o < kNumOps; ++o)
                if (totals[d][o].calls) {
                    rows.push_back({op_name(OpId(o)), device_name(Device(d)), totals[d][o]});
                    all += totals[d][o].seconds;
                }
        std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.t.seconds > b.t.seconds; });
        std::fprintf(stderr, "\nMG_PROFILE: kernel time by op (host clock; %.3f s in all)\n", all);
        std::fprintf(stderr, "%-28s %-6s %10s %12s %10s %7s\n", "op", "device", "calls", "total ms", "us/call", "share");
        for (const Row& r : rows)
            std::fprintf(stderr, "%-28s %-6s %10lld %12.1f %10.1f %6.1f%%\n", r.op, r.device, (long long)r.t.calls,
                         1e3 * r.t.seconds, 1e6 * r.t.seconds / double(r.t.calls), 100 * r.t.seconds / all);
        if (level < 2) return;
        std::vector<std::pair<std::string, OpTotals>> shaped(by_shape.begin(), by_shape.end());
        std::sort(shaped.begin(), shaped.end(),
                  [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
        std::fprintf(stderr, "\nMG_PROFILE=2: the 40 costliest (op, inputs as shape/strides) pairs\n");
        for (size_t i = 0; i < shaped.size() && i < 40; ++i)
            std::fprintf(stderr, "%10.1f ms %8lld calls %6.1f%%  %s\n", 1e3 * shaped[i].second.seconds,
                         (long long)shaped[i].second.calls, 100 * shaped[i].second.seconds / all,
                         shaped[i].first.c_str());
    }
    static std::string describe(OpId op, std::span<const Tensor> in) {
        std::string key = op_name(op);
        for (const Tensor& t : in) {
            if (!t.defined()) continue;
            key += ' ';
            key += shape_str(t.shape());
            key += '/';
            for (int d = 0; d < t.dim(); ++d) {
                if (d) key += ",";
                key += std::to_string(t.strides()[d]);
            }
        }
        return key;
    }
};
Profiler g_profiler;
}  // namespace

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
    const KernelArgs args{op, std::span<const Tensor>(in.begin(), in.size()),
                          std::span<const Tensor>(out.begin(), out.size()), attrs};
    if (!g_profiler.on) return kernel(args);
    const auto start = std::chrono::steady_clock::now();
    kernel(args);
    std::lock_guard<std::mutex> lock(g_profiler.mutex);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    OpTotals& t = g_profiler.totals[(int)device][(int)op];
    t.calls += 1;
    t.seconds += seconds;
    if (g_profiler.level >= 2) {
        OpTotals& s = g_profiler.by_shape[Profiler::describe(op, args.in)];
        s.calls += 1;
        s.seconds += seconds;
    }
}

}  // namespace mg
