// Fuzzes the HTTP request-head parser of the VM's image registry (any process in the VM that
// reaches 127.0.0.1:5001 can send it bytes). Checks its bounds on arbitrary input.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lib/net/http_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  auto got = fun::net::ParseHttpRequestHead(s);
  if (got.ok() && got->has_value()) {
    const auto& [r, used] = **got;
    if (used > s.size() || used > fun::net::kMaxHttpHead) __builtin_trap();
    if (r.headers.size() > fun::net::kMaxHttpHeaders || r.target.empty() || r.target[0] != '/') {
      __builtin_trap();
    }
  }
  return 0;
}
