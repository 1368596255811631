// nn/init.h: the initialisers the layers use, as in torch.nn.init, drawing from mg::Generator.
//
// Every function returns a fresh CPU tensor (modules move themselves with Module::to). The draws
// are counter-based (engine/random.h), so a seed gives the same weights on every machine.
#pragma once
#include <cmath>

#include "engine/ops.h"

namespace mg::nn::init {

// U(low, high), elementwise.
inline Tensor uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype = DType::Float32) {
    NoGradGuard no_grad;
    return rand(shape, gen, dtype) * (high - low) + low;
}

// N(mean, std^2), elementwise.
inline Tensor normal(const Shape& shape, double mean, double std, Generator& gen, DType dtype = DType::Float32) {
    NoGradGuard no_grad;
    Tensor z = randn(shape, gen, dtype);
    if (std == 1.0 && mean == 0.0) return z;
    return z * std + mean;
}

// torch.nn.init.kaiming_uniform_(w, a) for a weight whose fan_in is `fan_in`:
//   gain = sqrt(2 / (1 + a^2)),  bound = gain * sqrt(3 / fan_in).
// With a = sqrt(5) (torch's default for nn.Linear) gain = sqrt(1/3) and bound = 1/sqrt(fan_in).
inline Tensor kaiming_uniform(const Shape& shape, int64_t fan_in, double a, Generator& gen,
                              DType dtype = DType::Float32) {
    double gain = std::sqrt(2.0 / (1.0 + a * a));
    double bound = gain * std::sqrt(3.0 / (double)fan_in);
    return uniform(shape, -bound, bound, gen, dtype);
}

}  // namespace mg::nn::init
