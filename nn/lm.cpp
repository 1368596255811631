// nn/lm.cpp: LanguageModel (forward, loss, counters) and generate() (nn/lm.h).
#include "nn/lm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mg::nn {

namespace {
void require(bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument(message);
}
std::string str(int64_t v) { return std::to_string(v); }
}  // namespace

const char* position_kind_name(PositionKind kind) {
    switch (kind) {
        case PositionKind::Sinusoidal: return "sinusoidal";
        case PositionKind::Learned: return "learned";
        case PositionKind::None: return "none";
    }
    return "?";
}

// ---- configuration -------------------------------------------------------------------------------
void LanguageModelConfig::validate() const {
    const char* who = "LanguageModelConfig: ";
    require(vocab > 0, who + std::string("vocab must be positive, got ") + str(vocab));
    require(d_model > 0, who + std::string("d_model must be positive, got ") + str(d_model));
    require(layers > 0, who + std::string("layers must be positive, got ") + str(layers));
    require(heads > 0 && d_model % heads == 0,
            who + std::string("d_model = ") + str(d_model) + " must be a positive multiple of heads = " + str(heads));
    require(max_seq > 0, who + std::string("max_seq must be positive, got ") + str(max_seq));
    require(ffn_hidden > 0, who + std::string("ffn_hidden must be positive, got ") + str(ffn_hidden));
    if (ffn == FFNKind::MoE) {
        require(experts > 0, who + std::string("experts must be positive, got ") + str(experts));
        require(k >= 1 && k <= experts,
                who + std::string("k = ") + str(k) + " must be in [1, experts = " + str(experts) + "]");
        require(balance_alpha >= 0, who + std::string("balance_alpha must be >= 0"));
        require(bias, who + std::string("MoE experts always have biases (set bias = true)"));
    }
    require(dtype == DType::Float32 || dtype == DType::Float64,
            who + std::string("dtype must be float32 or float64, got ") + dtype_name(dtype));
}

std::string LanguageModelConfig::name() const {
    std::string s = (ffn == FFNKind::MoE ? "moe" : "dense") + std::string("_d") + str(d_model) + "_l" + str(layers);
    if (ffn == FFNKind::MoE) return s + "_e" + str(experts) + "_k" + str(k);
    return s + "_h" + str(ffn_hidden);
}

// ---- the model -----------------------------------------------------------------------------------
LanguageModel::LanguageModel(const LanguageModelConfig& config, Generator& gen) : config_(config) {
    config.validate();
    const int64_t d = config.d_model;
    token_embedding = register_module("token_embedding",
                                      std::make_shared<Embedding>(config.vocab, d, gen, EmbeddingConfig{config.dtype}));
    if (config.positions == PositionKind::Learned)
        position_embedding = register_module(
            "position_embedding", std::make_shared<Embedding>(config.max_seq, d, gen, EmbeddingConfig{config.dtype}));
    if (config.positions == PositionKind::Sinusoidal)
        sinusoidal = register_module("positions", std::make_shared<PositionalEncoding>(config.max_seq, d, config.dtype));
    BlockConfig bc{.d_model = d, .heads = config.heads, .ffn = config.ffn, .ffn_hidden = config.ffn_hidden,
                   .experts = config.experts, .k = config.k, .balance_alpha = config.balance_alpha,
                   .bias = config.bias, .attention = config.attention, .dtype = config.dtype};
    for (int64_t l = 0; l < config.layers; ++l)
        blocks.push_back(register_module("blocks." + str(l), std::make_shared<TransformerBlock>(bc, gen)));
    ln_f = register_module("ln_f", std::make_shared<LayerNorm>(d, LayerNormConfig{.dtype = config.dtype}));
    if (!config.tie_head)
        head = register_module("head", std::make_shared<Linear>(d, config.vocab, gen,
                                                                LinearConfig{.bias = false, .dtype = config.dtype}));
}

void check_token_ids(const Tensor& ids, int64_t vocab, int64_t max_seq, const std::string& model) {
    require(ids.dim() == 2, model + ": expected token ids (batch, seq), got " + shape_str(ids.shape()));
    require(is_integral(ids.dtype()), model + ": token ids must be int32 or int64, got " + dtype_name(ids.dtype()));
    const int64_t T = ids.size(1);
    require(T >= 1 && T <= max_seq, model + ": sequence length " + str(T) + " is outside [1, max_seq = " + str(max_seq) + "]");
    require(ids.size(0) >= 1, model + ": empty batch");
    // The id range is checked here on the CPU. On a GPU reading min and max would make the host
    // wait for the device twice per forward; there the embedding's kernel checks every id and an
    // out-of-range one is raised at the next synchronisation (docs/engine/cuda.md, "Errors").
    if (ids.device() != Device::CPU) return;
    const int64_t lo = min(ids).to(DType::Int64).item<int64_t>(), hi = max(ids).to(DType::Int64).item<int64_t>();
    require(lo >= 0 && hi < vocab,
            model + ": token id " + str(lo < 0 ? lo : hi) + " is outside the vocabulary [0, " + str(vocab) + ")");
}

void LanguageModel::check_ids(const Tensor& ids) const {
    check_token_ids(ids, config_.vocab, config_.max_seq, "LanguageModel");
}

LanguageModel::Output LanguageModel::forward(const Tensor& ids) {
    check_ids(ids);
    const int64_t T = ids.size(1);
    Output out;
    Tensor x = (*token_embedding)(ids);  // (B, T, d)
    if (position_embedding) x = x + (*position_embedding)(Tensor::arange(0, (double)T, 1, DType::Int64, ids.device()));
    if (sinusoidal) x = x + (*sinusoidal)(T);  // (T, d) broadcast over the batch
    out.balance_loss = Tensor::scalar(0, config_.dtype, ids.device());
    for (auto& block : blocks) {
        TransformerBlock::Output b = (*block)(x);
        x = b.y;
        if (b.routing) {
            out.balance_loss = out.balance_loss + b.balance_loss;
            out.routings.push_back(std::move(*b.routing));
        }
    }
    Tensor h = (*ln_f)(x);  // (B, T, d)
    if (head) {
        out.logits = (*head)(h);  // (B, T, V)
    } else {
        // Tied: the embedding table is the output matrix. Embedding rows are N(0, 1), so
        // h . e has a standard deviation of about sqrt(d); scaling h by 1/sqrt(d) (as T5 does
        // for its tied head) starts the logits near unit scale instead of sqrt(d).
        const double scale = 1.0 / std::sqrt((double)config_.d_model);
        out.logits = matmul((h * scale).reshape({-1, config_.d_model}), token_embedding->weight.t())
                         .reshape({ids.size(0), T, config_.vocab});
    }
    return out;
}

Tensor LanguageModel::loss(const Tensor& logits, const Tensor& targets) {
    require(logits.dim() == 3 && targets.dim() == 2 && logits.size(0) == targets.size(0) &&
                logits.size(1) == targets.size(1),
            "LanguageModel::loss: expected logits (B, T, V) and targets (B, T), got " + shape_str(logits.shape()) +
                " and " + shape_str(targets.shape()));
    return cross_entropy(logits.reshape({-1, logits.size(2)}), targets.reshape({-1}));
}

// ---- counters ------------------------------------------------------------------------------------
// The rules, one line each (docs/nn/transformer.md works an example through by hand):
//   a matrix product with an (in, out) weight: 2 * in * out FLOPs per token; biases, GELU,
//   softmax and residual adds are not counted;
//   causal attention at length T: token t scores t + 1 keys, on average (T + 1) / 2, and both
//   q k^T and the weighted sum of v cost 2 * d per key: 4 * d * (T + 1) / 2 = 2 d (T + 1);
//   a LayerNorm over d: 7 d (mean, centre, square, sum, scale by 1/std, weight, bias);
//   learned or sinusoidal positions: d (the add);
//   active parameters: everything but the E - k experts a token does not use (the embedding
//   table counts whole, as the PyTorch peer and Mixtral's "active parameters" do).
ModelCounts LanguageModel::counts(int64_t seq) const {
    const LanguageModelConfig& c = config_;
    if (seq == 0) seq = c.max_seq;
    require(seq >= 1 && seq <= c.max_seq, "LanguageModel::counts: seq " + str(seq) + " outside [1, max_seq]");
    const int64_t d = c.d_model, L = c.layers, V = c.vocab, h = c.ffn_hidden;
    ModelCounts m;
    m.seq = seq;
    ComponentCounts& p = m.parameters;
    ComponentCounts& a = m.active_parameters;
    ComponentCounts& f = m.flops_per_token;

    p.embedding = V * d + (c.positions == PositionKind::Learned ? c.max_seq * d : 0);
    f.embedding = c.positions == PositionKind::None ? 0 : d;

    const int64_t attention_bias = c.bias ? 3 * d + d : 0;
    p.attention = L * (3 * d * d + d * d + attention_bias);
    f.attention = L * (2 * d * 3 * d + 2 * d * d + 2 * d * (seq + 1));

    const int64_t expert_params = d * h + h + h * d + d;  // d -> h -> d, with biases
    if (c.ffn == FFNKind::MoE) {
        p.router = L * d * c.experts;
        f.router = L * 2 * d * c.experts;
        p.experts = L * c.experts * expert_params;
        a.experts = L * c.k * expert_params;
        f.experts = L * c.k * 2 * (d * h + h * d);
    } else {
        p.experts = L * (d * h + h * d + (c.bias ? h + d : 0));
        a.experts = p.experts;
        f.experts = L * 2 * (d * h + h * d);
    }

    p.norms = (2 * L + 1) * 2 * d;
    f.norms = (2 * L + 1) * 7 * d;
    p.head = c.tie_head ? 0 : V * d;
    f.head = 2 * d * V;

    a.embedding = p.embedding;
    a.attention = p.attention;
    a.router = p.router;
    a.norms = p.norms;
    a.head = p.head;
    return m;
}

// ---- generation ----------------------------------------------------------------------------------
std::vector<int64_t> generate(LanguageModel& model, const std::vector<int64_t>& prompt, const SamplingConfig& config,
                              Generator& gen) {
    const int64_t V = model.config().vocab, max_seq = model.config().max_seq;
    require(!prompt.empty(), "generate: the prompt is empty (give at least one token)");
    for (int64_t id : prompt)
        require(id >= 0 && id < V, "generate: prompt token " + str(id) + " is outside [0, " + str(V) + ")");
    require(config.temperature >= 0, "generate: temperature must be >= 0");
    require(config.top_k >= 0, "generate: top_k must be >= 0");
    require(config.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0");

    NoGradGuard no_grad;
    const bool was_training = model.is_training();
    model.eval();
    std::vector<int64_t> tokens = prompt;
    for (int64_t step = 0; step < config.max_new_tokens; ++step) {
        const int64_t T = std::min<int64_t>((int64_t)tokens.size(), max_seq);
        std::vector<int64_t> window(tokens.end() - T, tokens.end());
        Tensor ids = Tensor::from_vector(window, {1, T}, model.token_embedding->weight.device());  // where the model is
        Tensor logits = model(ids).logits.select(0, 0).select(0, T - 1).to(DType::Float64);  // (V)
        int64_t next;
        if (config.temperature == 0) {
            next = argmax(logits, 0).item<int64_t>();
        } else {
            logits = logits / config.temperature;
            Tensor candidates;  // (n) token ids the draw chooses among
            if (config.top_k > 0 && config.top_k < V) {
                ValuesIndices top = topk(logits, config.top_k, 0);
                logits = top.values;
                candidates = top.indices;
            }
            Tensor probs = softmax(logits, 0).unsqueeze(0);                 // (1, n)
            const int64_t pick = multinomial(probs, 1, gen).item<int64_t>();
            next = candidates.defined() ? candidates.to_vector<int64_t>()[pick] : pick;
        }
        tokens.push_back(next);
    }
    model.train(was_training);
    return tokens;
}

}  // namespace mg::nn
