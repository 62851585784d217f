// Registries: one per interface (datasets, streams, backbones, strategies, optimizers,
// schedulers). Names are normalised at registration (lower case, '-' for '_'); duplicates are
// refused; an unknown name is an error listing every candidate. Each entry knows how to read its
// options from a config block (cheap, for `validate`) and, separately, how to build (heavy).
#pragma once
#include <any>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clrun/core/config.hpp"
#include "clrun/core/text.hpp"

namespace clrun {

template <class Product, class... Args>
class Registry {
 public:
  struct Entry {
    std::string name;
    std::string description;
    /// Reads and validates the options of a block; fills `resolved` with every field.
    std::function<std::any(const ConfigNode&, const std::vector<std::string>& reserved,
                           nlohmann::json& resolved)>
        parse;
    std::function<std::shared_ptr<Product>(const std::any& options, Args...)> build;
    std::function<std::vector<ParamDoc>()> params;
  };

  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  /// Registers `name` built by `build(const Options&, Args...)`.
  template <class Options, class Build>
  void add(const std::string& name, std::string description, Build build) {
    std::string key = normalize_name(name);
    if (entries_.count(key)) throw std::logic_error(kind_ + " '" + key + "' registered twice");
    Entry e;
    e.name = key;
    e.description = std::move(description);
    e.parse = [](const ConfigNode& node, const std::vector<std::string>& reserved,
                 nlohmann::json& resolved) {
      Options options = read_options<Options>(node, reserved);
      resolved = options_to_json(options);
      return std::any(std::move(options));
    };
    e.build = [build](const std::any& options, Args... args) -> std::shared_ptr<Product> {
      return build(std::any_cast<const Options&>(options), std::forward<Args>(args)...);
    };
    e.params = [] { return options_docs<Options>(); };
    entries_.emplace(key, std::move(e));
  }

  /// The entry for `name`; unknown names fail at `where` listing the candidates.
  const Entry& get(const std::string& name, const ConfigNode& where) const {
    auto it = entries_.find(normalize_name(name));
    if (it == entries_.end())
      where.fail("unknown " + kind_ + " '" + name + "'" + did_you_mean(normalize_name(name), names()) +
                 "; registered: " + join(names(), ", "));
    return it->second;
  }
  bool contains(const std::string& name) const { return entries_.count(normalize_name(name)) > 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }
  std::vector<const Entry*> entries() const {
    std::vector<const Entry*> out;
    for (const auto& kv : entries_) out.push_back(&kv.second);
    return out;
  }
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
  std::map<std::string, Entry> entries_;
};

/// A parsed component block (`{name: sgd, lr: 0.1}`): the registry entry, its options and the
/// resolved JSON (every field, defaults included). Building is a separate, later step.
template <class R>
struct Component {
  const typename R::Entry* entry = nullptr;
  std::any options;
  nlohmann::json resolved;  ///< {"name": ..., every field...}

  const std::string& name() const { return entry->name; }
  template <class... A>
  auto build(A&&... args) const {
    return entry->build(options, std::forward<A>(args)...);
  }
};

/// Parses `{name: X, ...}` (or the shorthand `X`) with registry `registry`. `reserved` keys in
/// the block are read by the caller. An absent block uses `default_name`, if any.
template <class R>
Component<R> parse_component(const R& registry, const ConfigNode& node,
                             const std::string& default_name = "",
                             std::vector<std::string> reserved = {}) {
  std::string name = default_name;
  ConfigNode params = node;
  if (node.present() && node.yaml().IsScalar()) {
    name = decode<std::string>(node);
    params = node.child("");  // absent: all defaults
  } else if (node.present()) {
    node.expect_map("a block like {name: ..., ...}");
    ConfigNode name_node = node.child("name");
    if (name_node.present()) name = decode<std::string>(name_node);
  }
  if (name.empty())
    node.fail("missing 'name'; registered " + registry.kind() + "s: " + join(registry.names(), ", "));
  Component<R> c;
  c.entry = &registry.get(name, node.child("name").present() ? node.child("name") : node);
  reserved.push_back("name");
  c.options = c.entry->parse(params, reserved, c.resolved);
  c.resolved["name"] = c.entry->name;
  return c;
}

}  // namespace clrun
