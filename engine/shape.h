// shape.h: shapes, strides and the small helpers every op uses to check and combine them.
//
// Shape is a small vector with its elements inline (no heap allocation): every op makes a few
// shapes, and with std::vector those allocations were the largest cost of a small op
// (bench/autograd_overhead.cpp). It behaves like std::vector<int64_t> for everything the engine
// uses, and converts to and from it. A tensor has at most kMaxDims dimensions.
#pragma once
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace mg {

constexpr int kMaxDims = 8;

class Shape {
public:
    using value_type = int64_t;
    using iterator = int64_t*;
    using const_iterator = const int64_t*;
    using reverse_iterator = std::reverse_iterator<iterator>;
    using const_reverse_iterator = std::reverse_iterator<const_iterator>;

    Shape() = default;
    explicit Shape(size_t n, int64_t value = 0) { resize(n, value); }
    Shape(std::initializer_list<int64_t> values) { assign(values.begin(), values.end()); }
    template <typename It, typename = decltype(*std::declval<It>())>
    Shape(It first, It last) { assign(first, last); }
    Shape(const std::vector<int64_t>& v) { assign(v.begin(), v.end()); }  // NOLINT: implicit on purpose
    operator std::vector<int64_t>() const { return std::vector<int64_t>(begin(), end()); }

    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    int64_t* data() { return v_; }
    const int64_t* data() const { return v_; }
    int64_t& operator[](size_t i) { return v_[i]; }
    const int64_t& operator[](size_t i) const { return v_[i]; }
    int64_t& front() { return v_[0]; }
    const int64_t& front() const { return v_[0]; }
    int64_t& back() { return v_[size_ - 1]; }
    const int64_t& back() const { return v_[size_ - 1]; }
    iterator begin() { return v_; }
    iterator end() { return v_ + size_; }
    const_iterator begin() const { return v_; }
    const_iterator end() const { return v_ + size_; }
    reverse_iterator rbegin() { return reverse_iterator(end()); }
    reverse_iterator rend() { return reverse_iterator(begin()); }
    const_reverse_iterator rbegin() const { return const_reverse_iterator(end()); }
    const_reverse_iterator rend() const { return const_reverse_iterator(begin()); }

    void clear() { size_ = 0; }
    void reserve(size_t n) { check_capacity(n); }
    void resize(size_t n, int64_t value = 0) {
        check_capacity(n);
        for (size_t i = size_; i < n; ++i) v_[i] = value;
        size_ = (uint8_t)n;
    }
    void push_back(int64_t value) {
        check_capacity(size_ + 1);
        v_[size_++] = value;
    }
    void pop_back() { --size_; }
    template <typename It> void assign(It first, It last) {
        size_t n = (size_t)std::distance(first, last);
        check_capacity(n);
        std::copy(first, last, v_);
        size_ = (uint8_t)n;
    }
    iterator insert(const_iterator pos, int64_t value) { return insert(pos, &value, &value + 1); }
    iterator insert(const_iterator pos, std::initializer_list<int64_t> values) {
        return insert(pos, values.begin(), values.end());
    }
    template <typename It> iterator insert(const_iterator pos, It first, It last) {
        size_t at = (size_t)(pos - v_), n = (size_t)std::distance(first, last);
        check_capacity(size_ + n);
        std::copy_backward(v_ + at, v_ + size_, v_ + size_ + n);
        std::copy(first, last, v_ + at);
        size_ = (uint8_t)(size_ + n);
        return v_ + at;
    }
    iterator erase(const_iterator pos) {
        size_t at = (size_t)(pos - v_);
        std::copy(v_ + at + 1, v_ + size_, v_ + at);
        --size_;
        return v_ + at;
    }

    friend bool operator==(const Shape& a, const Shape& b) {
        return a.size_ == b.size_ && std::equal(a.begin(), a.end(), b.begin());
    }
    friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

private:
    static void check_capacity(size_t n) {
        if (n > (size_t)kMaxDims)
            throw std::invalid_argument("shape: tensors have at most " + std::to_string(kMaxDims) +
                                        " dimensions, asked for " + std::to_string(n));
    }
    int64_t v_[kMaxDims] = {};
    uint8_t size_ = 0;
};

int64_t numel_of(const Shape& shape);
// Row-major ("C order") strides: the last dimension moves fastest.
Shape contiguous_strides(const Shape& shape);
// "[2, 3, 4]"
std::string shape_str(const Shape& shape);
// NumPy broadcasting: align from the right; sizes must match or be 1. Throws naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Turns a possibly negative dimension into 0..ndim-1, or throws naming `op`.
int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op);

// Kernels that work along one dimension (reductions, softmax, sort, gather, ...) view a contiguous
// tensor as (outer, R, inner) around it: element (o, r, i) is at o * R * inner + r * inner + i.
struct ReduceShape {
    int64_t outer = 1, reduced = 1, inner = 1;
};
inline ReduceShape reduce_shape(const Shape& shape, int64_t dim) {
    ReduceShape r;
    for (int64_t d = 0; d < (int64_t)shape.size(); ++d) {
        if (d < dim) r.outer *= shape[d];
        else if (d == dim) r.reduced = shape[d];
        else r.inner *= shape[d];
    }
    return r;
}

}  // namespace mg
