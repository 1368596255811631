// op_table.h: every op of the engine, listed once.
//
// OP(name, kind, differentiable)
//   kind Kernel    : the op runs a kernel; every compiled device registers one (engine/cpu/register.cpp,
//                    engine/cuda/register.cu). tests/test_op_table.cpp checks none is missing.
//   kind View      : no kernel; the result shares the input's storage (shape/strides/offset change).
//   kind Composite : no kernel of its own; written with other ops, so it runs on every device.
//   differentiable : has a backward, and a GRADCHECK test (tests/test_gradcheck_*.cpp) must hold a finite-difference
//                    check for it (the op-table test fails otherwise).
//
// To add an op: add a line here, declare it in engine/ops.h, write forward + backward in the
// matching engine/ops_*.cpp, a CPU kernel in engine/cpu/, a CUDA kernel in engine/cuda/, and tests
// (docs/engine/ops.md walks through a real example).
#pragma once
#include <cstdint>

namespace mg {

#define MG_OP_TABLE(OP)                                                        \
    /* elementwise, unary (engine/ops_elementwise.cpp) */                      \
    OP(neg, Kernel, true)                                                      \
    OP(abs, Kernel, true)                                                      \
    OP(exp, Kernel, true)                                                      \
    OP(log, Kernel, true)                                                      \
    OP(sqrt, Kernel, true)                                                     \
    OP(pow, Kernel, true)                                                      \
    OP(clamp, Kernel, true)                                                    \
    OP(relu, Kernel, true)                                                     \
    OP(gelu, Kernel, true)                                                     \
    OP(erf, Kernel, true)                                                      \
    OP(tanh, Kernel, true)                                                     \
    OP(sigmoid, Kernel, true)                                                  \
    OP(softplus, Kernel, true)                                                 \
    /* elementwise, binary and ternary, NumPy broadcasting */                  \
    OP(add, Kernel, true)                                                      \
    OP(sub, Kernel, true)                                                      \
    OP(mul, Kernel, true)                                                      \
    OP(div, Kernel, true)                                                      \
    OP(maximum, Kernel, true)                                                  \
    OP(where, Kernel, true)                                                    \
    OP(masked_fill, Composite, true)                                           \
    OP(eq, Kernel, false)                                                      \
    OP(ne, Kernel, false)                                                      \
    OP(lt, Kernel, false)                                                      \
    OP(le, Kernel, false)                                                      \
    OP(gt, Kernel, false)                                                      \
    OP(ge, Kernel, false)                                                      \
    OP(logical_and, Kernel, false)                                             \
    OP(logical_not, Kernel, false)                                             \
    /* fused backward passes (not differentiable themselves) */               \
    OP(relu_backward, Kernel, false)                                           \
    OP(gelu_backward, Kernel, false)                                           \
    /* reductions (engine/ops_reduce.cpp) */                                   \
    OP(sum, Kernel, true)                                                      \
    OP(mean, Kernel, true)                                                     \
    OP(max, Kernel, true)                                                      \
    OP(min, Kernel, true)                                                      \
    OP(argmax, Kernel, false)                                                  \
    OP(logsumexp, Kernel, true)                                                \
    OP(cumsum, Kernel, true)                                                   \
    /* linear algebra and neural-network ops (engine/ops_nn.cpp) */            \
    OP(matmul, Kernel, true)                                                   \
    OP(linear, Kernel, true)                                                   \
    OP(grouped_matmul, Kernel, true)                                           \
    OP(grouped_matmul_weight_grad, Kernel, false)                              \
    OP(softmax, Kernel, true)                                                  \
    OP(log_softmax, Kernel, true)                                              \
    OP(cross_entropy, Kernel, true)                                            \
    OP(layer_norm, Kernel, true)                                               \
    OP(layer_norm_backward, Kernel, false)                                     \
    OP(embedding, Composite, true)                                             \
    OP(dropout, Composite, true)                                               \
    /* indexing, sorting, sampling (engine/ops_index.cpp) */                   \
    OP(gather, Kernel, true)                                                   \
    OP(scatter_add, Kernel, true)                                              \
    OP(index_select, Kernel, true)                                             \
    OP(index_add, Kernel, true)                                                \
    OP(one_hot, Kernel, false)                                                 \
    OP(bincount, Kernel, false)                                                \
    OP(topk, Kernel, true)                                                     \
    OP(argsort, Kernel, false)                                                 \
    OP(multinomial, Kernel, false)                                             \
    /* shape and memory (engine/ops_shape.cpp) */                              \
    OP(reshape, View, true)                                                    \
    OP(transpose, View, true)                                                  \
    OP(permute, View, true)                                                    \
    OP(expand, View, true)                                                     \
    OP(slice, View, true)                                                      \
    OP(copy, Kernel, true)                                                     \
    OP(concat, Composite, true)                                                \
    OP(split, Composite, true)                                                 \
    /* attention (engine/ops_attention.cpp) */                                 \
    OP(attention_reference, Composite, true)                                   \
    OP(attention, Kernel, true)                                                \
    OP(attention_backward, Kernel, false)                                      \
    /* activation checkpointing (engine/ops_checkpoint.cpp) */                 \
    OP(checkpoint, Composite, true)                                            \
    /* optimizer updates, in place (engine/ops_optim.cpp) */                  \
    OP(adam_update, Kernel, false)                                             \
    /* creation and random numbers (engine/ops_create.cpp) */                  \
    OP(fill, Kernel, false)                                                    \
    OP(arange, Kernel, false)                                                  \
    OP(rand_uniform, Kernel, false)                                            \
    OP(rand_normal, Kernel, false)

enum class OpKind : uint8_t { Kernel, View, Composite };

enum class OpId : uint16_t {
#define MG_OP_ENUM(name, kind, grad) name,
    MG_OP_TABLE(MG_OP_ENUM)
#undef MG_OP_ENUM
};

#define MG_OP_COUNT_ONE(name, kind, grad) +1
constexpr int kNumOps = 0 MG_OP_TABLE(MG_OP_COUNT_ONE);
#undef MG_OP_COUNT_ONE

struct OpInfo {
    const char* name;
    OpKind kind;
    bool differentiable;
};

// The table as data, indexed by OpId.
const OpInfo& op_info(OpId op);
inline const char* op_name(OpId op) { return op_info(op).name; }

}  // namespace mg
