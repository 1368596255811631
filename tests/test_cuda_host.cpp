// The host-side parts of the CUDA backend, tested on the CPU, so that they are checked on every
// machine (with or without nvcc or a GPU): the strided indexer every CUDA kernel uses to find its
// elements, and the caching allocator.
#include <doctest.h>

#include <cstdlib>
#include <set>

#include "engine/cuda/caching_allocator.h"
#include "engine/cuda/indexer.h"
#include "tests/helpers.h"

using namespace mg;
using mg::cuda::CachingAllocator;

namespace {

// The offset of linear element i (row-major over `shape`) in a view with `strides`, the slow way.
int64_t naive_offset(const Shape& shape, const Shape& strides, int64_t i) {
    int64_t off = 0;
    for (int d = (int)shape.size() - 1; d >= 0; --d) {
        off += (i % shape[d]) * strides[d];
        i /= shape[d];
    }
    return off;
}

}  // namespace

TEST_CASE("cuda indexer: offsets of transposed, broadcast and sliced views match the naive walk") {
    Tensor base = Tensor::zeros({4, 3, 5});
    std::vector<Tensor> views = {
        base,                                           // contiguous: merges to one dimension
        base.transpose(0, 2),                           // (5, 3, 4) permuted strides
        base.slice(2, 1, 5, 2),                         // (4, 3, 2) every other column
        Tensor::zeros({3, 1}).expand({4, 3, 5}),         // broadcast: stride 0 where expanded
        base.permute({1, 0, 2}).slice(0, 1, 3),          // (2, 4, 5)
    };
    for (const Tensor& v : views) {
        INFO("shape " << shape_str(v.shape()) << " strides " << shape_str(v.strides()));
        // Operand 0: a contiguous output of the same shape; operand 1: the view.
        Shape out_strides = contiguous_strides(v.shape());
        auto ix = cuda::make_indexer<2>(v.shape(), {&out_strides, &v.strides()});
        CHECK(ix.numel == v.numel());
        for (int64_t i = 0; i < v.numel(); ++i) {
            int64_t off[2];
            ix.offsets(i, off);
            REQUIRE(off[0] == i);
            REQUIRE(off[1] == naive_offset(v.shape(), v.strides(), i));
        }
    }
    Shape s = {4, 3, 5}, st = contiguous_strides(s);
    auto flat = cuda::make_indexer<1>(s, {&st});
    CHECK(flat.nd == 1);  // contiguous dims merged into one run
    CHECK(cuda::is_flat(flat));
    Shape t = {5, 3, 4}, tst = base.transpose(0, 2).strides();
    CHECK_FALSE(cuda::is_flat(cuda::make_indexer<1>(t, {&tst})));
    Shape one = {1, 1}, ost = {1, 1};
    auto single = cuda::make_indexer<1>(one, {&ost});
    int64_t off[1];
    single.offsets(0, off);
    CHECK(single.nd == 0);
    CHECK(off[0] == 0);
}

// A fake device: malloc with a byte budget, counting calls.
namespace {
size_t g_budget = 0, g_used = 0;
std::set<void*> g_blocks;
std::map<void*, size_t> g_sizes;
void* fake_alloc(size_t bytes) {
    if (g_used + bytes > g_budget) return nullptr;
    void* p = std::malloc(bytes);
    g_used += bytes;
    g_sizes[p] = bytes;
    g_blocks.insert(p);
    return p;
}
void fake_free(void* p) {
    REQUIRE(g_blocks.count(p) == 1);
    g_used -= g_sizes[p];
    g_blocks.erase(p);
    g_sizes.erase(p);
    std::free(p);
}
}  // namespace

TEST_CASE("cuda caching allocator: size classes waste at most a quarter and repeat exactly") {
    CHECK(CachingAllocator::size_class(1) == 512);
    CHECK(CachingAllocator::size_class(512) == 512);
    CHECK(CachingAllocator::size_class(513) == 640);    // 512 * 1.25
    CHECK(CachingAllocator::size_class(1000) == 1024);
    CHECK(CachingAllocator::size_class(1025) == 1280);
    CHECK(CachingAllocator::size_class(3 << 20) == (size_t)(3 << 20));  // 2 MiB * 1.5
    for (size_t bytes = 1; bytes < (1 << 22); bytes = bytes * 3 / 2 + 7) {
        size_t c = CachingAllocator::size_class(bytes);
        REQUIRE(c >= bytes);
        REQUIRE((double)c <= std::max(512.0, bytes * 1.25 + 1));
        REQUIRE(CachingAllocator::size_class(c) == c);  // a class is its own class
    }
}

TEST_CASE("cuda caching allocator: freed blocks are reused, so a repeated step allocates nothing new") {
    g_budget = 1 << 24;
    CachingAllocator alloc({fake_alloc, fake_free});
    auto step = [&] {  // a "training step": a few tensors of fixed sizes, freed in another order
        void* a = alloc.allocate(4000);
        void* b = alloc.allocate(100000);
        void* c = alloc.allocate(4000);
        CHECK(a != c);
        alloc.deallocate(b);
        void* d = alloc.allocate(99000);  // same class as b (114688 bytes): takes b's block
        CHECK(d == b);
        alloc.deallocate(a);
        alloc.deallocate(c);
        alloc.deallocate(d);
    };
    step();
    const auto first = alloc.stats();
    CHECK(first.device_allocs == 3);
    CHECK(first.live_bytes == 0);
    CHECK(first.cached_bytes == (int64_t)(2 * CachingAllocator::size_class(4000) + CachingAllocator::size_class(100000)));
    for (int i = 0; i < 5; ++i) step();
    const auto later = alloc.stats();
    CHECK(later.device_allocs == 3);  // nothing new from the device
    CHECK(later.cache_hits == first.cache_hits + 5 * 4);
    CHECK(later.peak_bytes == first.peak_bytes);
    alloc.empty_cache();
    CHECK(alloc.stats().cached_bytes == 0);
    CHECK(alloc.stats().device_frees == 3);
    CHECK(g_blocks.empty());
    CHECK(alloc.allocate(0) == nullptr);
    int x = 0;
    CHECK_THROWS_WITH_AS(alloc.deallocate(&x), doctest::Contains("did not allocate"), std::invalid_argument);
}

TEST_CASE("cuda caching allocator: out of memory frees the cache and retries, then names the size") {
    g_budget = 3000;
    CachingAllocator alloc({fake_alloc, fake_free});
    void* a = alloc.allocate(2000);  // class 2048
    alloc.deallocate(a);             // cached: 2048 of the 3000 budget still taken
    void* b = alloc.allocate(2500);  // class 2560: only fits once the cache is given back
    CHECK(b != nullptr);
    CHECK(alloc.stats().device_frees == 1);
    CHECK_THROWS_WITH_AS(alloc.allocate(1000), doctest::Contains("CUDA out of memory: could not allocate 1024 bytes"),
                         std::runtime_error);
    CHECK(alloc.stats().live_bytes == 2560);  // the failed request changed nothing
    alloc.deallocate(b);
    alloc.empty_cache();
    CHECK(g_blocks.empty());
}
