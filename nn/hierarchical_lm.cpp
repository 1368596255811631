// nn/hierarchical_lm.cpp: MoELanguageModel and MoEBlock (nn/hierarchical_lm.h). Every forward is the
// modules' forwards and a few engine ops, so autograd gives the backward.
#include "nn/hierarchical_lm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "nn/activation_checkpoint.h"

namespace mg::nn {

namespace {
void require(bool ok, const std::string& message) {
    if (!ok) throw std::invalid_argument(message);
}
std::string str(int64_t v) { return std::to_string(v); }
}  // namespace

// ---- configuration -------------------------------------------------------------------------------
void MoELanguageModelConfig::validate() const {
    const std::string who = "MoELanguageModelConfig: ";
    require(vocab > 0, who + "vocab must be positive, got " + str(vocab));
    require(d_model > 0, who + "d_model must be positive, got " + str(d_model));
    require(layers > 0, who + "layers must be positive, got " + str(layers));
    require(max_seq > 0, who + "max_seq must be positive, got " + str(max_seq));
    require(heads > 0, who + "heads (attention experts) must be positive, got " + str(heads));
    require(attention_k >= 1 && attention_k <= heads,
            who + "attention_k = " + str(attention_k) + " must be in [1, heads = " + str(heads) + "]");
    require(head_dim > 0 || d_model % attention_k == 0,
            who + "d_model = " + str(d_model) + " is not a multiple of attention_k = " + str(attention_k) + " (or set head_dim)");
    require(groups > 0 && experts > 0 && experts % groups == 0,
            who + "experts = " + str(experts) + " must be a positive multiple of groups = " + str(groups));
    require(group_k >= 1 && group_k <= groups, who + "group_k = " + str(group_k) + " must be in [1, groups = " + str(groups) + "]");
    require(k >= 1 && k <= experts / groups,
            who + "k = " + str(k) + " must be in [1, experts per group = " + str(experts / groups) + "]");
    require(expert_hidden > 0, who + "expert_hidden must be positive, got " + str(expert_hidden));
    require(balance_alpha >= 0, who + "balance_alpha must be >= 0");
    require(dropout >= 0 && dropout < 1, who + "dropout must be in [0, 1)");
    require(dtype == DType::Float32 || dtype == DType::Float64,
            who + "dtype must be float32 or float64, got " + dtype_name(dtype));
}

MoELanguageModelConfig MoELanguageModelConfig::named(const std::string& name) {
    long long d = 0, l = 0, e = 0;
    char tail = 0;
    const int got = std::sscanf(name.c_str(), "d%lld_l%lld_e%lld%c", &d, &l, &e, &tail);
    require(got == 3 && d > 0 && l > 0 && e >= 4 && e % 2 == 0,
            "MoELanguageModelConfig::named: '" + name + "' is not a configuration name: expected d<D>_l<L>_e<E> with "
            "positive D and L and an even E >= 4, e.g. d256_l2_e8");
    MoELanguageModelConfig c;
    c.d_model = d;
    c.layers = l;
    c.experts = e;
    c.groups = 2;
    c.group_k = 1;
    c.k = 2;
    c.heads = 8;
    c.attention_k = 2;
    c.expert_hidden = 2 * d;
    c.validate();
    return c;
}

std::string MoELanguageModelConfig::name() const {
    std::string s = "d" + str(d_model) + "_l" + str(layers) + "_e" + str(experts);
    // Fields that differ from the named configuration of the same d, l, e are appended.
    if (heads != 8) s += "_h" + str(heads);
    if (attention_k != 2) s += "_ak" + str(attention_k);
    if (groups != 2) s += "_g" + str(groups);
    if (group_k != 1) s += "_gk" + str(group_k);
    if (k != 2) s += "_k" + str(k);
    if (expert_hidden != 2 * d_model) s += "_x" + str(expert_hidden);
    return s;
}

// ---- MoEBlock ------------------------------------------------------------------------------------
MoEBlock::MoEBlock(const MoELanguageModelConfig& c, Generator& gen) : config_(c) {
    const int64_t d = c.d_model;
    ln1 = register_module("ln1", std::make_shared<LayerNorm>(d, LayerNormConfig{.dtype = c.dtype}));
    DomainAttentionConfig ac;
    ac.d_model = d;
    ac.experts = c.heads;
    ac.k = c.attention_k;
    ac.heads = 1;
    ac.head_dim = c.head_dim > 0 ? c.head_dim : d / c.attention_k;
    ac.balance_alpha = c.balance_alpha;
    ac.memory_efficient = c.memory_efficient_attention;
    ac.dtype = c.dtype;
    attn = register_module("attn", std::make_shared<DomainSpecificAttention>(ac, gen));
    ln2 = register_module("ln2", std::make_shared<LayerNorm>(d, LayerNormConfig{.dtype = c.dtype}));
    HierarchicalMoEConfig mc;
    mc.d_in = d;
    mc.hidden = {c.expert_hidden};
    mc.d_out = d;
    mc.groups = c.groups;
    mc.group_k = c.group_k;
    mc.experts_per_group = c.experts / c.groups;
    mc.k = c.k;
    mc.group_capacity_factor = c.group_capacity_factor;
    mc.capacity_factor = c.capacity_factor;
    mc.group_balance_alpha = c.balance_alpha;
    mc.balance_alpha = c.balance_alpha;
    mc.act = ExpertActivation::GELU;
    mc.schedule = c.schedule;
    mc.dtype = c.dtype;
    moe = register_module("moe", std::make_shared<HierarchicalMixtureOfExperts>(mc, gen));
    if (c.dropout > 0) {
        drop1 = register_module("drop1", std::make_shared<Dropout>(gen, DropoutConfig{.p = c.dropout}));
        drop2 = register_module("drop2", std::make_shared<Dropout>(gen, DropoutConfig{.p = c.dropout}));
    }
}

std::vector<Generator*> MoEBlock::generators() {
    std::vector<Generator*> out = dropout_generators(*this);
    for (auto& [name, m] : named_modules())
        if (auto* router = dynamic_cast<TopKRouter*>(m); router && router->stochastic()) out.push_back(&router->generator);
    return out;
}

MoEBlock::Output MoEBlock::forward(const Tensor& x) {
    require(x.dim() == 3 && x.size(2) == config_.d_model,
            "MoEBlock: expected input (batch, seq, " + str(config_.d_model) + "), got " + shape_str(x.shape()));
    const int64_t B = x.size(0), T = x.size(1), D = config_.d_model;
    Output out;
    DomainSpecificAttention::Output a = (*attn)((*ln1)(x));
    Tensor h = x + (drop1 ? (*drop1)(a.y) : a.y);  // (B, T, D)
    // The hierarchical MoE routes a flat list of tokens: (B, T, D) -> (B*T, D) and back.
    HierarchicalMixtureOfExperts::Output m = (*moe)((*ln2)(h).reshape({B * T, D}));
    Tensor f = m.y.reshape({B, T, D});
    out.y = h + (drop2 ? (*drop2)(f) : f);
    out.balance_loss = a.balance_loss + m.balance_loss;
    out.attention_routing = std::move(a.routing);
    out.ffn_routing = std::move(m.routing);
    return out;
}

// ---- MoELanguageModel ----------------------------------------------------------------------------
MoELanguageModel::MoELanguageModel(const MoELanguageModelConfig& config, Generator& gen) : config_(config) {
    config.validate();
    const int64_t d = config.d_model;
    token_embedding = register_module("token_embedding",
                                      std::make_shared<Embedding>(config.vocab, d, gen, EmbeddingConfig{config.dtype}));
    positions = register_module("positions", std::make_shared<HybridPositionalEncoding>(
                                                 config.max_seq, d, gen, HybridPositionConfig{.dtype = config.dtype}));
    for (int64_t l = 0; l < config.layers; ++l)
        blocks.push_back(register_module("blocks." + str(l), std::make_shared<MoEBlock>(config, gen)));
    ln_f = register_module("ln_f", std::make_shared<LayerNorm>(d, LayerNormConfig{.dtype = config.dtype}));
}

void MoELanguageModel::check_ids(const Tensor& ids) const {
    check_token_ids(ids, config_.vocab, config_.max_seq, "MoELanguageModel");
}

MoELanguageModel::Output MoELanguageModel::forward(const Tensor& ids) {
    check_ids(ids);
    const int64_t B = ids.size(0), T = ids.size(1), d = config_.d_model;
    Output out;
    Tensor x = (*token_embedding)(ids) + (*positions)(T);  // (B, T, d); positions (T, d) broadcast
    out.balance_loss = Tensor::scalar(0, config_.dtype, ids.device());
    // Checkpointing only pays when a graph is recorded (training); in evaluation it would only
    // cost the copy of the routing.
    const bool use_checkpoint = config_.checkpoint_activations && grad_enabled();
    for (auto& block : blocks) {
        if (use_checkpoint) {
            // The block runs twice: once now without a graph (its routing is what we report)
            // and once in backward with one. Only x is kept in between.
            MoEBlock& b = *block;
            // fn is kept for the backward, so what it writes to must live as long: a shared_ptr.
            auto routing = std::make_shared<LayerRouting>();
            CheckpointFn fn = [&b, routing](const std::vector<Tensor>& in) {
                MoEBlock::Output o = b.forward(in[0]);
                if (!checkpoint_recomputing()) *routing = {std::move(o.attention_routing), std::move(o.ffn_routing)};
                return std::vector<Tensor>{o.y, o.balance_loss};
            };
            std::vector<Tensor> y = nn::checkpoint(b, fn, {x}, b.generators());
            x = y[0];
            out.balance_loss = out.balance_loss + y[1];
            out.layers.push_back(*routing);
        } else {
            MoEBlock::Output o = (*block)(x);
            x = o.y;
            out.balance_loss = out.balance_loss + o.balance_loss;
            out.layers.push_back({std::move(o.attention_routing), std::move(o.ffn_routing)});
        }
    }
    // Tied head, as LanguageModel with tie_head: embedding rows are N(0, 1), so h . e has a
    // standard deviation of about sqrt(d); scaling by 1/sqrt(d) starts the logits near unit scale.
    Tensor h = (*ln_f)(x);  // (B, T, d)
    const double scale = 1.0 / std::sqrt((double)d);
    out.logits = matmul((h * scale).reshape({B * T, d}), token_embedding->weight.t()).reshape({B, T, config_.vocab});
    return out;
}

// ---- counters ------------------------------------------------------------------------------------
ModelCounts MoELanguageModel::counts(int64_t seq) const {
    const MoELanguageModelConfig& c = config_;
    if (seq == 0) seq = c.max_seq;
    require(seq >= 1 && seq <= c.max_seq, "MoELanguageModel::counts: seq " + str(seq) + " outside [1, max_seq]");
    const int64_t d = c.d_model, V = c.vocab;
    ModelCounts m;
    m.seq = seq;
    ComponentCounts& p = m.parameters;
    ComponentCounts& a = m.active_parameters;
    ComponentCounts& f = m.flops_per_token;

    p.embedding = token_embedding->num_parameters() + positions->num_parameters();
    a.embedding = p.embedding;
    f.embedding = 3 * d;  // (1 - g) * sin + g * learned: two products and a sum per channel

    for (const auto& block : blocks) {
        const DomainSpecificAttention& attn = *block->attn;
        const HierarchicalMixtureOfExperts& moe = *block->moe;
        const int64_t attn_router = attn.router->num_parameters();
        p.attention += attn.num_parameters() - attn_router;
        a.attention += attn.active_parameters() - attn_router;
        f.attention += attn.flops_per_token(seq) - 2 * d * attn.config().experts;

        // Routers: the attention router and the group router are always used; a token then uses
        // k_g groups, each with its own router: count the k_g biggest (they differ only after pruning).
        std::vector<int64_t> group_router_params, group_router_flops;
        int64_t expert_params = 0, expert_flops = 0;
        for (const auto& group : moe.groups) {
            const int64_t rp = group->router->num_parameters();
            p.router += rp;
            group_router_params.push_back(rp);
            group_router_flops.push_back(2 * d * group->config().experts);
            for (const auto& expert : group->experts) p.experts += expert->num_parameters();
            expert_params = group->experts[0]->num_parameters();  // all experts have one size
            expert_flops = group->experts[0]->flops_per_token();
        }
        std::sort(group_router_params.rbegin(), group_router_params.rend());
        std::sort(group_router_flops.rbegin(), group_router_flops.rend());
        const int64_t kg = moe.config().group_k, k = moe.config().k;
        p.router += attn_router + moe.group_router->num_parameters();
        a.router += attn_router + moe.group_router->num_parameters();
        f.router += 2 * d * attn.config().experts + 2 * d * moe.config().groups;
        for (int64_t j = 0; j < kg; ++j) {
            a.router += group_router_params[j];
            f.router += group_router_flops[j];
        }
        a.experts += kg * k * expert_params;
        f.experts += kg * k * expert_flops;

        p.norms += block->ln1->num_parameters() + block->ln2->num_parameters();
        f.norms += 2 * 7 * d;
    }
    p.norms += ln_f->num_parameters();
    f.norms += 7 * d;
    a.norms = p.norms;
    p.head = a.head = 0;  // tied: the embedding's parameters
    f.head = 2 * d * V;
    return m;
}

}  // namespace mg::nn
