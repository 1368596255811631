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
#include <memory>
#include <string>
#include <vector>

#include "engine/random.h"
#include "nn/module.h"

namespace mg::nn {

// The nonlinearity between an expert's layers. (Named for the experts so that it cannot clash
// with a general Activation of nn/layers.h.)
enum class ExpertActivation { ReLU, GELU };

// Routing-family options of a later issue (demo 02). The fields exist so that configurations
// can name them; anything but the default is refused with a clear error until it is built.
enum class RouterNoise { None, NoisyTopK };

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
    // ---- not implemented yet (routing family, demo 02) ----
    RouterNoise noise = RouterNoise::None;  // Shazeer noisy top-k: std = softplus(x W_noise)
    double jitter = 0;                      // Switch: x * U(1 - jitter, 1 + jitter) in training
    double capacity_factor = 0;             // 0 = unlimited: no slot is ever dropped
};

// What the router decided for a batch of T tokens.
struct Routing {
    Tensor logits;        // (T, E) x W^T (+ b)
    Tensor probs;         // (T, E) softmax over all experts
    Tensor indices;       // (T, k) int64, chosen experts, best first
    Tensor weights;       // (T, k) gate weights, differentiable (rows sum to 1 unless renormalize = false)
    Tensor balance_loss;  // 0-d: alpha * E * sum_e f_e P_e (a 0-d zero when alpha == 0)
    std::vector<int64_t> expert_counts;  // (E) routing slots per expert, on the host

    // indices flattened token-major (T*k), on the host: the input of metrics::compute_routing_stats.
    std::vector<int64_t> flat_expert_ids() const;
};

// logits = x W^T (+ b), W (E, d_in) as torch.nn.Linear(d_in, E) stores it; top-k; gate weights;
// Switch load-balancing loss.
class TopKRouter : public Module {
public:
    TopKRouter(const RouterConfig& config, Generator& gen);
    Routing forward(const Tensor& x);  // x (T, d_in)
    Routing operator()(const Tensor& x) { return forward(x); }
    std::string type_name() const override { return "TopKRouter"; }
    const RouterConfig& config() const { return config_; }

    Tensor weight;  // (E, d_in)
    Tensor bias;    // (E), undefined unless config.bias

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
// or one expert per thread (each GEMM on one thread). Auto picks by group size, see moe.cpp.
enum class ExpertSchedule { Auto, Serial, Parallel };

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
    // ---- not implemented yet (routing family, demo 02): passed on to the router ----
    RouterNoise noise = RouterNoise::None;
    double jitter = 0;
    double capacity_factor = 0;
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

    std::shared_ptr<TopKRouter> router;
    std::vector<std::shared_ptr<ExpertLayer>> experts;

private:
    void check_input(const Tensor& x) const;
    MoEConfig config_;
};

}  // namespace mg::nn
