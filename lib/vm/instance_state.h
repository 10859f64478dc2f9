// instance_state.h: what fun-hostd tells the CLIs about its instance, in
// <instance>/state.json (written atomically by hostd; read by fun-vmctl status and the doctor).
// Process liveness is never taken from this file alone: the pid files (pidfile.h) decide.
//
//   InstanceState st = LoadInstanceState(dir).value_or(InstanceState{});
//   st.phase = Phase::kRunning; FUN_RETURN_IF_ERROR(SaveInstanceState(dir, st));
//
// Thread-safety: values; Save/Load are atomic with respect to each other (rename).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "lib/base/status.h"

namespace fun::vm {

enum class Phase { kStopped, kStarting, kRunning, kStopping, kFailed };
std::string_view PhaseName(Phase p);
StatusOr<Phase> ParsePhase(std::string_view s);

struct LastExit {
  std::string reason;  // "stopped by fun-vmctl stop", "qemu exited with 1", "killed by SIGKILL"
  int exit_code = 0;
  int signal = 0;
  int64_t at_ms = 0;  // wall clock, ms since the epoch
  // True when the VM ended because it was asked to (a stop, a guest power-off); false when it
  // died (killed, crashed, exited with an error): the doctor reports those.
  bool clean = true;
  friend bool operator==(const LastExit&, const LastExit&) = default;
};

struct InstanceState {
  Phase phase = Phase::kStopped;
  std::string backend;
  std::string accel;
  std::string accel_reason;
  uint16_t agent_port = 0;  // qemu: the loopback port forwarded to the guest agent
  // hyperkit: the agent is at this vsock port behind the virtio-sock connect socket (both set,
  // agent_port 0).
  std::string agent_vsock_connect;
  uint32_t agent_vsock_port = 0;
  int64_t started_at_ms = 0;  // hostd started the hypervisor
  int64_t ready_at_ms = 0;    // containerd answered through the agent
  double guest_uptime_at_ready_s = 0;
  std::string error;  // why a start failed (phase kFailed)
  std::optional<LastExit> last_exit;
  friend bool operator==(const InstanceState&, const InstanceState&) = default;
};

nlohmann::json StateToJson(const InstanceState& s);
// Tolerant of missing keys (older hostd), strict on types; InvalidArgument otherwise.
StatusOr<InstanceState> StateFromJson(std::string_view text);

Status SaveInstanceState(const std::string& instance_dir, const InstanceState& s);
// NotFound when there is no state.json yet.
StatusOr<InstanceState> LoadInstanceState(const std::string& instance_dir);

}  // namespace fun::vm
