// tensor.cpp: creation, host access, printing, device/dtype conversion and in-place updates.
// Views live in ops_shape.cpp, autograd in autograd.cpp.
#include "engine/tensor.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/ops.h"

namespace mg {

TensorImpl& Tensor::impl() const {
    if (!impl_) throw std::logic_error("use of an undefined tensor (default-constructed Tensor)");
    return *impl_;
}

int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim(), "size")]; }

bool Tensor::is_contiguous() const {
    int64_t expected = 1;
    for (int64_t d = dim() - 1; d >= 0; --d) {
        if (shape()[d] != 1 && strides()[d] != expected) return false;
        expected *= shape()[d];
    }
    return true;
}

void* Tensor::raw_data_ptr() const {
    return static_cast<char*>(impl().storage->data) + impl().offset * (int64_t)dtype_size(dtype());
}

// ---- creation --------------------------------------------------------------------------------
Tensor make_tensor(const Shape& shape, DType dtype, Device device) {
    for (int64_t s : shape)
        if (s < 0) throw std::invalid_argument("empty: negative size in shape " + shape_str(shape));
    auto impl = std::make_shared<TensorImpl>();
    // Never a zero-byte allocation: keeps data pointers valid for empty tensors.
    size_t bytes = std::max<size_t>(1, (size_t)numel_of(shape) * dtype_size(dtype));
    impl->storage = std::make_shared<Storage>(bytes, device);
    impl->shape = shape;
    impl->strides = contiguous_strides(shape);
    impl->dtype = dtype;
    return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset) {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = base.storage();
    impl->shape = shape;
    impl->strides = strides;
    impl->offset = offset;
    impl->dtype = base.dtype();
    return Tensor(std::move(impl));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) { return make_tensor(shape, dtype, device); }
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1, dtype, device); }
Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
    Tensor t = make_tensor(shape, dtype, device);
    Attrs attrs;
    attrs.scalar = value;
    run_kernel(OpId::fill, {}, {t}, attrs);
    return t;
}

Tensor Tensor::arange(double start, double end, double step, DType dtype, Device device) {
    if (step == 0) throw std::invalid_argument("arange: step must be non-zero");
    int64_t n = std::max<int64_t>(0, (int64_t)std::ceil((end - start) / step));
    Tensor t = make_tensor({n}, dtype, device);
    Attrs attrs;
    attrs.scalar = start;
    attrs.scalar2 = step;
    run_kernel(OpId::arange, {}, {t}, attrs);
    return t;
}

Tensor from_host(const void* data, DType dtype, const Shape& shape, Device device) {
    Tensor cpu = make_tensor(shape, dtype, Device::CPU);
    if (cpu.numel() > 0) std::memcpy(cpu.raw_data_ptr(), data, (size_t)cpu.numel() * dtype_size(dtype));  // data may be null when empty
    return device == Device::CPU ? cpu : cpu.to(device);
}

// ---- host access -----------------------------------------------------------------------------
void to_host(const Tensor& t, void* dst, DType dst_dtype) {
    // Convert on the tensor's own device, then bring the contiguous bytes over.
    Tensor src = t.dtype() == dst_dtype ? t.detach().contiguous() : copy(t.detach(), dst_dtype);
    size_t bytes = (size_t)src.numel() * dtype_size(dst_dtype);
    if (bytes == 0) return;  // dst may be null (an empty vector), and memcpy(nullptr, p, 0) is UB
    if (src.device() == Device::CPU) std::memcpy(dst, src.raw_data_ptr(), bytes);
    else device_hooks(src.device()).copy(dst, src.raw_data_ptr(), bytes, /*to_device=*/false);
}

double Tensor::item() const {
    if (numel() != 1)
        throw std::invalid_argument("item: tensor of shape " + shape_str(shape()) + " has " +
                                    std::to_string(numel()) + " elements, expected exactly 1");
    double v = 0;
    to_host(*this, &v, DType::Float64);
    return v;
}

double Tensor::at(std::initializer_list<int64_t> index) const {
    if ((int64_t)index.size() != dim())
        throw std::invalid_argument("at: " + std::to_string(index.size()) + " indices for a tensor of shape " +
                                    shape_str(shape()));
    int64_t off = offset(), d = 0;
    for (int64_t i : index) {
        if (i < 0 || i >= shape()[d])
            throw std::out_of_range("at: index " + std::to_string(i) + " out of range for dimension " +
                                    std::to_string(d) + " of shape " + shape_str(shape()));
        off += i * strides()[d++];
    }
    return make_view(*this, {}, {}, off).item();
}

// ---- printing --------------------------------------------------------------------------------
namespace {
void print_values(std::ostringstream& os, const std::vector<double>& v, const Shape& shape, const Shape& strides,
                  int64_t d, int64_t base, bool summarize, bool floating, int indent) {
    if (d == (int64_t)shape.size()) {
        if (floating) os << std::fixed << std::setprecision(4) << v[base];
        else os << (int64_t)v[base];
        return;
    }
    const int64_t n = shape[d], edge = 3;
    os << "[";
    for (int64_t i = 0; i < n; ++i) {
        if (summarize && n > 2 * edge && i == edge) {
            os << "...";
            i = n - edge - 1;
            os << (d + 1 == (int64_t)shape.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
            continue;
        }
        print_values(os, v, shape, strides, d + 1, base + i * strides[d], summarize, floating, indent + 1);
        if (i + 1 < n) os << (d + 1 == (int64_t)shape.size() ? ", " : ",\n" + std::string(indent + 1, ' '));
    }
    os << "]";
}
}  // namespace

std::string Tensor::to_string() const {
    if (!defined()) return "tensor(undefined)";
    std::vector<double> values = to_vector<double>();
    std::ostringstream os;
    os << "tensor(";
    print_values(os, values, shape(), contiguous_strides(shape()), 0, 0, numel() > 1000, is_floating(dtype()), 7);
    os << ", shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype()) << ", device=" << device_name(device());
    if (requires_grad()) os << ", requires_grad";
    os << ")";
    return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

// ---- conversions -----------------------------------------------------------------------------
Tensor Tensor::to(DType target) const { return target == dtype() ? *this : copy(*this, target); }

Tensor Tensor::to(Device target) const {
    if (target == device()) return *this;
    Tensor src = detach().contiguous();
    Tensor out = make_tensor(shape(), dtype(), target);
    size_t bytes = (size_t)numel() * dtype_size(dtype());
    if (target == Device::CPU) device_hooks(device()).copy(out.raw_data_ptr(), src.raw_data_ptr(), bytes, false);
    else device_hooks(target).copy(out.raw_data_ptr(), src.raw_data_ptr(), bytes, true);
    if (any_requires_grad({*this})) {
        Device from = device();
        record(out, OpId::copy, {*this}, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
    }
    return out;
}

Tensor Tensor::clone() const { return copy(*this, dtype()); }

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

// ---- in-place updates --------------------------------------------------------------------------
namespace {
void check_inplace(const Tensor& t, const char* op) {
    if (grad_enabled() && t.requires_grad())
        throw std::logic_error(std::string(op) + ": in-place update of a tensor that requires grad while gradients "
                               "are recorded; wrap the update in NoGradGuard (as optimizers do)");
}
}  // namespace

Tensor& Tensor::fill_(double value) {
    check_inplace(*this, "fill_");
    Attrs attrs;
    attrs.scalar = value;
    run_kernel(OpId::fill, {}, {*this}, attrs);
    impl().storage->version++;
    return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
    check_inplace(*this, "copy_");
    Tensor s = src.detach();
    if (s.shape() != shape()) s = s.expand(shape());
    run_kernel(OpId::copy, {s}, {*this});
    impl().storage->version++;
    return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
    NoGradGuard no_grad;
    Tensor update = alpha == 1.0 ? other.detach() : mul(other.detach(), Tensor::scalar(alpha, other.dtype(), device()));
    return copy_(add(detach(), update));
}

Tensor& Tensor::mul_(double factor) {
    NoGradGuard no_grad;
    return copy_(mul(detach(), Tensor::scalar(factor, dtype(), device())));
}

// ---- methods that forward to the free functions in ops.h -------------------------------------
Tensor Tensor::sum() const { return mg::sum(*this); }
Tensor Tensor::sum(int64_t d, bool keepdim) const { return mg::sum(*this, d, keepdim); }
Tensor Tensor::mean() const { return mg::mean(*this); }
Tensor Tensor::mean(int64_t d, bool keepdim) const { return mg::mean(*this, d, keepdim); }
Tensor Tensor::matmul(const Tensor& other) const { return mg::matmul(*this, other); }
Tensor Tensor::exp() const { return mg::exp(*this); }
Tensor Tensor::log() const { return mg::log(*this); }
Tensor Tensor::relu() const { return mg::relu(*this); }
Tensor Tensor::pow(double exponent) const { return mg::pow(*this, exponent); }
Tensor Tensor::argmax(int64_t d, bool keepdim) const { return mg::argmax(*this, d, keepdim); }

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& a) { return neg(a); }
Tensor operator+(const Tensor& a, double b) { return add(a, Tensor::scalar(b, a.dtype(), a.device())); }
Tensor operator-(const Tensor& a, double b) { return sub(a, Tensor::scalar(b, a.dtype(), a.device())); }
Tensor operator*(const Tensor& a, double b) { return mul(a, Tensor::scalar(b, a.dtype(), a.device())); }
Tensor operator/(const Tensor& a, double b) { return div(a, Tensor::scalar(b, a.dtype(), a.device())); }
Tensor operator+(double a, const Tensor& b) { return add(Tensor::scalar(a, b.dtype(), b.device()), b); }
Tensor operator-(double a, const Tensor& b) { return sub(Tensor::scalar(a, b.dtype(), b.device()), b); }
Tensor operator*(double a, const Tensor& b) { return mul(Tensor::scalar(a, b.dtype(), b.device()), b); }
Tensor operator/(double a, const Tensor& b) { return div(Tensor::scalar(a, b.dtype(), b.device()), b); }

}  // namespace mg
