// cuda/kernels_elementwise.cu: (being written for the CUDA backend issue)
#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {

void register_elementwise_kernels() {}

}  // namespace mg::cuda
