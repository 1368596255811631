// demos/common/json.cpp: the JSON value and its printer (see json.h).
#include "demos/common/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "demos/common/report.h"

namespace mg::demo {

namespace {
const char* type_name(Json::Type t) {
    switch (t) {
        case Json::Type::Null: return "null";
        case Json::Type::Bool: return "bool";
        case Json::Type::Int: return "integer";
        case Json::Type::Number: return "number";
        case Json::Type::String: return "string";
        case Json::Type::Array: return "array";
        case Json::Type::Object: return "object";
    }
    return "?";
}
[[noreturn]] void wrong_type(const char* what, Json::Type t) {
    throw std::logic_error(std::string("Json::") + what + ": value is a " + type_name(t));
}
}  // namespace

Json Json::array(std::initializer_list<Json> items) {
    Json j;
    j.type_ = Type::Array;
    j.array_.assign(items.begin(), items.end());
    return j;
}

Json Json::object() {
    Json j;
    j.type_ = Type::Object;
    return j;
}

Json Json::object(std::initializer_list<std::pair<std::string, Json>> entries) {
    Json j = object();
    for (const auto& [key, value] : entries) j[key] = value;
    return j;
}

Json& Json::operator[](const std::string& key) {
    if (type_ == Type::Null) type_ = Type::Object;
    if (type_ != Type::Object) wrong_type("operator[]", type_);
    for (auto& [k, v] : object_)
        if (k == key) return v;
    object_.emplace_back(key, Json());
    return object_.back().second;
}

const Json* Json::find(const std::string& key) const {
    if (type_ != Type::Object) return nullptr;
    for (const auto& [k, v] : object_)
        if (k == key) return &v;
    return nullptr;
}

Json& Json::push_back(Json value) {
    if (type_ == Type::Null) type_ = Type::Array;
    if (type_ != Type::Array) wrong_type("push_back", type_);
    array_.push_back(std::move(value));
    return array_.back();
}

const Json& Json::at(size_t index) const {
    if (type_ != Type::Array) wrong_type("at", type_);
    if (index >= array_.size())
        throw std::out_of_range("Json::at: index " + std::to_string(index) + " of an array of " +
                                std::to_string(array_.size()));
    return array_[index];
}

size_t Json::size() const {
    if (type_ == Type::Array) return array_.size();
    if (type_ == Type::Object) return object_.size();
    return 0;
}

bool Json::as_bool() const {
    if (type_ != Type::Bool) wrong_type("as_bool", type_);
    return bool_;
}
int64_t Json::as_int() const {
    if (type_ != Type::Int) wrong_type("as_int", type_);
    return int_;
}
double Json::as_number() const {
    if (type_ == Type::Int) return (double)int_;
    if (type_ != Type::Number) wrong_type("as_number", type_);
    return number_;
}
const std::string& Json::as_string() const {
    if (type_ != Type::String) wrong_type("as_string", type_);
    return string_;
}

std::string json_escape(const std::string& text) {
    std::string out = "\"";
    for (char ch : text) {
        unsigned char c = (unsigned char)ch;
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += ch;  // printable ASCII and UTF-8 bytes pass through
                }
        }
    }
    return out + "\"";
}

std::string json_number(double value) {
    if (!std::isfinite(value)) return "null";
    // std::to_chars without a precision gives the shortest text that reads back exactly.
    char buf[64];
    auto result = std::to_chars(buf, buf + sizeof buf, value);
    return std::string(buf, result.ptr);
}

void Json::dump_to(std::string& out, int indent, int depth) const {
    auto newline = [&](int level) {
        if (indent <= 0) return;
        out += '\n';
        out.append((size_t)(indent * level), ' ');
    };
    switch (type_) {
        case Type::Null: out += "null"; return;
        case Type::Bool: out += bool_ ? "true" : "false"; return;
        case Type::Int: out += std::to_string(int_); return;
        case Type::Number: out += json_number(number_); return;
        case Type::String: out += json_escape(string_); return;
        case Type::Array: {
            if (array_.empty()) { out += "[]"; return; }
            // Arrays of scalars (utilization per expert, a loss curve) stay on one line.
            bool flat = true;
            for (const Json& v : array_) flat = flat && v.type_ != Type::Array && v.type_ != Type::Object;
            out += '[';
            for (size_t i = 0; i < array_.size(); ++i) {
                if (i > 0) out += flat || indent <= 0 ? ", " : ",";
                if (!flat) newline(depth + 1);
                array_[i].dump_to(out, indent, depth + 1);
            }
            if (!flat) newline(depth);
            out += ']';
            return;
        }
        case Type::Object: {
            if (object_.empty()) { out += "{}"; return; }
            out += '{';
            for (size_t i = 0; i < object_.size(); ++i) {
                if (i > 0) out += indent <= 0 ? ", " : ",";
                newline(depth + 1);
                out += json_escape(object_[i].first);
                out += ": ";
                object_[i].second.dump_to(out, indent, depth + 1);
            }
            newline(depth);
            out += '}';
            return;
        }
    }
}

std::string Json::dump(int indent) const {
    std::string out;
    dump_to(out, indent, 0);
    return out;
}

void write_json(const std::string& path, const Json& value) { write_text_file(path, value.dump(2) + "\n"); }

}  // namespace mg::demo
