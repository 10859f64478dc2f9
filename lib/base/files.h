// files.h: small file operations every room needs.
//
//   FUN_RETURN_IF_ERROR(WriteFileAtomically(dir + "/state.json", json, 0600));
//
// Thread-safety: functions are thread-safe (two writers of one path: the last rename wins).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "lib/base/status.h"

namespace fun {

// Writes `data` to `path` + ".tmp" (mode `mode`), then renames it over `path`: a reader sees
// the old content or the new, never a part.
Status WriteFileAtomically(const std::string& path, std::string_view data, mode_t mode = 0600);

// The whole file (for the small files of state, pid files, /proc). NotFound when it does not
// exist; other errors with errno's message; both name the path.
StatusOr<std::string> ReadFileToString(const std::string& path);

// The last `lines` lines of a text file ("" if unreadable): logs for error messages.
std::string TailFile(const std::string& path, size_t lines);

// How many fds process `pid` has open (0: this process, not counting the one the count itself
// uses). Linux: the entries of /proc/<pid>/fd; elsewhere only this process (/dev/fd), other
// pids are Unimplemented.
StatusOr<size_t> CountOpenFds(int pid = 0);

// Raises this process's soft limit on open files to its hard limit (macOS: at most OPEN_MAX),
// for servers that hold two fds per relayed connection. Returns the limit now in effect.
StatusOr<uint64_t> RaiseOpenFileLimit();

}  // namespace fun
