// nn/transformer.h: the parts of a decoder-only transformer, as in GPT-2 / nanoGPT, each a Module:
//
//   PositionalEncoding     the fixed sinusoidal table of "Attention Is All You Need" (a buffer)
//   HybridPositionalEncoding  that table mixed with a learned one by a learned per-channel gate
//   CausalSelfAttention    multi-head self-attention where token t sees tokens 0..t; by default
//                          the memory-efficient mg::attention op, mg::attention_reference on request
//   TransformerBlock       pre-norm: x + attn(ln1(x)), then x + ffn(ln2(x)), where the FFN is a
//                          dense FeedForward or a sparse MoE layer (router + experts, nn/moe.h)
//
// The language model that stacks them (embeddings, blocks, final norm, LM head), its counters of
// parameters and FLOPs, and generation are in nn/lm.h. The math, step by step: docs/nn/transformer.md;
// attention itself: docs/nn/attention.md.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/random.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/moe.h"

namespace mg::nn {

// ---- PositionalEncoding (sinusoidal) -------------------------------------------------------------
// pe[t, 2i]   = sin(t / 10000^(2i / d))
// pe[t, 2i+1] = cos(t / 10000^(2i / d))
// Each pair of channels turns at its own frequency, so position t + j is a fixed rotation of
// position t: attention can read relative offsets from it. Nothing is learnt; the table is a buffer.
class PositionalEncoding : public Module {
public:
    PositionalEncoding(int64_t max_len, int64_t d_model, DType dtype = DType::Float32);
    // The first T rows of the table: (T, d_model). Throws std::invalid_argument when T > max_len.
    Tensor forward(int64_t T) const;
    Tensor operator()(int64_t T) const { return forward(T); }
    std::string type_name() const override { return "PositionalEncoding"; }

    int64_t max_len, d_model;
    Tensor table;  // (max_len, d_model)
};

// ---- HybridPositionalEncoding (sinusoidal + learned, mixed by a learned gate) -------------------
// pe[t] = (1 - g) * sinusoidal[t] + g * learned[t],   g = sigmoid(gate)  (one gate per channel)
// The sinusoid gives every position a fixed, smooth code from the first step (and relative
// offsets as rotations); the learned table (GPT-2's kind) can fit whatever the data wants. The
// gate lets the model choose per channel. gate starts at gate_init (0: g = 0.5, an even mix)
// and the learned table at N(0, learned_std^2), so at init pe is about half the sinusoid.
// Parameters: max_len * d_model (table) + d_model (gate). docs/nn/transformer.md, "Hybrid positions".
struct HybridPositionConfig {
    double gate_init = 0.0;      // the gate logits' initial value; g = sigmoid(gate_init)
    double learned_std = 0.02;   // the learned table's initial standard deviation (GPT-2's)
    DType dtype = DType::Float32;
};

class HybridPositionalEncoding : public Module {
public:
    HybridPositionalEncoding(int64_t max_len, int64_t d_model, Generator& gen, HybridPositionConfig config = {});
    // The first T rows of the mix: (T, d_model). Throws std::invalid_argument when T > max_len.
    Tensor forward(int64_t T) const;
    Tensor operator()(int64_t T) const { return forward(T); }
    // sigmoid(gate): (d_model), the learned table's share in each channel.
    Tensor mix() const;
    std::string type_name() const override { return "HybridPositionalEncoding"; }

    int64_t max_len, d_model;
    std::shared_ptr<PositionalEncoding> sinusoidal;  // the fixed table (a buffer)
    Tensor learned;  // (max_len, d_model) parameter
    Tensor gate;     // (d_model) parameter, gate logits
};

// ---- CausalSelfAttention -------------------------------------------------------------------------
enum class AttentionImpl {
    MemoryEfficient,  // mg::attention: tiled online softmax, no T x T matrix (the default)
    Reference,        // mg::attention_reference: matmul, causal mask, softmax, matmul
};
const char* attention_impl_name(AttentionImpl impl);

struct AttentionConfig {
    int64_t d_model = 0;
    int64_t heads = 1;       // d_model must be a multiple of heads; head_dim = d_model / heads
    bool bias = true;        // biases of the qkv and output projections (GPT-2 and the peer have them)
    AttentionImpl impl = AttentionImpl::MemoryEfficient;
    DType dtype = DType::Float32;
};

// qkv = x W_qkv^T + b   (one Linear d -> 3d, as GPT-2's c_attn and the PyTorch peer)
// q, k, v: (B, H, T, Dh), views of qkv; out_h = softmax(q k^T / sqrt(Dh) + causal mask) v
// y = concat_h(out_h) W_proj^T + b
class CausalSelfAttention : public Module {
public:
    CausalSelfAttention(const AttentionConfig& config, Generator& gen);
    // x (B, T, d_model) -> (B, T, d_model)
    Tensor forward(const Tensor& x);
    Tensor operator()(const Tensor& x) { return forward(x); }
    std::string type_name() const override { return "CausalSelfAttention"; }
    const AttentionConfig& config() const { return config_; }
    int64_t head_dim() const { return config_.d_model / config_.heads; }

    std::shared_ptr<Linear> qkv;   // d -> 3d
    std::shared_ptr<Linear> proj;  // d -> d

private:
    AttentionConfig config_;
};

// ---- TransformerBlock ----------------------------------------------------------------------------
enum class FFNKind { Dense, MoE };

struct BlockConfig {
    int64_t d_model = 0;
    int64_t heads = 1;
    FFNKind ffn = FFNKind::MoE;
    int64_t ffn_hidden = 0;          // dense: the FFN's hidden width; MoE: each expert's hidden width
    int64_t experts = 4;             // MoE only
    int64_t k = 2;                   // MoE only: experts per token
    double balance_alpha = 0.01;     // MoE only: Switch balance loss weight
    bool bias = true;                // attention and FFN biases
    AttentionImpl attention = AttentionImpl::MemoryEfficient;
    DType dtype = DType::Float32;
};

// Pre-norm (GPT-2): the residual stream x is never normalised itself, only what each sub-layer
// reads, so gradients reach the embeddings through the identity paths unchanged.
//   x = x + attn(ln1(x))
//   x = x + ffn(ln2(x))           ffn: d -> hidden -> d with GELU, or the MoE layer
class TransformerBlock : public Module {
public:
    TransformerBlock(const BlockConfig& config, Generator& gen);

    struct Output {
        Tensor y;                        // (B, T, d_model)
        Tensor balance_loss;             // 0-d: the MoE layer's (0 for a dense block)
        std::optional<Routing> routing;  // MoE blocks: the routing of the B*T tokens, row-major
    };
    // x (B, T, d_model)
    Output forward(const Tensor& x);
    Output operator()(const Tensor& x) { return forward(x); }
    std::string type_name() const override { return "TransformerBlock"; }
    const BlockConfig& config() const { return config_; }

    std::shared_ptr<LayerNorm> ln1, ln2;
    std::shared_ptr<CausalSelfAttention> attn;
    std::shared_ptr<FeedForward> dense_ffn;            // FFNKind::Dense
    std::shared_ptr<SpecializedExpertNetwork> moe;     // FFNKind::MoE

private:
    BlockConfig config_;
};

}  // namespace mg::nn
