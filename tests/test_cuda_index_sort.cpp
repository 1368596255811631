// CUDA parity of the index ops (engine/cuda/kernels_index.cu) and the sort ops
// (engine/cuda/kernels_sort.cu) against the CPU kernels, the reference.
//
// Most of these ops only move values (gather, index_select, one_hot, topk, argsort) or add them in a
// fixed order (scatter_add, index_add add each destination's sources in increasing source order,
// exactly as the CPU does), and multinomial draws the CPU's Philox numbers: so their outputs must be
// BITWISE equal to the CPU's, not merely close. check_same_bits checks that; check_cuda_parity
// (tests/cuda_parity.h) checks the gradients, which also involve other ops' kernels.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "tests/cuda_parity.h"

using namespace mg;
using mg::test::check_cuda_parity;
using mg::test::randn_input;
using mg::test::TensorFn;

namespace {

// Equal values, element by element (NaN equal to NaN), same shape and dtype.
bool same_values(const Tensor& a, const Tensor& b) {
    if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
    if (is_integral(a.dtype())) return a.to_vector<int64_t>() == b.to_vector<int64_t>();
    std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();  // exact for float32
    for (size_t i = 0; i < va.size(); ++i)
        if (!(va[i] == vb[i] || (std::isnan(va[i]) && std::isnan(vb[i])))) return false;
    return true;
}

// Runs f on the CPU inputs and on CUDA copies of them: every output must be equal to the bit.
void check_same_bits(const std::string& what, const TensorFn& f, const std::vector<Tensor>& inputs) {
    INFO("same bits: " << what);
    std::vector<Tensor> cpu_in, gpu_in;
    for (const Tensor& t : inputs) {
        cpu_in.push_back(t);
        gpu_in.push_back(t.to(Device::CUDA));
    }
    std::vector<Tensor> cpu_out = f(cpu_in), gpu_out = f(gpu_in);
    REQUIRE(cpu_out.size() == gpu_out.size());
    for (size_t i = 0; i < cpu_out.size(); ++i) {
        INFO("output " << i << " shape " << shape_str(cpu_out[i].shape()));
        REQUIRE(gpu_out[i].device() == Device::CUDA);
        CHECK(same_values(gpu_out[i].to(Device::CPU), cpu_out[i]));
    }
}

// Random indices in [0, high) of `shape`, as int64 or int32.
Tensor random_index(int64_t high, const Shape& shape, uint64_t seed, DType dtype) {
    Generator gen(seed);
    Tensor index = randint(0, high, shape, gen);
    return dtype == DType::Int64 ? index : copy(index, DType::Int32);
}

// Random float32 values with many ties (integers 0..levels-1), for the ordering tests.
Tensor tied_values(const Shape& shape, int64_t levels, uint64_t seed, DType dtype = DType::Float32) {
    Generator gen(seed);
    return copy(randint(0, levels, shape, gen), dtype);
}

const DType kIndexTypes[] = {DType::Int64, DType::Int32};

}  // namespace

TEST_SUITE("cuda") {

// ---- gather / scatter_add ----------------------------------------------------------------------
TEST_CASE("cuda gather and scatter_add: every dim, int32 and int64, repeated indices, gradients") {
    std::mt19937 rng(7);
    const std::vector<Shape> shapes = {{7}, {1, 5}, {5, 33}, {3, 4, 9}, {2, 1000}, {2, 3, 2, 5}};
    uint64_t seed = 100;
    for (const Shape& x_shape : shapes)
        for (int64_t dim = 0; dim < (int64_t)x_shape.size(); ++dim)
            for (DType it : kIndexTypes) {
                // index: at most x's size outside dim, any length along dim (repeats likely).
                Shape index_shape = x_shape;
                for (int64_t d = 0; d < (int64_t)x_shape.size(); ++d)
                    index_shape[d] = d == dim ? 1 + (int64_t)(rng() % (2 * x_shape[d]))
                                              : 1 + (int64_t)(rng() % x_shape[d]);
                CAPTURE(shape_str(x_shape));
                CAPTURE(shape_str(index_shape));
                CAPTURE(dim);
                Tensor index = random_index(x_shape[dim], index_shape, ++seed, it);
                Tensor x = randn_input(x_shape, ++seed), src = randn_input(index_shape, ++seed);
                // gather's backward is a scatter_add of the gradient with repeated indices.
                check_cuda_parity("gather", [dim](const std::vector<Tensor>& in) {
                    return std::vector<Tensor>{gather(in[0], dim, in[1])};
                }, {x, index});
                check_cuda_parity("scatter_add", [dim](const std::vector<Tensor>& in) {
                    return std::vector<Tensor>{scatter_add(in[0], dim, in[1], in[2])};
                }, {x, index, src});
                // Forward values are the CPU's to the bit: the same additions in the same order.
                check_same_bits("scatter_add", [dim](const std::vector<Tensor>& in) {
                    return std::vector<Tensor>{scatter_add(in[0], dim, in[1], in[2])};
                }, {x.detach(), index, src.detach()});
            }
    // float64 and int64 values.
    Tensor x64 = randn_input({6, 9}, 1, DType::Float64), i64 = random_index(9, {6, 20}, 2, DType::Int64);
    check_cuda_parity("gather float64", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{gather(in[0], 1, in[1])};
    }, {x64, i64});
    Tensor ints = random_index(1000, {6, 9}, 3, DType::Int64);
    check_same_bits("scatter_add int64", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{scatter_add(in[0], 1, in[1], in[2])};
    }, {ints, i64, random_index(1000, {6, 20}, 4, DType::Int64)});
}

TEST_CASE("cuda gather and scatter_add: strided (transposed, sliced) x, index and src") {
    Tensor x = randn_input({9, 6}, 11);                  // used as x.t(): (6, 9)
    Tensor index = random_index(9, {40, 5}, 12, DType::Int64);  // used as index.t(): (5, 40)
    Tensor src = randn_input({40, 5}, 13);               // used as src.t(): (5, 40)
    check_cuda_parity("gather of transposed views", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{gather(in[0].t(), 1, in[1].t())};
    }, {x, index});
    check_cuda_parity("scatter_add of transposed views", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{scatter_add(in[0].t(), 1, in[1].t(), in[2].t())};
    }, {x, index, src});
    check_cuda_parity("gather along dim 0 of a sliced view", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{gather(in[0].slice(1, 1, 6, 2), 0, in[1].slice(0, 0, 7).slice(1, 0, 3))};
    }, {randn_input({9, 6}, 14), random_index(9, {20, 5}, 15, DType::Int32)});
}

// ---- index_select / index_add ------------------------------------------------------------------
TEST_CASE("cuda index_select and index_add: every dim, int32 and int64, repeated indices, gradients") {
    const std::vector<Shape> shapes = {{7}, {5, 33}, {3, 4, 9}, {1000, 3}, {2, 3, 257}};
    uint64_t seed = 200;
    for (const Shape& x_shape : shapes)
        for (int64_t dim = 0; dim < (int64_t)x_shape.size(); ++dim)
            for (DType it : kIndexTypes)
                for (int64_t L : {(int64_t)1, x_shape[dim], 3 * x_shape[dim] + 1}) {
                    CAPTURE(shape_str(x_shape));
                    CAPTURE(dim);
                    CAPTURE(L);
                    Tensor index = random_index(x_shape[dim], {L}, ++seed, it);
                    Shape src_shape = x_shape;
                    src_shape[dim] = L;
                    Tensor x = randn_input(x_shape, ++seed), src = randn_input(src_shape, ++seed);
                    // index_select's backward is index_add with the same (repeated) indices.
                    check_cuda_parity("index_select", [dim](const std::vector<Tensor>& in) {
                        return std::vector<Tensor>{index_select(in[0], dim, in[1])};
                    }, {x, index});
                    check_cuda_parity("index_add", [dim](const std::vector<Tensor>& in) {
                        return std::vector<Tensor>{index_add(in[0], dim, in[1], in[2])};
                    }, {x, index, src});
                    check_same_bits("index_add", [dim](const std::vector<Tensor>& in) {
                        return std::vector<Tensor>{index_add(in[0], dim, in[1], in[2])};
                    }, {x.detach(), index, src.detach()});
                }
    // A permutation (the MoE backward of its dispatch), float64, and int64 values.
    Generator gen(5);
    Tensor perm = argsort(rand({513}, gen));
    check_cuda_parity("index_add of a permutation, float64", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{index_add(in[0], 0, in[1], in[2])};
    }, {randn_input({513, 7}, 6, DType::Float64), perm, randn_input({513, 7}, 7, DType::Float64)});
    check_same_bits("index_select and index_add of int64 values", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{index_select(in[0], 1, in[1]), index_add(in[0], 1, in[1], in[2])};
    }, {random_index(50, {4, 9}, 8, DType::Int64), random_index(9, {20}, 9, DType::Int32),
        random_index(50, {4, 20}, 10, DType::Int64)});
    // An empty index selects nothing and adds nothing.
    check_same_bits("empty index", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{index_select(in[0], 0, in[1]), index_add(in[0], 1, in[1], in[2])};
    }, {Tensor::ones({3, 4}), Tensor::zeros({0}, DType::Int64), Tensor::ones({3, 0})});
}

TEST_CASE("cuda embedding: forward and backward with many repeated ids") {
    // Backward of embedding = index_add of the output gradient into the table rows; here 2000 ids
    // over 37 rows, so each row sums ~50 gradient rows (in id order, as the CPU does).
    Tensor weight = randn_input({37, 65}, 21);
    for (DType it : kIndexTypes) {
        Tensor ids = random_index(37, {40, 50}, 22, it);
        check_cuda_parity("embedding", [](const std::vector<Tensor>& in) {
            return std::vector<Tensor>{embedding(in[0], in[1])};
        }, {weight, ids});
    }
}

TEST_CASE("cuda scatter_add and index_add are deterministic: bitwise the same twice, and the CPU's") {
    // 20000 sources into 5 destinations per column: a float atomicAdd would differ run to run.
    Tensor index = random_index(5, {20000}, 31, DType::Int64);
    Tensor src = randn_input({20000, 33}, 32).detach(), x = randn_input({5, 33}, 33).detach();
    Tensor g_index = index.to(Device::CUDA), g_src = src.to(Device::CUDA), g_x = x.to(Device::CUDA);
    Tensor first = index_add(g_x, 0, g_index, g_src).to(Device::CPU);
    Tensor second = index_add(g_x, 0, g_index, g_src).to(Device::CPU);
    CHECK(same_values(first, second));
    CHECK(same_values(first, index_add(x, 0, index, src)));
    // scatter_add: every row of a (33, 20000) index scatters into 5 slots.
    Tensor s_index = random_index(5, {33, 20000}, 34, DType::Int32), s_src = src.t().contiguous();
    Tensor s_x = x.t().contiguous();
    Tensor g_s_index = s_index.to(Device::CUDA), g_s_src = s_src.to(Device::CUDA), g_s_x = s_x.to(Device::CUDA);
    Tensor a = scatter_add(g_s_x, 1, g_s_index, g_s_src).to(Device::CPU);
    Tensor b = scatter_add(g_s_x, 1, g_s_index, g_s_src).to(Device::CPU);
    CHECK(same_values(a, b));
    CHECK(same_values(a, scatter_add(s_x, 1, s_index, s_src)));
}

// ---- one_hot / bincount --------------------------------------------------------------------------
TEST_CASE("cuda one_hot and bincount: int32 and int64, every output dtype") {
    for (DType it : kIndexTypes) {
        Tensor ids = random_index(10, {7, 33}, 41, it);
        for (DType out : {DType::Float32, DType::Float64, DType::Int32, DType::Int64, DType::Bool})
            check_same_bits("one_hot", [out](const std::vector<Tensor>& in) {
                return std::vector<Tensor>{one_hot(in[0], 10, out)};
            }, {ids});
        for (int64_t n : {1, 7, 1000, 100000})
            check_same_bits("bincount", [](const std::vector<Tensor>& in) {
                return std::vector<Tensor>{bincount(in[0], 13)};
            }, {random_index(13, {n}, 42 + n, it)});
    }
    check_same_bits("bincount of nothing", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{bincount(in[0], 4)};
    }, {Tensor::zeros({0}, DType::Int64)});
}

// ---- out-of-range indices: reported by the kernel, raised at the next synchronisation -----------
TEST_CASE("cuda index ops: an out-of-range index raises std::out_of_range at the next sync") {
    auto cuda = [](const Tensor& t) { return t.to(Device::CUDA); };
    for (DType it : kIndexTypes)
        for (int64_t bad : {-1, 5, 1000}) {
            CAPTURE(bad);
            std::vector<int64_t> v = {0, 1, bad, 2};
            Tensor index = cuda(copy(Tensor::from_vector(v, {4}), it));
            Tensor x = cuda(Tensor::ones({5, 3})), src = cuda(Tensor::ones({4, 3}));
            Tensor index2d = cuda(copy(Tensor::from_vector(v, {4, 1}), it));
            Tensor src2d = cuda(Tensor::ones({4, 1}));
            CHECK_THROWS_AS(gather(x, 0, index2d).to(Device::CPU), std::out_of_range);
            CHECK_THROWS_AS(scatter_add(x, 0, index2d, src2d).to(Device::CPU), std::out_of_range);
            CHECK_THROWS_AS(index_select(x, 0, index).to(Device::CPU), std::out_of_range);
            CHECK_THROWS_AS(index_add(x, 0, index, src).to(Device::CPU), std::out_of_range);
            CHECK_THROWS_AS(one_hot(index, 5).to(Device::CPU), std::out_of_range);
            CHECK_THROWS_AS(bincount(index, 5).to(Device::CPU), std::out_of_range);
            CHECK_THROWS_AS(embedding(x, index).to(Device::CPU), std::out_of_range);
            // The flag was cleared when it was raised: the next good op syncs without error.
            CHECK_NOTHROW(index_select(x, 0, cuda(Tensor::from_vector(std::vector<int64_t>{4, 0}, {2})))
                              .to(Device::CPU));
        }
}

// ---- topk ----------------------------------------------------------------------------------------
TEST_CASE("cuda topk: k = 1, 2, 4, 8 (warp path) and larger k (sort path), rows of 8..1024, ties") {
    uint64_t seed = 300;
    for (int64_t R : {8, 9, 33, 100, 1024})
        for (int64_t k : {1, 2, 4, 8, 9, 30, 1024}) {
            if (k > R) continue;
            for (bool largest : {true, false}) {
                CAPTURE(R);
                CAPTURE(k);
                CAPTURE(largest);
                // Rows along the last dim (contiguous lines) and along dim 1 of a 3-d tensor (strided lines).
                Tensor x = randn_input({13, R}, ++seed);
                check_cuda_parity("topk last dim", [k, largest](const std::vector<Tensor>& in) {
                    ValuesIndices t = topk(in[0], k, -1, largest);
                    return std::vector<Tensor>{t.values, t.indices};
                }, {x});
                Tensor x3 = randn_input({3, R, 5}, ++seed);
                check_cuda_parity("topk dim 1 of 3-d", [k, largest](const std::vector<Tensor>& in) {
                    ValuesIndices t = topk(in[0], k, 1, largest);
                    return std::vector<Tensor>{t.values, t.indices};
                }, {x3});
                // Many ties: the lower index first, exactly as the CPU.
                check_same_bits("topk with ties", [k, largest](const std::vector<Tensor>& in) {
                    ValuesIndices t = topk(in[0], k, 1, largest);
                    return std::vector<Tensor>{t.values, t.indices};
                }, {tied_values({4, R, 3}, 5, ++seed)});
            }
        }
    // Other dtypes, dim 0, and a router-like shape (many rows of E logits).
    for (DType dt : {DType::Float64, DType::Int32, DType::Int64})
        check_same_bits("topk other dtypes", [](const std::vector<Tensor>& in) {
            ValuesIndices a = topk(in[0], 3, 0), b = topk(in[0], 12, 1, false);
            return std::vector<Tensor>{a.values, a.indices, b.values, b.indices};
        }, {tied_values({17, 40}, 9, 301, dt)});
    check_same_bits("topk router shape", [](const std::vector<Tensor>& in) {
        ValuesIndices t = topk(in[0], 2, -1);
        return std::vector<Tensor>{t.values, t.indices};
    }, {randn_input({4097, 8}, 302).detach()});
}

TEST_CASE("cuda topk and argsort: NaN ranks above everything, -0.0 ties with +0.0") {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    Tensor x = Tensor::from_vector({1.f, nan, -0.f, 0.f, -inf, inf, nan, -2.f, 0.f, 3.f, -0.f, 1.f}, {1, 12});
    for (bool flag : {true, false})
        check_same_bits("NaN and signed zeros", [flag](const std::vector<Tensor>& in) {
            ValuesIndices small = topk(in[0], 5, 1, flag), large = topk(in[0], 11, 1, flag);
            return std::vector<Tensor>{small.values, small.indices, large.values, large.indices,
                                       argsort(in[0], 1, flag)};
        }, {x});
}

// ---- argsort -------------------------------------------------------------------------------------
TEST_CASE("cuda argsort: stable with ties, ascending and descending, every dim, every dtype") {
    uint64_t seed = 400;
    const std::vector<Shape> shapes = {{1}, {7}, {5000}, {13, 33}, {3, 1000}, {4, 5, 6}, {2, 257, 3}};
    for (const Shape& shape : shapes)
        for (int64_t dim = 0; dim < (int64_t)shape.size(); ++dim)
            for (bool descending : {false, true})
                for (DType dt : {DType::Float32, DType::Float64, DType::Int32, DType::Int64}) {
                    CAPTURE(shape_str(shape));
                    CAPTURE(dim);
                    CAPTURE(descending);
                    // Few distinct values: ties everywhere, so stability decides most of the order.
                    check_same_bits("argsort with ties", [dim, descending](const std::vector<Tensor>& in) {
                        return std::vector<Tensor>{argsort(in[0], dim, descending)};
                    }, {tied_values(shape, 6, ++seed, dt)});
                }
    // Distinct random floats, negative numbers included.
    check_same_bits("argsort of randn", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{argsort(in[0], 1), argsort(in[0], 0, true)};
    }, {randn_input({37, 129}, 401).detach()});
    // The MoE dispatch: one long line of expert ids (int64, full-range keys), ascending.
    Generator gen(402);
    check_same_bits("argsort of expert ids", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{argsort(in[0])};
    }, {randint(0, 8, {8192}, gen)});
    // Extreme integers (the key transform's sign flip).
    check_same_bits("argsort of extreme ints", [](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{argsort(in[0]), argsort(in[0], -1, true)};
    }, {Tensor::from_vector(std::vector<int64_t>{INT64_MAX, -1, INT64_MIN, 0, 1, INT64_MIN, INT64_MAX}, {7})});
}

// ---- multinomial ---------------------------------------------------------------------------------
TEST_CASE("cuda multinomial: the CPU's samples from the same generator") {
    // Well-separated, unnormalised weights (a zero-weight class included), float32 and float64.
    for (DType dt : {DType::Float32, DType::Float64}) {
        Tensor probs = copy(Tensor::from_vector({0.1f, 0.f, 0.3f, 0.6f, 2.f, 1.f, 0.5f, 0.5f, 5.f, 0.f, 0.f, 1.f},
                                                {3, 4}),
                            dt);
        for (int64_t S : {1, 7, 1000}) {
            Generator cpu_gen(9), gpu_gen(9);
            Tensor on_cpu = multinomial(probs, S, cpu_gen);
            Tensor on_gpu = multinomial(probs.to(Device::CUDA), S, gpu_gen);
            CHECK(same_values(on_gpu.to(Device::CPU), on_cpu));
            CHECK(gpu_gen.offset() == cpu_gen.offset());
        }
    }
    // A 1-d distribution, many rows of random weights, and many classes.
    Generator g(10);
    Tensor rows = rand({300, 50}, g) + 0.01;
    for (const Tensor& probs : {Tensor::from_vector({0.2f, 0.5f, 0.3f}, {3}), rows}) {
        Generator cpu_gen(11), gpu_gen(11);
        Tensor on_cpu = multinomial(probs, 33, cpu_gen);
        Tensor on_gpu = multinomial(probs.to(Device::CUDA), 33, gpu_gen);
        CHECK(same_values(on_gpu.to(Device::CPU), on_cpu));
    }
}

TEST_CASE("cuda multinomial: a negative weight or a zero row is an error at the next sync") {
    Generator gen(12);
    Tensor negative = Tensor::from_vector({0.5f, -0.1f, 0.6f}, {1, 3}).to(Device::CUDA);
    Tensor zero_row = Tensor::from_vector({0.5f, 0.5f, 0.f, 0.f}, {2, 2}).to(Device::CUDA);
    CHECK_THROWS_WITH_AS(multinomial(negative, 4, gen).to(Device::CPU), doctest::Contains("multinomial: row"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(multinomial(zero_row, 4, gen).to(Device::CPU), doctest::Contains("sums to 0"), std::invalid_argument);
    CHECK_NOTHROW(multinomial(Tensor::ones({2, 2}).to(Device::CUDA), 4, gen).to(Device::CPU));
}

}  // TEST_SUITE("cuda")
