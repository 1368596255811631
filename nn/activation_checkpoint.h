// nn/activation_checkpoint.h: activation (gradient) checkpointing of a module, as
// torch.utils.checkpoint.checkpoint(module, x). The engine op (mg::checkpoint, engine/ops.h,
// engine/ops_checkpoint.cpp) needs to be told which parameters the function uses and which
// generators it draws from; these overloads take both from a module:
//
//   Tensor y = nn::checkpoint(block, [&](const std::vector<Tensor>& in) { return block.forward(in[0]); }, {x});
//
// every parameter of `block` is declared, and every Dropout inside it replays its mask in the
// recomputation. Not saved (the point): every activation inside the block. Recomputed: one
// extra forward of the block in the backward pass. Walk-through: docs/nn/hierarchical_moe.md.
#pragma once
#include <functional>
#include <vector>

#include "engine/ops.h"
#include "nn/module.h"

namespace mg::nn {

// The generators of every Dropout layer in `module` and its descendants, in module order.
std::vector<Generator*> dropout_generators(Module& module);

// mg::checkpoint with params = module.parameters() and generators = dropout_generators(module)
// plus `extra_generators` (any other generator fn draws from). `module` must outlive the backward.
Tensor checkpoint(Module& module, const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                  const std::vector<Tensor>& inputs, const std::vector<Generator*>& extra_generators = {});
std::vector<Tensor> checkpoint(Module& module, const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               const std::vector<Generator*>& extra_generators = {});

}  // namespace mg::nn
