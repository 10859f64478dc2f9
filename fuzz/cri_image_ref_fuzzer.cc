// Fuzzes the image reference parser: references come from command lines and config files.
// Checks that whatever parses canonicalizes to something that parses to itself.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lib/cri/image_ref.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  auto r = fun::cri::ParseImageRef(s);
  if (!r.ok()) return 0;
  const std::string canon = r->Canonical();
  auto again = fun::cri::ParseImageRef(canon);
  if (!again.ok() || again->Canonical() != canon) __builtin_trap();
  return 0;
}
