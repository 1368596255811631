// The doctest runner for the whole suite: `make test` runs it. doctest flags work, e.g.
//   build/tests/moegrad_tests -tc="gradcheck*"      (only the gradient checks)
//   build/tests/moegrad_tests -ltc                  (list the test cases)
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest.h>
