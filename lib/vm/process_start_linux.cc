// ProcessStartTime and ProcessUptimeSeconds for Linux, from /proc.
#include <fmt/format.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include "lib/base/files.h"
#include "lib/vm/pidfile.h"

namespace fun::vm {

namespace {
std::string ReadUptime() {
  std::ifstream in("/proc/uptime");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

StatusOr<uint64_t> ProcessStartTime(pid_t pid) {
  std::string path = fmt::format("/proc/{}/stat", pid);
  // read(2), not an ifstream: a process reaped between the open and the read makes the read
  // fail with ESRCH, which libstdc++'s filebuf throws as an exception (seen in vm_test).
  auto text = ReadFileToString(path);
  if (!text.ok()) return NotFoundError(fmt::format("no process {}", pid));
  const std::string& stat = *text;
  // The command name (field 2) is in parentheses and may contain spaces or ')': skip to the
  // last ')'. Field 22 (starttime) is then the 20th field after it.
  auto close = stat.rfind(')');
  if (close == std::string::npos) return DataLossError("unreadable " + path);
  std::istringstream rest(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return DataLossError("short " + path);
  }
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(field.data(), field.data() + field.size(), v);
  if (ec != std::errc()) return DataLossError("bad starttime in " + path);
  return v;
}

std::optional<double> ProcessUptimeSeconds(pid_t pid) {
  auto start = ProcessStartTime(pid);
  if (!start.ok()) return std::nullopt;
  double uptime = 0;
  std::istringstream(ReadUptime()) >> uptime;
  long ticks = ::sysconf(_SC_CLK_TCK);
  if (ticks <= 0 || uptime <= 0) return std::nullopt;
  return uptime - static_cast<double>(*start) / static_cast<double>(ticks);
}
}  // namespace fun::vm
