// nn/layers.h: the basic layers, as in torch.nn: Linear, Embedding, LayerNorm, Dropout and the
// position-wise FeedForward network (the dense baseline the MoE experts are compared with).
//
// Each layer is a Module built from engine ops (engine/ops.h), so its backward comes for free from
// autograd. Parameters are initialised exactly as PyTorch's defaults, drawn from an mg::Generator.
// Configuration goes in small structs with designated initialisers:
//     auto fc = std::make_shared<nn::Linear>(20, 64, gen, nn::LinearConfig{.bias = false});
// Every layer has forward(x) and operator()(x).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/random.h"
#include "nn/module.h"

namespace mg::nn {

// ---- Linear: y = x W^T + b ------------------------------------------------------------------
struct LinearConfig {
    bool bias = true;
    DType dtype = DType::Float32;
};

class Linear : public Module {
public:
    // weight (out, in) ~ U(-1/sqrt(in), 1/sqrt(in))   (torch: kaiming_uniform_(a=sqrt(5)))
    // bias   (out)     ~ U(-1/sqrt(in), 1/sqrt(in))
    Linear(int64_t in_features, int64_t out_features, Generator& gen, LinearConfig config = {});
    // x (..., in) -> (..., out)
    Tensor forward(const Tensor& x) const;
    Tensor operator()(const Tensor& x) const { return forward(x); }
    std::string type_name() const override { return "Linear"; }

    int64_t in_features, out_features;
    Tensor weight;  // (out, in), as PyTorch stores it
    Tensor bias;    // (out), undefined without bias
};

// ---- Embedding: a lookup table of vectors -----------------------------------------------------
struct EmbeddingConfig {
    DType dtype = DType::Float32;
};

class Embedding : public Module {
public:
    // weight (num_embeddings, dim) ~ N(0, 1)   (torch's default)
    Embedding(int64_t num_embeddings, int64_t embedding_dim, Generator& gen, EmbeddingConfig config = {});
    // indices (...) int32/int64 -> (..., dim)
    Tensor forward(const Tensor& indices) const;
    Tensor operator()(const Tensor& indices) const { return forward(indices); }
    std::string type_name() const override { return "Embedding"; }

    int64_t num_embeddings, embedding_dim;
    Tensor weight;  // (num_embeddings, dim)
};

// ---- LayerNorm over the last dimension ----------------------------------------------------------
struct LayerNormConfig {
    double eps = 1e-5;
    bool elementwise_affine = true;  // learn weight (ones) and bias (zeros)
    bool bias = true;                // with elementwise_affine: also learn the bias
    DType dtype = DType::Float32;
};

class LayerNorm : public Module {
public:
    explicit LayerNorm(int64_t dim, LayerNormConfig config = {});
    // x (..., dim) -> (..., dim): (x - mean) / sqrt(var + eps) * weight + bias
    Tensor forward(const Tensor& x) const;
    Tensor operator()(const Tensor& x) const { return forward(x); }
    std::string type_name() const override { return "LayerNorm"; }

    int64_t dim;
    double eps;
    Tensor weight;  // (dim) ones, or undefined
    Tensor bias;    // (dim) zeros, or undefined
};

// ---- Dropout ------------------------------------------------------------------------------------
struct DropoutConfig {
    double p = 0.1;
};

// Zeroes each element with probability p while training and scales the rest by 1/(1-p); the
// identity in eval(). Unlike PyTorch (one global generator) each Dropout owns its generator,
// seeded from `gen` when it is built, and saves its state in checkpoints (extra_state), so a
// resumed run draws the same masks.
class Dropout : public Module {
public:
    Dropout(Generator& gen, DropoutConfig config = {});
    Tensor forward(const Tensor& x);
    Tensor operator()(const Tensor& x) { return forward(x); }
    std::string type_name() const override { return "Dropout"; }
    std::map<std::string, std::string> extra_state() const override;
    void set_extra_state(const std::map<std::string, std::string>& state) override;

    double p;
    Generator generator;
};

// ---- FeedForward: the position-wise MLP ---------------------------------------------------------
enum class Activation { ReLU, GELU };
const char* activation_name(Activation a);
Tensor apply_activation(Activation a, const Tensor& x);

struct FeedForwardConfig {
    int64_t d_in = 0;
    std::vector<int64_t> hidden = {};   // hidden sizes; empty = 4 * d_in (the transformer default)
    int64_t d_out = 0;                  // 0 = d_in (a transformer block's FFN)
    Activation activation = Activation::GELU;
    bool bias = true;
    double dropout = 0.0;               // after each hidden activation (0 = no Dropout layers)
    DType dtype = DType::Float32;
};

// d_in -> hidden[0] -> ... -> hidden[n-1] -> d_out, with the activation after every layer but
// the last. The transformer FFN is {.d_in = d, .hidden = {4 d}} (GELU); demo 01's experts are
// {.d_in = 20, .hidden = {64, 32}, .d_out = 3, .activation = Activation::ReLU}.
// Parameters are named layers.0.weight, layers.0.bias, layers.1.weight, ...
class FeedForward : public Module {
public:
    FeedForward(const FeedForwardConfig& config, Generator& gen);
    // x (..., d_in) -> (..., d_out)
    Tensor forward(const Tensor& x);
    Tensor operator()(const Tensor& x) { return forward(x); }
    std::string type_name() const override { return "FeedForward"; }

    FeedForwardConfig config;
    std::vector<std::shared_ptr<Linear>> layers;
    std::vector<std::shared_ptr<Dropout>> dropouts;  // one per hidden layer when config.dropout > 0
};

}  // namespace mg::nn
