// nn/moe_internal.h: small helpers that nn/moe.cpp and nn/router.cpp share (not a public header).
#pragma once
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/ops.h"
#include "engine/random.h"

namespace mg::nn::detail {

// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch.nn.Linear's default for both weight and bias.
inline Tensor kaiming_uniform(const Shape& shape, int64_t fan_in, DType dtype, Generator& gen) {
    const double bound = 1.0 / std::sqrt((double)fan_in);
    return (rand(shape, gen, dtype) * 2.0 - 1.0) * bound;
}

inline void require_float_dtype(DType dtype, const char* who) {
    if (dtype != DType::Float32 && dtype != DType::Float64)
        throw std::invalid_argument(std::string(who) + ": parameters must be float32 or float64, got " + dtype_name(dtype));
}

// x must be (T, width) of `dtype`.
inline void check_tokens(const Tensor& x, int64_t width, DType dtype, const char* who) {
    if (x.dim() != 2 || x.size(1) != width)
        throw std::invalid_argument(std::string(who) + ": expected input of shape (tokens, " + std::to_string(width) +
                                    "), got " + shape_str(x.shape()));
    if (x.dtype() != dtype)
        throw std::invalid_argument(std::string(who) + ": input is " + dtype_name(x.dtype()) + " but parameters are " +
                                    dtype_name(dtype));
}

}  // namespace mg::nn::detail
