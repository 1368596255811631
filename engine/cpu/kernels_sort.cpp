// cpu/kernels_sort.cpp: CPU kernels for topk, argsort and multinomial sampling.
#include "engine/backend.h"
#include "engine/cpu/kernels.h"
#include "engine/cpu/loops.h"

namespace mg::cpu {

void register_sort_kernels() {}

}  // namespace mg::cpu
