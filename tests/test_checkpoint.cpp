// tests/test_checkpoint.cpp: the safetensors reader/writer and checkpoints.
//   - round trips of every dtype, 0-d and empty tensors, and awkward metadata strings;
//   - a file written by the engine read back by hand as plain safetensors (header length, JSON,
//     offsets, raw little-endian bytes), as any other reader would;
//   - every kind of bad file (truncated, corrupted, mismatched) throws a message that says what is
//     wrong, and leaves the model untouched;
//   - the atomic write leaves no temporary file behind;
//   - training N steps, saving, loading into a fresh model and training M more gives bitwise the
//     same parameters as N + M steps straight.
// Set MOEGRAD_KEEP_CHECKPOINT=path to keep a checkpoint for reading from Python (docs/nn/checkpoints.md).
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "helpers.h"
#include "nn/checkpoint.h"
#include "nn/layers.h"

using namespace mg;
using namespace mg::nn;
namespace fs = std::filesystem;

namespace {
// A fresh folder under the system temp dir, removed at the end of the test.
struct TempDir {
    fs::path path;
    TempDir() {
        static int counter = 0;
        path = fs::temp_directory_path() / ("moegrad_ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
};

std::string read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), (std::streamsize)bytes.size());
}
uint64_t header_length(const std::string& file) {
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= (uint64_t)(unsigned char)file[i] << (8 * i);
    return n;
}
// The file with its header replaced (length field rewritten).
std::string with_header(const std::string& file, const std::string& header) {
    uint64_t old = header_length(file);
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = (char)(header.size() >> (8 * i));
    return out + header + file.substr(8 + old);
}
std::string replace_once(std::string s, const std::string& from, const std::string& to) {
    size_t at = s.find(from);
    REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
}

// A small model: FeedForward 4 -> 8 -> 3 (ReLU, dropout 0.2), plus a LayerNorm.
class Small : public Module {
public:
    explicit Small(Generator& gen) {
        ffn = register_module("ffn", std::make_shared<FeedForward>(
                                         FeedForwardConfig{.d_in = 4, .hidden = {8}, .d_out = 3, .activation = Activation::ReLU, .dropout = 0.2},
                                         gen));
        norm = register_module("norm", std::make_shared<LayerNorm>(3));
    }
    Tensor forward(const Tensor& x) { return (*norm)((*ffn)(x)); }
    std::shared_ptr<FeedForward> ffn;
    std::shared_ptr<LayerNorm> norm;
};

std::vector<std::vector<float>> snapshot(const Module& m) {
    std::vector<std::vector<float>> out;
    for (auto& [n, t] : m.named_parameters()) out.push_back(t.to_vector<float>());
    return out;
}
}  // namespace

TEST_CASE("checkpoint safetensors round trip: every dtype, 0-d and empty tensors, metadata") {
    TempDir dir;
    fs::path file = dir.path / "t.safetensors";
    NamedTensors tensors{
        {"f32", Tensor::from_vector({1.5f, -2.f, 3.25f, 0.f, 1e-30f, -7.f}, {2, 3})},
        {"f64", Tensor::from_vector(std::vector<double>{3.141592653589793, -1e300}, {2})},
        {"i32", Tensor::from_vector(std::vector<int32_t>{-5, 2147483647}, {2, 1})},
        {"i64", Tensor::from_vector(std::vector<int64_t>{-9007199254740993LL}, {})},  // 0-d, 2^53 + 1
        {"mask", Tensor::from_vector(std::vector<bool>{true, false, true}, {3})},
        {"empty", Tensor::zeros({0, 4})},
        {"view", Tensor::from_vector({1.f, 2.f, 3.f, 4.f}, {2, 2}).t()},  // non-contiguous: written row-major
    };
    std::map<std::string, std::string> meta{{"quote\"and\\slash", "line\nbreak\ttab"}, {"unicode", "élan ✓"}, {"empty", ""}};
    save_safetensors(file, tensors, meta);
    CHECK_FALSE(fs::exists(dir.path / "t.safetensors.tmp"));
    SafetensorsFile loaded = load_safetensors(file);
    CHECK(loaded.metadata == meta);
    REQUIRE(loaded.tensors.size() == tensors.size());
    for (const auto& [name, t] : tensors) {
        INFO(name);
        Tensor back = loaded.find(name);
        REQUIRE(back.defined());
        CHECK(back.dtype() == t.dtype());
        CHECK(back.shape() == t.shape());
        CHECK(back.to_vector<double>() == t.to_vector<double>());
    }
    CHECK(loaded.find("i64").to_vector<int64_t>()[0] == -9007199254740993LL);  // exact, not through double
    CHECK_FALSE(loaded.find("nope").defined());
    CHECK_THROWS_AS(save_safetensors(file, {{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({1})}}), std::runtime_error);
}

TEST_CASE("checkpoint file read back by hand as plain safetensors") {
    TempDir dir;
    fs::path file = dir.path / "plain.safetensors";
    Tensor w = Tensor::from_vector({1.f, 2.f, 3.f, -4.f, 5.5f, 6.f}, {2, 3});
    Tensor ids = Tensor::from_vector(std::vector<int64_t>{7, -1}, {2});
    save_safetensors(file, {{"w", w}, {"ids", ids}}, {{"note", "hi"}});
    std::string bytes = read_bytes(file);
    // 8 bytes of little-endian header length N, then N bytes of JSON, then the data.
    uint64_t n = header_length(bytes);
    REQUIRE(8 + n <= bytes.size());
    CHECK((8 + n) % 8 == 0);  // padded so the data is 8-byte aligned
    std::string header = bytes.substr(8, n);
    CHECK(header.front() == '{');
    CHECK(header.find("\"__metadata__\":{\"note\":\"hi\"}") != std::string::npos);
    CHECK(header.find("\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}") != std::string::npos);
    CHECK(header.find("\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]}") != std::string::npos);
    const char* data = bytes.data() + 8 + n;
    CHECK(bytes.size() - 8 - n == 40);
    float f[6];
    std::memcpy(f, data, 24);
    CHECK(f[3] == -4.f);
    CHECK(f[4] == 5.5f);
    // -1 as int64 little-endian: eight 0xFF bytes; 7: 07 00 ... 00.
    CHECK((unsigned char)data[24] == 7);
    CHECK((unsigned char)data[25] == 0);
    for (int i = 32; i < 40; ++i) CHECK((unsigned char)data[i] == 0xFF);
}

TEST_CASE("checkpoint bad files throw and say what is wrong") {
    TempDir dir;
    fs::path good = dir.path / "good.safetensors", bad = dir.path / "bad.safetensors";
    save_safetensors(good, {{"a", Tensor::ones({2, 2})}, {"b", Tensor::zeros({3}, DType::Int64)}});
    const std::string file = read_bytes(good);
    const std::string header = file.substr(8, header_length(file));
    auto expect_error = [&](const std::string& bytes, const std::string& message) {
        write_bytes(bad, bytes);
        INFO("expected: " << message);
        CHECK_THROWS_WITH_AS(load_safetensors(bad), doctest::Contains(message.c_str()), std::runtime_error);
    };
    expect_error(file.substr(0, file.size() - 3), "truncated");                  // data cut short
    expect_error(file.substr(0, 5), "too short");
    expect_error(file.substr(0, 8 + header.size() / 2), "beyond the file size");  // header cut
    std::string huge = file;
    huge[7] = 0x7f;
    expect_error(huge, "beyond the file size");
    expect_error(with_header(file, replace_once(header, "}}", "}")), "invalid JSON");
    expect_error(with_header(file, replace_once(header, "\"F32\"", "\"F16\"")), "unsupported dtype");
    expect_error(with_header(file, replace_once(header, "[2,2]", "[2,3]")), "needs");
    expect_error(with_header(file, replace_once(header, "[0,16]", "[0,17]")), "bytes");
    expect_error(with_header(file, replace_once(header, "[16,40]", "[8,32]")), "overlap");
    expect_error(with_header(file, replace_once(header, "[2,2]", "[2,-2]")), "non-negative");
    expect_error(with_header(file, replace_once(header, "\"shape\"", "\"shape\":[1],\"x\"")), "unknown field");
    expect_error(file + "extra", "extra bytes");
    expect_error(with_header(file, "[1,2]"), "not a JSON object");
    CHECK_THROWS_WITH_AS(load_safetensors(dir.path / "missing.safetensors"), doctest::Contains("cannot open"), std::runtime_error);
}

TEST_CASE("checkpoint mismatched checkpoints throw and change nothing") {
    TempDir dir;
    Generator gen(1);
    Small model(gen);
    Adam opt(model.parameters(), {.lr = 0.01});
    fs::path file = dir.path / "m.safetensors";
    save_checkpoint(file, model, &opt, {.step = 3});

    Generator other_gen(2);
    Small target(other_gen);
    Adam target_opt(target.parameters(), {.lr = 0.5});
    const auto before = snapshot(target);
    const auto dropout_before = target.ffn->dropouts[0]->extra_state();
    auto expect_untouched = [&](const fs::path& path, Optimizer* o, const std::string& message) {
        INFO("expected: " << message);
        CHECK_THROWS_WITH_AS(load_checkpoint(path, target, o), doctest::Contains(message.c_str()), std::runtime_error);
        CHECK(snapshot(target) == before);
        CHECK(target.ffn->dropouts[0]->extra_state() == dropout_before);
        CHECK(target_opt.lr() == 0.5);
    };
    // The same file is fine (this also checks the failures below are about the change made).
    {
        SafetensorsFile st = load_safetensors(file);
        auto edit = [&](const std::string& name, NamedTensors tensors, std::map<std::string, std::string> meta) {
            fs::path p = dir.path / (name + ".safetensors");
            save_safetensors(p, tensors, meta);
            return p;
        };
        NamedTensors missing, wrong_shape, wrong_dtype, extra = st.tensors;
        for (auto& [n, t] : st.tensors) {
            if (n != "norm.bias") missing.emplace_back(n, t);
            wrong_shape.emplace_back(n, n == "ffn.layers.0.weight" ? Tensor::zeros({4, 8}) : t);
            wrong_dtype.emplace_back(n, n == "norm.weight" ? Tensor::ones({3}, DType::Float64) : t);
        }
        extra.emplace_back("head.weight", Tensor::zeros({2}));
        expect_untouched(edit("missing", missing, st.metadata), &target_opt, "missing tensor \"norm.bias\"");
        expect_untouched(edit("shape", wrong_shape, st.metadata), &target_opt, "shape [4, 8]");
        expect_untouched(edit("dtype", wrong_dtype, st.metadata), &target_opt, "dtype float64");
        expect_untouched(edit("extra", extra, st.metadata), &target_opt, "unexpected tensor \"head.weight\"");
        auto meta = st.metadata;
        meta["step"] = "three";
        expect_untouched(edit("step", st.tensors, meta), &target_opt, "not an integer");
        meta = st.metadata;
        meta.erase("extra_state.ffn.dropouts.0.generator.offset");
        expect_untouched(edit("extra_state", st.tensors, meta), &target_opt, "extra_state.ffn.dropouts.0.generator.offset");
        meta = st.metadata;
        meta["extra_state.ffn.dropouts.0.generator.seed"] = "-1";
        expect_untouched(edit("bad_extra", st.tensors, meta), &target_opt, "extra state");
    }
    // Optimizer mismatches.
    SGD sgd(target.parameters(), {.lr = 0.5});
    expect_untouched(file, &sgd, "holds Adam state");
    Adam fewer(std::vector<Tensor>{target.parameters()[0]}, {.lr = 0.5});
    expect_untouched(file, &fewer, "parameters");
    fs::path no_opt = dir.path / "no_opt.safetensors";
    save_checkpoint(no_opt, model);
    expect_untouched(no_opt, &target_opt, "no optimizer state");
    // A corrupted file is caught by the safetensors layer, before any of the above.
    std::string bytes = read_bytes(file);
    write_bytes(dir.path / "cut.safetensors", bytes.substr(0, bytes.size() - 1));
    expect_untouched(dir.path / "cut.safetensors", &target_opt, "truncated");

    // And the good file loads: the model now equals the saved one.
    TrainingState st = load_checkpoint(file, target, &target_opt);
    CHECK(st.step == 3);
    CHECK(snapshot(target) == snapshot(model));
    CHECK(target_opt.lr() == 0.01);
    CHECK(target.ffn->dropouts[0]->extra_state() == model.ffn->dropouts[0]->extra_state());
    // Without an optimizer, the optimizer's tensors in the file are ignored.
    CHECK_NOTHROW(load_checkpoint(file, target));
}

TEST_CASE("checkpoint atomic write: no temporary file left, old file replaced, bad folder throws") {
    TempDir dir;
    Generator gen(3);
    Small model(gen);
    fs::path file = dir.path / "ckpt.safetensors";
    save_checkpoint(file, model, nullptr, {.step = 1});
    save_checkpoint(file, model, nullptr, {.step = 2, .metadata = {{"run", "test"}}});
    std::vector<std::string> names;
    for (auto& entry : fs::directory_iterator(dir.path)) names.push_back(entry.path().filename().string());
    CHECK(names == std::vector<std::string>{"ckpt.safetensors"});
    TrainingState st = load_checkpoint(file, model);
    CHECK(st.step == 2);
    CHECK(st.metadata == std::map<std::string, std::string>{{"run", "test"}});
    CHECK_THROWS_AS(save_checkpoint(dir.path / "no_such_dir" / "x.safetensors", model), std::runtime_error);
    CHECK_THROWS_AS(save_checkpoint(file, model, nullptr, {.metadata = {{"step", "5"}}}), std::invalid_argument);
}

TEST_CASE("checkpoint resume: N steps + save + load + M steps == N + M steps, bitwise") {
    // The data: 32 samples of (4 features -> 3 targets), made once from seed 100. Each epoch visits
    // them in an order shuffled by the run's generator `gen`, in batches of 8 (4 batches an
    // epoch). The training position is (gen's state at the start of the epoch, the next batch
    // index): resuming regenerates the epoch's order from that state and skips to the batch.
    // A second generator adds input noise; the Dropout layer has its own. All three are saved.
    Generator data_gen(100);
    const Tensor inputs = randn({32, 4}, data_gen);   // (32, 4)
    const Tensor targets = randn({32, 3}, data_gen);  // (32, 3)
    const int64_t batch = 8, batches_per_epoch = 4;
    const WarmupCosine schedule({.lr = 0.05, .min_lr = 0.005, .warmup_steps = 3, .total_steps = 12});

    struct Run {
        Generator init_gen{1}, gen{2}, noise{3};
        Small model{init_gen};
        AdamW opt{model.parameters(), {.lr = 0.05, .weight_decay = 0.01}};
        int64_t step = 0, position = 0;
        Generator::State epoch_start{2, 0};
        std::vector<int64_t> order;
    };
    auto shuffle = [&](Run& r) {  // Fisher-Yates with the run's generator
        r.epoch_start = r.gen.state();
        r.order.resize(32);
        for (int64_t i = 0; i < 32; ++i) r.order[i] = i;
        for (int64_t i = 31; i > 0; --i) std::swap(r.order[i], r.order[r.gen.randint(0, i + 1)]);
    };
    auto train = [&](Run& r, int steps) {
        for (int s = 0; s < steps; ++s) {
            if (r.position == 0) shuffle(r);
            std::vector<int64_t> idx(r.order.begin() + r.position * batch, r.order.begin() + (r.position + 1) * batch);
            Tensor index = Tensor::from_vector(idx, {batch});
            Tensor x = index_select(inputs, 0, index) + randn({batch, 4}, r.noise) * 0.01;
            Tensor y = index_select(targets, 0, index);
            Tensor diff = r.model.forward(x) - y;
            Tensor loss = mg::mean(diff * diff);
            r.opt.zero_grad();
            loss.backward();
            clip_grad_norm(r.model.parameters(), 1.0);
            schedule.apply(r.opt, r.step);
            r.opt.step();
            ++r.step;
            r.position = (r.position + 1) % batches_per_epoch;
        }
    };

    const int N = 6, M = 5;  // the save falls mid-epoch (epoch 2, batch 2)
    Run straight;
    train(straight, N + M);

    TempDir dir;
    fs::path file = dir.path / "resume.safetensors";
    {
        Run first;
        train(first, N);
        save_checkpoint(file, first.model, &first.opt,
                        {.step = first.step,
                         // at an epoch boundary the next epoch has not been shuffled yet
                         .generator = first.position == 0 ? first.gen.state() : first.epoch_start,
                         .data_position = first.position,
                         .generators = {{"noise", first.noise.state()}}});
    }
    Run resumed;  // a fresh process: same construction, then the checkpoint
    TrainingState st = load_checkpoint(file, resumed.model, &resumed.opt);
    CHECK(st.step == N);
    CHECK(st.data_position == N % batches_per_epoch);
    REQUIRE(st.generator.has_value());
    resumed.step = st.step;
    resumed.gen.set_state(*st.generator);
    resumed.noise.set_state(st.generators.at("noise"));
    resumed.position = st.data_position;
    if (resumed.position != 0) shuffle(resumed);  // the epoch's order, regenerated
    train(resumed, M);

    CHECK(snapshot(resumed.model) == snapshot(straight.model));  // bitwise
    for (size_t i = 0; i < straight.opt.state().size(); ++i) {
        CHECK(resumed.opt.state()[i].step == straight.opt.state()[i].step);
        for (const auto& [k, t] : straight.opt.state()[i].buffers)
            CHECK(resumed.opt.state()[i].buffers.at(k).to_vector<float>() == t.to_vector<float>());
    }
    // And the parameters did move (the test would pass trivially otherwise).
    Run untrained;
    CHECK(snapshot(untrained.model) != snapshot(straight.model));

    if (const char* keep = std::getenv("MOEGRAD_KEEP_CHECKPOINT")) fs::copy_file(file, keep, fs::copy_options::overwrite_existing);
}
