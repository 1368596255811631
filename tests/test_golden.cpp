// Golden test against PyTorch, the llm.c way: tests/ref/make_golden.py builds a small composite
// graph in float64 (linear, layer_norm, gelu, cross_entropy with an ignored target, softmax,
// gather, topk, batched matmul), and writes its inputs, outputs and every gradient to
// tests/ref/golden_mlp.txt. This test reads the inputs, rebuilds the same graph with the engine
// and compares every output and gradient to ~1e-10 relative. PyTorch is needed only to regenerate:
//     /usr/bin/python3 tests/ref/make_golden.py > tests/ref/golden_mlp.txt
#include <fstream>
#include <map>
#include <sstream>

#include "tests/helpers.h"

using namespace mg;

namespace {
constexpr const char* kRegenerate =
    "regenerate the reference with: /usr/bin/python3 tests/ref/make_golden.py > tests/ref/golden_mlp.txt";
constexpr int kGoldenVersion = 1;

// One file holds named tensors: "<name> <dtype> <shape> <values...>" per line (make_golden.py).
struct Golden {
    std::map<std::string, Tensor> tensors;

    const Tensor& operator[](const std::string& name) const {
        auto it = tensors.find(name);
        if (it == tensors.end())
            throw std::runtime_error("golden file has no tensor '" + name + "'; " + kRegenerate);
        return it->second;
    }
    // An input as a float64 leaf that requires grad.
    Tensor param(const std::string& name) const {
        Tensor t = (*this)["in." + name].clone();
        t.set_requires_grad(true);
        return t;
    }
};

std::string golden_path() {
    // The tests run from the repository root (make test); fall back to this file's folder.
    std::string path = "tests/ref/golden_mlp.txt";
    if (std::ifstream(path).good()) return path;
    std::string here = __FILE__;
    return here.substr(0, here.find_last_of('/') + 1) + "ref/golden_mlp.txt";
}

Golden load_golden(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path + "; " + kRegenerate);
    Golden golden;
    std::string line;
    bool header = false;
    int line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.empty() || line[0] == '#') continue;
        std::istringstream fields(line);
        if (!header) {
            std::string magic;
            int version = 0;
            fields >> magic >> version;
            if (magic != "moegrad-golden" || version != kGoldenVersion)
                throw std::runtime_error(path + ": expected header 'moegrad-golden " + std::to_string(kGoldenVersion) +
                                         "', got '" + line + "'; " + kRegenerate);
            header = true;
            continue;
        }
        std::string name, dtype, shape_text;
        fields >> name >> dtype >> shape_text;
        Shape shape;
        if (shape_text != "scalar") {
            std::istringstream dims(shape_text);
            for (std::string d; std::getline(dims, d, ',');) shape.push_back(std::stoll(d));
        }
        std::vector<std::string> words;
        for (std::string w; fields >> w;) words.push_back(w);
        if ((int64_t)words.size() != numel_of(shape))
            throw std::runtime_error(path + ":" + std::to_string(line_no) + ": " + name + " has " +
                                     std::to_string(words.size()) + " values for shape " + shape_str(shape));
        if (dtype == "float64") {
            std::vector<double> v;
            for (const std::string& w : words) v.push_back(std::strtod(w.c_str(), nullptr));  // exact for %.17g
            golden.tensors[name] = Tensor::from_vector(v, shape);
        } else if (dtype == "int64") {
            std::vector<int64_t> v;
            for (const std::string& w : words) v.push_back(std::stoll(w));
            golden.tensors[name] = Tensor::from_vector(v, shape);
        } else {
            throw std::runtime_error(path + ":" + std::to_string(line_no) + ": unknown dtype " + dtype);
        }
    }
    if (!header) throw std::runtime_error(path + " is empty; " + kRegenerate);
    return golden;
}

// |engine - torch| <= 1e-10 * |torch| + 1e-13, element by element.
void check_close(const std::string& what, const Tensor& engine, const Tensor& torch_ref) {
    CAPTURE(what);
    INFO("on a mismatch, check the op first; if the reference itself is stale, " << kRegenerate);
    REQUIRE(engine.defined());
    REQUIRE(engine.shape() == torch_ref.shape());
    const double score = mg::test::closeness(engine, torch_ref, 1e-10, 1e-13);
    CHECK_MESSAGE(score <= 1.0, what << ": worst |engine - torch| / (1e-13 + 1e-10 |torch|) = " << score);
}
}  // namespace

TEST_CASE("golden: MLP with layer_norm, cross_entropy, softmax, gather, topk and bmm matches PyTorch") {
    const Golden golden = load_golden(golden_path());
    std::map<std::string, Tensor> p;
    for (const char* name : {"x", "W1", "b1", "ln_w", "ln_b", "W2", "b2", "A", "B"}) p[name] = golden.param(name);
    const Tensor& V = golden["in.V"];
    const Tensor& targets = golden["in.targets"];
    const Tensor& idx = golden["in.idx"];

    // The same graph as make_golden.py, line for line.
    Tensor h = matmul(p["x"], p["W1"]) + p["b1"];                  // (4, 8)
    Tensor hn = layer_norm(h, p["ln_w"], p["ln_b"], 1e-5);         // (4, 8)
    Tensor a = gelu(hn);                                           // (4, 8)
    Tensor logits = matmul(a, p["W2"]) + p["b2"];                  // (4, 5)
    Tensor ce = cross_entropy(logits, targets, -100);              // 0-d, mean over 3 rows
    Tensor probs = softmax(logits, -1);                            // (4, 5)
    Tensor picked = gather(logits, 1, idx);                        // (4, 2)
    ValuesIndices top = topk(h, 3, -1);                            // (4, 3)
    Tensor bmm = matmul(p["A"], p["B"]);                           // (2, 3, 2)
    Tensor loss = ce + sum(probs * V) + 0.5 * sum(picked) + 0.1 * sum(top.values) + mean(bmm * bmm);
    loss.backward();

    check_close("out.h", h, golden["out.h"]);
    check_close("out.hn", hn, golden["out.hn"]);
    check_close("out.logits", logits, golden["out.logits"]);
    check_close("out.ce", ce, golden["out.ce"]);
    check_close("out.probs", probs, golden["out.probs"]);
    check_close("out.picked", picked, golden["out.picked"]);
    check_close("out.top_values", top.values, golden["out.top_values"]);
    CHECK(top.indices.to_vector<int64_t>() == golden["out.top_indices"].to_vector<int64_t>());
    check_close("out.bmm", bmm, golden["out.bmm"]);
    check_close("out.loss", loss, golden["out.loss"]);
    for (auto& [name, t] : p) check_close("grad." + name, t.grad(), golden["grad." + name]);
}

TEST_CASE("golden: the reference file is versioned and complete") {
    const Golden golden = load_golden(golden_path());
    for (const char* name : {"in.x", "in.targets", "out.loss", "grad.x", "grad.ln_w", "grad.B"})
        CHECK_MESSAGE(golden.tensors.count(name) == 1, name << " missing; " << kRegenerate);
    // The ignored target really is ignored: -100 in row 2.
    CHECK(golden["in.targets"].to_vector<int64_t>()[2] == -100);
}
