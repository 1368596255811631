// nn/activation_checkpoint.cpp: checkpointing a module (see nn/activation_checkpoint.h).
#include "nn/activation_checkpoint.h"

#include "nn/layers.h"

namespace mg::nn {

std::vector<Generator*> dropout_generators(Module& module) {
    std::vector<Generator*> generators;
    for (auto& [name, m] : module.named_modules())
        if (auto* dropout = dynamic_cast<Dropout*>(m)) generators.push_back(&dropout->generator);
    return generators;
}

std::vector<Tensor> checkpoint(Module& module, const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                               const std::vector<Generator*>& extra_generators) {
    std::vector<Generator*> generators = dropout_generators(module);
    generators.insert(generators.end(), extra_generators.begin(), extra_generators.end());
    return mg::checkpoint(fn, inputs, module.parameters(), generators);
}

Tensor checkpoint(Module& module, const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                  const std::vector<Tensor>& inputs, const std::vector<Generator*>& extra_generators) {
    std::vector<Generator*> generators = dropout_generators(module);
    generators.insert(generators.end(), extra_generators.begin(), extra_generators.end());
    return mg::checkpoint(fn, inputs, module.parameters(), generators);
}

}  // namespace mg::nn
