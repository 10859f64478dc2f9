// protocol.h: the transport protocol of a published or forwarded port, one enum for every room
// (instance config, published ports, the guest's listening-port report, the forwards).
// Header-only: the guest agent uses it without linking fun::base.
#pragma once

#include <string_view>

namespace fun {

enum class Protocol { kTcp, kUdp };

// "tcp", "udp" ("unknown" for a value outside the enum).
constexpr std::string_view ProtocolName(Protocol protocol) {
  switch (protocol) {
    case Protocol::kTcp:
      return "tcp";
    case Protocol::kUdp:
      return "udp";
  }
  return "unknown";
}

}  // namespace fun
