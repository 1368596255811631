// random.h: one counter-based generator (Philox-4x32-10, Salmon et al. 2011) for every random draw.
//
// Counter-based means: the n-th block of random bits is a pure function philox(key=seed,
// counter=n). A kernel that fills a tensor asks the generator for a range of counters and then
// computes every element independently, on any device and any number of threads, with the same
// result. So a seed reproduces a run, and CPU and CUDA draw the same numbers.
#pragma once
#include <cmath>
#include <cstdint>

namespace mg {

// Ten rounds of Philox-4x32 on a 128-bit counter (block, 0) with key `seed`. __host__ __device__
// so that the CUDA kernels compute exactly the same bits.
#if defined(__CUDACC__)
#define MG_HD __host__ __device__
#else
#define MG_HD
#endif
struct Philox4 { uint32_t v[4]; };
MG_HD inline Philox4 philox4x32(uint64_t block, uint64_t seed) {
    uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1; c3 = (uint32_t)p0; c0 = n0; c2 = n2;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    return {{c0, c1, c2, c3}};
}
// A 32-bit draw as a uniform number in the open interval (0, 1).
MG_HD inline double uniform_open(uint32_t bits) { return ((double)bits + 0.5) * (1.0 / 4294967296.0); }

// The random bits of element i of a draw that starts at counter `offset`: 4 elements per block.
MG_HD inline uint32_t philox_bits(uint64_t seed, uint64_t offset, uint64_t i) {
    return philox4x32(offset + i / 4, seed).v[i % 4];
}
// Standard normal element i (Box-Muller on the pairs of a block: lanes 0,1 and 2,3).
MG_HD inline double philox_normal(uint64_t seed, uint64_t offset, uint64_t i);

class Generator {
public:
    explicit Generator(uint64_t seed = 0) : seed_(seed) {}
    uint64_t seed() const { return seed_; }
    uint64_t offset() const { return offset_; }

    // Reserves the counters for `n` elements (4 per block) and returns the first block.
    uint64_t reserve(uint64_t n) {
        uint64_t start = offset_;
        offset_ += (n + 3) / 4;
        return start;
    }

    // Host-side draws (data generation, shuffles). Each uses one whole block.
    uint32_t next_u32() { return philox4x32(reserve(4), seed_).v[0]; }
    double uniform() { return uniform_open(next_u32()); }   // (0, 1)
    double normal();                                        // N(0, 1)
    int64_t randint(int64_t low, int64_t high);             // [low, high)

    // The whole state is two numbers, so checkpoints can store it exactly.
    struct State { uint64_t seed, offset; };
    State state() const { return {seed_, offset_}; }
    void set_state(State s) { seed_ = s.seed; offset_ = s.offset; }

private:
    uint64_t seed_ = 0;
    uint64_t offset_ = 0;
};

MG_HD inline double philox_normal(uint64_t seed, uint64_t offset, uint64_t i) {
    Philox4 b = philox4x32(offset + i / 4, seed);
    int lane = (int)(i % 4), pair = lane / 2;
    double u1 = uniform_open(b.v[2 * pair]), u2 = uniform_open(b.v[2 * pair + 1]);
    double r = ::sqrt(-2.0 * ::log(u1));
    double theta = 6.283185307179586 * u2;
    return (lane % 2 == 0) ? r * ::cos(theta) : r * ::sin(theta);
}

}  // namespace mg
