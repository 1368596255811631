// docs/engine/random.md: counter-based random numbers. Every value is a pure function of
// (seed, counter), so a draw can be split, replayed or computed on any device in any order.
#include <cmath>
#include <cstdio>

#include "engine/ops.h"
#include "engine/random.h"
#include "docs/snippets/expect.h"

using namespace mg;

int main() {
    // 1. Philox is a function: the same (counter, key) always gives the same 4 x 32 bits.
    Philox4 b1 = philox4x32(/*block=*/7, /*seed=*/42), b2 = philox4x32(7, 42), b3 = philox4x32(8, 42);
    EXPECT(b1.v[0] == b2.v[0] && b1.v[3] == b2.v[3]);
    EXPECT(b1.v[0] != b3.v[0]);

    // 2. A Generator is just (seed, offset). Each draw reserves ceil(n / 4) blocks.
    Generator gen(42);
    Tensor u = rand({10}, gen, DType::Float64);  // blocks 0, 1, 2 (the last one half used)
    EXPECT(gen.offset() == 3);
    Tensor n = randn({8}, gen, DType::Float64);   // blocks 3, 4
    EXPECT(gen.offset() == 5);

    // 3. Element i of a draw starting at block `offset` is lane i % 4 of block offset + i / 4:
    //    any thread (or CUDA block) can compute it alone.
    std::vector<double> uv = u.to_vector<double>();
    for (uint64_t i = 0; i < 10; ++i) EXPECT(uv[i] == uniform_open(philox_bits(42, 0, i)));

    // 4. Normals: Box-Muller on the pairs (lane 0, lane 1) and (lane 2, lane 3) of a block:
    //    r = sqrt(-2 ln u1), theta = 2 pi u2 gives r cos(theta) and r sin(theta).
    std::vector<double> nv = n.to_vector<double>();
    Philox4 block = philox4x32(3, 42);
    double u1 = uniform_open(block.v[0]), u2 = uniform_open(block.v[1]);
    double r = std::sqrt(-2 * std::log(u1)), theta = 2 * M_PI * u2;
    EXPECT(std::abs(nv[0] - r * std::cos(theta)) < 1e-15);
    EXPECT(std::abs(nv[1] - r * std::sin(theta)) < 1e-15);

    // 5. Replaying: save the state, draw, restore, draw again: the same numbers, bit for bit.
    //    This is how dropout's mask is replayed (gradient checkpointing re-runs the forward).
    Tensor x = Tensor::ones({4, 6}, DType::Float64);
    Generator::State saved = gen.state();
    Tensor first = dropout(x, 0.5, /*training=*/true, gen);
    gen.set_state(saved);
    Tensor again = dropout(x, 0.5, /*training=*/true, gen);
    EXPECT(first.to_vector<double>() == again.to_vector<double>());
    for (double v : first.to_vector<double>()) EXPECT(v == 0.0 || v == 2.0);  // kept ones are scaled by 1/(1-p)

    // 6. Same seed, same numbers; another seed, other numbers.
    Generator g1(7), g2(7), g3(8);
    EXPECT(randn({5}, g1).to_vector<float>() == randn({5}, g2).to_vector<float>());
    EXPECT(randn({5}, g1).to_vector<float>() != randn({5}, g3).to_vector<float>());

    std::printf("u[0..3] = %.6f %.6f %.6f %.6f, gen offset now %llu\n", uv[0], uv[1], uv[2], uv[3],
                (unsigned long long)gen.offset());
    return 0;
}
