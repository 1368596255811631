// ops_nn.cpp: the neural-network ops (softmax, log_softmax, cross_entropy, layer_norm,
// embedding, dropout), each forward beside its backward. The forward loops are kernels
// (engine/cpu/kernels_nn.cpp); the backward passes of softmax, log_softmax and cross_entropy are
// written in engine ops, so they run on every device. With y the output and g = dL/dy:
//   softmax:       dx = y * (g - sum(g * y, dim))
//   log_softmax:   dx = g - exp(y) * sum(g, dim)
//   cross_entropy: dlogits = (softmax(logits) - one_hot(target)) * g / n_valid   (0 on ignored rows)
//   layer_norm:    xhat = (x - mean) * rstd,  dxhat = g * w
//                  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))   (over the last dim)
//                  dw = sum over rows of g * xhat,  db = sum over rows of g
//                  (derivation: docs/nn/transformer.md). Written in engine ops that is about twelve
//                  passes over memory (layer_norm_backward_reference); the layer_norm_backward
//                  kernel does it in one pass per row, and layer_norm's backward calls it.
//   embedding and dropout are composites: their gradients flow through index_select / where.
#include <cmath>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

// ---- softmax / log_softmax ---------------------------------------------------------------------
namespace {
Tensor softmax_forward(OpId op, const Tensor& x, int64_t dim) {
    Tensor y = make_tensor(x.shape(), x.dtype(), x.device());
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(op, {x.detach().contiguous()}, {y}, attrs);
    return y;
}
}  // namespace

Tensor softmax(const Tensor& x, int64_t dim_in) {
    require_floating(x, "softmax");
    if (x.dim() == 0) return softmax(x.reshape({1}), 0).reshape({});  // a single value: 1
    int64_t dim = normalize_dim(dim_in, x.dim(), "softmax");
    Tensor y = softmax_forward(OpId::softmax, x, dim);
    if (any_requires_grad({x}))
        record(y, OpId::softmax, {x}, [sy = Saved(y), dim](const Tensor& g) {
            Tensor yv = sy.get("softmax");
            return grads({yv * (g - sum(g * yv, dim, true))});
        });
    return y;
}

Tensor log_softmax(const Tensor& x, int64_t dim_in) {
    require_floating(x, "log_softmax");
    if (x.dim() == 0) return log_softmax(x.reshape({1}), 0).reshape({});  // a single value: 0
    int64_t dim = normalize_dim(dim_in, x.dim(), "log_softmax");
    Tensor y = softmax_forward(OpId::log_softmax, x, dim);
    if (any_requires_grad({x}))
        record(y, OpId::log_softmax, {x}, [sy = Saved(y), dim](const Tensor& g) {
            return grads({g - exp(sy.get("log_softmax")) * sum(g, dim, true)});
        });
    return y;
}

// ---- cross_entropy -----------------------------------------------------------------------------
// One fused kernel computes the loss and, for the backward, each row's logsumexp and weight
// (1/n_valid, or 0 for an ignored row). If every target is ignore_index the loss is 0 (PyTorch
// gives NaN there; a batch of padding should not poison a training run) and so is the gradient.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
    require_floating(logits, "cross_entropy");
    if (!is_integral(targets.dtype()))
        throw std::invalid_argument(std::string("cross_entropy: targets must be int32 or int64, got ") +
                                    dtype_name(targets.dtype()));
    if (logits.dim() != 2 || targets.dim() != 1 || targets.shape()[0] != logits.shape()[0])
        throw std::invalid_argument("cross_entropy: expected logits (N, C) and targets (N), got logits " +
                                    shape_str(logits.shape()) + " and targets " + shape_str(targets.shape()));
    const int64_t N = logits.shape()[0], C = logits.shape()[1];
    if (C == 0) throw std::invalid_argument("cross_entropy: logits " + shape_str(logits.shape()) + " have no classes");
    Tensor loss = make_tensor({}, logits.dtype(), logits.device());
    Tensor lse = make_tensor({N}, logits.dtype(), logits.device());         // (N) log sum exp of each row
    Tensor row_weight = make_tensor({N}, logits.dtype(), logits.device());  // (N) 1/n_valid or 0
    Attrs attrs;
    attrs.index = ignore_index;
    run_kernel(OpId::cross_entropy, {logits.detach().contiguous(), targets.contiguous()}, {loss, lse, row_weight},
               attrs);
    if (any_requires_grad({logits}))
        record(loss, OpId::cross_entropy, {logits},
               [sl = Saved(logits), st = Saved(targets), slse = Saved(lse), sw = Saved(row_weight), ignore_index,
                C](const Tensor& g) {
                   Tensor x = sl.get("cross_entropy"), t = st.get("cross_entropy");
                   // Ignored rows have weight 0; give them a valid class so one_hot accepts them.
                   Tensor valid = ne(t, Tensor::scalar((double)ignore_index, t.dtype(), t.device()));
                   Tensor safe_targets = where(valid, t, zeros_like(t));
                   Tensor probs = exp(x - slse.get("cross_entropy").unsqueeze(1));  // (N, C) softmax
                   Tensor scale = (sw.get("cross_entropy") * g).unsqueeze(1);        // (N, 1)
                   return grads({(probs - one_hot(safe_targets, C, x.dtype())) * scale});
               });
    return loss;
}

// ---- layer_norm --------------------------------------------------------------------------------
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
    require_floating(x, "layer_norm");
    if (x.dim() == 0) throw std::invalid_argument("layer_norm: input must have at least one dimension, got a 0-d tensor");
    const int64_t D = x.shape().back();
    for (const Tensor* p : {&weight, &bias}) {
        if (!p->defined()) continue;
        const char* what = p == &weight ? "weight" : "bias";
        if (p->shape() != Shape{D})
            throw std::invalid_argument(std::string("layer_norm: ") + what + " of shape " + shape_str(p->shape()) +
                                        " does not match the last dimension of input " + shape_str(x.shape()) +
                                        " (expected [" + std::to_string(D) + "])");
        require_same_dtype(x, *p, "layer_norm");
    }
    if (!(eps >= 0)) throw std::invalid_argument("layer_norm: eps must be >= 0, got " + std::to_string(eps));
    // Absent weight/bias reach the kernel as ones/zeros: one loop for every case.
    Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor::ones({D}, x.dtype(), x.device());
    Tensor b = bias.defined() ? bias.detach().contiguous() : Tensor::zeros({D}, x.dtype(), x.device());
    Tensor y = make_tensor(x.shape(), x.dtype(), x.device());
    Shape stat_shape = keepdim_shape(x.shape(), x.dim() - 1);
    Tensor mean_t = make_tensor(stat_shape, x.dtype(), x.device());  // (..., 1)
    Tensor rstd_t = make_tensor(stat_shape, x.dtype(), x.device());  // (..., 1) 1/sqrt(var + eps)
    Attrs attrs;
    attrs.scalar = eps;
    run_kernel(OpId::layer_norm, {x.detach().contiguous(), w, b}, {y, mean_t, rstd_t}, attrs);
    if (any_requires_grad({x, weight, bias}))
        record(y, OpId::layer_norm, {x, weight, bias},
               [sx = Saved(x), sw = Saved(weight), sm = Saved(mean_t), sr = Saved(rstd_t),
                has_bias = bias.defined()](const Tensor& g) {
                   Tensor saved_w = sw.defined() ? sw.get("layer_norm") : Tensor();
                   LayerNormGrads grad = layer_norm_backward(sx.get("layer_norm"), saved_w, sm.get("layer_norm"),
                                                             sr.get("layer_norm"), g);
                   // The kernel always sums dw and db; a layer without weight or bias gets none.
                   return grads({grad.x, saved_w.defined() ? grad.weight : Tensor(),
                                 has_bias ? grad.bias : Tensor()});
               });
    return y;
}

namespace {
// x (..., D) float, weight (D) or undefined, mean and rstd one value per row, grad_out like x.
void check_layer_norm_backward_args(const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                                    const Tensor& grad_out, const char* op) {
    require_floating(x, op);
    if (x.dim() == 0)
        throw std::invalid_argument(std::string(op) + ": x must have at least one dimension, got a 0-d tensor");
    const int64_t D = x.shape().back();
    const int64_t rows = D == 0 ? 0 : x.numel() / D;
    auto shapes = [&] {
        return "x " + shape_str(x.shape()) + ", weight " + (weight.defined() ? shape_str(weight.shape()) : "(none)") +
               ", mean " + shape_str(mean.shape()) + ", rstd " + shape_str(rstd.shape()) + ", grad_out " +
               shape_str(grad_out.shape());
    };
    if (grad_out.shape() != x.shape() || (weight.defined() && weight.shape() != Shape{D}) ||
        (D > 0 && (mean.numel() != rows || rstd.numel() != rows)))
        throw std::invalid_argument(std::string(op) + ": expected x (..., D), weight (D), mean and rstd with one value "
                                    "per row of x, and grad_out like x; got " + shapes());
    for (const Tensor* t : {&weight, &mean, &rstd, &grad_out})
        if (t->defined()) require_same_dtype(x, *t, op);
}
}  // namespace

LayerNormGrads layer_norm_backward(const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                                   const Tensor& grad_out) {
    check_layer_norm_backward_args(x, weight, mean, rstd, grad_out, "layer_norm_backward");
    const int64_t D = x.shape().back();
    Tensor w = weight.defined() ? weight.detach().contiguous() : Tensor::ones({D}, x.dtype(), x.device());
    LayerNormGrads grad;
    grad.x = make_tensor(x.shape(), x.dtype(), x.device());
    grad.weight = make_tensor({D}, x.dtype(), x.device());
    grad.bias = make_tensor({D}, x.dtype(), x.device());
    // Every input dense: the kernel walks rows of D values. mean and rstd are already contiguous
    // when they come from the forward, and so is x unless it was a strided view.
    run_kernel(OpId::layer_norm_backward,
               {x.detach().contiguous(), w, mean.detach().contiguous(), rstd.detach().contiguous(),
                grad_out.detach().contiguous()},
               {grad.x, grad.weight, grad.bias});
    return grad;
}

// The formula of the header, op by op. Every line is a full pass over (rows, D) values.
LayerNormGrads layer_norm_backward_reference(const Tensor& x, const Tensor& weight, const Tensor& mean_in,
                                             const Tensor& rstd_in, const Tensor& g) {
    check_layer_norm_backward_args(x, weight, mean_in, rstd_in, g, "layer_norm_backward_reference");
    const int64_t D = x.shape().back();
    Shape stat_shape = keepdim_shape(x.shape(), x.dim() - 1);  // (..., 1): broadcasts over each row
    Tensor mu = mean_in.reshape(stat_shape), rstd = rstd_in.reshape(stat_shape);
    Tensor xhat = (x - mu) * rstd;
    Tensor dxhat = weight.defined() ? g * weight : g;
    LayerNormGrads grad;
    grad.x = rstd * (dxhat - mean(dxhat, -1, true) - xhat * mean(dxhat * xhat, -1, true));
    grad.weight = reduce_to_shape(g * xhat, {D});
    grad.bias = reduce_to_shape(g, {D});
    return grad;
}

// ---- embedding (composite) ---------------------------------------------------------------------
Tensor embedding(const Tensor& weight, const Tensor& indices) {
    if (weight.dim() != 2)
        throw std::invalid_argument("embedding: weight must be (V, D), got shape " + shape_str(weight.shape()));
    if (!is_integral(indices.dtype()))
        throw std::invalid_argument(std::string("embedding: indices must be int32 or int64, got ") +
                                    dtype_name(indices.dtype()));
    Shape out_shape = indices.shape();
    out_shape.push_back(weight.shape()[1]);
    Tensor rows;
    try {
        rows = index_select(weight, 0, indices.reshape({-1}));  // (n, D)
    } catch (const std::out_of_range& e) {
        // On the CPU the bad id is found here; name the table so the message makes sense.
        throw std::out_of_range("embedding: an index is out of range for a table of " +
                                std::to_string(weight.shape()[0]) + " rows (" + e.what() + ")");
    }
    return rows.reshape(out_shape);
}

// ---- dropout (composite) -----------------------------------------------------------------------
// mask = rand(x.shape) >= p keeps each element with probability 1 - p; the kept ones are scaled by
// 1/(1-p) so that the expected value is unchanged. The uniforms come from `gen` (Philox), so
// restoring the generator's state replays the same mask (gradient checkpointing relies on it).
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
    if (!(p >= 0 && p < 1))
        throw std::invalid_argument("dropout: p must be in [0, 1), got " + std::to_string(p));
    if (!training || p == 0) return x;
    require_floating(x, "dropout");
    Tensor keep = ge(rand(x.shape(), gen, x.dtype(), x.device()), scalar_like(p, x));  // bool, x's shape
    return where(keep, x * (1.0 / (1.0 - p)), scalar_like(0, x));
}

}  // namespace mg
