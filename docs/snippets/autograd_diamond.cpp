// docs/engine/autograd.md: the worked example. L = (x * y) * (x + y) at x = 2, y = 3.
//
//      x ──┬────────► mul ── a = x*y = 6 ──┐
//          │  ┌─────►                      ├──► mul ── L = a*b = 30
//      y ──┼──┤                            │
//          └──┴─────► add ── b = x+y = 5 ──┘
//
// By hand: dL/da = b = 5, dL/db = a = 6,
//          dL/dx = dL/da * y + dL/db * 1 = 15 + 6 = 21
//          dL/dy = dL/da * x + dL/db * 1 = 10 + 6 = 16
#include <cstdio>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "docs/snippets/expect.h"

using namespace mg;

int main() {
    Tensor x = Tensor::scalar(2, DType::Float64);
    Tensor y = Tensor::scalar(3, DType::Float64);
    x.set_requires_grad(true);
    y.set_requires_grad(true);

    Tensor a = x * y;  // records Node "mul" with edges to x's and y's accumulators
    Tensor b = x + y;  // records Node "add" with edges to the same two accumulators
    Tensor L = a * b;  // records Node "mul" with edges to a's and b's nodes
    EXPECT(L.item() == 30);

    // The graph, as the nodes see it.
    EXPECT(std::string(L.grad_fn()->name) == "mul");
    EXPECT(L.grad_fn()->next[0].node == a.grad_fn());   // an Edge: the node, and the input's shape
    EXPECT(L.grad_fn()->next[1].node == b.grad_fn());
    EXPECT(a.grad_fn()->next[0].node == b.grad_fn()->next[0].node);  // x's one accumulator, reached twice
    EXPECT(std::string(a.grad_fn()->next[0].node->name) == "accumulate_grad");

    a.retain_grad();  // keep dL/da for inspection (non-leaves drop theirs by default)
    L.backward();
    EXPECT(a.grad().item() == 5);
    EXPECT(x.grad().item() == 21);
    EXPECT(y.grad().item() == 16);
    std::printf("dL/dx = %g, dL/dy = %g\n", x.grad().item(), y.grad().item());
    return 0;
}
