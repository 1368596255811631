// docs/engine/ops.md: one op end to end, seen from the outside. softplus(x) = log(1 + e^x):
// its op-table entry, its registered CPU kernel, its forward (stable for large |x|), and its
// backward (sigmoid(x)) checked by central differences, as tests/test_gradcheck_core.cpp does.
#include <cmath>
#include <cstdio>
#include <string>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/ops.h"
#include "docs/snippets/expect.h"

using namespace mg;

int main() {
    // 1. The op table (engine/op_table.h): OP(softplus, Kernel, true)
    const OpInfo& info = op_info(OpId::softplus);
    EXPECT(std::string(info.name) == "softplus");
    EXPECT(info.kind == OpKind::Kernel && info.differentiable);
    EXPECT(has_kernel(Device::CPU, OpId::softplus));  // registered by engine/cpu/kernels_elementwise.cpp

    // 2. Forward: max(x, 0) + log1p(exp(-|x|)) never overflows.
    Tensor x = Tensor::from_vector(std::vector<double>{-800.0, -1.0, 0.0, 2.0, 800.0}, {5});
    std::vector<double> y = softplus(x).to_vector<double>();
    EXPECT(y[0] == 0.0);                                  // log(1 + e^-800) underflows to 0
    EXPECT(std::abs(y[2] - std::log(2.0)) < 1e-15);
    EXPECT(y[4] == 800.0);                                // the naive log(1 + e^800) is inf
    EXPECT(std::abs(y[3] - std::log1p(std::exp(2.0))) < 1e-15);

    // 3. Backward: d softplus / dx = sigmoid(x). The node is named after the op.
    Tensor v = Tensor::from_vector(std::vector<double>{-1.5, 0.25, 3.0}, {3});
    v.set_requires_grad(true);
    Tensor out = softplus(v);
    EXPECT(std::string(out.grad_fn()->name) == "softplus");
    out.sum().backward();
    std::vector<double> analytic = v.grad().to_vector<double>();

    // 4. Central differences: (f(x + eps) - f(x - eps)) / (2 eps) agrees to ~1e-9.
    const double eps = 1e-6;
    std::vector<double> base = v.to_vector<double>();
    for (size_t i = 0; i < base.size(); ++i) {
        auto f = [&](double xi) {
            std::vector<double> moved = base;
            moved[i] = xi;
            NoGradGuard no_grad;
            return softplus(Tensor::from_vector(moved, {3})).sum().item();
        };
        double numeric = (f(base[i] + eps) - f(base[i] - eps)) / (2 * eps);
        double sigmoid = 1 / (1 + std::exp(-base[i]));
        EXPECT(std::abs(analytic[i] - sigmoid) < 1e-15);
        EXPECT(std::abs(analytic[i] - numeric) < 1e-9);
        std::printf("x = %5.2f  analytic %.12f  numeric %.12f\n", base[i], analytic[i], numeric);
    }
    return 0;
}
