// nn/moe.cpp: TopKRouter, ExpertLayer and the sparse SpecializedExpertNetwork (see nn/moe.h).
// Every step is written in engine ops, so autograd differentiates it and it runs on any device;
// docs/nn/moe.md walks through the same code with the shapes.
#include "nn/moe.h"

#include <omp.h>

#include <cmath>
#include <exception>
#include <stdexcept>

namespace mg::nn {

namespace {
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch.nn.Linear's default for both weight and bias.
Tensor kaiming_uniform(const Shape& shape, int64_t fan_in, DType dtype, Generator& gen) {
    const double bound = 1.0 / std::sqrt((double)fan_in);
    return (rand(shape, gen, dtype) * 2.0 - 1.0) * bound;
}

void require_float_dtype(DType dtype, const char* who) {
    if (dtype != DType::Float32 && dtype != DType::Float64)
        throw std::invalid_argument(std::string(who) + ": parameters must be float32 or float64, got " + dtype_name(dtype));
}

// The routing-family options that are named in the configs but not built yet.
void refuse_unbuilt_options(RouterNoise noise, double jitter, double capacity_factor, const char* who) {
    if (noise != RouterNoise::None || jitter != 0 || capacity_factor != 0)
        throw std::invalid_argument(std::string(who) +
                                    ": noisy top-k, jitter and capacity factor are not implemented yet "
                                    "(leave noise = None, jitter = 0, capacity_factor = 0)");
}

// x must be (T, width) of `dtype`.
void check_tokens(const Tensor& x, int64_t width, DType dtype, const char* who) {
    if (x.dim() != 2 || x.size(1) != width)
        throw std::invalid_argument(std::string(who) + ": expected input of shape (tokens, " + std::to_string(width) +
                                    "), got " + shape_str(x.shape()));
    if (x.dtype() != dtype)
        throw std::invalid_argument(std::string(who) + ": input is " + dtype_name(x.dtype()) + " but parameters are " +
                                    dtype_name(dtype));
}
}  // namespace

// ---- TopKRouter ----------------------------------------------------------------------------------
std::vector<int64_t> Routing::flat_expert_ids() const { return indices.to_vector<int64_t>(); }

TopKRouter::TopKRouter(const RouterConfig& config, Generator& gen) : config_(config) {
    if (config.d_in <= 0 || config.experts <= 0)
        throw std::invalid_argument("TopKRouter: d_in and experts must be positive, got d_in = " +
                                    std::to_string(config.d_in) + ", experts = " + std::to_string(config.experts));
    if (config.k <= 0 || config.k > config.experts)
        throw std::invalid_argument("TopKRouter: k = " + std::to_string(config.k) + " must be in [1, experts = " +
                                    std::to_string(config.experts) + "]");
    if (config.balance_alpha < 0) throw std::invalid_argument("TopKRouter: balance_alpha must be >= 0");
    require_float_dtype(config.dtype, "TopKRouter");
    refuse_unbuilt_options(config.noise, config.jitter, config.capacity_factor, "TopKRouter");
    weight = register_parameter("weight", kaiming_uniform({config.experts, config.d_in}, config.d_in, config.dtype, gen));
    if (config.bias)
        bias = register_parameter("bias", kaiming_uniform({config.experts}, config.d_in, config.dtype, gen));
}

Routing TopKRouter::forward(const Tensor& x) {
    check_tokens(x, config_.d_in, config_.dtype, "TopKRouter");
    const int64_t E = config_.experts, k = config_.k;
    Routing r;
    r.logits = matmul(x, weight.t());  // (T, E)
    if (bias.defined()) r.logits = r.logits + bias;
    r.probs = softmax(r.logits, -1);   // (T, E)

    // Top-k on the logits (softmax keeps the order, so this is also the top-k of probs).
    ValuesIndices top = topk(r.logits, k, -1);  // values, indices: (T, k), best first
    r.indices = top.indices;
    if (config_.softmax_over_topk) {
        // Mixtral: g = softmax(the k kept logits). The other E - k logits get no gradient here.
        r.weights = softmax(top.values, -1);
    } else {
        // softmax over all E, keep the top k. Renormalised, the partition function cancels and
        // this is the same function as above; without, gates are Switch's raw probabilities.
        Tensor kept = gather(r.probs, 1, r.indices);  // (T, k)
        r.weights = config_.renormalize ? kept / sum(kept, -1, true) : kept;
    }

    // f_e: the fraction of the T*k routing slots that went to expert e. A count, no gradient.
    r.expert_counts = bincount(r.indices.reshape({-1}), E).to_vector<int64_t>();
    if (config_.balance_alpha > 0) {
        const double slots = (double)r.indices.numel();
        std::vector<double> fraction(E);
        for (int64_t e = 0; e < E; ++e) fraction[e] = slots > 0 ? (double)r.expert_counts[e] / slots : 0.0;
        Tensor f = Tensor::from_vector(fraction, {E}, x.device()).to(config_.dtype);  // (E)
        // P_e: the mean router probability of expert e. Differentiable: the loss pushes
        // probability away from experts that already get more than their share of slots.
        Tensor P = mean(r.probs, 0);  // (E)
        r.balance_loss = sum(f * P) * (config_.balance_alpha * (double)E);
    } else {
        r.balance_loss = Tensor::scalar(0, config_.dtype, x.device());
    }
    return r;
}

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
    for (size_t i = 0; i < weights.size(); ++i) {
        h = matmul(h, weights[i].t()) + biases[i];  // (N, out_i)
        if (i + 1 < weights.size()) h = config_.act == ExpertActivation::ReLU ? relu(h) : gelu(h);
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
    const Routing& r = out.routing;
    if (T == 0) {
        out.y = Tensor::zeros({0, config_.d_out}, config_.dtype, x.device());
        return out;
    }

    // 1. Group the T*k routing slots by expert. Slot s = t*k + j is token t's j-th choice.
    //    A stable sort keeps each group in token order, so the result never depends on threads.
    Tensor slot_expert = r.indices.reshape({T * k});  // (T*k) expert of each slot
    Tensor order = argsort(slot_expert, 0);           // (T*k) slots, grouped by expert
    Tensor slot_token = order / (double)k;            // (T*k) the token of each sorted slot (int64)
    const std::vector<int64_t>& counts = r.expert_counts;  // (E) group sizes, on the host

    // 2. Dispatch: copy every slot's token into its group, then cut the groups apart (views).
    Tensor x_sorted = index_select(x, 0, slot_token);          // (T*k, d_in)
    std::vector<Tensor> groups = split(x_sorted, counts, 0);   // E views, (counts[e], d_in)

    // 3. Each expert on its own group: one GEMM chain per expert, E/k times fewer rows each than
    //    the dense layer. Either one expert at a time, each GEMM using every thread, or one expert
    //    per thread (inside a parallel region the GEMM runs on one thread).
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
    Tensor y_sorted = concat(sorted_outputs, 0);                      // (T*k, d_out) in sorted order
    Tensor inverse = argsort(order, 0);                               // (T*k) sorted position of each slot
    Tensor y_slots = index_select(y_sorted, 0, inverse);              // (T*k, d_out) in slot order
    Tensor y_tk = y_slots.reshape({T, k, config_.d_out});             // (T, k, d_out)
    out.y = sum(y_tk * r.weights.unsqueeze(-1), 1);                   // (T, d_out)
    return out;
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
