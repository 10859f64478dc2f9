// instance.h: instance lifecycle operations shared by fun-vmctl, fun and fun-doctor: create an
// instance from defaults, start its fun-hostd detached, read its status (pid files decide
// liveness, state.json tells the rest), stop it in escalating steps, remove it.
//
//   FUN_ASSIGN_OR_RETURN(InstanceConfig cfg, EnsureInstance(paths, "default", overrides));
//   FUN_ASSIGN_OR_RETURN(pid_t hostd, SpawnHostd(paths, "default", image_dir, hostd_binary));
//   InstanceStatus st = GetInstanceStatus(paths, "default");
//   FUN_RETURN_IF_ERROR(StopInstance(paths, "default", {.timeout = 30s}));
//
// Thread-safety: functions are thread-safe; concurrent starts of one instance are serialized by
// fun-hostd's lock (the loser's hostd exits at once, and its start waits on the winner's VM).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/instance_config.h"
#include "lib/base/paths.h"
#include "lib/base/status.h"
#include "lib/vm/instance_state.h"
#include "lib/vm/pidfile.h"

namespace fun::vm {

// Flags that override config.json (unset: keep).
struct ConfigOverrides {
  std::optional<int> cpus;
  std::optional<int> memory_mib;
  std::optional<int> disk_gib;
  std::optional<std::string> share_transport;  // "serial" or "vsock" (validated on save)
  std::optional<std::string> agent_transport;  // "tcp" or "vsock" (validated on save)
  // Added to config.json's shares (saved); one with the same host_path is replaced.
  std::vector<Share> shares;
};

// A `fun-vmctl start --share` value: HOST[:GUEST][:ro|:rw][:cache=mmap|loose|none]. HOST and GUEST
// are absolute (GUEST defaults to HOST, as Lima mounts); paths with ':' cannot be given this way
// (config.json takes them). InvalidArgument, one line, otherwise.
StatusOr<Share> ParseShareFlag(std::string_view value);

// The defaults for a new instance on this machine (platform, home directory share).
InstanceConfig DefaultsForThisMachine(const Paths& paths, const std::string& name);

// Creates the instance (dir 0700, config.json, agent secret 0600) when it does not exist, then
// applies the overrides (saved). Returns the config in force.
StatusOr<InstanceConfig> EnsureInstance(const Paths& paths, const std::string& name,
                                        const ConfigOverrides& overrides);

// Names of the instances that exist, sorted.
std::vector<std::string> ListInstances(const Paths& paths);

struct InstanceStatus {
  std::string name;
  bool exists = false;
  std::optional<InstanceConfig> config;
  std::string config_error;  // why config.json could not be read
  PidFileState hostd;
  PidFileState vm;
  std::optional<InstanceState> state;
  // What to tell people: "running", "starting", "stopping", "stopped", "failed", or "crashed"
  // (state.json says it runs but fun-hostd is gone: killed, or the machine rebooted).
  std::string phase;
  std::optional<double> uptime_s;  // of the hypervisor process
  std::string instance_dir;
  std::string containerd_socket;
  std::string console_log;
  std::string hostd_log;
};

InstanceStatus GetInstanceStatus(const Paths& paths, const std::string& name);
nlohmann::json StatusToJson(const InstanceStatus& s);

// Starts fun-hostd for the instance, detached (its own session; stdio to hostd.log).
StatusOr<pid_t> SpawnHostd(const Paths& paths, const std::string& name,
                           const std::string& image_dir, const std::string& hostd_binary);

struct StopOptions {
  bool force = false;                                 // skip the graceful steps
  std::chrono::seconds timeout{30};                   // for the graceful steps
  std::function<void(std::string_view)> on_progress;  // "asking the guest to shut down", ...
};
// Stops through fun-hostd (SIGTERM: it runs agent shutdown, ACPI, SIGTERM, SIGKILL on QEMU);
// if hostd itself does not end in time, kills it and the VM (only processes whose pid files
// match). OK when already stopped; cleans stale pid files and sockets.
Status StopInstance(const Paths& paths, const std::string& name, const StopOptions& options);

// Deletes a stopped instance and everything in its directory (its data disk too).
Status RemoveInstance(const Paths& paths, const std::string& name);

// Why QEMU ended by itself (exit 0, no stop asked), from the end of the guest's console: QEMU
// runs with -no-reboot, so a guest that reboots -- as a kernel panic with panic=1 does -- ends
// the VM just as a power-off would. "the guest kernel panicked: <the panic line>", "the guest
// rebooted itself", else "the guest powered off". Pure.
std::string DescribeGuestEnd(std::string_view console_tail);

// Where the user is told to look for the console differs from the instance's console.log (on
// macOS: ~/Library/Logs/Fun/linuxkit.log, the product's promise): makes that path a symlink to
// console.log, so Console.app and `tail -f` see the live console. Replaces an old symlink or
// file there; a no-op where the two paths are the same (Linux). Called by fun-hostd at start.
Status LinkConsoleForUser(const Paths& paths, const std::string& name);

}  // namespace fun::vm
