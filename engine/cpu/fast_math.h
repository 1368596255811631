// cpu/fast_math.h: erf and exp for float32 written as plain arithmetic, so that the compiler can
// vectorise the loops that call them (glibc's erff and expf are scalar calls: in the level-3
// language model, GELU's erf and exp over the experts' hidden activations were 10% of a training
// step). Used by the float32 GELU kernels; float64 and the public erf / exp ops keep the exact
// std:: functions, which are the references tests/test_ops_nn.cpp compares these against.
//
// Accuracy, measured over [-6, 6] against double-precision erf / exp (the test checks it):
//   erf_f32: absolute error below 5e-7 (erf is within [-1, 1]);
//   exp_f32: relative error below 3e-7 for x in [-87, 88]; 0 below -87.
#pragma once
#include <bit>
#include <cstdint>

namespace mg::cpu {

// lo <= x <= hi by value (std::min/max return references, which keeps GCC from vectorising).
inline float clamp_f32(float x, float lo, float hi) {
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

// erf(x) = x * P(x^2) / Q(x^2) on [-4, 4] (|erf| rounds to 1 in float32 beyond), a rational
// minimax fit (the coefficients of Eigen's generic_fast_erf_float). Odd in x, like erf.
[[gnu::always_inline]] inline float erf_f32(float x) {
    const float c = clamp_f32(x, -4.0f, 4.0f);
    const float x2 = c * c;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 - 2.10102402082508e-06f;
    p = p * x2 - 5.69250639462346e-05f;
    p = p * x2 - 7.34990630326855e-04f;
    p = p * x2 - 2.95459980854025e-03f;
    p = p * x2 - 1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 - 2.13374055278905e-04f;
    q = q * x2 - 1.68282697438203e-03f;
    q = q * x2 - 7.37332916720468e-03f;
    q = q * x2 - 1.42647390514189e-02f;
    return c * p / q;
}

// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in a
// high and a low part so that r is exact), exp(r) by its Taylor polynomial to degree 6, and 2^n
// built directly in the exponent bits.
[[gnu::always_inline]] inline float exp_f32(float x) {
    const float xc = clamp_f32(x, -87.0f, 88.0f);
    // Round to the nearest integer by adding and subtracting 1.5 * 2^23: the sum has no bits below
    // the units place, so the hardware's round-to-nearest-even does the rounding.
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
    float e = 1.0f / 720;
    e = e * r + 1.0f / 120;
    e = e * r + 1.0f / 24;
    e = e * r + 1.0f / 6;
    e = e * r + 0.5f;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    const float scale = std::bit_cast<float>((int32_t)(n + 127.0f) << 23);
    return x < -87.0f ? 0.0f : e * scale;
}

}  // namespace mg::cpu
