// agent_client.h: the host end of the agent channel: open a connection to the guest agent,
// authenticate, ask for a target, and hand back the connected stream.
//
//   AgentEndpoint ep{.address = *ParseSocketAddress("tcp:127.0.0.1:41234"), .token = token};
//   FUN_ASSIGN_OR_RETURN(UniqueFd s, DialAgent(ep, {.kind = agent::Kind::kContainerd}, 5s));
//   // s now carries containerd's gRPC bytes
//   FUN_ASSIGN_OR_RETURN(AgentPing p, PingAgent(ep, 2s));   // p.containerd_ready, p.uptime_s
//   FUN_ASSIGN_OR_RETURN(auto ports, ListGuestPorts(ep, 2s));  // tcp 0.0.0.0 8080, ...
//
// The reply is read with exact-size reads, so no byte that the target sends right after it
// (an HTTP/2 server speaks first) is ever swallowed.
// Thread-safety: functions are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/socket.h"
#include "lib/base/status.h"
#include "lib/net/agent_protocol.h"
#include "lib/net/listen_ports.h"

namespace fun::agent {

struct AgentEndpoint {
  SocketAddress address;  // where the agent channel is reachable from the host
  Token token{};
  // Non-zero: `address` is a vsock connect socket (HyperKit's virtio-sock `<dir>/connect`, or
  // the `<instance>/vsock.connect` of fun-hostd's own vhost-user device under QEMU) and the
  // agent listens on this vsock port in the guest. Each dial first writes the 18-byte line
  // vsock::ConnectLine(kGuestCid, port); no reply comes, the stream then is the guest
  // connection (closed if nothing listens there). HyperKit's is unverified: no Mac here.
  uint32_t vsock_connect_port = 0;
};

// The guest context id fun's VMs get (hyperkit's virtio-sock guest_cid=, and fun-hostd's
// vhost-user vsock device's).
inline constexpr uint32_t kGuestCid = 3;
// The port fun-guestd listens on in the VM (tcp, and vsock where the VM has it).
inline constexpr uint16_t kGuestAgentPort = 7070;

// Reads a 32-byte token file (the instance's secret), refusing any other size.
StatusOr<Token> ReadTokenFile(const std::string& path);
// Writes 32 fresh random bytes to `path` with mode 0600, atomically: fails if it exists
// (errno EEXIST), and a reader never sees a partial file.
StatusOr<Token> CreateTokenFile(const std::string& path);
// The token at `path`, created if absent. Safe when several processes race to create it:
// all of them get the one token that landed.
StatusOr<Token> EnsureTokenFile(const std::string& path);

// Connects and sends `request` (its token is replaced by the endpoint's). A reply other than
// kOk becomes an error carrying the guest's message: kBadToken -> PermissionDenied,
// kUnavailable -> Unavailable, others -> FailedPrecondition.
StatusOr<UniqueFd> DialAgent(const AgentEndpoint& ep, Request request,
                             std::chrono::milliseconds timeout);

// A shared folder as the guest sees it (guest/guestd/shares.h).
struct GuestShareState {
  std::string tag, path;
  bool read_only = false;
  std::string status;  // "waiting", "mounted", "relaying", "failed"
  std::string error;
  bool answering = false;   // a statfs of the mount came back (mounted shares only)
  std::string probe_error;  // why not
};
// The VM's data disk (where containerd keeps images and containers) as the guest measured it.
struct GuestDiskState {
  std::string path;
  uint64_t total_bytes = 0;
  uint64_t avail_bytes = 0;
  std::string error;  // why it could not be measured ("" when the sizes are valid)
};
struct AgentPing {
  std::string raw;  // the guest's JSON
  bool containerd_ready = false;
  double uptime_s = 0;
  std::string version;
  int open_fds = -1;                    // the agent's own, -1 when it does not say
  std::vector<GuestShareState> shares;  // entries that are not of the expected form are left out
  bool reports_shares = false;          // the guest sent a "shares" list (an older one does not)
  // The guest's CLOCK_REALTIME when it answered (0: not said).
  int64_t guest_time_unix_ns = 0;
  std::optional<GuestDiskState> data_disk;  // absent when the guest did not say
  // Set by PingAgent: the host's CLOCK_REALTIME just before the request went out and just
  // after the answer came back (the guest's time lies between, give or take the clocks' drift).
  int64_t host_sent_unix_ns = 0;
  int64_t host_received_unix_ns = 0;
};
// Decodes a kPing answer (bytes from the guest: never trusted). DataLoss when it is not a JSON
// object; fields of the wrong type are left at their defaults; `raw` keeps the text.
StatusOr<AgentPing> ParseAgentPing(std::string_view json);
StatusOr<AgentPing> PingAgent(const AgentEndpoint& ep, std::chrono::milliseconds timeout);

// The guest's clock against the host's, from one ping. The guest read its clock between the
// host's two stamps, so the true offset lies within uncertainty_ns (half the round trip) of
// offset_ns (> 0: the guest is ahead); excess_ns is |offset_ns| beyond that (>= 0).
struct ClockOffset {
  int64_t offset_ns = 0;
  int64_t uncertainty_ns = 0;
  int64_t excess_ns = 0;
};
ClockOffset MeasureClockOffset(const AgentPing& ping);

// Steps the guest's clock by `delta_ns` (kTimeSync: relative, so a guest that gets to the
// request late still lands right); the guest's answer ("clock stepped by ...") on success.
StatusOr<std::string> StepGuestClock(const AgentEndpoint& ep, int64_t delta_ns,
                                     std::chrono::milliseconds timeout);

// A reply as a Status: OK for kOk; the guest's message with `what` in front otherwise
// (kBadToken: PermissionDenied, kUnavailable: Unavailable, else FailedPrecondition).
Status ReplyToStatus(const Reply& r, const std::string& what);

// Sends a request that has no stream after it (kShutdown, kTimeSync) and returns the reply.
StatusOr<Reply> CallAgent(const AgentEndpoint& ep, Request request,
                          std::chrono::milliseconds timeout);

// The sockets listening in the VM (kPorts; see lib/net/listen_ports.h), for auto-forwarding.
// `truncated`, when given, says whether the guest had more than one reply holds (the list is
// then its first part). A report that does not decode is DataLoss: the guest is not trusted.
StatusOr<std::vector<net::ListenPort>> ListGuestPorts(const AgentEndpoint& ep,
                                                      std::chrono::milliseconds timeout,
                                                      bool* truncated = nullptr);

}  // namespace fun::agent
