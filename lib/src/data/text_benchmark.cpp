// `cl_benchmark`: the text continual-learning benchmark of O-LoRA and MIGU (CL_Benchmark layout:
// <TaskType>/<Dataset>/{train,test,labels}.json plus instruction_config.json), tokenised with
// the T5 SentencePiece model. Each source data set is a group (one task of the `sequence`
// stream); its labels become consecutive class ids, and the target text is the label string.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include <torch/torch.h>

#include "clrun/core/error.hpp"
#include "clrun/core/text.hpp"
#include "clrun/data/dataset.hpp"
#include "clrun/data/tokenizer.hpp"

namespace clrun {

namespace {

namespace fs = std::filesystem;

/// Where each data set of the benchmark lives (its TaskType folder) and where it comes from.
struct KnownSet {
  const char* name;
  const char* task_type;
  const char* upstream;
};
constexpr KnownSet kKnownSets[] = {
    {"dbpedia", "TC", "DBpedia-14 topic classification"},
    {"amazon", "SC", "Amazon reviews sentiment"},
    {"yahoo", "TC", "Yahoo! Answers topics"},
    {"agnews", "TC", "AG News topics"},
    {"MNLI", "NLI", "GLUE MNLI"},
    {"CB", "NLI", "SuperGLUE CommitmentBank"},
    {"WiC", "WiC", "SuperGLUE Words in Context"},
    {"COPA", "COPA", "SuperGLUE COPA"},
    {"QQP", "QQP", "GLUE Quora Question Pairs"},
    {"BoolQA", "BoolQA", "SuperGLUE BoolQ"},
    {"RTE", "NLI", "GLUE RTE"},
    {"IMDB", "SC", "IMDB movie reviews"},
    {"yelp", "SC", "Yelp reviews sentiment"},
    {"SST-2", "SC", "GLUE SST-2"},
    {"MultiRC", "MultiRC", "SuperGLUE MultiRC"},
};

const KnownSet* known_set(const std::string& name) {
  for (const auto& k : kKnownSets)
    if (name == k.name) return &k;
  return nullptr;
}

/// The paper's task orders (MIGU Table 1 / O-LoRA), one epoch per task except order 5's WiC and
/// order 6's MNLI (third task, 2 epochs; MIGU's scripts).
std::vector<std::string> paper_order(int64_t n) {
  switch (n) {
    case 1: return {"dbpedia", "amazon", "yahoo", "agnews"};
    case 2: return {"dbpedia", "amazon", "agnews", "yahoo"};
    case 3: return {"yahoo", "amazon", "agnews", "dbpedia"};
    case 4: return {"MNLI", "CB", "WiC", "COPA", "QQP", "BoolQA", "RTE", "IMDB", "yelp", "amazon", "SST-2", "dbpedia",
                    "agnews", "MultiRC", "yahoo"};
    case 5: return {"MultiRC", "BoolQA", "WiC", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia", "agnews",
                    "yelp", "amazon", "yahoo"};
    case 6: return {"yelp", "amazon", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia", "agnews", "yahoo",
                    "MultiRC", "BoolQA", "WiC"};
  }
  throw InputError("dataset.order: " + std::to_string(n) + " is not one of the paper's orders 1..6");
}

}  // namespace

/// `order`: the paper's order N (1..6) or an explicit list of data set names.
struct TaskOrder {
  int64_t paper = 0;
  std::vector<std::string> names;
};

void to_json(nlohmann::json& j, const TaskOrder& o) {
  if (o.paper > 0) j = o.paper;
  else j = o.names;
}

template <>
struct Decoder<TaskOrder> {
  static TaskOrder decode(const ConfigNode& node) {
    TaskOrder o;
    if (node.yaml().IsSequence()) o.names = clrun::decode<std::vector<std::string>>(node);
    else o.paper = clrun::decode<int64_t>(node);
    if (o.paper == 0 && o.names.empty()) node.fail("expected the paper's order 1..6 or a non-empty list of data sets");
    for (std::size_t i = 0; i < o.names.size(); ++i)
      if (!known_set(o.names[i])) {
        std::vector<std::string> known;
        for (const auto& k : kKnownSets) known.push_back(k.name);
        node.element(i).fail("unknown data set '" + o.names[i] + "'; the benchmark has " + join(known, ", "));
      }
    return o;
  }
};

namespace {

struct TextBenchmarkOptions {
  std::string root;
  TaskOrder order{4, {}};
  std::string tokenizer;
  std::string instructions;
  int64_t max_train_samples = 0;
  int64_t max_test_samples = 0;
  std::string sample = "first";
  int64_t sample_seed = 0;
  int64_t max_source_length = 512;
  int64_t max_target_length = 50;
  std::string truncation = "faithful";
  std::vector<int64_t> epochs;

  template <class V>
  void fields(V& v) {
    v("root", root, "the CL_Benchmark folder (<TaskType>/<Dataset>/{train,test,labels}.json)");
    v("order", order, "the paper's task order 1..6 (with its per-task epochs) or a list of data set names");
    v("tokenizer", tokenizer, "the T5 SentencePiece model (spiece.model)");
    v("instructions", instructions, "instruction_config.json; empty = ROOT/instruction_config.json");
    v("max_train_samples", max_train_samples, "cap on each task's training rows; 0 = all", at_least(0));
    v("max_test_samples", max_test_samples, "cap on each task's test rows; 0 = all", at_least(0));
    v("sample", sample, "which rows a cap keeps: the first N in file order, or N drawn with sample_seed",
      one_of({"first", "seeded"}));
    v("sample_seed", sample_seed, "seed of the `seeded` caps (the same rows for every run seed)", at_least(0));
    v("max_source_length", max_source_length, "source tokens kept, </s> included (upstream: 512)", at_least(2));
    v("max_target_length", max_target_length, "target tokens kept, </s> included (upstream: 50)", at_least(2));
    v("truncation", truncation,
      "faithful: as the upstream collator (decode the first max ids, encode again, cut); plain: cut the ids",
      one_of({"faithful", "plain"}));
    v("epochs", epochs, "epochs per task, one per task of the order; empty = the paper order's (else train.epochs)");
  }
};

nlohmann::json read_json_file(const fs::path& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw InputError(what);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path.string() + ": not valid JSON (" + e.what() + ")");
  }
}

std::string missing_message(const fs::path& path, const KnownSet& set) {
  return "dataset.root: " + path.string() + ": no such file; it is " + set.name + " (" + set.upstream +
         ") of the O-LoRA/MIGU CL_Benchmark (github.com/cmnfriend/O-LoRA, CL_Benchmark/" + set.task_type + "/" +
         set.name + "/); point dataset.root at a complete copy";
}

/// The prompt of the upstream code (O-LoRA's / MIGU's cl_dataset.py).
std::string build_prompt(const std::string& task_type, const std::string& dataset, const std::string& instruction,
                         const std::vector<std::string>& labels, const std::string& sentence) {
  if (task_type == "COPA") return "Task:COPA\nDataset:COPA\n" + sentence + "\nAnswer:";
  return "Task:" + task_type + "\nDataset:" + dataset + "\n" + instruction + "Option: " + join(labels, ", ") + " \n" +
         sentence + "\nAnswer:";
}

/// Rows kept under a cap of `cap` (0 = all) out of `n`, in file order.
std::vector<int64_t> capped_rows(int64_t n, int64_t cap, const TextBenchmarkOptions& o, uint64_t salt) {
  std::vector<int64_t> rows(n);
  for (int64_t i = 0; i < n; ++i) rows[i] = i;
  if (cap <= 0 || cap >= n) return rows;
  if (o.sample == "first") {
    rows.resize(cap);
    return rows;
  }
  at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(o.sample_seed) * 1000003ULL + salt);
  torch::Tensor perm = torch::randperm(n, gen, torch::kInt64).slice(0, 0, cap);
  perm = std::get<0>(perm.sort());
  return std::vector<int64_t>(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + cap);
}

/// Token rows padded with 0 into one int64 [N, max length] tensor.
torch::Tensor pad_rows(const std::vector<std::vector<int64_t>>& rows) {
  std::size_t width = 1;
  for (const auto& r : rows) width = std::max(width, r.size());
  torch::Tensor out = torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(width)}, torch::kInt64);
  auto* p = out.data_ptr<int64_t>();
  for (std::size_t i = 0; i < rows.size(); ++i) std::copy(rows[i].begin(), rows[i].end(), p + i * width);
  return out;
}

struct SplitBuilder {
  std::vector<std::vector<int64_t>> sources, targets;
  std::vector<int64_t> labels, groups;
  Split build() const {
    return {pad_rows(sources), torch::tensor(labels, torch::kInt64), pad_rows(targets), torch::tensor(groups, torch::kInt64)};
  }
};

std::shared_ptr<Dataset> load(const TextBenchmarkOptions& o) {
  if (o.root.empty()) throw InputError("dataset.root: required (the CL_Benchmark folder)");
  if (o.tokenizer.empty()) throw InputError("dataset.tokenizer: required (T5's spiece.model)");
  const fs::path root(o.root);
  if (!fs::is_directory(root)) throw InputError("dataset.root: " + o.root + ": no such directory (expected the CL_Benchmark folder)");
  auto tokenizer = std::make_shared<const Tokenizer>(o.tokenizer, "dataset.tokenizer");
  const fs::path instructions_path = o.instructions.empty() ? root / "instruction_config.json" : fs::path(o.instructions);
  const nlohmann::json instructions =
      read_json_file(instructions_path, "dataset.instructions: " + instructions_path.string() + ": no such file (CL_Benchmark's "
                                        "instruction_config.json, from the MIGU repository's configs/)");

  const std::vector<std::string> names = o.order.paper > 0 ? paper_order(o.order.paper) : o.order.names;
  std::vector<int64_t> epochs(names.size(), 0);
  if (o.order.paper == 5) epochs[2] = 2;  // WiC
  if (o.order.paper == 6) epochs[2] = 2;  // MNLI
  if (!o.epochs.empty()) {
    if (o.epochs.size() != names.size())
      throw InputError("dataset.epochs: " + std::to_string(o.epochs.size()) + " values for " +
                       std::to_string(names.size()) + " tasks (one per task of the order, or none)");
    epochs = o.epochs;
  }

  auto ds = std::make_shared<Dataset>();
  ds->name = "cl_benchmark";
  ds->tokenizer = tokenizer;
  SplitBuilder train, test;
  const bool faithful = o.truncation == "faithful";
  for (std::size_t g = 0; g < names.size(); ++g) {
    const KnownSet& set = *known_set(names[g]);
    for (std::size_t h = 0; h < g; ++h)
      if (names[h] == names[g]) throw InputError("dataset.order: " + names[g] + " appears twice");
    const fs::path dir = root / set.task_type / set.name;
    if (!instructions.contains(set.task_type) && std::string(set.task_type) != "COPA")
      throw InputError(instructions_path.string() + ": no instruction for task type " + set.task_type);
    const std::string instruction =
        std::string(set.task_type) == "COPA" ? "" : instructions.at(set.task_type).at(0).at("instruction").get<std::string>();
    const nlohmann::json labels_json = read_json_file(dir / "labels.json", missing_message(dir / "labels.json", set));
    const auto label_names = labels_json.get<std::vector<std::string>>();
    DataGroup group;
    group.name = set.name;
    group.epochs = epochs[g];
    std::map<std::string, int64_t> class_of;
    for (const auto& l : label_names) {
      group.classes.push_back(ds->num_classes);
      class_of.emplace(l, ds->num_classes++);
      ds->class_names.push_back(l);
    }
    group.describe = {{"name", set.name}, {"task_type", set.task_type}, {"dir", dir.string()}, {"labels", label_names}};
    for (const char* split_name : {"train", "test"}) {
      const bool is_train = std::string(split_name) == "train";
      const fs::path file = dir / (std::string(split_name) + ".json");
      const nlohmann::json rows = read_json_file(file, missing_message(file, set));
      if (!rows.is_array()) throw InputError(file.string() + ": expected a JSON array of {sentence, label}");
      const int64_t cap = is_train ? o.max_train_samples : o.max_test_samples;
      SplitBuilder& out = is_train ? train : test;
      int64_t unlabelled = 0;
      const auto kept = capped_rows(static_cast<int64_t>(rows.size()), cap, o, g * 2 + (is_train ? 0 : 1));
      for (int64_t i : kept) {
        const auto& r = rows.at(i);
        if (!r.is_object() || !r.contains("sentence") || !r.contains("label") || !r["sentence"].is_string() ||
            !r["label"].is_string())
          throw InputError(file.string() + ": record " + std::to_string(i) + ": expected {\"sentence\": string, \"label\": string}");
        const std::string label = r["label"];
        auto it = class_of.find(label);
        unlabelled += it == class_of.end();
        out.sources.push_back(tokenizer->encode(build_prompt(set.task_type, set.name, instruction, label_names,
                                                             r["sentence"].get<std::string>()),
                                                o.max_source_length, faithful));
        out.targets.push_back(tokenizer->encode(label, o.max_target_length, faithful));
        out.labels.push_back(it == class_of.end() ? -1 : it->second);
        out.groups.push_back(static_cast<int64_t>(g));
      }
      group.describe[split_name] = {{"file", file.string()}, {"rows", rows.size()}, {"kept", kept.size()},
                                    {"labels_outside_labels_json", unlabelled}};
    }
    ds->groups.push_back(std::move(group));
  }
  ds->train = train.build();
  ds->test = test.build();
  ds->mean = {0.0};
  ds->std = {1.0};
  return ds;
}

}  // namespace

void register_text_benchmark(DatasetRegistry& registry) {
  registry.add<TextBenchmarkOptions>(
      "cl_benchmark",
      "the O-LoRA / MIGU text benchmark (CL_Benchmark folder): instruction prompts tokenised for T5, one group per "
      "data set of the order",
      load);
}

}  // namespace clrun
