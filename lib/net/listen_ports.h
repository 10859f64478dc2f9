// listen_ports.h: the sockets listening in the VM, for Lima-style auto-forwarding: fun-guestd
// reads them from /proc/net/{tcp,tcp6,udp,udp6} and reports them to the host (agent kind
// kPorts), which can then forward what appears. Pure: text in, ports out, and back.
//
// The report is line-based text, one socket per line, in the agent Reply's message:
//
//   tcp 0.0.0.0 8080
//   tcp ::1 9000
//   udp 127.0.0.1 53
//   truncated              (only when more sockets listened than one reply holds)
//
// The guest writes it, so the host decodes it strictly (bad protocol, address not in canonical
// inet_ntop form, port outside 1..65535, overlong, too many lines: an error naming the line)
// and fuzzes the decoder (fuzz/listen_ports_fuzzer.cc). What decodes re-encodes to the same
// bytes.
//
//   FUN_ASSIGN_OR_RETURN(auto tcp, ParseProcNetSockets(text, Protocol::kTcp, false));
//   FUN_ASSIGN_OR_RETURN(std::string wire, EncodeListenPorts(tcp));   // in the guest
//   FUN_ASSIGN_OR_RETURN(ListenPortReport r, DecodeListenPorts(wire));  // on the host
//
// These are the sockets of the network namespace that reads /proc/net: for fun-guestd, the
// VM's own (its services, host-network containers), not those of pods on the CNI bridge.
//
// Thread-safety: pure functions.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/protocol.h"
#include "lib/base/status.h"

namespace fun::net {

using ::fun::Protocol;  // lib/base/protocol.h
using ::fun::ProtocolName;

struct ListenPort {
  Protocol protocol = Protocol::kTcp;
  std::string address;  // the bound address as inet_ntop writes it: "0.0.0.0", "::1", ...
  uint16_t port = 0;
  friend bool operator==(const ListenPort&, const ListenPort&) = default;
  friend auto operator<=>(const ListenPort&, const ListenPort&) = default;
};

// Parses the text of /proc/net/tcp (ipv6 false), tcp6 (true), udp or udp6: the TCP sockets in
// state LISTEN (0A), the UDP sockets that are bound and unconnected (state 07) to a non-zero
// port. Sorted, without duplicates (SO_REUSEPORT groups list each socket). The header line is
// skipped; a line that is not a socket of that file's form is an error naming it.
//
// /proc prints an address as 32-bit words in the byte order of the kernel that wrote it, so
// the text is decoded in this machine's byte order: parse the text where it was read.
StatusOr<std::vector<ListenPort>> ParseProcNetSockets(std::string_view text, Protocol protocol,
                                                      bool ipv6);

// At most this many lines in one report (and kMaxMessageSize bytes, agent_protocol.h).
inline constexpr size_t kMaxListenPorts = 1024;

struct ListenPortReport {
  std::vector<ListenPort> ports;
  bool truncated = false;  // the guest had more than one report holds; these are the first
  friend bool operator==(const ListenPortReport&, const ListenPortReport&) = default;
};

// Encodes `ports` in order. What does not fit in one report (kMaxListenPorts lines,
// kMaxMessageSize bytes with the marker) is left out and the report marked "truncated", as it
// is when `truncated` says the list was cut before. An entry the decoder would refuse (an
// address not in canonical form, port 0) is InvalidArgument.
StatusOr<std::string> EncodeListenPorts(const std::vector<ListenPort>& ports,
                                        bool truncated = false);
StatusOr<ListenPortReport> DecodeListenPorts(std::string_view text);

}  // namespace fun::net
