// ops.h: every op of the engine as a free function, in the order of engine/op_table.h.
// Each is defined, forward and backward side by side, in the engine/ops_*.cpp file named below.
// Shapes use PyTorch's conventions; a negative dim counts from the end.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/random.h"
#include "engine/tensor.h"

namespace mg {

// ---- elementwise, unary (ops_elementwise.cpp) ------------------------------------------------
Tensor neg(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor pow(const Tensor& x, double exponent);
Tensor clamp(const Tensor& x, double low, double high);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);      // exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
Tensor erf(const Tensor& x);
// The backward passes of relu and gelu as single fused kernels (one pass over memory instead of
// the three to ten a composition of engine ops makes). Not differentiable themselves.
Tensor relu_backward(const Tensor& grad, const Tensor& y);  // grad where y > 0, else 0 (y = relu(x))
Tensor gelu_backward(const Tensor& grad, const Tensor& x);  // grad * (Phi(x) + x * phi(x))
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor softplus(const Tensor& x);  // log(1 + e^x), computed without overflow

// ---- elementwise, binary and ternary, with NumPy broadcasting ---------------------------------
// Both operands must have the same dtype (no silent promotion); scalars take the tensor's dtype.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
// cond ? a : b, elementwise; cond is bool. Gradients flow to a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// x with `value` where mask is true (the causal mask of attention).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
// Comparisons give bool tensors.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& a);

// ---- reductions (ops_reduce.cpp) ---------------------------------------------------------------
// Float sums accumulate in double and are bitwise reproducible for any thread count.
Tensor sum(const Tensor& x);                                          // over everything: 0-d
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
struct ValuesIndices {
    Tensor values;   // carries gradient
    Tensor indices;  // int64, no gradient
};
ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim = false);  // first index on ties
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor max(const Tensor& x);  // over everything: 0-d
Tensor min(const Tensor& x);
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor logsumexp(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor cumsum(const Tensor& x, int64_t dim);

// ---- optimizer updates (ops_optim.cpp) -------------------------------------------------------------------
// One Adam/AdamW step on one parameter, in place, in one pass over memory (one kernel on the GPU
// instead of the ten or so of the same formula in engine ops). With g = grad + l2 * p:
//   p = p * decay;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
//   p = p - step_size * m / (sqrt(v) * inv_sqrt_bias_correction2 + eps)
// Adam: decay = 1, l2 = weight_decay. AdamW: decay = 1 - lr * weight_decay, l2 = 0. step_size is
// lr / (1 - beta1^t). nn/optim.cpp is the caller; param, grad, m and v must be contiguous, of one
// float dtype, shape and device. Not recorded by autograd.
struct AdamHyper {
    double step_size, beta1, beta2, eps, decay, l2, inv_sqrt_bias_correction2;
};
void adam_update_(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamHyper& h);

// ---- linear algebra (ops_matmul.cpp) and neural-network ops (ops_nn.cpp) --------------------------------------
// (n,k)@(k,m); batched (..., n, k)@(..., k, m) with broadcast batch dims; 1-d operands as in NumPy.
Tensor matmul(const Tensor& a, const Tensor& b);
// A Linear layer as one op: y = x @ weight^T + bias, then ReLU if relu, with the bias add and the
// activation fused into the GEMM (one pass over y, not three). x (..., in); weight (out, in);
// bias (out) or undefined. Returns (..., out). The same values as matmul + add + relu, bitwise.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), bool relu = false);
// Many matrix products in one op, one per group of rows (the experts of an MoE layer in one
// launch). x (N, K) holds the groups back to back: group g is rows [offsets[g], offsets[g+1]);
// w (G, M, K) holds one weight per group, laid out like a Linear's (out, in); offsets (G+1) is an
// int64 tensor on x's device with offsets[0] = 0, non-decreasing, offsets[G] = N. Returns
// y (N, M) with y[r] = w[g(r)] x[r], i.e. y_g = x_g w_g^T. An empty group is allowed.
Tensor grouped_matmul(const Tensor& x, const Tensor& w, const Tensor& offsets);
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// Mean over the targets that are not ignore_index of -log_softmax(logits)[target].
// logits (N, C) float; targets (N) int64/int32.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
// Normalises over the last dimension; weight and bias (size D) may be undefined tensors.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// The backward of layer_norm as one op (no gradient of its own): given the forward's input
// x (..., D), its weight (D) (undefined: ones), the per-row mean and rstd it computed (one value
// per row, e.g. (..., 1)) and grad_out = dL/dy (x's shape), the gradients of x, weight and bias
// (dx like x, dw and db (D); dw and db are always computed). One pass over each row
// (engine/cpu/kernels_nn.cpp); dw and db are summed over rows in a fixed order, so the bits do not
// depend on the thread count.
struct LayerNormGrads {
    Tensor x, weight, bias;
};
LayerNormGrads layer_norm_backward(const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                                   const Tensor& grad_out);
// The same gradients written with engine ops (about twelve passes over memory): the plain
// reference layer_norm_backward is tested and benchmarked against.
LayerNormGrads layer_norm_backward_reference(const Tensor& x, const Tensor& weight, const Tensor& mean,
                                             const Tensor& rstd, const Tensor& grad_out);
// weight (V, D), indices (...) int -> (..., D)
Tensor embedding(const Tensor& weight, const Tensor& indices);
// Zeroes each element with probability p and scales the rest by 1/(1-p); identity when
// !training or p == 0. Draws from `gen` (Philox), so the same state replays the same mask.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// ---- indexing (ops_index.cpp), sorting and sampling (ops_sort.cpp) ---------------------------------------------
// out[i][j] = x[i][index[i][j]] (dim = 1), as torch.gather. index int64/int32, same ndim as x.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
// out = x, then out[i][index[i][j]] += src[i][j] (dim = 1), as torch.scatter_add. Deterministic.
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// The slices x[..., index[i], ...] along dim; index is 1-d.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
// out = x, then out[..., index[i], ...] += src[..., i, ...] along dim. Deterministic.
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// (...) int -> (..., num_classes) of dtype
Tensor one_hot(const Tensor& indices, int64_t num_classes, DType dtype = DType::Float32);
// counts of each value 0..bins-1 in a 1-d int tensor -> (bins) int64
Tensor bincount(const Tensor& indices, int64_t bins);
// The k largest (or smallest) along dim, sorted; ties keep the lower index first.
ValuesIndices topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true);
// Indices that sort x along dim (stable).
Tensor argsort(const Tensor& x, int64_t dim = -1, bool descending = false);
// probs (N, C), rows non-negative (need not sum to 1) -> (N, num_samples) int64, with replacement.
Tensor multinomial(const Tensor& probs, int64_t num_samples, Generator& gen);

// ---- shape and memory (ops_shape.cpp); views are also Tensor methods ---------------------------
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor permute(const Tensor& x, const Shape& order);
Tensor expand(const Tensor& x, const Shape& shape);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
// A copy with the given dtype, laid out contiguously (differentiable between float types).
Tensor copy(const Tensor& x, DType dtype);
Tensor concat(const std::vector<Tensor>& xs, int64_t dim = 0);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
std::vector<Tensor> split(const Tensor& x, int64_t chunk_size, int64_t dim = 0);

// ---- attention (ops_attention.cpp; walk-through: docs/nn/attention.md) ---------------------------
// Scaled dot-product attention, softmax(q k^T * scale [+ causal mask]) v, per (batch, head).
// q (B, H, Tq, Dh), k and v (B, H, Tk, Dh) -> (B, H, Tq, Dh); causal needs Tq == Tk and lets
// query t see keys 0..t. The usual scale is 1 / sqrt(Dh). Inputs may be strided views.
// The straightforward version, in engine ops (matmul, masked_fill, softmax, matmul): it keeps
// (B, H, Tq, Tk) scores and probabilities alive for the backward, O(T^2) memory per head.
Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale);
// The memory-efficient version: one kernel, tiled, online softmax (FlashAttention); its backward
// (attention_backward) recomputes the score tiles from q, k and each row's logsumexp, so no
// T x T tensor is ever allocated. Agrees with attention_reference to float tolerance.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale);
// The backward of attention as its own op (no gradient of its own): given the forward's out
// (B, H, Tq, Dh), lse (B, H, Tq) (logsumexp of each row of scaled, masked scores) and grad_out
// (B, H, Tq, Dh), the gradients of q, k and v.
struct AttentionGrads {
    Tensor q, k, v;
};
AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                  const Tensor& lse, const Tensor& grad_out, bool causal, double scale);

// ---- activation checkpointing (ops_checkpoint.cpp; walk-through: docs/nn/hierarchical_moe.md) ---
// Runs fn(inputs) without recording a graph, keeps only `inputs`, and in the backward pass runs
// fn again with recording on and backpropagates through that: the same gradients as without
// checkpointing, for the memory of the inputs instead of every activation inside fn.
//   params:     tensors fn uses without taking them as inputs (a module's parameters); they get
//               their gradients as usual. fn must not use any other tensor that requires grad
//               (the backward throws, naming it, when it does).
//   generators: every generator fn draws from (dropout). Their state is saved before the forward
//               and restored for the recomputation, so it replays the same random numbers; they
//               are left where the forward left them.
// The outputs must be float tensors of one dtype. The generators must outlive the backward.
using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               const std::vector<Tensor>& params = {}, const std::vector<Generator*>& generators = {});
Tensor checkpoint(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
                  const std::vector<Tensor>& params = {}, const std::vector<Generator*>& generators = {});
// True while a checkpoint's backward runs fn a second time: lets fn skip side effects (e.g.
// recording routing statistics) that must happen once per step.
bool checkpoint_recomputing();

// ---- random numbers (ops_create.cpp) ---------------------------------------------------------
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::Float32, Device device = Device::CPU);
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::Float32, Device device = Device::CPU);
// integers uniform in [low, high)
Tensor randint(int64_t low, int64_t high, const Shape& shape, Generator& gen, Device device = Device::CPU);

}  // namespace mg
