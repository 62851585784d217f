// Small string helpers shared by the config and registry error messages.
#pragma once
#include <string>
#include <vector>

namespace clrun {

/// Registry key form of a name: lower case, '_' becomes '-' ("Fashion_MNIST" -> "fashion-mnist").
std::string normalize_name(const std::string& name);

/// " (did you mean 'x'?)" for the closest candidate within a small edit distance, else "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

/// Levenshtein distance.
std::size_t edit_distance(const std::string& a, const std::string& b);

/// An error message as the CLI prints it: one line, plus at most one line starting "hint: ".
/// Other line breaks (a third-party message, a multi-line value quoted from the input) become
/// "; " and other control characters are escaped, so no input can make an error span a screen.
std::string one_line_error(const std::string& message);

/// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool is_valid_utf8(const std::string& s);

std::string join(const std::vector<std::string>& parts, const std::string& sep);

/// Whether `name` matches `pattern`, where '*' matches any run of characters (dots included)
/// and everything else matches itself: parameter and layer name patterns (`blocks.*.attn.*`).
bool glob_match(const std::string& pattern, const std::string& name);

}  // namespace clrun
