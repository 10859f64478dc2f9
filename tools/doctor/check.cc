#include "tools/doctor/check.h"

#include <fmt/format.h>

namespace fun::doctor {

std::string_view CheckStatusName(CheckStatus status) {
  switch (status) {
    case CheckStatus::kPass:
      return "pass";
    case CheckStatus::kWarn:
      return "warn";
    case CheckStatus::kFail:
      return "fail";
    case CheckStatus::kSkip:
      return "skip";
  }
  return "unknown";
}

namespace {
CheckResult Make(CheckStatus status, std::string summary, std::vector<std::string> detail) {
  CheckResult r;
  r.status = status;
  r.summary = std::move(summary);
  r.detail = std::move(detail);
  return r;
}
}  // namespace

CheckResult CheckResult::Pass(std::string summary, std::vector<std::string> detail) {
  return Make(CheckStatus::kPass, std::move(summary), std::move(detail));
}
CheckResult CheckResult::Warn(std::string summary, std::vector<std::string> detail) {
  return Make(CheckStatus::kWarn, std::move(summary), std::move(detail));
}
CheckResult CheckResult::Fail(std::string summary, std::vector<std::string> detail) {
  return Make(CheckStatus::kFail, std::move(summary), std::move(detail));
}
CheckResult CheckResult::Skip(std::string why, std::vector<std::string> detail) {
  return Make(CheckStatus::kSkip, std::move(why), std::move(detail));
}

const vm::InstanceStatus& DoctorContext::Instance() {
  if (!instance_status_) instance_status_ = env_.GetInstanceStatus(paths_, instance_);
  return *instance_status_;
}

const HostOs& DoctorContext::Host() {
  if (!host_) host_ = env_.GetHostOs();
  return *host_;
}

const InstanceConfig& DoctorContext::Config() {
  if (config_) return *config_;
  const vm::InstanceStatus& st = Instance();
  if (st.config) {
    config_ = *st.config;
    return *config_;
  }
  const std::string& arch = Host().arch;
  InstanceConfig c = DefaultInstanceConfig({.is_macos = os() == Os::kMacos,
                                            .is_arm64 = arch == "arm64" || arch == "aarch64",
                                            .home_dir = paths_.home});
  c.name = instance_;
  config_ = std::move(c);
  if (!st.config_error.empty()) {
    config_note_ =
        fmt::format("config.json is unusable ({}): assuming this host's defaults", st.config_error);
  } else if (!st.exists) {
    config_note_ = fmt::format(
        "instance {} does not exist yet: assuming the defaults `fun-vmctl start` would use",
        instance_);
  } else {
    config_note_ = "no config.json: assuming this host's defaults";
  }
  return *config_;
}

const StatusOr<agent::AgentPing>& DoctorContext::Ping() {
  if (!ping_) ping_ = env_.PingGuest(instance_dir(), instance_, kAgentPingTimeout);
  return *ping_;
}

const std::string& DoctorContext::ConfigNote() {
  Config();
  return config_note_;
}

}  // namespace fun::doctor
