// The guest's decoder of the share table fun-hostd hands it (lib/net/share_table.h): whatever
// the bytes, no crash, and what decodes re-encodes to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lib/net/share_table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto shares = fun::net::DecodeShareTable(text);
  if (!shares.ok()) return 0;
  auto again = fun::net::EncodeShareTable(*shares);
  if (!again.ok() || *again != text) std::abort();
  for (const auto& s : *shares) (void)fun::net::NinePMountOptions(s, {});
  return 0;
}
