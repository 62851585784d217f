// `clrun list [KIND] [--params]`: every registered component with a one-line description, and
// with --params each parameter's default, bounds and meaning.
#include <iostream>

#include <CLI/CLI.hpp>

#include "clrun/components.hpp"
#include "commands.hpp"

namespace clrun::app {

namespace {
template <class R>
void print_registry(const R& registry, const std::string& heading, bool params) {
  std::cout << heading << ":\n";
  for (const auto* e : registry.entries()) {
    std::cout << "  " << e->name << std::string(e->name.size() < 16 ? 16 - e->name.size() : 1, ' ') << e->description
              << "\n";
    if (!params) continue;
    for (const ParamDoc& p : e->params())
      std::cout << "      " << p.key << " = " << p.default_value << "  " << p.doc
                << (p.constraint.empty() ? "" : "  [" + p.constraint + "]") << "\n";
  }
}
}  // namespace

void set_list_command(CLI::App* sub) {
  auto kind = std::make_shared<std::string>();
  auto params = std::make_shared<bool>(false);
  sub->add_option("kind", *kind, "only this kind")
      ->check(CLI::IsMember({"streams", "datasets", "backbones", "strategies", "optimizers", "schedulers"}));
  sub->add_flag("--params,-p", *params, "also list each component's parameters");
  sub->callback([=] {
    const Registries& r = registries();
    auto want = [&](const char* k) { return kind->empty() || *kind == k; };
    if (want("streams")) print_registry(r.streams, "streams", *params);
    if (want("datasets")) print_registry(r.datasets, "datasets", *params);
    if (want("backbones")) print_registry(r.backbones, "backbones", *params);
    if (want("strategies")) print_registry(r.strategies, "strategies", *params);
    if (want("optimizers")) print_registry(r.optimizers, "optimizers", *params);
    if (want("schedulers")) print_registry(r.schedulers, "schedulers", *params);
  });
}

}  // namespace clrun::app
