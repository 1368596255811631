// Walks the op table (engine/op_table.h): every kernel op has a kernel on every compiled
// device, and every differentiable op has a finite-difference gradient check.
#include "engine/backend.h"
#include "tests/helpers.h"

using namespace mg;

TEST_CASE("op table: every kernel op has a CPU kernel, every differentiable op a gradient check") {
    CHECK(kNumOps > 50);
    std::set<std::string> names;
    for (int i = 0; i < kNumOps; ++i) {
        OpId op = (OpId)i;
        const OpInfo& info = op_info(op);
        std::string name = info.name;
        CAPTURE(name);
        CHECK(names.insert(info.name).second);  // listed once
        if (info.kind == OpKind::Kernel) {
            CHECK_MESSAGE(has_kernel(Device::CPU, op), "no CPU kernel registered");
#ifdef MG_CUDA
            // Registered whenever the backend is compiled, GPU or not (engine/cuda/register.cu),
            // so this runs in CI too.
            CHECK_MESSAGE(has_kernel(Device::CUDA, op), "no CUDA kernel registered");
#endif
        } else {
            CHECK_FALSE(has_kernel(Device::CPU, op));  // views and composites run no kernel of their own
            CHECK_FALSE(has_kernel(Device::CUDA, op));
        }
        if (info.differentiable)
            CHECK_MESSAGE(mg::test::gradchecked_ops().count(info.name) == 1,
                          "differentiable op without a GRADCHECK test");
    }
}

TEST_CASE("op table: a gradient check names only real, differentiable ops") {
    std::set<std::string> differentiable;
    for (int i = 0; i < kNumOps; ++i)
        if (op_info((OpId)i).differentiable) differentiable.insert(op_info((OpId)i).name);
    for (const std::string& name : mg::test::gradchecked_ops()) {
        CAPTURE(name);
        CHECK(differentiable.count(name) == 1);
    }
}

TEST_CASE("a kernel op without a registered kernel fails loudly, naming the op") {
    // Ask for an op on a device that is not available in a CPU-only build.
    if (!device_available(Device::CUDA)) {
        CHECK_THROWS_WITH_AS(Tensor::zeros({2}, DType::Float32, Device::CUDA), doctest::Contains("cuda"),
                             std::runtime_error);
    }
}
