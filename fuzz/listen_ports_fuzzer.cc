// Fuzzes the listening-port report from both ends: the host decoding what a guest sent (the
// guest is not trusted), and the guest parsing /proc/net text. A report that decodes
// re-encodes to the same bytes; whatever the /proc parser returns is sorted, unique, with
// non-zero ports, and encodes and decodes back equal (its first part, marked truncated, when
// it is longer than one report holds).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <tuple>

#include "lib/net/listen_ports.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fun::net;
  const std::string_view b(reinterpret_cast<const char*>(data), size);
  if (auto r = DecodeListenPorts(b); r.ok()) {
    if (r->ports.size() > kMaxListenPorts) __builtin_trap();
    auto again = EncodeListenPorts(r->ports, r->truncated);
    if (!again.ok() || *again != b) __builtin_trap();
  }
  for (auto [protocol, ipv6] :
       {std::tuple{Protocol::kTcp, false}, std::tuple{Protocol::kTcp, true},
        std::tuple{Protocol::kUdp, false}, std::tuple{Protocol::kUdp, true}}) {
    auto parsed = ParseProcNetSockets(b, protocol, ipv6);
    if (!parsed.ok()) continue;
    const auto& ports = *parsed;
    if (!std::is_sorted(ports.begin(), ports.end()) ||
        std::adjacent_find(ports.begin(), ports.end()) != ports.end()) {
      __builtin_trap();
    }
    for (const ListenPort& p : ports) {
      if (p.port == 0 || p.protocol != protocol) __builtin_trap();
    }
    auto wire = EncodeListenPorts(ports);
    if (!wire.ok()) __builtin_trap();
    auto back = DecodeListenPorts(*wire);
    if (!back.ok()) __builtin_trap();
    if (back->ports.size() > ports.size()) __builtin_trap();
    if (back->truncated != (back->ports.size() < ports.size())) __builtin_trap();
    if (!std::equal(back->ports.begin(), back->ports.end(), ports.begin())) __builtin_trap();
  }
  return 0;
}
