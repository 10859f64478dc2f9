// Fuzzes the connect line of fun-hostd's vsock connect socket (lib/vsock/packet.h,
// ParseConnectLine): whatever the bytes, no crash, and a line that parses is 18 bytes that
// ConnectLine writes again the same, but for the case of its hex digits.
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "lib/vsock/packet.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto t = fun::vsock::ParseConnectLine(std::span<const uint8_t>(data, size));
  if (!t.ok()) return 0;
  std::string again = fun::vsock::ConnectLine(t->cid, t->port);
  bool same = again.size() == size;
  for (size_t i = 0; same && i < size; ++i) {
    same = again[i] == std::tolower(data[i]);
  }
  if (!same) {
    std::fprintf(stderr, "vsock_connect_line_fuzzer: a parsed line does not round-trip\n");
    std::abort();
  }
  return 0;
}
