// nn/router.cpp: TopKRouter (nn/moe.h) and its options, in the order forward() applies them:
//
//   x ──jitter──> x' ──x' W^T (+ b)──> clean_logits ──+ N(0,1)·softplus(x' W_noise)──> logits
//     ──top-k──> indices, gates ──capacity──> kept slots, weights ──> auxiliary losses
//
// Every option, with its formula, paper and when to use it: docs/nn/routing.md. Tests with the
// numbers worked by hand: tests/test_routing.cpp.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "nn/moe.h"
#include "nn/moe_internal.h"

namespace mg::nn {

using detail::check_tokens;
using detail::kaiming_uniform;
using detail::require_float_dtype;

namespace {
// A 64-bit seed for a child generator, drawn from the parent (as nn::Dropout does).
uint64_t draw_seed(Generator& gen) {
    uint64_t high = gen.next_u32();
    uint64_t low = gen.next_u32();
    return (high << 32) | low;
}

uint64_t parse_state(const std::map<std::string, std::string>& state, const std::string& key) {
    auto it = state.find(key);
    if (it == state.end()) throw std::invalid_argument("TopKRouter: extra state lacks '" + key + "'");
    const std::string& s = it->second;
    if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos)
        throw std::invalid_argument("TopKRouter: extra state '" + key + "' is not an unsigned integer: '" + s + "'");
    try {
        return std::stoull(s);
    } catch (const std::exception&) {
        throw std::invalid_argument("TopKRouter: extra state '" + key + "' is out of range: '" + s + "'");
    }
}

void require_non_negative(double value, const char* name) {
    if (!(value >= 0) || !std::isfinite(value))
        throw std::invalid_argument(std::string("TopKRouter: ") + name + " must be a finite number >= 0, got " +
                                    std::to_string(value));
}

// CV^2 = variance / mean^2 over the E entries (population variance; the 1e-10 keeps an all-zero
// vector finite, as in Shazeer et al.'s code).
Tensor cv_squared(const Tensor& v) {
    Tensor m = mean(v);
    Tensor variance = mean(pow(v - m, 2.0));
    return variance / (m * m + 1e-10);
}

// The standard normal CDF, Phi(z) = (1 + erf(z / sqrt 2)) / 2.
Tensor normal_cdf(const Tensor& z) { return (erf(z * (1.0 / std::sqrt(2.0))) + 1.0) * 0.5; }

// The order in which slots claim a place in their expert (indices into the T*k token-major slots).
std::vector<int64_t> slot_priority(CapacityPriority priority, int64_t T, int64_t k, const Tensor& gates) {
    std::vector<int64_t> order;
    order.reserve(T * k);
    for (int64_t j = 0; j < k; ++j)  // first choices of every token, then second choices, ...
        for (int64_t t = 0; t < T; ++t) order.push_back(t * k + j);
    if (priority == CapacityPriority::HighestGate) {
        // Largest gate weight first; equal weights keep the first-come order (stable sort).
        std::vector<double> g = gates.to_vector<double>();
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return g[a] > g[b]; });
    }
    return order;
}
}  // namespace

std::vector<int64_t> Routing::flat_expert_ids() const {
    std::vector<int64_t> ids = indices.to_vector<int64_t>();
    if (dropped_slots > 0)
        for (size_t s = 0; s < ids.size(); ++s)
            if (!kept[s]) ids[s] = -1;
    return ids;
}

double Routing::dropped_fraction() const {
    const int64_t T = indices.defined() ? indices.size(0) : 0;
    return T > 0 ? (double)dropped_tokens / (double)T : 0.0;
}

TopKRouter::TopKRouter(const RouterConfig& config, Generator& gen) : config_(config) {
    if (config.d_in <= 0 || config.experts <= 0)
        throw std::invalid_argument("TopKRouter: d_in and experts must be positive, got d_in = " +
                                    std::to_string(config.d_in) + ", experts = " + std::to_string(config.experts));
    if (config.k <= 0 || config.k > config.experts)
        throw std::invalid_argument("TopKRouter: k = " + std::to_string(config.k) + " must be in [1, experts = " +
                                    std::to_string(config.experts) + "]");
    if (config.balance_alpha < 0) throw std::invalid_argument("TopKRouter: balance_alpha must be >= 0");
    require_float_dtype(config.dtype, "TopKRouter");
    require_non_negative(config.capacity_factor, "capacity_factor (0 = unlimited)");
    if (config.eval_capacity_factor) require_non_negative(*config.eval_capacity_factor, "eval_capacity_factor (0 = unlimited)");
    require_non_negative(config.importance_alpha, "importance_alpha");
    require_non_negative(config.load_alpha, "load_alpha");
    require_non_negative(config.z_loss_alpha, "z_loss_alpha");
    if (!(config.jitter >= 0 && config.jitter < 1))
        throw std::invalid_argument("TopKRouter: jitter must be in [0, 1) (x is scaled by U(1 - jitter, 1 + jitter)), got " +
                                    std::to_string(config.jitter));
    if (config.load_alpha > 0 && config.noise != RouterNoise::NoisyTopK)
        throw std::invalid_argument("TopKRouter: load_alpha > 0 needs noise = RouterNoise::NoisyTopK (the load "
                                    "estimate is a probability over the gating noise)");
    if (config.load_alpha > 0 && config.k == config.experts)
        throw std::invalid_argument("TopKRouter: load_alpha > 0 needs k < experts (with k = experts = " +
                                    std::to_string(config.k) + " every expert is always chosen)");

    weight = register_parameter("weight", kaiming_uniform({config.experts, config.d_in}, config.d_in, config.dtype, gen));
    if (config.bias)
        bias = register_parameter("bias", kaiming_uniform({config.experts}, config.d_in, config.dtype, gen));
    // Shazeer et al. start W_noise at zero: every expert gets noise of std softplus(0) = log 2.
    if (config.noise == RouterNoise::NoisyTopK)
        noise_weight = register_parameter("noise_weight", Tensor::zeros({config.experts, config.d_in}, config.dtype));
    // Only a stochastic router takes a seed from gen, so that a deterministic one leaves gen (and
    // with it the initialisation of everything built after the router) as it always was.
    if (stochastic()) generator = Generator(draw_seed(gen));
}

bool TopKRouter::stochastic() const { return config_.noise != RouterNoise::None || config_.jitter > 0; }

int64_t TopKRouter::capacity(int64_t tokens) const {
    const double factor = is_training() ? config_.capacity_factor
                                        : config_.eval_capacity_factor.value_or(config_.capacity_factor);
    if (factor == 0 || tokens == 0) return 0;
    // capacity = ceil(k T cf / E); the relative 1e-12 keeps 3.0000000000000004 from becoming 4.
    const double exact = (double)config_.k * (double)tokens * factor / (double)config_.experts;
    return std::max<int64_t>(1, (int64_t)std::ceil(exact * (1 - 1e-12)));
}

std::map<std::string, std::string> TopKRouter::extra_state() const {
    if (!stochastic()) return {};
    return {{"generator.seed", std::to_string(generator.seed())}, {"generator.offset", std::to_string(generator.offset())}};
}

void TopKRouter::set_extra_state(const std::map<std::string, std::string>& state) {
    if (!stochastic()) return;
    generator.set_state({parse_state(state, "generator.seed"), parse_state(state, "generator.offset")});
}

Routing TopKRouter::forward(const Tensor& x) {
    check_tokens(x, config_.d_in, config_.dtype, "TopKRouter");
    const int64_t T = x.size(0), E = config_.experts, k = config_.k;
    const DType dtype = config_.dtype;
    const bool training = is_training();
    Routing r;

    // 1. Switch jitter: the router (only the router, not the experts) sees x * U(1-eps, 1+eps).
    Tensor router_input = x;  // (T, d_in)
    if (training && config_.jitter > 0) {
        Tensor u = rand(x.shape(), generator, dtype, x.device());  // U(0, 1)
        router_input = x * (u * (2 * config_.jitter) + (1 - config_.jitter));
    }

    // 2. Logits, and Shazeer's noise: H = x W_g + N(0, 1) * softplus(x W_noise), in training only.
    //    The noise is a learned, per-token, per-expert standard deviation; its gradient reaches
    //    W_noise through the gates of the experts that were chosen.
    r.clean_logits = matmul(router_input, weight.t());  // (T, E)
    if (bias.defined()) r.clean_logits = r.clean_logits + bias;
    r.logits = r.clean_logits;
    Tensor noise_std;  // (T, E)
    if (config_.noise == RouterNoise::NoisyTopK) {
        noise_std = softplus(matmul(router_input, noise_weight.t()));
        if (training) r.logits = r.clean_logits + randn({T, E}, generator, dtype, x.device()) * noise_std;
    }
    r.probs = softmax(r.logits, -1);  // (T, E)

    // 3. Top-k and the gate weights (docs/nn/moe.md, "Gating").
    ValuesIndices top = topk(r.logits, k, -1);  // values, indices: (T, k), best first
    r.indices = top.indices;
    Tensor gates;  // (T, k) before the capacity limit
    if (config_.softmax_over_topk) {
        gates = softmax(top.values, -1);  // Mixtral: the other E - k logits get no gradient here
    } else {
        Tensor kept_probs = gather(r.probs, 1, r.indices);  // (T, k)
        gates = config_.renormalize ? kept_probs / sum(kept_probs, -1, true) : kept_probs;
    }

    // 4. Capacity: each expert takes at most `capacity` slots; the rest are dropped, in the order
    //    of config.capacity_priority. Counting happens on the host (it sizes the expert GEMMs).
    const std::vector<int64_t> ids = r.indices.to_vector<int64_t>();  // (T*k) token-major
    r.chosen_counts.assign(E, 0);
    for (int64_t e : ids) r.chosen_counts[e]++;
    r.kept.assign(T * k, 1);
    r.capacity = capacity(T);
    if (r.capacity > 0) {
        std::vector<int64_t> fill(E, 0);
        for (int64_t s : slot_priority(config_.capacity_priority, T, k, gates)) {
            if (fill[ids[s]] < r.capacity) {
                fill[ids[s]]++;
            } else {
                r.kept[s] = 0;
                r.dropped_slots++;
            }
        }
    }
    r.expert_counts.assign(E, 0);
    for (int64_t t = 0; t < T; ++t) {
        bool lost = false;
        for (int64_t j = 0; j < k; ++j) {
            if (r.kept[t * k + j]) r.expert_counts[ids[t * k + j]]++;
            else lost = true;
        }
        r.dropped_tokens += lost;
    }
    if (r.dropped_slots == 0) {
        r.weights = gates;
    } else {
        std::vector<double> keep(r.kept.begin(), r.kept.end());
        Tensor keep_mask = Tensor::from_vector(keep, {T, k}, x.device()).to(dtype);  // (T, k) 1 kept, 0 dropped
        Tensor kept_gates = gates * keep_mask;
        if (config_.drop_policy == DropPolicy::Renormalize) {
            // Scale the kept gates up to the sum all k had. A token that lost every slot keeps
            // weights 0 (the +1 on its denominator only avoids 0/0).
            std::vector<double> none_kept(T, 0.0);
            for (int64_t t = 0; t < T; ++t) {
                bool any = false;
                for (int64_t j = 0; j < k; ++j) any = any || r.kept[t * k + j];
                none_kept[t] = any ? 0.0 : 1.0;
            }
            Tensor guard = Tensor::from_vector(none_kept, {T, 1}, x.device()).to(dtype);  // (T, 1)
            r.weights = kept_gates * (sum(gates, -1, true) / (sum(kept_gates, -1, true) + guard));
        } else {
            r.weights = kept_gates;
        }
    }

    // 5. Auxiliary losses, each with its alpha inside.
    const Tensor zero = Tensor::scalar(0, dtype, x.device());
    r.balance_loss = r.importance_loss = r.load_loss = r.z_loss = zero;
    if (config_.balance_alpha > 0 && T > 0) {
        // Switch: alpha * E * sum_e f_e P_e. f_e is the fraction of the T*k slots the router chose
        // for e (before the capacity limit, as Switch counts it), a constant; P_e = mean router
        // probability, differentiable: the loss pushes probability off the busiest experts.
        std::vector<double> fraction(E);
        for (int64_t e = 0; e < E; ++e) fraction[e] = (double)r.chosen_counts[e] / (double)(T * k);
        Tensor f = Tensor::from_vector(fraction, {E}, x.device()).to(dtype);  // (E)
        r.balance_loss = sum(f * mean(r.probs, 0)) * (config_.balance_alpha * (double)E);
    }
    if (config_.importance_alpha > 0 && T > 0) {
        // Shazeer: importance_e = sum over tokens of e's gate weight (0 where e was not chosen).
        Tensor dense_gates = scatter_add(Tensor::zeros({T, E}, dtype, x.device()), 1, r.indices, gates);  // (T, E)
        r.importance_loss = cv_squared(sum(dense_gates, 0)) * config_.importance_alpha;
    }
    if (config_.load_alpha > 0 && T > 0) {
        // Shazeer, appendix A: load_e = sum over tokens of P(e is in the top k), the probability
        // over a fresh draw of e's noise, the other logits held fixed: e stays in the top k while
        // its noisy logit beats the k-th largest of the others. For an expert in the top k that
        // is the (k+1)-th largest logit overall, otherwise the k-th.
        ValuesIndices top_plus = topk(r.logits, k + 1, -1);            // (T, k+1)
        Tensor threshold_if_in = slice(top_plus.values, 1, k, k + 1);   // (T, 1)
        Tensor threshold_if_out = slice(top_plus.values, 1, k - 1, k);  // (T, 1)
        Tensor is_in = gt(r.logits, threshold_if_in);                   // (T, E) bool
        Tensor prob_in = normal_cdf((r.clean_logits - threshold_if_in) / noise_std);
        Tensor prob_out = normal_cdf((r.clean_logits - threshold_if_out) / noise_std);
        r.load_loss = cv_squared(sum(where(is_in, prob_in, prob_out), 0)) * config_.load_alpha;
    }
    if (config_.z_loss_alpha > 0 && T > 0) {
        // ST-MoE: penalise large logits, which round badly in low precision and make the softmax
        // saturate: alpha * mean_t (log sum_e exp logits[t, e])^2.
        Tensor z = logsumexp(r.logits, -1);  // (T)
        r.z_loss = mean(z * z) * config_.z_loss_alpha;
    }
    r.aux_loss = r.balance_loss;
    for (const Tensor* term : {&r.importance_loss, &r.load_loss, &r.z_loss})
        if (!term->same(zero)) r.aux_loss = r.aux_loss + *term;
    return r;
}

}  // namespace mg::nn
