// Fuzzes the agent channel codec from both ends: the guest decoding a host's request, the host
// decoding a guest's reply and UDP frames. Anything decodes or fails cleanly; whatever decodes
// re-encodes to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lib/net/agent_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fun::agent;
  std::string_view b(reinterpret_cast<const char*>(data), size);
  if (auto r = DecodeRequest(b); r.ok() && r->has_value()) {
    auto again = EncodeRequest((*r)->first);
    if (!again.ok() || *again != b.substr(0, (*r)->second)) __builtin_trap();
    (void)ParseTarget((*r)->first.target);
  }
  if (auto r = DecodeReply(b); r.ok() && r->has_value()) {
    auto again = EncodeReply((*r)->first);
    if (!again.ok() || *again != b.substr(0, (*r)->second)) __builtin_trap();
  }
  std::string_view rest = b;
  for (;;) {
    auto d = DecodeDatagram(rest);
    if (!d.ok() || !d->has_value()) break;
    if ((*d)->second > rest.size() || (*d)->second == 0) __builtin_trap();
    rest.remove_prefix((*d)->second);
  }
  return 0;
}
