// Finite-difference gradient checks (float64) for the neural-network and sorting ops: softmax,
// log_softmax, cross_entropy, layer_norm, embedding, dropout (engine/ops_nn.cpp) and topk
// (engine/ops_sort.cpp). Integer arguments (targets, ids) are captured by the lambdas; only the
// float inputs are perturbed.
#include "tests/helpers.h"

using namespace mg;
using mg::test::rand_input;
using Inputs = std::vector<Tensor>;

namespace {
Tensor i64(const std::vector<int64_t>& v, const Shape& shape) { return Tensor::from_vector(v, shape); }
}  // namespace

GRADCHECK(softmax, "every dim of a 3-d tensor, and a row") {
    for (int64_t dim : {0, 1, 2, -1}) {
        CAPTURE(dim);
        CHECK_GRADIENTS([dim](const Inputs& in) { return softmax(in[0], dim); }, {rand_input({2, 3, 4}, 30, 2.0)});
    }
    CHECK_GRADIENTS([](const Inputs& in) { return softmax(in[0]); }, {rand_input({5}, 31)});
    // A transposed (non-contiguous) input.
    CHECK_GRADIENTS([](const Inputs& in) { return softmax(in[0].t(), 1); }, {rand_input({4, 3}, 32)});
}

GRADCHECK(log_softmax, "every dim of a 3-d tensor") {
    for (int64_t dim : {0, 1, 2}) {
        CAPTURE(dim);
        CHECK_GRADIENTS([dim](const Inputs& in) { return log_softmax(in[0], dim); }, {rand_input({2, 3, 4}, 40, 2.0)});
    }
}

GRADCHECK(cross_entropy, "with an ignored target, int32 targets, and all ignored") {
    Tensor targets = i64({2, -100, 0, 4}, {4});
    CHECK_GRADIENTS([targets](const Inputs& in) { return cross_entropy(in[0], targets); }, {rand_input({4, 5}, 50, 2.0)});
    Tensor t32 = Tensor::from_vector(std::vector<int32_t>{1, 1, 3}, {3});
    CHECK_GRADIENTS([t32](const Inputs& in) { return cross_entropy(in[0] * 3.0, t32, 3); }, {rand_input({3, 4}, 51)});
    Tensor none = i64({-100, -100}, {2});
    CHECK_GRADIENTS([none](const Inputs& in) { return cross_entropy(in[0], none); }, {rand_input({2, 3}, 52)});
}

GRADCHECK(layer_norm, "2-d and 3-d, with and without weight and bias") {
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0], in[1], in[2]); },
                    {rand_input({4, 6}, 60, 2.0), rand_input({6}, 61), rand_input({6}, 62)});
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0], in[1], in[2]); },
                    {rand_input({2, 3, 5}, 63), rand_input({5}, 64), rand_input({5}, 65)});
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0], Tensor(), Tensor()); },
                    {rand_input({3, 4}, 66, 3.0)});
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0], in[1], Tensor()); },
                    {rand_input({2, 2, 4}, 67), rand_input({4}, 68)});
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0], Tensor(), in[1], 0.1); },
                    {rand_input({5}, 69), rand_input({5}, 70)});
    // A transposed view as input.
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0].t(), in[1], in[2]); },
                    {rand_input({4, 3}, 71), rand_input({4}, 72), rand_input({4}, 73)});
    // Through the fused backward kernel: D = 1 (dx = 0), odd D, and more rows than one of its
    // blocks of 64 (dw and db add several blocks' partial sums).
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0], in[1], in[2]); },
                    {rand_input({3, 1}, 74), rand_input({1}, 75), rand_input({1}, 76)});
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0], in[1], in[2]); },
                    {rand_input({1, 7}, 77), rand_input({7}, 78), rand_input({7}, 79)});
    CHECK_GRADIENTS([](const Inputs& in) { return layer_norm(in[0], in[1], in[2]); },
                    {rand_input({70, 3}, 80), rand_input({3}, 81), rand_input({3}, 82)});
}

GRADCHECK(embedding, "repeated ids add up") {
    Tensor ids = i64({1, 3, 1, 0, 1, 3}, {2, 3});
    CHECK_GRADIENTS([ids](const Inputs& in) { return embedding(in[0], ids); }, {rand_input({4, 3}, 80)});
    Tensor flat = Tensor::from_vector(std::vector<int32_t>{2, 2}, {2});
    CHECK_GRADIENTS([flat](const Inputs& in) { return embedding(in[0], flat); }, {rand_input({3, 2}, 81)});
}

GRADCHECK(dropout, "a fixed mask (the generator is re-created at each evaluation)") {
    CHECK_GRADIENTS(
        [](const Inputs& in) {
            Generator gen(5);
            return dropout(in[0], 0.4, true, gen);
        },
        {rand_input({6, 7}, 90)});
    // The mask is not all ones or all zeros (the check would then prove little).
    Generator gen(5);
    Tensor y = dropout(Tensor::ones({6, 7}, DType::Float64), 0.4, true, gen);
    double kept = sum(y).item() * 0.6;
    CHECK(kept > 10);
    CHECK(kept < 35);
}

GRADCHECK(topk, "values along each dim, largest and smallest (no ties)") {
    for (bool largest : {true, false})
        for (int64_t dim : {0, 1}) {
            CAPTURE(largest);
            CAPTURE(dim);
            CHECK_GRADIENTS([dim, largest](const Inputs& in) { return topk(in[0], 2, dim, largest).values; },
                            {rand_input({4, 5}, 100)});
        }
    // k > 8 takes the partial_sort path.
    CHECK_GRADIENTS([](const Inputs& in) { return topk(in[0], 10, -1).values; }, {rand_input({2, 12}, 101)});
}
