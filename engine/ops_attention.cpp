// ops_attention.cpp: scaled dot-product attention, two ways (walk-through: docs/nn/attention.md).
//
//   S = q k^T * scale            (B, H, Tq, Tk)  scores
//   S_ij = -inf where j > i      (causal: a query sees itself and the past only)
//   P = softmax(S, over j)       (B, H, Tq, Tk)  probabilities
//   out = P v                    (B, H, Tq, Dh)
//
// attention_reference writes exactly that with engine ops; autograd comes from the ops, and the
// graph keeps several (Tq, Tk) tensors per head alive until backward: O(T^2) memory.
//
// attention is one kernel (engine/cpu/kernels_attention.cpp) that walks S tile by tile with an
// online softmax and never stores it. It also writes lse_i = log sum_j exp(S_ij), which is all the
// backward needs to rebuild any tile of P exactly: P_ij = exp(S_ij - lse_i). Its backward, the
// attention_backward kernel, does so. With g = dL/dout and D_i = sum_d g_id out_id:
//   dv = P^T g      dP = g v^T      dS = P * (dP - D_i)      dq = dS k * scale      dk = dS^T q * scale
// (D_i = sum_j P_ij dP_ij, the softmax backward's row sum, computed from out instead of P.)
// The node saves q, k, v, out and lse: O(T) per head.
#include <cmath>
#include <limits>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

namespace {
struct AttentionDims {
    int64_t batch, heads, q_len, kv_len, head_dim;
};

// q (B, H, Tq, Dh), k and v (B, H, Tk, Dh), one float dtype; causal needs Tq == Tk.
AttentionDims check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale,
                                   const char* op) {
    require_floating(q, op);
    require_same_dtype(q, k, op);
    require_same_dtype(q, v, op);
    auto shapes = [&] {
        return "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape());
    };
    if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4)
        throw std::invalid_argument(std::string(op) + ": expected q, k, v of shape (B, H, T, Dh), got " + shapes());
    const Shape &qs = q.shape(), &ks = k.shape();
    if (ks != v.shape() || qs[0] != ks[0] || qs[1] != ks[1] || qs[3] != ks[3])
        throw std::invalid_argument(std::string(op) + ": q (B, H, Tq, Dh), k and v (B, H, Tk, Dh) must agree, got " +
                                    shapes());
    if (causal && qs[2] != ks[2])
        throw std::invalid_argument(std::string(op) + ": causal attention needs as many queries as keys, got " +
                                    shapes());
    if (qs[2] > 0 && ks[2] == 0)
        throw std::invalid_argument(std::string(op) + ": queries but no keys to attend to, got " + shapes());
    if (!std::isfinite(scale))
        throw std::invalid_argument(std::string(op) + ": scale must be finite, got " + std::to_string(scale));
    return {qs[0], qs[1], qs[2], ks[2], qs[3]};
}
}  // namespace

// ---- the straightforward version (composite) -----------------------------------------------------
Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
    const AttentionDims d = check_attention_args(q, k, v, causal, scale, "attention_reference");
    Tensor scores = matmul(q, k.transpose(-2, -1)) * scale;  // (B, H, Tq, Tk)
    if (causal) {
        // future (Tq, Tk) bool: key j lies after query i. Broadcast over (B, H).
        Tensor rows = Tensor::arange(0, (double)d.q_len).unsqueeze(1);  // (Tq, 1)
        Tensor cols = Tensor::arange(0, (double)d.kv_len).unsqueeze(0);  // (1, Tk)
        Tensor future = gt(cols, rows).to(q.device());
        scores = masked_fill(scores, future, -std::numeric_limits<double>::infinity());
    }
    Tensor probs = softmax(scores, -1);  // (B, H, Tq, Tk)
    return matmul(probs, v);             // (B, H, Tq, Dh)
}

// ---- the memory-efficient version (one kernel forward, one kernel backward) ----------------------
AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                  const Tensor& lse, const Tensor& grad_out, bool causal, double scale) {
    const AttentionDims d = check_attention_args(q, k, v, causal, scale, "attention_backward");
    const Shape out_shape{d.batch, d.heads, d.q_len, d.head_dim}, lse_shape{d.batch, d.heads, d.q_len};
    if (out.shape() != out_shape || grad_out.shape() != out_shape || lse.shape() != lse_shape)
        throw std::invalid_argument("attention_backward: expected out and grad_out " + shape_str(out_shape) +
                                    " and lse " + shape_str(lse_shape) + " for q " + shape_str(q.shape()) +
                                    ", got out " + shape_str(out.shape()) + ", grad_out " +
                                    shape_str(grad_out.shape()) + ", lse " + shape_str(lse.shape()));
    for (const Tensor* t : {&out, &lse, &grad_out}) require_same_dtype(q, *t, "attention_backward");
    AttentionGrads g;
    g.q = make_tensor(q.shape(), q.dtype(), q.device());  // (B, H, Tq, Dh)
    g.k = make_tensor(k.shape(), k.dtype(), k.device());  // (B, H, Tk, Dh)
    g.v = make_tensor(v.shape(), v.dtype(), v.device());  // (B, H, Tk, Dh)
    Attrs attrs;
    attrs.flag = causal;
    attrs.scalar = scale;
    // q, k, v and grad_out go in as they are (the kernel reads any strides); out and lse are
    // the forward's own contiguous outputs.
    run_kernel(OpId::attention_backward,
               {q.detach(), k.detach(), v.detach(), out.detach().contiguous(), lse.detach().contiguous(),
                grad_out.detach()},
               {g.q, g.k, g.v}, attrs);
    return g;
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
    const AttentionDims d = check_attention_args(q, k, v, causal, scale, "attention");
    Tensor out = make_tensor({d.batch, d.heads, d.q_len, d.head_dim}, q.dtype(), q.device());
    Tensor lse = make_tensor({d.batch, d.heads, d.q_len}, q.dtype(), q.device());  // log sum_j exp(S_ij)
    Attrs attrs;
    attrs.flag = causal;
    attrs.scalar = scale;
    run_kernel(OpId::attention, {q.detach(), k.detach(), v.detach()}, {out, lse}, attrs);
    if (any_requires_grad({q, k, v}))
        record(out, OpId::attention, {q, k, v},
               [sq = Saved(q), sk = Saved(k), sv = Saved(v), so = Saved(out), slse = Saved(lse), causal,
                scale](const Tensor& g) {
                   AttentionGrads grad = attention_backward(sq.get("attention"), sk.get("attention"),
                                                            sv.get("attention"), so.get("attention"),
                                                            slse.get("attention"), g, causal, scale);
                   return grads({grad.q, grad.k, grad.v});
               });
    return out;
}

}  // namespace mg
