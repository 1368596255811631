// autograd.cpp: recording nodes, and the backward pass that walks them.
#include "engine/autograd.h"

#include <atomic>

#include "engine/ops.h"

namespace mg {

// ---- recording on/off ------------------------------------------------------------------------
namespace {
thread_local bool g_grad_enabled = true;
}
bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }
EnableGradGuard::EnableGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { g_grad_enabled = previous_; }

bool any_requires_grad(std::initializer_list<Tensor> inputs) {
    if (!g_grad_enabled) return false;
    for (const Tensor& t : inputs)
        if (t.defined() && t.requires_grad()) return true;
    return false;
}

// ---- nodes -------------------------------------------------------------------------------------
Node::~Node() {
    // Destroying the last reference to a node destroys its inputs' nodes, and theirs... Done
    // naively that recursion is as deep as the graph. Instead, steal the children that would die
    // with us onto an explicit stack and let them die one at a time, children first stolen.
    std::vector<std::shared_ptr<Node>> stack;
    auto steal = [&stack](std::vector<Edge>& edges) {
        for (Edge& edge : edges)
            if (edge.node && edge.node.use_count() == 1) stack.push_back(std::move(edge.node));
    };
    steal(next);
    backward = nullptr;  // saved tensors are detached, so this cannot recurse
    while (!stack.empty()) {
        std::shared_ptr<Node> node = std::move(stack.back());
        stack.pop_back();
        steal(node->next);
        node->backward = nullptr;
    }  // `node` dies here with no children left to recurse into
}

namespace {
// The node that adds gradients into a leaf's .grad; made on first use, owned by the leaf.
std::shared_ptr<Node> accumulator_of(const Tensor& leaf) {
    TensorImpl& impl = leaf.impl();
    if (!impl.grad_accumulator) {
        auto node = std::make_shared<Node>();
        node->name = "accumulate_grad";
        node->leaf = leaf.impl_ptr();
        impl.grad_accumulator = node;
    }
    return impl.grad_accumulator;
}

std::shared_ptr<Node> edge_to(const Tensor& t) {
    if (!t.defined() || !t.requires_grad()) return nullptr;
    return t.grad_fn() ? t.grad_fn() : accumulator_of(t);
}
}  // namespace

void record(Tensor& out, OpId op, const Tensor* inputs, size_t count, BackwardFn backward) {
    auto node = std::make_shared<Node>();
    node->name = op_name(op);
    node->next.resize(count);
    for (size_t i = 0; i < count; ++i) {
        node->next[i].node = edge_to(inputs[i]);
        if (inputs[i].defined()) node->next[i].shape = inputs[i].shape();
    }
    node->backward = std::move(backward);
    out.impl().requires_grad = true;
    out.impl().grad_fn = std::move(node);
}

void record(Tensor& out, OpId op, const std::vector<Tensor>& inputs, BackwardFn backward) {
    record(out, op, inputs.data(), inputs.size(), std::move(backward));
}

void record(Tensor& out, OpId op, std::initializer_list<Tensor> inputs, BackwardFn backward) {
    record(out, op, inputs.begin(), inputs.size(), std::move(backward));
}

// ---- saved tensors -----------------------------------------------------------------------------
Saved::Saved(const Tensor& t) : tensor_(t.defined() ? t.detach() : Tensor()) {
    if (t.defined()) version_ = t.storage()->version;
}

Tensor Saved::get(const char* op) const {
    if (tensor_.defined() && tensor_.storage()->version != version_)
        throw std::logic_error(std::string(op) + " backward: a tensor it saved (shape " + shape_str(tensor_.shape()) +
                               ") was modified in place after the forward pass; its gradient would be wrong");
    return tensor_;
}

// ---- leaf bookkeeping --------------------------------------------------------------------------
Tensor& Tensor::set_requires_grad(bool requires_grad) {
    if (!is_leaf())
        throw std::logic_error("set_requires_grad: only leaf tensors can be marked (this one was made by '" +
                               std::string(grad_fn()->name) + "'); use detach() first");
    if (requires_grad && !is_floating(dtype()))
        throw std::invalid_argument(std::string("set_requires_grad: only float tensors can require grad, got ") +
                                    dtype_name(dtype()));
    impl().requires_grad = requires_grad;
    return *this;
}

Tensor Tensor::grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) const {
    if (g.defined() && g.shape() != shape())
        throw std::invalid_argument("set_grad: gradient of shape " + shape_str(g.shape()) + " for a tensor of shape " +
                                    shape_str(shape()));
    impl().grad = g.defined() ? g.impl_ptr() : nullptr;
}

void Tensor::zero_grad() const { impl().grad = nullptr; }

void Tensor::retain_grad() {
    if (!requires_grad()) throw std::logic_error("retain_grad: tensor does not require grad");
    if (grad_fn()) grad_fn()->retained = impl_ptr();
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

Tensor reduce_to_shape(const Tensor& grad, const Shape& shape) {
    if (grad.shape() == shape) return grad;
    const int64_t extra = grad.dim() - (int64_t)shape.size();
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < grad.dim(); ++d)
        if (d < extra || (shape[d - extra] == 1 && grad.shape()[d] != 1)) dims.push_back(d);
    Tensor g = dims.empty() ? grad : sum(grad, dims, /*keepdim=*/true);
    return g.reshape(shape);
}

// ---- the backward pass ---------------------------------------------------------------------------
namespace {
std::atomic<uint64_t> g_backward_passes{0};

// A tensor used twice sends two gradients: they add up. The first is kept as it is (it may be
// shared, e.g. add's backward sends one tensor to both inputs); from the second on the sum lives
// in a buffer of our own, which later gradients are added into in place.
void receive(Node* node, const Tensor& g) {
    if (!node->grad_sum.defined()) {
        node->grad_sum = g;
        node->grad_sum_owned = false;
    } else if (node->grad_sum_owned && node->grad_sum.shape() == g.shape()) {
        node->grad_sum.add_(g);
    } else {
        node->grad_sum = add(node->grad_sum, g);
        node->grad_sum_owned = true;
    }
}

// The gradient g of a slice of a tensor of shape `whole`: added into that region only.
void receive_slice(Node* node, const Tensor& g, const Shape& whole, const Node::SliceRegion& r) {
    if (!node->grad_sum.defined()) node->grad_sum = Tensor::zeros(whole, g.dtype(), g.device());
    else if (!node->grad_sum_owned) node->grad_sum = node->grad_sum.clone();
    node->grad_sum_owned = true;
    node->grad_sum.slice(r.dim, r.start, r.end, r.step).add_(g);
}

// Nobody but `g` holds its storage, so nobody can see or change it: a leaf may keep it as its
// .grad without a copy.
bool exclusively_owned(const Tensor& g) {
    return g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1 && g.is_contiguous();
}
}  // namespace

void Tensor::backward(const Tensor& grad_output, bool retain_graph) const {
    if (!requires_grad())
        throw std::logic_error("backward: tensor of shape " + shape_str(shape()) +
                               " does not require grad and has no grad_fn (did any input require grad?)");
    Tensor seed_grad = grad_output;
    if (!seed_grad.defined()) {
        if (numel() != 1)
            throw std::invalid_argument("backward: called without a gradient on a tensor of shape " +
                                        shape_str(shape()) + "; only a one-element tensor (a loss) can do that");
        seed_grad = Tensor::ones(shape(), dtype(), device());
    } else if (seed_grad.shape() != shape()) {
        throw std::invalid_argument("backward: gradient of shape " + shape_str(seed_grad.shape()) +
                                    " for a tensor of shape " + shape_str(shape()));
    }
    std::shared_ptr<Node> root = grad_fn() ? grad_fn() : accumulator_of(*this);

    // 1. Find every node reachable from the root (iterative depth-first search), and count how
    //    many edges lead into each: a node may run only after all its consumers have run.
    const uint64_t pass = ++g_backward_passes;
    auto visit = [pass](Node* node) {
        if (node->visited_pass == pass) return false;
        node->visited_pass = pass;
        node->pending = 0;
        node->grad_sum = Tensor();
        node->grad_sum_owned = false;
        return true;
    };
    std::vector<Node*> stack{root.get()};
    visit(root.get());
    while (!stack.empty()) {
        Node* node = stack.back();
        stack.pop_back();
        for (Edge& edge : node->next) {
            if (!edge.node) continue;
            if (visit(edge.node.get())) stack.push_back(edge.node.get());
            edge.node->pending++;
        }
    }

    // 2. Run the nodes in reverse topological order (Kahn's algorithm), passing gradients along.
    root->grad_sum = seed_grad;
    std::vector<Node*> ready{root.get()};
    NoGradGuard no_grad;  // backward functions are written in ops; they must not record
    while (!ready.empty()) {
        Node* node = ready.back();
        ready.pop_back();
        Tensor g = std::move(node->grad_sum);
        node->grad_sum = Tensor();
        if (auto leaf = node->leaf.lock()) {
            // A leaf: add into .grad, always a tensor of its own, so that a gradient shared
            // between two leaves is never changed through the other (optimizers and
            // clip_grad_norm change .grad in place). A gradient nobody else holds is kept as it is.
            if (g.defined()) {
                if (leaf->grad) leaf->grad = add(Tensor(leaf->grad), g).impl_ptr();
                else leaf->grad = exclusively_owned(g) ? g.impl_ptr() : g.clone().impl_ptr();
            }
            continue;
        }
        if (auto out = node->retained.lock(); out && g.defined()) {
            out->grad = out->grad ? add(Tensor(out->grad), g).impl_ptr() : g.clone().impl_ptr();
        }
        if (g.defined()) {
            if (node->released)
                throw std::logic_error(std::string("backward: trying to go through the graph a second time (op '") +
                                       node->name + "'); its saved tensors were freed by the first backward. "
                                       "Pass retain_graph=true to the first call if you need this.");
            if (node->slice.dim >= 0) {  // a slice: straight into the region (see Node::slice)
                const Edge& edge = node->next[0];
                if (edge.node) receive_slice(edge.node.get(), g, edge.shape, node->slice);
                if (!retain_graph) {
                    node->backward = nullptr;
                    node->released = true;
                }
                for (Edge& e : node->next)
                    if (e.node && --e.node->pending == 0) ready.push_back(e.node.get());
                continue;
            }
            std::vector<Tensor> input_grads = node->backward(g);
            if (input_grads.size() != node->next.size())
                throw std::logic_error(std::string("backward of '") + node->name + "' returned " +
                                       std::to_string(input_grads.size()) + " gradients for " +
                                       std::to_string(node->next.size()) + " inputs");
            for (size_t i = 0; i < node->next.size(); ++i) {
                const Edge& edge = node->next[i];
                if (!edge.node || !input_grads[i].defined()) continue;
                if (input_grads[i].shape() != edge.shape)
                    throw std::logic_error(std::string("backward of '") + node->name + "' returned a gradient of shape " +
                                           shape_str(input_grads[i].shape()) + " for input " + std::to_string(i) +
                                           " of shape " + shape_str(edge.shape));
                receive(edge.node.get(), input_grads[i]);
            }
            if (!retain_graph) {
                node->backward = nullptr;  // frees the saved tensors now
                node->released = true;
            }
        }
        for (Edge& edge : node->next)
            if (edge.node && --edge.node->pending == 0) ready.push_back(edge.node.get());
    }
}

}  // namespace mg
