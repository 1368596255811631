// ops_nn.cpp: the neural-network ops (softmax, log_softmax, cross_entropy, layer_norm,
// embedding, dropout), each forward beside its backward.
#include <cmath>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

}  // namespace mg
