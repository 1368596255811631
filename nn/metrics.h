// nn/metrics.h: the numbers every demo reports, in one place, with the names of DESIGN.md
// "Metrics every demo reports" (the same names go into every metrics.json).
//
// Everything here works from host data (std::vector), so it is the same code for CPU and CUDA
// runs and is easy to test on hand-made routings. docs/nn/metrics.md has each definition with a
// worked example. A MoE layer's routing gives the inputs: Routing::flat_expert_ids() (nn/moe.h).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace mg::nn::metrics {

// Fraction of rows whose argmax over the last dim equals the label.
// logits (N, C) float, labels (N) int -> in [0, 1].
double accuracy(const Tensor& logits, const Tensor& labels);
double accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels);

// The routing of T tokens to E experts with k slots each, summarised.
// A routing slot is one (token, expert) assignment that was kept (not dropped by a capacity limit).
struct RoutingStats {
    int64_t tokens = 0, k = 0, experts = 0, classes = 0;
    std::vector<int64_t> expert_slot_counts;     // (E) kept slots per expert
    std::vector<double> utilization;             // (E) expert_slot_counts / kept slots; sums to 1
    double balance_variance = 0;                 // population variance of utilization (0 = even)
    double specialization_entropy_bits = 0;      // sum_e utilization[e] * H(class | expert e)
    double specialization_index = 0;             // 1 - entropy / log2(C); 1 = each expert one class
    double dropped_fraction = 0;                 // tokens that lost at least one slot
    // (E, C) row-major: [e * classes + c] = kept slots of expert e whose token has class c.
    // The expert x class heatmap of the demos. Empty without labels.
    std::vector<int64_t> expert_class_counts;
};

// expert_ids (T*k): the expert of each (token, slot), token-major as Routing::indices is laid
// out; -1 marks a dropped slot. labels (T): the class (or domain) of each token, 0..classes-1;
// may be empty, then the specialization fields are 0 and expert_class_counts is empty.
// With classes == 1 the specialization index is 0 (there is nothing to specialise on).
RoutingStats compute_routing_stats(const std::vector<int64_t>& expert_ids, int64_t k,
                                   const std::vector<int64_t>& labels, int64_t experts, int64_t classes);

// (E, C): row e = the share of expert e's kept slots whose token has class c, P(class | expert),
// from expert_class_counts (a row of zeros for an expert with no slots). The heatmaps of the demos.
std::vector<std::vector<double>> class_fractions(const RoutingStats& stats);

// The pieces, for callers that have only part of the data.
// Population variance (divide by n), 0 for an empty vector.
double population_variance(const std::vector<double>& values);
// Shannon entropy in bits of a histogram (counts need not be normalised; empty bins add 0).
double entropy_bits(const std::vector<int64_t>& counts);

}  // namespace mg::nn::metrics
