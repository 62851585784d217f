// ConfigNode: key paths and positions for errors; Check: bounds and choices.
#include "clrun/core/config.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "clrun/core/text.hpp"

namespace clrun {

namespace {
std::string format_number(double x) {
  std::ostringstream os;
  os << x;
  return os.str();
}
}  // namespace

ConfigNode::ConfigNode(YAML::Node node, std::string path, std::shared_ptr<const ConfigSource> source)
    : node_(std::move(node)), path_(std::move(path)), source_(std::move(source)) {
  if (node_.IsDefined() && !node_.Mark().is_null()) {
    line_ = node_.Mark().line + 1;
    column_ = node_.Mark().column + 1;
  }
}

ConfigNode ConfigNode::child(const std::string& key) const {
  std::string path = path_.empty() ? key : path_ + "." + key;
  YAML::Node child;  // null: absent
  if (node_.IsMap() && !key.empty()) {
    const YAML::Node& self = node_;
    YAML::Node found = self[key];
    if (found.IsDefined()) child = found;
  }
  ConfigNode out(child, path, source_);
  if (out.line_ == 0) out.line_ = line_, out.column_ = column_;  // absent: point at the parent
  return out;
}

ConfigNode ConfigNode::element(std::size_t i) const {
  ConfigNode out(node_.IsSequence() ? node_[i] : YAML::Node(), path_ + "[" + std::to_string(i) + "]",
                 source_);
  if (out.line_ == 0) out.line_ = line_, out.column_ = column_;
  return out;
}

std::string ConfigNode::where() const {
  const std::string shown = path_.empty() ? "(top level)" : path_;
  if (source_) {
    for (const auto& o : source_->overridden)
      if (path_ == o || path_.rfind(o + ".", 0) == 0 || path_.rfind(o + "[", 0) == 0)
        return "--set " + shown;
  }
  std::string file = source_ ? source_->file : "";
  if (line_ > 0) file += ":" + std::to_string(line_) + ":" + std::to_string(column_);
  return file.empty() ? shown : file + ": " + shown;
}

void ConfigNode::fail(const std::string& message) const { throw InputError(where() + ": " + message); }

void ConfigNode::expect_map(const std::string& what) const {
  if (present() && !node_.IsMap()) fail("expected " + what);
}

void ConfigNode::check_keys(const std::vector<std::string>& known) const {
  if (!node_.IsMap()) return;
  for (const auto& kv : node_) {
    if (!kv.first.IsScalar())
      ConfigNode(kv.first, path_, source_).fail("a key must be a plain name, not a " +
                                                std::string(kv.first.IsMap() ? "map" : "list"));
    std::string key = kv.first.Scalar();
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    ConfigNode bad(kv.first, path_.empty() ? key : path_ + "." + key, source_);
    std::vector<std::string> sorted = known;
    std::sort(sorted.begin(), sorted.end());
    bad.fail("unknown key" + did_you_mean(key, known) + "; known keys here: " + join(sorted, ", "));
  }
}

std::string Decoder<std::string>::decode(const ConfigNode& n) {
  std::string s = ScalarDecoder<std::string>::decode(n, "a string");
  if (!is_valid_utf8(s)) n.fail("is not valid UTF-8 text");
  return s;
}

std::string yaml_scalar_text(const YAML::Node& node) {
  return node.IsScalar() ? node.Scalar() : YAML::Dump(node);
}

std::string Check::describe() const {
  std::string out;
  if (min) out += std::string(min_exclusive ? "> " : ">= ") + format_number(*min);
  if (max) out += (out.empty() ? "" : ", ") + std::string("<= ") + format_number(*max);
  if (!choices.empty()) out += (out.empty() ? "" : ", ") + std::string("one of: ") + join(choices, ", ");
  return out;
}

std::string Check::violation(double x) const {
  if (finite && !std::isfinite(x)) return "is not a finite number";
  bool low = min && (min_exclusive ? !(x > *min) : !(x >= *min));
  bool high = max && !(x <= *max);
  if (std::isnan(x) || low || high) return "is out of range: must be " + describe();
  return "";
}

std::string Check::violation(const std::string& s) const {
  if (choices.empty() || std::find(choices.begin(), choices.end(), s) != choices.end()) return "";
  return "is not allowed" + did_you_mean(s, choices) + ": must be one of: " + join(choices, ", ");
}

Check at_least(double min) { return Check{min, std::nullopt, false, {}}; }
Check above(double min) { return Check{min, std::nullopt, true, {}}; }
Check in_range(double min, double max) { return Check{min, max, false, {}}; }
Check one_of(std::vector<std::string> choices) { return Check{std::nullopt, std::nullopt, false, std::move(choices)}; }

ConfigReader::ConfigReader(ConfigNode node, std::vector<std::string> reserved)
    : node_(std::move(node)), known_(std::move(reserved)), reserved_(known_.size()) {}

}  // namespace clrun
