#include "lib/net/share_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

namespace fun::net {
namespace {

constexpr std::string_view kHeader = "fun-shares 1";

bool IsTagChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

Status CheckTag(std::string_view tag) {
  if (tag.empty() || tag.size() > kMaxShareTableTagLength ||
      !std::all_of(tag.begin(), tag.end(), IsTagChar)) {
    return InvalidArgumentError(
        fmt::format("share tag {:?} is not 1 to {} characters from a-z, 0-9, _ and -", tag,
                    kMaxShareTableTagLength));
  }
  return OkStatus();
}

Status CheckPath(std::string_view path) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format("share path {:?} {}", path, why));
  };
  if (path.empty() || path.front() != '/') return bad("is not absolute");
  if (path == "/") return bad("is the root directory");
  if (path.size() > kMaxShareTablePathLength) {
    return bad(fmt::format("is longer than {} bytes", kMaxShareTablePathLength));
  }
  if (path.back() == '/') return bad("ends with /");
  for (char c : path) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return bad("has a control character");
  }
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(start, end - start);
    if (part.empty()) return bad("has an empty component (//)");
    if (part == "." || part == "..") return bad("has a . or .. component");
    start = end + 1;
  }
  return OkStatus();
}

bool IsCacheMode(std::string_view c) { return c == "mmap" || c == "loose" || c == "none"; }

Status CheckTable(const std::vector<GuestShare>& shares) {
  if (shares.size() > kMaxShares) {
    return InvalidArgumentError(
        fmt::format("{} shares; the VM takes at most {}", shares.size(), kMaxShares));
  }
  std::set<std::string_view> tags, paths;
  for (const GuestShare& s : shares) {
    FUN_RETURN_IF_ERROR(CheckTag(s.tag));
    FUN_RETURN_IF_ERROR(CheckPath(s.guest_path));
    if (!IsCacheMode(s.cache)) {
      return InvalidArgumentError(
          fmt::format("share cache mode {:?} is not mmap, loose or none", s.cache));
    }
    if (!tags.insert(s.tag).second) {
      return InvalidArgumentError(fmt::format("share tag {:?} appears twice", s.tag));
    }
    if (!paths.insert(s.guest_path).second) {
      return InvalidArgumentError(fmt::format("share path {:?} appears twice", s.guest_path));
    }
  }
  return OkStatus();
}

}  // namespace

StatusOr<std::string> EncodeShareTable(const std::vector<GuestShare>& shares) {
  FUN_RETURN_IF_ERROR(CheckTable(shares));
  std::string out = fmt::format("{}\n", kHeader);
  for (const GuestShare& s : shares) {
    out += fmt::format("{} {} {} {}\n", s.tag, s.read_only ? "ro" : "rw", s.cache, s.guest_path);
  }
  return out;
}

StatusOr<std::vector<GuestShare>> DecodeShareTable(std::string_view text) {
  std::vector<GuestShare> shares;
  size_t line_no = 0;
  bool header = false;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    if (nl == std::string_view::npos) {
      return InvalidArgumentError(
          fmt::format("share table line {}: no newline at the end", line_no + 1));
    }
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    ++line_no;
    auto bad = [&](const Status& s) {
      return InvalidArgumentError(fmt::format("share table line {}: {}", line_no, s.message()));
    };
    if (!header) {
      if (line != kHeader) {
        return bad(InvalidArgumentError(fmt::format("expected {:?}", kHeader)));
      }
      header = true;
      continue;
    }
    if (shares.size() == kMaxShares) {
      return bad(InvalidArgumentError(fmt::format("more than {} shares", kMaxShares)));
    }
    size_t sp1 = line.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    size_t sp3 = sp2 == std::string_view::npos ? sp2 : line.find(' ', sp2 + 1);
    if (sp3 == std::string_view::npos) {
      return bad(InvalidArgumentError("expected \"TAG ro|rw CACHE PATH\""));
    }
    GuestShare s;
    s.tag = std::string(line.substr(0, sp1));
    std::string_view mode = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (mode != "ro" && mode != "rw") {
      return bad(InvalidArgumentError(fmt::format("mode {:?} is not ro or rw", mode)));
    }
    s.read_only = mode == "ro";
    s.cache = std::string(line.substr(sp2 + 1, sp3 - sp2 - 1));
    if (!IsCacheMode(s.cache)) {
      return bad(
          InvalidArgumentError(fmt::format("cache mode {:?} is not mmap, loose or none", s.cache)));
    }
    s.guest_path = std::string(line.substr(sp3 + 1));
    if (Status st = CheckTag(s.tag); !st.ok()) return bad(st);
    if (Status st = CheckPath(s.guest_path); !st.ok()) return bad(st);
    for (const GuestShare& o : shares) {
      if (o.tag == s.tag) return bad(InvalidArgumentError("the tag appears twice"));
      if (o.guest_path == s.guest_path) return bad(InvalidArgumentError("the path appears twice"));
    }
    shares.push_back(std::move(s));
  }
  if (!header) return InvalidArgumentError("share table: empty (no version line)");
  return shares;
}

std::string SharePortName(std::string_view tag) {
  return fmt::format("{}{}", kSharePortPrefix, tag);
}

std::string NinePMountOptions(const GuestShare& share, const NinePMountSettings& settings,
                              std::string_view transport) {
  uint32_t msize =
      transport == "virtio" ? std::min(settings.msize, kVirtio9pMaxMsize) : settings.msize;
  return fmt::format("trans={},version=9p2000.L,aname={},msize={},cache={},access=client",
                     transport, share.tag, msize,
                     settings.cache_override.empty() ? share.cache : settings.cache_override);
}

}  // namespace fun::net
