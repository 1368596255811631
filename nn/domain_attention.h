// nn/domain_attention.h: DomainSpecificAttention, causal self-attention whose experts are chosen
// per token: Mixture of Attention Heads (MoA, Zhang et al. 2022, arXiv:2210.05144).
//
// Every expert e has its own query and output projections W_q^e, W_o^e; the key and value
// projections W_k, W_v are shared by all experts. A top-k router picks k experts per token t:
//
//   K = x W_k^T, V = x W_v^T                                  (B, T, H*Dh), computed once
//   q_e,t = x_t W_q^e^T                                       for the k chosen e only
//   o_e,t = causal attention of q_e,t over K, V (positions 0..t), head by head
//   y_t   = sum over the chosen e of  g_t,e * o_e,t W_o^e^T   (B, T, d_model)
//
// Because K and V are shared, the k chosen queries of a token are just k more "heads" over the
// same keys: the sparse forward computes only k queries per token (not E), runs ONE call of the
// memory-efficient attention op with k*H heads, and projects each slot's output with its own
// expert's W_o. Expert cost therefore grows with k, not with E. The math, the shapes and the
// FLOP count: docs/nn/hierarchical_moe.md ("DomainSpecificAttention").
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/random.h"
#include "nn/layers.h"
#include "nn/moe.h"
#include "nn/module.h"

namespace mg::nn {

struct DomainAttentionConfig {
    int64_t d_model = 0;
    int64_t experts = 4;          // E attention experts
    int64_t k = 2;                // experts per token
    int64_t heads = 1;            // H heads per expert (MoA: 1); K and V have the same H heads
    int64_t head_dim = 0;         // Dh; 0 = d_model / heads
    double balance_alpha = 0.01;  // the router's Switch balance loss
    bool softmax_over_topk = true;  // gate weights, see RouterConfig
    bool renormalize = true;
    bool router_bias = false;
    bool memory_efficient = true;  // mg::attention (tiled, O(T) memory); false: attention_reference
    DType dtype = DType::Float32;
};

// One attention expert: its own query projection and output projection (no biases, like the
// shared K and V projections).
class AttentionExpert : public Module {
public:
    AttentionExpert(int64_t d_model, int64_t inner, Generator& gen, DType dtype);
    std::string type_name() const override { return "AttentionExpert"; }
    std::shared_ptr<Linear> q_proj;  // weight (H*Dh, d_model)
    std::shared_ptr<Linear> o_proj;  // weight (d_model, H*Dh)
};

class DomainSpecificAttention : public Module {
public:
    DomainSpecificAttention(const DomainAttentionConfig& config, Generator& gen);

    struct Output {
        Tensor y;             // (B, T, d_model)
        Routing routing;      // over the B*T tokens, flattened batch-major (row b*T + t)
        Tensor balance_loss;  // 0-d, the same tensor as routing.balance_loss
    };
    Output forward(const Tensor& x);  // x (B, T, d_model)
    Output operator()(const Tensor& x) { return forward(x); }
    // The straightforward version: every expert's queries for every token, one attention per
    // expert (attention_reference), gates 0 for the experts not chosen. E/k times the query,
    // attention and output FLOPs; the oracle of the tests.
    Tensor forward_dense_reference(const Tensor& x);

    std::string type_name() const override { return "DomainSpecificAttention"; }
    const DomainAttentionConfig& config() const { return config_; }
    int64_t head_dim() const { return head_dim_; }
    // Parameters one token uses: router, W_k, W_v and k experts' W_q, W_o.
    int64_t active_parameters() const;
    // Multiply-adds x 2 per token at sequence length T (causal: on average (T+1)/2 keys per query):
    //   router 2*d*E + shared K,V 4*d*H*Dh + k * (W_q, W_o: 4*d*H*Dh + scores and values 2*H*Dh*(T+1)).
    // The softmax and the gate products are not counted.
    int64_t flops_per_token(int64_t seq_len) const;

    std::shared_ptr<TopKRouter> router;
    std::shared_ptr<Linear> k_proj;  // weight (H*Dh, d_model), shared by all experts
    std::shared_ptr<Linear> v_proj;  // weight (H*Dh, d_model), shared by all experts
    std::vector<std::shared_ptr<AttentionExpert>> experts;

private:
    void check_input(const Tensor& x, const char* who) const;
    // x (B, T, d) -> (B, H, T, Dh), the head layout of the attention op.
    Tensor heads_first(const Tensor& projected, int64_t B, int64_t T) const;
    DomainAttentionConfig config_;
    int64_t head_dim_ = 0;
};

}  // namespace mg::nn
