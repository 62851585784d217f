// Config nodes with key paths, and the three visitors that every options struct is walked by:
// ConfigReader (YAML -> struct, with type, bound and unknown-key errors), JsonWriter (struct ->
// resolved JSON) and DocWriter (struct -> parameter docs for `clrun list`).
//
// An options struct declares each parameter once, with its default inline:
//   struct SgdOptions {
//     double lr = 0.01;  ///< learning rate
//     template <class V> void fields(V& v) { v("lr", lr, "learning rate", above(0)); }
//   };
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "clrun/core/error.hpp"

namespace clrun {

/// Where a config came from: the file, and which key paths were set with --set.
struct ConfigSource {
  std::string file;
  std::set<std::string> overridden;
};

/// A YAML node together with its key path ("train.optimizer.lr") and source, so every error can
/// say where it is: `configs/x.yaml:12:7: train.optimizer.lr: ...`.
class ConfigNode {
 public:
  ConfigNode(YAML::Node node, std::string path, std::shared_ptr<const ConfigSource> source);

  const YAML::Node& yaml() const { return node_; }
  const std::string& path() const { return path_; }
  bool present() const { return node_.IsDefined() && !node_.IsNull(); }
  bool is_map() const { return node_.IsMap(); }
  /// The child at `key`; absent children are valid nodes with present() == false.
  ConfigNode child(const std::string& key) const;
  ConfigNode element(std::size_t i) const;
  /// "file:line:col: path" (or "--set path" for overridden keys).
  std::string where() const;
  [[noreturn]] void fail(const std::string& message) const;
  /// Throws unless the node is a map (or absent); `what` describes the expected block.
  void expect_map(const std::string& what) const;
  /// Unknown keys (not in `known`) are errors with a did-you-mean and the list of known keys.
  void check_keys(const std::vector<std::string>& known) const;

 private:
  YAML::Node node_;
  std::string path_;
  std::shared_ptr<const ConfigSource> source_;
  int line_ = 0, column_ = 0;  ///< 1-based; an absent node points at its nearest present parent
};

/// Bounds and choices for a parameter; printed in docs and checked by ConfigReader.
struct Check {
  std::optional<double> min, max;
  bool min_exclusive = false;
  std::vector<std::string> choices;
  bool finite = true;  ///< .inf / .nan are errors unless a parameter explicitly allows them

  std::string describe() const;
  /// Empty when `x` is fine, else "must be ...".
  std::string violation(double x) const;
  std::string violation(const std::string& s) const;
};
Check at_least(double min);
Check above(double min);
Check in_range(double min, double max);
Check one_of(std::vector<std::string> choices);

// ---- decoding YAML values into C++ types, with errors naming the key path --------------------

template <class T>
struct Decoder;  // specialised below; custom types add their own specialisation

template <class T>
T decode(const ConfigNode& node) {
  return Decoder<T>::decode(node);
}

std::string yaml_scalar_text(const YAML::Node& node);

template <class T>
struct ScalarDecoder {
  static T decode(const ConfigNode& node, const char* expected) {
    if (!node.yaml().IsScalar()) node.fail(std::string("expected ") + expected + ", got a " +
                                           (node.yaml().IsMap() ? "map" : "list"));
    try {
      return node.yaml().as<T>();
    } catch (const YAML::Exception&) {
      node.fail(std::string("expected ") + expected + ", got '" + yaml_scalar_text(node.yaml()) +
                "'");
    }
  }
};
template <> struct Decoder<double> { static double decode(const ConfigNode& n) { return ScalarDecoder<double>::decode(n, "a number"); } };
template <> struct Decoder<bool> { static bool decode(const ConfigNode& n) { return ScalarDecoder<bool>::decode(n, "true or false"); } };
/// Strings must be valid UTF-8: they end up in JSON files (config.json, metrics.json).
template <> struct Decoder<std::string> { static std::string decode(const ConfigNode& n); };
template <> struct Decoder<int64_t> { static int64_t decode(const ConfigNode& n) { return ScalarDecoder<int64_t>::decode(n, "an integer"); } };
template <> struct Decoder<int> { static int decode(const ConfigNode& n) { return ScalarDecoder<int>::decode(n, "an integer"); } };
template <> struct Decoder<uint64_t> { static uint64_t decode(const ConfigNode& n) { return ScalarDecoder<uint64_t>::decode(n, "a non-negative integer"); } };
template <class T>
struct Decoder<std::vector<T>> {
  static std::vector<T> decode(const ConfigNode& node) {
    if (!node.yaml().IsSequence()) node.fail("expected a list, e.g. [1, 2]");
    std::vector<T> out;
    for (std::size_t i = 0; i < node.yaml().size(); ++i) out.push_back(Decoder<T>::decode(node.element(i)));
    return out;
  }
};

namespace detail {
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};

template <class T>
void check_value(const ConfigNode& node, const T& value, const Check& check) {
  std::string bad;
  if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    bad = check.violation(static_cast<double>(value));
  } else if constexpr (std::is_same_v<T, std::string>) {
    bad = check.violation(value);
  } else if constexpr (is_vector<T>::value) {
    for (std::size_t i = 0; i < value.size(); ++i) check_value(node.element(i), value[i], check);
  }
  if (!bad.empty()) {
    std::string shown = nlohmann::json(value).dump();
    if constexpr (std::is_floating_point_v<T>)
      if (!std::isfinite(value)) shown = node.yaml().Scalar();  // JSON would show null
    node.fail(shown + " " + bad);
  }
}
}  // namespace detail

/// Reads declared fields from a map node; finish() rejects keys nobody declared.
class ConfigReader {
 public:
  /// `reserved` keys are read by someone else (e.g. the `name` of a component block).
  explicit ConfigReader(ConfigNode node, std::vector<std::string> reserved = {});

  template <class T>
  void operator()(const char* key, T& value, const char* /*doc*/, const Check& check = {}) {
    // A component option named like a key its block reserves (e.g. backbone.init) would be
    // read twice with two meanings: a programming error, caught by any test that parses it.
    if (std::find(known_.begin(), known_.begin() + static_cast<std::ptrdiff_t>(reserved_), key) !=
        known_.begin() + static_cast<std::ptrdiff_t>(reserved_))
      throw std::logic_error(node_.path() + "." + key + " is declared by a component but reserved by its block");
    known_.emplace_back(key);
    ConfigNode child = node_.child(key);
    if (!child.present()) return;
    value = decode<T>(child);
    detail::check_value(child, value, check);
  }
  void finish() const { node_.check_keys(known_); }
  const ConfigNode& node() const { return node_; }

 private:
  ConfigNode node_;
  std::vector<std::string> known_;  ///< the reserved keys first, then the declared ones
  std::size_t reserved_ = 0;
};

/// Writes every field's current value into a JSON object.
class JsonWriter {
 public:
  template <class T>
  void operator()(const char* key, T& value, const char*, const Check& = {}) {
    json_[key] = value;
  }
  nlohmann::json& json() { return json_; }

 private:
  nlohmann::json json_ = nlohmann::json::object();
};

/// One documented parameter.
struct ParamDoc {
  std::string key, default_value, doc, constraint;
};

class DocWriter {
 public:
  template <class T>
  void operator()(const char* key, T& value, const char* doc, const Check& check = {}) {
    docs_.push_back({key, nlohmann::json(value).dump(), doc, check.describe()});
  }
  std::vector<ParamDoc>& docs() { return docs_; }

 private:
  std::vector<ParamDoc> docs_;
};

/// Cross-field checks: options structs may define `void validate(const ConfigNode&) const`.
template <class T, class = void>
struct has_validate : std::false_type {};
template <class T>
struct has_validate<T, std::void_t<decltype(std::declval<const T&>().validate(
                           std::declval<const ConfigNode&>()))>> : std::true_type {};

/// Reads `Options` from `node` (a map or absent): defaults, types, bounds, unknown keys,
/// cross-field validation.
template <class Options>
Options read_options(const ConfigNode& node, std::vector<std::string> reserved = {}) {
  node.expect_map("a map of parameters");
  Options options;
  ConfigReader reader(node, std::move(reserved));
  options.fields(reader);
  reader.finish();
  if constexpr (has_validate<Options>::value) options.validate(node);
  return options;
}

template <class Options>
nlohmann::json options_to_json(const Options& options) {
  Options copy = options;  // fields() takes non-const refs so one visitor list serves all uses
  JsonWriter writer;
  copy.fields(writer);
  return writer.json();
}

template <class Options>
std::vector<ParamDoc> options_docs() {
  Options defaults;
  DocWriter writer;
  defaults.fields(writer);
  return writer.docs();
}

}  // namespace clrun
