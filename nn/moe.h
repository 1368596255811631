// nn/moe.h: the Mixture-of-Experts core: a top-k router, one MLP expert, and the sparse layer
// that joins them (router + E experts, tokens grouped by expert, a deterministic combine).
//
//   x (T, d_in) --TopKRouter--> indices (T, k), weights (T, k), balance_loss
//               --dispatch-->   one group of tokens per expert
//               --ExpertLayer-> each group through its expert (in parallel across experts)
//               --combine-->    y (T, d_out) = sum over the k slots of weight * expert output
//
// The math and the dispatch/combine step by step, with shapes: docs/nn/moe.md.
// Metrics of a routing (utilization, balance variance, specialization): nn/metrics.h.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/random.h"
#include "nn/module.h"

namespace mg::nn {

// The nonlinearity between an expert's layers. (Named for the experts so that it cannot clash
// with a general Activation of nn/layers.h.)
enum class ExpertActivation { ReLU, GELU };

// Shazeer et al. 2017 noisy top-k gating: in training, logits get N(0, 1) * softplus(x W_noise).
enum class RouterNoise { None, NoisyTopK };
// Which slots keep their place when an expert gets more than `capacity` of them:
//   FirstCome:   every token's first choice before any second choice, each pass in token order
//                (GShard / Switch: position in the batch decides);
//   HighestGate: slots with the largest gate weight first (Riquelme et al. 2021, "batch
//                prioritized routing"): a token the router is sure about is not dropped for one
//                it barely chose.
enum class CapacityPriority { FirstCome, HighestGate };
// What happens to the gate weights of a token that lost a slot:
//   Zero:        the lost slot contributes nothing; the kept gates stay as they were (in a
//                transformer the residual connection carries the token);
//   Renormalize: the kept gates are scaled up to the sum all k gates had, so the token's output
//                keeps its scale (a classifier has no residual).
enum class DropPolicy { Zero, Renormalize };

// All the router's options; docs/nn/routing.md gives each one's formula, paper and use.
struct RouterConfig {
    int64_t d_in = 0;
    int64_t experts = 0;
    int64_t k = 2;
    double balance_alpha = 0.01;     // Switch balance loss weight; 0 turns the loss off
    // How the gate weights of the k kept experts are made (docs/nn/moe.md, "Gating"):
    //   softmax_over_topk = true:   Mixtral, softmax over the k kept logits
    //   false, renormalize = true:  softmax over all E, keep the top k, divide by their sum (the
    //                               same numbers as Mixtral's in exact arithmetic)
    //   false, renormalize = false: Switch / Shazeer, the kept probabilities as they are (rows sum
    //                               to less than 1; with k = 1 the only way the task loss trains
    //                               the router)
    bool softmax_over_topk = true;
    bool renormalize = true;
    bool bias = false;               // logits = x W^T (+ b)
    DType dtype = DType::Float32;    // of the parameters (Float64 for gradient checks)
    // ---- noise (training only; drawn from the router's own Generator) ----
    RouterNoise noise = RouterNoise::None;  // NoisyTopK adds the parameter noise_weight (E, d_in), zeros
    double jitter = 0;                      // Switch: router input x * U(1 - jitter, 1 + jitter), in [0, 1)
    // ---- capacity: capacity = ceil(k * tokens * capacity_factor / experts) slots per expert ----
    double capacity_factor = 0;             // in training; 0 = unlimited (dropless): no slot is dropped
    std::optional<double> eval_capacity_factor = std::nullopt;  // in eval(); unset = capacity_factor
    CapacityPriority capacity_priority = CapacityPriority::FirstCome;
    DropPolicy drop_policy = DropPolicy::Zero;
    // ---- more auxiliary losses (each 0 = off; all are summed into Routing::aux_loss) ----
    double importance_alpha = 0;     // Shazeer: alpha * CV^2 of the per-expert sums of gate weights
    double load_alpha = 0;           // Shazeer: alpha * CV^2 of the smooth load estimate (needs NoisyTopK, k < E)
    double z_loss_alpha = 0;         // ST-MoE router z-loss: alpha * mean_t logsumexp(logits_t)^2 (paper: 1e-3)
};

// What the router decided for a batch of T tokens. Slot (t, j) is token t's j-th choice; it is
// kept, or dropped when its expert was already full (only with a capacity factor).
struct Routing {
    Tensor logits;        // (T, E) the logits routing used: x' W^T (+ b), x' = jittered x, plus
                          //        the Shazeer noise in training (equal to clean_logits otherwise)
    Tensor clean_logits;  // (T, E) the same without the Shazeer noise
    Tensor probs;         // (T, E) softmax(logits) over all experts
    Tensor indices;       // (T, k) int64, chosen experts, best first (dropped slots included)
    Tensor weights;       // (T, k) gate weights, differentiable; a dropped slot's weight is 0
                          //        (rows sum to 1 unless renormalize = false or a slot was dropped
                          //        with DropPolicy::Zero)
    // Auxiliary losses, each a 0-d tensor with its alpha inside (a 0-d zero when alpha == 0),
    // and their sum, the one term a training loop adds: loss = task_loss + routing.aux_loss.
    Tensor balance_loss;     // alpha * E * sum_e f_e P_e (Switch)
    Tensor importance_loss;  // alpha * CV(importance)^2 (Shazeer)
    Tensor load_loss;        // alpha * CV(load)^2 (Shazeer)
    Tensor z_loss;           // alpha * mean_t logsumexp(logits_t)^2 (ST-MoE)
    Tensor aux_loss;         // balance + importance + load + z
    // On the host:
    std::vector<int64_t> expert_counts;  // (E) kept slots per expert (= the group sizes of the layer)
    std::vector<int64_t> chosen_counts;  // (E) slots per expert before the capacity limit
    std::vector<uint8_t> kept;           // (T*k) token-major: 1 kept, 0 dropped
    int64_t capacity = 0;                // slots per expert; 0 = unlimited
    int64_t dropped_slots = 0;           // slots that lost their place
    int64_t dropped_tokens = 0;          // tokens that lost at least one slot

    // Expert of each slot, token-major (T*k), -1 for a dropped slot: the input of
    // metrics::compute_routing_stats, which turns the -1s into its dropped_fraction.
    std::vector<int64_t> flat_expert_ids() const;
    // dropped_tokens / T (0 for no tokens): the same number as RoutingStats::dropped_fraction.
    double dropped_fraction() const;
};

// logits = x W^T (+ b), W (E, d_in) as torch.nn.Linear(d_in, E) stores it; top-k; gate weights;
// the capacity limit; the auxiliary losses. In train() it adds the noise it is configured with,
// drawn from its own Philox `generator` (seeded from the constructor's gen, saved in checkpoints),
// so a seed reproduces a run and a resumed run draws the same noise.
class TopKRouter : public Module {
public:
    TopKRouter(const RouterConfig& config, Generator& gen);
    Routing forward(const Tensor& x);  // x (T, d_in)
    Routing operator()(const Tensor& x) { return forward(x); }
    std::string type_name() const override { return "TopKRouter"; }
    const RouterConfig& config() const { return config_; }
    // Noise on (NoisyTopK or jitter > 0): the router then owns a generator.
    bool stochastic() const;
    // The capacity for T tokens in the current mode (train/eval); 0 = unlimited.
    int64_t capacity(int64_t tokens) const;
    std::map<std::string, std::string> extra_state() const override;
    void set_extra_state(const std::map<std::string, std::string>& state) override;

    Tensor weight;        // (E, d_in)
    Tensor bias;          // (E), undefined unless config.bias
    Tensor noise_weight;  // (E, d_in) W_noise, undefined unless noise = NoisyTopK
    Generator generator;  // the noise's; its seed is drawn from gen only when stochastic()

private:
    RouterConfig config_;
};

// One expert: an MLP d_in -> hidden[0] -> ... -> d_out with the activation between layers (none
// after the last). Layer i has weight (out, in) and bias (out), named "layers.i.weight" /
// "layers.i.bias", initialised like torch.nn.Linear: U(-1/sqrt(in), 1/sqrt(in)).
struct ExpertConfig {
    int64_t d_in = 0;
    std::vector<int64_t> hidden;
    int64_t d_out = 0;
    ExpertActivation act = ExpertActivation::ReLU;
    DType dtype = DType::Float32;
};

class ExpertLayer : public Module {
public:
    ExpertLayer(const ExpertConfig& config, Generator& gen);
    Tensor forward(const Tensor& x);  // (N, d_in) -> (N, d_out)
    Tensor operator()(const Tensor& x) { return forward(x); }
    std::string type_name() const override { return "ExpertLayer"; }
    const ExpertConfig& config() const { return config_; }
    int64_t flops_per_token() const;  // multiply-adds x 2 of the GEMMs

    std::vector<Tensor> weights;  // layer i: (out_i, in_i)
    std::vector<Tensor> biases;   // layer i: (out_i)

private:
    ExpertConfig config_;
};

// How SpecializedExpertNetwork runs its experts: one after another (each GEMM uses every thread),
// one expert per thread (each GEMM on one thread), or all experts in one grouped_matmul per layer
// (the experts' weights stacked, one kernel for every group: what a GPU wants, since it never
// waits for the host between experts). Auto: Grouped on the GPU; on the CPU Serial or Parallel
// by group size, see moe.cpp.
enum class ExpertSchedule { Auto, Serial, Parallel, Grouped };

struct MoEConfig {
    int64_t d_in = 0;
    std::vector<int64_t> hidden;
    int64_t d_out = 0;
    int64_t experts = 4;
    int64_t k = 2;
    double balance_alpha = 0.01;
    bool softmax_over_topk = true;
    bool renormalize = true;         // with softmax_over_topk = false, see RouterConfig
    bool router_bias = false;
    ExpertActivation act = ExpertActivation::ReLU;
    ExpertSchedule schedule = ExpertSchedule::Auto;
    DType dtype = DType::Float32;
    // ---- the router options of RouterConfig, passed on as they are (docs/nn/routing.md) ----
    RouterNoise noise = RouterNoise::None;
    double jitter = 0;
    double capacity_factor = 0;      // 0 = dropless
    std::optional<double> eval_capacity_factor = std::nullopt;
    CapacityPriority capacity_priority = CapacityPriority::FirstCome;
    DropPolicy drop_policy = DropPolicy::Zero;
    double importance_alpha = 0;
    double load_alpha = 0;
    double z_loss_alpha = 0;
};

// Router + E experts as one sparse layer. Each token runs through its k chosen experts only, so
// expert FLOPs grow with k, not with E.
class SpecializedExpertNetwork : public Module {
public:
    SpecializedExpertNetwork(const MoEConfig& config, Generator& gen);

    struct Output {
        Tensor y;             // (T, d_out)
        Routing routing;
        Tensor balance_loss;  // 0-d, the same tensor as routing.balance_loss
        Tensor aux_loss;      // 0-d, the same tensor as routing.aux_loss (all auxiliary losses)
    };
    Output forward(const Tensor& x);  // x (T, d_in)
    Output operator()(const Tensor& x) { return forward(x); }
    // The same function computed densely: every expert on every token, masked by the gates.
    // E/k times the expert FLOPs; the oracle of the tests and the baseline of bench/moe_layer.
    Tensor forward_dense_reference(const Tensor& x);

    std::string type_name() const override { return "SpecializedExpertNetwork"; }
    const MoEConfig& config() const { return config_; }
    // Parameters one token uses: the router plus k experts (all experts are the same size).
    int64_t active_parameters() const;

    // Expert pruning (nn/pruning.cpp, docs/nn/moe.md "Expert pruning"): keeps only the experts in
    // `keep` (ascending, distinct, in [0, experts)), renumbered 0..n-1 in that order, and the
    // router rows of those experts, so the gate softmax renormalises over the experts left.
    // k becomes min(k, n). A token whose k chosen experts are all kept gets exactly the output
    // it had (with softmax_over_topk or renormalize; not with renormalize = false, where the
    // softmax's denominator loses the removed experts). Returns the parameters removed. Throws
    // std::invalid_argument when `keep` is empty (pruning every expert) or malformed.
    int64_t prune_experts(const std::vector<int64_t>& keep);

    std::shared_ptr<TopKRouter> router;
    std::vector<std::shared_ptr<ExpertLayer>> experts;

private:
    void check_input(const Tensor& x) const;
    Tensor combine(const Tensor& y_sorted, const Tensor& order, const Tensor& weights, int64_t T) const;
    Tensor grouped_experts(const Tensor& x_sorted, const std::vector<int64_t>& counts);
    MoEConfig config_;
};

}  // namespace mg::nn
