// ops_checkpoint.cpp: activation (gradient) checkpointing, as torch.utils.checkpoint.
//
// Training keeps every activation that a backward function needs until the backward pass reaches
// it: for a deep model that is most of the memory. Checkpointing a block trades compute for
// memory: the forward runs the block with recording off (its activations die as soon as it
// returns) and keeps only the block's inputs; the backward runs the block again, recording, and
// backpropagates through the fresh graph. One extra forward per block; in exchange, at any time
// only one block's activations are alive. The walk-through: docs/nn/hierarchical_moe.md.
//
// How it plugs into autograd (engine/autograd.h): the forward records ONE node whose edges go to
// the inputs (recorded also when only the declared parameters require grad). Its backward function
//   1. makes fresh leaves of the saved inputs, and gives each parameter a fresh gradient
//      accumulator (the outer backward pass may still be summing into the real one),
//   2. resets the generators to their state before the forward (the same dropout masks),
//   3. recomputes fn with recording on, and runs a backward through it (a nested pass over nodes
//      that only it knows),
//   4. returns the gradients of the fresh leaves to the outer pass, which adds them up like any
//      other gradient, and adds the parameters' gradients into their .grad (what their
//      accumulators would do, without a second copy of the block's gradients alive meanwhile).
#include <set>
#include <stdexcept>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace mg {

namespace {
thread_local int g_recomputing = 0;

struct RecomputingScope {
    RecomputingScope() { ++g_recomputing; }
    ~RecomputingScope() { --g_recomputing; }
};

// A generator's state before fn ran, and after.
struct GeneratorReplay {
    Generator* generator;
    Generator::State before, after;
};

bool same_state(Generator::State a, Generator::State b) { return a.seed == b.seed && a.offset == b.offset; }

// While a checkpoint recomputes, each parameter gets a fresh gradient accumulator and an empty
// .grad, so that the nested backward pass touches nothing the outer pass is using. commit() then
// adds what the nested pass computed into the real .grad, as an accumulator would; without a
// commit (fn threw), the destructor puts everything back as it was.
class ParameterSwap {
public:
    explicit ParameterSwap(const std::vector<Tensor>& params) {
        for (const Tensor& p : params) {
            if (!p.requires_grad()) continue;
            TensorImpl& impl = p.impl();
            saved_.push_back({p.impl_ptr(), std::move(impl.grad_accumulator), std::move(impl.grad)});
            impl.grad_accumulator = nullptr;
            impl.grad = nullptr;
        }
    }
    void commit() {
        for (Entry& e : saved_) {
            std::shared_ptr<TensorImpl> computed = std::move(e.impl->grad);  // the nested pass's (its own copy)
            if (e.grad && computed) e.grad = add(Tensor(e.grad), Tensor(computed)).impl_ptr();
            else if (computed) e.grad = std::move(computed);
        }
    }
    ~ParameterSwap() {
        for (Entry& e : saved_) {
            e.impl->grad_accumulator = std::move(e.accumulator);
            e.impl->grad = std::move(e.grad);
        }
    }
    ParameterSwap(const ParameterSwap&) = delete;
    ParameterSwap& operator=(const ParameterSwap&) = delete;

private:
    struct Entry {
        std::shared_ptr<TensorImpl> impl;
        std::shared_ptr<Node> accumulator;
        std::shared_ptr<TensorImpl> grad;
    };
    std::vector<Entry> saved_;
};

// Puts each generator at `state(replay)` for its lifetime, then back where it was.
class GeneratorRewind {
public:
    explicit GeneratorRewind(const std::vector<GeneratorReplay>& replays) : replays_(replays) {
        for (const GeneratorReplay& r : replays_) {
            current_.push_back(r.generator->state());
            r.generator->set_state(r.before);
        }
    }
    ~GeneratorRewind() {  // in reverse, so that a generator listed twice ends where it was
        for (size_t i = replays_.size(); i-- > 0;) replays_[i].generator->set_state(current_[i]);
    }
    GeneratorRewind(const GeneratorRewind&) = delete;
    GeneratorRewind& operator=(const GeneratorRewind&) = delete;

private:
    const std::vector<GeneratorReplay>& replays_;
    std::vector<Generator::State> current_;
};

// The outputs as one tensor (one autograd node needs one output): itself when there is one,
// else the outputs flattened and concatenated.
Tensor pack(const std::vector<Tensor>& outputs) {
    if (outputs.size() == 1) return outputs[0];
    std::vector<Tensor> flat;
    for (const Tensor& t : outputs) flat.push_back(t.reshape({-1}));
    return concat(flat, 0);
}

// Every leaf that the recomputed graph reaches must be one of ours (a fresh input or a declared
// parameter): a gradient to any other would be added behind the outer pass's back.
void check_leaves(const Tensor& root, const std::set<const TensorImpl*>& allowed) {
    if (!root.grad_fn()) return;
    std::vector<Node*> stack{root.grad_fn().get()};
    std::set<Node*> seen{stack[0]};
    while (!stack.empty()) {
        Node* node = stack.back();
        stack.pop_back();
        if (auto leaf = node->leaf.lock()) {
            if (!allowed.count(leaf.get()))
                throw std::invalid_argument(
                    "checkpoint: fn uses a tensor that requires grad (shape " + shape_str(leaf->shape) +
                    ") but is neither one of its inputs nor one of its params; pass it in `params` (a module's "
                    "parameters) or in `inputs`, or its gradient would be lost");
            continue;
        }
        for (const Edge& edge : node->next)
            if (edge.node && seen.insert(edge.node.get()).second) stack.push_back(edge.node.get());
    }
}
}  // namespace

bool checkpoint_recomputing() { return g_recomputing > 0; }

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               const std::vector<Tensor>& params_in, const std::vector<Generator*>& generators) {
    if (!fn) throw std::invalid_argument("checkpoint: fn is empty");
    for (size_t i = 0; i < inputs.size(); ++i)
        if (!inputs[i].defined()) throw std::invalid_argument("checkpoint: input " + std::to_string(i) + " is undefined");
    // Parameters once each (a tied weight may be listed twice; its gradient must count once).
    std::vector<Tensor> params;
    std::set<const TensorImpl*> listed;
    for (size_t i = 0; i < params_in.size(); ++i) {
        const Tensor& p = params_in[i];
        if (!p.defined() || !p.is_leaf())
            throw std::invalid_argument("checkpoint: params[" + std::to_string(i) + "] must be a leaf tensor (a parameter), got " +
                                        (p.defined() ? "the output of '" + std::string(p.grad_fn()->name) + "'" : "an undefined tensor"));
        if (listed.insert(&p.impl()).second) params.push_back(p);
    }
    for (Generator* g : generators)
        if (!g) throw std::invalid_argument("checkpoint: a generator pointer is null");

    // 1. The forward, recording nothing: fn's activations are freed as soon as it returns.
    std::vector<GeneratorReplay> replays;
    for (Generator* g : generators) replays.push_back({g, g->state(), {}});
    bool record_graph = false;
    if (grad_enabled()) {
        for (const Tensor& t : inputs) record_graph = record_graph || t.requires_grad();
        for (const Tensor& t : params) record_graph = record_graph || t.requires_grad();
    }
    std::vector<Tensor> outputs;
    {
        NoGradGuard no_grad;
        outputs = fn(inputs);
    }
    if (!record_graph) return outputs;
    for (GeneratorReplay& r : replays) r.after = r.generator->state();

    if (outputs.empty()) throw std::invalid_argument("checkpoint: fn returned no tensor");
    std::vector<Shape> shapes;
    for (size_t i = 0; i < outputs.size(); ++i) {
        if (!outputs[i].defined() || !is_floating(outputs[i].dtype()) || outputs[i].dtype() != outputs[0].dtype())
            throw std::invalid_argument("checkpoint: fn's outputs must be defined float tensors of one dtype; output " +
                                        std::to_string(i) + " is " +
                                        (outputs[i].defined() ? std::string(dtype_name(outputs[i].dtype())) : "undefined"));
        shapes.push_back(outputs[i].shape());
    }

    // 2. One node for all outputs, with an edge to each input. It saves the inputs (the only
    //    activations kept), the fn, the parameters and the generators' states.
    Tensor packed;
    {
        NoGradGuard no_grad;
        packed = pack(outputs).detach();  // detached: a fresh handle that the node can own as its output
    }
    std::vector<Saved> saved_inputs;
    std::vector<bool> input_requires_grad;
    for (const Tensor& x : inputs) {
        saved_inputs.emplace_back(x);
        input_requires_grad.push_back(x.requires_grad());
    }
    record(packed, OpId::checkpoint, inputs,
           [fn, saved_inputs, input_requires_grad, params, replays, shapes](const Tensor& grad) -> std::vector<Tensor> {
               // Backward, a. Fresh leaves for the inputs; fresh accumulators for the parameters.
               std::vector<Tensor> leaves;
               std::set<const TensorImpl*> allowed;
               for (size_t i = 0; i < saved_inputs.size(); ++i) {
                   Tensor leaf = saved_inputs[i].get("checkpoint").detach();
                   if (input_requires_grad[i]) leaf.set_requires_grad(true);
                   allowed.insert(&leaf.impl());
                   leaves.push_back(leaf);
               }
               for (const Tensor& p : params) allowed.insert(&p.impl());
               ParameterSwap swap(params);

               // Backward, b. The forward again, recording, from the generators' state before the first one.
               Tensor repacked;
               {
                   EnableGradGuard enable_grad;
                   RecomputingScope recomputing;
                   GeneratorRewind rewind(replays);
                   std::vector<Tensor> recomputed = fn(leaves);
                   for (const GeneratorReplay& r : replays)
                       if (!same_state(r.generator->state(), r.after))
                           throw std::logic_error("checkpoint: the recomputation drew a different amount of random "
                                                  "numbers than the forward; fn must be deterministic given its "
                                                  "inputs and generators");
                   if (recomputed.size() != shapes.size())
                       throw std::logic_error("checkpoint: the recomputation returned " + std::to_string(recomputed.size()) +
                                              " tensors, the forward " + std::to_string(shapes.size()));
                   for (size_t i = 0; i < recomputed.size(); ++i)
                       if (recomputed[i].shape() != shapes[i])
                           throw std::logic_error("checkpoint: the recomputation's output " + std::to_string(i) + " is " +
                                                  shape_str(recomputed[i].shape()) + ", the forward's was " + shape_str(shapes[i]));
                   repacked = pack(recomputed);
               }

               // Backward, c. Backward through the recomputed graph; the gradients land on our leaves.
               std::vector<Tensor> grads(saved_inputs.size());
               if (repacked.requires_grad()) {
                   check_leaves(repacked, allowed);
                   repacked.backward(grad);
               }
               for (size_t i = 0; i < leaves.size(); ++i)
                   if (input_requires_grad[i]) grads[i] = leaves[i].grad();
               // The parameters' gradients go straight into their .grad rather than back through
               // the outer pass: returned, the block's parameter gradients would all be alive
               // twice (ours, and the accumulators' copies) until the outer pass had copied them.
               swap.commit();
               return grads;  // `swap` puts the parameters' accumulators back
           });

    // 3. The outputs, as views of the packed tensor (so each carries the node's gradient).
    if (outputs.size() == 1) return {packed};
    std::vector<Tensor> results;
    int64_t offset = 0;
    for (const Shape& shape : shapes) {
        const int64_t n = numel_of(shape);
        results.push_back(packed.slice(0, offset, offset + n).reshape(shape));
        offset += n;
    }
    return results;
}

Tensor checkpoint(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& inputs,
                  const std::vector<Tensor>& params, const std::vector<Generator*>& generators) {
    if (!fn) throw std::invalid_argument("checkpoint: fn is empty");
    return checkpoint(CheckpointFn([fn](const std::vector<Tensor>& xs) { return std::vector<Tensor>{fn(xs)}; }), inputs,
                      params, generators)[0];
}

}  // namespace mg
