// tests/helpers.h: what the tests share: closeness checks, random inputs, and the
// finite-difference gradient checker with its registry of checked ops.
#pragma once
#include <doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace mg::test {

// Overwrites a parameter in place, outside autograd (tests that set weights by hand or perturb them).
inline void set_parameter(Tensor param, const Tensor& value) {
    NoGradGuard no_grad;
    param.copy_(value);
}

// A parameter's gradient, or zeros of its shape when backward never reached it.
inline Tensor grad_or_zeros(const Tensor& t) { return t.grad().defined() ? t.grad() : Tensor::zeros(t.shape(), t.dtype()); }

// The smallest gap, over tokens, between the k-th and the (k+1)-th largest logit of a router:
// a finite-difference step must be smaller, or it could swap the router's choice.
inline double topk_margin(const Tensor& logits, int64_t k) {
    const int64_t T = logits.size(0), E = logits.size(1);
    std::vector<double> v = logits.to_vector<double>();
    double margin = 1e30;
    for (int64_t t = 0; t < T; ++t) {
        std::vector<double> row(v.begin() + t * E, v.begin() + (t + 1) * E);
        std::sort(row.begin(), row.end(), std::greater<double>());
        if (k < E) margin = std::min(margin, row[k - 1] - row[k]);
    }
    return margin;
}

// A random float64 tensor that requires grad (the usual gradcheck input).
inline Tensor rand_input(const Shape& shape, uint64_t seed, double scale = 1.0) {
    Generator gen(seed);
    Tensor t = randn(shape, gen, DType::Float64) * scale;
    t.set_requires_grad(true);
    return t;
}

// Largest |a - b| / (atol + rtol * |b|) over elements: <= 1 means close.
inline double closeness(const Tensor& a, const Tensor& b, double rtol, double atol) {
    REQUIRE(a.shape() == b.shape());
    std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
    double worst = 0;
    for (size_t i = 0; i < va.size(); ++i) {
        if (std::isnan(va[i]) && std::isnan(vb[i])) continue;
        if (va[i] == vb[i]) continue;  // equal infinities too
        const double gap = std::abs(va[i] - vb[i]) / (atol + rtol * std::abs(vb[i]));
        // NaN on one side only (or inf against a number) is as far apart as it gets; std::max
        // would drop a NaN gap silently.
        if (std::isnan(gap) || std::isinf(gap)) return std::numeric_limits<double>::infinity();
        worst = std::max(worst, gap);
    }
    return worst;
}
inline bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-6) {
    return a.shape() == b.shape() && closeness(a, b, rtol, atol) <= 1.0;
}
inline void check_values(const Tensor& t, const std::vector<double>& expected, double tol = 1e-5) {
    std::vector<double> v = t.to_vector<double>();
    REQUIRE(v.size() == expected.size());
    for (size_t i = 0; i < v.size(); ++i) CHECK(v[i] == doctest::Approx(expected[i]).epsilon(tol));
}

// ---- gradient checking ----------------------------------------------------------------------------
struct GradCheckResult {
    bool ok = true;
    double worst = 0;     // worst |analytic - numeric| / (atol + rtol * |numeric|)
    std::string detail;   // where the worst mismatch is
};

// Compares the gradients that backward() computes for L = sum(f(inputs) * w), w a fixed random
// tensor (so every output element matters with a different weight), with central differences
//   dL/dx_j ~ (L(x + eps e_j) - L(x - eps e_j)) / (2 eps)
// in float64. Inputs must be float64 leaves; those that require grad are checked.
inline GradCheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                                 const std::vector<Tensor>& inputs, double eps = 1e-6, double rtol = 1e-6,
                                 double atol = 1e-8) {
    for (const Tensor& x : inputs)
        if (x.requires_grad()) {
            REQUIRE(x.dtype() == DType::Float64);
            x.zero_grad();
        }
    Tensor y = f(inputs);
    Generator gen(1234);
    Tensor w = randn(y.shape(), gen, DType::Float64);
    mg::sum(y * w).backward();

    auto loss_at = [&](const std::vector<Tensor>& xs) {
        NoGradGuard no_grad;
        return mg::sum(f(xs) * w).item();
    };
    GradCheckResult result;
    for (size_t i = 0; i < inputs.size(); ++i) {
        if (!inputs[i].requires_grad()) continue;
        Tensor analytic = inputs[i].grad();
        std::vector<double> base = inputs[i].to_vector<double>();
        std::vector<double> a = analytic.defined() ? analytic.to_vector<double>() : std::vector<double>(base.size(), 0.0);
        for (size_t j = 0; j < base.size(); ++j) {
            std::vector<Tensor> xs = inputs;
            std::vector<double> v = base;
            v[j] = base[j] + eps;
            xs[i] = Tensor::from_vector(v, inputs[i].shape());
            double up = loss_at(xs);
            v[j] = base[j] - eps;
            xs[i] = Tensor::from_vector(v, inputs[i].shape());
            double down = loss_at(xs);
            double numeric = (up - down) / (2 * eps);
            double err = std::abs(a[j] - numeric) / (atol + rtol * std::abs(numeric));
            if (err > result.worst) {
                result.worst = err;
                result.detail = "input " + std::to_string(i) + " element " + std::to_string(j) + ": analytic " +
                                std::to_string(a[j]) + " vs numeric " + std::to_string(numeric);
            }
        }
    }
    result.ok = result.worst <= 1.0;
    return result;
}

// The set of op names that have a gradient check; tests/test_op_table.cpp reads it.
inline std::set<std::string>& gradchecked_ops() {
    static std::set<std::string> ops;
    return ops;
}
inline bool register_gradcheck(const char* op) {
    gradchecked_ops().insert(op);
    return true;
}

}  // namespace mg::test

#define MG_CAT2(a, b) a##b
#define MG_CAT(a, b) MG_CAT2(a, b)
// GRADCHECK(op, "what") { ... } declares a gradient-check test case for `op` and records that
// the op has one.
#define GRADCHECK(op, what)                                                                       \
    static const bool MG_CAT(mg_gradcheck_registered_, __LINE__) = mg::test::register_gradcheck(#op); \
    TEST_CASE("gradcheck " #op ": " what)

// Runs gradcheck and reports the worst mismatch when it fails. Variadic, so that lambdas and
// braced lists with commas pass through the macro.
#define CHECK_GRADIENTS(...) mg::test::check_gradients(__VA_ARGS__)
namespace mg::test {
inline void check_gradients(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                            const std::vector<Tensor>& inputs) {
    GradCheckResult result = gradcheck(f, inputs);
    INFO("worst mismatch: " << result.detail << " (score " << result.worst << ")");
    CHECK(result.ok);
}
}  // namespace mg::test
