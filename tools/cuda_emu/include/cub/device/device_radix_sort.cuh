// cuda_emu: CUB's DeviceRadixSort::SortPairs as a host stable sort on the bit range
// [begin_bit, end_bit) of the keys (ascending, stable: what a LSD radix sort gives), with CUB's
// convention: d_temp_storage == nullptr only asks for the scratch size.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

namespace cub {
namespace emu_detail { void count_sort(); }
struct DeviceRadixSort {
    template <typename K, typename V, typename N>
    static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const K* keys_in, K* keys_out,
                                 const V* values_in, V* values_out, N num_items, int begin_bit = 0,
                                 int end_bit = sizeof(K) * 8, cudaStream_t = 0, bool = false) {
        static_assert(std::is_unsigned_v<K>, "the engine sorts unsigned keys");
        const size_t need = 64 + (size_t)num_items * 3;  // some scratch, like CUB
        if (d_temp_storage == nullptr) {
            temp_storage_bytes = need;
            return cudaSuccess;
        }
        if (temp_storage_bytes < need) return cudaErrorInvalidValue;
        if (begin_bit < 0 || end_bit > (int)sizeof(K) * 8 || begin_bit >= end_bit) return cudaErrorInvalidValue;
        const int bits = end_bit - begin_bit;
        const K mask = bits >= (int)sizeof(K) * 8 ? ~K(0) : (K)((K(1) << bits) - 1);
        auto digit = [&](K k) { return (K)((k >> begin_bit) & mask); };
        std::vector<size_t> order((size_t)num_items);
        std::iota(order.begin(), order.end(), size_t(0));
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return digit(keys_in[a]) < digit(keys_in[b]); });
        std::vector<K> k2((size_t)num_items);
        std::vector<V> v2((size_t)num_items);
        for (size_t i = 0; i < order.size(); ++i) k2[i] = keys_in[order[i]], v2[i] = values_in[order[i]];
        std::copy(k2.begin(), k2.end(), keys_out);
        std::copy(v2.begin(), v2.end(), values_out);
        return cudaSuccess;
    }
};
}  // namespace cub
