// docs/engine/autograd.md: NoGradGuard, detach, accumulation, retain_graph, and the errors.
#include <cstdio>
#include <stdexcept>
#include <string>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "docs/snippets/expect.h"

using namespace mg;

// Runs f, returns the message of the exception it throws ("" if none).
template <typename F> std::string error_of(F f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}
bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

int main() {
    Tensor w = Tensor::from_vector(std::vector<double>{1.0, 2.0}, {2});
    w.set_requires_grad(true);

    // 1. A tensor used twice: the gradients of both uses add up. d(sum(w*w))/dw = 2w.
    (w * w).sum().backward();
    EXPECT(w.grad().to_vector<double>() == (std::vector<double>{2, 4}));

    // 2. .grad accumulates across backward calls until zero_grad().
    (w * 10.0).sum().backward();
    EXPECT(w.grad().to_vector<double>() == (std::vector<double>{12, 14}));
    w.zero_grad();
    EXPECT(!w.grad().defined());

    // 3. NoGradGuard: nothing is recorded (how an optimizer updates its parameters).
    {
        NoGradGuard no_grad;
        Tensor u = w * 2.0;
        EXPECT(!u.requires_grad() && u.grad_fn() == nullptr);
        w.add_(Tensor::ones({2}, DType::Float64), -0.5);  // in-place, allowed here
    }
    EXPECT(w.to_vector<double>() == (std::vector<double>{0.5, 1.5}));

    // 4. detach(): same storage, no history.
    Tensor h = w * 3.0;
    Tensor d = h.detach();
    EXPECT(d.storage() == h.storage() && !d.requires_grad());

    // 5. The errors, each naming what went wrong.
    Tensor c = Tensor::ones({2});
    std::string e1 = error_of([&] { c.sum().backward(); });
    EXPECT(contains(e1, "does not require grad"));

    Tensor L = (w * w).sum();
    L.backward();
    std::string e2 = error_of([&] { L.backward(); });  // the graph was freed by the first pass
    EXPECT(contains(e2, "second time (op 'sum')"));

    Tensor b = w * 2.0;
    Tensor lb = log(b);  // log saves its input b for the backward (d log b = db / b)
    {
        NoGradGuard no_grad;
        b.fill_(1);  // bumps b's storage version
    }
    std::string e3 = error_of([&] { lb.sum().backward(); });
    EXPECT(contains(e3, "log backward: a tensor it saved (shape [2]) was modified in place"));

    std::printf("%s\n%s\n%s\n", e1.c_str(), e2.c_str(), e3.c_str());
    return 0;
}
