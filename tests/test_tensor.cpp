// Tensors without autograd: creation, host access, dtype conversion, printing, and the stride
// arithmetic of views (docs/engine/tensor.md walks through the same examples).
#include <omp.h>

#include <cstring>
#include <sstream>

#include "tests/helpers.h"

using namespace mg;
using mg::test::check_values;

// ---- creation ------------------------------------------------------------------------------------
TEST_CASE("tensor creation: zeros, ones, full, arange, scalar") {
    Tensor z = Tensor::zeros({2, 3});
    CHECK(z.shape() == Shape{2, 3});
    CHECK(z.strides() == Shape{3, 1});
    CHECK(z.offset() == 0);
    CHECK(z.dtype() == DType::Float32);
    CHECK(z.device() == Device::CPU);
    CHECK(z.numel() == 6);
    CHECK(z.dim() == 2);
    CHECK(z.is_contiguous());
    CHECK(z.is_leaf());
    CHECK_FALSE(z.requires_grad());
    check_values(z, {0, 0, 0, 0, 0, 0});

    check_values(Tensor::ones({3}, DType::Int32), {1, 1, 1});
    Tensor f = Tensor::full({2, 2}, 2.5, DType::Float64);
    CHECK(f.dtype() == DType::Float64);
    check_values(f, {2.5, 2.5, 2.5, 2.5});

    Tensor r = Tensor::arange(0, 5);
    CHECK(r.dtype() == DType::Int64);
    CHECK(r.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4});
    check_values(Tensor::arange(0, 1, 0.25, DType::Float32), {0, 0.25, 0.5, 0.75});
    check_values(Tensor::arange(5, 0, -2), {5, 3, 1});
    CHECK(Tensor::arange(3, 3).numel() == 0);

    Tensor s = Tensor::scalar(3.5);
    CHECK(s.dim() == 0);
    CHECK(s.shape().empty());
    CHECK(s.numel() == 1);
    CHECK(s.item() == 3.5);
    CHECK(s.item<int>() == 3);

    Tensor e = Tensor::zeros({0, 4});
    CHECK(e.numel() == 0);
    CHECK(e.to_vector<float>().empty());
    CHECK(Tensor::from_vector(std::vector<float>{}, {0}).numel() == 0);  // empty in, empty out (no memcpy of null)

    CHECK_FALSE(Tensor().defined());
    CHECK_THROWS_WITH_AS(Tensor().shape(), doctest::Contains("undefined tensor"), std::logic_error);
    CHECK_THROWS_WITH_AS(Tensor::arange(0, 3, 0), doctest::Contains("arange: step must be non-zero"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(Tensor::zeros({2, -1}), doctest::Contains("negative size"), std::invalid_argument);
}

TEST_CASE("tensor creation: from_vector of every dtype") {
    Tensor a = Tensor::from_vector({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
    CHECK(a.dtype() == DType::Float32);
    CHECK(a.to_vector<float>() == std::vector<float>{1, 2, 3, 4, 5, 6});
    CHECK(Tensor::from_vector(std::vector<double>{0.1, 0.2}, {2}).dtype() == DType::Float64);
    CHECK(Tensor::from_vector(std::vector<int32_t>{7, 8}, {2}).dtype() == DType::Int32);
    Tensor i = Tensor::from_vector(std::vector<int64_t>{-1, 5, 9}, {3, 1});
    CHECK(i.dtype() == DType::Int64);
    CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{-1, 5, 9});
    Tensor b = Tensor::from_vector(std::vector<bool>{true, false, true}, {3});
    CHECK(b.dtype() == DType::Bool);
    CHECK(b.to_vector<bool>() == std::vector<bool>{true, false, true});
    // float64 values survive the round trip bit for bit
    std::vector<double> exact{0.1, 1.0 / 3.0, -2.5e-300, 1e300};
    CHECK(Tensor::from_vector(exact, {4}).to_vector<double>() == exact);

    CHECK_THROWS_WITH_AS(Tensor::from_vector({1.f, 2.f, 3.f}, {2, 2}),
                         doctest::Contains("from_vector: 3 values do not fill shape [2, 2]"), std::invalid_argument);
}

TEST_CASE("tensor item and at, with their errors") {
    Tensor a = Tensor::from_vector({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
    CHECK(a.at({0, 0}) == 1);
    CHECK(a.at({1, 2}) == 6);
    CHECK(a.t().at({2, 1}) == 6);  // at() follows the view's strides
    CHECK(a.sum().item() == 21);
    CHECK(a.size(-1) == 3);
    CHECK_THROWS_WITH_AS(a.item(), doctest::Contains("item: tensor of shape [2, 3] has 6 elements"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(a.at({2, 0}), doctest::Contains("at: index 2 out of range for dimension 0"), std::out_of_range);
    CHECK_THROWS_WITH_AS(a.at({0}), doctest::Contains("1 indices for a tensor of shape [2, 3]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(a.size(2), doctest::Contains("dimension 2 out of range"), std::out_of_range);
    CHECK_THROWS_WITH_AS(a.data_ptr<double>(), doctest::Contains("data_ptr: tensor holds float32, asked for float64"),
                         std::invalid_argument);
}

TEST_CASE("tensor dtype conversions") {
    Tensor f = Tensor::from_vector({2.7f, -2.7f, 0.f, 1.5f}, {4});
    Tensor i = f.to(DType::Int64);
    CHECK(i.dtype() == DType::Int64);
    CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{2, -2, 0, 1});  // C++ conversion truncates toward 0
    CHECK(f.to(DType::Bool).to_vector<bool>() == std::vector<bool>{true, true, false, true});
    Tensor d = f.to(DType::Float64);
    CHECK(d.dtype() == DType::Float64);
    CHECK(d.to_vector<float>() == f.to_vector<float>());
    CHECK(Tensor::from_vector(std::vector<bool>{true, false}, {2}).to(DType::Float32).to_vector<float>() ==
          std::vector<float>{1, 0});
    CHECK(Tensor::arange(0, 3).to(DType::Int32).to_vector<int32_t>() == std::vector<int32_t>{0, 1, 2});
    // Converting to the dtype it already has is free: the same tensor.
    CHECK(f.to(DType::Float32).same(f));
    CHECK(f.to(Device::CPU).same(f));
    // A conversion of a view gives a contiguous tensor in the view's order.
    Tensor m = Tensor::from_vector({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
    Tensor mt = m.t().to(DType::Float64);
    CHECK(mt.is_contiguous());
    check_values(mt, {1, 4, 2, 5, 3, 6});
}

// ---- printing ------------------------------------------------------------------------------------
TEST_CASE("tensor printing shows values, shape, dtype and device, and truncates large tensors") {
    Tensor a = Tensor::from_vector({1.f, 2.5f, -3.f, 4.f, 5.f, 6.f}, {2, 3});
    std::string s = a.to_string();
    CAPTURE(s);
    CHECK(s.find("tensor(") == 0);
    CHECK(s.find("2.5000") != std::string::npos);
    CHECK(s.find("-3.0000") != std::string::npos);
    CHECK(s.find("shape=[2, 3]") != std::string::npos);
    CHECK(s.find("dtype=float32") != std::string::npos);
    CHECK(s.find("device=cpu") != std::string::npos);
    CHECK(s.find("...") == std::string::npos);
    CHECK(s.find("requires_grad") == std::string::npos);

    std::string ints = Tensor::arange(0, 4).to_string();
    CAPTURE(ints);
    CHECK(ints.find("[0, 1, 2, 3]") != std::string::npos);
    CHECK(ints.find("dtype=int64") != std::string::npos);

    Tensor big = Tensor::arange(0, 2000, 1, DType::Float64);
    std::string b = big.to_string();
    CAPTURE(b.substr(0, 200));
    CHECK(b.find("...") != std::string::npos);
    CHECK(b.find("1999.0000") != std::string::npos);
    CHECK(b.find("1000.0000") == std::string::npos);  // the middle is left out
    CHECK(b.size() < 200);

    Tensor big2 = Tensor::zeros({100, 100});
    std::string b2 = big2.to_string();
    CHECK(b2.find("...") != std::string::npos);
    CHECK(b2.find("shape=[100, 100]") != std::string::npos);
    CHECK(b2.size() < 1000);

    Tensor p = Tensor::ones({2});
    p.set_requires_grad(true);
    CHECK(p.to_string().find("requires_grad") != std::string::npos);
    std::ostringstream os;
    os << p;
    CHECK(os.str() == p.to_string());
    CHECK(Tensor().to_string() == "tensor(undefined)");
}

// ---- views -----------------------------------------------------------------------------------------
TEST_CASE("tensor views share storage: a write through a view is seen by the base") {
    Tensor base = Tensor::zeros({3, 4});
    Tensor column = base.slice(1, 1, 3);  // columns 1 and 2
    CHECK(column.storage() == base.storage());
    column.fill_(7);
    check_values(base, {0, 7, 7, 0, 0, 7, 7, 0, 0, 7, 7, 0});

    Tensor row = base.select(0, 2);
    CHECK(row.shape() == Shape{4});
    CHECK(row.offset() == 8);
    row.copy_(Tensor::from_vector({1.f, 2.f, 3.f, 4.f}, {4}));
    CHECK(base.at({2, 0}) == 1);
    CHECK(base.at({2, 3}) == 4);

    // and a write to the base is seen by every view
    base.fill_(5);
    CHECK(base.t().at({3, 2}) == 5);
    CHECK(column.to_vector<float>() == std::vector<float>(6, 5.f));
    // every in-place write bumps the storage's version (autograd's check uses it)
    uint64_t v = base.storage()->version;
    row.fill_(0);
    CHECK(base.storage()->version == v + 1);
}

TEST_CASE("tensor view strides: transpose, permute, expand, slice, select, unsqueeze") {
    Tensor a = Tensor::arange(0, 12, 1, DType::Float32).reshape({3, 4});
    CHECK(a.strides() == Shape{4, 1});

    Tensor at = a.t();
    CHECK(at.shape() == Shape{4, 3});
    CHECK(at.strides() == Shape{1, 4});
    CHECK_FALSE(at.is_contiguous());
    CHECK(at.storage() == a.storage());
    check_values(at, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});

    Tensor b = Tensor::arange(0, 24, 1, DType::Float32).reshape({2, 3, 4});
    CHECK(b.strides() == Shape{12, 4, 1});
    Tensor p = b.permute({2, 0, 1});
    CHECK(p.shape() == Shape{4, 2, 3});
    CHECK(p.strides() == Shape{1, 12, 4});
    CHECK(p.at({3, 1, 2}) == b.at({1, 2, 3}));

    Tensor c = Tensor::from_vector({1.f, 2.f, 3.f}, {3, 1});
    Tensor e = c.expand({2, 3, 4});
    CHECK(e.shape() == Shape{2, 3, 4});
    CHECK(e.strides() == Shape{0, 1, 0});  // broadcast dims step by 0: no copy
    CHECK(e.storage() == c.storage());
    CHECK(e.at({1, 2, 3}) == 3);
    CHECK(c.expand({-1, 5}).shape() == Shape{3, 5});
    CHECK_THROWS_WITH_AS(c.expand({2, 4}), doctest::Contains("cannot be expanded"), std::invalid_argument);

    Tensor d = Tensor::arange(0, 18, 1, DType::Float32).reshape({3, 6});
    Tensor s = d.slice(1, 1, 5, 2);  // columns 1 and 3
    CHECK(s.shape() == Shape{3, 2});
    CHECK(s.strides() == Shape{6, 2});
    CHECK(s.offset() == 1);
    check_values(s, {1, 3, 7, 9, 13, 15});
    Tensor neg = d.slice(0, -2, 3);  // negative start counts from the end
    CHECK(neg.shape() == Shape{2, 6});
    CHECK(neg.offset() == 6);
    CHECK(d.slice(1, 4, 100).shape() == Shape{3, 2});  // the end is clamped, like Python
    CHECK_THROWS_WITH_AS(d.slice(1, 0, 4, 0), doctest::Contains("slice: step must be positive"),
                         std::invalid_argument);

    Tensor sel = d.select(1, -1);
    CHECK(sel.shape() == Shape{3});
    CHECK(sel.strides() == Shape{6});
    CHECK(sel.offset() == 5);
    CHECK_THROWS_WITH_AS(d.select(0, 3), doctest::Contains("select: index 3 out of range"), std::out_of_range);

    Tensor u = d.unsqueeze(0);
    CHECK(u.shape() == Shape{1, 3, 6});
    CHECK(u.squeeze(0).shape() == Shape{3, 6});
    CHECK(u.squeeze(1).shape() == Shape{1, 3, 6});  // not size 1: unchanged
    CHECK(d.unsqueeze(2).storage() == d.storage());
}

TEST_CASE("tensor contiguous() copies only when needed") {
    Tensor a = Tensor::arange(0, 6, 1, DType::Float32).reshape({2, 3});
    CHECK(a.contiguous().same(a));
    // size-1 dims do not break contiguity, whatever their stride
    CHECK(a.slice(0, 1, 2).is_contiguous());
    CHECK(a.unsqueeze(1).is_contiguous());
    // unsqueeze of a non-contiguous view is still a view (no copy)
    Tensor tv = a.t().unsqueeze(1);
    CHECK(tv.storage() == a.storage());
    CHECK(tv.shape() == Shape{a.size(1), 1, a.size(0)});
    Tensor at = a.t();
    Tensor c = at.contiguous();
    CHECK_FALSE(c.same(at));
    CHECK(c.storage() != a.storage());
    CHECK(c.is_contiguous());
    CHECK(c.strides() == Shape{2, 1});
    check_values(c, {0, 3, 1, 4, 2, 5});
    // a slice with a step is not contiguous, a slice of whole rows is
    CHECK_FALSE(a.slice(1, 0, 3, 2).is_contiguous());
    CHECK(Tensor::zeros({4, 3}).slice(0, 1, 3).is_contiguous());
    // clone always copies
    Tensor k = a.clone();
    CHECK(k.storage() != a.storage());
    k.fill_(1);
    CHECK(a.at({0, 0}) == 0);
}

TEST_CASE("tensor strided loops: big permuted copies and broadcasts, on 1 and 2 threads, equal index arithmetic") {
    // The elementwise loops (engine/cpu/loops.h) decode the first row of each thread's range and
    // then step an odometer through the outer dimensions; threads start mid-way through rows and
    // dimensions. A (5, 7, 3, 11, 40) tensor permuted like the attention block's qkv, copied, and
    // a broadcast add, checked element by element against strides computed by hand.
    const Shape shape{5, 7, 3, 11, 40};
    Tensor x = Tensor::arange(0, (double)numel_of(shape), 1, DType::Float32).reshape(shape);
    Tensor p = x.permute({2, 0, 3, 1, 4});  // (3, 5, 11, 7, 40)
    const int threads = omp_get_max_threads();
    for (int t : {1, threads}) {
        omp_set_num_threads(t);
        CAPTURE(t);
        const std::vector<float> got = p.contiguous().to_vector<float>();
        size_t at = 0;
        bool all = true;
        for (int64_t c = 0; c < 3; ++c)
            for (int64_t b = 0; b < 5; ++b)
                for (int64_t h = 0; h < 11; ++h)
                    for (int64_t s = 0; s < 7; ++s)
                        for (int64_t d = 0; d < 40; ++d)
                            all = all && got[at++] == (float)((((b * 7 + s) * 3 + c) * 11 + h) * 40 + d);
        CHECK(all);
        // (3, 5, 11, 7, 40) + a (5, 1, 1, 40) broadcast: every element gets b * 1000 + d.
        Tensor bias = Tensor::zeros({5, 1, 1, 40});
        for (int64_t b = 0; b < 5; ++b)
            for (int64_t d = 0; d < 40; ++d) bias.slice(0, b, b + 1).slice(3, d, d + 1).fill_((double)(b * 1000 + d));
        const std::vector<float> sum = (p + bias).to_vector<float>();
        at = 0;
        all = true;
        for (int64_t c = 0; c < 3; ++c)
            for (int64_t b = 0; b < 5; ++b)
                for (int64_t h = 0; h < 11; ++h)
                    for (int64_t s = 0; s < 7; ++s)
                        for (int64_t d = 0; d < 40; ++d)
                            all = all && sum[at++] == (float)((((b * 7 + s) * 3 + c) * 11 + h) * 40 + d) + (float)(b * 1000 + d);
        CHECK(all);
    }
    omp_set_num_threads(threads);
}

TEST_CASE("tensor reshape: free for contiguous data, a copy otherwise") {
    Tensor a = Tensor::arange(0, 12, 1, DType::Float32).reshape({3, 4});
    Tensor r = a.reshape({2, -1});
    CHECK(r.shape() == Shape{2, 6});
    CHECK(r.storage() == a.storage());  // a view
    CHECK(a.flatten().shape() == Shape{12});
    CHECK(a.view({4, 3}).storage() == a.storage());

    Tensor rt = a.t().reshape({12});  // not contiguous: copied
    CHECK(rt.storage() != a.storage());
    check_values(rt, {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});

    // a reshaped view of a slice keeps the slice's offset
    Tensor rows = a.slice(0, 1, 3).reshape({8});
    CHECK(rows.storage() == a.storage());
    CHECK(rows.offset() == 4);
    check_values(rows, {4, 5, 6, 7, 8, 9, 10, 11});

    CHECK_THROWS_WITH_AS(a.reshape({5, -1}), doctest::Contains("reshape: cannot reshape [3, 4]"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(a.reshape({-1, -1}), doctest::Contains("only one size can be -1"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(a.reshape({5, 2}), doctest::Contains("(12 elements) into [5, 2]"), std::invalid_argument);
}

TEST_CASE("tensor in-place updates: fill_, copy_ with broadcast, add_, mul_") {
    Tensor a = Tensor::zeros({2, 3});
    a.copy_(Tensor::from_vector({1.f, 2.f, 3.f}, {3}));  // broadcast over rows
    check_values(a, {1, 2, 3, 1, 2, 3});
    a.add_(Tensor::ones({2, 3}), 2.0);
    check_values(a, {3, 4, 5, 3, 4, 5});
    a.mul_(0.5);
    check_values(a, {1.5, 2, 2.5, 1.5, 2, 2.5});
    a.zero_();
    check_values(a, {0, 0, 0, 0, 0, 0});
    // into a transposed view
    Tensor b = Tensor::zeros({2, 3});
    b.t().copy_(Tensor::from_vector({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {3, 2}));
    check_values(b, {1, 3, 5, 2, 4, 6});
}
