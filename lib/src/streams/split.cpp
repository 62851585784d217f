// `split`: class-incremental (or task-incremental) splits of a data set's classes: a base
// session of `base_classes`, then tasks of `increment` classes, in `class_order`.
#include "clrun/streams/stream.hpp"

namespace clrun {

namespace {

struct SplitOptions {
  std::string scenario = "class-il";  ///< class-il | task-il
  int64_t base_classes = 0;           ///< first task's size; 0 = same as increment
  int64_t increment = 2;              ///< classes per task after the first
  ClassOrder class_order;             ///< identity | [list] | {numpy_seed: N}
  int64_t num_tasks = 0;              ///< 0 = every task the split gives; N = the first N

  template <class V>
  void fields(V& v) {
    v("scenario", scenario, "class-il (one head, task-agnostic eval) or task-il (task id given)",
      one_of({"class-il", "task-il"}));
    v("base_classes", base_classes, "classes in the first task; 0 = same as increment", at_least(0));
    v("increment", increment, "classes per task after the first", at_least(1));
    v("class_order", class_order, "identity, an explicit list, or {numpy_seed: N} (numpy-exact)");
    v("num_tasks", num_tasks, "use only the first N tasks; 0 = all", at_least(0));
  }
};

/// Rows of `labels` whose label id is in [lo, hi).
torch::Tensor rows_in_range(const torch::Tensor& labels, int64_t lo, int64_t hi) {
  return ((labels >= lo) & (labels < hi)).nonzero().view(-1);
}

std::shared_ptr<Stream> build(const SplitOptions& o, const std::shared_ptr<const Dataset>& data, uint64_t) {
  std::vector<int64_t> order = o.class_order.resolve(data->num_classes, "stream.class_order");
  auto stream = std::make_shared<Stream>("split", *data, scenario_from_string(o.scenario), order);
  int64_t C = data->num_classes;
  int64_t first = o.base_classes > 0 ? o.base_classes : o.increment;
  if (first > C)
    throw InputError(std::string(o.base_classes > 0 ? "stream.base_classes: " : "stream.increment: ") +
                     "the first task needs " + std::to_string(first) + " classes but " + data->name +
                     " has " + std::to_string(C) +
                     (o.base_classes > 0 ? "" : " (the first task has `increment` classes unless base_classes is set)"));
  // PyCIL convention: a remainder that does not fill a whole increment becomes a smaller last task.
  for (int64_t lo = 0, t = 0; lo < C; ++t) {
    int64_t hi = std::min(C, lo + (t == 0 ? first : o.increment));
    Task task;
    task.index = static_cast<int>(t);
    for (int64_t c = lo; c < hi; ++c) task.classes.push_back(c);
    task.train_rows = rows_in_range(stream->train.labels, lo, hi);
    task.test_rows = rows_in_range(stream->test.labels, lo, hi);
    stream->tasks.push_back(std::move(task));
    lo = hi;
  }
  if (o.num_tasks > 0) {
    if (o.num_tasks > stream->num_tasks())
      throw InputError("stream.num_tasks: " + std::to_string(o.num_tasks) + " tasks requested but the split of " +
                       std::to_string(C) + " classes gives " + std::to_string(stream->num_tasks()));
    stream->tasks.resize(o.num_tasks);
  }
  return stream;
}

}  // namespace

void register_split(StreamRegistry& registry) {
  registry.add<SplitOptions>("split", "class-IL / task-IL: the classes split into tasks in a class order",
                             build);
}

}  // namespace clrun
