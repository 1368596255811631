// ops_index.cpp: indexing ops, the MoE dispatch (index_select: tokens -> expert groups) and
// combine (index_add / scatter_add: expert outputs -> tokens). Gradients pair them up:
//   gather       <-> scatter_add      (d gather(x, i)/dx = scatter_add(zeros, i, g))
//   index_select <-> index_add
// Indices never carry gradient.
#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

namespace {
void require_index(const Tensor& index, const char* op) {
    if (!is_integral(index.dtype()))
        throw std::invalid_argument(std::string(op) + ": index must be int32 or int64, got " + dtype_name(index.dtype()));
}

// gather/scatter_add need index with x's ndim and no larger than x outside `dim`.
void check_gather_shapes(const Tensor& x, int64_t dim, const Tensor& index, const char* op) {
    require_index(index, op);
    if (index.dim() != x.dim())
        throw std::invalid_argument(std::string(op) + ": index of shape " + shape_str(index.shape()) +
                                    " must have as many dims as the input " + shape_str(x.shape()));
    for (int64_t d = 0; d < x.dim(); ++d)
        if (d != dim && index.shape()[d] > x.shape()[d])
            throw std::invalid_argument(std::string(op) + ": index of shape " + shape_str(index.shape()) +
                                        " is larger than the input " + shape_str(x.shape()) + " at dimension " +
                                        std::to_string(d));
}
}  // namespace

Tensor gather(const Tensor& x, int64_t dim_in, const Tensor& index) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "gather");
    check_gather_shapes(x, dim, index, "gather");
    Tensor y = make_tensor(index.shape(), x.dtype(), x.device());
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(OpId::gather, {x.detach(), index}, {y}, attrs);
    if (any_requires_grad({x}))
        record(y, OpId::gather, {x}, [si = Saved(index), dim, shape = x.shape()](const Tensor& g) {
            return grads({scatter_add(Tensor::zeros(shape, g.dtype(), g.device()), dim, si.get("gather"), g)});
        });
    return y;
}

Tensor scatter_add(const Tensor& x, int64_t dim_in, const Tensor& index, const Tensor& src) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "scatter_add");
    check_gather_shapes(x, dim, index, "scatter_add");
    require_same_dtype(x, src, "scatter_add");
    if (src.shape() != index.shape())
        throw std::invalid_argument("scatter_add: src of shape " + shape_str(src.shape()) +
                                    " must have the index's shape " + shape_str(index.shape()));
    Tensor y = x.detach().clone();
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(OpId::scatter_add, {x.detach(), index, src.detach()}, {y}, attrs);
    if (any_requires_grad({x, src}))
        record(y, OpId::scatter_add, {x, src}, [si = Saved(index), dim](const Tensor& g) {
            return grads({g, gather(g, dim, si.get("scatter_add"))});
        });
    return y;
}

Tensor index_select(const Tensor& x, int64_t dim_in, const Tensor& index) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "index_select");
    require_index(index, "index_select");
    if (index.dim() != 1)
        throw std::invalid_argument("index_select: index must be 1-d, got shape " + shape_str(index.shape()));
    Shape shape = x.shape();
    shape[dim] = index.numel();
    Tensor y = make_tensor(shape, x.dtype(), x.device());
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(OpId::index_select, {x.detach().contiguous(), index.contiguous()}, {y}, attrs);
    if (any_requires_grad({x}))
        record(y, OpId::index_select, {x}, [si = Saved(index), dim, from = x.shape()](const Tensor& g) {
            return grads({index_add(Tensor::zeros(from, g.dtype(), g.device()), dim, si.get("index_select"), g)});
        });
    return y;
}

Tensor index_add(const Tensor& x, int64_t dim_in, const Tensor& index, const Tensor& src) {
    int64_t dim = normalize_dim(dim_in, x.dim(), "index_add");
    require_index(index, "index_add");
    require_same_dtype(x, src, "index_add");
    Shape expected = x.shape();
    if (index.dim() != 1 || src.dim() != x.dim() || (expected[dim] = index.numel(), src.shape() != expected))
        throw std::invalid_argument("index_add: for input " + shape_str(x.shape()) + " along dim " + std::to_string(dim) +
                                    " with a 1-d index of " + std::to_string(index.numel()) +
                                    " entries, src must have shape " + shape_str(expected) + ", got " +
                                    shape_str(src.shape()) + " (index shape " + shape_str(index.shape()) + ")");
    Tensor y = x.detach().clone();
    Attrs attrs;
    attrs.dim = dim;
    run_kernel(OpId::index_add, {x.detach(), index.contiguous(), src.detach().contiguous()}, {y}, attrs);
    if (any_requires_grad({x, src}))
        record(y, OpId::index_add, {x, src}, [si = Saved(index), dim](const Tensor& g) {
            return grads({g, index_select(g, dim, si.get("index_add"))});
        });
    return y;
}

Tensor one_hot(const Tensor& indices, int64_t num_classes, DType dtype) {
    require_index(indices, "one_hot");
    if (num_classes <= 0) throw std::invalid_argument("one_hot: num_classes must be positive");
    Shape shape = indices.shape();
    shape.push_back(num_classes);
    Tensor y = make_tensor(shape, dtype, indices.device());
    Attrs attrs;
    attrs.k = num_classes;
    run_kernel(OpId::one_hot, {indices.contiguous()}, {y}, attrs);
    return y;
}

Tensor bincount(const Tensor& indices, int64_t bins) {
    require_index(indices, "bincount");
    if (indices.dim() != 1) throw std::invalid_argument("bincount: expected a 1-d tensor, got " + shape_str(indices.shape()));
    if (bins <= 0) throw std::invalid_argument("bincount: bins must be positive");
    Tensor y = make_tensor({bins}, DType::Int64, indices.device());
    Attrs attrs;
    attrs.k = bins;
    run_kernel(OpId::bincount, {indices.contiguous()}, {y}, attrs);
    return y;
}

}  // namespace mg
