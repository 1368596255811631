// bench/gpu_gemm.cu: our CUDA SGEMM versions (engine/cuda/gemm.cu) against cuBLAS, row-major
// float32 C = A @ B, on square sizes 256..4096 and on the MoE layer's shapes.
//
// cuBLAS is the yardstick only (the engine never links it), run with CUBLAS_DEFAULT_MATH: plain
// fp32 FMA, no TF32 tensor cores, so both sides do the same arithmetic. Every version's result is
// checked against cuBLAS's before it is timed (llm.c dev/cuda style), and the program exits 1 if
// one is wrong.
//
// Timing: after two warm-up calls, each sample runs the GEMM back to back for about 20 ms between
// two cudaEvents on the default stream (so launch gaps of tiny problems are amortised); we report
// the median GFLOP/s over the samples (--samples N, default 7; --quick: 3 samples, no 4096 v1).
//
//   ./build/bench/gpu_gemm [--quick] [--samples N]
//
// Output: one table row per shape with GFLOP/s of v1..v5, of the automatic choice (its version in
// brackets) and of cuBLAS, and auto/cuBLAS; then the 4096^3 line the issue's target is about
// (ours >= 0.6x cuBLAS). Without a usable GPU it prints one line saying so and exits 0.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/cuda/gemm.h"

namespace {

using mg::cuda::GemmArgs;
using mg::cuda::SgemmVersion;

void cuda_ok(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return;
    std::fprintf(stderr, "gpu_gemm: %s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
}
void cublas_ok(cublasStatus_t status, const char* what) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    std::fprintf(stderr, "gpu_gemm: %s failed (cuBLAS status %d)\n", what, (int)status);
    std::exit(1);
}

struct Problem {
    const char* name;
    int64_t batch, M, N, K;  // batch products of (M x K) @ (K x N)
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median seconds per call of fn (which queues GPU work on stream 0), timed with cudaEvents.
template <typename Fn> double time_call(Fn&& fn, int samples) {
    cudaEvent_t start, stop;
    cuda_ok(cudaEventCreate(&start), "cudaEventCreate");
    cuda_ok(cudaEventCreate(&stop), "cudaEventCreate");
    auto run = [&](int calls) {
        cuda_ok(cudaEventRecord(start, 0), "cudaEventRecord");
        for (int i = 0; i < calls; ++i) fn();
        cuda_ok(cudaEventRecord(stop, 0), "cudaEventRecord");
        cuda_ok(cudaEventSynchronize(stop), "cudaEventSynchronize");
        float ms = 0;
        cuda_ok(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        return ms / 1e3 / calls;
    };
    run(1);  // warm-up (first launch of each kernel loads its code)
    const double estimate = run(1);
    const int calls = (int)std::clamp(0.02 / std::max(estimate, 1e-7), 1.0, 10000.0);
    std::vector<double> seconds;
    for (int s = 0; s < samples; ++s) seconds.push_back(run(calls));
    cuda_ok(cudaEventDestroy(start), "cudaEventDestroy");
    cuda_ok(cudaEventDestroy(stop), "cudaEventDestroy");
    return median(seconds);
}

// Largest |got - want| relative to the largest |want|: ~1e-6 when right, ~1 when wrong.
double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
    double worst = 0, scale = 1e-30;
    for (size_t i = 0; i < want.size(); ++i) {
        worst = std::max(worst, (double)std::abs(got[i] - want[i]));
        scale = std::max(scale, (double)std::abs(want[i]));
    }
    return worst / scale;
}

struct Row {
    double version_gflops[mg::cuda::kSgemmVersions] = {};  // 0: not run
    double auto_gflops = 0, cublas_gflops = 0;
    SgemmVersion picked = SgemmVersion::naive;
};

bool g_all_correct = true;

Row measure(cublasHandle_t handle, const Problem& p, int samples, bool quick) {
    const int64_t a_size = p.batch * p.M * p.K, b_size = p.batch * p.K * p.N, c_size = p.batch * p.M * p.N;
    std::vector<float> host_a(a_size), host_b(b_size);
    std::mt19937 gen(42);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    for (float& x : host_a) x = uniform(gen);
    for (float& x : host_b) x = uniform(gen);
    float *A, *B, *C;
    cuda_ok(cudaMalloc(&A, a_size * sizeof(float)), "cudaMalloc");
    cuda_ok(cudaMalloc(&B, b_size * sizeof(float)), "cudaMalloc");
    cuda_ok(cudaMalloc(&C, c_size * sizeof(float)), "cudaMalloc");
    cuda_ok(cudaMemcpy(A, host_a.data(), a_size * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda_ok(cudaMemcpy(B, host_b.data(), b_size * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    const double flops = 2.0 * (double)p.batch * (double)p.M * (double)p.N * (double)p.K;

    // cuBLAS is column-major: row-major C = A B is column-major C^T = B^T A^T, i.e. the same
    // memory with the operands swapped: (N x K) @ (K x M), leading dimensions N, K, N.
    const float one = 1.0f, zero = 0.0f;
    auto cublas = [&] {
        cublas_ok(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, (int)p.N, (int)p.M, (int)p.K, &one, B,
                                            (int)p.N, p.K * p.N, A, (int)p.K, p.M * p.K, &zero, C, (int)p.N, p.M * p.N,
                                            (int)p.batch),
                  "cublasSgemmStridedBatched");
    };
    Row row;
    cublas();
    std::vector<float> want(c_size), got(c_size);
    cuda_ok(cudaMemcpy(want.data(), C, c_size * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
    row.cublas_gflops = flops / time_call(cublas, samples) / 1e9;

    GemmArgs<float> args{p.M, p.N, p.K, 1.0f, A, p.K, 1, B, p.N, 1, 0.0f, C, p.N, 1,
                         mg::cuda::strided_batch(p.batch, p.M * p.K, p.K * p.N, p.M * p.N)};
    auto clear_c = [&] { cuda_ok(cudaMemset(C, 0, c_size * sizeof(float)), "cudaMemset"); };
    auto verify = [&](const char* what) {
        cuda_ok(cudaMemcpy(got.data(), C, c_size * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
        const double err = relative_error(got, want);
        if (err > 1e-4) {  // fp32 sums of K <= 4096 terms of size <= 1 agree to ~1e-6 relative
            std::printf("  ✗ %s on %s: relative error %.3g against cuBLAS\n", what, p.name, err);
            g_all_correct = false;
        }
    };
    for (int v = 1; v <= mg::cuda::kSgemmVersions; ++v) {
        const SgemmVersion version = (SgemmVersion)v;
        if (version == SgemmVersion::naive && quick && flops > 2e10) continue;  // ~seconds at naive speed
        if (!mg::cuda::sgemm_version_supports(version, args)) continue;
        clear_c();
        mg::cuda::sgemm_run_version(version, args);
        verify(mg::cuda::sgemm_version_name(version));
        row.version_gflops[v - 1] = flops / time_call([&] { mg::cuda::sgemm_run_version(version, args); }, samples) / 1e9;
    }
    row.picked = mg::cuda::sgemm_pick_version(args);
    clear_c();
    mg::cuda::sgemm_batched(args);
    verify("sgemm_batched (auto)");
    row.auto_gflops = flops / time_call([&] { mg::cuda::sgemm_batched(args); }, samples) / 1e9;
    cuda_ok(cudaFree(A), "cudaFree");
    cuda_ok(cudaFree(B), "cudaFree");
    cuda_ok(cudaFree(C), "cudaFree");
    return row;
}

}  // namespace

int main(int argc, char** argv) {
    bool quick = false;
    int samples = 7;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--quick")) {
            quick = true;
            samples = 3;
        } else if (!std::strcmp(argv[i], "--samples") && i + 1 < argc) {
            samples = std::max(1, std::atoi(argv[++i]));
        } else {
            std::fprintf(stderr, "usage: %s [--quick] [--samples N]\n", argv[0]);
            return 2;
        }
    }
    int devices = 0;
    const cudaError_t err = cudaGetDeviceCount(&devices);
    if (err != cudaSuccess || devices == 0) {
        std::printf("gpu_gemm: skipped, no usable GPU (%s)\n",
                    err != cudaSuccess ? cudaGetErrorString(err) : "cudaGetDeviceCount returned 0");
        return 0;
    }
    cudaDeviceProp prop{};
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    cublasHandle_t handle;
    cublas_ok(cublasCreate(&handle), "cublasCreate");
    cublas_ok(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    int cublas_version = 0;
    cublas_ok(cublasGetVersion(handle, &cublas_version), "cublasGetVersion");
    std::printf("gpu_gemm: %s, %d SMs, cuBLAS %d with CUBLAS_DEFAULT_MATH (fp32, no TF32); median of %d samples\n",
                prop.name, prop.multiProcessorCount, cublas_version, samples);

    // MoE shapes: an expert's up projection (tokens x 256) @ (256 x 1024) and down projection
    // (tokens x 1024) @ (1024 x 256); 1000 tokens is not a multiple of any tile (edge blocks);
    // "8 experts" is one batched call over 8 groups of 512 tokens.
    const Problem problems[] = {
        {"256^3", 1, 256, 256, 256},           {"512^3", 1, 512, 512, 512},
        {"1024^3", 1, 1024, 1024, 1024},       {"2048^3", 1, 2048, 2048, 2048},
        {"4096^3", 1, 4096, 4096, 4096},       {"moe up 4096x256x1024", 1, 4096, 1024, 256},
        {"moe down 4096x1024x256", 1, 4096, 256, 1024}, {"moe up 1000x256x1024", 1, 1000, 1024, 256},
        {"moe 8 experts 512x256x1024", 8, 512, 1024, 256},
    };
    std::printf("\n%-28s %8s %8s %8s %8s %8s %13s %8s %11s\n", "GFLOP/s  (M x K x N)", "v1", "v2", "v3", "v4", "v5",
                "auto", "cuBLAS", "auto/cuBLAS");
    double ratio_4096 = 0, ours_4096 = 0, cublas_4096 = 0;
    SgemmVersion picked_4096 = SgemmVersion::naive;
    for (const Problem& p : problems) {
        const Row row = measure(handle, p, samples, quick);
        std::printf("%-28s", p.name);
        for (double g : row.version_gflops) {
            if (g > 0) std::printf(" %8.0f", g);
            else std::printf(" %8s", "-");
        }
        char auto_cell[32];
        std::snprintf(auto_cell, sizeof auto_cell, "%.0f (v%d)", row.auto_gflops, (int)row.picked);
        const double ratio = row.auto_gflops / row.cublas_gflops;
        std::printf(" %13s %8.0f %10.2fx\n", auto_cell, row.cublas_gflops, ratio);
        if (std::string(p.name) == "4096^3") {
            ratio_4096 = ratio;
            ours_4096 = row.auto_gflops;
            cublas_4096 = row.cublas_gflops;
            picked_4096 = row.picked;
        }
    }
    std::printf("\n4096^3 fp32: ours (auto = %s) %.0f GFLOP/s, cuBLAS %.0f GFLOP/s: %.2fx cuBLAS (target >= 0.6x: %s)\n",
                mg::cuda::sgemm_version_name(picked_4096), ours_4096, cublas_4096, ratio_4096,
                ratio_4096 >= 0.6 ? "met" : "NOT met");
    cublas_ok(cublasDestroy(handle), "cublasDestroy");
    if (!g_all_correct) {
        std::printf("✗ some results differ from cuBLAS (see above)\n");
        return 1;
    }
    std::printf("✓ every version's result matches cuBLAS (relative error <= 1e-4)\n");
    return 0;
}
