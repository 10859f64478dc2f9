#include "lib/vm/pidfile.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>

#include "lib/base/files.h"

namespace fun::vm {

Status WritePidFile(const std::string& path, pid_t pid) {
  FUN_ASSIGN_OR_RETURN(uint64_t start, ProcessStartTime(pid));
  return WriteFileAtomically(path, fmt::format("{} {}\n", pid, start), 0600);
}

std::string_view PidStatusName(PidStatus s) {
  switch (s) {
    case PidStatus::kMissing:
      return "missing";
    case PidStatus::kAlive:
      return "alive";
    case PidStatus::kStale:
      return "stale";
    case PidStatus::kCorrupt:
      return "corrupt";
  }
  return "unknown";
}

StatusOr<std::pair<pid_t, uint64_t>> ParsePidFile(std::string_view text) {
  auto bad = [&] {
    return InvalidArgumentError(
        fmt::format("not a pid file (expected \"PID START\"): \"{}\"", text.substr(0, 40)));
  };
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  auto space = text.find(' ');
  if (space == std::string_view::npos) return bad();
  int64_t pid = 0;
  uint64_t start = 0;
  auto a = std::from_chars(text.data(), text.data() + space, pid);
  auto b = std::from_chars(text.data() + space + 1, text.data() + text.size(), start);
  if (a.ec != std::errc() || a.ptr != text.data() + space || b.ec != std::errc() ||
      b.ptr != text.data() + text.size() || pid <= 0 || pid > 0x3fffffff) {
    return bad();
  }
  return std::make_pair(static_cast<pid_t>(pid), start);
}

PidFileState CheckPidFile(const std::string& path) {
  PidFileState s;
  if (::access(path.c_str(), F_OK) != 0) return s;
  auto parsed = ParsePidFile(ReadFileToString(path).value_or(""));
  if (!parsed.ok()) {
    s.status = PidStatus::kCorrupt;
    s.detail = path + ": " + parsed.status().message();
    return s;
  }
  s.pid = parsed->first;
  s.start_time = parsed->second;
  auto now = ProcessStartTime(s.pid);
  if (!now.ok()) {
    s.status = PidStatus::kStale;
    s.detail = fmt::format("{}: process {} is gone", path, s.pid);
  } else if (*now != s.start_time) {
    s.status = PidStatus::kStale;
    s.detail = fmt::format("{}: pid {} now belongs to another process (started at {}, not {})",
                           path, s.pid, *now, s.start_time);
  } else {
    s.status = PidStatus::kAlive;
  }
  return s;
}

}  // namespace fun::vm
