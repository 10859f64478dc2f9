// strings.h: small text helpers shared by the rooms.
//
//   SplitWords(" -s  -m 1G", " \t") == {"-s", "-m", "1G"}
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fun {

// The runs of `text` between any of the `separators` characters; empty runs are dropped.
std::vector<std::string> SplitWords(std::string_view text, std::string_view separators);

}  // namespace fun
