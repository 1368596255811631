// ops_sort.cpp: topk, argsort and multinomial sampling. The kernels are in
// engine/cpu/kernels_sort.cpp. Only topk's values carry gradient:
//   topk: dx = scatter_add(zeros(x.shape), dim, indices, g)   (g goes back to where each value came from)
// Indices (topk, argsort) and samples (multinomial) are integers and have none.
#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

ValuesIndices topk(const Tensor& x, int64_t k, int64_t dim_in, bool largest) {
    if (x.dim() == 0) {  // a 0-d tensor is its own top-1
        ValuesIndices r = topk(x.reshape({1}), k, 0, largest);
        return {r.values.reshape({}), r.indices.reshape({})};
    }
    int64_t dim = normalize_dim(dim_in, x.dim(), "topk");
    const int64_t size = x.shape()[dim];
    if (k < 1 || k > size)
        throw std::invalid_argument("topk: k = " + std::to_string(k) + " is out of range [1, " + std::to_string(size) +
                                    "] for dimension " + std::to_string(dim) + " of input " + shape_str(x.shape()));
    if (x.dtype() == DType::Bool) throw std::invalid_argument("topk: bool tensors cannot be ranked; convert them first");
    Shape shape = x.shape();
    shape[dim] = k;
    Tensor values = make_tensor(shape, x.dtype(), x.device());
    Tensor indices = make_tensor(shape, DType::Int64, x.device());
    Attrs attrs;
    attrs.dim = dim;
    attrs.k = k;
    attrs.flag = largest;
    run_kernel(OpId::topk, {x.detach().contiguous()}, {values, indices}, attrs);
    if (any_requires_grad({x}))
        record(values, OpId::topk, {x}, [si = Saved(indices), dim, from = x.shape()](const Tensor& g) {
            return grads({scatter_add(Tensor::zeros(from, g.dtype(), g.device()), dim, si.get("topk"), g)});
        });
    return {values, indices};
}

Tensor argsort(const Tensor& x, int64_t dim_in, bool descending) {
    if (x.dim() == 0) return Tensor::zeros({}, DType::Int64, x.device());
    int64_t dim = normalize_dim(dim_in, x.dim(), "argsort");
    if (x.dtype() == DType::Bool) throw std::invalid_argument("argsort: bool tensors cannot be sorted; convert them first");
    Tensor indices = make_tensor(x.shape(), DType::Int64, x.device());
    Attrs attrs;
    attrs.dim = dim;
    attrs.flag = descending;
    run_kernel(OpId::argsort, {x.detach().contiguous()}, {indices}, attrs);
    return indices;
}

// With replacement. A 1-d probs (C) gives (num_samples). The uniforms come from `gen` exactly as
// rand() draws them (one Philox element per sample), so a restored generator replays the samples.
Tensor multinomial(const Tensor& probs, int64_t num_samples, Generator& gen) {
    if (probs.dim() == 1) return multinomial(probs.unsqueeze(0), num_samples, gen).squeeze(0);
    require_floating(probs, "multinomial");
    if (probs.dim() != 2 || probs.shape()[1] == 0)
        throw std::invalid_argument("multinomial: expected probabilities (N, C) with C >= 1, got shape " +
                                    shape_str(probs.shape()));
    if (num_samples < 1)
        throw std::invalid_argument("multinomial: num_samples must be >= 1, got " + std::to_string(num_samples));
    const int64_t N = probs.shape()[0];
    Tensor out = make_tensor({N, num_samples}, DType::Int64, probs.device());  // (N, S) class ids
    Attrs attrs;
    attrs.k = num_samples;
    attrs.flag = true;  // with replacement (the only mode)
    attrs.seed = gen.seed();
    attrs.offset = gen.reserve((uint64_t)(N * num_samples));
    run_kernel(OpId::multinomial, {probs.detach().contiguous()}, {out}, attrs);
    return out;
}

}  // namespace mg
