// nn/hierarchical_moe.cpp: the two-level MoE of nn/hierarchical_moe.h, in engine ops (so autograd
// differentiates it and it runs on any device). The dispatch and the combine are the same steps
// as SpecializedExpertNetwork's (nn/moe.cpp), one level up: group slots instead of expert slots.
#include "nn/hierarchical_moe.h"

#include <algorithm>
#include <stdexcept>

namespace mg::nn {

namespace {
void require_positive(int64_t value, const char* name) {
    if (value <= 0)
        throw std::invalid_argument(std::string("HierarchicalMixtureOfExperts: ") + name + " must be positive, got " +
                                    std::to_string(value));
}

// A group's local expert indices (n, k) as global ids: before pruning local e of group g is
// g * E + e; after pruning, expert_ids[e] keeps the id the expert had when the layer was built.
// A group's local expert ids as global ones (g * E + e, kept through pruning); a slot the group's
// capacity dropped becomes -1, as metrics::compute_routing_stats expects.
Tensor global_expert_ids(const Routing& routing, const std::vector<int64_t>& expert_ids) {
    std::vector<int64_t> ids = routing.indices.to_vector<int64_t>();
    for (size_t s = 0; s < ids.size(); ++s) ids[s] = routing.kept[s] ? expert_ids[(size_t)ids[s]] : -1;
    return Tensor::from_vector(ids, routing.indices.shape(), routing.indices.device());
}
}  // namespace

std::vector<int64_t> HierarchicalRouting::flat_group_ids() const { return group.flat_expert_ids(); }  // -1: dropped
std::vector<int64_t> HierarchicalRouting::flat_expert_ids() const { return indices.to_vector<int64_t>(); }

HierarchicalMixtureOfExperts::HierarchicalMixtureOfExperts(const HierarchicalMoEConfig& config, Generator& gen)
    : config_(config) {
    require_positive(config.d_in, "d_in");
    require_positive(config.d_out, "d_out");
    require_positive(config.groups, "groups");
    require_positive(config.experts_per_group, "experts_per_group");
    if (config.group_k <= 0 || config.group_k > config.groups)
        throw std::invalid_argument("HierarchicalMixtureOfExperts: group_k = " + std::to_string(config.group_k) +
                                    " must be in [1, groups = " + std::to_string(config.groups) + "]");
    if (config.k <= 0 || config.k > config.experts_per_group)
        throw std::invalid_argument("HierarchicalMixtureOfExperts: k = " + std::to_string(config.k) +
                                    " must be in [1, experts_per_group = " + std::to_string(config.experts_per_group) + "]");

    RouterConfig rc;
    rc.d_in = config.d_in;
    rc.experts = config.groups;
    rc.k = config.group_k;
    rc.balance_alpha = config.group_balance_alpha;
    rc.softmax_over_topk = config.softmax_over_topk;
    rc.renormalize = config.renormalize;
    rc.bias = config.router_bias;
    rc.capacity_factor = config.group_capacity_factor;
    rc.dtype = config.dtype;
    group_router = register_module("group_router", std::make_shared<TopKRouter>(rc, gen));

    MoEConfig mc;
    mc.d_in = config.d_in;
    mc.hidden = config.hidden;
    mc.d_out = config.d_out;
    mc.experts = config.experts_per_group;
    mc.k = config.k;
    mc.balance_alpha = config.balance_alpha;
    mc.softmax_over_topk = config.softmax_over_topk;
    mc.renormalize = config.renormalize;
    mc.router_bias = config.router_bias;
    mc.capacity_factor = config.capacity_factor;
    mc.act = config.act;
    mc.schedule = config.schedule;
    mc.dtype = config.dtype;
    for (int64_t g = 0; g < config.groups; ++g) {
        groups.push_back(register_module("groups." + std::to_string(g), std::make_shared<SpecializedExpertNetwork>(mc, gen)));
        expert_ids_.emplace_back();
        for (int64_t e = 0; e < config.experts_per_group; ++e) expert_ids_.back().push_back(g * config.experts_per_group + e);
    }
}

void HierarchicalMixtureOfExperts::check_input(const Tensor& x) const {
    if (x.dim() != 2 || x.size(1) != config_.d_in)
        throw std::invalid_argument("HierarchicalMixtureOfExperts: expected input of shape (tokens, " +
                                    std::to_string(config_.d_in) + "), got " + shape_str(x.shape()));
    if (x.dtype() != config_.dtype)
        throw std::invalid_argument(std::string("HierarchicalMixtureOfExperts: input is ") + dtype_name(x.dtype()) +
                                    " but parameters are " + dtype_name(config_.dtype));
}

// After pruning, groups differ in router size and perhaps k: count the k_g biggest (the most a token can use).
int64_t HierarchicalMixtureOfExperts::active_parameters() const {
    std::vector<int64_t> per_group;
    for (const auto& group : groups) per_group.push_back(group->active_parameters());
    std::sort(per_group.rbegin(), per_group.rend());
    int64_t n = group_router->num_parameters();
    for (int64_t j = 0; j < config_.group_k; ++j) n += per_group[(size_t)j];
    return n;
}

int64_t HierarchicalMixtureOfExperts::remaining_experts() const {
    int64_t n = 0;
    for (const auto& ids : expert_ids_) n += (int64_t)ids.size();
    return n;
}

int64_t HierarchicalMixtureOfExperts::flops_per_token() const {
    const int64_t group_router_flops = 2 * config_.d_in * config_.groups;
    const int64_t expert_flops = groups[0]->experts[0]->flops_per_token();
    std::vector<int64_t> per_group;  // router + k experts of each group (they differ only after pruning)
    for (const auto& group : groups)
        per_group.push_back(2 * config_.d_in * group->config().experts + group->config().k * expert_flops);
    std::sort(per_group.rbegin(), per_group.rend());
    int64_t flops = group_router_flops;
    for (int64_t j = 0; j < config_.group_k; ++j) flops += per_group[(size_t)j];
    return flops;
}

HierarchicalMixtureOfExperts::Output HierarchicalMixtureOfExperts::forward(const Tensor& x) {
    check_input(x);
    const int64_t T = x.size(0), G = config_.groups, kg = config_.group_k, E = config_.experts_per_group,
                  k = config_.k, d_out = config_.d_out;
    Output out;
    HierarchicalRouting& hr = out.routing;
    hr.experts_per_group = E;
    hr.group = group_router->forward(x);
    hr.experts.resize(G);
    hr.group_tokens.resize(G);
    out.group_balance_loss = hr.group.balance_loss;
    if (T == 0) {
        // No tokens, nothing to balance (the router's mean probability over zero tokens is NaN).
        out.y = Tensor::zeros({0, d_out}, config_.dtype, x.device());
        out.group_balance_loss = Tensor::scalar(0, config_.dtype, x.device());
        out.expert_balance_loss = Tensor::scalar(0, config_.dtype, x.device());
        out.balance_loss = out.group_balance_loss + out.expert_balance_loss;
        hr.indices = Tensor::zeros({0, kg * k}, DType::Int64, x.device());
        hr.weights = Tensor::zeros({0, kg * k}, config_.dtype, x.device());
        for (int64_t g = 0; g < G; ++g) hr.experts[g].expert_counts.assign((size_t)groups[g]->config().experts, 0);
        return out;
    }

    // 1. Group the T*k_g group slots by group (slot s = t*k_g + j: token t's j-th group). The
    //    stable sort keeps each group's tokens in token order; a token is at most once per group.
    //    Slots the group capacity dropped get the id G: they sort last, into a part no group runs.
    std::vector<int64_t> slot_ids = hr.group.indices.to_vector<int64_t>();  // (T*k_g) token-major
    for (size_t s = 0; s < slot_ids.size(); ++s)
        if (!hr.group.kept[s]) slot_ids[s] = G;
    Tensor order = argsort(Tensor::from_vector(slot_ids, {T * kg}, x.device()), 0);  // grouped by group
    Tensor slot_token = order / (double)kg;                   // (T*k_g) token of each sorted slot
    std::vector<int64_t> counts = hr.group.expert_counts;     // (G) kept tokens per group ...
    const int64_t dropped = hr.group.dropped_slots;
    counts.push_back(dropped);                                // ... and the dropped slots last
    {
        std::vector<int64_t> tokens = slot_token.to_vector<int64_t>();
        int64_t start = 0;
        for (int64_t g = 0; g < G; ++g) {
            hr.group_tokens[g].assign(tokens.begin() + start, tokens.begin() + start + counts[g]);
            start += counts[g];
        }
    }

    // 2. Dispatch: each group's tokens and their group gates (views into one sorted copy).
    Tensor x_sorted = index_select(x, 0, slot_token);                                 // (T*k_g, d_in)
    Tensor gate_sorted = index_select(hr.group.weights.reshape({T * kg}), 0, order);  // (T*k_g)
    std::vector<Tensor> x_groups = split(x_sorted, counts, 0);                         // (n_g, d_in), G+1 parts
    std::vector<Tensor> gate_groups = split(gate_sorted, counts, 0);                   // (n_g)

    // 3. Each group is a whole sparse MoE layer on its own tokens. Groups run one after another;
    //    inside a group the experts may run in parallel (ExpertSchedule). Empty groups are
    //    skipped (a router over zero tokens has no mean probability to balance).
    std::vector<Tensor> y_parts, weight_parts, id_parts;  // in sorted-slot order
    Tensor expert_loss_sum;
    int64_t busy_groups = 0;
    for (int64_t g = 0; g < G; ++g) {
        if (counts[g] == 0) {
            hr.experts[g].expert_counts.assign((size_t)groups[g]->config().experts, 0);
            continue;
        }
        SpecializedExpertNetwork::Output group_out = groups[g]->forward(x_groups[g]);
        Tensor gate = gate_groups[g].unsqueeze(-1);                        // (n_g, 1)
        y_parts.push_back(group_out.y * gate);                             // (n_g, d_out)
        weight_parts.push_back(group_out.routing.weights * gate);          // (n_g, k) final gates
        id_parts.push_back(global_expert_ids(group_out.routing, expert_ids_[g]));  // (n_g, k), -1 = dropped
        expert_loss_sum = expert_loss_sum.defined() ? expert_loss_sum + group_out.balance_loss : group_out.balance_loss;
        ++busy_groups;
        hr.experts[g] = std::move(group_out.routing);
    }
    if (dropped > 0) {  // the group-dropped slots: no output, weight 0, expert id -1
        y_parts.push_back(Tensor::zeros({dropped, d_out}, config_.dtype, x.device()));
        weight_parts.push_back(Tensor::zeros({dropped, k}, config_.dtype, x.device()));
        id_parts.push_back(Tensor::full({dropped, k}, -1, DType::Int64, x.device()));
    }
    out.expert_balance_loss = expert_loss_sum / (double)busy_groups;
    out.balance_loss = out.group_balance_loss + out.expert_balance_loss;

    // 4. Combine, as a gather (no atomic adds, a fixed order: bitwise reproducible): put the
    //    group outputs back in slot order and sum each token's k_g slots.
    Tensor inverse = argsort(order, 0);  // (T*k_g) sorted position of each slot
    Tensor y_slots = index_select(concat(y_parts, 0), 0, inverse);  // (T*k_g, d_out) in slot order
    out.y = sum(y_slots.reshape({T, kg, d_out}), 1);                // (T, d_out)
    hr.weights = index_select(concat(weight_parts, 0), 0, inverse).reshape({T, kg * k});
    hr.indices = index_select(concat(id_parts, 0), 0, inverse).reshape({T, kg * k});
    return out;
}

Tensor HierarchicalMixtureOfExperts::forward_dense_reference(const Tensor& x) {
    check_input(x);
    const int64_t T = x.size(0), G = config_.groups;
    Routing gr = group_router->forward(x);
    // group_gates (T, G): each token's k_g group gates at their groups' columns, 0 elsewhere.
    Tensor group_gates = scatter_add(Tensor::zeros({T, G}, config_.dtype, x.device()), 1, gr.indices, gr.weights);
    Tensor y;
    for (int64_t g = 0; g < G; ++g) {
        SpecializedExpertNetwork& group = *groups[g];
        const int64_t E_g = group.config().experts;  // E, or fewer after pruning
        Routing r = group.router->forward(x);  // every token, routed as if it had come here
        Tensor expert_gates = scatter_add(Tensor::zeros({T, E_g}, config_.dtype, x.device()), 1, r.indices, r.weights);
        Tensor gates = expert_gates * group_gates.slice(1, g, g + 1);  // (T, E_g) the product of both gates
        for (int64_t e = 0; e < E_g; ++e) {
            Tensor term = group.experts[e]->forward(x) * gates.slice(1, e, e + 1);  // (T, d_out)
            y = y.defined() ? y + term : term;
        }
    }
    return y;
}

}  // namespace mg::nn
