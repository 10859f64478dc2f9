#include "lib/vm/instance_state.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "lib/base/files.h"
#include "lib/base/socket.h"

namespace fun::vm {

std::string_view PhaseName(Phase p) {
  switch (p) {
    case Phase::kStopped:
      return "stopped";
    case Phase::kStarting:
      return "starting";
    case Phase::kRunning:
      return "running";
    case Phase::kStopping:
      return "stopping";
    case Phase::kFailed:
      return "failed";
  }
  return "unknown";
}

StatusOr<Phase> ParsePhase(std::string_view s) {
  for (Phase p :
       {Phase::kStopped, Phase::kStarting, Phase::kRunning, Phase::kStopping, Phase::kFailed}) {
    if (PhaseName(p) == s) return p;
  }
  return InvalidArgumentError(fmt::format("unknown phase \"{}\"", s.substr(0, 40)));
}

nlohmann::json StateToJson(const InstanceState& s) {
  nlohmann::json j = {{"phase", PhaseName(s.phase)},
                      {"backend", s.backend},
                      {"accel", s.accel},
                      {"accel_reason", s.accel_reason},
                      {"agent_port", s.agent_port},
                      {"agent_vsock_connect", s.agent_vsock_connect},
                      {"agent_vsock_port", s.agent_vsock_port},
                      {"started_at_ms", s.started_at_ms},
                      {"ready_at_ms", s.ready_at_ms},
                      {"guest_uptime_at_ready_s", s.guest_uptime_at_ready_s},
                      {"error", s.error}};
  if (s.last_exit) {
    j["last_exit"] = {{"reason", s.last_exit->reason},
                      {"exit_code", s.last_exit->exit_code},
                      {"signal", s.last_exit->signal},
                      {"at_ms", s.last_exit->at_ms},
                      {"clean", s.last_exit->clean}};
  }
  return j;
}

namespace {

template <typename T>
Status Take(const nlohmann::json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return OkStatus();
  try {
    *out = it->get<T>();
  } catch (const nlohmann::json::exception&) {
    return InvalidArgumentError(fmt::format("state.json: {} has the wrong type", key));
  }
  if constexpr (std::is_arithmetic_v<T>) {
    if (!it->is_number() && !std::is_same_v<T, bool>) {
      return InvalidArgumentError(fmt::format("state.json: {} is not a number", key));
    }
  }
  return OkStatus();
}

}  // namespace

StatusOr<InstanceState> StateFromJson(std::string_view text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError("state.json is not a JSON object");
  }
  InstanceState s;
  std::string phase = "stopped";
  FUN_RETURN_IF_ERROR(Take(j, "phase", &phase));
  FUN_ASSIGN_OR_RETURN(s.phase, ParsePhase(phase));
  FUN_RETURN_IF_ERROR(Take(j, "backend", &s.backend));
  FUN_RETURN_IF_ERROR(Take(j, "accel", &s.accel));
  FUN_RETURN_IF_ERROR(Take(j, "accel_reason", &s.accel_reason));
  FUN_RETURN_IF_ERROR(Take(j, "agent_port", &s.agent_port));
  FUN_RETURN_IF_ERROR(Take(j, "agent_vsock_connect", &s.agent_vsock_connect));
  FUN_RETURN_IF_ERROR(Take(j, "agent_vsock_port", &s.agent_vsock_port));
  FUN_RETURN_IF_ERROR(Take(j, "started_at_ms", &s.started_at_ms));
  FUN_RETURN_IF_ERROR(Take(j, "ready_at_ms", &s.ready_at_ms));
  FUN_RETURN_IF_ERROR(Take(j, "guest_uptime_at_ready_s", &s.guest_uptime_at_ready_s));
  FUN_RETURN_IF_ERROR(Take(j, "error", &s.error));
  if (auto it = j.find("last_exit"); it != j.end() && it->is_object()) {
    LastExit e;
    FUN_RETURN_IF_ERROR(Take(*it, "reason", &e.reason));
    FUN_RETURN_IF_ERROR(Take(*it, "exit_code", &e.exit_code));
    FUN_RETURN_IF_ERROR(Take(*it, "signal", &e.signal));
    FUN_RETURN_IF_ERROR(Take(*it, "at_ms", &e.at_ms));
    FUN_RETURN_IF_ERROR(Take(*it, "clean", &e.clean));
    s.last_exit = e;
  }
  return s;
}

Status SaveInstanceState(const std::string& dir, const InstanceState& s) {
  return WriteFileAtomically(dir + "/state.json", StateToJson(s).dump(2) + "\n", 0600);
}

StatusOr<InstanceState> LoadInstanceState(const std::string& dir) {
  std::string path = dir + "/state.json";
  auto text = ReadFileToString(path);
  if (!text.ok()) return NotFoundError("no " + path);
  auto s = StateFromJson(*text);
  if (!s.ok()) return s.status().WithContext(path);
  return s;
}

}  // namespace fun::vm
