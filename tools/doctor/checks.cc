#include "tools/doctor/checks.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <optional>

#include "lib/net/dns.h"
#include "lib/vm/image.h"

namespace fun::doctor {
namespace {

using R = CheckResult;

std::string DocFor(std::string_view id) { return fmt::format("docs/troubleshooting/{}.md", id); }

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string FirstLine(std::string_view s) {
  auto nl = s.find('\n');
  return SanitizeLine(nl == std::string_view::npos ? s : s.substr(0, nl));
}

std::string LastLine(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  auto nl = s.rfind('\n');
  return SanitizeLine(nl == std::string_view::npos ? s : s.substr(nl + 1));
}

// Fills detail with the config note, when the checks run on assumed defaults.
std::vector<std::string> ConfigDetail(DoctorContext& ctx) {
  std::vector<std::string> d;
  if (!ctx.ConfigNote().empty()) d.push_back(ctx.ConfigNote());
  return d;
}

std::string InstanceMissing(DoctorContext& ctx) {
  return fmt::format("instance {} does not exist yet (`fun-vmctl start {}` creates it)",
                     ctx.instance(), ctx.instance());
}

// --- FUN0001 --------------------------------------------------------------------------------

CheckResult ProbeHypervisor(DoctorContext& ctx) {
  const InstanceConfig& cfg = ctx.Config();
  std::vector<std::string> detail = ConfigDetail(ctx);
  if (cfg.backend == Backend::kNative) {
    return R::Skip("backend native runs no hypervisor (it uses the host's containerd)",
                   std::move(detail));
  }
  auto candidates =
      vm::HypervisorCandidates(ctx.os(), ctx.Host().arch, cfg.backend, ctx.env().ExecutableDir());
  if (candidates.empty()) {
    return R::Fail(fmt::format("backend {} does not run on {}", BackendName(cfg.backend),
                               OsName(ctx.os())),
                   std::move(detail))
        .WithHint("set \"backend\": \"qemu\" in the instance's config.json");
  }
  std::string found;
  std::vector<std::string> not_executable;
  for (const auto& c : candidates) {
    if (c.search_path) {
      auto p = ctx.env().FindProgram(c.program);
      if (p.ok()) {
        found = *p;
        detail.push_back(fmt::format("found {} in $PATH: {}", c.program, *p));
        break;
      }
      if (p.status().code() == Code::kPermissionDenied) {
        not_executable.push_back(fmt::format("{} in $PATH is not executable", c.program));
      }
      detail.push_back(fmt::format("looked for {} in $PATH: {}", c.program, p.status().message()));
      continue;
    }
    auto st = ctx.env().Stat(c.program);
    if (!st.ok()) {
      detail.push_back(fmt::format("looked at {} ({}): {}", c.program, c.why,
                                   st.status().code() == Code::kNotFound ? std::string("not there")
                                                                         : st.status().message()));
      continue;
    }
    Status x = ctx.env().Access(c.program, X_OK);
    if (st->type == FileType::kDirectory || !x.ok()) {
      not_executable.push_back(fmt::format("{} is not executable ({} {})", c.program,
                                           FileTypeName(st->type), FormatMode(st->mode)));
      detail.push_back(not_executable.back());
      continue;
    }
    found = c.program;
    detail.push_back(fmt::format("found {} ({})", c.program, c.why));
    break;
  }
  if (found.empty()) {
    std::string what =
        candidates.front().search_path
            ? candidates.front().program
            : candidates.front().program.substr(candidates.front().program.rfind('/') + 1);
    if (!not_executable.empty()) {
      return R::Fail(not_executable.front(), std::move(detail))
          .WithHint("make it executable (chmod +x), or reinstall the hypervisor");
    }
    return R::Fail(fmt::format("{} not found", what), std::move(detail));
  }
  if (cfg.backend == Backend::kHyperkit) {
    // hyperkit's version flag is not verified here (no macOS): existing + executable is all.
    return R::Pass(found, std::move(detail));
  }
  Command cmd{.program = found, .args = {"--version"}};
  cmd.timeout = kVersionTimeout;
  cmd.kill_grace = std::chrono::milliseconds(200);
  auto run = ctx.env().RunCommand(cmd);
  if (!run.ok()) {
    return R::Fail(fmt::format("{} cannot be started: {}", found, run.status().message()),
                   std::move(detail));
  }
  if (!run->ok()) {
    std::string why = run->Describe();
    std::string err = LastLine(run->stderr_data);
    if (!err.empty()) why += ": " + err;
    return R::Fail(fmt::format("`{} --version` {}", found, why), std::move(detail))
        .WithHint(fmt::format(
            "the hypervisor is installed but broken (a missing library?): reinstall it, then run "
            "`{} --version` yourself",
            found));
  }
  return R::Pass(fmt::format("{} ({})", found, FirstLine(run->stdout_data)), std::move(detail));
}

// --- FUN0002 --------------------------------------------------------------------------------

std::vector<std::string> FactsDetail(const vm::HostFacts& f) {
  std::vector<std::string> d;
  if (f.os == Os::kMacos) {
    d.push_back(fmt::format("kern.hv_support: {}", f.hvf_supported ? 1 : 0));
    return d;
  }
  d.push_back(fmt::format(
      "/dev/kvm: {}", !f.dev_kvm_exists  ? "missing"
                      : f.dev_kvm_usable ? "present, opens read-write"
                                         : "present, cannot be opened (" + f.dev_kvm_error + ")"));
  d.push_back(fmt::format("kvm_intel/kvm_amd loaded: {}; kvm_pvm loaded: {}",
                          f.kvm_standard ? "yes" : "no", f.kvm_pvm ? "yes" : "no"));
  return d;
}

CheckResult ProbeAccelerator(DoctorContext& ctx) {
  const InstanceConfig& cfg = ctx.Config();
  vm::HostFacts facts = ctx.env().ProbeHostFacts();
  std::vector<std::string> detail = ConfigDetail(ctx);
  for (auto& l : FactsDetail(facts)) detail.push_back(std::move(l));
  detail.push_back(
      fmt::format("config: backend {}, accel {}", BackendName(cfg.backend), AccelName(cfg.accel)));
  const vm::InstanceStatus& st = ctx.Instance();
  if (st.phase == "running" && st.state && !st.state->accel.empty()) {
    detail.push_back(
        fmt::format("the running VM uses {} ({})", st.state->accel, st.state->accel_reason));
  }
  auto choice = vm::ChooseAccel(cfg.accel, cfg.backend, facts);
  if (!choice.ok()) return R::Fail(choice.status().message(), std::move(detail));
  std::string summary = fmt::format("{}: {}", Upper(AccelName(choice->accel)), choice->reason);
  if (choice->accel == Accel::kTcg) {
    std::string hint =
        ctx.os() == Os::kMacos
            ? "TCG works but is 10-50x slower: HVF needs a Mac with hardware virtualization "
              "(not a VM without nested virtualization)"
            : "TCG works but is 10-50x slower: for KVM load kvm_intel or kvm_amd and make "
              "/dev/kvm usable (`sudo usermod -aG kvm $USER`, log in again); in a VM, enable "
              "nested virtualization";
    return R::Warn(std::move(summary), std::move(detail)).WithHint(std::move(hint));
  }
  return R::Pass(std::move(summary), std::move(detail));
}

// --- FUN0003 --------------------------------------------------------------------------------

CheckResult ProbeMemory(DoctorContext& ctx) {
  auto total = ctx.env().TotalMemoryBytes();
  if (!total.ok()) {
    return R::Warn("could not read the host's memory size: " + total.status().message());
  }
  const InstanceConfig& cfg = ctx.Config();
  uint64_t asked = static_cast<uint64_t>(cfg.memory_mib) << 20;
  std::vector<std::string> detail = ConfigDetail(ctx);
  detail.push_back(
      fmt::format("instance {} is given {} MiB (memory_mib)", ctx.instance(), cfg.memory_mib));
  std::string have = fmt::format("{} of RAM", FormatBytes(*total));
  if (*total < kMinMemoryBytes) {
    return R::Fail(fmt::format("{}; at least {} is needed", have, FormatBytes(kMinMemoryBytes)),
                   std::move(detail));
  }
  if (asked >= *total) {
    return R::Fail(fmt::format("{}, but instance {} is given {} MiB: more than the host has", have,
                               ctx.instance(), cfg.memory_mib),
                   std::move(detail))
        .WithHint(
            "lower memory_mib in config.json, e.g. `fun-vmctl start {instance} --memory "
            "2048`");
  }
  if (*total < kRecommendedMemoryBytes) {
    return R::Warn(fmt::format("{}; {} is recommended", have, FormatBytes(kRecommendedMemoryBytes)),
                   std::move(detail));
  }
  return R::Pass(have, std::move(detail));
}

// --- FUN0004 --------------------------------------------------------------------------------

CheckResult ProbeDisk(DoctorContext& ctx) {
  const std::string& state = ctx.paths().state_dir;
  std::string where = NearestExisting(ctx.env(), state);
  std::vector<std::string> detail;
  detail.push_back(where == state
                       ? fmt::format("state dir: {}", state)
                       : fmt::format("state dir {} does not exist yet; measured {}", state, where));
  auto free = ctx.env().FreeDiskBytes(where);
  if (!free.ok()) {
    return R::Warn(
        fmt::format("could not measure free space at {}: {}", where, free.status().message()),
        std::move(detail));
  }
  std::string have = fmt::format("{} free at {}", FormatBytes(*free), where);
  if (*free < kMinFreeDiskBytes) {
    return R::Fail(fmt::format("{}; at least {} is needed", have, FormatBytes(kMinFreeDiskBytes)),
                   std::move(detail));
  }
  const InstanceConfig& cfg = ctx.Config();
  uint64_t disk = static_cast<uint64_t>(cfg.disk_gib) << 30;
  // data.img is sparse: what it already uses is part of "used", what it may still grow is not.
  uint64_t used = 0;
  if (auto img = ctx.env().Stat(ctx.instance_file(InstanceFileKind::kDataImage)); img.ok()) {
    used = img->size;  // apparent size: an upper bound of what it holds
  }
  if (disk > used && disk - used > *free) {
    detail.push_back(fmt::format("instance {}'s data disk may grow to {} GiB (disk_gib)",
                                 ctx.instance(), cfg.disk_gib));
    return R::Warn(fmt::format("{}: less than the instance's data disk may grow to ({} GiB)", have,
                               cfg.disk_gib),
                   std::move(detail))
        .WithHint(
            "free some space, or give the instance a smaller disk_gib before its first "
            "start");
  }
  return R::Pass(have, std::move(detail));
}

// --- FUN0005 --------------------------------------------------------------------------------

CheckResult ProbeHostOs(DoctorContext& ctx) {
  const HostOs& h = ctx.Host();
  if (ctx.os() == Os::kMacos) {
    std::string what =
        fmt::format("macOS {} on {}", h.version.empty() ? "(unknown)" : h.version, h.arch);
    auto v = ParseMacosVersion(h.version);
    if (!v.ok()) {
      return R::Fail(fmt::format("{}: cannot tell the version ({}); 10.14 or later is needed", what,
                                 v.status().message()));
    }
    if (*v < kMinMacosVersion) {
      return R::Fail(fmt::format("{}: macOS 10.14 (Mojave) or later is needed", what))
          .WithHint("update macOS to 10.14 or later");
    }
    if (h.arch != "x86_64" && h.arch != "arm64") {
      return R::Fail(
          fmt::format("{}: only x86_64 (Intel) and arm64 (Apple Silicon) Macs are "
                      "supported",
                      what));
    }
    return R::Pass(what, {h.arch == "arm64" ? "Apple Silicon: backend qemu with HVF"
                                            : "Intel: backend hyperkit (or qemu) with HVF"});
  }
  std::string what = fmt::format("Linux {} on {}", h.version, h.arch);
  if (h.arch != "x86_64") {
    return R::Warn(fmt::format("{}: Fun's VM is x86_64 and is tested on x86_64 hosts only", what))
        .WithHint("expect QEMU to emulate the whole VM (TCG), or use the native backend");
  }
  return R::Pass(what);
}

// --- FUN0006 --------------------------------------------------------------------------------

CheckResult ProbeImage(DoctorContext& ctx) {
  std::vector<std::string> dirs = ctx.env().ImageSearchPath(ctx.paths());
  std::vector<std::string> detail;
  for (const auto& d : dirs) {
    auto st = ctx.env().Stat(d);
    if (!st.ok()) {
      detail.push_back(fmt::format("{}: {}", d,
                                   st.status().code() == Code::kNotFound
                                       ? std::string("does not exist")
                                       : st.status().message()));
      continue;
    }
    std::vector<std::string> missing;
    std::vector<std::string> sizes;
    std::vector<std::string> files = {"fun-kernel", "fun-initrd.img", "fun-cmdline"};
    // An image whose command line names a system disk has no containerd without it.
    std::string serial;
    if (auto cmdline = ctx.env().ReadFileTail(d + "/fun-cmdline", 4096); cmdline.ok()) {
      serial = vm::SystemDiskSerial(*cmdline);
      if (!serial.empty()) files.emplace_back(vm::kSystemDiskFile);
    }
    for (const std::string& f : files) {
      std::string p = d + "/" + f;
      auto fs = ctx.env().Stat(p);
      if (!fs.ok() || !ctx.env().Access(p, R_OK).ok()) {
        missing.push_back(fs.ok() ? fmt::format("{} (unreadable)", f)
                          : f == vm::kSystemDiskFile
                              ? fmt::format("{} (fun-cmdline says fun.system={})", f, serial)
                              : f);
      } else if (fs->size == 0 && f != "fun-cmdline") {
        missing.push_back(fmt::format("{} (empty)", f));
      } else {
        sizes.push_back(fmt::format("{} {}", f, FormatBytes(fs->size)));
      }
    }
    if (missing.empty()) {
      detail.push_back(fmt::format("{}: {}", d, fmt::join(sizes, ", ")));
      return R::Pass(d, std::move(detail));
    }
    detail.push_back(fmt::format("{}: missing {}", d, fmt::join(missing, ", ")));
  }
  return R::Fail(fmt::format("no VM image in the {} places searched", dirs.size()),
                 std::move(detail));
}

// --- FUN0007 --------------------------------------------------------------------------------

// What FUN0007 looks at, and the type and mode each must have (its probe and its repair).
struct ExpectedMode {
  std::string path;
  FileType type;
  unsigned mode;
  bool required;  // missing is worth a warning
};
std::vector<ExpectedMode> ExpectedModes(DoctorContext& ctx) {
  return {{ctx.instance_dir(), FileType::kDirectory, 0700, true},
          {ctx.instance_dir() + "/secret", FileType::kRegular, 0600, true},
          {ctx.instance_file(InstanceFileKind::kContainerdSock), FileType::kSocket, 0600, false}};
}

CheckResult ProbePermissions(DoctorContext& ctx) {
  std::string dir = ctx.instance_dir();
  auto st = ctx.env().Stat(dir);
  if (!st.ok()) {
    if (st.status().code() == Code::kNotFound) return R::Skip(InstanceMissing(ctx));
    return R::Fail(fmt::format("cannot look at {}: {}", dir, st.status().message()));
  }
  uid_t me = ctx.env().Uid();
  std::vector<std::string> problems, fine, detail, missing, fixes;
  bool foreign = false;
  auto look = [&](const std::string& path, FileType want, unsigned mode, bool required) {
    auto fs = path == dir ? st : ctx.env().Stat(path);
    if (!fs.ok()) {
      if (fs.status().code() != Code::kNotFound) {
        problems.push_back(fmt::format("{}: {}", path, fs.status().message()));
      } else if (required) {
        missing.push_back(path);
        detail.push_back(fmt::format("{} is missing (`fun-vmctl start` makes a new one)", path));
      }
      return;
    }
    if (fs->type != want) {
      problems.push_back(fmt::format("{} is a {}, expected a {}", path, FileTypeName(fs->type),
                                     FileTypeName(want)));
      return;
    }
    bool ok = true;
    if (fs->mode != mode) {
      problems.push_back(
          fmt::format("{} has mode {}, expected {}", path, FormatMode(fs->mode), FormatMode(mode)));
      fixes.push_back(fmt::format("chmod {} {}", FormatMode(mode), path));
      ok = false;
    }
    if (fs->owner != me) {
      problems.push_back(
          fmt::format("{} is owned by uid {}, not by you (uid {})", path, fs->owner, me));
      foreign = true;
      ok = false;
    }
    if (ok)
      fine.push_back(fmt::format("{} {}", path.substr(path.rfind('/') + 1), FormatMode(fs->mode)));
  };
  for (const ExpectedMode& e : ExpectedModes(ctx)) look(e.path, e.type, e.mode, e.required);
  for (const auto& p : problems) detail.push_back(p);
  if (!problems.empty()) {
    std::vector<std::string> steps;
    if (foreign) {
      steps.push_back(
          fmt::format("take it back (it was made by another user, e.g. with sudo): "
                      "`sudo chown -R \"$(id -un)\" {}`",
                      dir));
    }
    if (!fixes.empty()) steps.push_back(fmt::format("`{}`", fmt::join(fixes, " && ")));
    std::string hint = fmt::format("{}", fmt::join(steps, "; then "));
    return R::Fail(problems.front() + (problems.size() > 1
                                           ? fmt::format(" (and {} more)", problems.size() - 1)
                                           : std::string()),
                   std::move(detail))
        .WithHint(std::move(hint));
  }
  if (!missing.empty()) {
    return R::Warn(fmt::format("missing: {}", fmt::join(missing, ", ")), std::move(detail))
        .WithHint("`fun-vmctl start {instance}` makes a new one");
  }
  return R::Pass(fmt::format("{}, owned by you", fmt::join(fine, ", ")), std::move(detail));
}

// Sets the modes FUN0007 expects on what the user owns (a file owned by another user is left
// alone: that needs sudo, which the hint says).
FixResult FixPermissions(DoctorContext& ctx) {
  std::vector<std::string> done;
  uid_t me = ctx.env().Uid();
  for (const ExpectedMode& e : ExpectedModes(ctx)) {
    const std::string& path = e.path;
    const unsigned mode = e.mode;
    auto fs = ctx.env().Stat(path);
    if (!fs.ok() || fs->owner != me || fs->mode == mode) continue;
    FUN_RETURN_IF_ERROR(ctx.env().Chmod(path, mode));
    done.push_back(
        fmt::format("chmod {} {} (was {})", FormatMode(mode), path, FormatMode(fs->mode)));
  }
  return done;
}

// --- FUN0008 --------------------------------------------------------------------------------

// The sockets fun-hostd serves in the instance dir (and removes when it ends).
std::vector<std::string> InstanceSockets(DoctorContext& ctx) {
  return {ctx.instance_file(InstanceFileKind::kContainerdSock), ctx.instance_dir() + "/qmp.sock",
          ctx.instance_file(InstanceFileKind::kHostdSock), ctx.instance_dir() + "/p9.sock"};
}

CheckResult ProbeStale(DoctorContext& ctx) {
  const vm::InstanceStatus& st = ctx.Instance();
  if (!st.exists) return R::Skip(InstanceMissing(ctx));
  std::vector<std::string> stale, detail;
  auto pid = [&](const char* name, const vm::PidFileState& p) {
    switch (p.status) {
      case vm::PidStatus::kMissing:
        detail.push_back(fmt::format("{}: none", name));
        break;
      case vm::PidStatus::kAlive:
        detail.push_back(fmt::format("{}: pid {}, alive and ours", name, p.pid));
        break;
      case vm::PidStatus::kStale:
      case vm::PidStatus::kCorrupt:
        stale.push_back(name);
        detail.push_back(fmt::format("{}: {} ({})", name, vm::PidStatusName(p.status), p.detail));
        break;
    }
  };
  pid("hostd.pid", st.hostd);
  pid("vm.pid", st.vm);
  bool hostd_alive = st.hostd.status == vm::PidStatus::kAlive;
  for (const std::string& sock : InstanceSockets(ctx)) {
    auto fs = ctx.env().Stat(sock);
    std::string name = sock.substr(sock.rfind('/') + 1);
    if (!fs.ok()) continue;
    if (hostd_alive) {
      detail.push_back(fmt::format("{}: served by fun-hostd (pid {})", name, st.hostd.pid));
    } else {
      stale.push_back(name);
      detail.push_back(fmt::format("{}: left behind, no fun-hostd serves it", name));
    }
  }
  if (stale.empty()) return R::Pass("no stale pid files or sockets", std::move(detail));
  return R::Warn(fmt::format("stale: {}", fmt::join(stale, ", ")), std::move(detail));
}

// Removes what FUN0008 calls stale, looking again first (a `fun-vmctl start` may have begun
// since the probe): pid files whose process is gone (or unreadable ones), and the sockets,
// only while no fun-hostd of this instance is alive. Never the instance's config, secret,
// disk or logs.
FixResult FixStale(DoctorContext& ctx) {
  vm::InstanceStatus st = ctx.env().GetInstanceStatus(ctx.paths(), ctx.instance());
  std::vector<std::string> done;
  if (!st.exists || st.hostd.status == vm::PidStatus::kAlive) return done;
  auto remove = [&](const std::string& path) -> Status {
    Status s = ctx.env().RemoveFile(path);
    if (s.ok()) {
      done.push_back(fmt::format("removed {}", path));
      return s;
    }
    return s.code() == Code::kNotFound ? OkStatus() : s;
  };
  const std::pair<InstanceFileKind, const vm::PidFileState*> pids[] = {
      {InstanceFileKind::kHostdPid, &st.hostd}, {InstanceFileKind::kVmPid, &st.vm}};
  for (const auto& [kind, p] : pids) {
    if (p->status == vm::PidStatus::kStale || p->status == vm::PidStatus::kCorrupt) {
      FUN_RETURN_IF_ERROR(remove(ctx.instance_file(kind)));
    }
  }
  for (const std::string& sock : InstanceSockets(ctx)) {
    auto fs = ctx.env().Stat(sock);
    if (fs.ok() && fs->type == FileType::kSocket) FUN_RETURN_IF_ERROR(remove(sock));
  }
  return done;
}

// --- FUN0009 --------------------------------------------------------------------------------

std::string Uptime(double s) {
  auto t = static_cast<long long>(s);
  if (t < 120) return fmt::format("{} s", t);
  if (t < 7200) return fmt::format("{} min", t / 60);
  return fmt::format("{} h {} min", t / 3600, (t % 3600) / 60);
}

// How long a start has been "starting", in whole minutes, when that is kStuckStartAfter or more
// (FUN0009's probe fails it and its repair stops it); nullopt otherwise.
std::optional<int64_t> StuckStartMinutes(DoctorContext& ctx, const vm::InstanceStatus& st) {
  if (st.phase != "starting" || !st.state || st.state->started_at_ms <= 0) return std::nullopt;
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
      ctx.env().clock().Now().time_since_epoch());
  const auto stuck = now - std::chrono::milliseconds(st.state->started_at_ms);
  if (stuck < kStuckStartAfter) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::minutes>(stuck).count();
}

CheckResult ProbeRunning(DoctorContext& ctx) {
  const vm::InstanceStatus& st = ctx.Instance();
  if (!st.exists) {
    return R::Warn(InstanceMissing(ctx)).WithHint("`fun-vmctl start {instance}`");
  }
  bool hostd = st.hostd.status == vm::PidStatus::kAlive;
  bool vm = st.vm.status == vm::PidStatus::kAlive;
  std::vector<std::string> detail;
  detail.push_back(fmt::format("phase: {} (state.json and the pid files)", st.phase));
  auto pid_line = [](std::string_view who, const vm::PidFileState& p) {
    if (p.status == vm::PidStatus::kAlive) return fmt::format("{}: pid {}, alive", who, p.pid);
    return fmt::format("{}: {}{}", who, vm::PidStatusName(p.status),
                       p.detail.empty() ? std::string() : " (" + p.detail + ")");
  };
  detail.push_back(pid_line("fun-hostd", st.hostd));
  detail.push_back(pid_line("VM", st.vm));
  const std::string restart =
      "`fun-vmctl stop {instance}`, then `fun-vmctl start {instance}`; if it fails again, see "
      "FUN0010 (console) and hostd.log";
  if (vm && !hostd) {
    return R::Fail(fmt::format("the VM (pid {}) runs without its fun-hostd: nothing serves its "
                               "sockets",
                               st.vm.pid),
                   std::move(detail))
        .WithHint("`fun-vmctl stop {instance}` (or `fun-doctor --fix`) stops the orphaned VM");
  }
  if (st.phase == "running") {
    if (!vm) {
      return R::Fail("fun-hostd runs but the VM process is gone", std::move(detail))
          .WithHint(restart);
    }
    std::string summary = fmt::format("running (fun-hostd {}, VM {})", st.hostd.pid, st.vm.pid);
    if (st.uptime_s) summary += fmt::format(", up {}", Uptime(*st.uptime_s));
    if (st.state && !st.state->accel.empty()) summary += ", accel " + st.state->accel;
    return R::Pass(std::move(summary), std::move(detail));
  }
  if (st.phase == "crashed") {
    std::string why = "fun-hostd was killed (or the host rebooted) before it recorded why";
    if (st.state && st.state->last_exit && st.state->last_exit->at_ms >= st.state->started_at_ms &&
        st.state->started_at_ms > 0) {
      why = st.state->last_exit->reason;
    } else if (st.state && st.state->last_exit) {
      detail.push_back("last recorded exit, from an earlier run: " + st.state->last_exit->reason);
    }
    return R::Fail(fmt::format("crashed: state.json says {} but fun-hostd is gone: {}",
                               st.state ? PhaseName(st.state->phase) : "running", why),
                   std::move(detail))
        .WithHint(restart);
  }
  if (st.phase == "failed") {
    std::string why = st.state && !st.state->error.empty() ? st.state->error
                      : st.state && st.state->last_exit    ? st.state->last_exit->reason
                                                           : "no reason recorded";
    return R::Fail("the last start failed: " + why, std::move(detail)).WithHint(restart);
  }
  if (auto stuck_min = StuckStartMinutes(ctx, st)) {
    return R::Fail(fmt::format("the start has not finished in {} min (fun-hostd pid {})",
                               *stuck_min, st.hostd.pid),
                   std::move(detail))
        .WithHint(
            "the boot is stuck: see FUN0010 (console); `fun-doctor --fix` (or `fun-vmctl stop "
            "--force {instance}`) stops it, then `fun-vmctl start {instance}`");
  }
  if (st.phase == "starting" || st.phase == "stopping") {
    return R::Warn(fmt::format("{} (fun-hostd pid {})", st.phase, st.hostd.pid), std::move(detail))
        .WithHint(
            "wait a moment and run fun-doctor again; a start that never finishes: see "
            "FUN0010 (console)");
  }
  if (st.state && st.state->last_exit && !st.state->last_exit->clean) {
    return R::Fail("the VM died: " + st.state->last_exit->reason, std::move(detail))
        .WithHint(
            "`fun-vmctl start {instance}`; if it dies again, see FUN0010 (console) and "
            "hostd.log");
  }
  std::string summary = "stopped";
  if (st.state && st.state->last_exit)
    summary += " (last exit: " + st.state->last_exit->reason + ")";
  return R::Warn(std::move(summary), std::move(detail)).WithHint("`fun-vmctl start {instance}`");
}

// FUN0009's repair: stops a VM that cannot work, looking again first. Never one that runs, or
// that is still starting within kStuckStartAfter. Its disk and config stay: `fun-vmctl start`
// brings it back.
FixResult FixRunning(DoctorContext& ctx) {
  vm::InstanceStatus st = ctx.env().GetInstanceStatus(ctx.paths(), ctx.instance());
  std::vector<std::string> done;
  if (!st.exists) return done;
  const bool hostd = st.hostd.status == vm::PidStatus::kAlive;
  const bool vm = st.vm.status == vm::PidStatus::kAlive;
  std::string what;
  if (vm && !hostd) {
    what = fmt::format("stopped the VM (pid {}) that ran without its fun-hostd", st.vm.pid);
  } else if (auto stuck_min = hostd ? StuckStartMinutes(ctx, st) : std::nullopt) {
    what = fmt::format("stopped a start stuck for {} min (fun-hostd pid {})", *stuck_min,
                       st.hostd.pid);
  } else {
    return done;
  }
  FUN_RETURN_IF_ERROR(ctx.env().StopInstance(ctx.paths(), ctx.instance(), /*force=*/true));
  done.push_back(what + fmt::format("; `fun-vmctl start {}` starts it again", ctx.instance()));
  return done;
}

// --- FUN0010 --------------------------------------------------------------------------------

CheckResult ProbeConsole(DoctorContext& ctx) {
  std::string path = ctx.instance_file(InstanceFileKind::kConsoleLog);
  if (!ctx.Instance().exists) return R::Skip(InstanceMissing(ctx));
  auto text = ctx.env().ReadFileTail(path, kConsoleScanBytes);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) {
      return R::Skip(fmt::format("no {} yet: the instance has not booted", path));
    }
    return R::Fail(fmt::format("cannot read {}: {}", path, text.status().message()))
        .WithHint("see FUN0007 (instance directory permissions)");
  }
  std::vector<std::string> detail;
  std::string_view body = *text;
  auto fs = ctx.env().Stat(path);
  if (fs.ok() && fs->size > body.size()) {
    // Read from the middle of the file: drop the partial first line, and say so.
    auto nl = body.find('\n');
    body = nl == std::string_view::npos ? std::string_view() : body.substr(nl + 1);
    detail.push_back(fmt::format("{} is {}: scanned its last {} (line numbers count from there)",
                                 path, FormatBytes(fs->size), FormatBytes(body.size())));
  }
  std::vector<ConsoleMatch> matches = ScanConsole(body);
  if (matches.empty()) {
    size_t lines = static_cast<size_t>(std::count(body.begin(), body.end(), '\n'));
    if (size_t pos = body.rfind("fun-init: containerd ready after");
        pos != std::string_view::npos) {
      auto end = body.find('\n', pos);
      detail.push_back("last boot: " + SanitizeLine(body.substr(
                                           pos, end == std::string_view::npos ? end : end - pos)));
    }
    return R::Pass(fmt::format("no known errors in {} lines of {}", lines, path),
                   std::move(detail));
  }
  // Summary: the kinds found, with counts, in order of first appearance.
  std::vector<std::pair<std::string, size_t>> kinds;
  std::vector<std::string_view> hints;
  for (const auto& m : matches) {
    auto it =
        std::find_if(kinds.begin(), kinds.end(), [&](const auto& k) { return k.first == m.kind; });
    if (it == kinds.end()) {
      kinds.emplace_back(m.kind, 1);
      hints.push_back(m.hint);
    } else {
      ++it->second;
    }
  }
  std::vector<std::string> parts;
  for (const auto& [k, n] : kinds) parts.push_back(fmt::format("{} ({}x)", k, n));
  for (size_t i = 0; i < matches.size() && i < kMaxConsoleLinesShown; ++i) {
    detail.push_back(fmt::format("console.log:{}: {}", matches[i].line, matches[i].text));
  }
  if (matches.size() > kMaxConsoleLinesShown) {
    detail.push_back(
        fmt::format("... and {} more matching lines", matches.size() - kMaxConsoleLinesShown));
  }
  std::string hint;
  for (auto h : hints) {
    if (hint.find(h) == std::string::npos) hint += (hint.empty() ? "" : "; ") + std::string(h);
  }
  std::string summary =
      fmt::format("{}: {}", path.substr(path.rfind('/') + 1), fmt::join(parts, ", "));
  const bool fail = std::any_of(matches.begin(), matches.end(), [](const ConsoleMatch& m) {
    return m.status == CheckStatus::kFail;
  });
  if (!fail) return R::Warn(std::move(summary), std::move(detail)).WithHint(std::move(hint));
  return R::Fail(std::move(summary), std::move(detail)).WithHint(std::move(hint));
}

// nullopt when the VM runs; otherwise the Skip that says why not.
std::optional<CheckResult> SkipUnlessRunning(DoctorContext& ctx) {
  const vm::InstanceStatus& st = ctx.Instance();
  if (!st.exists) return R::Skip(InstanceMissing(ctx));
  if (st.phase != "running" || st.hostd.status != vm::PidStatus::kAlive ||
      st.vm.status != vm::PidStatus::kAlive) {
    return R::Skip(fmt::format("the VM is not running ({}; see FUN0009)", st.phase));
  }
  return std::nullopt;
}

// A skip for a check of the VM's inside when there is no VM (backend native: `native_why`) or it
// does not run; with `need_ping`, also when the agent does not answer (FUN0018 reports that).
std::optional<CheckResult> SkipUnlessVmInside(DoctorContext& ctx, std::string_view native_why,
                                              bool need_ping) {
  if (ctx.Config().backend == Backend::kNative) {
    return R::Skip(fmt::format("backend native runs no VM: {}", native_why));
  }
  if (auto skip = SkipUnlessRunning(ctx)) return skip;
  if (need_ping && !ctx.Ping().ok())
    return R::Skip("the guest agent does not answer (see FUN0018)");
  return std::nullopt;
}

// --- FUN0011 --------------------------------------------------------------------------------

CheckResult ProbeCri(DoctorContext& ctx) {
  if (auto skip = SkipUnlessRunning(ctx)) return std::move(*skip);
  // containerd.sock is relayed through the agent channel: when the agent does not answer, that
  // is FUN0018's failure, not containerd's.
  if (ctx.Config().backend != Backend::kNative) {
    if (auto skip = SkipUnlessVmInside(ctx, "", true)) return std::move(*skip);
  }
  std::string sock = ctx.instance_file(InstanceFileKind::kContainerdSock);
  if (auto fs = ctx.env().Stat(sock); !fs.ok()) {
    return R::Fail(fmt::format("{} is missing although fun-hostd runs: {}", sock,
                               fs.status().message()))
        .WithHint(
            "see hostd.log (FUN0012); `fun-vmctl stop {instance}` then `fun-vmctl start "
            "{instance}`");
  }
  Clock& clock = ctx.env().clock();
  auto t0 = clock.MonotonicNow();
  auto v = ctx.env().CriVersion(sock, kCriDeadline);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock.MonotonicNow() - t0);
  if (!v.ok()) {
    const Status& s = v.status();
    std::string why = s.code() == Code::kDeadlineExceeded
                          ? fmt::format("no answer within {} ms", kCriDeadline.count())
                      : s.code() == Code::kUnimplemented
                          ? "containerd answers but its CRI plugin is not serving"
                          : s.message();
    return R::Fail(fmt::format("CRI Version through {}: {}", sock, why),
                   {fmt::format("{}: {}", CodeName(s.code()), SanitizeLine(s.message(), 300))})
        .WithHint(
            "the guest's containerd (or the agent channel) is not up: look at the console "
            "(FUN0010) and hostd.log; `fun-vmctl stop {instance}` then `fun-vmctl start "
            "{instance}`");
  }
  std::vector<std::string> detail = {fmt::format("socket: {}", sock)};
  auto status = ctx.env().CriStatus(sock, kCriDeadline);
  if (!status.ok()) {
    return R::Fail(fmt::format("{} answered CRI Version but not CRI Status: {}",
                               SanitizeLine(v->runtime_name, 40),
                               SanitizeLine(status.status().message(), 300)),
                   std::move(detail))
        .WithHint("see the console (FUN0010) and hostd.log; `fun-vmctl restart {instance}`");
  }
  for (const auto& c : status->conditions) {
    detail.push_back(fmt::format(
        "{}: {}{}", SanitizeLine(c.type, 40), c.status ? "true" : "false",
        c.reason.empty() && c.message.empty()
            ? std::string()
            : fmt::format(" ({}: {})", SanitizeLine(c.reason, 60), SanitizeLine(c.message, 200))));
  }
  if (!status->runtime_ready || !status->network_ready) {
    std::string hint =
        !status->runtime_ready
            ? "containerd's runtime is not ready (runc or its snapshotter): see the console "
              "(FUN0010); `fun-vmctl restart {instance}`"
            : "containerd has no usable CNI network (the VM's /etc/cni/net.d or the plugins): "
              "pods cannot start; `fun-vmctl restart {instance}`, and if it stays, rebuild the "
              "image (linuxkit/build.sh)";
    return R::Fail(fmt::format("CRI Status: {}", SanitizeLine(status->Describe(), 300)),
                   std::move(detail))
        .WithHint(std::move(hint));
  }
  return R::Pass(
      fmt::format("{} {} answered CRI Version ({}) in {} ms; RuntimeReady, NetworkReady",
                  SanitizeLine(v->runtime_name, 40), SanitizeLine(v->runtime_version, 60),
                  SanitizeLine(v->runtime_api_version, 20), ms.count()),
      std::move(detail));
}

// --- FUN0012 --------------------------------------------------------------------------------

CheckResult ProbeLogs(DoctorContext& ctx) {
  const vm::InstanceStatus& st = ctx.Instance();
  if (!st.exists) return R::Skip(InstanceMissing(ctx));
  struct Log {
    std::string label;
    std::string path;
  };
  std::vector<Log> logs = {{"console", ctx.instance_file(InstanceFileKind::kConsoleLog)},
                           {"fun-hostd", ctx.instance_file(InstanceFileKind::kHostdLog)}};
  std::string user_console = ctx.paths().ConsoleLogForUser(ctx.instance());
  if (user_console != logs[0].path) logs.push_back({"console copy", user_console});
  std::vector<std::string> detail, missing, unreadable;
  for (const auto& l : logs) {
    auto fs = ctx.env().Stat(l.path);
    if (!fs.ok()) {
      if (fs.status().code() == Code::kNotFound) {
        missing.push_back(l.path);
        detail.push_back(fmt::format("{}: {} (not there)", l.label, l.path));
      } else {
        unreadable.push_back(l.path);
        detail.push_back(fmt::format("{}: {}: {}", l.label, l.path, fs.status().message()));
      }
      continue;
    }
    if (Status a = ctx.env().Access(l.path, R_OK); !a.ok()) {
      unreadable.push_back(l.path);
      detail.push_back(fmt::format("{}: {}: {}", l.label, l.path, a.message()));
      continue;
    }
    detail.push_back(fmt::format("{}: {} ({})", l.label, l.path, FormatBytes(fs->size)));
  }
  std::string previous = logs[0].path + ".1";
  if (auto fs = ctx.env().Stat(previous); fs.ok()) {
    detail.push_back(
        fmt::format("previous boot's console: {} ({})", previous, FormatBytes(fs->size)));
  }
  if (!unreadable.empty()) {
    return R::Fail(fmt::format("cannot read {}", fmt::join(unreadable, ", ")), std::move(detail))
        .WithHint("see FUN0007 (instance directory permissions)");
  }
  if (missing.size() == logs.size()) {
    return R::Warn("no logs yet: the instance has not started", std::move(detail))
        .WithHint("`fun-vmctl start {instance}` writes them");
  }
  if (!missing.empty()) {
    return R::Warn(fmt::format("missing: {}", fmt::join(missing, ", ")), std::move(detail))
        .WithHint(ctx.os() == Os::kMacos && missing.back() == user_console
                      ? "the copy under ~/Library/Logs/Fun is written by fun-hostd on macOS (not "
                        "verified in this build); the console itself is in the instance dir"
                      : "they appear with the next `fun-vmctl start {instance}`");
  }
  return R::Pass(fmt::format("console and fun-hostd logs in {}", ctx.instance_dir()),
                 std::move(detail));
}

// --- FUN0013, FUN0014: ports.json -----------------------------------------------------------

// How long fun-hostd may take for a publish round (it answers within milliseconds when idle).
constexpr std::chrono::milliseconds kHostdTableTimeout{1000};

constexpr std::string_view kPortsJsonRecovery =
    "fun-hostd rewrites ports.json within seconds: run fun-doctor again; if it stays damaged, "
    "`fun-vmctl stop {instance}` then `fun-vmctl start {instance}`";

// The table of published ports: fun-hostd's own answer on hostd.sock (fresh: right after a
// start, before its first round wrote ports.json, the file would say nothing is published),
// else ports.json: empty when the file is absent (nothing published); an error when it cannot
// be read or does not parse.
StatusOr<std::vector<vm::PublishState>> LoadPortsTable(DoctorContext& ctx) {
  if (auto fresh = ctx.env().RequestPortTable(ctx.instance_dir(), kHostdTableTimeout); fresh.ok()) {
    return fresh;
  }
  std::string path = ctx.instance_file(InstanceFileKind::kPortsJson);
  auto fs = ctx.env().Stat(path);
  if (!fs.ok() && fs.status().code() == Code::kNotFound) return std::vector<vm::PublishState>{};
  if (fs.ok() && fs->size > kPortsJsonMaxBytes) {
    return DataLossError(fmt::format("{} is damaged: {} is more than a table of ports", path,
                                     FormatBytes(fs->size)));
  }
  auto text = ctx.env().ReadFileTail(path, kPortsJsonMaxBytes);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) return std::vector<vm::PublishState>{};
    return text.status().WithContext("cannot read " + path);
  }
  auto table = vm::ParsePublishTableJson(*text);
  if (!table.ok()) {
    return DataLossError(
        fmt::format("{} is damaged: {}", path, SanitizeLine(table.status().message(), 200)));
  }
  return table;
}

CheckResult PortsTableFailure(const Status& s) {
  if (s.code() == Code::kDataLoss) {
    return R::Fail(s.message()).WithHint(std::string(kPortsJsonRecovery));
  }
  return R::Fail(s.message()).WithHint("see FUN0007 (instance directory permissions)");
}

CheckResult ProbePublishedPorts(DoctorContext& ctx) {
  if (auto skip = SkipUnlessRunning(ctx)) return std::move(*skip);
  auto table = LoadPortsTable(ctx);
  if (!table.ok()) return PortsTableFailure(table.status());
  if (table->empty()) return R::Pass("no ports are published");
  Clock& clock = ctx.env().clock();
  auto budget_end = clock.MonotonicNow() + kPortProbeBudget;
  std::vector<std::string> detail, problems;
  size_t accepting = 0, udp = 0, conflicts = 0, unprobed = 0;
  for (const vm::PublishState& row : *table) {
    std::string name = FormatPublishRow(row);
    if (!row.listening) {
      if (IsPortConflict(row.error)) {
        ++conflicts;
        detail.push_back(fmt::format("{}: not listening, the host port is taken (FUN0014)", name));
        continue;
      }
      std::string why =
          row.error.empty() ? std::string("no reason recorded") : SanitizeLine(row.error, 300);
      problems.push_back(fmt::format("{} is not listening: {}", name, why));
      detail.push_back(problems.back());
      continue;
    }
    if (row.want.host.protocol != Protocol::kTcp) {
      ++udp;
      detail.push_back(fmt::format(
          "{}: listening (UDP: not probed, a datagram gets no answer without the service's "
          "protocol)",
          name));
      continue;
    }
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(budget_end - clock.MonotonicNow());
    if (left <= std::chrono::milliseconds(0)) {
      ++unprobed;
      detail.push_back(
          fmt::format("{}: listed as listening, not probed (the {} ms budget is "
                      "spent)",
                      name, kPortProbeBudget.count()));
      continue;
    }
    std::string ip = ProbeAddress(row.want.host.ip);
    Status s = ctx.env().TcpConnect(ip, row.want.host.port, std::min(left, kPortProbeTimeout));
    if (!s.ok()) {
      std::string why =
          s.code() == Code::kDeadlineExceeded
              ? fmt::format("no answer within {} ms", std::min(left, kPortProbeTimeout).count())
              : SanitizeLine(s.message(), 300);
      problems.push_back(fmt::format("{} is listed as listening but refuses: {}", name, why));
      detail.push_back(problems.back());
      continue;
    }
    ++accepting;
    detail.push_back(name);
  }
  if (!problems.empty()) {
    std::string summary = problems.front();
    if (problems.size() > 1) summary += fmt::format(" (and {} more)", problems.size() - 1);
    return R::Fail(std::move(summary), std::move(detail));
  }
  std::vector<std::string> parts;
  parts.push_back(fmt::format("{} published TCP port{} accept{} connections", accepting,
                              accepting == 1 ? "" : "s", accepting == 1 ? "s" : ""));
  if (udp > 0) parts.push_back(fmt::format("{} UDP not probed", udp));
  if (unprobed > 0) parts.push_back(fmt::format("{} not probed in time", unprobed));
  if (conflicts > 0) parts.push_back(fmt::format("{} taken by others (FUN0014)", conflicts));
  return R::Pass(fmt::format("{}", fmt::join(parts, ", ")), std::move(detail));
}

// What to run to see who holds a host port, on this host's OS.
std::string WhoHoldsPort(Os os, const net::HostPort& hp) {
  bool tcp = hp.protocol == Protocol::kTcp;
  if (os == Os::kMacos) {
    return tcp ? fmt::format("`lsof -nP -iTCP:{} -sTCP:LISTEN`", hp.port)
               : fmt::format("`lsof -nP -iUDP:{}`", hp.port);
  }
  return fmt::format("`ss -{}np 'sport = :{}'`", tcp ? "lt" : "lu", hp.port);
}

CheckResult ProbePortConflicts(DoctorContext& ctx) {
  if (auto skip = SkipUnlessRunning(ctx)) return std::move(*skip);
  auto table = LoadPortsTable(ctx);
  if (!table.ok()) {
    return R::Skip(fmt::format("{} (see FUN0013)", SanitizeLine(table.status().message(), 300)));
  }
  std::vector<std::string> detail, failed, warned, hints;
  auto hint = [&](std::string h) {
    if (std::find(hints.begin(), hints.end(), h) == hints.end()) hints.push_back(std::move(h));
  };
  for (const vm::PublishState& row : *table) {
    if (row.listening || !IsPortConflict(row.error)) continue;
    const net::HostPort& hp = row.want.host;
    std::string port = net::FormatHostPort(hp);
    std::string owner = SanitizeLine(row.want.owner, 80);
    std::string line =
        row.want.auto_forward
            ? fmt::format("{} (auto-forward of {} in the VM): {}", port,
                          SanitizeLine(row.want.target, 80), SanitizeLine(row.error, 300))
            : fmt::format("{} wanted by {} (-> {}): {}", port, owner,
                          SanitizeLine(row.want.target, 80), SanitizeLine(row.error, 300));
    detail.push_back(line);
    (row.want.auto_forward ? warned : failed).push_back(fmt::format("{} ({})", port, owner));
    if (row.error.find("already in use") != std::string::npos) {
      hint(fmt::format("stop what holds port {} (see it with {}) or publish another host port",
                       hp.port, WhoHoldsPort(ctx.os(), hp)));
    } else {
      hint(fmt::format("two publications want {}: publish another host port for {}", port,
                       row.want.auto_forward ? std::string("the auto-forward") : owner));
    }
  }
  std::string joined = fmt::format("{}", fmt::join(hints, "; "));
  if (!failed.empty()) {
    std::string summary = fmt::format("host port{} taken: {}", failed.size() == 1 ? "" : "s",
                                      fmt::join(failed, ", "));
    if (!warned.empty())
      summary +=
          fmt::format(" (and {} auto-forward{})", warned.size(), warned.size() == 1 ? "" : "s");
    return R::Fail(std::move(summary), std::move(detail)).WithHint(std::move(joined));
  }
  if (!warned.empty()) {
    return R::Warn(fmt::format("auto-forward{} not published, the host port is taken: {}",
                               warned.size() == 1 ? "" : "s", fmt::join(warned, ", ")),
                   std::move(detail))
        .WithHint(std::move(joined) +
                  " (auto-forwards are best effort: the service is still reachable in the VM)");
  }
  return R::Pass(table->empty() ? "no ports are published"
                                : fmt::format("no conflicts among {} published port{}",
                                              table->size(), table->size() == 1 ? "" : "s"));
}

// --- FUN0015 --------------------------------------------------------------------------------

CheckResult ProbeVmOutboundNetwork(DoctorContext& ctx) {
  if (auto skip = SkipUnlessVmInside(ctx, "containers use the host's network", true)) {
    return std::move(*skip);
  }
  Clock& clock = ctx.env().clock();
  auto t0 = clock.MonotonicNow();
  auto r = ctx.env().ProbeVmOutbound(ctx.instance_dir(), ctx.instance(), kOutboundTimeout);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock.MonotonicNow() - t0);
  if (!r.ok()) {
    const Status& s = r.status();
    return R::Fail(fmt::format("the VM did not reach the host: {}", SanitizeLine(s.message(), 300)),
                   {fmt::format("{} after {} ms (limit {} ms)", CodeName(s.code()), ms.count(),
                                kOutboundTimeout.count())})
        .WithHint(
            "the VM's user-mode network (QEMU's NAT, host seen as 10.0.2.2) or the agent channel "
            "is broken: see FUN0011 and hostd.log (FUN0012); a host firewall dropping loopback "
            "traffic breaks it too; `fun-vmctl stop {instance}` then `fun-vmctl start "
            "{instance}`");
  }
  return R::Pass(fmt::format("the VM reached the host at {} in {} ms", SanitizeLine(r->target, 80),
                             ms.count()),
                 {fmt::format("the VM dialed {} (the host's loopback through QEMU's NAT); it "
                              "arrived at {} and bytes went both ways",
                              SanitizeLine(r->target, 80), SanitizeLine(r->listener, 80))});
}

// --- FUN0016 --------------------------------------------------------------------------------

constexpr std::string_view kRestartHint =
    "`fun-vmctl stop {instance}` then `fun-vmctl start {instance}`";

// A query id from the clock (a diagnostic's query needs no secret id; the answer's question is
// checked too).
uint16_t DnsQueryId(Clock& clock) {
  auto ns = static_cast<uint64_t>(clock.Now().time_since_epoch().count()) ^
            static_cast<uint64_t>(clock.MonotonicNow().time_since_epoch().count());
  return static_cast<uint16_t>(ns ^ (ns >> 16) ^ (ns >> 32) ^ (ns >> 48));
}

CheckResult ProbeVmDns(DoctorContext& ctx) {
  if (auto skip = SkipUnlessVmInside(ctx, "containers use the host's resolver", true)) {
    return std::move(*skip);
  }
  const std::string& name = ctx.options().dns_name;
  const std::string& server = ctx.options().dns_server;
  const bool default_server = server == kDefaultVmNameserver;
  const uint16_t id = DnsQueryId(ctx.env().clock());
  auto query = dns::BuildQuery(id, name, dns::kTypeA);
  if (!query.ok()) {
    return R::Fail(query.status().message()).WithHint("name a host with --dns-name");
  }
  Clock& clock = ctx.env().clock();
  auto t0 = clock.MonotonicNow();
  auto x = ctx.env().ExchangeVmDns(ctx.instance_dir(), ctx.instance(), server, *query, kDnsAttempts,
                                   kDnsAttemptTimeout);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock.MonotonicNow() - t0);
  std::vector<std::string> detail;
  detail.push_back(
      default_server
          ? fmt::format("the VM asked {} (QEMU's DNS, which relays to the host's resolver) for "
                        "{} A",
                        server, name)
          : fmt::format("the VM asked {} (--dns-server) for {} A", server, name));
  const std::string restart(kRestartHint);
  // How to see what the host's resolver says about the name.
  const std::string host_lookup = ctx.os() == Os::kMacos
                                      ? fmt::format("`dscacheutil -q host -a name {}`", name)
                                      : fmt::format("`getent hosts {}`", name);
  if (!x.ok()) {
    const Status& s = x.status();
    detail.push_back(fmt::format("{} after {} ms (at most {} queries, {} ms each)",
                                 CodeName(s.code()), ms.count(), kDnsAttempts,
                                 kDnsAttemptTimeout.count()));
    if (s.code() == Code::kDeadlineExceeded) {
      return R::Fail(fmt::format("no answer from the VM's nameserver: {}",
                                 SanitizeLine(s.message(), 300)),
                     std::move(detail))
          .WithHint(
              default_server
                  ? fmt::format("QEMU's DNS relays to the host's resolver: check that the "
                                "host resolves names ({}) and that its DNS server is reachable "
                                "(a VPN or firewall may drop it); then {}",
                                host_lookup, restart)
                  : fmt::format("nothing answers DNS at {} in the VM: check --dns-server", server));
    }
    return R::Fail(fmt::format("the VM could not ask its nameserver: {}",
                               SanitizeLine(s.message(), 300)),
                   std::move(detail))
        .WithHint(
            "the agent channel or the VM's network is broken: see FUN0011 and FUN0015, and "
            "hostd.log (FUN0012); " +
            restart);
  }
  detail.push_back(fmt::format("an answer came in {} ms{}", ms.count(),
                               x->sends > 1 ? fmt::format(" (after {} queries: the first went "
                                                          "unanswered)",
                                                          x->sends)
                                            : std::string()));
  auto malformed = [&](std::string_view why) {
    return R::Fail(fmt::format("malformed DNS answer from {}: {}", SanitizeLine(x->server, 80),
                               SanitizeLine(why, 300)),
                   std::move(detail))
        .WithHint(default_server
                      ? fmt::format("QEMU's DNS relayed bytes that are not an answer to the "
                                    "query: check the host's resolver ({}); then {}",
                                    host_lookup, restart)
                      : fmt::format("what answers at {} in the VM is not a DNS server: check "
                                    "--dns-server",
                                    server));
  };
  auto r = dns::ParseResponse(x->response, id);
  if (!r.ok()) return malformed(r.status().message());
  if (r->question_name &&
      (!dns::SameName(*r->question_name, name) || r->question_type != dns::kTypeA)) {
    return malformed(fmt::format("it answers {} {}, not {} A", *r->question_name,
                                 dns::TypeName(r->question_type), name));
  }
  for (const dns::Alias& a : r->aliases) {
    detail.push_back(fmt::format("{} is an alias of {}", SanitizeLine(a.owner, 120),
                                 SanitizeLine(a.target, 120)));
  }
  const std::string rcode = dns::RcodeName(r->rcode);
  if (r->rcode == dns::kRcodeNoError && !r->addresses.empty()) {
    std::vector<std::string> ips;
    for (const dns::Address& a : r->addresses) ips.push_back(a.address);
    detail.push_back(fmt::format("NOERROR: {}", fmt::join(ips, ", ")));
    std::string more = ips.size() > 1 ? fmt::format(" (and {} more)", ips.size() - 1) : "";
    return R::Pass(fmt::format("{} resolves to {}{} in {} ms", name, ips.front(), more, ms.count()),
                   std::move(detail));
  }
  const std::string check_host = fmt::format(
      "check the name on the host ({}), or ask for another with `fun-doctor --check FUN0016 "
      "--dns-name NAME`",
      host_lookup);
  switch (r->rcode) {
    case dns::kRcodeNoError:
      if (r->truncated) {
        return R::Warn(fmt::format("the answer for {} was cut (TC) before any address: the VM's "
                                   "resolvers retry over TCP, which is not checked",
                                   name),
                       std::move(detail))
            .WithHint(check_host);
      }
      return R::Fail(fmt::format("{} has no IPv4 address (NOERROR, no A record)", name),
                     std::move(detail))
          .WithHint(check_host);
    case dns::kRcodeNxDomain:
      return R::Fail(fmt::format("{} says {} does not exist (NXDOMAIN)", server, name),
                     std::move(detail))
          .WithHint(check_host + "; a VPN or split DNS on the host can hide names from the VM");
    case dns::kRcodeServFail:
      return R::Fail(fmt::format("{} could not resolve {} (SERVFAIL)", server, name),
                     std::move(detail))
          .WithHint(fmt::format("{} failed to reach the name's servers: check the host's network "
                                "and its own resolution ({}); then run fun-doctor again",
                                default_server ? "the host's resolver" : "that server",
                                host_lookup));
    default:
      return R::Fail(fmt::format("{} answered {} for {}", server, rcode, name), std::move(detail))
          .WithHint(default_server
                        ? fmt::format("the host's resolver would not answer the query ({}): "
                                      "check its configuration ({})",
                                      rcode, host_lookup)
                        : fmt::format("the server at {} would not answer the query ({}): check "
                                      "--dns-server",
                                      server, rcode));
  }
}

// --- FUN0017 --------------------------------------------------------------------------------

CheckResult ProbeShares(DoctorContext& ctx) {
  if (auto skip = SkipUnlessRunning(ctx)) return std::move(*skip);
  const InstanceConfig& cfg = ctx.Config();
  if (cfg.backend == Backend::kNative) {
    return R::Skip("backend native runs no VM: -v mounts host folders directly");
  }
  if (cfg.shares.empty()) return R::Pass("no shared folders configured");
  const auto& ping = ctx.Ping();
  if (!ping.ok()) return R::Skip("the guest agent does not answer (see FUN0018)");
  std::vector<std::string> bad, detail;
  for (const Share& want : cfg.shares) {
    auto got = std::find_if(ping->shares.begin(), ping->shares.end(),
                            [&](const agent::GuestShareState& g) { return g.tag == want.tag; });
    std::string name = fmt::format("{} -> {}", want.host_path, want.guest_path);
    if (got == ping->shares.end()) {
      bad.push_back(fmt::format("{}: not known to the VM (added after it started?)", name));
    } else if (got->status != "mounted") {
      bad.push_back(fmt::format("{}: {}{}", name, SanitizeLine(got->status, 40),
                                got->error.empty() ? "" : ": " + SanitizeLine(got->error, 200)));
    } else if (!got->answering) {
      bad.push_back(fmt::format("{}: mounted but not answering: {}", name,
                                SanitizeLine(got->probe_error, 200)));
    } else {
      detail.push_back(
          fmt::format("{}: mounted{}, answering", name, want.read_only ? " read-only" : ""));
    }
  }
  if (!bad.empty()) {
    detail.insert(detail.begin(), bad.begin(), bad.end());
    return R::Fail(fmt::format("{} of {} shared folders not usable in the VM: {}", bad.size(),
                               cfg.shares.size(), bad.front()),
                   std::move(detail))
        .WithHint(
            "a folder added to \"shares\" while the VM ran appears at the next start; "
            "otherwise `fun-vmctl restart {instance}` mounts them again (fun-guestd's log in "
            "the VM and hostd.log say why they failed)");
  }
  return R::Pass(fmt::format("{} shared folder{} mounted and answering", cfg.shares.size(),
                             cfg.shares.size() == 1 ? "" : "s"),
                 std::move(detail));
}

// --- FUN0018 --------------------------------------------------------------------------------

CheckResult ProbeAgent(DoctorContext& ctx) {
  if (auto skip = SkipUnlessVmInside(ctx, "no guest agent", false)) return std::move(*skip);
  const auto& ping = ctx.Ping();
  if (!ping.ok()) {
    return R::Fail(fmt::format("fun-guestd in the VM does not answer: {}",
                               SanitizeLine(ping.status().message(), 300)));
  }
  std::vector<std::string> detail = {
      fmt::format("fun-guestd {}, VM up {}", SanitizeLine(ping->version, 40),
                  Uptime(ping->uptime_s)),
      fmt::format("containerd's socket in the VM: {}",
                  ping->containerd_ready ? "accepting" : "not accepting (see FUN0011)")};
  if (ping->open_fds >= 0) detail.push_back(fmt::format("its open fds: {}", ping->open_fds));
  auto ms = (ping->host_received_unix_ns - ping->host_sent_unix_ns) / 1'000'000;
  return R::Pass(fmt::format("fun-guestd {} answered in {} ms", SanitizeLine(ping->version, 40),
                             std::max<int64_t>(ms, 0)),
                 std::move(detail));
}

// --- FUN0019 --------------------------------------------------------------------------------

// The guest's clock against the host's: the guest read its clock somewhere between the host's
// two stamps, so the offset is known to within half the round trip; only what lies beyond that
// uncertainty counts.
CheckResult ProbeClock(DoctorContext& ctx) {
  if (auto skip = SkipUnlessVmInside(ctx, "containers use the host's clock", true)) {
    return std::move(*skip);
  }
  const auto& ping = ctx.Ping();
  if (ping->guest_time_unix_ns == 0) {
    return R::Skip("this fun-guestd does not report its clock (an older image)");
  }
  agent::ClockOffset d = agent::MeasureClockOffset(*ping);
  std::vector<std::string> detail = {
      fmt::format("VM clock {} the host's by {} ms (+/- {} ms, half the ping's round trip)",
                  d.offset_ns >= 0 ? "ahead of" : "behind", std::abs(d.offset_ns) / 1'000'000,
                  d.uncertainty_ns / 1'000'000),
      "fun-hostd sets the VM's clock at boot and every 60 s"};
  if (d.excess_ns > kMaxClockDrift.count() * 1'000'000LL) {
    return R::Fail(fmt::format("the VM's clock is {:.1f} s {} the host's",
                               static_cast<double>(std::abs(d.offset_ns)) / 1e9,
                               d.offset_ns >= 0 ? "ahead of" : "behind"),
                   std::move(detail));
  }
  return R::Pass(fmt::format("the VM's clock is within {} ms of the host's",
                             (std::abs(d.offset_ns) + d.uncertainty_ns) / 1'000'000),
                 std::move(detail));
}

FixResult FixClock(DoctorContext& ctx) {
  std::vector<std::string> done;
  const auto& ping = ctx.Ping();
  if (!ping.ok() || ping->guest_time_unix_ns == 0) return done;
  const agent::ClockOffset d = agent::MeasureClockOffset(*ping);
  if (d.excess_ns <= kMaxClockDrift.count() * 1'000'000LL) return done;
  FUN_ASSIGN_OR_RETURN(std::string said,
                       ctx.env().StepGuestClock(ctx.instance_dir(), ctx.instance(), -d.offset_ns,
                                                kAgentPingTimeout));
  done.push_back(fmt::format("set the VM's clock to the host's ({})", SanitizeLine(said, 120)));
  return done;
}

// --- FUN0020 --------------------------------------------------------------------------------

CheckResult ProbeDataDisk(DoctorContext& ctx) {
  if (auto skip = SkipUnlessVmInside(ctx, "FUN0004 covers the host's disk", true)) {
    return std::move(*skip);
  }
  const auto& ping = ctx.Ping();
  if (!ping->data_disk) return R::Skip("this fun-guestd does not report its disk (an older image)");
  const agent::GuestDiskState& d = *ping->data_disk;
  if (!d.error.empty()) {
    return R::Fail(fmt::format("the VM could not measure its data disk: {}",
                               SanitizeLine(d.error, 200)))
        .WithHint("the data disk may not be mounted: see the console (FUN0010) for \"data disk\"");
  }
  std::vector<std::string> detail = {fmt::format("{}: {} free of {}", SanitizeLine(d.path, 100),
                                                 FormatBytes(d.avail_bytes),
                                                 FormatBytes(d.total_bytes))};
  switch (ClassifyDataDisk(d.total_bytes, d.avail_bytes)) {
    case CheckStatus::kFail:
      return R::Fail(fmt::format("the VM's data disk is full: {} free of {}",
                                 FormatBytes(d.avail_bytes), FormatBytes(d.total_bytes)),
                     std::move(detail));
    case CheckStatus::kWarn:
      return R::Warn(fmt::format("the VM's data disk is getting full: {} free of {}",
                                 FormatBytes(d.avail_bytes), FormatBytes(d.total_bytes)),
                     std::move(detail));
    default:
      return R::Pass(fmt::format("{} free of {} on the VM's data disk", FormatBytes(d.avail_bytes),
                                 FormatBytes(d.total_bytes)),
                     std::move(detail));
  }
}

// --- FUN0021 --------------------------------------------------------------------------------

CheckResult ProbePrivileges(DoctorContext& ctx) {
  const InstanceConfig& cfg = ctx.Config();
  std::vector<std::string> detail = ConfigDetail(ctx);
  if (cfg.backend == Backend::kNative) {
    return R::Skip("backend native runs no hypervisor", std::move(detail));
  }
  if (cfg.backend == Backend::kHyperkit) {
    // vmnet.framework (the VM's network under hyperkit) needs root: a setuid-root hyperkit, or
    // fun running as root.
    auto candidates =
        vm::HypervisorCandidates(ctx.os(), ctx.Host().arch, cfg.backend, ctx.env().ExecutableDir());
    for (const auto& c : candidates) {
      auto st = ctx.env().Stat(c.program);
      if (!st.ok()) continue;
      detail.push_back(
          fmt::format("{}: owner uid {}, mode {}", c.program, st->owner, FormatMode(st->mode)));
      if (ctx.env().Uid() == 0) {
        return R::Pass("running as root: hyperkit may use vmnet", std::move(detail));
      }
      if (st->owner == 0 && (st->mode & 04000) != 0) {
        return R::Pass(fmt::format("{} is setuid root (vmnet needs it)", c.program),
                       std::move(detail));
      }
      return R::Fail(fmt::format("{} is not setuid root: vmnet (the VM's network) needs root",
                                 c.program),
                     std::move(detail))
          .WithHint(fmt::format("`sudo chown root:wheel {0} && sudo chmod u+s {0}`", c.program));
    }
    return R::Skip("no hyperkit found (see FUN0001)", std::move(detail));
  }
  // QEMU: user-mode networking needs no privileges; the accelerator may.
  auto choice = vm::ChooseAccel(cfg.accel, cfg.backend, ctx.env().ProbeHostFacts());
  if (!choice.ok()) return R::Skip("no usable accelerator (see FUN0002)", std::move(detail));
  detail.push_back(fmt::format("accelerator: {}", AccelName(choice->accel)));
  if (choice->accel == Accel::kKvm) {
    if (Status s = ctx.env().Access("/dev/kvm", R_OK | W_OK); !s.ok()) {
      return R::Fail(fmt::format("QEMU with KVM needs /dev/kvm read-write: {}", s.message()),
                     std::move(detail))
          .WithHint("`sudo usermod -aG kvm \"$(id -un)\"`, then log in again");
    }
    detail.push_back("/dev/kvm: read-write");
  }
  return R::Pass(fmt::format("QEMU runs as you: user-mode networking needs no privileges{}",
                             choice->accel == Accel::kKvm ? ", /dev/kvm is yours to use" : ""),
                 std::move(detail));
}

std::vector<Check> BuildCatalog() {
  std::vector<Check> c;
  auto add = [&](std::string id, std::string title, std::string hint, bool fatal,
                 CheckResult (*probe)(DoctorContext&), FixResult (*fix)(DoctorContext&) = nullptr) {
    std::string doc = DocFor(id);
    Check check{.id = std::move(id),
                .title = std::move(title),
                .hint = std::move(hint),
                .doc = std::move(doc),
                .fatal = fatal,
                .probe = probe};
    if (fix != nullptr) check.fix = fix;
    c.push_back(std::move(check));
  };
  add("FUN0001", "Hypervisor present and executable",
      "install QEMU (Debian/Ubuntu: `sudo apt-get install qemu-system-x86`; macOS: the bundled "
      "one, or `brew install qemu`); hyperkit: reinstall Fun",
      true, ProbeHypervisor);
  add("FUN0002", "Accelerator usable",
      "set \"accel\": \"auto\" in config.json to let Fun pick one that works", true,
      ProbeAccelerator);
  add("FUN0003", "Host memory",
      "Fun needs 4 GB of RAM (8 GB recommended): close memory-hungry programs or use a bigger "
      "machine",
      true, ProbeMemory);
  add("FUN0004", "Free disk space for the state dir",
      "free at least 10 GB on the disk holding the state dir, or move it there with FUN_HOME", true,
      ProbeDisk);
  add("FUN0005", "Host OS version and architecture",
      "Fun runs on macOS 10.14+ (x86_64, arm64) and on x86_64 Linux", true, ProbeHostOs);
  add("FUN0006", "VM image present",
      "build one with linuxkit/build.sh, or point FUN_IMAGE_DIR at a directory with fun-kernel, "
      "fun-initrd.img and fun-cmdline",
      true, ProbeImage);
  add("FUN0007", "Instance directory permissions",
      "`chmod 700` the instance dir and `chmod 600` its secret and containerd.sock", false,
      ProbePermissions, FixPermissions);
  add("FUN0008", "Stale pid files and sockets",
      "`fun-vmctl stop {instance}` removes them (it signals only processes its pid files still "
      "name), or `fun-doctor --fix`",
      false, ProbeStale, FixStale);
  add("FUN0009", "VM running", "`fun-vmctl start {instance}`", false, ProbeRunning, FixRunning);
  add("FUN0010", "Boot console free of known errors",
      "read the whole console: `fun-vmctl logs {instance} --console`", false, ProbeConsole);
  add("FUN0011", "containerd answers CRI",
      "look at the console (FUN0010) and hostd.log; restart the instance", false, ProbeCri);
  add("FUN0012", "Log files", "`fun-vmctl logs {instance}` shows them", false, ProbeLogs);
  add("FUN0013", "Published ports listening",
      "fun-hostd lists the port but nothing accepts: see hostd.log (FUN0012); `fun-vmctl stop "
      "{instance}` then `fun-vmctl start {instance}`",
      false, ProbePublishedPorts);
  add("FUN0014", "No host port conflicts",
      "stop what holds the host port, or publish another host port", false, ProbePortConflicts);
  add("FUN0015", "VM outbound network",
      "see FUN0011 and hostd.log; `fun-vmctl stop {instance}` then `fun-vmctl start {instance}`",
      false, ProbeVmOutboundNetwork);
  add("FUN0016", "VM resolves names (DNS)",
      "the VM's nameserver (QEMU's DNS, relaying to the host's resolver) does not answer well: "
      "check that the host resolves names; `fun-vmctl stop {instance}` then `fun-vmctl start "
      "{instance}`",
      false, ProbeVmDns);
  add("FUN0017", "Shared folders mounted in the VM",
      "`fun-vmctl restart {instance}` mounts them again; a share added while the VM ran "
      "appears at the next start",
      false, ProbeShares);
  add("FUN0018", "Guest agent answering",
      "the agent channel is down: `fun-vmctl restart {instance}`; hostd.log (FUN0012) and the "
      "console (FUN0010) say why",
      false, ProbeAgent);
  add("FUN0019", "Clock in step with the host",
      "`fun-doctor --fix` sets the VM's clock now; if it drifts again, hostd.log's \"time sync\" "
      "warnings say why fun-hostd's sync every 60 s fails",
      false, ProbeClock, FixClock);
  add("FUN0020", "Data disk space in the VM",
      "free space in the VM: `fun images` then `fun rmi` what you no longer need, `fun ps -a` then "
      "`fun rm` stopped containers",
      false, ProbeDataDisk);
  add("FUN0021", "Privileges the hypervisor needs",
      "give the hypervisor what it needs (see the page), then `fun-vmctl start {instance}`", true,
      ProbePrivileges);
  return c;
}

}  // namespace

const std::vector<Check>& AllChecks() {
  static const std::vector<Check> catalog = BuildCatalog();
  return catalog;
}

const Check* FindCheck(std::string_view id) {
  std::string want = Upper(id);
  for (const Check& c : AllChecks()) {
    if (c.id == want) return &c;
  }
  return nullptr;
}

CheckStatus ClassifyDataDisk(uint64_t total, uint64_t avail) {
  if (avail < std::max(kDataDiskFailBytes, total / 20)) return CheckStatus::kFail;
  if (avail < std::max(kDataDiskWarnBytes, total / 100 * 15)) return CheckStatus::kWarn;
  return CheckStatus::kPass;
}

constexpr std::string_view kOomOfAServiceHint =
    "the VM ran out of memory and the OOM killer ended one of its own services: raise "
    "memory_mib (`fun-vmctl stop {instance}`, then `fun-vmctl start {instance} --memory 4096`)";
constexpr std::string_view kOomOfAContainerHint =
    "a container used more memory than the VM has and the OOM killer ended one of its "
    "processes (the line names it); the VM's own services are spared: give the VM more memory "
    "(`fun-vmctl stop {instance}`, then `fun-vmctl start {instance} --memory 4096`) or run less "
    "at once";
constexpr std::string_view kCpuStallHint =
    "a VM CPU made no progress for 20 s or more: under TCG (FUN0002) either the host is "
    "overloaded (close CPU-heavy programs, or `fun-vmctl start {instance} --cpus 1`) or, when it "
    "never ends, QEMU hung the guest while its kernel patched its own code (set "
    "\"tcg_threads\": \"single\" in config.json); then `fun-vmctl restart {instance}`";

const std::vector<ConsolePattern>& ConsolePatterns() {
  static const std::vector<ConsolePattern> patterns = {
      // Too little memory for the initrd: the kernel unpacks what fits and then finds no /init
      // (seen with --memory 256: the next lines say "No working init found").
      {"out of memory",
       {"Initramfs unpacking failed: write error"},
       "the VM's memory is too small to unpack its initrd: raise memory_mib (`fun-vmctl stop "
       "{instance}`, then `fun-vmctl start {instance} --memory 2048`)"},
      // No /init in the initrd (or an rdinit= naming a missing file): the kernel looks for a
      // root file system instead, and there is none.
      {"no init",
       {"VFS: Unable to mount root fs"},
       "the kernel found no /init in the initrd and has no root file system: the initrd is "
       "missing or broken, or fun-cmdline names an init that is not there; rebuild the image "
       "(linuxkit/build.sh)"},
      {"no init",
       {"Requested init", "failed"},
       "fun-cmdline's init= names a program the initrd does not have: rebuild the image "
       "(linuxkit/build.sh)"},
      {"no init",
       {"No working init found"},
       "the initrd has no usable /init: rebuild the image (linuxkit/build.sh)"},
      {"no init",
       {"not syncing: No init"},
       "the initrd has no usable /init: rebuild the image "
       "(linuxkit/build.sh)"},
      // Out of memory with nothing the OOM killer may kill (seen with --memory 256 and an initrd
      // of ~200 MB: the kernel panics while unpacking it, before any process runs).
      {"out of memory",
       {"System is deadlocked on memory"},
       "the VM's memory is too small for its kernel and initrd: raise memory_mib (`fun-vmctl "
       "stop {instance}`, then `fun-vmctl start {instance} --memory 2048`)"},
      {"kernel panic",
       {"Kernel panic"},
       "the guest kernel panicked: read the lines before it in the console; rebuild the image if "
       "it is the image's fault"},
      // The OOM killer ended one of the VM's own services: containerd and its shims, fun-guestd
      // and its 9P relays run at oom_score_adj -999 (guest/init; the shims at -998, as do pod
      // sandboxes), so it does so only when nothing else is left to free.
      {"out of memory", {"Killed process", "(containerd"}, kOomOfAServiceHint},
      {"out of memory", {"Killed process", "(fun-"}, kOomOfAServiceHint},
      {"out of memory", {"Killed process", "oom_score_adj:-99"}, kOomOfAServiceHint},
      // Anything else it ends is a container's process: the container exits (137) or carries
      // on without it, and the VM keeps working.
      {"process killed for memory",
       {"out of memory: Killed process"},
       kOomOfAContainerHint,
       CheckStatus::kWarn},
      {"process killed for memory",
       {"Out of memory: Killed process"},
       kOomOfAContainerHint,
       CheckStatus::kWarn},
      {"out of memory",
       {"Out of memory"},
       "the VM ran out of memory: raise memory_mib (`fun-vmctl start {instance} --memory 4096`)"},
      {"module load failure",
       {"fun-init: error: kernel module"},
       "the initrd's modules do not match its kernel: rebuild the image (linuxkit/build.sh)"},
      {"module load failure",
       {"modprobe: ", "not found"},
       "the initrd's modules do not match its kernel: rebuild the image (linuxkit/build.sh)"},
      {"module load failure",
       {"insmod: "},
       "the initrd's modules do not match its kernel: rebuild the image (linuxkit/build.sh)"},
      // A vCPU that made no progress for 20 s or more. Under TCG that is most often a host too
      // busy to run the VM's CPU threads; the task named is what was running.
      {"CPU stall", {"soft lockup - CPU#"}, kCpuStallHint},
      {"CPU stall", {"rcu: INFO: ", "detected stalls"}, kCpuStallHint},
      {"hung task",
       {"INFO: task ", "blocked for more than"},
       "a task in the VM waited two minutes or more for I/O: a shared folder whose server does "
       "not answer (FUN0017), a full data disk (FUN0020), or a host too busy to run the VM"},
      {"init error",
       {"fun-init: error:"},
       "the guest's /init reported a failure: the line says what; the whole console has the "
       "context"},
  };
  return patterns;
}

std::vector<ConsoleMatch> ScanConsole(std::string_view text) {
  std::vector<ConsoleMatch> out;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    for (const ConsolePattern& p : ConsolePatterns()) {
      size_t at = 0;
      bool all = true;
      for (std::string_view part : p.parts) {
        size_t f = line.find(part, at);
        if (f == std::string_view::npos) {
          all = false;
          break;
        }
        at = f + part.size();
      }
      if (all) {
        out.push_back({line_no, std::string(p.kind), SanitizeLine(line), p.hint, p.status});
        break;
      }
    }
  }
  return out;
}

std::string SanitizeLine(std::string_view line, size_t max_bytes) {
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
  std::string out;
  out.reserve(std::min(line.size(), max_bytes + 3));
  for (char ch : line) {
    auto c = static_cast<unsigned char>(ch);
    out.push_back(c == '\t' ? ' ' : (c < 0x20 || c == 0x7f) ? '?' : ch);
  }
  if (out.size() > max_bytes) {
    size_t cut = max_bytes;
    // Do not cut a UTF-8 sequence in half.
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
    out += "...";
  }
  return out;
}

StatusOr<std::array<int, 3>> ParseMacosVersion(std::string_view version) {
  std::array<int, 3> v = {0, 0, 0};
  std::string_view rest = version;
  for (size_t i = 0; i < 3; ++i) {
    int n = 0;
    auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), n);
    if (ec != std::errc() || ptr == rest.data() || n < 0) break;
    v[i] = n;
    rest.remove_prefix(static_cast<size_t>(ptr - rest.data()));
    if (rest.empty()) return v;
    if (rest.front() != '.' || i == 2) break;
    rest.remove_prefix(1);
  }
  return InvalidArgumentError(
      fmt::format("\"{}\" is not a macOS version like 14.2.1", SanitizeLine(version, 40)));
}

std::string FormatBytes(uint64_t bytes) {
  auto d = static_cast<double>(bytes);
  if (bytes >= 1'000'000'000ULL) return fmt::format("{:.1f} GB", d / 1e9);
  if (bytes >= 1'000'000ULL) return fmt::format("{:.1f} MB", d / 1e6);
  if (bytes >= 1'000ULL) return fmt::format("{:.1f} kB", d / 1e3);
  return fmt::format("{} B", bytes);
}

std::string FormatMode(unsigned mode) { return fmt::format("{:04o}", mode & 07777); }

std::string FormatPublishRow(const vm::PublishState& row) {
  return fmt::format("{} -> {} ({})", net::FormatHostPort(row.want.host),
                     SanitizeLine(row.want.target, 80), SanitizeLine(row.want.owner, 80));
}

bool IsPortConflict(std::string_view error) {
  if (error.find("already in use") != std::string_view::npos) return true;
  auto by = error.find("is published by ");
  return by != std::string_view::npos && error.find(" already", by) != std::string_view::npos;
}

std::string ProbeAddress(const std::string& ip) {
  if (ip == "0.0.0.0" || ip.empty()) return "127.0.0.1";
  if (ip == "::" || ip == "[::]") return "::1";
  return ip;
}

std::string NearestExisting(DoctorEnv& env, const std::string& path) {
  std::string p = path;
  while (!p.empty() && p != "/") {
    if (env.Stat(p).ok()) return p;
    auto slash = p.rfind('/');
    if (slash == std::string::npos) break;
    p = slash == 0 ? "/" : p.substr(0, slash);
  }
  return "/";
}

}  // namespace fun::doctor
