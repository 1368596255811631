// cpu/kernels.h: the CPU backend's registration functions, one per kernel file.
// engine/cpu/register.cpp calls them all from register_cpu_backend().
#pragma once

namespace mg::cpu {

void register_elementwise_kernels();  // kernels_elementwise.cpp
void register_reduce_kernels();       // kernels_reduce.cpp
void register_memory_kernels();       // kernels_memory.cpp: fill, arange, copy, random
void register_matmul_kernels();       // kernels_matmul.cpp: matmul (batched, strided) on the GEMM
void register_nn_kernels();           // kernels_nn.cpp: softmax, log_softmax, cross_entropy, layer_norm
void register_index_kernels();        // kernels_index.cpp: gather, scatter_add, index_select/add, one_hot, bincount
void register_sort_kernels();         // kernels_sort.cpp: topk, argsort, multinomial
void register_attention_kernels();    // kernels_attention.cpp: attention (tiled, online softmax) and its backward
void register_optim_kernels();        // kernels_optim.cpp: in-place optimizer updates (adam_update)

}  // namespace mg::cpu
