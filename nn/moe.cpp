// nn/moe.cpp: ExpertLayer and the sparse SpecializedExpertNetwork (see nn/moe.h); the router is in
// nn/router.cpp.
// Every step is written in engine ops, so autograd differentiates it and it runs on any device;
// docs/nn/moe.md walks through the same code with the shapes.
#include "nn/moe.h"

#include "nn/moe_internal.h"

#include <omp.h>

#include <cmath>
#include <exception>
#include <stdexcept>

namespace mg::nn {

using detail::check_tokens;
using detail::kaiming_uniform;
using detail::require_float_dtype;

// ---- ExpertLayer ---------------------------------------------------------------------------------
ExpertLayer::ExpertLayer(const ExpertConfig& config, Generator& gen) : config_(config) {
    require_float_dtype(config.dtype, "ExpertLayer");
    std::vector<int64_t> widths{config.d_in};
    widths.insert(widths.end(), config.hidden.begin(), config.hidden.end());
    widths.push_back(config.d_out);
    for (int64_t w : widths)
        if (w <= 0) throw std::invalid_argument("ExpertLayer: every layer width must be positive");
    for (size_t i = 0; i + 1 < widths.size(); ++i) {
        const int64_t in = widths[i], out = widths[i + 1];
        const std::string name = "layers." + std::to_string(i);
        weights.push_back(register_parameter(name + ".weight", kaiming_uniform({out, in}, in, config.dtype, gen)));
        biases.push_back(register_parameter(name + ".bias", kaiming_uniform({out}, in, config.dtype, gen)));
    }
}

Tensor ExpertLayer::forward(const Tensor& x) {
    check_tokens(x, config_.d_in, config_.dtype, "ExpertLayer");
    Tensor h = x;
    // linear() fuses the bias and a ReLU into the GEMM: one pass over each (N, out_i) activation.
    for (size_t i = 0; i < weights.size(); ++i) {
        const bool hidden = i + 1 < weights.size();
        const bool relu = hidden && config_.act == ExpertActivation::ReLU;
        h = linear(h, weights[i], biases[i], relu);  // (N, out_i)
        if (hidden && !relu) h = gelu(h);
    }
    return h;
}

int64_t ExpertLayer::flops_per_token() const {
    int64_t flops = 0;
    for (const Tensor& w : weights) flops += 2 * w.numel();
    return flops;
}

// ---- SpecializedExpertNetwork --------------------------------------------------------------------
SpecializedExpertNetwork::SpecializedExpertNetwork(const MoEConfig& config, Generator& gen) : config_(config) {
    RouterConfig rc;
    rc.d_in = config.d_in;
    rc.experts = config.experts;
    rc.k = config.k;
    rc.balance_alpha = config.balance_alpha;
    rc.softmax_over_topk = config.softmax_over_topk;
    rc.renormalize = config.renormalize;
    rc.bias = config.router_bias;
    rc.dtype = config.dtype;
    rc.noise = config.noise;
    rc.jitter = config.jitter;
    rc.capacity_factor = config.capacity_factor;
    rc.eval_capacity_factor = config.eval_capacity_factor;
    rc.capacity_priority = config.capacity_priority;
    rc.drop_policy = config.drop_policy;
    rc.importance_alpha = config.importance_alpha;
    rc.load_alpha = config.load_alpha;
    rc.z_loss_alpha = config.z_loss_alpha;
    router = register_module("router", std::make_shared<TopKRouter>(rc, gen));
    ExpertConfig ec{config.d_in, config.hidden, config.d_out, config.act, config.dtype};
    for (int64_t e = 0; e < config.experts; ++e)
        experts.push_back(register_module("experts." + std::to_string(e), std::make_shared<ExpertLayer>(ec, gen)));
}

void SpecializedExpertNetwork::check_input(const Tensor& x) const {
    check_tokens(x, config_.d_in, config_.dtype, "SpecializedExpertNetwork");
}

int64_t SpecializedExpertNetwork::active_parameters() const {
    return router->num_parameters() + config_.k * experts[0]->num_parameters();
}

SpecializedExpertNetwork::Output SpecializedExpertNetwork::forward(const Tensor& x) {
    check_input(x);
    const int64_t T = x.size(0), k = config_.k, E = config_.experts;
    Output out;
    out.routing = router->forward(x);
    out.balance_loss = out.routing.balance_loss;
    out.aux_loss = out.routing.aux_loss;
    const Routing& r = out.routing;
    if (T == 0) {
        out.y = Tensor::zeros({0, config_.d_out}, config_.dtype, x.device());
        return out;
    }

    // 1. Group the T*k routing slots by expert. Slot s = t*k + j is token t's j-th choice.
    //    A stable sort keeps each group in token order, so the result never depends on threads.
    //    A slot dropped by the capacity limit goes to a bucket E, after every expert's group.
    const int64_t dropped = r.dropped_slots, kept = T * k - dropped;
    Tensor slot_expert = r.indices.reshape({T * k});  // (T*k) expert of each slot
    if (dropped > 0) {
        std::vector<int64_t> ids = r.flat_expert_ids();
        for (int64_t& e : ids) e = e < 0 ? E : e;
        slot_expert = Tensor::from_vector(ids, {T * k}, x.device());
    }
    Tensor order = argsort(slot_expert, 0);           // (T*k) slots, grouped by expert, dropped last
    Tensor kept_order = dropped > 0 ? slice(order, 0, 0, kept) : order;  // (kept)
    Tensor slot_token = kept_order / (double)k;       // (kept) the token of each sorted slot (int64)
    const std::vector<int64_t>& counts = r.expert_counts;  // (E) group sizes (kept slots), on the host

    // 2. Dispatch: copy every kept slot's token into its group, then cut the groups apart (views).
    Tensor x_sorted = index_select(x, 0, slot_token);          // (kept, d_in)
    std::vector<Tensor> groups = split(x_sorted, counts, 0);   // E views, (counts[e], d_in)

    // 3. Each expert on its own group: one GEMM chain per expert, E/k times fewer rows each than
    //    the dense layer. Either all experts at once (grouped_matmul), one expert at a time, each
    //    GEMM using every thread, or one expert per thread (inside a parallel region the GEMM runs
    //    on one thread).
    const bool grouped = config_.schedule == ExpertSchedule::Grouped ||
                         (config_.schedule == ExpertSchedule::Auto && x.device() != Device::CPU);
    if (grouped) {
        Tensor y_kept = grouped_experts(x_sorted, counts);           // (kept, d_out)
        if (dropped > 0) y_kept = concat({y_kept, Tensor::zeros({dropped, config_.d_out}, config_.dtype, x.device())}, 0);
        out.y = combine(y_kept, order, r.weights, T);
        return out;
    }
    std::vector<int64_t> busy;  // experts with at least one slot, in expert order
    for (int64_t e = 0; e < E; ++e)
        if (counts[e] > 0) busy.push_back(e);
    std::vector<Tensor> outputs(E);  // (counts[e], d_out)
    bool parallel = config_.schedule == ExpertSchedule::Parallel;
    if (config_.schedule == ExpertSchedule::Auto) {
        // Measured with bench/moe_layer.cpp (bench/RESULTS.md, "MoE layer (CPU)"): at demo 01's
        // size (64 tokens, 4 small experts) a parallel region costs more than it saves, since the
        // time goes to per-op overhead, not arithmetic; with groups of >= 256 rows one expert per
        // thread was 10-17% faster than splitting each GEMM across the threads.
        parallel = omp_get_max_threads() > 1 && busy.size() > 1 && (T * k) / (int64_t)busy.size() >= 256;
    }
    if (parallel) {
        // Thread safety: each expert touches only its own parameters and its own group view, so
        // no two threads create the autograd record of the same leaf. Recording on/off is
        // per thread, so the caller's NoGradGuard is passed on explicitly.
        const bool recording = grad_enabled();
        std::vector<std::exception_ptr> errors(busy.size());
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t i = 0; i < busy.size(); ++i) {
            try {
                if (recording) {
                    outputs[busy[i]] = experts[busy[i]]->forward(groups[busy[i]]);
                } else {
                    NoGradGuard no_grad;
                    outputs[busy[i]] = experts[busy[i]]->forward(groups[busy[i]]);
                }
            } catch (...) {
                errors[i] = std::current_exception();
            }
        }
        for (auto& error : errors)
            if (error) std::rethrow_exception(error);
    } else {
        for (int64_t e : busy) outputs[e] = experts[e]->forward(groups[e]);
    }

    // 4. Combine, as a gather: put the expert outputs back in slot order, weight, sum over k.
    //    Every output row is read by exactly one slot, so nothing is added concurrently (no
    //    atomics) and the sum over k runs in a fixed order: bitwise reproducible.
    std::vector<Tensor> sorted_outputs;
    for (int64_t e : busy) sorted_outputs.push_back(outputs[e]);
    // Dropped slots output zeros (their weight is 0 too): the token keeps only its other slots.
    if (dropped > 0) sorted_outputs.push_back(Tensor::zeros({dropped, config_.d_out}, config_.dtype, x.device()));
    out.y = combine(concat(sorted_outputs, 0), order, r.weights, T);
    return out;
}

// y_sorted (T*k, d_out) holds the slots' outputs in sorted (grouped) order; puts them back in
// slot order and sums each token's k slots with their gate weights.
Tensor SpecializedExpertNetwork::combine(const Tensor& y_sorted, const Tensor& order, const Tensor& weights,
                                         int64_t T) const {
    Tensor inverse = argsort(order, 0);                                      // (T*k) sorted position of each slot
    Tensor y_slots = index_select(y_sorted, 0, inverse);                     // (T*k, d_out) in slot order
    Tensor y_tk = y_slots.reshape({T, config_.k, config_.d_out});            // (T, k, d_out)
    return sum(y_tk * weights.unsqueeze(-1), 1);                             // (T, d_out)
}

// Every expert on its group in one grouped_matmul per layer: the experts' weights of layer l are
// stacked into (E, out, in) and their biases into (E, out) (concat is differentiable, so each
// expert's own parameters get their gradients back), and each row adds its expert's bias, picked
// by index_select. One kernel per layer whatever E, and the group sizes never leave the device
// again. An expert that received no row gets a zero gradient (here) instead of none (the other
// schedules), which matters only to optimizers that tell the two apart.
Tensor SpecializedExpertNetwork::grouped_experts(const Tensor& x_sorted, const std::vector<int64_t>& counts) {
    const int64_t E = config_.experts;
    std::vector<int64_t> offsets(E + 1, 0), row_expert;
    for (int64_t e = 0; e < E; ++e) {
        offsets[e + 1] = offsets[e] + counts[e];
        row_expert.insert(row_expert.end(), counts[e], e);
    }
    const Device device = x_sorted.device();
    Tensor off = Tensor::from_vector(offsets, {E + 1}, device);                     // host -> device, no wait
    Tensor rows = Tensor::from_vector(row_expert, {(int64_t)row_expert.size()}, device);  // expert of each row
    Tensor h = x_sorted;
    const size_t layers = experts[0]->weights.size();
    for (size_t l = 0; l < layers; ++l) {
        std::vector<Tensor> ws, bs;
        for (const auto& expert : experts) {
            ws.push_back(expert->weights[l].unsqueeze(0));  // (1, out, in)
            bs.push_back(expert->biases[l].unsqueeze(0));   // (1, out)
        }
        h = grouped_matmul(h, concat(ws, 0), off) + index_select(concat(bs, 0), 0, rows);  // (rows, out)
        if (l + 1 < layers) h = config_.act == ExpertActivation::ReLU ? relu(h) : gelu(h);
    }
    return h;
}

Tensor SpecializedExpertNetwork::forward_dense_reference(const Tensor& x) {
    check_input(x);
    const int64_t T = x.size(0), E = config_.experts;
    Routing r = router->forward(x);
    // gates (T, E): the k gate weights of each token at their experts' columns, 0 elsewhere.
    Tensor gates = scatter_add(Tensor::zeros({T, E}, config_.dtype, x.device()), 1, r.indices, r.weights);
    std::vector<Tensor> all;
    for (int64_t e = 0; e < E; ++e) all.push_back(experts[e]->forward(x).unsqueeze(1));  // (T, 1, d_out)
    Tensor stacked = concat(all, 1);                   // (T, E, d_out): every expert on every token
    return sum(stacked * gates.unsqueeze(-1), 1);      // (T, d_out)
}

}  // namespace mg::nn
