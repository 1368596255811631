// ops_shape.cpp: views (no data moves), copies, concat and split.
//
// A view only rewrites shape, strides and offset (see docs/engine/tensor.md):
//   transpose(0,1) of a (3,4) tensor with strides (4,1) has shape (4,3) and strides (1,4);
//   expand turns a size-1 dim into size n with stride 0; slice(dim, a, b, s) moves the offset
//   by a*stride[dim] and multiplies the stride by s.
// The backward of a view is the inverse view (or, for expand, a sum; for slice, a scatter into zeros).
#include <algorithm>
#include <numeric>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

// ---- helpers (ops_internal.h) ------------------------------------------------------------------
namespace detail {
Tensor broadcast_view(const Tensor& t, const Shape& shape) {
    if (t.shape() == shape) return t;  // kernels ignore autograd fields: no view needed
    const int64_t extra = (int64_t)shape.size() - t.dim();
    if (extra < 0)
        throw std::invalid_argument("expand: cannot expand shape " + shape_str(t.shape()) + " to fewer dims " +
                                    shape_str(shape));
    Shape strides(shape.size(), 0);
    for (int64_t d = 0; d < t.dim(); ++d) {
        int64_t have = t.shape()[d], want = shape[d + extra];
        if (have == want) strides[d + extra] = t.strides()[d];
        else if (have != 1)
            throw std::invalid_argument("expand: shape " + shape_str(t.shape()) + " cannot be expanded to " +
                                        shape_str(shape) + " (size " + std::to_string(have) + " at dim " +
                                        std::to_string(d) + " is not 1)");
    }
    return make_view(t, shape, strides, t.offset());
}

void require_floating(const Tensor& t, const char* op) {
    if (!is_floating(t.dtype()))
        throw std::invalid_argument(std::string(op) + ": expected a float32 or float64 tensor, got " + dtype_name(t.dtype()));
}

void require_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
    if (a.dtype() != b.dtype())
        throw std::invalid_argument(std::string(op) + ": dtype mismatch, " + dtype_name(a.dtype()) + " " +
                                    shape_str(a.shape()) + " vs " + dtype_name(b.dtype()) + " " + shape_str(b.shape()) +
                                    " (convert one with .to(dtype))");
}

Shape keepdim_shape(const Shape& shape, int64_t dim) {
    Shape out = shape;
    out[dim] = 1;
    return out;
}
}  // namespace detail

// ---- reshape -----------------------------------------------------------------------------------
namespace {
Shape infer_shape(const Shape& shape, int64_t numel, const Shape& from) {
    Shape out = shape;
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < out.size(); ++i) {
        if (out[i] == -1) {
            if (infer >= 0) throw std::invalid_argument("reshape: only one size can be -1 in " + shape_str(shape));
            infer = (int64_t)i;
        } else if (out[i] < 0) {
            throw std::invalid_argument("reshape: negative size in " + shape_str(shape));
        } else {
            known *= out[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || numel % known != 0)
            throw std::invalid_argument("reshape: cannot reshape " + shape_str(from) + " into " + shape_str(shape));
        out[infer] = numel / known;
    }
    if (numel_of(out) != numel)
        throw std::invalid_argument("reshape: cannot reshape " + shape_str(from) + " (" + std::to_string(numel) +
                                    " elements) into " + shape_str(shape));
    return out;
}
}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape_in) {
    Shape shape = infer_shape(shape_in, x.numel(), x.shape());
    // Contiguous data is reshaped for free; anything else is copied first.
    Tensor base = x.is_contiguous() ? x.detach() : copy(x.detach(), x.dtype());
    Tensor y = make_view(base, shape, contiguous_strides(shape), base.offset());
    if (any_requires_grad({x}))
        record(y, OpId::reshape, {x}, [from = x.shape()](const Tensor& g) { return grads({g.reshape(from)}); });
    return y;
}

Tensor Tensor::reshape(const Shape& shape) const { return mg::reshape(*this, shape); }

Tensor Tensor::unsqueeze(int64_t d) const {
    int64_t dim_ = normalize_dim(d, this->dim() + 1, "unsqueeze");
    // A new size-1 dim never needs a copy: any stride works for it; this one keeps contiguous
    // tensors contiguous.
    Shape s = shape(), st = strides();
    int64_t stride = dim_ < this->dim() ? strides()[dim_] * shape()[dim_] : 1;
    s.insert(s.begin() + dim_, 1);
    st.insert(st.begin() + dim_, stride);
    Tensor y = make_view(*this, s, st, offset());
    if (any_requires_grad({*this}))
        record(y, OpId::reshape, {*this}, [from = shape()](const Tensor& g) { return grads({g.reshape(from)}); });
    return y;
}

Tensor Tensor::squeeze(int64_t d) const {
    int64_t dim_ = normalize_dim(d, this->dim(), "squeeze");
    if (shape()[dim_] != 1) return *this;
    Shape s = shape();
    s.erase(s.begin() + dim_);
    // Removing a size-1 dim never needs a copy: drop it from the strides as well.
    Shape st = strides();
    st.erase(st.begin() + dim_);
    Tensor y = make_view(*this, s, st, offset());
    if (any_requires_grad({*this}))
        record(y, OpId::reshape, {*this}, [from = shape()](const Tensor& g) { return grads({g.reshape(from)}); });
    return y;
}

// ---- transpose, permute, expand, slice -----------------------------------------------------------
Tensor permute(const Tensor& x, const Shape& order) {
    if ((int64_t)order.size() != x.dim())
        throw std::invalid_argument("permute: order " + shape_str(order) + " for a tensor of shape " + shape_str(x.shape()));
    Shape shape(order.size()), strides(order.size()), inverse(order.size());
    std::vector<bool> used(order.size(), false);
    for (size_t i = 0; i < order.size(); ++i) {
        int64_t d = normalize_dim(order[i], x.dim(), "permute");
        if (used[d]) throw std::invalid_argument("permute: dimension repeated in " + shape_str(order));
        used[d] = true;
        shape[i] = x.shape()[d];
        strides[i] = x.strides()[d];
        inverse[d] = (int64_t)i;
    }
    Tensor y = make_view(x, shape, strides, x.offset());
    if (any_requires_grad({x}))
        record(y, OpId::permute, {x}, [inverse](const Tensor& g) { return grads({g.permute(inverse)}); });
    return y;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
    int64_t a = normalize_dim(d0, x.dim(), "transpose"), b = normalize_dim(d1, x.dim(), "transpose");
    Shape shape = x.shape(), strides = x.strides();
    std::swap(shape[a], shape[b]);
    std::swap(strides[a], strides[b]);
    Tensor y = make_view(x, shape, strides, x.offset());
    if (any_requires_grad({x}))
        record(y, OpId::transpose, {x}, [a, b](const Tensor& g) { return grads({g.transpose(a, b)}); });
    return y;
}

Tensor expand(const Tensor& x, const Shape& shape_in) {
    Shape shape = shape_in;
    const int64_t extra = (int64_t)shape.size() - x.dim();
    for (int64_t d = 0; d < x.dim() && extra >= 0; ++d)
        if (shape[d + extra] == -1) shape[d + extra] = x.shape()[d];  // -1 keeps the size
    Tensor y = broadcast_view(x, shape);
    if (any_requires_grad({x}))
        record(y, OpId::expand, {x}, [from = x.shape()](const Tensor& g) { return grads({reduce_to_shape(g, from)}); });
    return y;
}

Tensor slice(const Tensor& x, int64_t dim_in, int64_t start, int64_t end, int64_t step) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "slice");
    int64_t n = x.shape()[dim];
    if (step <= 0) throw std::invalid_argument("slice: step must be positive, got " + std::to_string(step));
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = std::clamp<int64_t>(start, 0, n);
    end = std::clamp<int64_t>(end, start, n);
    Shape shape = x.shape(), strides = x.strides();
    shape[dim] = (end - start + step - 1) / step;
    strides[dim] *= step;
    Tensor y = make_view(x, shape, strides, x.offset() + start * x.strides()[dim]);
    if (any_requires_grad({x}))
        record(y, OpId::slice, {x}, [from = x.shape(), dim, start, end, step](const Tensor& g) {
            Tensor gx = Tensor::zeros(from, g.dtype(), g.device());
            gx.slice(dim, start, end, step).copy_(g);
            return grads({gx});
        });
    // The backward pass adds a slice's gradient into the region directly (autograd.cpp,
    // receive_slice); the function above is what it computes, for a reader.
    if (y.grad_fn()) y.grad_fn()->slice = {dim, start, end, step};
    return y;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const { return mg::transpose(*this, d0, d1); }
Tensor Tensor::permute(const Shape& order) const { return mg::permute(*this, order); }
Tensor Tensor::expand(const Shape& shape) const { return mg::expand(*this, shape); }
Tensor Tensor::slice(int64_t dim_, int64_t start, int64_t end, int64_t step) const {
    return mg::slice(*this, dim_, start, end, step);
}
Tensor Tensor::select(int64_t d, int64_t index) const {
    int64_t dim_ = normalize_dim(d, dim(), "select");
    int64_t n = shape()[dim_];
    if (index < -n || index >= n)
        throw std::out_of_range("select: index " + std::to_string(index) + " out of range for dimension " +
                                std::to_string(dim_) + " of size " + std::to_string(n));
    if (index < 0) index += n;
    return slice(dim_, index, index + 1).squeeze(dim_);
}

// ---- copy, concat, split -------------------------------------------------------------------------
Tensor copy(const Tensor& x, DType dtype) {
    Tensor y = make_tensor(x.shape(), dtype, x.device());
    run_kernel(OpId::copy, {x}, {y});
    if (any_requires_grad({x}) && is_floating(dtype)) {
        DType from = x.dtype();
        record(y, OpId::copy, {x}, [from](const Tensor& g) { return grads({g.dtype() == from ? g : copy(g, from)}); });
    }
    return y;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim_in) {
    if (xs.empty()) throw std::invalid_argument("concat: no tensors given");
    const Tensor& first = xs[0];
    int64_t dim = normalize_dim(dim_in, first.dim(), "concat");
    Shape shape = first.shape();
    shape[dim] = 0;
    for (const Tensor& t : xs) {
        Shape a = t.shape(), b = first.shape();
        if (t.dim() == first.dim()) a[dim] = b[dim] = 0;
        if (a != b || t.dtype() != first.dtype() || t.device() != first.device())
            throw std::invalid_argument("concat: tensor of shape " + shape_str(t.shape()) + " (" + dtype_name(t.dtype()) +
                                        ") does not match " + shape_str(first.shape()) + " (" +
                                        dtype_name(first.dtype()) + ") outside dimension " + std::to_string(dim));
        shape[dim] += t.shape()[dim];
    }
    // Each input is copied into its slice of the output.
    Tensor y = make_tensor(shape, first.dtype(), first.device());
    std::vector<int64_t> sizes;
    int64_t at = 0;
    for (const Tensor& t : xs) {
        make_view(y, t.shape(), y.strides(), y.offset() + at * y.strides()[dim]).copy_(t);
        sizes.push_back(t.shape()[dim]);
        at += t.shape()[dim];
    }
    bool needs = false;
    for (const Tensor& t : xs) needs = needs || any_requires_grad({t});
    if (needs)
        record(y, OpId::concat, xs, [sizes, dim](const Tensor& g) { return split(g, sizes, dim); });
    return y;
}

// Composite: slices of x; each slice's backward is slice's backward.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim_in) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "split");
    int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t(0));
    if (total != x.shape()[dim])
        throw std::invalid_argument("split: sizes add up to " + std::to_string(total) + " but dimension " +
                                    std::to_string(dim) + " of " + shape_str(x.shape()) + " has " +
                                    std::to_string(x.shape()[dim]));
    std::vector<Tensor> parts;
    int64_t at = 0;
    for (int64_t s : sizes) {
        parts.push_back(x.slice(dim, at, at + s));
        at += s;
    }
    return parts;
}

std::vector<Tensor> split(const Tensor& x, int64_t chunk, int64_t dim_in) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "split");
    if (chunk <= 0) throw std::invalid_argument("split: chunk size must be positive");
    std::vector<int64_t> sizes;
    for (int64_t at = 0; at < x.shape()[dim]; at += chunk) sizes.push_back(std::min(chunk, x.shape()[dim] - at));
    return split(x, sizes, dim);
}

}  // namespace mg
