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
#include <string>
#include <vector>

#include "lib/base/socket.h"
#include "lib/base/status.h"
#include "lib/net/agent_protocol.h"
#include "lib/net/listen_ports.h"

namespace fun::agent {

struct AgentEndpoint {
  SocketAddress address;  // where the agent channel is reachable from the host
  Token token{};
};

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
struct AgentPing {
  std::string raw;  // the guest's JSON
  bool containerd_ready = false;
  double uptime_s = 0;
  std::string version;
  int open_fds = -1;                    // the agent's own, -1 when it does not say
  std::vector<GuestShareState> shares;  // entries that are not of the expected form are left out
  bool reports_shares = false;          // the guest sent a "shares" list (an older one does not)
};
StatusOr<AgentPing> PingAgent(const AgentEndpoint& ep, std::chrono::milliseconds timeout);

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
