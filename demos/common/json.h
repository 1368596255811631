// demos/common/json.h: a tiny JSON value and writer, for runs/<demo>/metrics.json.
//
// Only what the demos need: build a value (null, bool, integer, number, string, array, object),
// print it. Objects keep their keys in insertion order, so metrics.json reads in the order the
// demo wrote it. Numbers are printed in the shortest form that reads back to the same double
// ("0.1", not "0.10000000000000001"); NaN and infinities, which JSON cannot hold, become null.
// Strings are escaped (quotes, backslashes, control characters); UTF-8 passes through.
//
//   mg::demo::Json m = mg::demo::Json::object();
//   m["accuracy"] = 0.9312;
//   m["utilization"] = mg::demo::Json::array({std::vector<double>{0.26, 0.24, 0.25, 0.25}});
//   m["config"]["epochs"] = 20;                 // m["config"] becomes an object on first use
//   mg::demo::write_json("runs/01_sentiment_moe/metrics.json", m);
//
// There is no parser: the demos write JSON, other tools (Python, jq) read it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace mg::demo {

class Json {
public:
    enum class Type { Null, Bool, Int, Number, String, Array, Object };

    Json() = default;                               // null
    Json(std::nullptr_t) {}
    Json(bool value) : type_(Type::Bool), bool_(value) {}
    template <typename T>
        requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
    Json(T value) : type_(Type::Int), int_(static_cast<int64_t>(value)) {}
    template <typename T>
        requires std::is_floating_point_v<T>
    Json(T value) : type_(Type::Number), number_(static_cast<double>(value)) {}
    Json(const char* value) : type_(Type::String), string_(value) {}
    Json(std::string value) : type_(Type::String), string_(std::move(value)) {}
    // A std::vector of anything a Json can be made from becomes an array.
    template <typename T>
    Json(const std::vector<T>& values) : type_(Type::Array) {
        for (const T& v : values) array_.emplace_back(v);
    }
    // {"a", 1} style pairs are not accepted here (ambiguous with arrays): use object() and [].

    static Json array(std::initializer_list<Json> items = {});
    static Json object();
    // An object from string-keyed entries, in the given order.
    static Json object(std::initializer_list<std::pair<std::string, Json>> entries);

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }
    bool is_object() const { return type_ == Type::Object; }
    bool is_array() const { return type_ == Type::Array; }

    // Object access: inserts a null member when the key is new. A null value becomes an empty
    // object first, so m["config"]["epochs"] = 20 works. Throws std::logic_error on other types.
    Json& operator[](const std::string& key);
    Json& operator[](const char* key) { return (*this)[std::string(key)]; }
    // The member with this key, or nullptr (objects only; nullptr for other types too).
    const Json* find(const std::string& key) const;
    // Array access. push_back turns a null value into an array first.
    Json& push_back(Json value);
    const Json& at(size_t index) const;
    size_t size() const;  // elements of an array, members of an object, 0 otherwise

    // Scalars back out (throw std::logic_error on the wrong type; as_number accepts Int too).
    bool as_bool() const;
    int64_t as_int() const;
    double as_number() const;
    const std::string& as_string() const;
    const std::vector<std::pair<std::string, Json>>& members() const { return object_; }

    // The JSON text. indent > 0: pretty-printed, one member per line, arrays of scalars kept on
    // one line; indent == 0: everything on one line. Ends without a newline.
    std::string dump(int indent = 2) const;

private:
    void dump_to(std::string& out, int indent, int depth) const;

    Type type_ = Type::Null;
    bool bool_ = false;
    int64_t int_ = 0;
    double number_ = 0;
    std::string string_;
    std::vector<Json> array_;
    std::vector<std::pair<std::string, Json>> object_;  // insertion order
};

// The JSON form of a string, quotes included: json_escape("a\"b") == "\"a\\\"b\"".
std::string json_escape(const std::string& text);
// The shortest decimal text that reads back to `value` ("0.1", "1e-07", "3"); "null" for NaN/inf.
std::string json_number(double value);

// Writes value.dump(2) plus a newline to `path`, creating the parent folders. Throws
// std::runtime_error naming the path when the file cannot be written.
void write_json(const std::string& path, const Json& value);

}  // namespace mg::demo
