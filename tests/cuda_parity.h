// tests/cuda_parity.h: the CUDA parity check. Every CUDA test is in the doctest test suite
// "cuda", which tests/main.cpp leaves out (with one line saying why) when no GPU is usable.
//
// check_cuda_parity(f, inputs) runs f on the CPU inputs and on copies of them on the GPU, and
// checks that the outputs agree (shape, dtype, values) and, for float inputs that require grad,
// that the gradients of L = sum_i sum(out_i * w_i) agree too (w_i fixed random weights, the same
// on both devices, so every output element matters with its own weight).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tests/helpers.h"

namespace mg::test {

using TensorFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

struct ParityTolerance {
    double rtol = 1e-5;
    double atol = 1e-6;
};

inline void check_cuda_parity(const std::string& what, const TensorFn& f, const std::vector<Tensor>& inputs,
                              ParityTolerance tol = {}) {
    INFO("parity: " << what);
    std::vector<Tensor> cpu_in, gpu_in;
    for (const Tensor& t : inputs) {
        Tensor c = t.detach().clone(), g = t.detach().to(Device::CUDA);
        if (t.requires_grad()) {
            c.set_requires_grad(true);
            g.set_requires_grad(true);
        }
        cpu_in.push_back(c);
        gpu_in.push_back(g);
    }
    std::vector<Tensor> cpu_out = f(cpu_in), gpu_out = f(gpu_in);
    REQUIRE(cpu_out.size() == gpu_out.size());
    Tensor cpu_loss, gpu_loss;
    for (size_t i = 0; i < cpu_out.size(); ++i) {
        INFO("output " << i << " shape " << shape_str(cpu_out[i].shape()));
        REQUIRE(gpu_out[i].device() == Device::CUDA);
        REQUIRE(gpu_out[i].shape() == cpu_out[i].shape());
        REQUIRE(gpu_out[i].dtype() == cpu_out[i].dtype());
        Tensor back = gpu_out[i].to(Device::CPU);
        CHECK(closeness(back, cpu_out[i], tol.rtol, tol.atol) <= 1.0);
        if (!cpu_out[i].requires_grad()) continue;
        Generator gen(1000 + i);
        Tensor w = randn(cpu_out[i].shape(), gen, cpu_out[i].dtype());
        Tensor lc = sum(cpu_out[i] * w), lg = sum(gpu_out[i] * w.to(Device::CUDA));
        cpu_loss = cpu_loss.defined() ? cpu_loss + lc : lc;
        gpu_loss = gpu_loss.defined() ? gpu_loss + lg : lg;
    }
    if (!cpu_loss.defined()) return;
    cpu_loss.backward();
    gpu_loss.backward();
    for (size_t i = 0; i < inputs.size(); ++i) {
        if (!inputs[i].requires_grad()) continue;
        INFO("gradient of input " << i);
        REQUIRE(cpu_in[i].grad().defined() == gpu_in[i].grad().defined());
        if (!cpu_in[i].grad().defined()) continue;
        CHECK(closeness(gpu_in[i].grad().to(Device::CPU), cpu_in[i].grad(), tol.rtol, tol.atol) <= 1.0);
    }
}

// Random float32 input that requires grad, on the CPU (the parity check copies it to the GPU).
inline Tensor randn_input(const Shape& shape, uint64_t seed, DType dtype = DType::Float32) {
    Generator gen(seed);
    Tensor t = randn(shape, gen, dtype);
    t.set_requires_grad(true);
    return t;
}

}  // namespace mg::test
