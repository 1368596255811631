// The doctest runner for the whole suite: `make test` runs it. doctest flags work, e.g.
//   build/tests/moegrad_tests -tc="gradcheck*"      (only the gradient checks)
//   build/tests/moegrad_tests -ltc                  (list the test cases)
//   build/tests/moegrad_tests -ts=cuda              (only the CUDA tests)
//
// The CUDA tests form the test suite "cuda". Without a usable GPU (any failure of the device
// query counts) they are left out, and one line says why.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest.h>

#include <cstdio>

#include "engine/backend.h"

int main(int argc, char** argv) {
    doctest::Context context;
    if (!mg::device_available(mg::Device::CUDA)) {
        std::printf("CUDA tests skipped: %s\n", mg::cuda_unavailable_reason());
        context.addFilter("test-suite-exclude", "cuda");
    }
    context.applyCommandLine(argc, argv);
    return context.run();
}
