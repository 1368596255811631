// cuda/kernels.h: the CUDA backend's registration functions, one per kernel file, mirroring
// engine/cpu/kernels.h. engine/cuda/register.cu calls them all.
#pragma once

namespace mg::cuda {

void register_elementwise_kernels();  // kernels_elementwise.cu: unary, binary, where, compare, fused backward
void register_memory_kernels();       // kernels_memory.cu: copy (dtype cast, strided), fill, arange, random
void register_reduce_kernels();       // kernels_reduce.cu: sum, mean, max, min, argmax, logsumexp, cumsum
void register_nn_kernels();           // kernels_nn.cu: softmax, log_softmax, cross_entropy, layer_norm
void register_index_kernels();        // kernels_index.cu: gather, scatter_add, index_select/add, one_hot, bincount
void register_sort_kernels();         // kernels_sort.cu: topk, argsort, multinomial
void register_matmul_kernels();       // kernels_matmul.cu: matmul (batched, strided) on our SGEMM (gemm.cu)
void register_attention_kernels();    // kernels_attention.cu: attention (tiled, online softmax) and its backward
void register_optim_kernels();        // kernels_optim.cu: in-place optimizer updates (adam_update)
void register_grouped_kernels();      // kernels_grouped.cu: grouped_matmul (all experts in one launch) and its weight gradient

}  // namespace mg::cuda
