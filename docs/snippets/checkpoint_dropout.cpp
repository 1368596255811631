// docs/nn/hierarchical_moe.md, "Activation checkpointing": a block with dropout, run plainly and
// checkpointed. The checkpointed forward keeps no activations of the block; its backward runs the
// block again with the generator rewound, so the mask and every gradient are bit for bit the same.
#include <cstdio>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "docs/snippets/expect.h"

using namespace mg;

int main() {
    Generator init(1);
    Tensor W1 = randn({8, 16}, init, DType::Float64), W2 = randn({16, 8}, init, DType::Float64);
    W1.set_requires_grad(true);
    W2.set_requires_grad(true);
    Tensor x = randn({5, 8}, init, DType::Float64);

    // The block: x + dropout(gelu(x W1)) W2, drawing its mask from `gen`.
    Generator gen(42);
    auto block = [&](const std::vector<Tensor>& in) {
        return in[0] + matmul(dropout(gelu(matmul(in[0], W1)), 0.5, /*training=*/true, gen), W2);
    };

    // 1. Plain: every activation of the block stays alive until backward.
    sum(block({x})).backward();
    std::vector<double> g1_plain = W1.grad().to_vector<double>(), g2_plain = W2.grad().to_vector<double>();
    Generator::State after_plain = gen.state();

    // 2. Checkpointed, from the same generator state: W1 and W2 are declared as params (the block
    //    uses them without taking them as inputs), gen as a generator to replay.
    W1.zero_grad();
    W2.zero_grad();
    gen = Generator(42);
    Tensor y = checkpoint(block, {x}, {W1, W2}, {&gen});
    EXPECT(std::string(y.grad_fn()->name) == "checkpoint");  // one node; nothing inside was recorded
    sum(y).backward();                                        // runs the block again, then its backward
    EXPECT(W1.grad().to_vector<double>() == g1_plain);        // bitwise
    EXPECT(W2.grad().to_vector<double>() == g2_plain);
    // The recomputation rewound gen and put it back: the next block draws what it would have.
    EXPECT(gen.state().offset == after_plain.offset);
    std::printf("checkpointed gradients equal the plain ones bit for bit; generator offset %llu\n",
                (unsigned long long)gen.state().offset);
    return 0;
}
