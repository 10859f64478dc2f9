#include "lib/vm/instance.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "lib/base/log.h"
#include "lib/net/agent_client.h"

extern char** environ;

namespace fun::vm {

using namespace std::chrono_literals;

InstanceConfig DefaultsForThisMachine(const Paths& paths, const std::string& name) {
  struct utsname u {};
  bool arm = ::uname(&u) == 0 &&
             (std::string(u.machine) == "arm64" || std::string(u.machine) == "aarch64");
  InstanceConfig c = DefaultInstanceConfig(
      {.is_macos = paths.os == Os::kMacos, .is_arm64 = arm, .home_dir = paths.home});
  c.name = name;
  return c;
}

StatusOr<InstanceConfig> EnsureInstance(const Paths& paths, const std::string& name,
                                        const ConfigOverrides& o) {
  FUN_RETURN_IF_ERROR(ValidateInstanceName(name));
  std::string dir = paths.InstanceDir(name);
  FUN_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  std::string file = paths.InstanceFile(name, InstanceFileKind::kConfig);
  InstanceConfig defaults = DefaultsForThisMachine(paths, name);
  InstanceConfig cfg = defaults;
  bool exists = ::access(file.c_str(), F_OK) == 0;
  if (exists) {
    FUN_ASSIGN_OR_RETURN(cfg, LoadInstanceConfigFile(file, defaults));
    if (cfg.name != name) {
      return FailedPreconditionError(fmt::format(
          "{}: name \"{}\" does not match its directory \"{}\": remove the name key or make it "
          "match",
          file, cfg.name, name));
    }
  }
  bool changed = !exists;
  if (o.cpus && *o.cpus != cfg.cpus) cfg.cpus = *o.cpus, changed = true;
  if (o.memory_mib && *o.memory_mib != cfg.memory_mib)
    cfg.memory_mib = *o.memory_mib, changed = true;
  if (o.disk_gib && *o.disk_gib != cfg.disk_gib) cfg.disk_gib = *o.disk_gib, changed = true;
  if (o.share_transport && *o.share_transport != cfg.share_transport) {
    cfg.share_transport = *o.share_transport;
    changed = true;
  }
  if (o.agent_transport && *o.agent_transport != cfg.agent_transport) {
    cfg.agent_transport = *o.agent_transport;
    changed = true;
  }
  for (const Share& add : o.shares) {
    auto same = std::find_if(cfg.shares.begin(), cfg.shares.end(),
                             [&](const Share& s) { return s.host_path == add.host_path; });
    Share want = add;
    if (want.guest_path.empty()) want.guest_path = want.host_path;
    if (same != cfg.shares.end()) {
      if (same->guest_path == want.guest_path && same->read_only == want.read_only &&
          same->cache == want.cache) {
        continue;
      }
      want.tag = same->tag;
      *same = want;
    } else {
      cfg.shares.push_back(want);
    }
    changed = true;
  }
  if (changed) {
    // Validates too: a flag out of range gets the same message as a bad config.json.
    FUN_ASSIGN_OR_RETURN(cfg, NormalizeInstanceConfig(std::move(cfg)));
    FUN_RETURN_IF_ERROR(SaveInstanceConfigFile(file, cfg));
  }
  std::string secret = dir + "/secret";
  FUN_RETURN_IF_ERROR(agent::EnsureTokenFile(secret).status());
  return cfg;
}

std::vector<std::string> ListInstances(const Paths& paths) {
  std::vector<std::string> names;
  DIR* d = ::opendir(paths.instances_dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    if (!ValidateInstanceName(n).ok()) continue;
    struct stat st {};
    if (::stat((paths.instances_dir + "/" + n).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      names.push_back(n);
    }
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

InstanceStatus GetInstanceStatus(const Paths& paths, const std::string& name) {
  InstanceStatus s;
  s.name = name;
  s.instance_dir = paths.InstanceDir(name);
  s.containerd_socket = paths.InstanceFile(name, InstanceFileKind::kContainerdSock);
  s.console_log = paths.InstanceFile(name, InstanceFileKind::kConsoleLog);
  s.hostd_log = paths.InstanceFile(name, InstanceFileKind::kHostdLog);
  struct stat st {};
  s.exists = ::stat(s.instance_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  if (!s.exists) {
    s.phase = "absent";
    return s;
  }
  std::string file = paths.InstanceFile(name, InstanceFileKind::kConfig);
  auto cfg = LoadInstanceConfigFile(file, DefaultsForThisMachine(paths, name));
  if (cfg.ok()) {
    s.config = *cfg;
  } else if (cfg.status().code() != Code::kNotFound) {
    s.config_error = cfg.status().message();
  }
  s.hostd = CheckPidFile(paths.InstanceFile(name, InstanceFileKind::kHostdPid));
  s.vm = CheckPidFile(paths.InstanceFile(name, InstanceFileKind::kVmPid));
  auto state = LoadInstanceState(s.instance_dir);
  if (state.ok()) s.state = *state;
  bool hostd_alive = s.hostd.status == PidStatus::kAlive;
  Phase recorded = s.state ? s.state->phase : Phase::kStopped;
  if (hostd_alive) {
    // A live hostd with "stopped" on disk is one that has not written its state yet (the
    // state is the last run's: "starting"), or one that has just recorded its own end and is
    // removing its pid files (its run started after the hostd did: "stopped"). The harness
    // caught the second window reported as "starting".
    bool ended_by_this_hostd = false;
    if (recorded == Phase::kStopped && s.state) {
      if (auto up = ProcessUptimeSeconds(s.hostd.pid)) {
        const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
        const int64_t hostd_started_ms = now_ms - static_cast<int64_t>(*up * 1000.0);
        ended_by_this_hostd = s.state->started_at_ms + 500 >= hostd_started_ms &&
                              s.state->last_exit.has_value() &&
                              s.state->last_exit->at_ms >= s.state->started_at_ms;
      }
    }
    s.phase = std::string(PhaseName(
        recorded == Phase::kStopped && !ended_by_this_hostd ? Phase::kStarting : recorded));
  } else if (recorded == Phase::kStarting || recorded == Phase::kRunning ||
             recorded == Phase::kStopping) {
    s.phase = "crashed";  // hostd never recorded an end: it was killed
  } else {
    s.phase = std::string(PhaseName(recorded));
  }
  if (s.vm.status == PidStatus::kAlive) s.uptime_s = ProcessUptimeSeconds(s.vm.pid);
  return s;
}

nlohmann::json StatusToJson(const InstanceStatus& s) {
  auto pid = [](const PidFileState& p) {
    nlohmann::json j = {{"status", PidStatusName(p.status)}};
    if (p.pid != 0) j["pid"] = p.pid;
    if (!p.detail.empty()) j["detail"] = p.detail;
    return j;
  };
  nlohmann::json j = {{"name", s.name},
                      {"exists", s.exists},
                      {"phase", s.phase},
                      {"instance_dir", s.instance_dir},
                      {"containerd_socket", s.containerd_socket},
                      {"console_log", s.console_log},
                      {"hostd_log", s.hostd_log},
                      {"hostd", pid(s.hostd)},
                      {"vm", pid(s.vm)}};
  if (s.uptime_s) j["uptime_s"] = *s.uptime_s;
  if (s.config) j["config"] = ToJson(*s.config);
  if (!s.config_error.empty()) j["config_error"] = s.config_error;
  if (s.state) {
    nlohmann::json st = StateToJson(*s.state);
    j["backend"] = st["backend"];
    j["accel"] = st["accel"];
    j["accel_reason"] = st["accel_reason"];
    if (s.state->ready_at_ms > 0 && s.state->started_at_ms > 0) {
      j["boot_seconds"] =
          static_cast<double>(s.state->ready_at_ms - s.state->started_at_ms) / 1000.0;
      j["guest_uptime_at_ready_s"] = s.state->guest_uptime_at_ready_s;
    }
    if (!s.state->error.empty()) j["error"] = s.state->error;
    if (st.contains("last_exit")) j["last_exit"] = st["last_exit"];
  }
  return j;
}

StatusOr<pid_t> SpawnHostd(const Paths& paths, const std::string& name,
                           const std::string& image_dir, const std::string& hostd_binary) {
  if (::access(hostd_binary.c_str(), X_OK) != 0) {
    return NotFoundError(hostd_binary + " is missing or not executable: rebuild Fun");
  }
  std::string log = paths.InstanceFile(name, InstanceFileKind::kHostdLog);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  // A session of its own: the terminal's Ctrl-C and hang-up do not reach the VM.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  std::vector<std::string> args = {hostd_binary, "--instance", name, "--image-dir", image_dir};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, hostd_binary.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return ErrnoError(rc, "starting " + hostd_binary);
  return pid;
}

namespace {

bool WaitGone(const std::string& pidfile, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (CheckPidFile(pidfile).status != PidStatus::kAlive) return true;
    std::this_thread::sleep_for(50ms);
  }
  return CheckPidFile(pidfile).status != PidStatus::kAlive;
}

void KillIfOurs(const std::string& pidfile, int sig) {
  PidFileState p = CheckPidFile(pidfile);
  if (p.status == PidStatus::kAlive) ::kill(p.pid, sig);
}

}  // namespace

Status StopInstance(const Paths& paths, const std::string& name, const StopOptions& o) {
  FUN_RETURN_IF_ERROR(ValidateInstanceName(name));
  auto say = [&](std::string_view m) {
    if (o.on_progress) o.on_progress(m);
  };
  std::string hostd_pid = paths.InstanceFile(name, InstanceFileKind::kHostdPid);
  std::string vm_pid = paths.InstanceFile(name, InstanceFileKind::kVmPid);
  InstanceStatus st = GetInstanceStatus(paths, name);
  if (!st.exists) return NotFoundError(fmt::format("no instance named \"{}\"", name));
  if (st.hostd.status == PidStatus::kAlive) {
    say(o.force ? "stopping the VM now (forced)" : "shutting the guest down");
    // hostd turns SIGTERM into the graceful sequence, a second signal into a forced one.
    ::kill(st.hostd.pid, SIGTERM);
    if (o.force) {
      std::this_thread::sleep_for(100ms);
      ::kill(st.hostd.pid, SIGTERM);
    }
    auto budget = std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout) + 10s;
    if (!WaitGone(hostd_pid, budget)) {
      say("fun-hostd does not answer: killing it and the VM");
      KillIfOurs(vm_pid, SIGKILL);
      KillIfOurs(hostd_pid, SIGKILL);
      WaitGone(hostd_pid, 5s);
    }
  } else if (st.vm.status == PidStatus::kAlive) {
    // The VM outlived its hostd (hostd was killed): stop the orphan ourselves.
    say("fun-hostd is gone but the VM runs: stopping the VM");
    KillIfOurs(vm_pid, SIGTERM);
    if (!WaitGone(vm_pid, o.force ? 2s : std::chrono::milliseconds(o.timeout))) {
      KillIfOurs(vm_pid, SIGKILL);
      WaitGone(vm_pid, 5s);
    }
  }
  // Whatever is left is stale: pid files of dead processes, sockets nobody serves.
  for (const std::string& f : {hostd_pid, vm_pid}) {
    if (CheckPidFile(f).status != PidStatus::kAlive) ::unlink(f.c_str());
  }
  if (GetInstanceStatus(paths, name).hostd.status != PidStatus::kAlive) {
    ::unlink(st.containerd_socket.c_str());
    ::unlink((st.instance_dir + "/qmp.sock").c_str());
    auto state = LoadInstanceState(st.instance_dir);
    if (state.ok() && state->phase != Phase::kStopped && state->phase != Phase::kFailed) {
      state->phase = Phase::kStopped;
      if (!state->last_exit || state->last_exit->at_ms < state->started_at_ms) {
        state->last_exit = LastExit{.reason = "fun-hostd was gone; cleaned up by stop"};
      }
      (void)SaveInstanceState(st.instance_dir, *state);
    }
  }
  return OkStatus();
}

Status RemoveInstance(const Paths& paths, const std::string& name) {
  FUN_RETURN_IF_ERROR(ValidateInstanceName(name));
  InstanceStatus st = GetInstanceStatus(paths, name);
  if (!st.exists) return NotFoundError(fmt::format("no instance named \"{}\"", name));
  if (st.hostd.status == PidStatus::kAlive || st.vm.status == PidStatus::kAlive) {
    return FailedPreconditionError(
        fmt::format("instance {} is running: stop it first (fun-vmctl stop {})", name, name));
  }
  // The instance dir holds only files Fun made (no subdirectories): remove them one by one
  // rather than a recursive delete that could follow something unexpected.
  DIR* d = ::opendir(st.instance_dir.c_str());
  if (d == nullptr) return ErrnoError(errno, "opening " + st.instance_dir);
  Status result;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    if (::unlinkat(::dirfd(d), n.c_str(), 0) != 0 && result.ok()) {
      result = ErrnoError(errno, "removing " + st.instance_dir + "/" + n);
    }
  }
  ::closedir(d);
  FUN_RETURN_IF_ERROR(result);
  if (::rmdir(st.instance_dir.c_str()) != 0) {
    return ErrnoError(errno, "removing " + st.instance_dir);
  }
  // The console link of macOS (~/Library/Logs/Fun/linuxkit.log) would point at nothing now.
  const std::string user_console = paths.ConsoleLogForUser(name);
  struct stat link {};
  if (user_console != paths.InstanceFile(name, InstanceFileKind::kConsoleLog) &&
      ::lstat(user_console.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
    ::unlink(user_console.c_str());
  }
  return OkStatus();
}

std::string DescribeGuestEnd(std::string_view console_tail) {
  constexpr std::string_view kPanic = "Kernel panic - not syncing: ";
  if (size_t at = console_tail.rfind(kPanic); at != std::string_view::npos) {
    std::string_view what = console_tail.substr(at + kPanic.size());
    what = what.substr(0, std::min(what.find_first_of("\r\n"), size_t{160}));
    std::string clean;
    for (char c : what) {
      auto u = static_cast<unsigned char>(c);
      clean.push_back(u < 0x20 || u == 0x7f ? '?' : c);
    }
    while (!clean.empty() && (clean.back() == ' ' || clean.back() == '.')) clean.pop_back();
    return "the guest kernel panicked: " + clean + " (the console has the lines before it)";
  }
  if (console_tail.find("reboot: Restarting system") != std::string_view::npos ||
      console_tail.find("Rebooting in ") != std::string_view::npos) {
    return "the guest rebooted itself (the VM runs with -no-reboot: a reboot ends it)";
  }
  return "the guest powered off";
}

Status LinkConsoleForUser(const Paths& paths, const std::string& name) {
  const std::string console = paths.InstanceFile(name, InstanceFileKind::kConsoleLog);
  const std::string user = paths.ConsoleLogForUser(name);
  if (user == console) return OkStatus();
  const size_t slash = user.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    FUN_RETURN_IF_ERROR(MakeDirs(user.substr(0, slash), 0700));
  }
  // Made under a private name and renamed over the old one: never a moment without it.
  const std::string tmp = fmt::format("{}.tmp.{}", user, ::getpid());
  ::unlink(tmp.c_str());
  if (::symlink(console.c_str(), tmp.c_str()) != 0) {
    return ErrnoError(errno, fmt::format("linking {} to {}", user, console));
  }
  if (::rename(tmp.c_str(), user.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(e, fmt::format("linking {} to {}", user, console));
  }
  return OkStatus();
}

}  // namespace fun::vm

namespace fun::vm {

StatusOr<Share> ParseShareFlag(std::string_view value) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("--share {:?}: {} (use HOST[:GUEST][:ro][:cache=mmap|loose|none], with "
                    "absolute paths)",
                    value, why));
  };
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t colon = value.find(':', start);
    parts.emplace_back(value.substr(start, colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  Share s;
  // Options after the paths: ro or rw, cache=MODE.
  while (parts.size() > 1) {
    const std::string& opt = parts.back();
    if (opt == "ro" || opt == "rw") {
      s.read_only = opt == "ro";
    } else if (opt == "cache=mmap" || opt == "cache=loose" || opt == "cache=none") {
      s.cache = opt.substr(6);
    } else if (opt.rfind("cache=", 0) == 0) {
      return bad("cache is mmap, loose or none");
    } else {
      break;
    }
    parts.pop_back();
  }
  if (parts.size() > 2) return bad("too many ':'");
  s.host_path = parts[0];
  if (parts.size() == 2) s.guest_path = parts[1];
  if (s.host_path.empty() || s.host_path[0] != '/') return bad("the host path must be absolute");
  if (parts.size() == 2 && (s.guest_path.empty() || s.guest_path[0] != '/')) {
    return bad("the path in the VM must be absolute");
  }
  while (s.host_path.size() > 1 && s.host_path.back() == '/') s.host_path.pop_back();
  while (s.guest_path.size() > 1 && s.guest_path.back() == '/') s.guest_path.pop_back();
  return s;
}

}  // namespace fun::vm
