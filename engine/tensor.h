// tensor.h: the Tensor handle. A Tensor is a cheap, shared handle to a TensorImpl, which holds
// a view (shape, strides, offset, dtype) into a Storage, and the autograd fields (requires_grad,
// grad, and the Node that made it). Copying a Tensor copies the handle, not the data, as in PyTorch.
//
// Views share storage: transpose, permute, expand, slice and reshape of contiguous data only
// change shape/strides/offset. A kernel that needs dense memory calls contiguous().
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/shape.h"
#include "engine/storage.h"

namespace mg {

struct Node;
class Tensor;

struct TensorImpl {
    std::shared_ptr<Storage> storage;
    Shape shape;
    Shape strides;        // in elements, not bytes
    int64_t offset = 0;   // in elements, from the start of storage
    DType dtype = DType::Float32;

    bool requires_grad = false;
    std::shared_ptr<TensorImpl> grad;             // accumulated gradient (leaves, retain_grad)
    std::shared_ptr<Node> grad_fn;                // the op that made this tensor (non-leaves)
    std::shared_ptr<Node> grad_accumulator;       // leaves: the node that adds into `grad`
};

class Tensor {
public:
    Tensor() = default;  // an undefined tensor (no storage); defined() is false
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

    // ---- creation (engine/ops_create.cpp) --------------------------------------------------
    static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::CPU);
    static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = Device::CPU);
    static Tensor ones(const Shape& shape, DType dtype = DType::Float32, Device device = Device::CPU);
    static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                       Device device = Device::CPU);
    // [start, end) in steps of `step`
    static Tensor arange(double start, double end, double step = 1, DType dtype = DType::Int64,
                         Device device = Device::CPU);
    // From host values; the tensor is contiguous with the given shape.
    template <typename T>
    static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::CPU);
    static Tensor from_vector(std::initializer_list<float> values, const Shape& shape,
                              Device device = Device::CPU) {
        return from_vector(std::vector<float>(values), shape, device);
    }
    static Tensor scalar(double value, DType dtype = DType::Float32, Device device = Device::CPU);

    // ---- metadata ------------------------------------------------------------------------------
    bool defined() const { return impl_ != nullptr; }
    const Shape& shape() const { return impl().shape; }
    const Shape& strides() const { return impl().strides; }
    int64_t offset() const { return impl().offset; }
    int64_t dim() const { return (int64_t)impl().shape.size(); }
    int64_t size(int64_t d) const;
    int64_t numel() const { return numel_of(impl().shape); }
    DType dtype() const { return impl().dtype; }
    Device device() const { return impl().storage->device; }
    bool is_contiguous() const;
    const std::shared_ptr<Storage>& storage() const { return impl().storage; }
    TensorImpl& impl() const;
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
    bool same(const Tensor& other) const { return impl_ == other.impl_; }

    // Raw pointer to element [0, 0, ...] of this view (CPU or device memory). Checks the dtype.
    template <typename T> T* data_ptr() const;
    void* raw_data_ptr() const;

    // ---- values on the host --------------------------------------------------------------------
    // The single value of a one-element tensor (any device; synchronises with the device).
    double item() const;
    template <typename T> T item() const { return static_cast<T>(item()); }
    // All values in row-major order, converted to T (any device).
    template <typename T> std::vector<T> to_vector() const;
    // One element, by index, converted to double (any device; slow: for tests and printing).
    double at(std::initializer_list<int64_t> index) const;
    std::string to_string() const;  // shape, dtype, device and values, truncated like NumPy

    // ---- autograd (engine/autograd.cpp) --------------------------------------------------------
    bool requires_grad() const { return impl().requires_grad; }
    // Leaves only: mark this tensor as a parameter whose gradient should be accumulated.
    Tensor& set_requires_grad(bool requires_grad = true);
    Tensor grad() const;              // undefined until a backward has reached this tensor
    void set_grad(const Tensor& g) const;
    void zero_grad() const;           // drops the gradient (like PyTorch's set_to_none=True)
    bool is_leaf() const { return impl().grad_fn == nullptr; }
    const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
    // Ask a non-leaf tensor to keep its gradient after backward (for inspection and tests).
    void retain_grad();
    // Reverse-mode differentiation from this tensor. Without an argument it must hold one element
    // (a loss). retain_graph keeps the saved tensors so that backward can run again.
    void backward(const Tensor& grad_output = Tensor(), bool retain_graph = false) const;
    // A tensor that shares this one's storage but is cut out of the graph.
    Tensor detach() const;

    // ---- views (engine/ops_shape.cpp) ----------------------------------------------------------
    Tensor reshape(const Shape& shape) const;          // one size may be -1
    Tensor view(const Shape& shape) const { return reshape(shape); }
    Tensor flatten() const { return reshape({-1}); }
    Tensor transpose(int64_t d0, int64_t d1) const;
    Tensor t() const { return transpose(0, 1); }       // 2-D transpose
    Tensor permute(const Shape& order) const;
    Tensor expand(const Shape& shape) const;           // broadcast size-1 dims (stride 0)
    Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
    Tensor select(int64_t dim, int64_t index) const;   // slice + drop the dimension
    Tensor unsqueeze(int64_t dim) const;
    Tensor squeeze(int64_t dim) const;
    Tensor contiguous() const;                         // itself when already contiguous
    Tensor clone() const;                              // always a fresh contiguous copy

    // ---- conversions ---------------------------------------------------------------------------
    Tensor to(Device device) const;
    Tensor to(DType dtype) const;

    // ---- in-place (never on a tensor autograd still needs: the version check catches it) ----
    Tensor& fill_(double value);
    Tensor& zero_() { return fill_(0); }
    Tensor& copy_(const Tensor& src);                        // broadcast src into this view
    Tensor& add_(const Tensor& other, double alpha = 1.0);   // this += alpha * other
    Tensor& mul_(double factor);

    // ---- common ops as methods (all defined in engine/ops.h as free functions too) -----------
    Tensor sum() const;
    Tensor sum(int64_t dim, bool keepdim = false) const;
    Tensor mean() const;
    Tensor mean(int64_t dim, bool keepdim = false) const;
    Tensor matmul(const Tensor& other) const;
    Tensor exp() const;
    Tensor log() const;
    Tensor relu() const;
    Tensor pow(double exponent) const;
    Tensor argmax(int64_t dim, bool keepdim = false) const;

private:
    std::shared_ptr<TensorImpl> impl_;
};

// Arithmetic with NumPy broadcasting; scalars become 0-d tensors of the tensor's dtype.
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a);
Tensor operator+(const Tensor& a, double b);
Tensor operator-(const Tensor& a, double b);
Tensor operator*(const Tensor& a, double b);
Tensor operator/(const Tensor& a, double b);
Tensor operator+(double a, const Tensor& b);
Tensor operator-(double a, const Tensor& b);
Tensor operator*(double a, const Tensor& b);
Tensor operator/(double a, const Tensor& b);

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Makes a new, uninitialised TensorImpl view over fresh storage. Used by ops for outputs.
Tensor make_tensor(const Shape& shape, DType dtype, Device device);
// A view of `base`'s storage with other shape/strides/offset (no autograd: ops attach that).
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset);

// ---- template definitions ----------------------------------------------------------------------
template <typename T> T* Tensor::data_ptr() const {
    if (dtype_of<T>() != dtype())
        throw std::invalid_argument(std::string("data_ptr: tensor holds ") + dtype_name(dtype()) +
                                    ", asked for " + dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw_data_ptr());
}

// Implemented in tensor.cpp for the five element types.
Tensor from_host(const void* data, DType src_dtype, const Shape& shape, Device device);
template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
    if ((int64_t)values.size() != numel_of(shape))
        throw std::invalid_argument("from_vector: " + std::to_string(values.size()) +
                                    " values do not fill shape " + shape_str(shape));
    if constexpr (std::is_same_v<T, bool>) {
        std::vector<uint8_t> bytes(values.begin(), values.end());
        return from_host(bytes.data(), DType::Bool, shape, device);
    } else {
        return from_host(values.data(), dtype_of<T>(), shape, device);
    }
}

void to_host(const Tensor& t, void* dst, DType dst_dtype);  // contiguous, converted copy
template <typename T> std::vector<T> Tensor::to_vector() const {
    std::vector<T> out(numel());
    if constexpr (std::is_same_v<T, bool>) {
        std::vector<uint8_t> bytes(numel());
        to_host(*this, bytes.data(), DType::Bool);
        for (size_t i = 0; i < bytes.size(); ++i) out[i] = bytes[i] != 0;
    } else {
        to_host(*this, out.data(), dtype_of<T>());
    }
    return out;
}

}  // namespace mg
