// autograd.h: define-by-run reverse-mode differentiation, as in micrograd and PyTorch.
//
// Every differentiable op that sees an input requiring grad records a Node: the nodes of its
// inputs (the edges of the graph), the tensors its backward needs, and a backward function that
// maps the gradient of the op's output to the gradients of its inputs. A Node never holds its own
// output (that would be a reference cycle); saved tensors are detached views.
//
// Tensor::backward() (autograd.cpp) walks the graph iteratively in reverse topological order.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "engine/op_table.h"
#include "engine/tensor.h"

namespace mg {

// Maps the gradient of the op's output to one gradient per input (undefined where the input
// needs none). Runs with gradient recording off.
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

// An edge of the graph: the node an input's gradient goes to (null when the input needs none),
// and the input's shape, to check the gradient a backward returns.
struct Edge {
    std::shared_ptr<Node> node;
    Shape shape;
};

struct Node {
    const char* name = "";                       // the op, for error messages
    std::vector<Edge> next;                      // one per input of the op
    BackwardFn backward;                         // released (empty) after a backward pass
    bool released = false;
    // Leaf accumulators only: the leaf whose .grad this node adds into (weak: no cycle).
    std::weak_ptr<TensorImpl> leaf;
    // Non-leaf outputs that asked for retain_grad().
    std::weak_ptr<TensorImpl> retained;

    // Bookkeeping of the backward pass in progress (kept here rather than in hash maps: see
    // bench/autograd_overhead.cpp): which pass last visited the node, how many consumers have
    // yet to send their gradient, and the sum of the gradients received so far.
    uint64_t visited_pass = 0;
    int pending = 0;
    Tensor grad_sum;
    bool grad_sum_owned = false;  // grad_sum is a buffer this pass made: safe to add into in place

    // slice() nodes only (dim >= 0): the region of the input that the view covers. The backward
    // pass adds the view's gradient straight into that region of the input's gradient instead of
    // calling `backward` (which builds a zero tensor of the input's whole shape): splitting a
    // tensor into E parts would otherwise cost E full-size zero fills and E - 1 full-size adds.
    struct SliceRegion {
        int64_t dim = -1, start = 0, end = 0, step = 1;
    } slice;

    // Frees long chains without recursion (a 100,000-op graph must not overflow the stack).
    ~Node();
};

// ---- recording on/off ------------------------------------------------------------------------
bool grad_enabled();
// Turns recording off for its lifetime (optimizer updates, evaluation, backward functions).
class NoGradGuard {
public:
    NoGradGuard();
    ~NoGradGuard();
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;
private:
    bool previous_;
};
// Turns recording back on for its lifetime, also inside a backward function (as
// torch.enable_grad): activation checkpointing (ops_checkpoint.cpp) recomputes its forward there.
class EnableGradGuard {
public:
    EnableGradGuard();
    ~EnableGradGuard();
    EnableGradGuard(const EnableGradGuard&) = delete;
    EnableGradGuard& operator=(const EnableGradGuard&) = delete;
private:
    bool previous_;
};

// ---- what ops use ----------------------------------------------------------------------------
// True when recording is on and any input requires grad.
bool any_requires_grad(std::initializer_list<Tensor> inputs);

// A tensor saved for backward: a detached view plus the storage version at save time. get()
// throws if the storage was changed in place since.
class Saved {
public:
    Saved() = default;
    explicit Saved(const Tensor& t);
    Tensor get(const char* op) const;
    bool defined() const { return tensor_.defined(); }
private:
    Tensor tensor_;
    uint64_t version_ = 0;
};

// Makes `out` the output of a recorded op: out.requires_grad = true and out.grad_fn = a node
// with edges to the inputs. Call only when any_requires_grad(inputs).
void record(Tensor& out, OpId op, std::initializer_list<Tensor> inputs, BackwardFn backward);
void record(Tensor& out, OpId op, const std::vector<Tensor>& inputs, BackwardFn backward);
void record(Tensor& out, OpId op, const Tensor* inputs, size_t count, BackwardFn backward);

// Sums `grad` over broadcast dimensions so it has `shape` (the backward of broadcasting).
Tensor reduce_to_shape(const Tensor& grad, const Shape& shape);

}  // namespace mg
