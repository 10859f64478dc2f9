#include "tools/fun-vmctl/vmctl.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "lib/base/clock.h"
#include "lib/base/files.h"
#include "lib/base/flags.h"
#include "lib/base/instance_config.h"
#include "lib/base/progress.h"
#include "lib/base/version.h"
#include "lib/cri/client.h"
#include "lib/vm/hostd.h"
#include "lib/vm/image.h"
#include "lib/vm/instance.h"
#include "lib/vm/instance_agent.h"

namespace fun::vmctl {
namespace {

constexpr const char kUsage[] =
    "usage: fun-vmctl COMMAND [NAME] [FLAGS]\n"
    "\n"
    "Commands (NAME defaults to \"default\"):\n"
    "  start [NAME] [--cpus N] [--memory MiB] [--disk GiB] [--timeout S]\n"
    "        [--share HOST[:GUEST][:ro][:cache=mmap|loose|none]]...\n"
    "                  create the instance on first use, boot it, wait until containerd is ready\n"
    "  stop [NAME] [--force] [--timeout S]\n"
    "                  shut the guest down (agent, then ACPI, then SIGTERM, then SIGKILL)\n"
    "  restart [NAME]  stop, then start\n"
    "  status [NAME]   state, pids, uptime, backend, accelerator and why, boot time, sockets\n"
    "  list            every instance and its state\n"
    "  logs [NAME] [--console|--hostd] [--follow] [--tail N]\n"
    "  rm [NAME]       delete a stopped instance (its data disk too)\n"
    "  config [NAME]   the instance's effective configuration (config.json over defaults)\n"
    "  paths           where Fun keeps state and logs\n"
    "  version\n"
    "\n"
    "status, list, config, paths and version take --json.\n";

bool IsArm64() {
  struct utsname u {};
  if (::uname(&u) != 0) return false;
  std::string m = u.machine;
  return m == "arm64" || m == "aarch64";
}

int Fail(std::ostream& err, const Status& s) {
  err << "fun-vmctl: " << s.message() << "\n";
  return 1;
}

int Usage(std::ostream& err, const Status& s) {
  err << "fun-vmctl: " << s.message() << "\n";
  return 2;
}

int Version(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  bool json = false;
  FlagSet flags("fun-vmctl version");
  flags.Bool("json", &json, "print JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  if (!rest->empty()) return Usage(err, InvalidArgumentError("version takes no arguments"));
  if (json) {
    out << nlohmann::json{{"version", kVersion}, {"git_revision", kGitRevision}}.dump(2) << "\n";
  } else {
    out << "fun-vmctl " << kVersion << " (" << kGitRevision << ")\n";
  }
  return 0;
}

int ShowPaths(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
              std::ostream& err) {
  bool json = false;
  FlagSet flags("fun-vmctl paths");
  flags.Bool("json", &json, "print JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  if (!rest->empty()) return Usage(err, InvalidArgumentError("paths takes no arguments"));
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());
  if (json) {
    out << nlohmann::json{{"os", OsName(paths->os)},
                          {"state_dir", paths->state_dir},
                          {"logs_dir", paths->logs_dir},
                          {"instances_dir", paths->instances_dir},
                          {"images_dir", paths->images_dir}}
               .dump(2)
        << "\n";
  } else {
    out << "state      " << paths->state_dir << "\n"
        << "logs       " << paths->logs_dir << "\n"
        << "instances  " << paths->instances_dir << "\n"
        << "images     " << paths->images_dir << "\n";
  }
  return 0;
}

int ShowConfig(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
               std::ostream& err) {
  bool json = false;
  FlagSet flags("fun-vmctl config");
  flags.Bool("json", &json, "print JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  if (rest->size() > 1) {
    return Usage(err, InvalidArgumentError("config takes at most one instance name"));
  }
  std::string name = rest->empty() ? "default" : (*rest)[0];
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());

  // The name becomes a path: refuse a bad one before building any.
  if (Status s = ValidateInstanceName(name); !s.ok()) return Usage(err, s);
  InstanceConfig defaults = DefaultInstanceConfig(
      {.is_macos = env.os == Os::kMacos, .is_arm64 = IsArm64(), .home_dir = paths->home});
  defaults.name = name;

  std::string file = paths->InstanceFile(name, InstanceFileKind::kConfig);
  struct stat st {};
  bool exists = ::stat(file.c_str(), &st) == 0;
  InstanceConfig cfg = defaults;
  if (exists) {
    auto loaded = LoadInstanceConfigFile(file, defaults);
    if (!loaded.ok()) return Fail(err, loaded.status());
    if (loaded->name != name) {
      return Fail(err, FailedPreconditionError(file + ": name: \"" + loaded->name +
                                               "\" does not match its directory \"" + name +
                                               "\": remove the name key or make it match"));
    }
    cfg = *loaded;
  }
  if (json) {
    nlohmann::json j = ToJson(cfg);
    out << nlohmann::json{{"file", file}, {"exists", exists}, {"config", j}}.dump(2) << "\n";
  } else {
    out << "# " << file << (exists ? "" : " (not created yet: these are the defaults)") << "\n"
        << SerializeInstanceConfig(cfg) << "\n";
  }
  return 0;
}

// One optional instance name, defaulting to "default", validated before it becomes a path.
StatusOr<std::string> OneName(const std::vector<std::string>& rest, std::string_view cmd) {
  if (rest.size() > 1) {
    return InvalidArgumentError(fmt::format("{} takes at most one instance name", cmd));
  }
  std::string name = rest.empty() ? "default" : rest[0];
  FUN_RETURN_IF_ERROR(ValidateInstanceName(name));
  return name;
}

std::string Seconds(double s) { return fmt::format("{:.1f} s", s); }

// Waits until CRI Status reports RuntimeReady through the instance socket, showing progress.
// Fails early when fun-hostd dies or records a failure.
// `spawned` is the fun-hostd this command started (0: one was already running): until it has
// written its own state, a stopped or failed state.json is the previous run's, not an answer.
Status WaitForRuntime(const Paths& paths, const std::string& name, std::chrono::seconds timeout,
                      Spinner& spinner, pid_t spawned, int64_t spawned_at_ms) {
  std::string sock = paths.InstanceFile(name, InstanceFileKind::kContainerdSock);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_ptr<cri::CriClient> client;
  std::optional<std::chrono::steady_clock::time_point> other_since;
  for (;;) {
    vm::InstanceStatus st = vm::GetInstanceStatus(paths, name);
    if (spawned > 0) {
      int wst = 0;
      if (::waitpid(spawned, &wst, WNOHANG) == spawned) {
        spawned = 0;
        // Another start won the instance's lock: its fun-hostd runs the VM; wait for that one.
        if (WIFEXITED(wst) && WEXITSTATUS(wst) == vm::kHostdExitAlreadyRunning) {
          other_since = std::chrono::steady_clock::now();
        }
      }
    }
    // Until the winner has written its pid file (a moment), the state on disk is the last run's.
    const bool waiting_for_other =
        other_since.has_value() && st.hostd.status != vm::PidStatus::kAlive &&
        std::chrono::steady_clock::now() - *other_since < std::chrono::seconds(10);
    bool stale = (spawned > 0 && (!st.state || st.state->started_at_ms < spawned_at_ms)) ||
                 waiting_for_other;
    if (!stale && (st.phase == "failed" || st.phase == "stopped" || st.phase == "crashed")) {
      std::string why = st.state && !st.state->error.empty() ? st.state->error
                        : st.state && st.state->last_exit    ? st.state->last_exit->reason
                                                             : "fun-hostd exited";
      return UnavailableError(fmt::format("the VM did not come up: {}", why));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return DeadlineExceededError(
          fmt::format("containerd was not ready after {} s", timeout.count()));
    }
    if (st.phase != "running") {
      spinner.Update(st.vm.status == vm::PidStatus::kAlive ? "booting the VM"
                                                           : "starting fun-hostd");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (!client) {
      auto c = cri::CriClient::Connect(sock);
      if (!c.ok()) return c.status();
      client = std::move(*c);
    }
    spinner.Update("waiting for containerd's CRI service");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    auto ready = client->WaitUntilReady({.timeout = std::min(left, std::chrono::milliseconds(2000)),
                                         .on_progress = [&](const cri::ReadyProgress& p) {
                                           if (!p.ready)
                                             spinner.Update("containerd: " + p.Describe());
                                         }});
    if (!ready.ok()) return ready.status();
    if (*ready) return OkStatus();
  }
}

int Start(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
          std::ostream& err) {
  int cpus = 0, memory = 0, disk = 0, timeout = 180;
  std::string image_dir;
  FlagSet flags("fun-vmctl start");
  flags.Int("cpus", &cpus, "virtual CPUs");
  flags.Int("memory", &memory, "memory in MiB");
  flags.Int("disk", &disk, "data disk size in GiB");
  flags.Int("timeout", &timeout, "seconds to wait for containerd (default 180)");
  flags.String("image-dir", &image_dir, "the VM image to boot (default: found automatically)");
  std::string share_transport;
  flags.String("share-transport", &share_transport,
               "serial or vsock: how the shares reach the VM under QEMU (saved in config.json)");
  std::string agent_transport;
  flags.String("agent-transport", &agent_transport,
               "tcp or vsock: how fun reaches the guest agent under QEMU (saved in config.json)");
  std::vector<std::string> shares;
  flags.Repeated("share", &shares,
                 "HOST[:GUEST][:ro][:cache=MODE]: also share this host folder (saved in "
                 "config.json; a running "
                 "VM gets it at its next start)");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  std::vector<Share> add_shares;
  for (const std::string& v : shares) {
    auto sh = vm::ParseShareFlag(v);
    if (!sh.ok()) return Usage(err, sh.status());
    add_shares.push_back(*sh);
  }
  auto name = OneName(*rest, "start");
  if (!name.ok()) return Usage(err, name.status());
  if (timeout <= 0) return Usage(err, InvalidArgumentError("--timeout must be positive"));
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());
  StartOptions o;
  if (cpus != 0) o.overrides.cpus = cpus;
  if (memory != 0) o.overrides.memory_mib = memory;
  if (disk != 0) o.overrides.disk_gib = disk;
  if (!share_transport.empty()) {
    if (share_transport != "serial" && share_transport != "vsock") {
      return Usage(err, InvalidArgumentError("--share-transport " + share_transport +
                                             ": use serial or vsock"));
    }
    o.overrides.share_transport = share_transport;
  }
  if (!agent_transport.empty()) {
    if (agent_transport != "tcp" && agent_transport != "vsock") {
      return Usage(
          err, InvalidArgumentError("--agent-transport " + agent_transport + ": use tcp or vsock"));
    }
    o.overrides.agent_transport = agent_transport;
  }
  o.overrides.shares = std::move(add_shares);
  o.image_dir = image_dir;
  o.timeout = std::chrono::seconds(timeout);
  Spinner spinner(err, IsTerminal(2), Clock::Real());
  StatusOr<std::string> started = StartInstance(*paths, *name, o, spinner);
  spinner.Done("");
  if (!started.ok()) {
    err << "fun-vmctl: " << started.status().message() << "\n";
    return 1;
  }
  out << *started << std::endl;
  return 0;
}

int Stop(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
         std::ostream& err) {
  bool force = false;
  int timeout = 30;
  FlagSet flags("fun-vmctl stop");
  flags.Bool("force", &force, "power off at once, without a guest shutdown");
  flags.Int("timeout", &timeout, "seconds for the graceful steps (default 30)");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  auto name = OneName(*rest, "stop");
  if (!name.ok()) return Usage(err, name.status());
  if (timeout <= 0) return Usage(err, InvalidArgumentError("--timeout must be positive"));
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());
  Spinner spinner(err, IsTerminal(2), Clock::Real());
  Status s = vm::StopInstance(*paths, *name,
                              {.force = force,
                               .timeout = std::chrono::seconds(timeout),
                               .on_progress = [&](std::string_view m) { spinner.Update(m); }});
  spinner.Done("");
  if (!s.ok()) return Fail(err, s);
  out << *name << " is stopped" << std::endl;
  return 0;
}

int ShowStatus(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
               std::ostream& err) {
  bool json = false;
  FlagSet flags("fun-vmctl status");
  flags.Bool("json", &json, "print JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  auto name = OneName(*rest, "status");
  if (!name.ok()) return Usage(err, name.status());
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());
  vm::InstanceStatus st = vm::GetInstanceStatus(*paths, *name);
  if (!st.exists) {
    return Fail(
        err, NotFoundError(fmt::format("no instance named \"{}\": 'fun-vmctl start {}' creates it",
                                       *name, *name)));
  }
  nlohmann::json j = vm::StatusToJson(st);
  // What the guest says about its shares (mounted or why not), when it answers.
  std::optional<agent::AgentPing> ping;
  if (st.phase == "running") {
    auto ep = vm::InstanceAgentEndpoint(paths->InstanceDir(*name), *name);
    if (ep.ok()) {
      auto p = agent::PingAgent(*ep, std::chrono::seconds(2));
      if (p.ok()) {
        ping = std::move(*p);
      } else {
        j["guest_error"] = p.status().message();
      }
    }
  }
  if (ping) {
    j["shares"] = nlohmann::json::array();
    for (const auto& s : ping->shares) {
      j["shares"].push_back({{"tag", s.tag},
                             {"path", s.path},
                             {"read_only", s.read_only},
                             {"status", s.status},
                             {"error", s.error}});
    }
  }
  if (json) {
    out << j.dump(2) << "\n";
    return 0;
  }
  out << fmt::format("{:<14}{}\n", "instance", st.name);
  out << fmt::format("{:<14}{}\n", "state", st.phase);
  if (j.contains("backend")) {
    out << fmt::format("{:<14}{}, accel {} ({})\n", "backend", j["backend"].get<std::string>(),
                       j["accel"].get<std::string>(), j["accel_reason"].get<std::string>());
  }
  auto pid_line = [](const vm::PidFileState& p) {
    return p.status == vm::PidStatus::kAlive ? std::to_string(p.pid)
           : p.detail.empty()                ? std::string(vm::PidStatusName(p.status))
                              : std::string(vm::PidStatusName(p.status)) + " (" + p.detail + ")";
  };
  out << fmt::format("{:<14}{}\n", "fun-hostd", pid_line(st.hostd));
  out << fmt::format("{:<14}{}\n", "vm", pid_line(st.vm));
  if (st.uptime_s) out << fmt::format("{:<14}{}\n", "uptime", Seconds(*st.uptime_s));
  if (j.contains("boot_seconds")) {
    out << fmt::format("{:<14}{} to containerd ready (guest uptime {})\n", "boot",
                       Seconds(j["boot_seconds"].get<double>()),
                       Seconds(j["guest_uptime_at_ready_s"].get<double>()));
  }
  if (st.phase == "running") out << fmt::format("{:<14}{}\n", "containerd", st.containerd_socket);
  if (j.contains("error")) out << fmt::format("{:<14}{}\n", "error", j["error"].get<std::string>());
  if (j.contains("last_exit")) {
    out << fmt::format("{:<14}{}\n", "last exit", j["last_exit"]["reason"].get<std::string>());
  }
  if (!st.config_error.empty()) out << fmt::format("{:<14}{}\n", "config", st.config_error);
  if (ping) {
    for (const auto& s : ping->shares) {
      out << fmt::format("{:<14}{} ({}{}): {}{}\n", "share", s.path, s.tag,
                         s.read_only ? ", read-only" : "", s.status,
                         s.error.empty() ? "" : ": " + s.error);
    }
  } else if (j.contains("guest_error")) {
    out << fmt::format("{:<14}{}\n", "agent", j["guest_error"].get<std::string>());
  }
  out << fmt::format("{:<14}{}\n", "console", st.console_log);
  out << fmt::format("{:<14}{}\n", "hostd log", st.hostd_log);
  return 0;
}

int List(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
         std::ostream& err) {
  bool json = false;
  FlagSet flags("fun-vmctl list");
  flags.Bool("json", &json, "print JSON");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  if (!rest->empty()) return Usage(err, InvalidArgumentError("list takes no arguments"));
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());
  nlohmann::json all = nlohmann::json::array();
  std::vector<vm::InstanceStatus> rows;
  for (const auto& n : vm::ListInstances(*paths)) {
    rows.push_back(vm::GetInstanceStatus(*paths, n));
    all.push_back(vm::StatusToJson(rows.back()));
  }
  if (json) {
    out << all.dump(2) << "\n";
    return 0;
  }
  out << fmt::format("{:<16} {:<10} {:>5} {:>8} {:>6}\n", "NAME", "STATE", "CPUS", "MEMORY",
                     "DISK");
  for (const auto& r : rows) {
    out << fmt::format("{:<16} {:<10} {:>5} {:>8} {:>6}\n", r.name, r.phase,
                       r.config ? std::to_string(r.config->cpus) : "?",
                       r.config ? std::to_string(r.config->memory_mib) + "M" : "?",
                       r.config ? std::to_string(r.config->disk_gib) + "G" : "?");
  }
  return 0;
}

int Logs(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
         std::ostream& err) {
  bool console = false, hostd = false, follow = false;
  int tail = -1;
  FlagSet flags("fun-vmctl logs");
  flags.Bool("console", &console, "the guest's serial console (default)");
  flags.Bool("hostd", &hostd, "fun-hostd's log");
  flags.Bool("follow", &follow, "keep printing new lines", 'f');
  flags.Int("tail", &tail, "only the last N lines");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  auto name = OneName(*rest, "logs");
  if (!name.ok()) return Usage(err, name.status());
  if (console && hostd) {
    return Usage(err, InvalidArgumentError("pick one of --console and --hostd"));
  }
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());
  std::string file = paths->InstanceFile(
      *name, hostd ? InstanceFileKind::kHostdLog : InstanceFileKind::kConsoleLog);
  std::ifstream in(file);
  if (!in) {
    return Fail(err, NotFoundError(file + " does not exist yet: the instance never started"));
  }
  if (tail >= 0) {
    out << TailFile(file, static_cast<size_t>(tail));
    in.seekg(0, std::ios::end);
  } else {
    out << in.rdbuf();
    in.clear();
  }
  out.flush();
  while (follow) {
    std::string line;
    if (std::getline(in, line)) {
      out << line << "\n" << std::flush;
    } else {
      in.clear();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  return 0;
}

int Remove(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
           std::ostream& err) {
  FlagSet flags("fun-vmctl rm");
  auto rest = flags.Parse(args);
  if (!rest.ok()) return Usage(err, rest.status());
  auto name = OneName(*rest, "rm");
  if (!name.ok()) return Usage(err, name.status());
  auto paths = ResolvePaths(env);
  if (!paths.ok()) return Fail(err, paths.status());
  Status s = vm::RemoveInstance(*paths, *name);
  if (!s.ok()) return Fail(err, s);
  out << "removed " << *name << "\n";
  return 0;
}

}  // namespace

StatusOr<std::string> StartInstance(const Paths& paths, const std::string& name,
                                    const StartOptions& o, Spinner& spinner) {
  auto cfg = vm::EnsureInstance(paths, name, o.overrides);
  if (!cfg.ok()) return cfg.status();

  vm::InstanceStatus st = vm::GetInstanceStatus(paths, name);
  pid_t spawned = 0;
  int64_t spawned_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  if (st.hostd.status != vm::PidStatus::kAlive) {
    if (st.vm.status == vm::PidStatus::kAlive) {
      return FailedPreconditionError(fmt::format(
          "the VM of {} runs without its fun-hostd (pid {}): run 'fun-vmctl stop {}' first, or "
          "fun-doctor --fix",
          name, st.vm.pid, name));
    }
    auto dir = vm::FindImageDir(paths, o.image_dir);
    if (!dir.ok()) return dir.status();
    spinner.Update("starting fun-hostd");
    auto pid = vm::SpawnHostd(paths, name, *dir, vm::ExecutableDir() + "/fun-hostd");
    if (!pid.ok()) return pid.status();
    spawned = *pid;
  }
  Status ready = WaitForRuntime(paths, name, o.timeout, spinner, spawned, spawned_at_ms);
  if (!ready.ok()) {
    std::string msg = fmt::format("starting {}: {}", name, ready.message());
    std::string console = TailFile(paths.InstanceFile(name, InstanceFileKind::kConsoleLog), 15);
    if (!console.empty()) msg += "\nlast console lines:\n" + console;
    std::string hostd = TailFile(paths.InstanceFile(name, InstanceFileKind::kHostdLog), 5);
    if (!hostd.empty()) msg += "\nlast fun-hostd log lines:\n" + hostd;
    msg +=
        "\nhint: run 'fun-doctor' for the checks that explain why (boot stuck, hypervisor, "
        "accelerator)";
    return Status(ready.code(), msg);
  }
  vm::InstanceStatus now = vm::GetInstanceStatus(paths, name);
  std::string detail;
  if (now.state && now.state->ready_at_ms > now.state->started_at_ms) {
    detail = fmt::format(
        " (booted in {}, accel {})",
        Seconds(static_cast<double>(now.state->ready_at_ms - now.state->started_at_ms) / 1000.0),
        now.state->accel);
  }
  return fmt::format("{} is running{}; containerd: {}", name, detail,
                     paths.InstanceFile(name, InstanceFileKind::kContainerdSock));
}

int Run(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
        std::ostream& err) {
  if (args.empty()) {
    err << kUsage;
    return 2;
  }
  const std::string& cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    out << kUsage;
    return 0;
  }
  if (cmd == "version" || cmd == "--version") return Version(rest, out, err);
  if (cmd == "paths") return ShowPaths(rest, env, out, err);
  if (cmd == "config") return ShowConfig(rest, env, out, err);
  if (cmd == "start") return Start(rest, env, out, err);
  if (cmd == "stop") return Stop(rest, env, out, err);
  if (cmd == "restart") {
    int code = Stop(rest, env, out, err);
    return code != 0 ? code : Start(rest, env, out, err);
  }
  if (cmd == "status") return ShowStatus(rest, env, out, err);
  if (cmd == "list" || cmd == "ls") return List(rest, env, out, err);
  if (cmd == "logs") return Logs(rest, env, out, err);
  if (cmd == "rm") return Remove(rest, env, out, err);
  return Usage(err, InvalidArgumentError("unknown command \"" + cmd +
                                         "\": run 'fun-vmctl --help' for the commands"));
}

}  // namespace fun::vmctl
