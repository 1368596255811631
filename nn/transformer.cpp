// nn/transformer.cpp: PositionalEncoding, CausalSelfAttention and TransformerBlock (nn/transformer.h).
// Every forward is a handful of engine ops, so autograd gives the backward.
#include "nn/transformer.h"

#include "nn/init.h"

#include <cmath>
#include <stdexcept>
#include <vector>

namespace mg::nn {

namespace {
void require(bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument(message);
}

void check_sequence(const Tensor& x, int64_t d_model, DType dtype, const char* who) {
    require(x.dim() == 3 && x.size(2) == d_model, std::string(who) + ": expected input (batch, seq, " +
                                                      std::to_string(d_model) + "), got " + shape_str(x.shape()));
    require(x.dtype() == dtype, std::string(who) + ": input is " + dtype_name(x.dtype()) + " but parameters are " +
                                    dtype_name(dtype));
}
}  // namespace

// ---- PositionalEncoding ------------------------------------------------------------------------------
PositionalEncoding::PositionalEncoding(int64_t max_len_, int64_t d_model_, DType dtype)
    : max_len(max_len_), d_model(d_model_) {
    require(max_len > 0 && d_model > 0, "PositionalEncoding: max_len and d_model must be positive, got " +
                                            std::to_string(max_len) + " and " + std::to_string(d_model));
    std::vector<double> pe((size_t)(max_len * d_model));
    for (int64_t t = 0; t < max_len; ++t)
        for (int64_t i = 0; i < d_model; i += 2) {
            // frequency 1 / 10000^(i / d) for the channel pair (i, i+1)
            const double angle = (double)t / std::pow(10000.0, (double)i / (double)d_model);
            pe[t * d_model + i] = std::sin(angle);
            if (i + 1 < d_model) pe[t * d_model + i + 1] = std::cos(angle);
        }
    table = register_buffer("table", Tensor::from_vector(pe, {max_len, d_model}).to(dtype));  // (max_len, d)
}

Tensor PositionalEncoding::forward(int64_t T) const {
    require(T >= 0 && T <= max_len, "PositionalEncoding: sequence length " + std::to_string(T) +
                                        " is longer than max_len " + std::to_string(max_len));
    return table.slice(0, 0, T);  // (T, d), a view
}

// ---- HybridPositionalEncoding ------------------------------------------------------------------------
HybridPositionalEncoding::HybridPositionalEncoding(int64_t max_len_, int64_t d_model_, Generator& gen,
                                                   HybridPositionConfig config)
    : max_len(max_len_), d_model(d_model_) {
    require(max_len > 0 && d_model > 0, "HybridPositionalEncoding: max_len and d_model must be positive, got " +
                                            std::to_string(max_len) + " and " + std::to_string(d_model));
    require(config.learned_std >= 0, "HybridPositionalEncoding: learned_std must be >= 0");
    sinusoidal = register_module("sinusoidal", std::make_shared<PositionalEncoding>(max_len, d_model, config.dtype));
    learned = register_parameter("learned", init::normal({max_len, d_model}, 0.0, config.learned_std, gen, config.dtype));
    gate = register_parameter("gate", Tensor::full({d_model}, config.gate_init, config.dtype));
}

Tensor HybridPositionalEncoding::mix() const { return sigmoid(gate); }

Tensor HybridPositionalEncoding::forward(int64_t T) const {
    require(T >= 0 && T <= max_len, "HybridPositionalEncoding: sequence length " + std::to_string(T) +
                                        " is outside [0, max_len = " + std::to_string(max_len) + "]");
    Tensor g = mix();                                   // (d)
    Tensor fixed = sinusoidal->forward(T);              // (T, d)
    Tensor table = learned.slice(0, 0, T);              // (T, d)
    return fixed * (1.0 - g) + table * g;               // (T, d)
}

// ---- CausalSelfAttention -----------------------------------------------------------------------------
const char* attention_impl_name(AttentionImpl impl) {
    return impl == AttentionImpl::MemoryEfficient ? "memory-efficient" : "reference";
}

CausalSelfAttention::CausalSelfAttention(const AttentionConfig& config, Generator& gen) : config_(config) {
    require(config.d_model > 0 && config.heads > 0,
            "CausalSelfAttention: d_model and heads must be positive, got d_model = " + std::to_string(config.d_model) +
                ", heads = " + std::to_string(config.heads));
    require(config.d_model % config.heads == 0, "CausalSelfAttention: d_model = " + std::to_string(config.d_model) +
                                                    " is not a multiple of heads = " + std::to_string(config.heads));
    LinearConfig lc{.bias = config.bias, .dtype = config.dtype};
    qkv = register_module("qkv", std::make_shared<Linear>(config.d_model, 3 * config.d_model, gen, lc));
    proj = register_module("proj", std::make_shared<Linear>(config.d_model, config.d_model, gen, lc));
}

Tensor CausalSelfAttention::forward(const Tensor& x) {
    check_sequence(x, config_.d_model, config_.dtype, "CausalSelfAttention");
    const int64_t B = x.size(0), T = x.size(1), D = config_.d_model, H = config_.heads, Dh = D / H;
    // (B, T, 3D) -> (B, T, 3, H, Dh) -> (3, B, H, T, Dh): q, k, v are strided views, no copy.
    Tensor qkv_heads = (*qkv)(x).reshape({B, T, 3, H, Dh}).permute({2, 0, 3, 1, 4});
    Tensor q = qkv_heads.select(0, 0), k = qkv_heads.select(0, 1), v = qkv_heads.select(0, 2);  // (B, H, T, Dh)
    const double scale = 1.0 / std::sqrt((double)Dh);
    Tensor heads = config_.impl == AttentionImpl::MemoryEfficient ? attention(q, k, v, /*causal=*/true, scale)
                                                                   : attention_reference(q, k, v, true, scale);
    // (B, H, T, Dh) -> (B, T, H, Dh) -> (B, T, D): the heads side by side again (reshape copies).
    Tensor merged = heads.transpose(1, 2).reshape({B, T, D});
    return (*proj)(merged);
}

// ---- TransformerBlock --------------------------------------------------------------------------------
TransformerBlock::TransformerBlock(const BlockConfig& config, Generator& gen) : config_(config) {
    require(config.ffn_hidden > 0,
            "TransformerBlock: ffn_hidden must be positive, got " + std::to_string(config.ffn_hidden));
    ln1 = register_module("ln1", std::make_shared<LayerNorm>(config.d_model, LayerNormConfig{.dtype = config.dtype}));
    attn = register_module("attn", std::make_shared<CausalSelfAttention>(
                                       AttentionConfig{.d_model = config.d_model, .heads = config.heads,
                                                       .bias = config.bias, .impl = config.attention, .dtype = config.dtype},
                                       gen));
    ln2 = register_module("ln2", std::make_shared<LayerNorm>(config.d_model, LayerNormConfig{.dtype = config.dtype}));
    if (config.ffn == FFNKind::Dense) {
        dense_ffn = register_module(
            "ffn", std::make_shared<FeedForward>(FeedForwardConfig{.d_in = config.d_model, .hidden = {config.ffn_hidden},
                                                                   .d_out = config.d_model, .activation = Activation::GELU,
                                                                   .bias = config.bias, .dtype = config.dtype},
                                                 gen));
    } else {
        require(config.bias, "TransformerBlock: MoE experts always have biases (set bias = true)");
        moe = register_module(
            "moe", std::make_shared<SpecializedExpertNetwork>(
                       MoEConfig{.d_in = config.d_model, .hidden = {config.ffn_hidden}, .d_out = config.d_model,
                                 .experts = config.experts, .k = config.k, .balance_alpha = config.balance_alpha,
                                 .act = ExpertActivation::GELU, .dtype = config.dtype},
                       gen));
    }
}

TransformerBlock::Output TransformerBlock::forward(const Tensor& x) {
    check_sequence(x, config_.d_model, config_.dtype, "TransformerBlock");
    const int64_t B = x.size(0), T = x.size(1), D = config_.d_model;
    Output out;
    Tensor h = x + (*attn)((*ln1)(x));  // (B, T, D)
    Tensor normed = (*ln2)(h);
    if (dense_ffn) {
        out.y = h + (*dense_ffn)(normed);
        out.balance_loss = Tensor::scalar(0, config_.dtype, x.device());
    } else {
        // The MoE layer routes a flat list of tokens: (B, T, D) -> (B*T, D) and back.
        SpecializedExpertNetwork::Output m = (*moe)(normed.reshape({B * T, D}));
        out.y = h + m.y.reshape({B, T, D});
        out.balance_loss = m.balance_loss;
        out.routing = std::move(m.routing);
    }
    return out;
}

}  // namespace mg::nn
