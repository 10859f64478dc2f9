// The host's decoder of the guest's kPing answer (lib/net/agent_client.h: ParseAgentPing): the
// JSON comes from the VM, so whatever the bytes, no crash, and what decodes is consistent.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lib/net/agent_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto p = fun::agent::ParseAgentPing(text);
  if (!p.ok()) return 0;
  if (p->raw != text) std::abort();
  if (p->data_disk && p->data_disk->error.empty() &&
      p->data_disk->avail_bytes > p->data_disk->total_bytes) {
    std::abort();
  }
  for (const auto& s : p->shares) {
    if (s.tag.empty() || s.status.empty()) std::abort();
  }
  return 0;
}
