// instance_agent.h: how a CLI reaches the guest agent of a running instance: the port fun-hostd
// recorded in <instance>/state.json and the instance's token in <instance>/secret.
//
//   FUN_ASSIGN_OR_RETURN(UniqueFd s, vm::DialInstanceAgent(paths.InstanceDir("default"),
//       "default", {.kind = agent::Kind::kTcp, .target = "127.0.0.1:38245"}, 10s));
//
// Thread-safety: functions are thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/net/agent_client.h"

namespace fun::vm {

// The agent endpoint of instance `name` (its directory `instance_dir`). Unavailable when no
// agent port is recorded (the instance is not running).
StatusOr<agent::AgentEndpoint> InstanceAgentEndpoint(const std::string& instance_dir,
                                                     std::string_view name);

// DialAgent to that endpoint. The socket timeouts the dial sets for its handshake are cleared
// afterwards: the stream it returns may be quiet for long (a log, an interactive session).
StatusOr<UniqueFd> DialInstanceAgent(const std::string& instance_dir, std::string_view name,
                                     agent::Request request, std::chrono::milliseconds timeout);

// Clears SO_RCVTIMEO and SO_SNDTIMEO on `fd`.
void ClearSocketTimeouts(int fd);

}  // namespace fun::vm
