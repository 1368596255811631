#include "engine/shape.h"

#include <stdexcept>

namespace mg {

int64_t numel_of(const Shape& shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
}

Shape contiguous_strides(const Shape& shape) {
    Shape strides(shape.size());
    int64_t step = 1;
    for (int64_t d = (int64_t)shape.size() - 1; d >= 0; --d) {
        strides[d] = step;
        step *= shape[d];
    }
    return strides;
}

std::string shape_str(const Shape& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
    size_t n = std::max(a.size(), b.size());
    Shape out(n);
    for (size_t i = 0; i < n; ++i) {
        int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
        int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
        if (da != db && da != 1 && db != 1)
            throw std::invalid_argument(std::string(op) + ": shapes " + shape_str(a) + " and " + shape_str(b) +
                                        " cannot be broadcast (dimension " + std::to_string(i) + ": " +
                                        std::to_string(da) + " vs " + std::to_string(db) + ")");
        out[i] = da == 1 ? db : da;
    }
    return out;
}

int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op) {
    int64_t d = dim < 0 ? dim + ndim : dim;
    if (d < 0 || d >= std::max<int64_t>(ndim, 1))
        throw std::out_of_range(std::string(op) + ": dimension " + std::to_string(dim) + " out of range for a " +
                                std::to_string(ndim) + "-d tensor");
    return d;
}

}  // namespace mg
