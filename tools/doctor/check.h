// check.h: a doctor check as data, what it returns, and what it gets to look at.
//
// A Check is Lima's startup requirement {description, script, debugHint, fatal} in C++: a
// stable id ("FUN0001"), a title, a hint (what to do when it does not pass), the page that
// explains it (docs/troubleshooting/FUN0001.md), whether a failure stops the instance from
// starting at all (fatal), and a probe. The probe looks at the machine only through the
// DoctorContext's DoctorEnv, and returns one CheckResult: pass, warn, fail or skip, a one-line
// summary and optional detail lines.
//
//   Check c{.id = "FUN0099", .title = "Example", .hint = "run `fun-vmctl stop {instance}`",
//           .doc = "docs/troubleshooting/FUN0099.md", .fatal = false,
//           .probe = [](DoctorContext& ctx) {
//             auto st = ctx.env().Stat(ctx.instance_dir());
//             if (!st.ok()) return CheckResult::Skip("instance does not exist yet");
//             return CheckResult::Pass("exists");
//           }};
//
// "{instance}" in a hint is replaced by the instance's name when the result is reported.
//
// Thread-safety: Check and CheckResult are values. A DoctorContext caches what several checks
// share (the instance status, the host facts) and is used by one thread.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/instance_config.h"
#include "lib/base/paths.h"
#include "tools/doctor/doctor_env.h"

namespace fun::doctor {

enum class CheckStatus { kPass, kWarn, kFail, kSkip };
// "pass", "warn", "fail", "skip".
std::string_view CheckStatusName(CheckStatus status);

struct CheckResult {
  CheckStatus status = CheckStatus::kPass;
  std::string summary;              // one line
  std::vector<std::string> detail;  // optional lines: what was looked at, matching lines, ...
  std::string hint;                 // overrides the check's hint when set

  static CheckResult Pass(std::string summary, std::vector<std::string> detail = {});
  static CheckResult Warn(std::string summary, std::vector<std::string> detail = {});
  static CheckResult Fail(std::string summary, std::vector<std::string> detail = {});
  // Not run, and why ("the VM is not running (FUN0009)").
  static CheckResult Skip(std::string why, std::vector<std::string> detail = {});
  CheckResult&& WithHint(std::string h) && {
    hint = std::move(h);
    return std::move(*this);
  }
};

class DoctorContext;

// FUN0016's default: a name that resolves wherever Debian's mirrors do (the image is built from
// them), through whatever resolver the host uses.
inline constexpr std::string_view kDefaultDnsName = "deb.debian.org";

// What fun-doctor's flags tell the checks besides the instance's name.
struct DoctorOptions {
  // FUN0016: the name the VM resolves (--dns-name), and the nameserver it asks, as the VM
  // reaches it (--dns-server IP:PORT).
  std::string dns_name = std::string(kDefaultDnsName);
  std::string dns_server = std::string(kDefaultVmNameserver);
};

// What a repair did: one line per action ("removed stale hostd.pid"); none when there was
// nothing it may safely change. An error when an action failed (what was done before stays).
using FixResult = StatusOr<std::vector<std::string>>;

struct Check {
  std::string id;      // "FUN0001": stable, never reused
  std::string title;   // "Hypervisor present and executable"
  std::string hint;    // what to do when it warns or fails, one or two lines
  std::string doc;     // "docs/troubleshooting/FUN0001.md"
  bool fatal = false;  // a failure means no instance can start until it is fixed
  std::function<CheckResult(DoctorContext&)> probe;
  // `fun-doctor --fix`: a repair that is safe to run unattended (never deletes user data, never
  // stops a VM that works), run when the probe warned or failed; empty when there is none.
  // Running it twice changes nothing the second time.
  std::function<FixResult(DoctorContext&)> fix;
};

// How long the guest agent's ping may take (the checks of the VM's inside share one ping).
inline constexpr std::chrono::milliseconds kAgentPingTimeout{3000};

// What a probe may look at: the environment, the resolved paths, the instance's name and the
// options, and cached facts that several checks share.
class DoctorContext {
 public:
  DoctorContext(DoctorEnv& env, Paths paths, std::string instance, DoctorOptions options = {})
      : env_(env),
        paths_(std::move(paths)),
        instance_(std::move(instance)),
        options_(std::move(options)) {}

  DoctorEnv& env() { return env_; }
  const DoctorOptions& options() const { return options_; }
  const Paths& paths() const { return paths_; }
  Os os() const { return paths_.os; }
  const std::string& instance() const { return instance_; }
  std::string instance_dir() const { return paths_.InstanceDir(instance_); }
  std::string instance_file(InstanceFileKind kind) const {
    return paths_.InstanceFile(instance_, kind);
  }

  // env().GetInstanceStatus, once.
  const vm::InstanceStatus& Instance();
  // env().GetHostOs, once.
  const HostOs& Host();
  // The instance's config.json, or when it has none (or an unreadable one) the defaults for
  // this host, which is what `fun-vmctl start` would use.
  const InstanceConfig& Config();
  // Why Config() holds defaults ("" when it is the instance's own config.json).
  const std::string& ConfigNote();
  // env().PingGuest of the instance, once (kAgentPingTimeout).
  const StatusOr<agent::AgentPing>& Ping();

 private:
  DoctorEnv& env_;
  Paths paths_;
  std::string instance_;
  DoctorOptions options_;
  std::optional<vm::InstanceStatus> instance_status_;
  std::optional<HostOs> host_;
  std::optional<InstanceConfig> config_;
  std::string config_note_;
  std::optional<StatusOr<agent::AgentPing>> ping_;
};

}  // namespace fun::doctor
