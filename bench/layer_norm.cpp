// bench/layer_norm.cpp: layer_norm on a (2048, 256) float32 input, the shape of the level-3 MoE
// language model's activations (batch 16 x 128 tokens, d_model 256), forward and backward, the
// previous way against the current one, on 1 and 2 threads:
//   forward   previous: the kernel's earlier loop, copied below: per row two running double
//                       sums (mean, squared deviations), each a chain of dependent additions
//             current:  layer_norm's kernel (engine/cpu/kernels_nn.cpp): the same sums in sixteen
//                       double lanes, which the compiler turns into AVX instructions
//   backward  previous: layer_norm_backward_reference, the formula in engine ops (~12 passes)
//             current:  layer_norm_backward, one fused kernel (one pass per row, dw and db summed
//                       over fixed blocks of rows)
// Each figure is the median over 7 runs of the mean time per call over >= 0.1 s of calls (wall
// clock). The math: docs/nn/transformer.md.
//
//   build/bench/layer_norm [--quick]        (--quick: 3 runs)
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "bench/common.h"
#include "engine/autograd.h"
#include "engine/ops.h"

using namespace mg;

namespace {
// The layer_norm kernel's loop before the sixteen lanes (float32 in, sums in one running double each).
void previous_layer_norm_forward(const float* px, const float* pw, const float* pb, float* py, float* pmean,
                                 float* prstd, int64_t rows, int64_t D, double eps) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const float* row = px + r * D;
        double sum = 0;
        for (int64_t d = 0; d < D; ++d) sum += row[d];
        const double mean = sum / (double)D;
        double squares = 0;
        for (int64_t d = 0; d < D; ++d) {
            const double dev = (double)row[d] - mean;
            squares += dev * dev;
        }
        const double rstd = 1.0 / std::sqrt(squares / (double)D + eps);
        for (int64_t d = 0; d < D; ++d)
            py[r * D + d] = (float)(((double)row[d] - mean) * rstd * (double)pw[d] + (double)pb[d]);
        pmean[r] = (float)mean;
        prstd[r] = (float)rstd;
    }
}

double median_ms(const std::function<void()>& fn, int runs) {
    std::vector<double> times;
    for (int i = 0; i < runs; ++i) times.push_back(1e3 * bench::seconds_per_call(fn, 0.1));
    return bench::median(times);
}
}  // namespace

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int runs = quick ? 3 : 7;
    const int64_t rows = 2048, D = 256;
    Generator gen(5);
    Tensor x = randn({rows, D}, gen), w = randn({D}, gen), b = randn({D}, gen), g = randn({rows, D}, gen);
    // mean and rstd as the forward computes them, for the two backward versions.
    Tensor x64 = x.to(DType::Float64);
    Tensor mu = mean(x64, -1, true);
    Tensor rstd = 1.0 / sqrt(mean((x64 - mu) * (x64 - mu), -1, true) + 1e-5);
    mu = mu.to(DType::Float32);
    rstd = rstd.to(DType::Float32);
    Tensor y = Tensor::empty({rows, D}), mean_out = Tensor::empty({rows}), rstd_out = Tensor::empty({rows});

    // The two forwards agree (to float32 rounding), and so do the two backwards.
    NoGradGuard no_grad;
    previous_layer_norm_forward(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(), y.data_ptr<float>(),
                                mean_out.data_ptr<float>(), rstd_out.data_ptr<float>(), rows, D, 1e-5);
    const double forward_gap = max(abs(y - layer_norm(x, w, b))).item();
    LayerNormGrads fused = layer_norm_backward(x, w, mu, rstd, g);
    LayerNormGrads ref = layer_norm_backward_reference(x, w, mu, rstd, g);
    const double backward_gap = max(abs(fused.x - ref.x)).item();
    std::printf("layer_norm, float32 (%lld, %lld); max |current - previous|: forward %.2g, backward dx %.2g\n",
                (long long)rows, (long long)D, forward_gap, backward_gap);
    std::printf("median of %d runs, ms per call\n", runs);
    std::printf("%8s  %-9s %12s %12s %8s\n", "threads", "pass", "previous", "current", "speedup");

    const int max_threads = omp_get_max_threads();
    for (int threads : {1, 2}) {
        omp_set_num_threads(threads);
        const double fwd_prev = median_ms(
            [&] {
                previous_layer_norm_forward(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                                            y.data_ptr<float>(), mean_out.data_ptr<float>(),
                                            rstd_out.data_ptr<float>(), rows, D, 1e-5);
            },
            runs);
        const double fwd_cur = median_ms([&] { layer_norm(x, w, b); }, runs);
        const double bwd_prev = median_ms([&] { layer_norm_backward_reference(x, w, mu, rstd, g); }, runs);
        const double bwd_cur = median_ms([&] { layer_norm_backward(x, w, mu, rstd, g); }, runs);
        std::printf("%8d  %-9s %12.3f %12.3f %7.1fx\n", threads, "forward", fwd_prev, fwd_cur, fwd_prev / fwd_cur);
        std::printf("%8d  %-9s %12.3f %12.3f %7.1fx\n", threads, "backward", bwd_prev, bwd_cur, bwd_prev / bwd_cur);
        std::fflush(stdout);
    }
    omp_set_num_threads(max_threads);
    return 0;
}
