// T5 tokenizer over Debian's libsentencepiece, loaded with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why not link it: Debian's libsentencepiece embeds and exports its own protobuf-lite (3.14),
// and LibTorch loads the system libprotobuf (3.21). Linked together, one copy's symbols serve
// both, and either protobuf's start-up code crashes (sentencepiece first) or sentencepiece's
// version check aborts (libprotobuf first). Deep-bound and local, sentencepiece resolves its
// own protobuf and nobody else sees it. Its C++ API is then called through its exported
// symbols (Itanium ABI: a by-value class return is an implicit first argument, before `this`).
#include "clrun/data/tokenizer.hpp"

#include <dlfcn.h>

#include <cctype>
#include <filesystem>
#include <string_view>

#include <sentencepiece_processor.h>  // sizeof(SentencePieceProcessor) only

#include "clrun/core/error.hpp"

namespace clrun {

namespace {

/// sentencepiece::util::Status: one pointer, null when ok.
struct Status {
  void* rep = nullptr;
};

struct SentencePieceApi {
  void (*construct)(void* self);
  void (*destruct)(void* self);
  void (*load)(Status* ret, void* self, std::string_view path);
  void (*encode)(Status* ret, const void* self, std::string_view text, std::vector<int>* ids);
  int (*piece_size)(const void* self);
  const std::string& (*id_to_piece)(const void* self, int id);
  bool (*is_control)(const void* self, int id);
  bool (*is_unknown)(const void* self, int id);
  void (*status_text)(std::string* ret, const Status* self);
  void (*status_destruct)(Status* self);

  static const SentencePieceApi& get() {
    static const SentencePieceApi api = [] {
      void* lib = dlopen("libsentencepiece.so.0", RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
      if (!lib) throw InputError(std::string("cannot load libsentencepiece.so.0 (install libsentencepiece-dev; "
                                             "bash scripts/setup does): ") + dlerror());
      auto sym = [lib](const char* name) {
        void* p = dlsym(lib, name);
        if (!p) throw std::runtime_error(std::string("libsentencepiece.so.0 lacks ") + name + " (expected version 0.1.9x)");
        return p;
      };
      SentencePieceApi a{};
      a.construct = reinterpret_cast<decltype(a.construct)>(sym("_ZN13sentencepiece22SentencePieceProcessorC1Ev"));
      a.destruct = reinterpret_cast<decltype(a.destruct)>(sym("_ZN13sentencepiece22SentencePieceProcessorD1Ev"));
      a.load = reinterpret_cast<decltype(a.load)>(
          sym("_ZN13sentencepiece22SentencePieceProcessor4LoadESt17basic_string_viewIcSt11char_traitsIcEE"));
      a.encode = reinterpret_cast<decltype(a.encode)>(sym(
          "_ZNK13sentencepiece22SentencePieceProcessor6EncodeESt17basic_string_viewIcSt11char_traitsIcEEPSt6vectorIiSaIiEE"));
      a.piece_size = reinterpret_cast<decltype(a.piece_size)>(sym("_ZNK13sentencepiece22SentencePieceProcessor12GetPieceSizeEv"));
      a.id_to_piece = reinterpret_cast<decltype(a.id_to_piece)>(sym("_ZNK13sentencepiece22SentencePieceProcessor9IdToPieceB5cxx11Ei"));
      a.is_control = reinterpret_cast<decltype(a.is_control)>(sym("_ZNK13sentencepiece22SentencePieceProcessor9IsControlEi"));
      a.is_unknown = reinterpret_cast<decltype(a.is_unknown)>(sym("_ZNK13sentencepiece22SentencePieceProcessor9IsUnknownEi"));
      a.status_text = reinterpret_cast<decltype(a.status_text)>(sym("_ZNK13sentencepiece4util6Status8ToStringB5cxx11Ev"));
      a.status_destruct = reinterpret_cast<decltype(a.status_destruct)>(sym("_ZN13sentencepiece4util6StatusD1Ev"));
      return a;
    }();
    return api;
  }

  /// The status's message ("" when ok); releases it.
  std::string take(Status& status) const {
    std::string text;
    if (status.rep) status_text(&text, &status);
    status_destruct(&status);
    return text;
  }
};

}  // namespace

/// The processor object, constructed and destroyed by the library itself.
class Tokenizer::Processor {
 public:
  Processor() : api(SentencePieceApi::get()), memory(::operator new(sizeof(sentencepiece::SentencePieceProcessor))) {
    api.construct(memory);
  }
  ~Processor() {
    api.destruct(memory);
    ::operator delete(memory);
  }
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;
  const SentencePieceApi& api;
  void* memory;
};

Tokenizer::Tokenizer(const std::string& path, const std::string& key) : path_(path) {
  if (!std::filesystem::is_regular_file(path))
    throw InputError(key + ": " + path + ": no such file (expected a SentencePiece model, e.g. T5's spiece.model)");
  sp_ = std::make_unique<Processor>();
  Status status;
  sp_->api.load(&status, sp_->memory, path);
  const std::string error = sp_->api.take(status);
  if (!error.empty()) throw InputError(key + ": " + path + ": not a SentencePiece model (" + error + ")");
}

Tokenizer::~Tokenizer() = default;

std::vector<int64_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  Status status;
  sp_->api.encode(&status, sp_->memory, text, &ids);
  const std::string error = sp_->api.take(status);
  if (!error.empty()) throw std::runtime_error("sentencepiece: " + error);
  std::vector<int64_t> out(ids.begin(), ids.end());
  out.push_back(kEos);
  return out;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, int64_t max_length, bool faithful) const {
  std::vector<int64_t> ids = encode(text);
  if (static_cast<int64_t>(ids.size()) <= max_length) return ids;
  if (faithful) ids = encode(decode(std::vector<int64_t>(ids.begin(), ids.begin() + max_length)));
  if (static_cast<int64_t>(ids.size()) > max_length) {
    ids.resize(max_length);
    ids.back() = kEos;
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  // As Hugging Face's fast tokenizer: special and out-of-vocabulary ids skipped, the pieces
  // joined, "▁" read as a space, and the first piece's leading space dropped (Metaspace).
  const auto& api = sp_->api;
  const int64_t pieces = api.piece_size(sp_->memory);
  std::string text;
  bool first = true;
  for (int64_t id : ids) {
    const int i = static_cast<int>(id);
    if (id <= kUnk || id >= pieces || api.is_control(sp_->memory, i) || api.is_unknown(sp_->memory, i)) continue;
    std::string piece = api.id_to_piece(sp_->memory, i);
    for (std::size_t pos = 0; (pos = piece.find("\xe2\x96\x81", pos)) != std::string::npos;) piece.replace(pos, 3, " ");
    if (first && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    first = false;
    text += piece;
  }
  // transformers' clean_up_tokenization, in its order.
  static const std::pair<const char*, const char*> kCleanup[] = {
      {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kCleanup) {
    const std::string f(from), t(to);
    for (std::size_t pos = 0; (pos = text.find(f, pos)) != std::string::npos; pos += t.size()) text.replace(pos, f.size(), t);
  }
  return text;
}

int64_t Tokenizer::vocab_size() const { return sp_->api.piece_size(sp_->memory) + kSentinels; }

std::string normalize_answer(const std::string& text) {
  std::string out;
  bool space = false;
  for (unsigned char c : text) {
    if (std::ispunct(c)) continue;  // ASCII punctuation, as Python's string.punctuation
    if (std::isspace(c)) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += static_cast<char>(std::tolower(c));
  }
  return out;
}

}  // namespace clrun
