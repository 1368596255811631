// nn/domain_attention.cpp: Mixture of Attention Heads (see nn/domain_attention.h), in engine ops.
// The expert dispatch is the one of SpecializedExpertNetwork (nn/moe.cpp): routing slots sorted
// by expert, one GEMM per expert on its rows, a gather back into slot order.
#include "nn/domain_attention.h"

#include <cmath>
#include <stdexcept>

namespace mg::nn {

namespace {
// Rows of `rows` (N*k, width, sorted by expert: counts[e] rows for expert e) times each expert's
// weight^T, gathered back into slot order with `inverse`. weights[e] is (out, width).
Tensor per_expert_matmul(const Tensor& sorted_rows, const std::vector<int64_t>& counts,
                         const std::vector<Tensor>& weights, const Tensor& inverse) {
    std::vector<Tensor> groups = split(sorted_rows, counts, 0);  // (counts[e], width) views
    std::vector<Tensor> outputs;
    for (size_t e = 0; e < groups.size(); ++e)
        if (counts[e] > 0) outputs.push_back(matmul(groups[e], weights[e].t()));  // (counts[e], out)
    return index_select(concat(outputs, 0), 0, inverse);  // (N*k, out) in slot order
}
}  // namespace

AttentionExpert::AttentionExpert(int64_t d_model, int64_t inner, Generator& gen, DType dtype) {
    LinearConfig no_bias{.bias = false, .dtype = dtype};
    q_proj = register_module("q_proj", std::make_shared<Linear>(d_model, inner, gen, no_bias));
    o_proj = register_module("o_proj", std::make_shared<Linear>(inner, d_model, gen, no_bias));
}

DomainSpecificAttention::DomainSpecificAttention(const DomainAttentionConfig& config, Generator& gen) : config_(config) {
    const char* who = "DomainSpecificAttention";
    if (config.d_model <= 0 || config.experts <= 0 || config.heads <= 0 || config.head_dim < 0)
        throw std::invalid_argument(std::string(who) + ": d_model, experts and heads must be positive and head_dim >= 0, got d_model = " +
                                    std::to_string(config.d_model) + ", experts = " + std::to_string(config.experts) +
                                    ", heads = " + std::to_string(config.heads) + ", head_dim = " + std::to_string(config.head_dim));
    if (config.k <= 0 || config.k > config.experts)
        throw std::invalid_argument(std::string(who) + ": k = " + std::to_string(config.k) + " must be in [1, experts = " +
                                    std::to_string(config.experts) + "]");
    if (config.head_dim == 0 && config.d_model % config.heads != 0)
        throw std::invalid_argument(std::string(who) + ": d_model = " + std::to_string(config.d_model) +
                                    " is not divisible by heads = " + std::to_string(config.heads) + " (or set head_dim)");
    head_dim_ = config.head_dim > 0 ? config.head_dim : config.d_model / config.heads;
    const int64_t inner = config.heads * head_dim_;

    RouterConfig rc;
    rc.d_in = config.d_model;
    rc.experts = config.experts;
    rc.k = config.k;
    rc.balance_alpha = config.balance_alpha;
    rc.softmax_over_topk = config.softmax_over_topk;
    rc.renormalize = config.renormalize;
    rc.bias = config.router_bias;
    rc.dtype = config.dtype;
    router = register_module("router", std::make_shared<TopKRouter>(rc, gen));
    LinearConfig no_bias{.bias = false, .dtype = config.dtype};
    k_proj = register_module("k_proj", std::make_shared<Linear>(config.d_model, inner, gen, no_bias));
    v_proj = register_module("v_proj", std::make_shared<Linear>(config.d_model, inner, gen, no_bias));
    for (int64_t e = 0; e < config.experts; ++e)
        experts.push_back(register_module("experts." + std::to_string(e),
                                          std::make_shared<AttentionExpert>(config.d_model, inner, gen, config.dtype)));
}

void DomainSpecificAttention::check_input(const Tensor& x, const char* who) const {
    if (x.dim() != 3 || x.size(2) != config_.d_model)
        throw std::invalid_argument(std::string(who) + ": expected input of shape (batch, time, " +
                                    std::to_string(config_.d_model) + "), got " + shape_str(x.shape()));
    if (x.dtype() != config_.dtype)
        throw std::invalid_argument(std::string(who) + ": input is " + dtype_name(x.dtype()) + " but parameters are " +
                                    dtype_name(config_.dtype));
    if (x.size(0) == 0 || x.size(1) == 0)
        throw std::invalid_argument(std::string(who) + ": empty input " + shape_str(x.shape()) + " (batch and time must be positive)");
}

Tensor DomainSpecificAttention::heads_first(const Tensor& projected, int64_t B, int64_t T) const {
    return projected.reshape({B, T, config_.heads, head_dim_}).transpose(1, 2);  // (B, H, T, Dh) view
}

int64_t DomainSpecificAttention::active_parameters() const {
    return router->num_parameters() + k_proj->num_parameters() + v_proj->num_parameters() +
           config_.k * experts[0]->num_parameters();
}

int64_t DomainSpecificAttention::flops_per_token(int64_t seq_len) const {
    const int64_t d = config_.d_model, inner = config_.heads * head_dim_;
    const int64_t router_flops = 2 * d * config_.experts, shared_kv = 2 * 2 * d * inner;
    const int64_t per_expert = 2 * 2 * d * inner + 2 * inner * (seq_len + 1);
    return router_flops + shared_kv + config_.k * per_expert;
}

DomainSpecificAttention::Output DomainSpecificAttention::forward(const Tensor& x) {
    check_input(x, "DomainSpecificAttention");
    const int64_t B = x.size(0), T = x.size(1), d = config_.d_model, H = config_.heads, Dh = head_dim_;
    const int64_t k = config_.k, E = config_.experts, N = B * T, inner = H * Dh;
    const double scale = 1.0 / std::sqrt((double)Dh);
    Output out;
    Tensor tokens = x.reshape({N, d});  // (N, d) row b*T + t
    out.routing = router->forward(tokens);
    out.balance_loss = out.routing.balance_loss;
    const Routing& r = out.routing;

    // 1. The shared keys and values, once for all experts.
    Tensor keys = heads_first(k_proj->forward(x), B, T);    // (B, H, T, Dh)
    Tensor values = heads_first(v_proj->forward(x), B, T);  // (B, H, T, Dh)

    // 2. Queries of the k chosen experts only. Slot s = n*k + j is token n's j-th expert; the
    //    slots are sorted by expert (stable), each expert projects its rows, and the result is
    //    gathered back into slot order.
    Tensor order = argsort(r.indices.reshape({N * k}), 0);  // (N*k) slots grouped by expert
    Tensor inverse = argsort(order, 0);                     // (N*k) sorted position of each slot
    Tensor slot_token = order / (double)k;                  // (N*k) token of each sorted slot
    std::vector<Tensor> q_weights, o_weights;
    for (int64_t e = 0; e < E; ++e) {
        q_weights.push_back(experts[e]->q_proj->weight);
        o_weights.push_back(experts[e]->o_proj->weight);
    }
    Tensor queries = per_expert_matmul(index_select(tokens, 0, slot_token), r.expert_counts, q_weights, inverse);  // (N*k, H*Dh)

    // 3. The k slots of a token are k*H heads over the same keys: one attention call. K and V
    //    are repeated k times along the head axis (a copy of k * size(K): the price of one call).
    Tensor q = queries.reshape({B, T, k * H, Dh}).transpose(1, 2);                               // (B, k*H, T, Dh)
    Tensor k_rep = keys.unsqueeze(1).expand({B, k, H, T, Dh}).reshape({B, k * H, T, Dh});       // (B, k*H, T, Dh)
    Tensor v_rep = values.unsqueeze(1).expand({B, k, H, T, Dh}).reshape({B, k * H, T, Dh});     // (B, k*H, T, Dh)
    Tensor attended = config_.memory_efficient ? attention(q, k_rep, v_rep, /*causal=*/true, scale)
                                               : attention_reference(q, k_rep, v_rep, /*causal=*/true, scale);
    Tensor slot_out = attended.transpose(1, 2).reshape({N * k, inner});                          // (N*k, H*Dh) slot order

    // 4. Each slot's output through its own expert's W_o, weighted by its gate, summed over k.
    Tensor projected = per_expert_matmul(index_select(slot_out, 0, order), r.expert_counts, o_weights, inverse);  // (N*k, d)
    Tensor y = sum(projected.reshape({N, k, d}) * r.weights.unsqueeze(-1), 1);                  // (N, d)
    out.y = y.reshape({B, T, d});
    return out;
}

Tensor DomainSpecificAttention::forward_dense_reference(const Tensor& x) {
    check_input(x, "DomainSpecificAttention::forward_dense_reference");
    const int64_t B = x.size(0), T = x.size(1), d = config_.d_model, E = config_.experts, N = B * T;
    const double scale = 1.0 / std::sqrt((double)head_dim_);
    Routing r = router->forward(x.reshape({N, d}));
    Tensor gates = scatter_add(Tensor::zeros({N, E}, config_.dtype, x.device()), 1, r.indices, r.weights)
                       .reshape({B, T, E});  // (B, T, E), 0 for the experts not chosen
    Tensor keys = heads_first(k_proj->forward(x), B, T), values = heads_first(v_proj->forward(x), B, T);
    Tensor y;
    for (int64_t e = 0; e < E; ++e) {
        Tensor q = heads_first(experts[e]->q_proj->forward(x), B, T);                          // (B, H, T, Dh)
        Tensor o = attention_reference(q, keys, values, /*causal=*/true, scale);             // (B, H, T, Dh)
        Tensor y_e = experts[e]->o_proj->forward(o.transpose(1, 2).reshape({B, T, -1}));     // (B, T, d)
        Tensor term = y_e * gates.slice(2, e, e + 1);
        y = y.defined() ? y + term : term;
    }
    return y;
}

}  // namespace mg::nn
