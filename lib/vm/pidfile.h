// pidfile.h: pid files that cannot mistake a reused pid for ours.
//
// A pid file holds "PID START\n" where START is the process's start time as the kernel records
// it (Linux: /proc/PID/stat field 22, clock ticks since boot; macOS: kinfo_proc p_starttime as
// microseconds, unverified here). A pid counts as ours only while a process with that pid
// exists AND has the same start time: after a reboot or pid wrap-around, a stranger with the
// same pid is "stale", never signalled.
//
//   FUN_RETURN_IF_ERROR(WritePidFile(dir + "/vm.pid", qemu_pid));
//   PidFileState s = CheckPidFile(dir + "/vm.pid");
//   if (s.status == PidStatus::kAlive) ... s.pid is ours
//
// Thread-safety: functions are thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "lib/base/status.h"

namespace fun::vm {

// The start time of `pid` (NotFound if there is no such process).
StatusOr<uint64_t> ProcessStartTime(pid_t pid);

// Writes "PID START\n" atomically (temp file + rename), mode 0600.
Status WritePidFile(const std::string& path, pid_t pid);

enum class PidStatus {
  kMissing,  // no pid file
  kAlive,    // the recorded process runs, same start time: ours
  kStale,    // the file names a process that is gone, or a pid now used by another process
  kCorrupt,  // unreadable contents
};
std::string_view PidStatusName(PidStatus s);

struct PidFileState {
  PidStatus status = PidStatus::kMissing;
  pid_t pid = 0;
  uint64_t start_time = 0;
  std::string detail;  // why it is stale or corrupt, for status and the doctor
};

PidFileState CheckPidFile(const std::string& path);

// Parses "PID START\n" (pure; for tests and the fuzzer of files on disk).
StatusOr<std::pair<pid_t, uint64_t>> ParsePidFile(std::string_view text);

// Seconds the process has run, from its start time (Linux: uses /proc/uptime and the tick rate).
std::optional<double> ProcessUptimeSeconds(pid_t pid);

}  // namespace fun::vm
