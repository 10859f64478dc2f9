// strings.h: small text helpers shared by the rooms.
//
//   SplitWords(" -s  -m 1G", " \t") == {"-s", "-m", "1G"}
//   TrimSpace(" 1234\n") == "1234"
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fun {

// The runs of `text` between any of the `separators` characters; empty runs are dropped.
std::vector<std::string> SplitWords(std::string_view text, std::string_view separators);

// `text` without the spaces, tabs, CRs and newlines at either end (a view into `text`).
std::string_view TrimSpace(std::string_view text);

// 1 to 8 hex digits (either case) as a number; nullopt for anything else ("", "0x1", "1 ").
std::optional<uint32_t> ParseHex32(std::string_view text);

}  // namespace fun
