// cuda/kernels_index.cu: (being written for the CUDA backend issue)
#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {

void register_index_kernels() {}

}  // namespace mg::cuda
