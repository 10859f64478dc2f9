#include "lib/base/strings.h"

#include <algorithm>

namespace fun {

std::vector<std::string> SplitWords(std::string_view text, std::string_view separators) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t start = text.find_first_not_of(separators, i);
    if (start == std::string_view::npos) break;
    const size_t end = std::min(text.find_first_of(separators, start), text.size());
    out.emplace_back(text.substr(start, end - start));
    i = end;
  }
  return out;
}

std::string_view TrimSpace(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const size_t start = text.find_first_not_of(kSpace);
  if (start == std::string_view::npos) return {};
  return text.substr(start, text.find_last_not_of(kSpace) - start + 1);
}

}  // namespace fun
