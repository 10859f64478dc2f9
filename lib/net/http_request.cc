#include "lib/net/http_request.h"

#include <fmt/format.h>

#include <algorithm>

namespace fun::net {

namespace {

Status Bad(std::string_view what) {
  return InvalidArgumentError(fmt::format("not an HTTP request: {}", what));
}

// RFC 9110 token characters.
bool TokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool Token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), TokenChar); }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

const std::string* HttpRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

StatusOr<std::optional<std::pair<HttpRequest, size_t>>> ParseHttpRequestHead(
    std::string_view buffered) {
  const size_t end = buffered.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (buffered.size() >= kMaxHttpHead) return Bad("the head is longer than 8 KiB");
    // Fail early on what cannot become a request line.
    for (char c : buffered.substr(0, std::min<size_t>(buffered.size(), 16))) {
      if (c == ' ' || c == '\r' || c == '\n') break;
      if (!TokenChar(c)) return Bad("the method has characters a method cannot have");
    }
    return std::optional<std::pair<HttpRequest, size_t>>();
  }
  if (end + 4 > kMaxHttpHead) return Bad("the head is longer than 8 KiB");
  std::string_view head = buffered.substr(0, end);
  const size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  head = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);

  HttpRequest r;
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return Bad("the request line is not METHOD TARGET VERSION");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!Token(method)) return Bad("bad method");
  if (target.empty() || target.front() != '/' || target.size() > 2048) {
    return Bad("the target is not a path (origin-form, at most 2048 bytes)");
  }
  for (char c : target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return Bad("control character in the target");
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0")
    return Bad("the version is not HTTP/1.0 or 1.1");
  r.method = std::string(method);
  r.target = std::string(target);
  r.version = std::string(version);

  while (!head.empty()) {
    const size_t next = head.find("\r\n");
    const std::string_view h = head.substr(0, next);
    head = next == std::string_view::npos ? std::string_view() : head.substr(next + 2);
    if (r.headers.size() >= kMaxHttpHeaders) return Bad("more than 64 headers");
    const size_t colon = h.find(':');
    if (colon == std::string_view::npos || !Token(h.substr(0, colon))) {
      return Bad("a header line is not NAME: VALUE");
    }
    const std::string_view value = Trim(h.substr(colon + 1));
    for (char c : value) {
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
        return Bad("control character in a header value");
      }
    }
    std::string name(h.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; });
    r.headers.emplace_back(std::move(name), std::string(value));
  }
  return std::optional<std::pair<HttpRequest, size_t>>(std::make_pair(std::move(r), end + 4));
}

}  // namespace fun::net
