// nn/layers.cpp: Linear, Embedding, LayerNorm, Dropout and FeedForward. Each forward is a few
// engine ops; the math lives in engine/ops_*.cpp (matmul, layer_norm, embedding, dropout).
#include "nn/layers.h"

#include <cmath>
#include <stdexcept>

#include "nn/init.h"

namespace mg::nn {

namespace {
void require_positive(int64_t n, const char* layer, const char* what) {
    if (n <= 0) throw std::invalid_argument(std::string(layer) + ": " + what + " must be positive, got " + std::to_string(n));
}
}  // namespace

// ---- Linear ----------------------------------------------------------------------------------------
Linear::Linear(int64_t in, int64_t out, Generator& gen, LinearConfig config) : in_features(in), out_features(out) {
    require_positive(in, "Linear", "in_features");
    require_positive(out, "Linear", "out_features");
    // torch.nn.Linear.reset_parameters: kaiming_uniform_(weight, a=sqrt(5)) has bound
    // sqrt(1/3) * sqrt(3 / fan_in) = 1/sqrt(fan_in); the bias uses the same bound.
    double bound = 1.0 / std::sqrt((double)in);
    weight = register_parameter("weight", init::uniform({out, in}, -bound, bound, gen, config.dtype));  // (out, in)
    if (config.bias) bias = register_parameter("bias", init::uniform({out}, -bound, bound, gen, config.dtype));  // (out)
}

Tensor Linear::forward(const Tensor& x) const {
    if (x.dim() == 0 || x.size(-1) != in_features)
        throw std::invalid_argument("Linear: expected input (..., " + std::to_string(in_features) + "), got " +
                                    shape_str(x.shape()));
    // One op: the GEMM reads weight (out, in) transposed through its strides and adds the bias
    // in its epilogue (engine/ops_matmul.cpp, linear); (..., in) is flattened to (N, in) for free.
    return mg::linear(x, weight, bias);
}

// ---- Embedding ------------------------------------------------------------------------------------
Embedding::Embedding(int64_t num, int64_t dim, Generator& gen, EmbeddingConfig config)
    : num_embeddings(num), embedding_dim(dim) {
    require_positive(num, "Embedding", "num_embeddings");
    require_positive(dim, "Embedding", "embedding_dim");
    weight = register_parameter("weight", init::normal({num, dim}, 0.0, 1.0, gen, config.dtype));  // (V, D)
}

Tensor Embedding::forward(const Tensor& indices) const { return embedding(weight, indices); }

// ---- LayerNorm ------------------------------------------------------------------------------------
LayerNorm::LayerNorm(int64_t d, LayerNormConfig config) : dim(d), eps(config.eps) {
    require_positive(d, "LayerNorm", "dim");
    if (config.elementwise_affine) {
        weight = register_parameter("weight", Tensor::ones({d}, config.dtype));              // (D)
        if (config.bias) bias = register_parameter("bias", Tensor::zeros({d}, config.dtype));  // (D)
    }
}

Tensor LayerNorm::forward(const Tensor& x) const {
    if (x.dim() == 0 || x.size(-1) != dim)
        throw std::invalid_argument("LayerNorm: expected input (..., " + std::to_string(dim) + "), got " +
                                    shape_str(x.shape()));
    return layer_norm(x, weight, bias, eps);
}

// ---- Dropout ----------------------------------------------------------------------------------------
namespace {
// A 64-bit seed for a child generator, drawn from the parent.
uint64_t draw_seed(Generator& gen) {
    uint64_t high = gen.next_u32();
    uint64_t low = gen.next_u32();
    return (high << 32) | low;
}
uint64_t parse_u64(const std::map<std::string, std::string>& state, const std::string& key, const char* who) {
    auto it = state.find(key);
    if (it == state.end()) throw std::invalid_argument(std::string(who) + ": extra state lacks '" + key + "'");
    const std::string& s = it->second;
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
        throw std::invalid_argument(std::string(who) + ": extra state '" + key + "' is not an unsigned integer: '" + s + "'");
    try {
        return std::stoull(s);
    } catch (const std::exception&) {
        throw std::invalid_argument(std::string(who) + ": extra state '" + key + "' is out of range: '" + s + "'");
    }
}
}  // namespace

Dropout::Dropout(Generator& gen, DropoutConfig config) : p(config.p), generator(draw_seed(gen)) {
    if (!(p >= 0.0 && p < 1.0)) throw std::invalid_argument("Dropout: p must be in [0, 1), got " + std::to_string(p));
}

Tensor Dropout::forward(const Tensor& x) {
    if (!is_training() || p == 0.0) return x;
    return dropout(x, p, true, generator);
}

std::map<std::string, std::string> Dropout::extra_state() const {
    return {{"generator.seed", std::to_string(generator.seed())}, {"generator.offset", std::to_string(generator.offset())}};
}

void Dropout::set_extra_state(const std::map<std::string, std::string>& state) {
    uint64_t seed = parse_u64(state, "generator.seed", "Dropout");
    uint64_t offset = parse_u64(state, "generator.offset", "Dropout");
    generator.set_state({seed, offset});
}

// ---- FeedForward ------------------------------------------------------------------------------------
const char* activation_name(Activation a) { return a == Activation::ReLU ? "relu" : "gelu"; }

Tensor apply_activation(Activation a, const Tensor& x) { return a == Activation::ReLU ? relu(x) : gelu(x); }

FeedForward::FeedForward(const FeedForwardConfig& cfg, Generator& gen) : config(cfg) {
    require_positive(config.d_in, "FeedForward", "d_in");
    if (config.hidden.empty()) config.hidden = {4 * config.d_in};
    if (config.d_out == 0) config.d_out = config.d_in;
    require_positive(config.d_out, "FeedForward", "d_out");
    std::vector<int64_t> sizes{config.d_in};
    sizes.insert(sizes.end(), config.hidden.begin(), config.hidden.end());
    sizes.push_back(config.d_out);
    for (size_t i = 0; i + 1 < sizes.size(); ++i) {
        auto layer = std::make_shared<Linear>(sizes[i], sizes[i + 1], gen, LinearConfig{.bias = config.bias, .dtype = config.dtype});
        layers.push_back(register_module("layers." + std::to_string(i), layer));
    }
    if (config.dropout > 0.0)
        for (size_t i = 0; i < config.hidden.size(); ++i)
            dropouts.push_back(register_module("dropouts." + std::to_string(i),
                                               std::make_shared<Dropout>(gen, DropoutConfig{.p = config.dropout})));
}

Tensor FeedForward::forward(const Tensor& x) {
    Tensor h = x;
    for (size_t i = 0; i < layers.size(); ++i) {
        h = (*layers[i])(h);
        if (i + 1 < layers.size()) {
            h = apply_activation(config.activation, h);
            if (!dropouts.empty()) h = (*dropouts[i])(h);
        }
    }
    return h;
}

}  // namespace mg::nn
