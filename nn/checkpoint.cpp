// nn/checkpoint.cpp: the safetensors reader and writer, a minimal JSON parser/writer for its
// header, and checkpoints (model + optimizer + training position) built on them.
//
// Reading order, so that a bad file never changes anything:
//   1. read the whole file; check the 8-byte header length against the file size;
//   2. parse the header JSON; check every entry's dtype, shape and data_offsets, and that the
//      offsets tile the data exactly (no gap, no overlap, nothing past the end: as the reference
//      Rust implementation requires);
//   3. (checkpoints) match names, shapes and dtypes against the model and optimizer, parse the
//      metadata numbers;
//   4. only then copy into parameters, buffers and optimizer state.
#include "nn/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <bit>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "engine/autograd.h"

namespace mg::nn {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this writer copies memory as is");

namespace {

// ---- a minimal JSON value, parser and writer --------------------------------------------------------
struct Json {
    enum class Kind { Null, Bool, Number, String, Array, Object } kind = Kind::Null;
    bool boolean = false;
    bool is_integer = false;   // a number written without fraction or exponent that fits int64
    int64_t integer = 0;
    double number = 0;
    std::string string;
    std::vector<Json> array;
    std::vector<std::pair<std::string, Json>> object;  // in file order
};

class JsonParser {
public:
    explicit JsonParser(const std::string& text) : s_(text) {}

    Json parse_document() {
        Json value = parse_value(0);
        skip_space();
        if (pos_ != s_.size()) fail("unexpected text after the JSON value");
        return value;
    }

private:
    const std::string& s_;
    size_t pos_ = 0;

    [[noreturn]] void fail(const std::string& what) const {
        throw std::runtime_error("invalid JSON header at byte " + std::to_string(pos_) + ": " + what);
    }
    void skip_space() {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
    }
    char peek() {
        skip_space();
        if (pos_ >= s_.size()) fail("unexpected end of header");
        return s_[pos_];
    }
    void expect(char c) {
        if (peek() != c) fail(std::string("expected '") + c + "', found '" + s_[pos_] + "'");
        ++pos_;
    }
    bool consume_word(const char* word) {
        size_t n = std::strlen(word);
        if (s_.compare(pos_, n, word) != 0) return false;
        pos_ += n;
        return true;
    }

    Json parse_value(int depth) {
        if (depth > 64) fail("nested too deeply");
        Json v;
        char c = peek();
        if (c == '{') {
            v.kind = Json::Kind::Object;
            ++pos_;
            std::set<std::string> seen;
            if (peek() == '}') { ++pos_; return v; }
            while (true) {
                if (peek() != '"') fail("expected a string key");
                std::string key = parse_string();
                if (!seen.insert(key).second) fail("duplicate key \"" + key + "\"");
                expect(':');
                v.object.emplace_back(key, parse_value(depth + 1));
                char next = peek();
                ++pos_;
                if (next == '}') break;
                if (next != ',') fail("expected ',' or '}' in an object");
            }
        } else if (c == '[') {
            v.kind = Json::Kind::Array;
            ++pos_;
            if (peek() == ']') { ++pos_; return v; }
            while (true) {
                v.array.push_back(parse_value(depth + 1));
                char next = peek();
                ++pos_;
                if (next == ']') break;
                if (next != ',') fail("expected ',' or ']' in an array");
            }
        } else if (c == '"') {
            v.kind = Json::Kind::String;
            v.string = parse_string();
        } else if (consume_word("true")) {
            v.kind = Json::Kind::Bool;
            v.boolean = true;
        } else if (consume_word("false")) {
            v.kind = Json::Kind::Bool;
        } else if (consume_word("null")) {
            v.kind = Json::Kind::Null;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            parse_number(v);
        } else {
            fail(std::string("unexpected character '") + c + "'");
        }
        return v;
    }

    void parse_number(Json& v) {
        v.kind = Json::Kind::Number;
        size_t start = pos_;
        auto digits = [&] {
            size_t from = pos_;
            while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
            if (pos_ == from) fail("expected a digit");
        };
        if (s_[pos_] == '-') ++pos_;
        if (pos_ < s_.size() && s_[pos_] == '0') ++pos_;  // JSON: no leading zeros
        else digits();
        bool integral = true;
        if (pos_ < s_.size() && s_[pos_] == '.') { ++pos_; digits(); integral = false; }
        if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
            ++pos_;
            if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
            digits();
            integral = false;
        }
        std::string text = s_.substr(start, pos_ - start);
        v.number = std::strtod(text.c_str(), nullptr);
        if (integral) {
            errno = 0;
            long long n = std::strtoll(text.c_str(), nullptr, 10);
            if (errno == 0) { v.is_integer = true; v.integer = n; }
        }
    }

    static void append_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) out += (char)cp;
        else if (cp < 0x800) { out += (char)(0xC0 | (cp >> 6)); out += (char)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            out += (char)(0xE0 | (cp >> 12)); out += (char)(0x80 | ((cp >> 6) & 0x3F)); out += (char)(0x80 | (cp & 0x3F));
        } else {
            out += (char)(0xF0 | (cp >> 18)); out += (char)(0x80 | ((cp >> 12) & 0x3F));
            out += (char)(0x80 | ((cp >> 6) & 0x3F)); out += (char)(0x80 | (cp & 0x3F));
        }
    }
    uint32_t parse_hex4() {
        if (pos_ + 4 > s_.size()) fail("truncated \\u escape");
        uint32_t cp = 0;
        for (int i = 0; i < 4; ++i) {
            char h = s_[pos_++];
            cp <<= 4;
            if (h >= '0' && h <= '9') cp |= h - '0';
            else if (h >= 'a' && h <= 'f') cp |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') cp |= h - 'A' + 10;
            else fail("bad hex digit in \\u escape");
        }
        return cp;
    }
    std::string parse_string() {
        expect('"');
        std::string out;
        while (true) {
            if (pos_ >= s_.size()) fail("unterminated string");
            char c = s_[pos_++];
            if (c == '"') return out;
            if ((unsigned char)c < 0x20) fail("control character in a string");
            if (c != '\\') { out += c; continue; }
            if (pos_ >= s_.size()) fail("unterminated escape");
            char e = s_[pos_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = parse_hex4();
                    if (cp >= 0xD800 && cp <= 0xDBFF) {  // a UTF-16 surrogate pair
                        if (!consume_word("\\u")) fail("lone high surrogate");
                        uint32_t low = parse_hex4();
                        if (low < 0xDC00 || low > 0xDFFF) fail("bad low surrogate");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                        fail("lone low surrogate");
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: fail(std::string("bad escape '\\") + e + "'");
            }
        }
    }
};

std::string json_quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"') out += "\\\"";
        else if (c == '\\') out += "\\\\";
        else if ((unsigned char)c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", (unsigned)(unsigned char)c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

// ---- dtypes in the safetensors spelling -----------------------------------------------------------------
const char* safetensors_dtype(DType t) {
    switch (t) {
        case DType::Float32: return "F32";
        case DType::Float64: return "F64";
        case DType::Int32: return "I32";
        case DType::Int64: return "I64";
        case DType::Bool: return "BOOL";
    }
    return "?";
}
std::optional<DType> parse_safetensors_dtype(const std::string& s) {
    for (DType t : {DType::Float32, DType::Float64, DType::Int32, DType::Int64, DType::Bool})
        if (s == safetensors_dtype(t)) return t;
    return std::nullopt;
}

[[noreturn]] void file_error(const std::filesystem::path& path, const std::string& what) {
    throw std::runtime_error("safetensors file '" + path.string() + "': " + what);
}

// Writes `bytes` to "<path>.tmp" and renames it over `path` (atomic on POSIX file systems).
void write_atomically(const std::filesystem::path& path, const std::string& header, const std::vector<Tensor>& tensors) {
    std::filesystem::path tmp = path;
    tmp += ".tmp";
    try {
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            if (!out) file_error(path, "cannot open '" + tmp.string() + "' for writing");
            uint64_t n = header.size();
            unsigned char len[8];
            for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(n >> (8 * i));  // little-endian
            out.write((const char*)len, 8);
            out.write(header.data(), (std::streamsize)header.size());
            std::vector<char> bytes;
            for (const Tensor& t : tensors) {
                bytes.resize((size_t)t.numel() * dtype_size(t.dtype()));
                if (!bytes.empty()) to_host(t, bytes.data(), t.dtype());
                out.write(bytes.data(), (std::streamsize)bytes.size());
            }
            out.flush();
            if (!out) file_error(path, "write to '" + tmp.string() + "' failed (disk full?)");
        }
        std::filesystem::rename(tmp, path);
    } catch (...) {
        std::error_code ignored;
        std::filesystem::remove(tmp, ignored);
        throw;
    }
}

// Reads a whole file into memory.
std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) file_error(path, "cannot open for reading");
    std::ostringstream buf;
    buf << in.rdbuf();
    if (in.bad()) file_error(path, "read failed");
    return std::move(buf).str();
}

// An integer metadata value, or an error naming the key.
int64_t parse_int(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& file) {
    const std::string& s = meta.at(key);
    size_t used = 0;
    long long v = 0;
    try {
        v = std::stoll(s, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || used != s.size())
        throw std::runtime_error("checkpoint '" + file + "': metadata \"" + key + "\" is not an integer: \"" + s + "\"");
    return v;
}
uint64_t parse_uint(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& file) {
    const std::string& s = meta.at(key);
    if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos)
        throw std::runtime_error("checkpoint '" + file + "': metadata \"" + key + "\" is not an unsigned integer: \"" + s + "\"");
    try {
        return std::stoull(s);
    } catch (const std::exception&) {
        throw std::runtime_error("checkpoint '" + file + "': metadata \"" + key + "\" is out of range: \"" + s + "\"");
    }
}

}  // namespace

// ---- safetensors ---------------------------------------------------------------------------------------
Tensor SafetensorsFile::find(const std::string& name) const {
    for (const auto& [n, t] : tensors)
        if (n == name) return t;
    return Tensor();
}

void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
    std::set<std::string> names;
    std::string header = "{";
    if (!metadata.empty()) {
        header += "\"__metadata__\":{";
        bool first = true;
        for (const auto& [k, v] : metadata) {
            if (!first) header += ',';
            header += json_quote(k) + ":" + json_quote(v);
            first = false;
        }
        header += "}";
    }
    std::vector<Tensor> data;
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
        if (name.empty() || name == "__metadata__") file_error(path, "bad tensor name \"" + name + "\"");
        if (!names.insert(name).second) file_error(path, "tensor name \"" + name + "\" appears twice");
        if (!t.defined()) file_error(path, "tensor \"" + name + "\" is undefined");
        uint64_t bytes = (uint64_t)t.numel() * dtype_size(t.dtype());
        if (header.size() > 1) header += ",";
        header += json_quote(name) + ":{\"dtype\":\"" + safetensors_dtype(t.dtype()) + "\",\"shape\":[";
        for (size_t d = 0; d < t.shape().size(); ++d) {
            if (d) header += ',';
            header += std::to_string(t.shape()[d]);
        }
        header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
        offset += bytes;
        data.push_back(t.detach());
    }
    header += "}";
    // Pad with spaces so that the data starts at a multiple of 8 bytes (as the reference writer
    // does): then every tensor of an 8-byte type can be read in place, aligned.
    while ((8 + header.size()) % 8 != 0) header += ' ';
    write_atomically(path, header, data);
}

SafetensorsFile load_safetensors(const std::filesystem::path& path) {
    const std::string file = read_file(path);
    if (file.size() < 8) file_error(path, "only " + std::to_string(file.size()) + " bytes: too short for the 8-byte header length");
    uint64_t header_len = 0;
    for (int i = 0; i < 8; ++i) header_len |= (uint64_t)(unsigned char)file[i] << (8 * i);
    if (header_len > file.size() - 8)
        file_error(path, "header length " + std::to_string(header_len) + " runs beyond the file size " +
                             std::to_string(file.size()) + " (truncated or not a safetensors file)");
    const std::string header = file.substr(8, header_len);
    const uint64_t data_start = 8 + header_len, data_len = file.size() - data_start;

    Json root;
    try {
        root = JsonParser(header).parse_document();
    } catch (const std::runtime_error& e) {
        file_error(path, e.what());
    }
    if (root.kind != Json::Kind::Object) file_error(path, "the header is not a JSON object");

    struct Entry { std::string name; DType dtype; Shape shape; uint64_t begin, end; };
    std::vector<Entry> entries;
    SafetensorsFile result;
    for (const auto& [name, value] : root.object) {
        if (name == "__metadata__") {
            if (value.kind != Json::Kind::Object) file_error(path, "__metadata__ is not an object");
            for (const auto& [k, v] : value.object) {
                if (v.kind != Json::Kind::String) file_error(path, "__metadata__ value of \"" + k + "\" is not a string");
                result.metadata[k] = v.string;
            }
            continue;
        }
        const std::string where = "tensor \"" + name + "\": ";
        if (value.kind != Json::Kind::Object) file_error(path, where + "entry is not an object");
        const Json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
        for (const auto& [k, v] : value.object) {
            if (k == "dtype") dtype = &v;
            else if (k == "shape") shape = &v;
            else if (k == "data_offsets") offsets = &v;
            else file_error(path, where + "unknown field \"" + k + "\"");
        }
        if (!dtype || !shape || !offsets) file_error(path, where + "needs dtype, shape and data_offsets");
        Entry e{name, DType::Float32, {}, 0, 0};
        if (dtype->kind != Json::Kind::String) file_error(path, where + "dtype is not a string");
        auto dt = parse_safetensors_dtype(dtype->string);
        if (!dt) file_error(path, where + "unsupported dtype \"" + dtype->string + "\" (moegrad reads F32, F64, I32, I64, BOOL)");
        e.dtype = *dt;
        if (shape->kind != Json::Kind::Array) file_error(path, where + "shape is not an array");
        uint64_t numel = 1;
        for (const Json& d : shape->array) {
            if (d.kind != Json::Kind::Number || !d.is_integer || d.integer < 0)
                file_error(path, where + "shape holds something other than a non-negative integer");
            e.shape.push_back(d.integer);
            if (d.integer != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / (uint64_t)d.integer)
                file_error(path, where + "shape is too large");
            numel *= (uint64_t)d.integer;
        }
        if (offsets->kind != Json::Kind::Array || offsets->array.size() != 2) file_error(path, where + "data_offsets is not [begin, end]");
        for (const Json& o : offsets->array)
            if (o.kind != Json::Kind::Number || !o.is_integer || o.integer < 0)
                file_error(path, where + "data_offsets holds something other than a non-negative integer");
        e.begin = (uint64_t)offsets->array[0].integer;
        e.end = (uint64_t)offsets->array[1].integer;
        if (e.begin > e.end) file_error(path, where + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] run backwards");
        uint64_t expected = numel * dtype_size(e.dtype);
        if (e.end - e.begin != expected)
            file_error(path, where + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] hold " +
                                 std::to_string(e.end - e.begin) + " bytes, but " + dtype->string + " " + shape_str(e.shape) +
                                 " needs " + std::to_string(expected));
        if (e.end > data_len)
            file_error(path, where + "data_offsets end at " + std::to_string(e.end) + " but the data is only " +
                                 std::to_string(data_len) + " bytes (truncated file?)");
        entries.push_back(std::move(e));
    }
    // The offsets must tile [0, data_len) exactly: sorted by begin, each starts where the last ended.
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t cursor = 0;
    for (const Entry& e : entries) {
        if (e.begin != cursor)
            file_error(path, "tensor \"" + e.name + "\" starts at data offset " + std::to_string(e.begin) + " but the previous tensor ends at " +
                                 std::to_string(cursor) + (e.begin < cursor ? " (overlap)" : " (gap)"));
        cursor = e.end;
    }
    if (cursor != data_len)
        file_error(path, "the tensors cover " + std::to_string(cursor) + " bytes of data but the file holds " + std::to_string(data_len) +
                             " (extra bytes after the last tensor)");
    for (const Entry& e : entries) {
        const char* bytes = file.data() + data_start + e.begin;
        if (e.dtype == DType::Bool)
            for (uint64_t i = 0; i < e.end - e.begin; ++i)
                if ((unsigned char)bytes[i] > 1) file_error(path, "tensor \"" + e.name + "\": BOOL byte other than 0 or 1");
        result.tensors.emplace_back(e.name, from_host(bytes, e.dtype, e.shape, Device::CPU));
    }
    return result;
}

// ---- checkpoints -----------------------------------------------------------------------------------------
namespace {
const char* kFormat = "moegrad-checkpoint-1";
bool is_reserved_metadata(const std::string& key) {
    static const std::set<std::string> exact{"format", "step", "data_position", "generator.seed", "generator.offset"};
    auto starts = [&](const char* prefix) { return key.rfind(prefix, 0) == 0; };
    return exact.count(key) || starts("optimizer.") || starts("extra_state.") || starts("generators.");
}
}  // namespace

NamedTensors state_dict(const Module& model) {
    NamedTensors out = model.named_parameters();
    for (auto& nt : model.named_buffers()) out.push_back(nt);
    return out;
}

void save_checkpoint(const std::filesystem::path& path, const Module& model, const Optimizer* optimizer,
                     const TrainingState& state) {
    std::map<std::string, std::string> meta;
    for (const auto& [k, v] : state.metadata) {
        if (is_reserved_metadata(k))
            throw std::invalid_argument("save_checkpoint: metadata key \"" + k + "\" is reserved for the checkpoint itself");
        meta[k] = v;
    }
    meta["format"] = kFormat;
    meta["step"] = std::to_string(state.step);
    meta["data_position"] = std::to_string(state.data_position);
    if (state.generator) {
        meta["generator.seed"] = std::to_string(state.generator->seed);
        meta["generator.offset"] = std::to_string(state.generator->offset);
    }
    for (const auto& [name, g] : state.generators) {
        meta["generators." + name + ".seed"] = std::to_string(g.seed);
        meta["generators." + name + ".offset"] = std::to_string(g.offset);
    }
    for (const auto& [prefix, mod] : model.named_modules())
        for (const auto& [k, v] : mod->extra_state()) meta["extra_state." + prefix + k] = v;

    NamedTensors tensors = state_dict(model);
    for (const auto& [name, t] : tensors)
        if (name.rfind("optimizer.", 0) == 0)
            throw std::invalid_argument("save_checkpoint: model tensor \"" + name + "\" clashes with the optimizer's names");
    if (optimizer) {
        meta["optimizer.type"] = optimizer->type_name();
        std::ostringstream lr;
        lr.precision(17);
        lr << optimizer->lr();
        meta["optimizer.lr"] = lr.str();
        meta["optimizer.num_params"] = std::to_string(optimizer->params().size());
        for (const auto& [name, t] : optimizer->state_tensors()) tensors.emplace_back("optimizer." + name, t);
    }
    save_safetensors(path, tensors, meta);
}

TrainingState load_checkpoint(const std::filesystem::path& path, Module& model, Optimizer* optimizer) {
    const std::string file = path.string();
    auto fail = [&](const std::string& what) -> void { throw std::runtime_error("checkpoint '" + file + "': " + what); };
    SafetensorsFile st = load_safetensors(path);  // 1-2: the file itself is sound
    const auto& meta = st.metadata;
    if (meta.count("format") && meta.at("format") != kFormat)
        fail("format \"" + meta.at("format") + "\" is not " + kFormat);

    // 3a. the model's tensors: each present, same shape and dtype; nothing unexpected.
    std::map<std::string, Tensor> by_name;
    std::map<std::string, Tensor> optimizer_tensors;
    for (const auto& [name, t] : st.tensors) {
        if (name.rfind("optimizer.", 0) == 0) optimizer_tensors[name.substr(10)] = t;
        else by_name[name] = t;
    }
    NamedTensors targets = state_dict(model);
    std::set<std::string> wanted;
    for (const auto& [name, target] : targets) {
        wanted.insert(name);
        auto it = by_name.find(name);
        if (it == by_name.end()) fail("missing tensor \"" + name + "\" (" + shape_str(target.shape()) + ")");
        const Tensor& t = it->second;
        if (t.dtype() != target.dtype())
            fail("tensor \"" + name + "\" has dtype " + dtype_name(t.dtype()) + " but the model's is " + dtype_name(target.dtype()));
        if (t.shape() != target.shape())
            fail("tensor \"" + name + "\" has shape " + shape_str(t.shape()) + " but the model's is " + shape_str(target.shape()));
    }
    for (const auto& [name, t] : by_name)
        if (!wanted.count(name)) fail("unexpected tensor \"" + name + "\": the model has no parameter or buffer of that name");

    // 3b. the optimizer.
    double lr = 0;
    if (optimizer) {
        if (!meta.count("optimizer.type")) fail("holds no optimizer state, but an optimizer was given to load into");
        if (meta.at("optimizer.type") != optimizer->type_name())
            fail("holds " + meta.at("optimizer.type") + " state, but the optimizer is " + optimizer->type_name());
        if (!meta.count("optimizer.num_params") || parse_int(meta, "optimizer.num_params", file) != (int64_t)optimizer->params().size())
            fail("optimizer state is for " + (meta.count("optimizer.num_params") ? meta.at("optimizer.num_params") : std::string("?")) +
                 " parameters, but the optimizer has " + std::to_string(optimizer->params().size()));
        if (!meta.count("optimizer.lr")) fail("metadata lacks \"optimizer.lr\"");
        char* end = nullptr;
        lr = std::strtod(meta.at("optimizer.lr").c_str(), &end);
        if (end == meta.at("optimizer.lr").c_str() || *end != '\0') fail("metadata \"optimizer.lr\" is not a number");
        try {
            optimizer->check_state_tensors(optimizer_tensors);
        } catch (const std::invalid_argument& e) {
            fail(e.what());
        }
    }

    // 3c. the training position.
    TrainingState state;
    if (meta.count("step")) state.step = parse_int(meta, "step", file);
    if (meta.count("data_position")) state.data_position = parse_int(meta, "data_position", file);
    if (meta.count("generator.seed") != meta.count("generator.offset")) fail("generator state needs both seed and offset");
    if (meta.count("generator.seed"))
        state.generator = Generator::State{parse_uint(meta, "generator.seed", file), parse_uint(meta, "generator.offset", file)};
    for (const auto& [k, v] : meta) {
        if (k.rfind("generators.", 0) == 0) {
            const std::string rest = k.substr(11);
            size_t dot = rest.rfind('.');
            if (dot == std::string::npos || (rest.substr(dot) != ".seed" && rest.substr(dot) != ".offset"))
                fail("unexpected metadata \"" + k + "\"");
            const std::string name = rest.substr(0, dot);
            const std::string base = "generators." + name;
            if (!meta.count(base + ".seed") || !meta.count(base + ".offset")) fail("generator \"" + name + "\" needs both seed and offset");
            state.generators[name] = {parse_uint(meta, base + ".seed", file), parse_uint(meta, base + ".offset", file)};
        } else if (!is_reserved_metadata(k)) {
            state.metadata[k] = v;
        }
    }

    // 3d. modules' extra state (e.g. Dropout generators): every key the module has must be there.
    std::vector<std::pair<Module*, std::map<std::string, std::string>>> extra, previous;
    for (auto& [prefix, mod] : model.named_modules()) {
        auto current = mod->extra_state();
        if (current.empty()) continue;
        std::map<std::string, std::string> loaded;
        for (const auto& [k, v] : current) {
            auto it = meta.find("extra_state." + prefix + k);
            if (it == meta.end()) fail("missing metadata \"extra_state." + prefix + k + "\" (" + mod->type_name() + " state)");
            loaded[k] = it->second;
        }
        extra.emplace_back(mod, std::move(loaded));
        previous.emplace_back(mod, std::move(current));
    }

    // 4. apply. Extra state first, rolled back if a module refuses its values; then the tensors,
    // which can no longer fail for a reason the checks above did not cover.
    for (size_t i = 0; i < extra.size(); ++i) {
        try {
            extra[i].first->set_extra_state(extra[i].second);
        } catch (const std::exception& e) {
            for (size_t j = 0; j < i; ++j) previous[j].first->set_extra_state(previous[j].second);
            fail(std::string("extra state: ") + e.what());
        }
    }
    {
        NoGradGuard no_grad;
        for (const auto& [name, target] : targets) target.detach().copy_(by_name.at(name).to(target.device()));
    }
    if (optimizer) {
        optimizer->load_state_tensors(optimizer_tensors);
        optimizer->set_lr(lr);
    }
    return state;
}

}  // namespace mg::nn
