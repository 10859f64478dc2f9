#include "lib/vm/instance_agent.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "lib/vm/instance_state.h"

namespace fun::vm {

StatusOr<agent::AgentEndpoint> InstanceAgentEndpoint(const std::string& instance_dir,
                                                     std::string_view name) {
  FUN_ASSIGN_OR_RETURN(InstanceState state, LoadInstanceState(instance_dir));
  agent::AgentEndpoint ep;
  if (state.agent_vsock_port != 0 && !state.agent_vsock_connect.empty()) {
    ep.address =
        SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = state.agent_vsock_connect};
    ep.vsock_connect_port = state.agent_vsock_port;
  } else if (state.agent_port != 0) {
    ep.address = SocketAddress{
        .kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = state.agent_port};
  } else {
    return UnavailableError(
        fmt::format("instance {} has no agent port recorded: is it running?", name));
  }
  FUN_ASSIGN_OR_RETURN(ep.token, agent::ReadTokenFile(instance_dir + "/secret"));
  return ep;
}

StatusOr<UniqueFd> DialInstanceAgent(const std::string& instance_dir, std::string_view name,
                                     agent::Request request, std::chrono::milliseconds timeout) {
  FUN_ASSIGN_OR_RETURN(agent::AgentEndpoint ep, InstanceAgentEndpoint(instance_dir, name));
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, agent::DialAgent(ep, std::move(request), timeout));
  ClearSocketTimeouts(fd.get());
  return fd;
}

void ClearSocketTimeouts(int fd) {
  timeval none{};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
}

}  // namespace fun::vm
