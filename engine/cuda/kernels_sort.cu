// cuda/kernels_sort.cu: (being written for the CUDA backend issue)
#include "engine/cuda/common.cuh"
#include "engine/cuda/kernels.h"

namespace mg::cuda {

void register_sort_kernels() {}

}  // namespace mg::cuda
