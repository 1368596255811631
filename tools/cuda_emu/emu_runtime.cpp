// cuda_emu/emu_runtime.cpp: the emulated device (see include/cuda_runtime.h).
#include <cuda_runtime.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <vector>

thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {
cudaError_t g_last_error = cudaSuccess;
int g_order = 0;  // 0 forward, 1 reverse, 2 random
std::mt19937 g_rng(12345);
int g_reports = 0;
void report(const std::string& what) {
    if (g_reports++ < 50) std::fprintf(stderr, "[cuda_emu] %s\n", what.c_str());
    if (std::getenv("EMU_ABORT")) std::abort();
}
struct Init {
    Init() {
        const char* o = std::getenv("EMU_ORDER");
        if (o && std::string(o) == "reverse") g_order = 1;
        if (o && std::string(o) == "random") g_order = 2;
    }
} g_init;

// A context switch without a system call (swapcontext also saves the signal mask: a syscall per
// switch, far too slow for millions of CUDA threads): save the callee-saved registers, MXCSR and
// the x87 control word on this stack, store the stack pointer, load the other one, restore.
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch, .-emu_switch
)");

enum State { kReady, kBlockWait, kWarpWait, kDone };
constexpr size_t kStack = 256 * 1024;
struct Fiber {
    void* sp = nullptr;
    char* stack = nullptr;
    State state = kReady;
    dim3 tid;
    int linear = 0;
    // the pending warp exchange
    const void* mine = nullptr;
    void* theirs = nullptr;
    size_t bytes = 0;
    int kind = 0, arg = 0, width = 32, parity = 0;
    const char* file = "";
    int line = 0;
};
std::vector<Fiber> g_fibers;
void* g_sched_sp = nullptr;
Fiber* g_current = nullptr;
const std::function<void()>* g_body = nullptr;
struct Slots {
    unsigned char v[2][32][16];
    unsigned present[2] = {0, 0};  // the lanes that took part in the exchange of each parity
    int gen = 0;
};
std::vector<Slots> g_warps;

[[noreturn]] void fiber_entry() {
    (*g_body)();
    g_current->state = kDone;
    void* dead;
    emu_switch(&dead, g_sched_sp);
    std::abort();
}
void yield_to_scheduler() { emu_switch(&g_current->sp, g_sched_sp); }
void resume(Fiber& f) {
    g_current = &f;
    threadIdx = f.tid;
    emu_switch(&g_sched_sp, f.sp);
}
// A fresh stack whose first switch "returns" into fiber_entry.
void* initial_sp(char* stack) {
    uint64_t* top = (uint64_t*)((uintptr_t)(stack + kStack) & ~(uintptr_t)15);
    *--top = 0;                            // (alignment; fiber_entry never returns)
    *--top = (uint64_t)(void*)fiber_entry;  // at a 16-byte boundary: the ret lands as after a call
    for (int r = 0; r < 6; ++r) *--top = 0;  // rbp rbx r12 r13 r14 r15
    *--top = 0x1F80ull | (0x037Full << 32);  // MXCSR, x87 control word
    return top;
}
std::string where(const char* file, int line) { return std::string(file) + ":" + std::to_string(line); }
}  // namespace

namespace emu {
int lane_id() { return g_current->linear % 32; }

void syncthreads(const char* file, int line) {
    g_current->state = kBlockWait;
    g_current->file = file;
    g_current->line = line;
    yield_to_scheduler();
}

void warp_exchange(const void* mine, void* theirs, size_t bytes, int kind, int arg, int width, const char* file, int line) {
    Fiber& f = *g_current;
    const int w = f.linear / 32, lane = f.linear % 32;
    f.parity = g_warps[w].gen & 1;
    if (bytes) std::memcpy(g_warps[w].v[f.parity][lane], mine, bytes);
    f.mine = mine, f.theirs = theirs, f.bytes = bytes, f.kind = kind, f.arg = arg, f.width = width;
    f.file = file, f.line = line;
    f.state = kWarpWait;
    yield_to_scheduler();
    if (!bytes) return;
    int src = lane;
    if (kind == 0) src = arg % 32;
    else if (kind == 1) src = lane ^ arg;
    else if (kind == 2) src = lane + arg < 32 ? lane + arg : lane;
    else if (kind == 3) src = lane - arg >= 0 ? lane - arg : lane;
    const int base = f.linear - lane;
    (void)base;
    if (src < 0 || src >= 32 || !(g_warps[w].present[f.parity] >> src & 1)) {
        report("shuffle at " + where(file, line) + ": lane " + std::to_string(lane) + " reads lane " +
               std::to_string(src) + " which does not take part (exited or beyond the block)");
        src = lane;
    }
    std::memcpy(theirs, g_warps[w].v[f.parity][src], bytes);
}

void run_grid(const Cfg& c, const std::function<void()>& body) {
    static std::mutex launch_mutex;
    std::lock_guard<std::mutex> lock(launch_mutex);
    const long long nthreads = (long long)c.block.x * c.block.y * c.block.z;
    if (nthreads <= 0 || nthreads > 1024 || c.block.z > 64 || c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 ||
        c.grid.y > 65535 || c.grid.z > 65535 || c.grid.x > 2147483647u || c.smem > 48 * 1024) {
        report("invalid launch configuration: grid (" + std::to_string(c.grid.x) + "," + std::to_string(c.grid.y) +
               "," + std::to_string(c.grid.z) + ") block (" + std::to_string(c.block.x) + "," +
               std::to_string(c.block.y) + "," + std::to_string(c.block.z) + ")");
        g_last_error = cudaErrorInvalidConfiguration;
        return;
    }
    gridDim = c.grid;
    blockDim = c.block;
    g_body = &body;
    const int n = (int)nthreads, warps = (n + 31) / 32;
    if ((int)g_fibers.size() < n) {
        const size_t old = g_fibers.size();
        g_fibers.resize(n);
        for (size_t i = old; i < (size_t)n; ++i) {
            void* s = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (s == MAP_FAILED) std::abort();
            g_fibers[i].stack = (char*)s;
        }
    }
    g_warps.assign(warps, Slots{});
    std::vector<Fiber*> fibers(n);
    for (int i = 0; i < n; ++i) fibers[i] = &g_fibers[i];
    const long long blocks = (long long)c.grid.x * c.grid.y * c.grid.z;
    std::vector<int> order(n);
    std::vector<long long> block_order(blocks);
    for (long long bi = 0; bi < blocks; ++bi) block_order[bi] = g_order == 1 ? blocks - 1 - bi : bi;
    if (g_order == 2) std::shuffle(block_order.begin(), block_order.end(), g_rng);
    for (long long bi = 0; bi < blocks; ++bi) {
        const long long b = block_order[bi];
        blockIdx = dim3((unsigned)(b % c.grid.x), (unsigned)(b / c.grid.x % c.grid.y), (unsigned)(b / ((long long)c.grid.x * c.grid.y)));
        for (int i = 0; i < n; ++i) {
            Fiber& f = *fibers[i];
            f.linear = i;
            f.tid = dim3(i % c.block.x, i / c.block.x % c.block.y, i / (c.block.x * c.block.y));
            f.state = kReady;
            f.sp = initial_sp(f.stack);
        }
        for (auto& w : g_warps) w.gen = 0;
        for (;;) {
            for (int i = 0; i < n; ++i) order[i] = g_order == 1 ? n - 1 - i : i;
            if (g_order == 2) std::shuffle(order.begin(), order.end(), g_rng);
            bool ran = false;
            for (int i : order)
                if (fibers[i]->state == kReady) resume(*fibers[i]), ran = true;
            if (ran) continue;
            // everyone waits or is done: open the warp exchanges whose live lanes all arrived
            bool released = false;
            for (int w = 0; w < warps; ++w) {
                const int lo = w * 32, hi = std::min(n, lo + 32);
                int waiting = 0, done = 0, at_block = 0;
                for (int i = lo; i < hi; ++i) {
                    waiting += fibers[i]->state == kWarpWait;
                    done += fibers[i]->state == kDone;
                    at_block += fibers[i]->state == kBlockWait;
                }
                if (!waiting) continue;
                if (at_block) continue;  // decided below (deadlock) if nothing else moves
                const Fiber* first = nullptr;
                for (int i = lo; i < hi; ++i)
                    if (fibers[i]->state == kWarpWait) {
                        if (!first) first = fibers[i];
                        else if (first->line != fibers[i]->line || first->file != fibers[i]->file || first->kind != fibers[i]->kind)
                            report("warp " + std::to_string(w) + ": lanes in different shuffles (" + where(first->file, first->line) +
                                   " and " + where(fibers[i]->file, fibers[i]->line) + ")");
                    }
                if (done || hi - lo < 32)
                    report("full-mask shuffle at " + where(first->file, first->line) + " with " + std::to_string(32 - waiting) +
                           " of 32 lanes absent (exited or beyond the block; undefined on a GPU)");
                unsigned present = 0;
                for (int i = lo; i < hi; ++i)
                    if (fibers[i]->state == kWarpWait) fibers[i]->state = kReady, present |= 1u << (i - lo);
                g_warps[w].present[g_warps[w].gen & 1] = present;
                g_warps[w].gen++;
                released = true;
            }
            if (released) continue;
            int live = 0, at_block = 0;
            const Fiber* first = nullptr;
            for (int i = 0; i < n; ++i) {
                live += fibers[i]->state != kDone;
                if (fibers[i]->state == kBlockWait) {
                    ++at_block;
                    if (!first) first = fibers[i];
                }
            }
            if (live == 0) break;
            if (at_block != live) {
                report("DEADLOCK in block " + std::to_string(b) + ": " + std::to_string(at_block) + " threads at __syncthreads (" +
                       where(first ? first->file : "?", first ? first->line : 0) + "), " + std::to_string(live - at_block) +
                       " in a warp shuffle with lanes elsewhere");
                std::abort();
            }
            if (at_block != n)
                report("__syncthreads at " + where(first->file, first->line) + " reached by " + std::to_string(at_block) + " of " +
                       std::to_string(n) + " threads (the others exited: undefined on a GPU, may hang)");
            for (int i = 0; i < n; ++i)
                if (fibers[i]->state == kBlockWait) {
                    if (fibers[i]->line != first->line || fibers[i]->file != first->file)
                        report("threads of one block at different __syncthreads: " + where(first->file, first->line) + " and " +
                               where(fibers[i]->file, fibers[i]->line));
                    fibers[i]->state = kReady;
                }
        }
    }
}
}  // namespace emu

// ---- runtime API ------------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) { *count = 1; return cudaSuccess; }
cudaError_t cudaGetDevice(int* device) { *device = 0; return cudaSuccess; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
    *prop = cudaDeviceProp{};
    std::snprintf(prop->name, sizeof prop->name, "cuda_emu (CPU emulation of the CUDA thread model)");
    prop->multiProcessorCount = 132;
    prop->major = 9;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
    *value = attr == cudaDevAttrMultiProcessorCount ? 132 : 0;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
    // poison new memory with NaN-ish bytes so that reading what was never written shows up
    *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!*p) return cudaErrorMemoryAllocation;
    std::memset(*p, 0xff, bytes);
    return cudaSuccess;
}
cudaError_t cudaFree(void* p) { std::free(p); return cudaSuccess; }
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaHostGetDevicePointer(void** device, void* host, unsigned) { *device = host; return cudaSuccess; }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) { std::memmove(dst, src, bytes); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t) { return cudaMemcpy(dst, src, bytes, k); }
cudaError_t cudaMemset(void* p, int value, size_t bytes) { std::memset(p, value, bytes); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }
// Launches and copies are synchronous here, so every event has completed when it is queried.
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { *e = reinterpret_cast<cudaEvent_t>(new char); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete reinterpret_cast<char*>(e); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() { cudaError_t e = g_last_error; g_last_error = cudaSuccess; return e; }
cudaError_t cudaPeekAtLastError() { return g_last_error; }
const char* cudaGetErrorString(cudaError_t err) {
    switch (err) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorMemoryAllocation: return "out of memory";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        default: return "unknown error";
    }
}
