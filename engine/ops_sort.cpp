// ops_sort.cpp: topk, argsort and multinomial sampling.
#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

}  // namespace mg
