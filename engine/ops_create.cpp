// ops_create.cpp: random tensors. Every draw takes a range of Philox counters from a Generator
// (engine/random.h), so the same seed gives the same numbers on every device and thread count.
#include <cmath>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

namespace {
Tensor random_tensor(OpId op, const Shape& shape, Generator& gen, DType dtype, Device device) {
    if (!is_floating(dtype))
        throw std::invalid_argument(std::string(op_name(op)) + ": dtype must be float32 or float64, got " + dtype_name(dtype));
    Tensor out = make_tensor(shape, dtype, device);
    Attrs attrs;
    attrs.seed = gen.seed();
    attrs.offset = gen.reserve((uint64_t)out.numel());
    run_kernel(op, {}, {out}, attrs);
    return out;
}
}  // namespace

Tensor rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
    return random_tensor(OpId::rand_uniform, shape, gen, dtype, device);
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
    return random_tensor(OpId::rand_normal, shape, gen, dtype, device);
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen, Device device) {
    if (high <= low)
        throw std::invalid_argument("randint: empty range [" + std::to_string(low) + ", " + std::to_string(high) + ")");
    // low + floor(u * (high - low)) with u in (0, 1) uniform in double precision; the product
    // is non-negative, so converting it to an integer (truncation) is the floor.
    Tensor u = rand(shape, gen, DType::Float64, device);
    return copy(u * (double)(high - low), DType::Int64) + (double)low;
}

// ---- host-side draws -----------------------------------------------------------------------------
double Generator::normal() {
    uint64_t block = reserve(4);
    return philox_normal(seed_, block, 0);
}

int64_t Generator::randint(int64_t low, int64_t high) {
    if (high <= low)
        throw std::invalid_argument("Generator::randint: empty range [" + std::to_string(low) + ", " +
                                    std::to_string(high) + ")");
    // 64 random bits, reduced by multiply-shift (no modulo bias worth speaking of for our ranges).
    Philox4 b = philox4x32(reserve(4), seed_);
    uint64_t bits = ((uint64_t)b.v[0] << 32) | b.v[1];
    unsigned __int128 range = (unsigned __int128)(uint64_t)(high - low);
    return low + (int64_t)(((unsigned __int128)bits * range) >> 64);
}

}  // namespace mg
