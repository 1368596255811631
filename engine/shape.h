// shape.h: shapes, strides and the small helpers every op uses to check and combine them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mg {

using Shape = std::vector<int64_t>;

int64_t numel_of(const Shape& shape);
// Row-major ("C order") strides: the last dimension moves fastest.
Shape contiguous_strides(const Shape& shape);
// "[2, 3, 4]"
std::string shape_str(const Shape& shape);
// NumPy broadcasting: align from the right; sizes must match or be 1. Throws naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Turns a possibly negative dimension into 0..ndim-1, or throws naming `op`.
int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op);

}  // namespace mg
