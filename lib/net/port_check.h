// port_check.h: can this process publish a port on a host address? The one place that turns a
// failed bind(2) into what a user can act on, used before a container starts (`fun run -p`)
// and by the forwards that then own the port.
//
//   if (Status s = net::BindHostPort(net::HostPort{.ip = "127.0.0.1", .port = 8080}); !s.ok())
//     ...  // "127.0.0.1:8080/tcp is already in use on this host: ..."
//
// Thread-safety: pure functions apart from the socket they open and close.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lib/base/protocol.h"
#include "lib/base/status.h"
#include "lib/base/unique_fd.h"

namespace fun::net {

struct HostPort {
  ::fun::Protocol protocol = ::fun::Protocol::kTcp;
  std::string ip = "127.0.0.1";  // an IPv4 or IPv6 literal
  uint16_t port = 0;
  friend bool operator==(const HostPort&, const HostPort&) = default;
};

// "127.0.0.1:8080/tcp", "[::1]:53/udp".
std::string FormatHostPort(const HostPort& hp);

// A socket bound to the address (SO_REUSEADDR for TCP, as servers do; listening for TCP with
// `backlog`), or an error naming the address and what to do: in use (pick another host port),
// permission (a port below 1024 needs privileges: net.ipv4.ip_unprivileged_port_start on
// Linux), not an address of this host.
StatusOr<UniqueFd> BindHostPort(const HostPort& hp, int backlog = 1024);

// The same explanation for an errno from bind(2) (kept apart for callers with their own socket).
Status ExplainBindError(int err, const HostPort& hp);

}  // namespace fun::net
