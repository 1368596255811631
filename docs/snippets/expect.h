// docs/snippets/expect.h: the one check every snippet uses. EXPECT(cond) prints the failing
// condition with its line and makes main() return 1, so `make docs-check` fails loudly when a
// page's code no longer does what the page says.
#pragma once
#include <cstdio>

#define EXPECT(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond);     \
            return 1;                                                                   \
        }                                                                               \
    } while (0)
