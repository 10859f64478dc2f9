#include "lib/cri/image_ref.h"

#include <fmt/format.h>

#include <algorithm>

namespace fun::cri {

namespace {

constexpr size_t kMaxName = 255;
constexpr std::string_view kForm =
    "expected [DOMAIN[:PORT]/]NAME[:TAG][@DIGEST], e.g. busybox:latest";

bool LowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool Alnum(char c) { return LowerAlnum(c) || (c >= 'A' && c <= 'Z'); }
bool HexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// alpha-numeric (separator alpha-numeric)*, separator = '.' | '_' | '__' | '-'+
bool PathComponent(std::string_view c) {
  if (c.empty() || !LowerAlnum(c.front()) || !LowerAlnum(c.back())) return false;
  for (size_t i = 0; i < c.size();) {
    if (LowerAlnum(c[i])) {
      ++i;
      continue;
    }
    const size_t start = i;
    if (c[i] == '.') {
      ++i;
    } else if (c[i] == '_') {
      ++i;
      if (i < c.size() && c[i] == '_') ++i;
    } else if (c[i] == '-') {
      while (i < c.size() && c[i] == '-') ++i;
    } else {
      return false;
    }
    if (i == start || i >= c.size() || !LowerAlnum(c[i])) return false;
  }
  return true;
}

// domain-component ('.' domain-component)* (':' port)?, or an IPv6 literal in brackets.
bool Domain(std::string_view d) {
  if (d.empty()) return false;
  std::string_view host = d;
  if (d.front() == '[') {
    const size_t close = d.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    for (char c : d.substr(1, close - 1)) {
      if (!HexDigit(c) && c != ':' && c != '.') return false;
    }
    host = {};
    d.remove_prefix(close + 1);
    if (d.empty()) return true;
    if (d.front() != ':') return false;
  } else if (const size_t colon = d.rfind(':'); colon != std::string_view::npos) {
    host = d.substr(0, colon);
    d = d.substr(colon);
  } else {
    d = {};
  }
  if (!d.empty()) {  // ":port"
    const std::string_view port = d.substr(1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
  }
  size_t start = 0;
  while (start <= host.size() && !host.empty()) {
    const size_t dot = host.find('.', start);
    const std::string_view part =
        host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (part.empty() || !Alnum(part.front()) || !Alnum(part.back())) return false;
    for (char c : part) {
      if (!Alnum(c) && c != '-') return false;
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return true;
}

bool Tag(std::string_view t) {
  if (t.empty() || t.size() > 128) return false;
  auto word = [](char c) { return Alnum(c) || c == '_'; };
  if (!word(t.front())) return false;
  return std::all_of(t.begin(), t.end(), [&](char c) { return word(c) || c == '.' || c == '-'; });
}

bool Digest(std::string_view d) {
  const size_t colon = d.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  const std::string_view algo = d.substr(0, colon), hex = d.substr(colon + 1);
  if (!LowerAlnum(algo.front()) || !LowerAlnum(algo.back())) return false;
  for (char c : algo) {
    if (!LowerAlnum(c) && c != '+' && c != '.' && c != '_' && c != '-') return false;
  }
  return hex.size() >= 32 && hex.size() <= 256 && std::all_of(hex.begin(), hex.end(), HexDigit);
}

}  // namespace

std::string ImageRef::Canonical() const {
  std::string s = domain + "/" + path;
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

StatusOr<ImageRef> ParseImageRef(std::string_view ref) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("invalid image reference \"{:.120}\": {}; {}", ref, why, kForm));
  };
  if (ref.empty()) return bad("it is empty");
  if (ref.size() > 512) return bad("it is longer than 512 characters");
  ImageRef r;
  std::string_view rest = ref;
  if (const size_t at = rest.find('@'); at != std::string_view::npos) {
    if (!Digest(rest.substr(at + 1)))
      return bad("the digest is not ALGORITHM:HEX (32+ hex digits)");
    r.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
  }
  // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
  const size_t slash = rest.rfind('/');
  const size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    const std::string_view tag = rest.substr(colon + 1);
    if (!Tag(tag)) {
      return bad(
          fmt::format("the tag \"{:.130}\" is not 1-128 of letters, digits, _ . - "
                      "(not starting with . or -)",
                      tag));
    }
    r.tag = std::string(tag);
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) return bad("the name is empty");
  if (rest.size() > kMaxName) return bad("the name is longer than 255 characters");
  // The domain: a first component with '.' or ':' (or "localhost"), or an upper-case letter
  // (which a path may not have).
  const size_t first_slash = rest.find('/');
  if (first_slash != std::string_view::npos) {
    const std::string_view first = rest.substr(0, first_slash);
    const bool is_domain =
        first.find_first_of(".:[") != std::string_view::npos || first == "localhost" ||
        std::any_of(first.begin(), first.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
    if (is_domain) {
      if (!Domain(first))
        return bad(fmt::format("\"{:.80}\" is not a registry host[:port]", first));
      r.domain = std::string(first);
      rest = rest.substr(first_slash + 1);
    }
  }
  if (rest.empty()) return bad("the name is empty");
  size_t start = 0;
  for (;;) {
    const size_t next = rest.find('/', start);
    const std::string_view part =
        rest.substr(start, next == std::string_view::npos ? std::string_view::npos : next - start);
    if (!PathComponent(part)) {
      return bad(fmt::format(
          "\"{:.80}\" is not a name component (lowercase letters and digits, joined by . _ or -)",
          part));
    }
    if (next == std::string_view::npos) break;
    start = next + 1;
  }
  r.path = std::string(rest);
  if (r.domain.empty()) {
    r.domain = "docker.io";
    if (r.path.find('/') == std::string::npos) r.path = "library/" + r.path;
  }
  if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
  // The limit holds for the name as stored (with the domain containerd adds), so that what
  // parses once parses again in its canonical form (the fuzzer found the difference).
  if (r.domain.size() + 1 + r.path.size() > kMaxName) {
    return bad("the name is longer than 255 characters (with its registry)");
  }
  return r;
}

}  // namespace fun::cri
