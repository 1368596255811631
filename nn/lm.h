// nn/lm.h: a decoder-only transformer language model with MoE or dense FFNs (GPT-2's shape):
//
//   ids (B, T) --token embedding + positions--> x (B, T, d)
//              --L x TransformerBlock (pre-norm; attention, then MoE or dense FFN)-->
//              --final LayerNorm--> --LM head (tied to the embedding or its own Linear)--> logits (B, T, V)
//
// with its counters (total parameters, active parameters per token, forward FLOPs per token, each
// by component) and seeded sampling (temperature, top-k). The parts are in nn/transformer.h; the
// walk-through, with how FLOPs and active parameters are counted: docs/nn/transformer.md.
//
//   nn::LanguageModelConfig cfg{.d_model = 64, .layers = 2, .heads = 4, .max_seq = 64,
//                               .ffn = nn::FFNKind::MoE, .ffn_hidden = 256, .experts = 4, .k = 2};
//   nn::LanguageModel lm(cfg, gen);
//   auto out = lm(batch.input);                       // out.logits (B, T, 256), out.balance_loss
//   Tensor loss = lm.loss(out.logits, batch.target) + out.balance_loss;
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/random.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/transformer.h"

namespace mg::nn {

enum class PositionKind { Sinusoidal, Learned, None };
const char* position_kind_name(PositionKind kind);

struct LanguageModelConfig {
    int64_t vocab = 256;             // byte-level by default
    int64_t d_model = 64;
    int64_t layers = 2;
    int64_t heads = 4;
    int64_t max_seq = 128;           // longest sequence forward() accepts (the position table's size)
    PositionKind positions = PositionKind::Sinusoidal;
    FFNKind ffn = FFNKind::MoE;
    int64_t ffn_hidden = 256;        // dense: the FFN width; MoE: each expert's width
    int64_t experts = 4;             // MoE only
    int64_t k = 2;                   // MoE only
    double balance_alpha = 0.01;     // MoE only
    bool tie_head = false;           // true: logits = (h / sqrt(d)) E^T with E the token embedding
    bool bias = true;                // attention and FFN biases (LayerNorms always have theirs)
    AttentionImpl attention = AttentionImpl::MemoryEfficient;
    DType dtype = DType::Float32;

    // Throws std::invalid_argument naming the field when the configuration cannot be built.
    void validate() const;
    // "moe_d64_l2_e4_k2", "dense_d64_l2_h512": the naming of DESIGN.md.
    std::string name() const;
};

// Counts by component. Parameters: tensors in the model; FLOPs: forward, per token, 2 per
// multiply-add of a matrix product (the convention of Kaplan et al. 2020 and PaLM's MFU), with
// the cheap elementwise work listed where it is a per-token cost (norms, position add). The exact
// rules are in docs/nn/transformer.md and checked by hand in tests/test_lm.cpp.
struct ComponentCounts {
    int64_t embedding = 0;   // token table (+ learned position table); FLOPs: the position add
    int64_t attention = 0;   // qkv and output projections; FLOPs also the scores and the weighted sum
    int64_t router = 0;      // MoE gates
    int64_t experts = 0;     // MoE experts, or the dense FFN (a single expert that is always on)
    int64_t norms = 0;       // the 2L + 1 LayerNorms
    int64_t head = 0;        // LM head (0 parameters when tied: they are the embedding's)
    int64_t total() const { return embedding + attention + router + experts + norms + head; }
};

struct ModelCounts {
    ComponentCounts parameters;          // every parameter
    ComponentCounts active_parameters;   // what one token uses: only k of the E experts
    ComponentCounts flops_per_token;     // forward, at sequence length seq (attention grows with it)
    int64_t seq = 0;
};

class LanguageModel : public Module {
public:
    LanguageModel(const LanguageModelConfig& config, Generator& gen);

    struct Output {
        Tensor logits;                   // (B, T, vocab)
        Tensor balance_loss;             // 0-d: the sum over MoE layers (0 for a dense model)
        std::vector<Routing> routings;   // one per MoE layer: B*T tokens, row-major over (B, T)
    };
    // ids (B, T) int64/int32, 1 <= T <= max_seq, every id in [0, vocab).
    Output forward(const Tensor& ids);
    Output operator()(const Tensor& ids) { return forward(ids); }
    // Mean next-token cross-entropy: logits (B, T, V), targets (B, T).
    static Tensor loss(const Tensor& logits, const Tensor& targets);

    // Parameter and FLOP counts at sequence length seq (0 = max_seq).
    ModelCounts counts(int64_t seq = 0) const;

    std::string type_name() const override { return "LanguageModel"; }
    const LanguageModelConfig& config() const { return config_; }

    std::shared_ptr<Embedding> token_embedding;        // (vocab, d)
    std::shared_ptr<Embedding> position_embedding;     // (max_seq, d), PositionKind::Learned
    std::shared_ptr<PositionalEncoding> sinusoidal;    // PositionKind::Sinusoidal
    std::vector<std::shared_ptr<TransformerBlock>> blocks;
    std::shared_ptr<LayerNorm> ln_f;
    std::shared_ptr<Linear> head;                      // (vocab, d), undefined when tied

private:
    void check_ids(const Tensor& ids) const;
    LanguageModelConfig config_;
};

// Checks token ids for a model: (batch, seq) int32/int64, 1 <= seq <= max_seq, a non-empty batch,
// and (on the CPU) every id in [0, vocab). Throws std::invalid_argument naming `model`.
void check_token_ids(const Tensor& ids, int64_t vocab, int64_t max_seq, const std::string& model);

// ---- generation ---------------------------------------------------------------------------------
struct SamplingConfig {
    int64_t max_new_tokens = 100;
    double temperature = 1.0;   // logits / temperature; 0 = greedy (argmax)
    int64_t top_k = 0;          // keep the k most likely tokens (0 = all)
};

// Appends max_new_tokens sampled tokens to `prompt` and returns prompt + new tokens. Each step
// runs the model on the last max_seq tokens (no key/value cache: simple, and fast enough for
// demo sizes), takes the last position's logits, divides by the temperature, keeps the top_k,
// and draws from the softmax with `gen` (mg::multinomial), so a seed reproduces the text.
// Runs without recording a graph and in eval mode (restoring the mode after). Throws
// std::invalid_argument for an empty prompt, an id outside the vocabulary, temperature < 0 or
// top_k < 0.
std::vector<int64_t> generate(LanguageModel& model, const std::vector<int64_t>& prompt, const SamplingConfig& config,
                              Generator& gen);

}  // namespace mg::nn
