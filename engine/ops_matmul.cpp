// ops_matmul.cpp: the matrix product, 2-d and batched, forward beside backward.
#include <cmath>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

// ---- matmul ------------------------------------------------------------------------------------
namespace {
// Is the 2-d b stored column by column, i.e. the transpose of a contiguous tensor? That is the
// weight of every Linear layer: x @ W^T with W (out, in) contiguous.
bool is_col_major(const Tensor& b) {
    return b.dim() == 2 && b.strides()[0] == 1 && (b.size(1) == 1 || b.strides()[1] == b.size(0));
}

// dL/dB for a 2-d B: A^T @ G with every batch row of A and G flattened into one product (the
// sum over broadcast batch dims comes for free). When B is column-major, the gradient is
// computed as (G^T @ A)^T instead: the same GEMM, but its result has B's own layout, so that the
// gradient of W in x @ W^T arrives contiguous, as W is, and nobody copies a transposed gradient
// (measured: two such copies per expert per step were 3.5% of the MoE LM's training step).
Tensor weight_grad(const Tensor& a, const Tensor& g, bool b_col_major) {
    const Tensor a2 = a.reshape({-1, a.size(-1)}), g2 = g.reshape({-1, g.size(-1)});
    if (b_col_major) return matmul(g2.transpose(0, 1), a2).transpose(0, 1);
    return matmul(a2.transpose(0, 1), g2);
}
}  // namespace

// C = A @ B over broadcast batch dims. The kernel gets A as (batch..., n, k) and B as
// (batch..., k, m) views, strides and all (a transposed operand costs nothing: the GEMM packs
// whatever layout it is given), and writes a contiguous C (batch..., n, m).
//   dL/dA = dL/dC @ B^T      dL/dB = A^T @ dL/dC      (summed over broadcast batch dims)
Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
    if (a_in.dim() == 0 || b_in.dim() == 0)
        throw std::invalid_argument("matmul: operands must have at least 1 dim, got " + shape_str(a_in.shape()) +
                                    " and " + shape_str(b_in.shape()));
    // 1-d operands as NumPy does: a vector on the left is a row, on the right a column.
    if (a_in.dim() == 1) return matmul(a_in.unsqueeze(0), b_in).squeeze(-2);
    if (b_in.dim() == 1) return matmul(a_in, b_in.unsqueeze(1)).squeeze(-1);
    require_floating(a_in, "matmul");
    require_same_dtype(a_in, b_in, "matmul");
    const int64_t n = a_in.size(-2), k = a_in.size(-1), m = b_in.size(-1);
    if (b_in.size(-2) != k)
        throw std::invalid_argument("matmul: shapes " + shape_str(a_in.shape()) + " and " + shape_str(b_in.shape()) +
                                    " cannot be multiplied (" + std::to_string(k) + " != " +
                                    std::to_string(b_in.size(-2)) + ")");
    Shape batch = broadcast_shapes(Shape(a_in.shape().begin(), a_in.shape().end() - 2),
                                   Shape(b_in.shape().begin(), b_in.shape().end() - 2), "matmul");
    Shape a_shape = batch, b_shape = batch, c_shape = batch;
    a_shape.insert(a_shape.end(), {n, k});
    b_shape.insert(b_shape.end(), {k, m});
    c_shape.insert(c_shape.end(), {n, m});
    Tensor c = make_tensor(c_shape, a_in.dtype(), a_in.device());
    run_kernel(OpId::matmul, {broadcast_view(a_in, a_shape), broadcast_view(b_in, b_shape)}, {c});
    if (any_requires_grad({a_in, b_in})) {
        bool ga = a_in.requires_grad(), gb = b_in.requires_grad();
        record(c, OpId::matmul, {a_in, b_in},
               [sa = Saved(gb ? a_in : Tensor()), sb = Saved(ga ? b_in : Tensor()), ga, gb, shape_a = a_in.shape(),
                shape_b = b_in.shape(), b_col_major = is_col_major(b_in)](const Tensor& g) {
                   Tensor grad_a = ga ? reduce_to_shape(matmul(g, sb.get("matmul").transpose(-1, -2)), shape_a) : Tensor();
                   Tensor grad_b;
                   if (gb) grad_b = shape_b.size() == 2 ? weight_grad(sa.get("matmul"), g, b_col_major)
                                                        : reduce_to_shape(matmul(sa.get("matmul").transpose(-1, -2), g), shape_b);
                   return grads({grad_a, grad_b});
               });
    }
    return c;
}

}  // namespace mg

namespace mg {
using namespace detail;

// ---- linear ------------------------------------------------------------------------------------
// y = act(x W^T + b) on x flattened to (rows, in). The kernel gets x2 (rows, in) and W (out, in)
// with their strides, b (out) contiguous or undefined, attrs.flag = relu, and a contiguous y.
//   g' = relu ? g * (y > 0) : g       (relu_backward, from the output: y > 0 exactly where x W^T + b > 0)
//   dL/dx = g' W     dL/dW = g'^T x   dL/db = sum over rows of g'
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, bool relu) {
    require_floating(x, "linear");
    require_same_dtype(x, weight, "linear");
    if (x.dim() == 0 || weight.dim() != 2 || x.size(-1) != weight.size(1))
        throw std::invalid_argument("linear: expected x (..., in) and weight (out, in), got x " + shape_str(x.shape()) +
                                    " and weight " + shape_str(weight.shape()));
    const int64_t in = weight.size(1), out = weight.size(0);
    if (bias.defined()) {
        require_same_dtype(x, bias, "linear");
        if (bias.dim() != 1 || bias.size(0) != out)
            throw std::invalid_argument("linear: bias must be (" + std::to_string(out) + "), got " +
                                        shape_str(bias.shape()));
    }
    Shape y_shape = x.shape();
    y_shape.back() = out;
    const Tensor x2 = x.reshape({-1, in});  // free for contiguous x
    Tensor y2 = make_tensor({x2.size(0), out}, x.dtype(), x.device());
    Attrs attrs;
    attrs.flag = relu;
    run_kernel(OpId::linear, {x2.detach(), weight.detach(), bias.defined() ? bias.detach().contiguous() : Tensor()}, {y2},
               attrs);
    if (any_requires_grad({x2, weight, bias})) {
        const bool gx = x2.requires_grad(), gw = weight.requires_grad();
        record(y2, OpId::linear, {x2, weight, bias},
               [sx = Saved(gw ? x2 : Tensor()), sw = Saved(gx ? weight : Tensor()), sy = Saved(relu ? y2 : Tensor()),
                gx, gw, gb = bias.defined() && bias.requires_grad()](const Tensor& g) {
                   const Tensor gz = sy.defined() ? relu_backward(g, sy.get("linear")) : g;
                   Tensor dx = gx ? matmul(gz, sw.get("linear")) : Tensor();
                   Tensor dw = gw ? matmul(gz.transpose(0, 1), sx.get("linear")) : Tensor();  // (out, in), contiguous
                   Tensor db = gb ? sum(gz, 0) : Tensor();
                   return grads({dx, dw, db});
               });
    }
    return y2.reshape(y_shape);
}

// ---- grouped_matmul ----------------------------------------------------------------------------
// y_g = x_g w_g^T for every group g of rows, in one kernel call. The kernel gets contiguous x, w
// and offsets; attrs.flag = false multiplies by w_g^T (w is (G, M, K)), true by w_g itself
// (w is (G, K, M)), which is what the backward needs:
//   dL/dx_g = dL/dy_g w_g          (grouped_matmul with flag = true)
//   dL/dw_g = (dL/dy_g)^T x_g      (grouped_matmul_weight_grad: one (M, K) product per group)
// Group g's rows never meet another group's weights, so the backward of each group is exactly
// that of its own matmul(x_g, w_g.t()).
namespace {
Tensor grouped_product(const Tensor& x, const Tensor& w, const Tensor& offsets, bool w_as_is) {
    const int64_t out_cols = w_as_is ? w.size(2) : w.size(1);
    Tensor y = make_tensor({x.size(0), out_cols}, x.dtype(), x.device());
    Attrs attrs;
    attrs.flag = w_as_is;
    run_kernel(OpId::grouped_matmul, {x.contiguous(), w.contiguous(), offsets.contiguous()}, {y}, attrs);
    return y;
}
}  // namespace

Tensor grouped_matmul(const Tensor& x, const Tensor& w, const Tensor& offsets) {
    require_floating(x, "grouped_matmul");
    require_same_dtype(x, w, "grouped_matmul");
    if (x.dim() != 2 || w.dim() != 3 || offsets.dim() != 1 || offsets.size(0) != w.size(0) + 1 ||
        x.size(1) != w.size(2))
        throw std::invalid_argument("grouped_matmul: expected x (N, K), w (G, M, K) and offsets (G+1), got x " +
                                    shape_str(x.shape()) + ", w " + shape_str(w.shape()) + ", offsets " +
                                    shape_str(offsets.shape()));
    if (offsets.dtype() != DType::Int64)
        throw std::invalid_argument(std::string("grouped_matmul: offsets must be int64, got ") +
                                    dtype_name(offsets.dtype()));
    if (offsets.device() != x.device() || w.device() != x.device())
        throw std::invalid_argument(std::string("grouped_matmul: x, w and offsets must be on one device, got ") +
                                    device_name(x.device()) + ", " + device_name(w.device()) + " and " +
                                    device_name(offsets.device()));
    Tensor y = grouped_product(x, w, offsets, false);
    if (any_requires_grad({x, w})) {
        bool gx = x.requires_grad(), gw = w.requires_grad();
        record(y, OpId::grouped_matmul, {x, w},
               [sx = Saved(gw ? x : Tensor()), sw = Saved(gx ? w : Tensor()), off = offsets.detach(), gx, gw,
                w_shape = w.shape()](const Tensor& g) {
                   Tensor dy = g.contiguous();
                   Tensor grad_x = gx ? grouped_product(dy, sw.get("grouped_matmul"), off, true) : Tensor();
                   Tensor grad_w;
                   if (gw) {
                       Tensor xs = sx.get("grouped_matmul");
                       grad_w = make_tensor(w_shape, dy.dtype(), dy.device());
                       run_kernel(OpId::grouped_matmul_weight_grad, {dy, xs.contiguous(), off.contiguous()}, {grad_w});
                   }
                   return grads({grad_x, grad_w});
               });
    }
    return y;
}

}  // namespace mg
