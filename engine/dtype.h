// dtype.h: the element types a tensor can hold, and the one helper that turns a runtime dtype
// into a compile-time C++ type so that a kernel is written once as a template.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace mg {

// float32 is the working type; float64 exists on the CPU so that gradient checks can be tight;
// int32/int64 hold indices, token ids and offsets; bool holds masks (stored as one byte).
enum class DType : uint8_t { Float32, Float64, Int32, Int64, Bool };

inline size_t dtype_size(DType t) {
    switch (t) {
        case DType::Float32: return 4;
        case DType::Float64: return 8;
        case DType::Int32: return 4;
        case DType::Int64: return 8;
        case DType::Bool: return 1;
    }
    return 0;
}

inline const char* dtype_name(DType t) {
    switch (t) {
        case DType::Float32: return "float32";
        case DType::Float64: return "float64";
        case DType::Int32: return "int32";
        case DType::Int64: return "int64";
        case DType::Bool: return "bool";
    }
    return "?";
}

inline bool is_floating(DType t) { return t == DType::Float32 || t == DType::Float64; }
inline bool is_integral(DType t) { return t == DType::Int32 || t == DType::Int64; }

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::Float32; }
template <> constexpr DType dtype_of<double>() { return DType::Float64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::Int32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::Int64; }
template <> constexpr DType dtype_of<bool>() { return DType::Bool; }

// Calls f(T{}) with T the C++ type of `t`. Kernels use it as
//     dispatch_dtype(t, [&](auto tag) { using T = decltype(tag); ... });
template <typename F> decltype(auto) dispatch_dtype(DType t, F&& f) {
    switch (t) {
        case DType::Float32: return f(float{});
        case DType::Float64: return f(double{});
        case DType::Int32: return f(int32_t{});
        case DType::Int64: return f(int64_t{});
        case DType::Bool: return f(bool{});
    }
    throw std::logic_error("dispatch_dtype: bad dtype");
}

// The same, for kernels that only make sense on floating-point data.
template <typename F> decltype(auto) dispatch_floating(DType t, const char* op, F&& f) {
    if (t == DType::Float32) return f(float{});
    if (t == DType::Float64) return f(double{});
    throw std::invalid_argument(std::string(op) + ": expected a float32 or float64 tensor, got " + dtype_name(t));
}

// And for index tensors.
template <typename F> decltype(auto) dispatch_index(DType t, const char* op, F&& f) {
    if (t == DType::Int64) return f(int64_t{});
    if (t == DType::Int32) return f(int32_t{});
    throw std::invalid_argument(std::string(op) + ": expected an int32 or int64 index tensor, got " + dtype_name(t));
}

}  // namespace mg
