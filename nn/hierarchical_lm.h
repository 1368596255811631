// nn/hierarchical_lm.h: MoELanguageModel, the language model of the architecture report (demo 05):
//
//   ids (B, T) --token embedding + HybridPositionalEncoding--> x (B, T, d)
//              --L x MoEBlock-->
//                    x = x + dropout(DomainSpecificAttention(ln1(x)))      attention experts, top-k per token
//                    x = x + dropout(HierarchicalMixtureOfExperts(ln2(x)))  groups, then experts in the group
//              --final LayerNorm--> --tied head: (h / sqrt(d)) E^T--> logits (B, T, V)
//
// Every part is a Module of its own (nn/domain_attention.h, nn/hierarchical_moe.h,
// nn/transformer.h), so named_modules() walks the whole tree: demo 05 draws its dependency graph
// from it. Per-block activation checkpointing (config.checkpoint_activations) runs each block
// through nn::checkpoint: only the block inputs are kept, the block is recomputed in backward.
// Counters by component (total, active per token, FLOPs per token) reuse ModelCounts of nn/lm.h.
// Expert pruning (prune_experts) removes FFN experts after training. Walk-through:
// docs/demos/05_hierarchical_moe_lm.md; the parts: docs/nn/hierarchical_moe.md, docs/nn/transformer.md.
//
//   nn::MoELanguageModel lm(nn::MoELanguageModelConfig::named("d256_l2_e8"), gen);
//   auto out = lm(batch.input);      // out.logits (B, T, 256), out.balance_loss, out.layers[l] routings
//   Tensor loss = nn::MoELanguageModel::loss(out.logits, batch.target) + out.balance_loss;
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/random.h"
#include "nn/domain_attention.h"
#include "nn/hierarchical_moe.h"
#include "nn/layers.h"
#include "nn/lm.h"
#include "nn/module.h"
#include "nn/transformer.h"

namespace mg::nn {

struct MoELanguageModelConfig {
    int64_t vocab = 256;             // byte-level
    int64_t d_model = 256;
    int64_t layers = 2;
    int64_t max_seq = 128;           // longest sequence forward() accepts (the position tables' size)
    // ---- attention: DomainSpecificAttention (Mixture of Attention Heads) ----
    int64_t heads = 8;               // attention experts (each one head of head_dim, MoA's layout)
    int64_t attention_k = 2;         // attention experts per token
    int64_t head_dim = 0;            // 0 = d_model / attention_k: a token's k heads are d_model wide together
    // ---- FFN: HierarchicalMixtureOfExperts, experts = groups * experts_per_group ----
    int64_t experts = 8;             // all FFN experts of a layer
    int64_t groups = 2;              // G; experts / groups experts per group
    int64_t group_k = 1;             // k_g: groups per token
    int64_t k = 2;                   // experts per token inside each chosen group
    int64_t expert_hidden = 512;     // each expert d -> expert_hidden -> d (GELU)
    double group_capacity_factor = 0;  // level 1 capacity (docs/nn/routing.md); 0 = dropless
    double capacity_factor = 0;        // level 2, inside each group; 0 = dropless
    // ---- training ----
    double balance_alpha = 0.01;     // Switch balance loss weight of every router (both levels, attention)
    double dropout = 0.0;            // residual dropout after attention and after the MoE
    bool checkpoint_activations = false;  // recompute each block in backward (nn::checkpoint)
    bool memory_efficient_attention = true;  // mg::attention; false: attention_reference (T x T scores)
    ExpertSchedule schedule = ExpertSchedule::Auto;  // experts of a group: one after another or in parallel
    DType dtype = DType::Float32;

    // Throws std::invalid_argument naming the field when the configuration cannot be built.
    void validate() const;
    // "d256_l2_e8" (and "_g2_k2" etc. when a field differs from the defaults of a named config).
    std::string name() const;
    // A named configuration "d<D>_l<L>_e<E>": d_model D, L layers, E FFN experts in 2 groups
    // (E/2 each, k_g = 1, k = 2), 8 attention experts with k = 2, expert hidden width 2*D.
    // Throws std::invalid_argument for a name that does not parse or an E that is odd or < 4.
    static MoELanguageModelConfig named(const std::string& name);
};

// One block: pre-norm, attention experts then hierarchical FFN experts, each with a residual.
class MoEBlock : public Module {
public:
    MoEBlock(const MoELanguageModelConfig& config, Generator& gen);

    struct Output {
        Tensor y;                         // (B, T, d)
        Tensor balance_loss;              // 0-d: attention router + both FFN levels
        Routing attention_routing;        // over the B*T tokens
        HierarchicalRouting ffn_routing;  // over the B*T tokens
    };
    Output forward(const Tensor& x);      // x (B, T, d)
    Output operator()(const Tensor& x) { return forward(x); }
    std::string type_name() const override { return "MoEBlock"; }
    // The generators the forward draws from (dropout masks, router noise): a checkpoint replays them.
    std::vector<Generator*> generators();

    std::shared_ptr<LayerNorm> ln1, ln2;
    std::shared_ptr<DomainSpecificAttention> attn;
    std::shared_ptr<HierarchicalMixtureOfExperts> moe;
    std::shared_ptr<Dropout> drop1, drop2;  // undefined when dropout == 0

private:
    MoELanguageModelConfig config_;
};

class MoELanguageModel : public Module {
public:
    MoELanguageModel(const MoELanguageModelConfig& config, Generator& gen);

    struct LayerRouting {
        Routing attention;
        HierarchicalRouting ffn;
    };
    struct Output {
        Tensor logits;                      // (B, T, vocab)
        Tensor balance_loss;                // 0-d: the sum over blocks
        std::vector<LayerRouting> layers;   // one per block, tokens row-major over (B, T)
    };
    // ids (B, T) int64/int32, 1 <= T <= max_seq, every id in [0, vocab).
    Output forward(const Tensor& ids);
    Output operator()(const Tensor& ids) { return forward(ids); }
    // Mean next-token cross-entropy: logits (B, T, V), targets (B, T).
    static Tensor loss(const Tensor& logits, const Tensor& targets) { return LanguageModel::loss(logits, targets); }

    // Parameter and FLOP counts at sequence length seq (0 = max_seq), by component, read off the
    // modules as they are (so a pruned model counts what it has left):
    //   embedding  token table + the hybrid positions' learned table and gate; FLOPs: the mix, 3d
    //   attention  shared K, V projections and the attention experts' W_q, W_o; active: k of them
    //   router     the attention router, the group router, every group's router; active: the
    //              attention and group routers and the k_g biggest group routers
    //   experts    the FFN experts; active: k_g * k of them
    //   norms      the 2L + 1 LayerNorms; head: 0 (tied); FLOPs 2 d V
    // FLOPs: 2 per multiply-add of a matrix product, as LanguageModel::counts (docs/nn/transformer.md).
    ModelCounts counts(int64_t seq = 0) const;

    // Expert pruning (nn/pruning.cpp): in every layer, removes the FFN experts whose utilization
    // (one array of G * E per layer, indexed by global expert id, as metrics::compute_routing_stats
    // gives it for HierarchicalRouting::flat_expert_ids) is below `threshold`, with their router
    // rows. Throws std::invalid_argument, changing nothing, when a group would keep fewer than k
    // experts (pruning everything included) or the arrays do not match the layers.
    struct PruneResult {
        int64_t parameters_removed = 0;
        std::vector<std::vector<int64_t>> removed_experts;  // per layer, global ids
    };
    PruneResult prune_experts(const std::vector<std::vector<double>>& utilization, double threshold);

    // Turns per-block activation checkpointing on or off (the config's checkpoint_activations).
    void set_checkpoint_activations(bool on) { config_.checkpoint_activations = on; }

    std::string type_name() const override { return "MoELanguageModel"; }
    const MoELanguageModelConfig& config() const { return config_; }

    std::shared_ptr<Embedding> token_embedding;        // (vocab, d), also the head (tied)
    std::shared_ptr<HybridPositionalEncoding> positions;
    std::vector<std::shared_ptr<MoEBlock>> blocks;
    std::shared_ptr<LayerNorm> ln_f;

private:
    void check_ids(const Tensor& ids) const;
    MoELanguageModelConfig config_;
};

}  // namespace mg::nn
