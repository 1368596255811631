// ops_internal.h: small helpers shared by the engine/ops_*.cpp files (not part of the public API).
#pragma once
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace mg::detail {

// A broadcast view of t with `shape`, outside autograd (for feeding kernels).
Tensor broadcast_view(const Tensor& t, const Shape& shape);
// Throws "<op>: expected a float tensor, got int64" unless t is float32/float64.
void require_floating(const Tensor& t, const char* op);
// Throws unless a and b have the same dtype ("add: dtype mismatch float32 vs float64 ...").
void require_same_dtype(const Tensor& a, const Tensor& b, const char* op);
// The shape with dimension `dim` set to 1 (keepdim=true shape of a reduction).
Shape keepdim_shape(const Shape& shape, int64_t dim);
// A zeros tensor like t.
inline Tensor zeros_like(const Tensor& t) { return Tensor::zeros(t.shape(), t.dtype(), t.device()); }
inline Tensor scalar_like(double v, const Tensor& t) { return Tensor::scalar(v, t.dtype(), t.device()); }
inline std::vector<Tensor> grads(std::initializer_list<Tensor> g) { return std::vector<Tensor>(g); }

}  // namespace mg::detail
