// Autograd graph mechanics (engine/autograd.h): diamonds, reuse, no-grad, detach, retain_grad,
// explicit upstream gradients, accumulation, the error messages, and that graph memory is freed,
// iteratively, however long the graph. docs/engine/autograd.md explains each of these.
#include <omp.h>

#include <cstring>

#include "engine/backend.h"
#include "tests/helpers.h"

using namespace mg;
using mg::test::check_values;

namespace {
Tensor leaf(std::initializer_list<double> values, const Shape& shape) {
    Tensor t = Tensor::from_vector(std::vector<double>(values), shape);
    t.set_requires_grad(true);
    return t;
}
Tensor leaf_scalar(double value) {
    Tensor t = Tensor::scalar(value, DType::Float64);
    t.set_requires_grad(true);
    return t;
}
}  // namespace

// ---- graph shapes ----------------------------------------------------------------------------------
TEST_CASE("autograd diamond: the worked example of docs/engine/autograd.md") {
    // L = (x * y) * (x + y) with x = 2, y = 3. Both leaves feed two paths that meet again.
    //   dL/da = b = 5, dL/db = a = 6
    //   dL/dx = dL/da * y + dL/db * 1 = 15 + 6 = 21
    //   dL/dy = dL/da * x + dL/db * 1 = 10 + 6 = 16
    Tensor x = leaf_scalar(2), y = leaf_scalar(3);
    Tensor a = x * y;
    Tensor b = x + y;
    Tensor L = a * b;
    CHECK(L.item() == 30);

    // The recorded graph: L's node points at a's and b's nodes, they point at the leaves'
    // accumulators (one per leaf, shared by every use).
    REQUIRE(L.grad_fn());
    CHECK(std::string(L.grad_fn()->name) == "mul");
    REQUIRE(L.grad_fn()->next.size() == 2);
    CHECK(L.grad_fn()->next[0].node == a.grad_fn());
    CHECK(L.grad_fn()->next[1].node == b.grad_fn());
    CHECK(L.grad_fn()->next[0].shape == Shape{});
    CHECK(std::string(b.grad_fn()->name) == "add");
    CHECK(a.grad_fn()->next[0].node == b.grad_fn()->next[0].node);  // both lead to x's accumulator
    CHECK(std::string(a.grad_fn()->next[0].node->name) == "accumulate_grad");
    CHECK(x.is_leaf());
    CHECK_FALSE(L.is_leaf());

    L.backward();
    CHECK(x.grad().item() == 21);
    CHECK(y.grad().item() == 16);
    // Non-leaves keep no gradient unless asked (retain_grad).
    CHECK_FALSE(a.grad().defined());
}

TEST_CASE("autograd diamond on vectors: L = sum(exp(x) * x)") {
    Tensor x = leaf({-1.0, 0.0, 0.5, 2.0}, {4});
    sum(exp(x) * x).backward();
    std::vector<double> expected;
    for (double v : {-1.0, 0.0, 0.5, 2.0}) expected.push_back(std::exp(v) * (1 + v));
    check_values(x.grad(), expected, 1e-14);
}

TEST_CASE("autograd reuse: x * x and x + x add up the gradients of both uses") {
    Tensor x = leaf({1.0, -2.0, 3.0}, {3});
    (x * x).sum().backward();
    check_values(x.grad(), {2, -4, 6});
    x.zero_grad();
    (x + x + x).sum().backward();
    check_values(x.grad(), {3, 3, 3});
    // a broadcast use: x (3) against x reshaped to (3, 1) gives a (3, 3) table
    x.zero_grad();
    (x * x.reshape({3, 1})).sum().backward();  // d/dx_i sum_jk x_j x_k = 2 * sum_j x_j
    check_values(x.grad(), {4, 4, 4});
}

TEST_CASE("autograd slices: each part's gradient lands in its region, mixed with whole-tensor uses") {
    // x (2, 3) is split along dim 1 into [0:1], [1:3] and also used whole, and a strided slice.
    // L = sum(3 * p0) + sum(p1 * p1) + sum(x) + sum(2 * x[:, ::2])
    //   dL/dx = 1 (whole use) + 3 on column 0, 2 x on columns 1-2, + 2 on columns 0 and 2.
    Tensor x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
    std::vector<Tensor> parts = split(x, std::vector<int64_t>{1, 2}, 1);
    Tensor L = (parts[0] * 3.0).sum() + (parts[1] * parts[1]).sum() + x.sum() + (x.slice(1, 0, 3, 2) * 2.0).sum();
    L.backward();
    check_values(x.grad(), {1 + 3 + 2, 1 + 4, 1 + 6 + 2, 1 + 3 + 2, 1 + 10, 1 + 12 + 2});
    // The same with the whole-tensor use first in the graph (its gradient arrives first, shared
    // with nothing of ours: the region adds must not change it in place).
    x.zero_grad();
    Tensor w = x * 1.0;  // w's gradient is used for x's, and also reaches v unchanged
    Tensor v = leaf({0, 0, 0, 0, 0, 0}, {2, 3});
    Tensor both = w + v;  // add's backward sends one tensor to both w and v
    Tensor L2 = both.sum() + (w.slice(0, 1, 2) * 5.0).sum();
    L2.backward();
    check_values(v.grad(), {1, 1, 1, 1, 1, 1});  // untouched by the slice's region add into w's gradient
    check_values(x.grad(), {1, 1, 1, 6, 6, 6});
    // A gradient that is a view of the caller's upstream gradient G reaches y first or second
    // (both orders are built): adding the slice's part must never write into G.
    for (bool slice_first : {false, true}) {
        Tensor x2 = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
        Tensor y = x2 * 1.0;
        Tensor whole = y.reshape({6}), row0 = y.slice(0, 0, 1).reshape({3});
        Tensor out = slice_first ? concat({row0, whole}, 0) : concat({whole, row0}, 0);
        Tensor G = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9}, {9});
        out.backward(G);
        check_values(G, {1, 2, 3, 4, 5, 6, 7, 8, 9});
        if (slice_first) check_values(x2.grad(), {1 + 4, 2 + 5, 3 + 6, 7, 8, 9});
        else check_values(x2.grad(), {1 + 7, 2 + 8, 3 + 9, 4, 5, 6});
    }
}

TEST_CASE("autograd leaves never share a gradient buffer, even when a backward sends one tensor to both") {
    Tensor a = leaf({1, 2}, {2}), b = leaf({3, 4}, {2});
    (a + b).sum().backward();
    check_values(a.grad(), {1, 1});
    check_values(b.grad(), {1, 1});
    CHECK(a.grad().storage() != b.grad().storage());
    a.grad().mul_(10.0);  // what clip_grad_norm does in place
    check_values(b.grad(), {1, 1});
    // A fresh gradient nobody else holds is kept without a copy, and is still a tensor of its own.
    Tensor c = leaf({1, 2}, {2});
    (c * c).sum().backward();
    check_values(c.grad(), {2, 4});
    CHECK(c.grad().is_contiguous());
}

TEST_CASE("autograd: a leaf that does not require grad gets no gradient") {
    Tensor x = leaf({1.0, 2.0}, {2});
    Tensor c = Tensor::from_vector(std::vector<double>{5.0, 7.0}, {2});
    (x * c).sum().backward();
    check_values(x.grad(), {5, 7});
    CHECK_FALSE(c.grad().defined());
    CHECK_FALSE(c.requires_grad());
}

// ---- recording on and off ------------------------------------------------------------------------
TEST_CASE("autograd NoGradGuard: nothing is recorded, and the previous state comes back") {
    Tensor x = leaf({1.0, 2.0}, {2});
    CHECK(grad_enabled());
    {
        NoGradGuard no_grad;
        CHECK_FALSE(grad_enabled());
        Tensor y = x * 2.0;
        CHECK_FALSE(y.requires_grad());
        CHECK(y.grad_fn() == nullptr);
        CHECK(y.is_leaf());
        {
            NoGradGuard nested;
            CHECK_FALSE(grad_enabled());
        }
        CHECK_FALSE(grad_enabled());  // the inner guard restores "off", not "on"
        CHECK_THROWS_WITH_AS(y.sum().backward(), doctest::Contains("does not require grad"), std::logic_error);
    }
    CHECK(grad_enabled());
    CHECK((x * 2.0).requires_grad());
}

TEST_CASE("autograd detach: shares storage, cut out of the graph") {
    Tensor x = leaf({1.0, 2.0, 3.0}, {3});
    Tensor h = x * 2.0;
    Tensor d = h.detach();
    CHECK_FALSE(d.requires_grad());
    CHECK(d.is_leaf());
    CHECK(d.storage() == h.storage());
    (d * x).sum().backward();  // d is a constant here: dL/dx = d
    check_values(x.grad(), {2, 4, 6});
}

TEST_CASE("autograd zero_grad drops the gradient") {
    Tensor x = leaf({1.0, 2.0}, {2});
    (x * 3.0).sum().backward();
    REQUIRE(x.grad().defined());
    x.zero_grad();
    CHECK_FALSE(x.grad().defined());
    (x * 4.0).sum().backward();
    check_values(x.grad(), {4, 4});  // starts afresh
}

TEST_CASE("autograd retain_grad keeps a non-leaf's gradient") {
    Tensor x = leaf({1.0, -1.0, 2.0}, {3});
    Tensor h = x * 2.0;
    h.retain_grad();
    Tensor k = x * 5.0;  // not retained
    ((h * h).sum() + k.sum()).backward();
    REQUIRE(h.grad().defined());
    check_values(h.grad(), {4, -4, 8});  // d(h^2)/dh = 2h
    CHECK_FALSE(k.grad().defined());
    check_values(x.grad(), {8 + 5, -8 + 5, 16 + 5});
    Tensor c = Tensor::ones({2});
    CHECK_THROWS_WITH_AS(c.retain_grad(), doctest::Contains("retain_grad: tensor does not require grad"),
                         std::logic_error);
}

TEST_CASE("autograd backward with an explicit upstream gradient") {
    Tensor x = leaf({1.0, 2.0, 3.0, 4.0}, {2, 2});
    Tensor y = x * 3.0;
    y.backward(Tensor::from_vector(std::vector<double>{1.0, 0.0, -1.0, 0.5}, {2, 2}));
    check_values(x.grad(), {3, 0, -3, 1.5});

    Tensor z = x * 3.0;
    CHECK_THROWS_WITH_AS(z.backward(), doctest::Contains("only a one-element tensor (a loss)"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(z.backward(Tensor::ones({3}, DType::Float64)),
                         doctest::Contains("backward: gradient of shape [3] for a tensor of shape [2, 2]"),
                         std::invalid_argument);
}

TEST_CASE("autograd accumulates across two backward calls, and retain_graph allows a second pass") {
    Tensor x = leaf({1.0, 2.0}, {2});
    (x * 2.0).sum().backward();
    (x * 3.0).sum().backward();
    check_values(x.grad(), {5, 5});  // 2 + 3: .grad adds up until zero_grad

    x.zero_grad();
    Tensor L = (x * x).sum();
    L.backward(Tensor(), /*retain_graph=*/true);
    L.backward();
    check_values(x.grad(), {4, 8});  // 2 * 2x
}

TEST_CASE("autograd backward from a leaf, and from a 0-d loss made by a view") {
    Tensor x = leaf_scalar(4);
    x.backward();
    CHECK(x.grad().item() == 1);
    Tensor v = leaf({1.0, 2.0, 3.0}, {3});
    Tensor last = v.select(0, 2);  // 0-d view
    (last * last).backward();
    check_values(v.grad(), {0, 0, 6});
}

// ---- errors ----------------------------------------------------------------------------------------
TEST_CASE("autograd errors: backward without grad, a freed graph, set_requires_grad misuse") {
    Tensor c = Tensor::ones({2});
    CHECK_THROWS_WITH_AS(c.sum().backward(),
                         doctest::Contains("backward: tensor of shape [] does not require grad"), std::logic_error);

    Tensor x = leaf({1.0, 2.0}, {2});
    Tensor L = (x * x).sum();
    L.backward();
    CHECK_THROWS_WITH_AS(L.backward(), doctest::Contains("through the graph a second time (op 'sum')"),
                         std::logic_error);
    CHECK_THROWS_WITH_AS(L.backward(), doctest::Contains("retain_graph=true"), std::logic_error);

    Tensor h = x * 2.0;
    CHECK_THROWS_WITH_AS(h.set_requires_grad(false), doctest::Contains("only leaf tensors can be marked"),
                         std::logic_error);
    CHECK_THROWS_WITH_AS(h.set_requires_grad(false), doctest::Contains("made by 'mul'"), std::logic_error);
    Tensor i = Tensor::arange(0, 3);
    CHECK_THROWS_WITH_AS(i.set_requires_grad(true),
                         doctest::Contains("only float tensors can require grad, got int64"), std::invalid_argument);
}

TEST_CASE("autograd errors: an in-place change of a saved tensor is caught at backward, naming the op") {
    SUBCASE("log saves its input") {
        Tensor a = leaf({1.0, 2.0}, {2});
        Tensor b = a * 2.0;  // not a leaf
        Tensor c = log(b);   // saves b
        // Outside a guard, autograd refuses the in-place write right away.
        CHECK_THROWS_WITH_AS(b.fill_(1), doctest::Contains("fill_: in-place update of a tensor that requires grad"),
                             std::logic_error);
        {
            NoGradGuard no_grad;
            b.fill_(1);  // allowed, bumps the storage version
        }
        CHECK_THROWS_WITH_AS(c.sum().backward(), doctest::Contains("log backward: a tensor it saved (shape [2])"),
                             std::logic_error);
        CHECK_THROWS_WITH_AS(c.sum().backward(), doctest::Contains("modified in place after the forward pass"),
                             std::logic_error);
    }
    SUBCASE("exp saves its output") {
        Tensor a = leaf({1.0, 2.0}, {2});
        Tensor b = a * 2.0;
        Tensor c = b.exp();  // saves c itself (as a detached view)
        {
            NoGradGuard no_grad;
            c.fill_(1);
        }
        CHECK_THROWS_WITH_AS(c.sum().backward(), doctest::Contains("exp backward"), std::logic_error);
    }
    SUBCASE("a write through a view of the saved tensor counts too") {
        Tensor a = leaf({1.0, 2.0, 3.0}, {3});
        Tensor b = a * 1.0;
        Tensor c = b * b;  // mul saves both operands
        {
            NoGradGuard no_grad;
            b.slice(0, 1, 2).fill_(0);  // same storage: same version counter
        }
        CHECK_THROWS_WITH_AS(c.sum().backward(), doctest::Contains("mul backward"), std::logic_error);
    }
    SUBCASE("an in-place change of a tensor nobody saved is fine") {
        Tensor a = leaf({1.0, 2.0}, {2});
        Tensor b = a * 2.0;
        Tensor c = b + 1.0;  // add saves nothing
        {
            NoGradGuard no_grad;
            b.fill_(0);
        }
        c.sum().backward();
        check_values(a.grad(), {2, 2});
    }
}

TEST_CASE("autograd errors: a backward returning the wrong shape or count is caught, naming the op") {
    Tensor x = leaf({1.0, 2.0}, {2});
    Tensor y = (x * 1.0).detach();
    record(y, OpId::mul, {x}, [](const Tensor& g) { return std::vector<Tensor>{g.sum()}; });
    CHECK_THROWS_WITH_AS(y.sum().backward(),
                         doctest::Contains("backward of 'mul' returned a gradient of shape [] for input 0 of shape [2]"),
                         std::logic_error);
    Tensor z = (x * 1.0).detach();
    record(z, OpId::exp, {x}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
    CHECK_THROWS_WITH_AS(z.sum().backward(), doctest::Contains("backward of 'exp' returned 2 gradients for 1 inputs"),
                         std::logic_error);
}

TEST_CASE("autograd errors: shape, dtype and device mistakes name the op and the shapes") {
    Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
    CHECK_THROWS_WITH_AS(a + b, doctest::Contains("add: shapes [2, 3] and [4] cannot be broadcast"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(a * b, doctest::Contains("mul: shapes [2, 3] and [4]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(matmul(a, Tensor::zeros({4, 5})),
                         doctest::Contains("matmul: shapes [2, 3] and [4, 5] cannot be multiplied (3 != 4)"),
                         std::invalid_argument);
    Tensor f = Tensor::ones({2}), i = Tensor::arange(0, 2);
    CHECK_THROWS_WITH_AS(f + i, doctest::Contains("add: dtype mismatch, float32 [2] vs int64 [2]"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(exp(i), doctest::Contains("exp: expected a float32 or float64 tensor, got int64"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(sum(a, 2), doctest::Contains("sum: dimension 2 out of range for a 2-d tensor"),
                         std::out_of_range);
    if (device_available(Device::CUDA)) {
        Tensor g = Tensor::ones({2}, DType::Float32, Device::CUDA);
        CHECK_THROWS_WITH_AS(f + g, doctest::Contains("add: tensors on different devices (cpu and cuda)"),
                             std::invalid_argument);
    } else {
        CHECK_THROWS_WITH_AS(Tensor::ones({2}, DType::Float32, Device::CUDA),
                             doctest::Contains("device cuda is not available"), std::runtime_error);
    }
}

// ---- memory ----------------------------------------------------------------------------------------
TEST_CASE("autograd memory: saved tensors are freed by backward, the whole graph when dropped") {
    const int64_t baseline = memory_stats(Device::CPU).live_bytes;
    {
        Generator gen(7);
        Tensor x = randn({1024}, gen, DType::Float64);
        Tensor w = randn({1024}, gen, DType::Float64) * 0.5;
        x.set_requires_grad(true);
        w.set_requires_grad(true);
        Tensor y = x;
        for (int i = 0; i < 500; ++i) y = tanh(y * w);  // 1000 ops, each saving 8 KiB tensors
        Tensor loss = y.sum();
        const int64_t before_backward = memory_stats(Device::CPU).live_bytes - baseline;
        CHECK(before_backward > 400 * 1024 * 8);  // 500 saved tanh outputs of 8 KiB
        loss.backward();
        REQUIRE(x.grad().defined());
        REQUIRE(w.grad().defined());
        const int64_t after_backward = memory_stats(Device::CPU).live_bytes - baseline;
        CAPTURE(before_backward);
        CAPTURE(after_backward);
        // Left: x, w, their grads, y, the loss and the small scalars; not the 1000 saved tensors.
        CHECK(after_backward < before_backward / 20);
    }
    CHECK(memory_stats(Device::CPU).live_bytes == baseline);
}

TEST_CASE("autograd memory: a 200,000-op chain is freed without recursion") {
    SUBCASE("after backward") {
        Tensor x = leaf_scalar(1);
        Tensor y = x + 0.0;
        std::weak_ptr<Node> first = y.grad_fn();
        for (int i = 1; i < 200000; ++i) y = y + 0.0;
        y.backward();  // the walk is iterative too
        CHECK(x.grad().item() == 1);
        CHECK_FALSE(first.expired());  // still reachable from y
        y = Tensor();
        CHECK(first.expired());
    }
    SUBCASE("without backward, with saved tensors in every node") {
        Tensor x = leaf_scalar(1);
        Tensor y = x * 1.0;
        std::weak_ptr<Node> first = y.grad_fn();
        for (int i = 1; i < 200000; ++i) y = y * 1.0;
        CHECK_FALSE(first.expired());
        y = Tensor();  // ~Node frees the chain with an explicit stack
        CHECK(first.expired());
    }
}

// ---- determinism -------------------------------------------------------------------------------------
TEST_CASE("tensor determinism: one seed, the same bits; one sum, the same bits on 1 and 2 threads") {
    auto bits_equal = [](const Tensor& a, const Tensor& b) {
        std::vector<float> va = a.to_vector<float>(), vb = b.to_vector<float>();
        return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
    };
    Generator g1(42), g2(42), g3(43);
    Tensor a = randn({1000, 1000}, g1), b = randn({1000, 1000}, g2), c = randn({1000, 1000}, g3);
    CHECK(bits_equal(a, b));
    CHECK_FALSE(bits_equal(a, c));
    CHECK(g1.offset() == 250000);  // 4 numbers per Philox block

    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    Generator gs(42);
    Tensor a1 = randn({1000, 1000}, gs);
    double s1 = a.sum().item(), m1 = a.sum(1).sum().item(), t1 = a.t().contiguous().sum(0).sum().item();
    omp_set_num_threads(2);
    double s2 = a.sum().item(), m2 = a.sum(1).sum().item(), t2 = a.t().contiguous().sum(0).sum().item();
    omp_set_num_threads(threads);
    CHECK(bits_equal(a1, a));  // the random kernel gives the same bits on any thread count
    CHECK(std::memcmp(&s1, &s2, sizeof s1) == 0);
    CHECK(std::memcmp(&m1, &m2, sizeof m1) == 0);
    CHECK(std::memcmp(&t1, &t2, sizeof t1) == 0);
}
