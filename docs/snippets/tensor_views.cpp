// docs/engine/tensor.md: shape, strides and offset of views, and when data is copied.
// Built and run by `make docs-check`; returns non-zero if the engine disagrees with the page.
#include <cstdio>

#include "engine/ops.h"
#include "docs/snippets/expect.h"

using namespace mg;

int main() {
    // A (3, 4) tensor holding 0..11. Row-major: stepping one row skips 4 elements.
    Tensor a = Tensor::arange(0, 12, 1, DType::Float32).reshape({3, 4});
    EXPECT(a.strides() == (Shape{4, 1}));
    // element [i][j] lives at offset + i*4 + j*1 of the storage
    EXPECT(a.at({2, 1}) == 9);

    // transpose swaps shape and strides: no data moves.
    Tensor t = a.t();
    EXPECT(t.shape() == (Shape{4, 3}));
    EXPECT(t.strides() == (Shape{1, 4}));
    EXPECT(t.storage() == a.storage());
    EXPECT(!t.is_contiguous());
    EXPECT(t.at({1, 2}) == a.at({2, 1}));

    // permute is the general form: dims (2, 0, 1) of a (2, 3, 4) tensor
    Tensor b = Tensor::arange(0, 24, 1, DType::Float32).reshape({2, 3, 4});
    Tensor p = b.permute({2, 0, 1});
    EXPECT(p.shape() == (Shape{4, 2, 3}));
    EXPECT(p.strides() == (Shape{1, 12, 4}));

    // expand repeats a size-1 dimension by giving it stride 0: (3, 1) -> (3, 4)
    Tensor col = Tensor::from_vector({10.f, 20.f, 30.f}, {3, 1});
    Tensor e = col.expand({3, 4});
    EXPECT(e.strides() == (Shape{1, 0}));
    EXPECT(e.at({2, 3}) == 30);

    // slice(dim, start, end, step) moves the offset and multiplies the stride
    Tensor s = a.slice(1, 1, 4, 2);  // columns 1 and 3
    EXPECT(s.shape() == (Shape{3, 2}));
    EXPECT(s.strides() == (Shape{4, 2}));
    EXPECT(s.offset() == 1);
    EXPECT(s.at({2, 1}) == 11);

    // Views share storage: a write through the slice is seen by the base.
    s.fill_(-1);
    EXPECT(a.at({0, 1}) == -1 && a.at({0, 3}) == -1 && a.at({0, 0}) == 0);

    // contiguous() copies only when the layout is not already row-major.
    EXPECT(a.contiguous().same(a));
    Tensor tc = t.contiguous();
    EXPECT(tc.storage() != a.storage());
    EXPECT(tc.strides() == (Shape{3, 1}));

    // reshape is free on contiguous data and copies otherwise.
    EXPECT(a.reshape({6, 2}).storage() == a.storage());
    EXPECT(t.reshape({12}).storage() != a.storage());

    std::printf("%s\n", s.to_string().c_str());
    return 0;
}
