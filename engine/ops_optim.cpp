// ops_optim.cpp: optimizer updates as ops, so that each runs as one kernel on any device.
#include <string>

#include "engine/ops_internal.h"

namespace mg {
using namespace detail;

void adam_update_(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v, const AdamHyper& h) {
    for (const Tensor* t : {&grad, &m, &v}) {
        if (t->shape() != param.shape() || t->dtype() != param.dtype() || t->device() != param.device())
            throw std::invalid_argument("adam_update_: grad, m and v must match the parameter " +
                                        shape_str(param.shape()) + " " + dtype_name(param.dtype()) + " on " +
                                        device_name(param.device()) + ", got " + shape_str(t->shape()) + " " +
                                        dtype_name(t->dtype()) + " on " + device_name(t->device()));
    }
    require_floating(param, "adam_update_");
    if (!param.is_contiguous() || !grad.is_contiguous() || !m.is_contiguous() || !v.is_contiguous())
        throw std::invalid_argument("adam_update_: parameter, gradient and state must be contiguous");
    Attrs attrs;
    const double values[] = {h.step_size, h.beta1, h.beta2, h.eps, h.decay, h.l2, h.inv_sqrt_bias_correction2};
    for (int i = 0; i < 7; ++i) attrs.hyper[i] = values[i];
    run_kernel(OpId::adam_update, {grad}, {param, m, v}, attrs);
    for (const Tensor* t : {&param, &m, &v}) t->storage()->version++;  // in-place writes
}

}  // namespace mg
