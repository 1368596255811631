// ops_reduce.cpp: reductions. The kernels reduce one dimension of a contiguous tensor; these
// functions check arguments, reduce several dims one after another, and give the backward:
//   sum:  dL/dx = g broadcast back over the reduced dims        mean: the same, / count
//   max/min: g goes to the position of the max (the first one on ties)
//   logsumexp: g * softmax(x) = g * exp(x - y)                   cumsum: reversed cumulative sum of g
#include <algorithm>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

namespace {
std::vector<int64_t> normalized_dims(const std::vector<int64_t>& dims, int64_t ndim, const char* op) {
    std::vector<int64_t> out;
    for (int64_t d : dims) out.push_back(normalize_dim(d, ndim, op));
    std::sort(out.begin(), out.end());
    if (std::adjacent_find(out.begin(), out.end()) != out.end())
        throw std::invalid_argument(std::string(op) + ": a dimension is listed twice");
    return out;
}

// Sum or mean over `dims` with keepdim shapes, no autograd.
Tensor reduce_sum_raw(OpId op, const Tensor& x, const std::vector<int64_t>& dims) {
    DType out_dtype = is_floating(x.dtype()) ? x.dtype() : DType::Int64;
    if (op == OpId::mean && !is_floating(x.dtype()))
        throw std::invalid_argument(std::string("mean: expected a float tensor, got ") + dtype_name(x.dtype()));
    Tensor t = x.detach().contiguous();
    if (x.dim() == 0) t = t.reshape({1});
    for (auto it = dims.rbegin(); it != dims.rend(); ++it) {
        Tensor out = make_tensor(keepdim_shape(t.shape(), *it), out_dtype, x.device());
        Attrs attrs;
        attrs.dim = *it;
        run_kernel(op, {t}, {out}, attrs);
        t = out;
    }
    return x.dim() == 0 ? t.reshape({}) : t;
}

Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& dims, bool keepdim) {
    Shape out;
    for (int64_t d = 0; d < (int64_t)shape.size(); ++d) {
        bool reduced = std::find(dims.begin(), dims.end(), d) != dims.end();
        if (!reduced) out.push_back(shape[d]);
        else if (keepdim) out.push_back(1);
    }
    return out;
}

Tensor sum_or_mean(OpId op, const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
    std::vector<int64_t> dims = normalized_dims(dims_in, x.dim(), op_name(op));
    Tensor y = reduce_sum_raw(op, x, dims).reshape(reduced_shape(x.shape(), dims, keepdim));
    if (any_requires_grad({x})) {
        int64_t count = 1;
        for (int64_t d : dims) count *= x.shape()[d];
        double scale = op == OpId::mean ? 1.0 / (double)count : 1.0;
        Shape keep = reduced_shape(x.shape(), dims, true);
        record(y, op, {x}, [keep, scale, shape = x.shape()](const Tensor& g) {
            Tensor gx = g.reshape(keep).expand(shape);
            return grads({scale == 1.0 ? gx : gx * scale});
        });
    }
    return y;
}

std::vector<int64_t> all_dims(const Tensor& x) {
    std::vector<int64_t> dims(x.dim());
    for (int64_t d = 0; d < x.dim(); ++d) dims[d] = d;
    return dims;
}
}  // namespace

Tensor sum(const Tensor& x) { return sum_or_mean(OpId::sum, x, all_dims(x), false); }
Tensor sum(const Tensor& x, int64_t dim, bool keepdim) { return sum_or_mean(OpId::sum, x, {dim}, keepdim); }
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return sum_or_mean(OpId::sum, x, dims, keepdim);
}
Tensor mean(const Tensor& x) { return sum_or_mean(OpId::mean, x, all_dims(x), false); }
Tensor mean(const Tensor& x, int64_t dim, bool keepdim) { return sum_or_mean(OpId::mean, x, {dim}, keepdim); }
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return sum_or_mean(OpId::mean, x, dims, keepdim);
}

// ---- max / min / argmax ------------------------------------------------------------------------
namespace {
ValuesIndices extreme(OpId op, const Tensor& x, int64_t dim_in, bool keepdim) {
    const char* name = op_name(op);
    if (x.dim() == 0) return extreme(op, x.reshape({1}), 0, false);  // a 0-d input is its own max
    int64_t dim = normalize_dim(dim_in, x.dim(), name);
    if (x.shape()[dim] == 0) throw std::invalid_argument(std::string(name) + ": reducing an empty dimension");
    Tensor xc = x.detach().contiguous();
    Shape keep = keepdim_shape(x.shape(), dim);
    Tensor values = make_tensor(keep, x.dtype(), x.device());
    Tensor indices = make_tensor(keep, DType::Int64, x.device());
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(op, {xc}, {values, indices}, attrs);
    if (any_requires_grad({x}))
        record(values, op, {x}, [si = Saved(indices), dim, shape = x.shape()](const Tensor& g) {
            // g (keepdim shape) goes to the winning position: scatter into zeros.
            Tensor zeros = Tensor::zeros(shape, g.dtype(), g.device());
            return grads({scatter_add(zeros, dim, si.get("max/min"), g)});
        });
    if (!keepdim) {
        values = values.squeeze(dim);
        indices = indices.squeeze(dim);
    }
    return {values, indices};
}
}  // namespace

ValuesIndices max(const Tensor& x, int64_t dim, bool keepdim) { return extreme(OpId::max, x, dim, keepdim); }
ValuesIndices min(const Tensor& x, int64_t dim, bool keepdim) { return extreme(OpId::min, x, dim, keepdim); }
Tensor max(const Tensor& x) { return extreme(OpId::max, x.reshape({-1}), 0, false).values; }
Tensor min(const Tensor& x) { return extreme(OpId::min, x.reshape({-1}), 0, false).values; }

Tensor argmax(const Tensor& x, int64_t dim_in, bool keepdim) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "argmax");
    if (x.dim() == 0 || x.shape()[dim] == 0) throw std::invalid_argument("argmax: empty or 0-d input");
    Shape keep = keepdim_shape(x.shape(), dim);
    Tensor indices = make_tensor(keep, DType::Int64, x.device());
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(OpId::argmax, {x.detach().contiguous()}, {indices}, attrs);
    return keepdim ? indices : indices.squeeze(dim);
}

// ---- logsumexp and cumsum ----------------------------------------------------------------------
Tensor logsumexp(const Tensor& x, int64_t dim_in, bool keepdim) {
    require_floating(x, "logsumexp");
    int64_t dim = normalize_dim(dim_in, x.dim(), "logsumexp");
    Shape keep = keepdim_shape(x.shape(), dim);
    Tensor y = make_tensor(keep, x.dtype(), x.device());
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(OpId::logsumexp, {x.detach().contiguous()}, {y}, attrs);
    if (any_requires_grad({x}))
        record(y, OpId::logsumexp, {x}, [sx = Saved(x), sy = Saved(y)](const Tensor& g) {
            return grads({g * exp(sx.get("logsumexp") - sy.get("logsumexp"))});
        });
    return keepdim ? y : y.squeeze(dim);
}

Tensor cumsum(const Tensor& x, int64_t dim_in) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "cumsum");
    Tensor y = make_tensor(x.shape(), x.dtype(), x.device());
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(OpId::cumsum, {x.detach().contiguous()}, {y}, attrs);
    if (any_requires_grad({x}))
        record(y, OpId::cumsum, {x}, [dim](const Tensor& g) {
            // x_i feeds y_j for every j >= i, so dL/dx_i = sum_{j>=i} g_j = total - cumsum(g)_i + g_i.
            return grads({sum(g, dim, true) - cumsum(g, dim) + g});
        });
    return y;
}

}  // namespace mg
