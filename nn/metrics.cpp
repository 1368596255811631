// nn/metrics.cpp: accuracy and the routing statistics of a MoE layer (see nn/metrics.h and
// docs/nn/metrics.md for the definitions and worked examples).
#include "nn/metrics.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/ops.h"

namespace mg::nn::metrics {

double accuracy(const std::vector<int64_t>& predictions, const std::vector<int64_t>& labels) {
    if (predictions.size() != labels.size())
        throw std::invalid_argument("accuracy: " + std::to_string(predictions.size()) + " predictions but " +
                                    std::to_string(labels.size()) + " labels");
    if (labels.empty()) return 0;
    int64_t correct = 0;
    for (size_t i = 0; i < labels.size(); ++i) correct += predictions[i] == labels[i];
    return (double)correct / (double)labels.size();
}

double accuracy(const Tensor& logits, const Tensor& labels) {
    if (logits.dim() != 2 || labels.dim() != 1 || labels.size(0) != logits.size(0))
        throw std::invalid_argument("accuracy: expected logits (N, C) and labels (N), got " +
                                    shape_str(logits.shape()) + " and " + shape_str(labels.shape()));
    return accuracy(argmax(logits.detach(), -1).to_vector<int64_t>(), labels.to_vector<int64_t>());
}

double population_variance(const std::vector<double>& values) {
    if (values.empty()) return 0;
    double mean = 0;
    for (double v : values) mean += v;
    mean /= (double)values.size();
    double variance = 0;
    for (double v : values) variance += (v - mean) * (v - mean);
    return variance / (double)values.size();
}

double entropy_bits(const std::vector<int64_t>& counts) {
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    if (total == 0) return 0;
    double h = 0;
    for (int64_t c : counts)
        if (c > 0) {
            double p = (double)c / (double)total;
            h -= p * std::log2(p);
        }
    return h;
}

RoutingStats compute_routing_stats(const std::vector<int64_t>& expert_ids, int64_t k,
                                   const std::vector<int64_t>& labels, int64_t experts, int64_t classes) {
    const std::string where = "compute_routing_stats: ";
    if (k <= 0 || experts <= 0) throw std::invalid_argument(where + "k and experts must be positive");
    if ((int64_t)expert_ids.size() % k != 0)
        throw std::invalid_argument(where + std::to_string(expert_ids.size()) + " expert ids are not a multiple of k = " +
                                    std::to_string(k));
    RoutingStats s;
    s.tokens = (int64_t)expert_ids.size() / k;
    s.k = k;
    s.experts = experts;
    s.classes = classes;
    const bool with_labels = !labels.empty();
    if (with_labels && (int64_t)labels.size() != s.tokens)
        throw std::invalid_argument(where + std::to_string(labels.size()) + " labels for " + std::to_string(s.tokens) +
                                    " tokens (" + std::to_string(expert_ids.size()) + " ids, k = " + std::to_string(k) + ")");
    if (with_labels && classes <= 0) throw std::invalid_argument(where + "classes must be positive");

    // One pass over the slots: per-expert counts, the expert x class matrix, dropped tokens.
    s.expert_slot_counts.assign(experts, 0);
    if (with_labels) s.expert_class_counts.assign(experts * classes, 0);
    int64_t kept = 0, dropped_tokens = 0;
    for (int64_t t = 0; t < s.tokens; ++t) {
        bool lost_a_slot = false;
        if (with_labels && (labels[t] < 0 || labels[t] >= classes))
            throw std::invalid_argument(where + "label " + std::to_string(labels[t]) + " of token " + std::to_string(t) +
                                        " is outside [0, " + std::to_string(classes) + ")");
        for (int64_t j = 0; j < k; ++j) {
            int64_t e = expert_ids[t * k + j];
            if (e == -1) {
                lost_a_slot = true;
                continue;
            }
            if (e < 0 || e >= experts)
                throw std::invalid_argument(where + "expert id " + std::to_string(e) + " of token " + std::to_string(t) +
                                            " is outside [0, " + std::to_string(experts) + ") (and not -1 = dropped)");
            s.expert_slot_counts[e]++;
            if (with_labels) s.expert_class_counts[e * classes + labels[t]]++;
            kept++;
        }
        dropped_tokens += lost_a_slot;
    }
    s.dropped_fraction = s.tokens ? (double)dropped_tokens / (double)s.tokens : 0.0;

    // utilization: fraction of the kept slots; all zeros when nothing was kept.
    s.utilization.assign(experts, 0.0);
    for (int64_t e = 0; e < experts; ++e)
        if (kept) s.utilization[e] = (double)s.expert_slot_counts[e] / (double)kept;
    s.balance_variance = population_variance(s.utilization);

    // H(class | expert) averaged with the experts' shares of the slots: 0 when every expert sees
    // one class only, log2(C) when every expert sees the classes in the same proportions as a
    // uniform mix.
    if (with_labels) {
        for (int64_t e = 0; e < experts; ++e) {
            std::vector<int64_t> row(s.expert_class_counts.begin() + e * classes,
                                     s.expert_class_counts.begin() + (e + 1) * classes);
            s.specialization_entropy_bits += s.utilization[e] * entropy_bits(row);
        }
        s.specialization_index = classes > 1 ? 1.0 - s.specialization_entropy_bits / std::log2((double)classes) : 0.0;
    }
    return s;
}

std::vector<std::vector<double>> class_fractions(const RoutingStats& s) {
    std::vector<std::vector<double>> rows(s.experts, std::vector<double>(s.classes, 0.0));
    if (s.expert_class_counts.empty()) return rows;
    for (int64_t e = 0; e < s.experts; ++e) {
        double total = 0;
        for (int64_t c = 0; c < s.classes; ++c) total += (double)s.expert_class_counts[e * s.classes + c];
        for (int64_t c = 0; c < s.classes; ++c)
            rows[e][c] = total > 0 ? (double)s.expert_class_counts[e * s.classes + c] / total : 0.0;
    }
    return rows;
}

}  // namespace mg::nn::metrics
