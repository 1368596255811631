#include "nn/module.h"

#include <stdexcept>
#include <utility>

namespace mg::nn {

namespace {
template <typename Get>
void walk(const Module& m, const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out, Get get) {
    // Iterative pre-order walk: a module's own tensors, then each child's, in registration order.
    std::vector<std::pair<std::string, const Module*>> stack{{prefix, &m}};
    while (!stack.empty()) {
        auto [name, mod] = stack.back();
        stack.pop_back();
        for (const auto& [pname, t] : get(*mod)) out.emplace_back(name + pname, t);
        const auto& kids = mod->children();
        for (auto it = kids.rbegin(); it != kids.rend(); ++it) stack.emplace_back(name + it->first + ".", it->second.get());
    }
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
    std::vector<std::pair<std::string, Tensor>> out;
    walk(*this, "", out, [](const Module& m) { return m.params_; });
    return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
    std::vector<std::pair<std::string, Tensor>> out;
    walk(*this, "", out, [](const Module& m) { return m.buffers_; });
    return out;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules() const {
    std::vector<std::pair<std::string, const Module*>> out;
    std::vector<std::pair<std::string, const Module*>> stack{{"", this}};
    while (!stack.empty()) {
        auto [name, mod] = stack.back();
        stack.pop_back();
        out.emplace_back(name, mod);
        const auto& kids = mod->children();
        for (auto it = kids.rbegin(); it != kids.rend(); ++it) stack.emplace_back(name + it->first + ".", it->second.get());
    }
    return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
    std::vector<std::pair<std::string, Module*>> out;
    for (auto& [name, mod] : std::as_const(*this).named_modules()) out.emplace_back(name, const_cast<Module*>(mod));
    return out;
}

std::vector<Tensor> Module::parameters() const {
    std::vector<Tensor> out;
    for (auto& [name, t] : named_parameters()) out.push_back(t);
    return out;
}

int64_t Module::num_parameters() const {
    int64_t n = 0;
    for (auto& [name, t] : named_parameters()) n += t.numel();
    return n;
}

void Module::train(bool on) {
    training_ = on;
    on_train(on);
    for (auto& [name, child] : children_) child->train(on);
}

void Module::to(Device device) {
    auto move = [device](Tensor& t) {
        if (t.device() == device) return;
        Tensor moved = t.detach().to(device);
        TensorImpl& impl = t.impl();
        impl.storage = moved.storage();
        impl.strides = moved.strides();
        impl.offset = moved.offset();
        impl.grad = nullptr;
    };
    for (auto& [name, t] : named_parameters()) move(t);
    for (auto& [name, t] : named_buffers()) move(t);
}

void Module::zero_grad() {
    for (auto& [name, t] : named_parameters()) t.zero_grad();
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
    if (!value.is_leaf()) value = value.detach();
    value.set_requires_grad(true);
    params_.emplace_back(name, value);
    return value;
}

void Module::replace_module(const std::string& name, std::shared_ptr<Module> module) {
    for (auto& [child_name, child] : children_)
        if (child_name == name) {
            child = std::move(module);
            return;
        }
    throw std::invalid_argument(type_name() + "::replace_module: no child module named '" + name + "'");
}

void Module::remove_module(const std::string& name) {
    for (auto it = children_.begin(); it != children_.end(); ++it)
        if (it->first == name) {
            children_.erase(it);
            return;
        }
    throw std::invalid_argument(type_name() + "::remove_module: no child module named '" + name + "'");
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
    buffers_.emplace_back(name, value.detach());
    return buffers_.back().second;
}

}  // namespace mg::nn
