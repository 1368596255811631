// nn/hierarchical_moe.h: a two-level Mixture of Experts. A group router picks k_g of G groups for
// each token; inside each chosen group a SpecializedExpertNetwork (nn/moe.h) picks k of its E
// experts. The expert's final weight is the product of the two gates.
//
//   x (T, d_in) --group_router--> group indices (T, k_g), group gates (T, k_g), group balance loss
//               --dispatch-->     the tokens of each group (each token goes to k_g groups)
//               --groups[g]-->    a whole sparse MoE layer on its own tokens: y_g, routing_g, loss_g
//               --combine-->      y (T, d_out) = sum over the k_g group slots of gate * y_g
//
// So y_t = sum_{g in top_kg(t)} G_tg * sum_{e in top_k(g, t)} g_tge * expert_ge(x_t): k_g * k
// experts per token, out of G * E. Why two levels: the group router makes a coarse choice (in demo
// 05, roughly a domain), the group's router a fine one, and each router only scores G or E
// candidates instead of G * E. The math and the code walk-through: docs/nn/hierarchical_moe.md.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/random.h"
#include "nn/moe.h"
#include "nn/module.h"

namespace mg::nn {

struct HierarchicalMoEConfig {
    int64_t d_in = 0;
    std::vector<int64_t> hidden;     // each expert: d_in -> hidden... -> d_out
    int64_t d_out = 0;
    int64_t groups = 2;              // G
    int64_t group_k = 1;             // k_g: groups per token
    int64_t experts_per_group = 4;   // E
    int64_t k = 2;                   // experts per token inside each chosen group
    double group_balance_alpha = 0.01;  // Switch balance loss of the group router
    double balance_alpha = 0.01;        // Switch balance loss of each group's router
    bool softmax_over_topk = true;      // both levels; see RouterConfig
    bool renormalize = true;
    bool router_bias = false;
    // Capacity factors (docs/nn/routing.md), 0 = dropless. Level 1: each group takes at most
    // ceil(k_g * T * cf / G) of the T*k_g group slots; a dropped slot contributes nothing (the
    // token's other slots, or in a transformer the residual, carry it). Level 2: inside each
    // group, over the tokens that group received, as SpecializedExpertNetwork does.
    double group_capacity_factor = 0;
    double capacity_factor = 0;
    ExpertActivation act = ExpertActivation::ReLU;
    ExpertSchedule schedule = ExpertSchedule::Auto;  // inside each group
    DType dtype = DType::Float32;
};

// What both levels decided for a batch of T tokens.
struct HierarchicalRouting {
    Routing group;                 // level 1: over the G groups, (T, k_g)
    // Level 2: one Routing per group, over the tokens that group received (in token order, see
    // group_tokens). A group that received no token has undefined tensors and zero counts.
    std::vector<Routing> experts;
    std::vector<std::vector<int64_t>> group_tokens;  // (G) the token ids each group received
    int64_t experts_per_group = 0;
    // Both levels joined: for token t, group slot j and expert slot i, column j * k + i holds
    // the global expert id g * E + e and the final gate G_tg * g_tge.
    Tensor indices;  // (T, k_g * k) int64 global expert ids g * E + e; -1 for a slot a capacity dropped
    Tensor weights;  // (T, k_g * k) differentiable; rows sum to 1 with softmax_over_topk

    // Token-major host vectors, the inputs of metrics::compute_routing_stats:
    std::vector<int64_t> flat_group_ids() const;   // (T * k_g) with k = k_g, experts = G
    std::vector<int64_t> flat_expert_ids() const;  // (T * k_g * k) with k = k_g * k, experts = G * E
};

class HierarchicalMixtureOfExperts : public Module {
public:
    HierarchicalMixtureOfExperts(const HierarchicalMoEConfig& config, Generator& gen);

    struct Output {
        Tensor y;                    // (T, d_out)
        HierarchicalRouting routing;
        Tensor balance_loss;         // 0-d: group_balance_loss + expert_balance_loss (add to the task loss)
        Tensor group_balance_loss;   // 0-d: the group router's Switch loss
        Tensor expert_balance_loss;  // 0-d: the mean over groups that got tokens of their routers' losses
    };
    Output forward(const Tensor& x);  // x (T, d_in)
    Output operator()(const Tensor& x) { return forward(x); }
    // The same function computed densely: every expert of every group on every token, weighted
    // by the product of the gates (0 for experts not chosen). G*E / (k_g*k) times the expert
    // FLOPs; the oracle of the tests.
    Tensor forward_dense_reference(const Tensor& x);

    std::string type_name() const override { return "HierarchicalMixtureOfExperts"; }
    const HierarchicalMoEConfig& config() const { return config_; }
    int64_t total_experts() const { return config_.groups * config_.experts_per_group; }
    // Parameters one token uses: the group router, plus k_g groups' routers and k experts each.
    int64_t active_parameters() const;
    // Multiply-adds x 2 of the matrix products one token goes through: the group router
    // (d_in x G), then in each of its k_g groups the router (d_in x E) and k experts. The
    // elementwise gate products and sums (O(k_g * k * d_out)) are not counted.
    int64_t flops_per_token() const;

    // Expert pruning (nn/pruning.cpp): removes the experts with the given global ids (g * E + e,
    // as in HierarchicalRouting::indices) from their groups (SpecializedExpertNetwork::
    // prune_experts). Global ids keep their meaning after pruning: the routing reports the
    // original ids, so utilization arrays keep G * E entries (0 for a removed expert). Returns
    // the parameters removed. Throws std::invalid_argument for an id out of range, or when a
    // group would lose all its experts (the group router would still send tokens there).
    int64_t prune_experts(const std::vector<int64_t>& global_ids);
    // The original global id of each expert still in group g (g * E + e before any pruning).
    const std::vector<int64_t>& expert_ids(int64_t group) const { return expert_ids_.at((size_t)group); }
    int64_t remaining_experts() const;

    std::shared_ptr<TopKRouter> group_router;
    std::vector<std::shared_ptr<SpecializedExpertNetwork>> groups;

private:
    void check_input(const Tensor& x) const;
    HierarchicalMoEConfig config_;
    std::vector<std::vector<int64_t>> expert_ids_;  // (G) original global ids of each group's experts
};

}  // namespace mg::nn
