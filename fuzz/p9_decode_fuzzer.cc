// Fuzzes the 9P codec's decoder with arbitrary bytes: every input decodes or is refused with an
// error, never a crash or an out-of-bounds read (ASan); and whatever decodes re-encodes to the
// very same bytes (the codec has one layout per message, both directions).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "lib/p9/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // As a stream: frame by NextMessageSize, then decode each frame.
  while (!bytes.empty()) {
    auto next = fun::p9::NextMessageSize(bytes, 1 << 20);
    if (!next.ok() || !next->has_value() || **next > bytes.size()) break;
    std::string_view frame = bytes.substr(0, **next);
    bytes.remove_prefix(**next);
    auto decoded = fun::p9::Decode(frame);
    if (!decoded.ok()) {
      if (decoded.status().message().empty()) __builtin_trap();
      continue;
    }
    std::string again;
    if (!fun::p9::Encode(decoded->tag, decoded->msg, &again).ok() || again != frame) {
      std::fprintf(stderr, "re-encoding %s differs\n", fun::p9::Describe(decoded->msg).c_str());
      __builtin_trap();
    }
    (void)fun::p9::Describe(decoded->msg);
    if (auto* rd = std::get_if<fun::p9::Rreaddir>(&decoded->msg)) {
      (void)fun::p9::ParseDirents(rd->data.bytes);
    }
  }
  return 0;
}
