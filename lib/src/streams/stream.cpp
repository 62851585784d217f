// Stream: label remapping, device placement, batch inputs, description.
#include "clrun/streams/stream.hpp"

#include <cmath>

#include <torch/torch.h>

#include "clrun/core/error.hpp"
#include "clrun/core/seed.hpp"
#include "clrun/data/tokenizer.hpp"

namespace clrun {

std::string to_string(Scenario s) {
  switch (s) {
    case Scenario::class_il: return "class-il";
    case Scenario::task_il: return "task-il";
    case Scenario::domain_il: return "domain-il";
    case Scenario::instruction_il: return "instruction-il";
  }
  return "?";
}

Scenario scenario_from_string(const std::string& s) {
  if (s == "class-il") return Scenario::class_il;
  if (s == "task-il") return Scenario::task_il;
  if (s == "domain-il") return Scenario::domain_il;
  if (s == "instruction-il") return Scenario::instruction_il;
  throw InputError("stream.scenario: unknown scenario '" + s + "'");
}

int64_t Stream::loss_units(const Batch& batch) const {
  return is_text() ? batch.targets.ne(Batch::kIgnoreTarget).sum().item<int64_t>() : batch.size();
}

Stream::Stream(std::string name_, const Dataset& data, Scenario scenario_, std::vector<int64_t> order)
    : name(std::move(name_)),
      dataset(data.name),
      scenario(scenario_),
      num_classes(data.num_classes),
      class_order(std::move(order)),
      input_shape(data.input_shape()),
      tokenizer(data.tokenizer),
      host_images_(data.host_images) {
  data_shape_ = input_shape;
  if (is_text()) {  // labels stay as they are (-1: outside the label set); no normalisation
    train = data.train;
    test = data.test;
    class_names = data.class_names;
    return;
  }
  // new label = position of the original label in the order (PyCIL / FACIL convention)
  std::vector<int64_t> position(num_classes);
  for (int64_t k = 0; k < num_classes; ++k) position[class_order[k]] = k;
  torch::Tensor map = torch::tensor(position, torch::kInt64);
  train = {data.train.images, map.index_select(0, data.train.labels), {}, {}};
  test = {data.test.images, map.index_select(0, data.test.labels), {}, {}};
  for (int64_t k = 0; k < num_classes; ++k) class_names.push_back(data.class_names.at(class_order[k]));
  set_normalization(data.mean, data.std);
}

void Stream::set_normalization(const std::vector<double>& means, const std::vector<double>& stds) {
  int64_t channels = data_shape_.at(0);
  std::vector<float> scale(channels), shift(channels);
  for (int64_t c = 0; c < channels; ++c) {
    double mean = means.size() == 1 ? means[0] : means.at(c);
    double std = stds.size() == 1 ? stds[0] : stds.at(c);
    scale[c] = static_cast<float>(1.0 / (255.0 * std));
    shift[c] = static_cast<float>(-mean / std);
  }
  scale_ = torch::tensor(scale).view({1, channels, 1, 1});
  shift_ = torch::tensor(shift).view({1, channels, 1, 1});
}

void Stream::set_image_transforms(const TransformsSpec& spec) {
  if (spec.empty()) return;
  if (is_text()) throw InputError("stream.transforms: image transforms do not apply to the text data set " + dataset);
  const int64_t channels = data_shape_.at(0);
  if (!spec.mean.empty()) {
    for (std::size_t n : {spec.mean.size(), spec.std.size()})
      if (n != 1 && static_cast<int64_t>(n) != channels)
        throw InputError("stream.transforms: mean and std have " + std::to_string(n) + " values for " + dataset + "'s " +
                         std::to_string(channels) + "-channel images (give 1 or " + std::to_string(channels) + ")");
    set_normalization(spec.mean, spec.std);
  }
  const std::vector<int64_t> train_shape = spec.train.output_shape(data_shape_), test_shape = spec.test.output_shape(data_shape_);
  if (train_shape != test_shape) {
    auto text = [](const std::vector<int64_t>& s) { return std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]); };
    throw InputError("stream.transforms: the train transforms make " + text(train_shape) + " inputs of " + dataset + "'s " +
                     text(data_shape_) + " images, the test transforms " + text(test_shape) +
                     "; the model needs one input shape (end both lists with the same size)");
  }
  input_shape = test_shape;
  train_transforms_ = spec.train.empty() ? nullptr : std::make_shared<const TransformPipeline>(spec.train);
  test_transforms_ = spec.test.empty() ? nullptr : std::make_shared<const TransformPipeline>(spec.test);
  transforms_json_ = spec.resolved;
  transforms_json_["data_shape"] = data_shape_;
}

void Stream::to(torch::Device device) {
  device_ = device;
  if (!is_text())
    for (Split* s : {&train, &test}) {
      if (!host_images_) s->images = s->images.to(device);
      s->labels = s->labels.to(device);
    }
  for (Task& t : tasks) {
    t.train_rows = t.train_rows.to(device);
    t.test_rows = t.test_rows.to(device);
    if (t.transform) t.transform->to(device);
  }
  if (is_text()) return;
  scale_ = scale_.to(device);
  shift_ = shift_.to(device);
}

torch::Tensor Stream::prepare(const torch::Tensor& raw, const Task& task, at::Generator* train) const {
  // A pixel permutation commutes with the scaling below: applied to the raw bytes it gives the
  // same floats bit for bit, moving a quarter of the bytes.
  const bool on_raw = task.transform && task.transform->moves_pixels_only();
  torch::Tensor x = (on_raw ? task.transform->apply(raw) : raw).to(torch::kFloat32);
  const TransformPipeline* images = train ? train_transforms_.get() : test_transforms_.get();
  if (!task.transform && !images) return x.mul_(scale_).add_(shift_);
  // Transforms see [0, 1] images so that their fill value (0) is the data set's black. The
  // task's transform (domain-IL) sees the stored images, the image transforms its output.
  x.div_(255.0);
  if (task.transform && !on_raw) x = task.transform->apply(x);
  if (images) x = images->apply(x, train).contiguous();  // a crop may be a view
  return x.mul_(scale_ * 255.0).add_(shift_);
}

torch::Tensor Stream::prepare_by_task(const torch::Tensor& raw, const torch::Tensor& task_ids,
                                      const std::vector<int>& tasks, at::Generator* train) const {
  if (!has_transforms() || tasks.empty()) return prepare(raw, this->tasks.at(tasks.empty() ? 0 : tasks[0]), train);
  std::vector<int64_t> shape = {raw.size(0)};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  torch::Tensor x = torch::empty(shape, torch::TensorOptions(torch::kFloat32).device(raw.device()));
  for (int t : tasks) {
    torch::Tensor sel = task_ids.eq(t).nonzero().view(-1);
    if (sel.numel() > 0) x.index_copy_(0, sel, prepare(raw.index_select(0, sel), this->tasks.at(t), train));
  }
  return x;
}

Batch Stream::make_batch(const Split& split, const torch::Tensor& rows, const torch::Tensor& task_ids,
                         const std::vector<int>& tasks, at::Generator* train) const {
  Batch b;
  b.index = rows;
  b.task_ids = task_ids.defined() ? task_ids : torch::full_like(rows, tasks.at(0));
  if (!is_text()) {
    b.targets = split.labels.index_select(0, rows);
    const torch::Tensor raw = host_images_ ? split.images.index_select(0, rows.cpu()).to(device_)
                                           : split.images.index_select(0, rows);
    b.inputs = task_ids.defined() && tasks.size() > 1 ? prepare_by_task(raw, task_ids, tasks, train)
                                                      : prepare(raw, this->tasks.at(tasks.at(0)), train);
    return b;
  }
  // Dynamic padding: each batch is as long as its longest source and target.
  const torch::Tensor host_rows = rows.cpu();
  auto trimmed = [&](const torch::Tensor& padded) {
    torch::Tensor t = padded.index_select(0, host_rows);  // right-padded with 0, which no token is
    return t.narrow(1, 0, std::max<int64_t>(1, t.ne(0).sum(1).max().item<int64_t>()));
  };
  torch::Tensor ids = trimmed(split.images), targets = trimmed(split.targets);
  b.inputs = ids.to(device_);
  b.extra["attention_mask"] = ids.ne(0).to(torch::kInt64).to(device_);
  b.targets = targets.masked_fill(targets.eq(0), Batch::kIgnoreTarget).to(device_);
  return b;
}

bool Stream::has_transforms() const {
  for (const Task& t : tasks)
    if (t.transform) return true;
  return false;
}

std::vector<int64_t> Stream::classes_of(int first, int last) const {
  std::vector<bool> in(num_classes, false);
  for (int t = std::max(first, 0); t <= last && t < num_tasks(); ++t)
    for (int64_t c : tasks[t].classes) in[c] = true;
  std::vector<int64_t> out;
  for (int64_t c = 0; c < num_classes; ++c)
    if (in[c]) out.push_back(c);
  return out;
}

void Stream::check_tasks() const {
  if (tasks.empty()) throw InputError("stream: the stream has no tasks");
  for (const Task& t : tasks) {
    const char* missing = t.train_rows.numel() == 0 ? "training"
                          : t.test_rows.numel() == 0 ? (validation ? "validation" : "test")
                                                      : nullptr;
    if (!missing) continue;
    std::string classes;
    for (int64_t c : t.classes) classes += (classes.empty() ? "" : ", ") + class_names.at(c);
    throw InputError("stream: task " + std::to_string(t.index) + " (classes: " + classes + ") has no " +
                     missing + " samples in " + dataset +
                     (validation ? "; stream.validation may be too small for its classes" : ""));
  }
}

void Stream::carve_validation(double fraction) {
  at::Generator gen = make_generator(0, {seed_purpose::validation});
  torch::Tensor labels = train.labels.cpu();
  const int64_t n = labels.size(0);
  torch::Tensor is_val = torch::zeros({n}, torch::kBool);
  for (int64_t c = 0; c < num_classes; ++c) {
    torch::Tensor rows = labels.eq(c).nonzero().view(-1);
    const int64_t take = static_cast<int64_t>(std::llround(fraction * static_cast<double>(rows.size(0))));
    torch::Tensor pick = rows.index_select(0, torch::randperm(rows.size(0), gen, torch::kInt64).slice(0, 0, take));
    is_val.index_fill_(0, pick, true);
  }
  torch::Tensor val_rows = is_val.nonzero().view(-1), train_rows = is_val.logical_not().nonzero().view(-1);
  // Old training row -> its new row in the new train or validation split (-1 if elsewhere).
  auto position = [n](const torch::Tensor& rows) {
    torch::Tensor map = torch::full({n}, -1, torch::kInt64);
    map.index_copy_(0, rows, torch::arange(rows.size(0), torch::kInt64));
    return map;
  };
  torch::Tensor to_train = position(train_rows), to_val = position(val_rows);
  auto remap = [](const torch::Tensor& map, const torch::Tensor& rows) {
    torch::Tensor mapped = map.index_select(0, rows.cpu());
    return mapped.index_select(0, mapped.ge(0).nonzero().view(-1)).to(rows.device());
  };
  for (Task& t : tasks) {
    t.test_rows = remap(to_val, t.train_rows);
    t.train_rows = remap(to_train, t.train_rows);
  }
  test = train.select(val_rows);
  train = train.select(train_rows);
  validation = true;
}

nlohmann::json Stream::describe() const {
  nlohmann::json tasks_json = nlohmann::json::array();
  for (const Task& t : tasks) {
    std::vector<int64_t> original;
    for (int64_t c : t.classes) original.push_back(class_order[c]);
    nlohmann::json j = {{"index", t.index},
                        {"classes", t.classes},
                        {"original_classes", original},
                        {"train_size", t.train_rows.size(0)},
                        {"test_size", t.test_rows.size(0)}};
    if (t.transform) j["transform"] = t.transform->describe();
    if (!t.name.empty()) j["name"] = t.name;
    if (t.epochs > 0) j["epochs"] = t.epochs;
    tasks_json.push_back(j);
  }
  nlohmann::json j = {{"name", name},         {"dataset", dataset},         {"evaluated_on", validation ? "validation" : "test"},         {"scenario", to_string(scenario)},
          {"num_classes", num_classes}, {"class_order", class_order}, {"class_names", class_names},
          {"input_shape", input_shape}, {"num_tasks", num_tasks()}, {"tasks", tasks_json}};
  if (!transforms_json_.is_null()) j["image_transforms"] = transforms_json_;
  return j;
}

// Class statistics (EWC's Fisher, SoTU's heads) see the test transforms, as RanPAC computes
// them: inputs(...) without a generator.
void for_each_train_batch(const Stream& stream, int task, int64_t batch_size, int64_t limit,
                          const std::function<void(const Batch&)>& fn) {
  const Task& tk = stream.tasks.at(task);
  const int64_t n = limit > 0 ? std::min(limit, tk.train_rows.size(0)) : tk.train_rows.size(0);
  for (int64_t start = 0; start < n; start += batch_size) {
    fn(stream.make_batch(stream.train, tk.train_rows.slice(0, start, std::min(n, start + batch_size)), {}, {task}));
  }
}

std::shared_ptr<Stream> make_domain_stream(
    const std::string& name, const Dataset& data, int64_t num_tasks,
    const std::function<std::shared_ptr<InputTransform>(int, const Stream&)>& transform_of) {
  std::vector<int64_t> identity = ClassOrder{}.resolve(data.num_classes, "stream.class_order");
  auto stream = std::make_shared<Stream>(name, data, Scenario::domain_il, identity);
  for (int t = 0; t < num_tasks; ++t) {
    Task task;
    task.index = t;
    task.classes = identity;
    task.train_rows = torch::arange(stream->train.size(), torch::kInt64);
    task.test_rows = torch::arange(stream->test.size(), torch::kInt64);
    task.transform = transform_of(t, *stream);
    stream->tasks.push_back(std::move(task));
  }
  return stream;
}

}  // namespace clrun
