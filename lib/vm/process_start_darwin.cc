// ProcessStartTime and ProcessUptimeSeconds for macOS, from sysctl(KERN_PROC_PID).
// Built to the documented contract; not verified here (macOS cannot run on this project's CI).
#include <fmt/format.h>
#include <sys/sysctl.h>
#include <sys/time.h>

#include "lib/vm/pidfile.h"

namespace fun::vm {

StatusOr<uint64_t> ProcessStartTime(pid_t pid) {
  int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, pid};
  struct kinfo_proc info {};
  size_t len = sizeof(info);
  if (::sysctl(mib, 4, &info, &len, nullptr, 0) != 0 || len == 0) {
    return NotFoundError(fmt::format("no process {}", pid));
  }
  const auto& tv = info.kp_proc.p_starttime;
  return static_cast<uint64_t>(tv.tv_sec) * 1000000u + static_cast<uint64_t>(tv.tv_usec);
}

std::optional<double> ProcessUptimeSeconds(pid_t pid) {
  auto start = ProcessStartTime(pid);
  if (!start.ok()) return std::nullopt;
  struct timeval now {};
  ::gettimeofday(&now, nullptr);
  double n = static_cast<double>(now.tv_sec) + now.tv_usec / 1e6;
  return n - static_cast<double>(*start) / 1e6;
}
}  // namespace fun::vm
