// Fuzzes the UDP framing of the agent channel the way a stream consumer meets it (fun-guestd's
// UDP session, the host's UDP forwarder): bytes arrive in chunks of any size, and the consumer
// decodes every complete frame it holds and keeps the rest for later. Whatever the chunking,
// the same datagrams come out as from the whole stream at once, each re-encodes to exactly the
// bytes it took, and what is left at the end is the start of one frame, never more.
//
// Input: byte 0 seeds the chunk sizes; the rest is the stream from the peer.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/net/agent_protocol.h"

namespace {

using fun::agent::DecodeDatagram;
using fun::agent::EncodeDatagram;

// Decodes every complete frame in `buffered`; returns the bytes they took. Any 2-byte length
// is a valid frame, so the decoder never fails.
size_t DecodeAll(std::string_view buffered, std::vector<std::string>* out) {
  size_t at = 0;
  for (;;) {
    auto d = DecodeDatagram(buffered.substr(at));
    if (!d.ok()) __builtin_trap();
    if (!d->has_value()) return at;
    auto [payload, used] = **d;
    if (used != 2 + payload.size() || used > buffered.size() - at) __builtin_trap();
    auto again = EncodeDatagram(payload);
    if (!again.ok() || *again != buffered.substr(at, used)) __builtin_trap();
    out->emplace_back(payload);
    at += used;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint32_t rng = data[0];
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);

  std::vector<std::string> whole;
  const size_t used = DecodeAll(stream, &whole);
  const std::string_view rest = stream.substr(used);
  // The rest is an incomplete frame: a lone length byte, or fewer bytes than declared.
  if (rest.size() >= 2) {
    size_t declared =
        static_cast<uint8_t>(rest[0]) | static_cast<size_t>(static_cast<uint8_t>(rest[1])) << 8;
    if (rest.size() >= 2 + declared) __builtin_trap();
  }

  std::vector<std::string> chunked;
  std::string buffered;
  for (size_t fed = 0; fed < stream.size();) {
    rng = rng * 1103515245u + 12345u;
    const uint32_t r = rng >> 8;
    const size_t chunk = r % 4 == 0 ? 1 + r % 70000 : 1 + r % 17;  // mostly small, some huge
    buffered.append(stream.substr(fed, chunk));
    fed += std::min(chunk, stream.size() - fed);
    buffered.erase(0, DecodeAll(buffered, &chunked));
  }
  if (chunked != whole || buffered != rest) __builtin_trap();
  return 0;
}
