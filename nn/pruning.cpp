// nn/pruning.cpp: expert pruning, one place for all three levels:
//
//   SpecializedExpertNetwork::prune_experts(keep)      drop experts and their router rows
//   HierarchicalMixtureOfExperts::prune_experts(ids)   the same inside each group, global ids kept
//   MoELanguageModel::prune_experts(utilization, thr)  every FFN expert whose utilization < thr
//
// Why removing the router rows is the whole "renormalisation": the gate weights are a softmax
// over the router's logits (over the k kept ones with softmax_over_topk; over all E and then
// renormalised over the top k otherwise). With the rows of the removed experts gone, the softmax
// runs over the experts that are left: a token that used a removed expert now gets its next
// choice, and the weights still sum to 1. A token whose k experts all survive has the same top-k
// logits as before, so the same gates and the same output. docs/nn/moe.md, "Expert pruning".
#include <algorithm>
#include <set>
#include <stdexcept>

#include "nn/hierarchical_lm.h"
#include "nn/hierarchical_moe.h"
#include "nn/moe.h"

namespace mg::nn {

namespace {
void require(bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument(message);
}

// Rows `keep` of a (E, ...) parameter, copied into `dst` (a parameter of the new, smaller router).
void copy_rows(Tensor dst, const Tensor& src, const Tensor& keep) {
    NoGradGuard no_grad;
    dst.copy_(index_select(src, 0, keep));
}
}  // namespace

int64_t SpecializedExpertNetwork::prune_experts(const std::vector<int64_t>& keep) {
    const int64_t E = config_.experts;
    require(!keep.empty(), "SpecializedExpertNetwork::prune_experts: keeping no expert would prune all " +
                               std::to_string(E) + " of them; keep at least one");
    for (size_t i = 0; i < keep.size(); ++i)
        require(keep[i] >= 0 && keep[i] < E && (i == 0 || keep[i] > keep[i - 1]),
                "SpecializedExpertNetwork::prune_experts: keep must be ascending distinct ids in [0, " + std::to_string(E) +
                    "), got " + std::to_string(keep[i]) + " at position " + std::to_string(i));
    const int64_t before = num_parameters();
    const int64_t n = (int64_t)keep.size();

    // The router: a new one over n experts, holding the kept rows (and the old noise generator).
    RouterConfig rc = router->config();
    rc.experts = n;
    rc.k = std::min(rc.k, n);
    Generator unused(0);  // the new router's random init is overwritten right away
    auto pruned_router = std::make_shared<TopKRouter>(rc, unused);
    Tensor rows = Tensor::from_vector(keep, {n}).to(router->weight.device());
    pruned_router->to(router->weight.device());
    copy_rows(pruned_router->weight, router->weight, rows);                             // (n, d_in)
    if (router->bias.defined()) copy_rows(pruned_router->bias, router->bias, rows);   // (n)
    if (router->noise_weight.defined()) copy_rows(pruned_router->noise_weight, router->noise_weight, rows);
    pruned_router->generator = router->generator;
    pruned_router->train(router->is_training());
    replace_module("router", pruned_router);
    router = pruned_router;

    // The experts: drop every child, then register the kept ones as experts.0 .. experts.n-1, so
    // the parameter names match a model built with n experts (checkpoints load into either).
    std::vector<std::shared_ptr<ExpertLayer>> kept;
    for (int64_t e : keep) kept.push_back(experts[(size_t)e]);
    for (int64_t e = 0; e < E; ++e) remove_module("experts." + std::to_string(e));
    experts.clear();
    for (int64_t i = 0; i < n; ++i) experts.push_back(register_module("experts." + std::to_string(i), kept[(size_t)i]));
    config_.experts = n;
    config_.k = rc.k;
    return before - num_parameters();
}

int64_t HierarchicalMixtureOfExperts::prune_experts(const std::vector<int64_t>& global_ids) {
    const int64_t G = config_.groups, E = config_.experts_per_group;
    std::set<int64_t> remove;
    for (int64_t id : global_ids) {
        require(id >= 0 && id < G * E, "HierarchicalMixtureOfExperts::prune_experts: expert id " + std::to_string(id) +
                                           " is outside [0, groups * experts_per_group = " + std::to_string(G * E) + ")");
        remove.insert(id);
    }
    // Check every group first, so that a refused call changes nothing.
    std::vector<std::vector<int64_t>> keep_local(G), keep_ids(G);
    for (int64_t g = 0; g < G; ++g) {
        const std::vector<int64_t>& ids = expert_ids_[(size_t)g];
        for (size_t e = 0; e < ids.size(); ++e)
            if (!remove.count(ids[e])) {
                keep_local[g].push_back((int64_t)e);
                keep_ids[g].push_back(ids[e]);
            }
        const int64_t k = groups[g]->config().k;
        require((int64_t)keep_local[g].size() >= k,
                "HierarchicalMixtureOfExperts::prune_experts: group " + std::to_string(g) + " would keep " +
                    std::to_string(keep_local[g].size()) + " of its " + std::to_string(ids.size()) +
                    " experts, fewer than its k = " + std::to_string(k) +
                    " (the group router would still send tokens there); prune fewer experts");
    }
    int64_t removed = 0;
    for (int64_t g = 0; g < G; ++g) {
        if (keep_local[g].size() == expert_ids_[(size_t)g].size()) continue;
        removed += groups[g]->prune_experts(keep_local[g]);
        expert_ids_[(size_t)g] = keep_ids[g];
    }
    return removed;
}

MoELanguageModel::PruneResult MoELanguageModel::prune_experts(const std::vector<std::vector<double>>& utilization,
                                                              double threshold) {
    require((int64_t)utilization.size() == config_.layers,
            "MoELanguageModel::prune_experts: expected one utilization array per layer (" + std::to_string(config_.layers) +
                "), got " + std::to_string(utilization.size()));
    // Decide every layer before touching any, so that a refused call changes nothing.
    PruneResult result;
    for (size_t l = 0; l < blocks.size(); ++l) {
        const HierarchicalMixtureOfExperts& moe = *blocks[l]->moe;
        const int64_t total = moe.total_experts();
        require((int64_t)utilization[l].size() == total,
                "MoELanguageModel::prune_experts: layer " + std::to_string(l) + " has " + std::to_string(total) +
                    " expert ids, got a utilization array of " + std::to_string(utilization[l].size()));
        std::vector<int64_t> ids;
        for (int64_t g = 0; g < moe.config().groups; ++g)
            for (int64_t id : moe.expert_ids(g))
                if (utilization[l][(size_t)id] < threshold) ids.push_back(id);
        result.removed_experts.push_back(ids);
    }
    for (size_t l = 0; l < blocks.size(); ++l) {
        // A dry run on the group sizes: the same check prune_experts makes, before anything changes.
        const HierarchicalMixtureOfExperts& moe = *blocks[l]->moe;
        std::set<int64_t> remove(result.removed_experts[l].begin(), result.removed_experts[l].end());
        for (int64_t g = 0; g < moe.config().groups; ++g) {
            int64_t left = 0;
            for (int64_t id : moe.expert_ids(g)) left += !remove.count(id);
            require(left >= moe.groups[g]->config().k,
                    "MoELanguageModel::prune_experts: threshold " + std::to_string(threshold) + " would leave group " +
                        std::to_string(g) + " of layer " + std::to_string(l) + " with " + std::to_string(left) +
                        " experts, fewer than its k = " + std::to_string(moe.groups[g]->config().k) +
                        "; use a lower threshold");
        }
    }
    for (size_t l = 0; l < blocks.size(); ++l) result.parameters_removed += blocks[l]->moe->prune_experts(result.removed_experts[l]);
    return result;
}

}  // namespace mg::nn
