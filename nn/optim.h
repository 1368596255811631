// nn/optim.h: optimizers (SGD with momentum, Adam, AdamW), global-norm gradient clipping and the
// warmup + cosine learning-rate schedule, with PyTorch's update rules (torch.optim, v2.x).
//
// An optimizer holds the parameters it updates and, per parameter, a ParamState: a step count and
// named buffers ("momentum_buffer", "exp_avg", "exp_avg_sq"). step() updates every parameter
// that has a gradient, in place, under NoGradGuard. Two paths compute the same formulas:
//   - one pass over contiguous float32/float64 tensors (fast, readable): SGD's a loop over
//     data_ptr on the CPU, Adam's the op adam_update_ (engine/ops_optim.cpp, a CPU and a CUDA kernel), and
//   - a device-agnostic path through engine ops (mul_, add_, sqrt, ...), used for everything else
//     or when `use_generic_path` is set; tests check that the two agree.
// The state is what a checkpoint saves (nn/checkpoint.h), so a resumed run continues exactly.
// docs/nn/optimizers.md writes out every formula.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace mg::nn {

struct ParamState {
    int64_t step = 0;                      // how many updates this parameter has had
    std::map<std::string, Tensor> buffers; // same shape, dtype and device as the parameter
};

class Optimizer {
public:
    Optimizer(std::vector<Tensor> params, double lr, const char* who);
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    // Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)).
    void zero_grad();
    // One update of every parameter that has a gradient; parameters without one are skipped and
    // their step count does not advance (as in PyTorch).
    void step();

    double lr() const { return lr_; }
    void set_lr(double lr) { lr_ = lr; }
    const std::vector<Tensor>& params() const { return params_; }
    const std::vector<ParamState>& state() const { return state_; }

    // "SGD", "Adam", "AdamW": checked when a checkpoint is loaded.
    virtual std::string type_name() const = 0;
    // The buffers every parameter that has taken a step holds ("exp_avg", "exp_avg_sq").
    virtual std::vector<std::string> state_keys() const = 0;

    // ---- checkpoints ----------------------------------------------------------------------------
    // The state as named tensors: "<i>.step" (int64, 0-d) and "<i>.<buffer>" for every parameter
    // i that has taken a step. Tensors are the live buffers (the checkpoint copies them).
    std::vector<std::pair<std::string, Tensor>> state_tensors() const;
    // Throws std::invalid_argument naming what is wrong (unknown parameter index, missing or
    // unexpected buffer, wrong shape or dtype) without changing anything.
    void check_state_tensors(const std::map<std::string, Tensor>& tensors) const;
    // check_state_tensors, then replaces the whole state with copies on the parameters' devices.
    void load_state_tensors(const std::map<std::string, Tensor>& tensors);

    // Force the engine-ops path even for CPU tensors (tests compare it with the loops).
    bool use_generic_path = false;

protected:
    // Updates one parameter from its gradient; state.step is already incremented. `fast` says
    // whether the CPU loop path may be used (CPU, contiguous param and grad, float32/float64).
    virtual void update(const Tensor& param, const Tensor& grad, ParamState& state, bool fast) = 0;
    // The buffer `name` of a state, created as zeros like `param` on first use.
    static Tensor& buffer(ParamState& state, const std::string& name, const Tensor& param);

    std::vector<Tensor> params_;
    std::vector<ParamState> state_;
    double lr_;
};

// ---- SGD ----------------------------------------------------------------------------------------
struct SGDConfig {
    double lr = 1e-2;
    double momentum = 0.0;
    double dampening = 0.0;
    double weight_decay = 0.0;  // L2: added to the gradient as weight_decay * param
    bool nesterov = false;
};

// g = grad + wd*p;  buf = g (first step) or momentum*buf + (1-dampening)*g;
// g = nesterov ? g + momentum*buf : buf;  p -= lr * g   (torch.optim.SGD)
class SGD : public Optimizer {
public:
    SGD(std::vector<Tensor> params, SGDConfig config = {});
    std::string type_name() const override { return "SGD"; }
    std::vector<std::string> state_keys() const override;
    SGDConfig config;

protected:
    void update(const Tensor& param, const Tensor& grad, ParamState& state, bool fast) override;
};

// ---- Adam and AdamW -------------------------------------------------------------------------------
struct AdamConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.0;  // Adam: L2 added to the gradient. AdamW: decoupled (default 1e-2).
};

// m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  t = step
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)          (torch.optim.Adam)
class Adam : public Optimizer {
public:
    Adam(std::vector<Tensor> params, AdamConfig config = {});
    std::string type_name() const override { return decoupled_ ? "AdamW" : "Adam"; }
    std::vector<std::string> state_keys() const override { return {"exp_avg", "exp_avg_sq"}; }
    AdamConfig config;

protected:
    Adam(std::vector<Tensor> params, AdamConfig config, bool decoupled, const char* who);
    void update(const Tensor& param, const Tensor& grad, ParamState& state, bool fast) override;

private:
    bool decoupled_;
};

// AdamW: first p *= 1 - lr*weight_decay (decoupled weight decay, Loshchilov & Hutter), then the
// Adam update with the plain gradient (torch.optim.AdamW). Its default weight_decay is 1e-2.
struct AdamWConfig {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 1e-2;
};
class AdamW : public Adam {
public:
    AdamW(std::vector<Tensor> params, AdamWConfig config = {});
};

// ---- gradient clipping --------------------------------------------------------------------------
// total = sqrt(sum over params of sum(grad^2)); if total > max_norm, every gradient is scaled by
// max_norm / (total + 1e-6) (torch.nn.utils.clip_grad_norm_). Returns total (before clipping).
// Parameters without a gradient are ignored.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// ---- learning-rate schedule -------------------------------------------------------------------------
struct WarmupCosineConfig {
    double lr = 1e-3;           // the peak, reached at the end of warmup
    double min_lr = 0.0;        // the floor, reached at total_steps
    int64_t warmup_steps = 0;
    int64_t total_steps = 1000;
};
// The learning rate for update number `step` (0-based: the first step() uses step 0):
//   step < warmup:        lr * step / warmup                       (linear from 0)
//   warmup <= step < total: min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2,
//                          progress = (step - warmup) / (total - warmup)
//   step >= total:        min_lr
// (the schedule of Hugging Face's get_cosine_schedule_with_warmup, with a floor).
double warmup_cosine_lr(int64_t step, const WarmupCosineConfig& config);

class WarmupCosine {
public:
    explicit WarmupCosine(WarmupCosineConfig config);
    double lr_at(int64_t step) const { return warmup_cosine_lr(step, config); }
    // Sets opt's learning rate for update `step` and returns it.
    double apply(Optimizer& opt, int64_t step) const;
    WarmupCosineConfig config;
};

}  // namespace mg::nn
