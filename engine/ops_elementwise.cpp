// ops_elementwise.cpp: elementwise ops. Each op's forward and backward sit together.
//
// The gradient rules, with y = f(x) and g = dL/dy:
//   neg: -g       abs: g*sign(x)       exp: g*y          log: g/x          sqrt: g/(2y)
//   pow: g*p*x^(p-1)   clamp: g where low <= x <= high   relu: g where x > 0
//   gelu: g*(Phi(x) + x*phi(x))   erf: g*2/sqrt(pi)*exp(-x^2)   tanh: g*(1-y^2)
//   sigmoid: g*y*(1-y)   softplus: g*sigmoid(x)
//   add: g, g   sub: g, -g   mul: g*b, g*a   div: g/b, -g*a/b^2   maximum: to the larger
// Broadcasting in the forward pass becomes a sum in the backward (reduce_to_shape).
#include <cmath>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

namespace {
Tensor unary(OpId op, const Tensor& x, double p = 0, double q = 0) {
    require_floating(x, op_name(op));
    Tensor out = make_tensor(x.shape(), x.dtype(), x.device());
    Attrs attrs;
    attrs.scalar = p;
    attrs.scalar2 = q;
    run_kernel(op, {x}, {out}, attrs);
    return out;
}

Tensor binary(OpId op, const Tensor& a, const Tensor& b, DType out_dtype) {
    require_same_dtype(a, b, op_name(op));
    Shape shape = broadcast_shapes(a.shape(), b.shape(), op_name(op));
    Tensor out = make_tensor(shape, out_dtype, a.device());
    run_kernel(op, {broadcast_view(a, shape), broadcast_view(b, shape)}, {out});
    return out;
}
}  // namespace

// ---- unary -------------------------------------------------------------------------------------
Tensor neg(const Tensor& x) {
    Tensor y = unary(OpId::neg, x);
    if (any_requires_grad({x})) record(y, OpId::neg, {x}, [](const Tensor& g) { return grads({neg(g)}); });
    return y;
}

Tensor abs(const Tensor& x) {
    Tensor y = unary(OpId::abs, x);
    if (any_requires_grad({x}))
        record(y, OpId::abs, {x}, [sx = Saved(x)](const Tensor& g) {
            Tensor xv = sx.get("abs");
            return grads({where(lt(xv, scalar_like(0, xv)), neg(g), g)});
        });
    return y;
}

Tensor exp(const Tensor& x) {
    Tensor y = unary(OpId::exp, x);
    if (any_requires_grad({x}))
        record(y, OpId::exp, {x}, [sy = Saved(y)](const Tensor& g) { return grads({g * sy.get("exp")}); });
    return y;
}

Tensor log(const Tensor& x) {
    Tensor y = unary(OpId::log, x);
    if (any_requires_grad({x}))
        record(y, OpId::log, {x}, [sx = Saved(x)](const Tensor& g) { return grads({g / sx.get("log")}); });
    return y;
}

Tensor sqrt(const Tensor& x) {
    Tensor y = unary(OpId::sqrt, x);
    if (any_requires_grad({x}))
        record(y, OpId::sqrt, {x}, [sy = Saved(y)](const Tensor& g) { return grads({g / (sy.get("sqrt") * 2.0)}); });
    return y;
}

Tensor pow(const Tensor& x, double p) {
    Tensor y = unary(OpId::pow, x, p);
    if (any_requires_grad({x}))
        record(y, OpId::pow, {x}, [sx = Saved(x), p](const Tensor& g) { return grads({g * pow(sx.get("pow"), p - 1) * p}); });
    return y;
}

Tensor clamp(const Tensor& x, double low, double high) {
    if (low > high)
        throw std::invalid_argument("clamp: low " + std::to_string(low) + " is greater than high " + std::to_string(high));
    Tensor y = unary(OpId::clamp, x, low, high);
    if (any_requires_grad({x}))
        record(y, OpId::clamp, {x}, [sx = Saved(x), low, high](const Tensor& g) {
            Tensor xv = sx.get("clamp");
            Tensor inside = logical_and(ge(xv, scalar_like(low, xv)), le(xv, scalar_like(high, xv)));
            return grads({where(inside, g, zeros_like(g))});
        });
    return y;
}

Tensor relu(const Tensor& x) {
    Tensor y = unary(OpId::relu, x);
    if (any_requires_grad({x}))
        record(y, OpId::relu, {x}, [sy = Saved(y)](const Tensor& g) { return grads({relu_backward(g, sy.get("relu"))}); });
    return y;
}

Tensor gelu(const Tensor& x) {
    Tensor y = unary(OpId::gelu, x);
    if (any_requires_grad({x}))
        record(y, OpId::gelu, {x}, [sx = Saved(x)](const Tensor& g) { return grads({gelu_backward(g, sx.get("gelu"))}); });
    return y;
}

// One pass each. In engine ops gelu's derivative would be ten passes over the activations
// (erf, exp and eight multiplies and adds), the largest elementwise cost of an MoE LM's experts.
Tensor relu_backward(const Tensor& grad, const Tensor& y) {
    require_floating(grad, "relu_backward");
    return binary(OpId::relu_backward, grad, y, grad.dtype());
}

Tensor gelu_backward(const Tensor& grad, const Tensor& x) {
    require_floating(grad, "gelu_backward");
    return binary(OpId::gelu_backward, grad, x, grad.dtype());
}

Tensor erf(const Tensor& x) {
    Tensor y = unary(OpId::erf, x);
    if (any_requires_grad({x}))
        record(y, OpId::erf, {x}, [sx = Saved(x)](const Tensor& g) {
            Tensor xv = sx.get("erf");
            return grads({g * exp(neg(xv * xv)) * (2.0 / std::sqrt(M_PI))});
        });
    return y;
}

Tensor tanh(const Tensor& x) {
    Tensor y = unary(OpId::tanh, x);
    if (any_requires_grad({x}))
        record(y, OpId::tanh, {x}, [sy = Saved(y)](const Tensor& g) {
            Tensor yv = sy.get("tanh");
            return grads({g * (1.0 - yv * yv)});
        });
    return y;
}

Tensor sigmoid(const Tensor& x) {
    Tensor y = unary(OpId::sigmoid, x);
    if (any_requires_grad({x}))
        record(y, OpId::sigmoid, {x}, [sy = Saved(y)](const Tensor& g) {
            Tensor yv = sy.get("sigmoid");
            return grads({g * yv * (1.0 - yv)});
        });
    return y;
}

Tensor softplus(const Tensor& x) {
    Tensor y = unary(OpId::softplus, x);
    if (any_requires_grad({x}))
        record(y, OpId::softplus, {x}, [sx = Saved(x)](const Tensor& g) { return grads({g * sigmoid(sx.get("softplus"))}); });
    return y;
}

// ---- binary ------------------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b) {
    Tensor y = binary(OpId::add, a, b, a.dtype());
    if (any_requires_grad({a, b})) {
        if (a.shape() == y.shape() && b.shape() == y.shape())  // no broadcasting: nothing to capture
            record(y, OpId::add, {a, b}, [](const Tensor& g) { return grads({g, g}); });
        else
            record(y, OpId::add, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
                return grads({reduce_to_shape(g, sa), reduce_to_shape(g, sb)});
            });
    }
    return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
    Tensor y = binary(OpId::sub, a, b, a.dtype());
    if (any_requires_grad({a, b}))
        record(y, OpId::sub, {a, b}, [sa = a.shape(), sb = b.shape()](const Tensor& g) {
            return grads({reduce_to_shape(g, sa), reduce_to_shape(neg(g), sb)});
        });
    return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
    Tensor y = binary(OpId::mul, a, b, a.dtype());
    if (any_requires_grad({a, b})) {
        // Save an operand only when the other one needs its gradient.
        Saved sa(b.requires_grad() ? a : Tensor()), sb(a.requires_grad() ? b : Tensor());
        bool ga = a.requires_grad(), gb = b.requires_grad();
        record(y, OpId::mul, {a, b}, [sa, sb, ga, gb, shape_a = a.shape(), shape_b = b.shape()](const Tensor& g) {
            return grads({ga ? reduce_to_shape(g * sb.get("mul"), shape_a) : Tensor(),
                           gb ? reduce_to_shape(g * sa.get("mul"), shape_b) : Tensor()});
        });
    }
    return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
    Tensor y = binary(OpId::div, a, b, a.dtype());
    if (any_requires_grad({a, b})) {
        bool gb = b.requires_grad();
        record(y, OpId::div, {a, b}, [sb = Saved(b), sy = Saved(gb ? y : Tensor()), gb, shape_a = a.shape(),
                                      shape_b = b.shape()](const Tensor& g) {
            Tensor bv = sb.get("div");
            Tensor ga = reduce_to_shape(g / bv, shape_a);
            // d(a/b)/db = -a/b^2 = -y/b
            Tensor gbv = gb ? reduce_to_shape(neg(g * sy.get("div") / bv), shape_b) : Tensor();
            return grads({ga, gbv});
        });
    }
    return y;
}

Tensor maximum(const Tensor& a, const Tensor& b) {
    Tensor y = binary(OpId::maximum, a, b, a.dtype());
    if (any_requires_grad({a, b}))
        record(y, OpId::maximum, {a, b}, [sa = Saved(a), sb = Saved(b)](const Tensor& g) {
            Tensor a_wins = ge(sa.get("maximum"), sb.get("maximum"));  // ties go to a, like the kernel
            Tensor zero = zeros_like(g);
            return grads({reduce_to_shape(where(a_wins, g, zero), sa.get("maximum").shape()),
                          reduce_to_shape(where(a_wins, zero, g), sb.get("maximum").shape())});
        });
    return y;
}

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
    if (cond.dtype() != DType::Bool)
        throw std::invalid_argument(std::string("where: condition must be bool, got ") + dtype_name(cond.dtype()));
    require_same_dtype(a, b, "where");
    Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
    Tensor y = make_tensor(shape, a.dtype(), a.device());
    run_kernel(OpId::where, {broadcast_view(cond, shape), broadcast_view(a, shape), broadcast_view(b, shape)}, {y});
    if (any_requires_grad({a, b}))
        record(y, OpId::where, {a, b}, [sc = Saved(cond), shape_a = a.shape(), shape_b = b.shape()](const Tensor& g) {
            Tensor c = sc.get("where"), zero = zeros_like(g);
            return grads({reduce_to_shape(where(c, g, zero), shape_a), reduce_to_shape(where(c, zero, g), shape_b)});
        });
    return y;
}

// Composite: where(mask, value, x). Its gradient flows through `where`.
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
    Tensor filled = where(mask, scalar_like(value, x), x);
    if (filled.shape() != x.shape())
        throw std::invalid_argument("masked_fill: mask of shape " + shape_str(mask.shape()) +
                                    " would broadcast x of shape " + shape_str(x.shape()) + " to " +
                                    shape_str(filled.shape()));
    return filled;
}

// ---- comparisons (no gradient) -----------------------------------------------------------------
Tensor eq(const Tensor& a, const Tensor& b) { return binary(OpId::eq, a, b, DType::Bool); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary(OpId::ne, a, b, DType::Bool); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary(OpId::lt, a, b, DType::Bool); }
Tensor le(const Tensor& a, const Tensor& b) { return binary(OpId::le, a, b, DType::Bool); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary(OpId::gt, a, b, DType::Bool); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary(OpId::ge, a, b, DType::Bool); }
Tensor logical_and(const Tensor& a, const Tensor& b) {
    if (a.dtype() != DType::Bool || b.dtype() != DType::Bool)
        throw std::invalid_argument(std::string("logical_and: expected bool tensors, got ") + dtype_name(a.dtype()) +
                                    " and " + dtype_name(b.dtype()));
    return binary(OpId::logical_and, a, b, DType::Bool);
}
Tensor logical_not(const Tensor& a) {
    if (a.dtype() != DType::Bool)
        throw std::invalid_argument(std::string("logical_not: expected a bool tensor, got ") + dtype_name(a.dtype()));
    Tensor y = make_tensor(a.shape(), DType::Bool, a.device());
    run_kernel(OpId::logical_not, {a}, {y});
    return y;
}

}  // namespace mg
