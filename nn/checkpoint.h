// nn/checkpoint.h: checkpoints in the safetensors format, readable by PyTorch and Hugging Face tools.
//
// A safetensors file is
//   [8 bytes: N, the header length, unsigned little-endian]
//   [N bytes: a JSON object {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]}, ...,
//              "__metadata__": {"key": "value", ...}}, padded with spaces]
//   [the data: each tensor's bytes, row-major, little-endian, at [b, e) from the start of the data]
// docs/nn/checkpoints.md walks through it byte by byte.
//
// Two layers:
//   save_safetensors / load_safetensors: named tensors + string metadata, nothing else;
//   save_checkpoint / load_checkpoint:   a model, optionally its optimizer, and the training
//                                        position (step, generator, data order), so that a run
//                                        resumed from a checkpoint continues bitwise as if never
//                                        stopped.
// Writes go to "<path>.tmp" in the same folder and are renamed into place, so a crash never leaves
// a half-written checkpoint under the real name. Loads validate everything (header, JSON, dtypes,
// shapes, offsets, names) before changing any tensor, and throw std::runtime_error saying what is
// wrong.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/random.h"
#include "engine/tensor.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace mg::nn {

// ---- the raw format ------------------------------------------------------------------------------
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct SafetensorsFile {
    NamedTensors tensors;                          // CPU tensors, in the order of their data
    std::map<std::string, std::string> metadata;   // "__metadata__"
    // The tensor called `name`, or an undefined Tensor.
    Tensor find(const std::string& name) const;
};

// Tensors on any device; names unique and non-empty. The data is written in the given order.
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
SafetensorsFile load_safetensors(const std::filesystem::path& path);

// ---- checkpoints -------------------------------------------------------------------------------------
struct TrainingState {
    int64_t step = 0;                                          // optimizer steps taken
    std::optional<Generator::State> generator = std::nullopt;  // the run's main generator (data order)
    int64_t data_position = 0;                                 // e.g. the next batch within the epoch
    std::map<std::string, Generator::State> generators = {};   // further named generators, if any
    std::map<std::string, std::string> metadata = {};          // free-form; keys not reserved
};

// The model's parameters and buffers by their dotted names (what a checkpoint stores for it).
NamedTensors state_dict(const Module& model);

// Tensor names: the model's parameters and buffers as named_parameters()/named_buffers() name them;
// the optimizer's state as "optimizer.<param index>.<buffer>" and "optimizer.<i>.step".
// __metadata__: "format", "step", "data_position", "generator.seed"/"generator.offset",
// "generators.<name>.seed"/".offset", "optimizer.type"/"optimizer.lr"/"optimizer.num_params",
// "extra_state.<module path>.<key>" (e.g. a Dropout's generator), and the free-form metadata.
void save_checkpoint(const std::filesystem::path& path, const Module& model, const Optimizer* optimizer = nullptr,
                     const TrainingState& state = {});

// Loads into `model` (and `optimizer`, when given: the file must then hold its state) and returns
// the training state. Every tensor the model has must be in the file with the same shape and
// dtype, and the file may hold no other model tensors (as torch's strict=True). On any error
// nothing is changed.
TrainingState load_checkpoint(const std::filesystem::path& path, Module& model, Optimizer* optimizer = nullptr);

}  // namespace mg::nn
