// http_request.h: the head of an HTTP/1.1 request, parsed (pure: bytes in, request out; fuzzed).
//
// For the read-only image registry fun-guestd serves inside the VM (containerd pulls the pause
// image from it), so only what a registry client sends matters: a request line and headers.
// Bodies are not read. Bounded: the head at most kMaxHead bytes, kMaxHeaders headers.
//
//   FUN_ASSIGN_OR_RETURN(auto got, ParseHttpRequestHead(buffered));
//   if (!got) continue;                 // need more bytes
//   const HttpRequest& r = got->first;  // r.method "GET", r.target "/v2/", r.Header("host")
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/base/status.h"

namespace fun::net {

inline constexpr size_t kMaxHttpHead = 8192;
inline constexpr size_t kMaxHttpHeaders = 64;

struct HttpRequest {
  std::string method;   // "GET", "HEAD", ... (token characters only)
  std::string target;   // origin-form: starts with '/', no spaces or control characters
  std::string version;  // "HTTP/1.1" or "HTTP/1.0"
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, values trimmed
  // The first header of that (lower-case) name, or nullptr.
  const std::string* Header(std::string_view name) const;
};

// nullopt while the head (ending in an empty line) is incomplete; the request and the bytes
// the head took once complete; InvalidArgument for anything that is not an HTTP/1.x request
// head, or one over the bounds.
StatusOr<std::optional<std::pair<HttpRequest, size_t>>> ParseHttpRequestHead(
    std::string_view buffered);

}  // namespace fun::net
