// nn/module.h: the base class of every layer and model, as torch.nn.Module.
//
// A Module owns named parameters (leaf tensors that require grad) and named child modules.
// parameters() / named_parameters() walk the tree in registration order, with dotted names
// ("blocks.0.attn.q_proj.weight"), which is also the order and naming of checkpoints.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/tensor.h"

namespace mg::nn {

class Module {
public:
    virtual ~Module() = default;
    Module() = default;
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    std::vector<Tensor> parameters() const;
    std::vector<std::pair<std::string, Tensor>> named_parameters() const;
    int64_t num_parameters() const;
    // Direct children, in registration order.
    const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
    // A short type name for reports and dependency graphs ("Linear", "TopKRouter", ...).
    virtual std::string type_name() const { return "Module"; }

    // Training mode matters to dropout, noisy routing and capacity factors.
    void train(bool on = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }

    // Moves every parameter to `device` in place: the Tensor handles that layers hold stay valid.
    void to(Device device);
    void zero_grad();

protected:
    // Marks `value` as a parameter (requires_grad) and returns it.
    Tensor register_parameter(const std::string& name, Tensor value);
    // A tensor that belongs to the module's state but is not trained (e.g. a sinusoidal table).
    Tensor register_buffer(const std::string& name, Tensor value);
    template <typename M> std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
        children_.emplace_back(name, module);
        return module;
    }
    // Puts `module` in the place of the child `name` (same position in the walk), or removes the
    // child: for surgery on a built model (expert pruning, nn/pruning.cpp). Throw
    // std::invalid_argument when there is no child of that name.
    void replace_module(const std::string& name, std::shared_ptr<Module> module);
    void remove_module(const std::string& name);
    // Called by train(); modules with training-dependent children need nothing more.
    virtual void on_train(bool) {}

public:
    // Buffers walk like parameters (checkpoints save both).
    std::vector<std::pair<std::string, Tensor>> named_buffers() const;
    // This module and every descendant, pre-order, with dotted prefixes ("" for this one,
    // "blocks.0.", "blocks.0.attn.", ...): the same order and names as named_parameters().
    std::vector<std::pair<std::string, const Module*>> named_modules() const;
    std::vector<std::pair<std::string, Module*>> named_modules();

    // State that is not a tensor (as torch's get_extra_state): e.g. the generator of a Dropout
    // layer. Checkpoints store it as strings in the safetensors "__metadata__", so that a resumed
    // run draws the same random numbers. set_extra_state gets exactly the keys extra_state gave
    // and throws std::invalid_argument when a value does not parse.
    virtual std::map<std::string, std::string> extra_state() const { return {}; }
    virtual void set_extra_state(const std::map<std::string, std::string>&) {}

private:
    std::vector<std::pair<std::string, Tensor>> params_;
    std::vector<std::pair<std::string, Tensor>> buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
    bool training_ = true;
};

}  // namespace mg::nn
