// The T5 tokenizer: SentencePiece (libsentencepiece) with Hugging Face's conventions on top:
// `</s>` appended to every encoded text, sentinel tokens <extra_id_N> = 32099 - N, and decoding
// as `decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)`.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace clrun {

class Tokenizer {
 public:
  static constexpr int64_t kPad = 0, kEos = 1, kUnk = 2;
  static constexpr int64_t kSentinels = 100;  ///< <extra_id_0..99>, ids vocab-1 .. vocab-100

  /// Loads a SentencePiece model; throws InputError naming `path` and `key` (the config key).
  Tokenizer(const std::string& path, const std::string& key);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  /// Piece ids of `text` followed by </s>.
  std::vector<int64_t> encode(const std::string& text) const;
  /// encode(), at most `max_length` ids with </s> kept last. `faithful`: as the upstream collator
  /// (O-LoRA, MIGU) does it, a text longer than that is decoded from its first max_length ids and
  /// encoded again, then truncated (which can give max_length - 1 ids); else the ids are cut.
  std::vector<int64_t> encode(const std::string& text, int64_t max_length, bool faithful) const;
  /// Text of `ids`: pad, </s>, <unk>, sentinels and ids outside the vocabulary are skipped, and
  /// spaces before punctuation removed as Hugging Face's clean_up_tokenization does.
  std::string decode(const std::vector<int64_t>& ids) const;
  /// SentencePiece pieces plus the sentinels (32100 for T5).
  int64_t vocab_size() const;
  const std::string& path() const { return path_; }

 private:
  class Processor;  ///< libsentencepiece's SentencePieceProcessor (see tokenizer.cpp)
  std::unique_ptr<Processor> sp_;
  std::string path_;
};

/// Exact-match normalisation of the upstream metric: lowercase, ASCII punctuation removed,
/// whitespace runs collapsed to one space and trimmed (no article removal).
std::string normalize_answer(const std::string& text);

}  // namespace clrun
