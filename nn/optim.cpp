// nn/optim.cpp: SGD, Adam/AdamW, clip_grad_norm and the warmup + cosine schedule.
//
// Each optimizer's update is written twice with the same formulas, in the same order:
//   update_*_loop:    one pass over contiguous CPU memory (the readable reference), arithmetic in
//                     double per element, rounded once when stored;
//   update_*_generic: engine ops (mul_, add_, sqrt, ...), so it runs on any device.
#include "nn/optim.h"

#include <cmath>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace mg::nn {

// ---- Optimizer --------------------------------------------------------------------------------------
Optimizer::Optimizer(std::vector<Tensor> params, double lr, const char* who)
    : params_(std::move(params)), state_(params_.size()), lr_(lr) {
    if (!(lr >= 0.0)) throw std::invalid_argument(std::string(who) + ": lr must be >= 0, got " + std::to_string(lr));
    for (size_t i = 0; i < params_.size(); ++i) {
        const Tensor& p = params_[i];
        if (!p.defined()) throw std::invalid_argument(std::string(who) + ": parameter " + std::to_string(i) + " is undefined");
        if (!p.is_leaf() || !p.requires_grad())
            throw std::invalid_argument(std::string(who) + ": parameter " + std::to_string(i) +
                                        " must be a leaf tensor that requires grad");
        for (size_t j = 0; j < i; ++j)
            if (params_[j].same(p))
                throw std::invalid_argument(std::string(who) + ": parameter " + std::to_string(i) +
                                            " appears twice (also at " + std::to_string(j) + ")");
    }
}

void Optimizer::zero_grad() {
    for (const Tensor& p : params_) p.zero_grad();
}

void Optimizer::step() {
    NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
        const Tensor& p = params_[i];
        Tensor g = p.grad();
        if (!g.defined()) continue;
        if (g.device() != p.device())
            throw std::invalid_argument(type_name() + ".step: parameter " + std::to_string(i) + " is on " +
                                        device_name(p.device()) + " but its gradient on " + device_name(g.device()));
        state_[i].step++;
        bool fast = !use_generic_path && p.is_contiguous() && g.is_contiguous() && g.dtype() == p.dtype() &&
                    is_floating(p.dtype());
        update(p, g, state_[i], fast);
    }
}

Tensor& Optimizer::buffer(ParamState& state, const std::string& name, const Tensor& param) {
    auto it = state.buffers.find(name);
    if (it == state.buffers.end())
        it = state.buffers.emplace(name, Tensor::zeros(param.shape(), param.dtype(), param.device())).first;
    else if (it->second.device() != param.device())
        it->second = it->second.to(param.device());  // the model moved after some steps: its state follows
    return it->second;
}

namespace {
// A loop over the elements of contiguous CPU tensors of the parameter's type.
template <typename F> void for_each_element(const Tensor& param, F&& body) {
    dispatch_floating(param.dtype(), "optimizer", [&](auto tag) {
        using T = decltype(tag);
        body(T{});
    });
    param.storage()->version++;  // an in-place write, as Tensor::copy_ would record
}
}  // namespace

// ---- SGD ----------------------------------------------------------------------------------------------
SGD::SGD(std::vector<Tensor> params, SGDConfig cfg) : Optimizer(std::move(params), cfg.lr, "SGD"), config(cfg) {
    if (config.momentum < 0) throw std::invalid_argument("SGD: momentum must be >= 0, got " + std::to_string(config.momentum));
    if (config.weight_decay < 0)
        throw std::invalid_argument("SGD: weight_decay must be >= 0, got " + std::to_string(config.weight_decay));
    if (config.nesterov && (config.momentum <= 0 || config.dampening != 0))
        throw std::invalid_argument("SGD: nesterov needs momentum > 0 and dampening = 0");
}

std::vector<std::string> SGD::state_keys() const {
    if (config.momentum != 0) return {"momentum_buffer"};
    return {};
}

void SGD::update(const Tensor& param, const Tensor& grad, ParamState& state, bool fast) {
    const double lr = lr_, wd = config.weight_decay, mu = config.momentum, damp = config.dampening;
    const bool first = state.step == 1, nesterov = config.nesterov;
    if (fast && param.device() == Device::CPU) {  // a host loop; other devices use the engine ops below
        Tensor* buf = mu != 0 ? &buffer(state, "momentum_buffer", param) : nullptr;
        for_each_element(param, [&](auto tag) {
            using T = decltype(tag);
            T* p = param.data_ptr<T>();
            const T* g = grad.data_ptr<T>();
            T* b = buf ? buf->data_ptr<T>() : nullptr;
            const int64_t n = param.numel();
#pragma omp parallel for if (n > 32768)
            for (int64_t i = 0; i < n; ++i) {
                double d = (double)g[i] + wd * (double)p[i];
                if (b) {
                    double bi = first ? d : mu * (double)b[i] + (1.0 - damp) * d;
                    b[i] = (T)bi;
                    d = nesterov ? d + mu * (double)b[i] : (double)b[i];
                }
                p[i] = (T)((double)p[i] - lr * d);
            }
        });
        return;
    }
    // Device-agnostic: the same formulas in engine ops.
    Tensor d = wd != 0 ? grad + param * wd : grad;
    if (mu != 0) {
        Tensor& b = buffer(state, "momentum_buffer", param);
        if (first) b.copy_(d);
        else b.mul_(mu).add_(d, 1.0 - damp);
        d = nesterov ? d + b * mu : b;
    }
    param.detach().add_(d, -lr);
}

// ---- Adam / AdamW -----------------------------------------------------------------------------------
Adam::Adam(std::vector<Tensor> params, AdamConfig cfg) : Adam(std::move(params), cfg, false, "Adam") {}

Adam::Adam(std::vector<Tensor> params, AdamConfig cfg, bool decoupled, const char* who)
    : Optimizer(std::move(params), cfg.lr, who), config(cfg), decoupled_(decoupled) {
    auto check = [who](bool ok, const std::string& what) {
        if (!ok) throw std::invalid_argument(std::string(who) + ": " + what);
    };
    check(config.beta1 >= 0 && config.beta1 < 1, "beta1 must be in [0, 1), got " + std::to_string(config.beta1));
    check(config.beta2 >= 0 && config.beta2 < 1, "beta2 must be in [0, 1), got " + std::to_string(config.beta2));
    check(config.eps >= 0, "eps must be >= 0, got " + std::to_string(config.eps));
    check(config.weight_decay >= 0, "weight_decay must be >= 0, got " + std::to_string(config.weight_decay));
}

AdamW::AdamW(std::vector<Tensor> params, AdamWConfig c)
    : Adam(std::move(params), {.lr = c.lr, .beta1 = c.beta1, .beta2 = c.beta2, .eps = c.eps, .weight_decay = c.weight_decay},
           true, "AdamW") {}

void Adam::update(const Tensor& param, const Tensor& grad, ParamState& state, bool fast) {
    const double lr = lr_, b1 = config.beta1, b2 = config.beta2, eps = config.eps, wd = config.weight_decay;
    // Bias corrections: m and v start at zero, so early on they underestimate E[g] and E[g^2] by
    // the factors (1 - b1^t) and (1 - b2^t); dividing by them removes that bias.
    const double t = (double)state.step;
    const double bias_correction1 = 1.0 - std::pow(b1, t);
    const double bias_correction2 = 1.0 - std::pow(b2, t);
    const double step_size = lr / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    const double decay = decoupled_ ? 1.0 - lr * wd : 1.0;  // AdamW shrinks p first
    const double l2 = decoupled_ ? 0.0 : wd;                // Adam adds wd*p to the gradient
    Tensor& m_buf = buffer(state, "exp_avg", param);
    Tensor& v_buf = buffer(state, "exp_avg_sq", param);
    if (fast) {  // one pass over memory: one kernel per parameter on any device (engine/ops_optim.cpp)
        adam_update_(param, grad, m_buf, v_buf,
                     {.step_size = step_size, .beta1 = b1, .beta2 = b2, .eps = eps, .decay = decay, .l2 = l2,
                      .inv_sqrt_bias_correction2 = 1.0 / bias_correction2_sqrt});
        return;
    }
    Tensor p = param.detach();
    if (decoupled_ && wd != 0) p.mul_(decay);
    Tensor g = l2 != 0 ? grad + p * l2 : grad;
    m_buf.mul_(b1).add_(g, 1.0 - b1);
    v_buf.mul_(b2).add_(g * g, 1.0 - b2);
    Tensor denom = mg::sqrt(v_buf) / bias_correction2_sqrt + eps;
    p.add_(m_buf / denom, -step_size);
}

// ---- checkpoint state -------------------------------------------------------------------------------
std::vector<std::pair<std::string, Tensor>> Optimizer::state_tensors() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (size_t i = 0; i < state_.size(); ++i) {
        if (state_[i].step == 0) continue;
        std::string prefix = std::to_string(i) + ".";
        out.emplace_back(prefix + "step", Tensor::scalar((double)state_[i].step, DType::Int64));
        for (const auto& [name, t] : state_[i].buffers) out.emplace_back(prefix + name, t);
    }
    return out;
}

void Optimizer::check_state_tensors(const std::map<std::string, Tensor>& tensors) const {
    const std::string who = type_name() + " state";
    std::vector<std::string> keys = state_keys();
    std::vector<bool> has_step(params_.size(), false);
    for (const auto& [name, t] : tensors) {
        size_t dot = name.find('.');
        std::string index_str = name.substr(0, dot);
        if (dot == std::string::npos || index_str.empty() || index_str.size() > 9 ||
            index_str.find_first_not_of("0123456789") != std::string::npos)
            throw std::invalid_argument(who + ": unexpected entry '" + name + "' (expected '<index>.<name>')");
        size_t i = std::stoul(index_str);
        std::string key = name.substr(dot + 1);
        if (i >= params_.size())
            throw std::invalid_argument(who + ": entry '" + name + "' is for parameter " + std::to_string(i) +
                                        " but the optimizer has " + std::to_string(params_.size()) + " parameters");
        if (key == "step") {
            if (t.dtype() != DType::Int64 || t.numel() != 1)
                throw std::invalid_argument(who + ": '" + name + "' must be one int64, got " + dtype_name(t.dtype()) + " " +
                                            shape_str(t.shape()));
            if (t.item() < 1) throw std::invalid_argument(who + ": '" + name + "' must be >= 1, got " + std::to_string(t.item()));
            has_step[i] = true;
            continue;
        }
        bool known = false;
        for (const auto& k : keys) known = known || k == key;
        if (!known) throw std::invalid_argument(who + ": unexpected buffer '" + name + "' (" + type_name() + " keeps " +
                                                std::to_string(keys.size()) + " buffers per parameter)");
        const Tensor& p = params_[i];
        if (t.shape() != p.shape() || t.dtype() != p.dtype())
            throw std::invalid_argument(who + ": '" + name + "' is " + dtype_name(t.dtype()) + " of shape " +
                                        shape_str(t.shape()) + " but parameter " + std::to_string(i) + " is " +
                                        dtype_name(p.dtype()) + " of shape " + shape_str(p.shape()));
    }
    for (size_t i = 0; i < params_.size(); ++i) {
        bool any = false;
        for (const auto& k : keys) {
            bool present = tensors.count(std::to_string(i) + "." + k) > 0;
            any = any || present;
            if (has_step[i] && !present)
                throw std::invalid_argument(who + ": parameter " + std::to_string(i) + " has a step count but no '" + k + "'");
        }
        if (any && !has_step[i])
            throw std::invalid_argument(who + ": parameter " + std::to_string(i) + " has buffers but no step count");
    }
}

void Optimizer::load_state_tensors(const std::map<std::string, Tensor>& tensors) {
    check_state_tensors(tensors);
    std::vector<ParamState> fresh(params_.size());
    for (const auto& [name, t] : tensors) {
        size_t dot = name.find('.');
        size_t i = std::stoul(name.substr(0, dot));
        std::string key = name.substr(dot + 1);
        if (key == "step") fresh[i].step = (int64_t)t.item();
        else fresh[i].buffers[key] = t.detach().to(params_[i].device()).clone();
    }
    state_ = std::move(fresh);
}

// ---- clipping -------------------------------------------------------------------------------------------
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
    NoGradGuard no_grad;
    // Each gradient's sum of squares in float64, added up in parameter order where the gradients
    // are, and read once: one wait for a GPU per call, not one per parameter. (On the CPU this is
    // the same arithmetic as adding up item() values in a double.)
    Tensor sum_squares;
    for (const Tensor& p : params) {
        Tensor g = p.grad();
        if (!g.defined()) continue;
        Tensor s = mg::sum(g * g).to(DType::Float64);
        sum_squares = sum_squares.defined() ? sum_squares + s : s;
    }
    double total = sum_squares.defined() ? std::sqrt(sum_squares.item()) : 0.0;
    double coef = max_norm / (total + 1e-6);
    if (coef < 1.0)
        for (const Tensor& p : params) {
            Tensor g = p.grad();
            if (g.defined()) g.mul_(coef);
        }
    return total;
}

// ---- schedule ---------------------------------------------------------------------------------------------
double warmup_cosine_lr(int64_t step, const WarmupCosineConfig& c) {
    if (step < c.warmup_steps) return c.lr * (double)step / (double)c.warmup_steps;
    if (step >= c.total_steps) return c.min_lr;
    double progress = (double)(step - c.warmup_steps) / (double)(c.total_steps - c.warmup_steps);
    return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

WarmupCosine::WarmupCosine(WarmupCosineConfig c) : config(c) {
    if (c.warmup_steps < 0 || c.total_steps < c.warmup_steps)
        throw std::invalid_argument("WarmupCosine: need 0 <= warmup_steps <= total_steps, got " +
                                    std::to_string(c.warmup_steps) + " and " + std::to_string(c.total_steps));
}

double WarmupCosine::apply(Optimizer& opt, int64_t step) const {
    double lr = lr_at(step);
    opt.set_lr(lr);
    return lr;
}

}  // namespace mg::nn
