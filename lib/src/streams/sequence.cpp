// `sequence`: one task per source data set of a multi-data-set reader (the text benchmark's
// `cl_benchmark`), in the reader's order, each with its own classes and, where the order says
// so, its own number of epochs.
#include "clrun/core/error.hpp"
#include "clrun/streams/stream.hpp"

namespace clrun {

namespace {

struct SequenceOptions {
  std::string scenario = "instruction-il";
  int64_t num_tasks = 0;

  template <class V>
  void fields(V& v) {
    v("scenario", scenario, "instruction-il: each task a data set named in its prompt, scored by exact match of "
      "the generated answer", one_of({"instruction-il"}));
    v("num_tasks", num_tasks, "use only the first N tasks; 0 = all", at_least(0));
  }
};

std::shared_ptr<Stream> build(const SequenceOptions& o, const std::shared_ptr<const Dataset>& data, uint64_t) {
  if (data->groups.empty())
    throw InputError("stream: `sequence` needs a data set made of several data sets (cl_benchmark); " + data->name +
                     " is one");
  std::vector<int64_t> identity(data->num_classes);
  for (int64_t k = 0; k < data->num_classes; ++k) identity[k] = k;
  auto stream = std::make_shared<Stream>("sequence", *data, scenario_from_string(o.scenario), identity);
  const int64_t n = o.num_tasks > 0 ? o.num_tasks : static_cast<int64_t>(data->groups.size());
  if (n > static_cast<int64_t>(data->groups.size()))
    throw InputError("stream.num_tasks: " + std::to_string(n) + " tasks requested but the data set's order has " +
                     std::to_string(data->groups.size()));
  for (int64_t g = 0; g < n; ++g) {
    const DataGroup& group = data->groups[g];
    Task task;
    task.index = static_cast<int>(g);
    task.name = group.name;
    task.epochs = group.epochs;
    task.classes = group.classes;
    task.train_rows = stream->train.groups.eq(g).nonzero().view(-1);
    task.test_rows = stream->test.groups.eq(g).nonzero().view(-1);
    stream->tasks.push_back(std::move(task));
  }
  return stream;
}

}  // namespace

void register_sequence(StreamRegistry& registry) {
  registry.add<SequenceOptions>("sequence", "one task per data set of a multi-data-set reader (the text benchmark), in its order",
                                build);
}

}  // namespace clrun
