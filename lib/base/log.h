// log.h: leveled logging to stderr and to a log file.
//
// Daemons (fun-hostd) log everything to their log file and warnings to stderr; CLIs log
// warnings to stderr in a brief form and, with --log-file, everything to a file.
//
//   fun::log::Default().SetStderrLevel(fun::log::Level::kInfo);
//   FUN_RETURN_IF_ERROR(fun::log::Default().OpenFile(paths.InstanceHostdLog("default")));
//   FUN_LOG(Info, "qemu started, pid {}", pid);
//   FUN_LOG(Error, "agent channel closed: {}", status);
//
// A file line:   2026-11-29T10:40:28.123Z I 4242 hostd.cc:42] qemu started, pid 4243
// A brief line:  fun-vmctl: warning: qemu started, pid 4243
//
// Thread-safety: a Logger is safe to use from many threads; each line is written whole.
#pragma once

#include <fmt/format.h>
#include <fmt/ostream.h>

#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "lib/base/clock.h"
#include "lib/base/status.h"

namespace fun::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

// "debug", "info", "warning", "error", "off".
std::string_view LevelName(Level level);
// Accepts the names above (and "warn"), case-insensitive.
StatusOr<Level> ParseLevel(std::string_view name);

enum class StderrFormat {
  kFull,   // like the file: timestamp, level, pid, source location
  kBrief,  // "<program>: <level>: <message>" for people at a terminal
};

class Logger {
 public:
  // Writes one finished line (with its trailing newline); used to capture output in tests.
  using Sink = std::function<void(std::string_view line)>;

  explicit Logger(Clock& clock = Clock::Real());
  ~Logger();
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  // Lines at or above `level` go to stderr (default: warning, brief).
  void SetStderrLevel(Level level);
  void SetStderrFormat(StderrFormat format, std::string program_name = "fun");
  // Replaces stderr with `sink` (tests); an empty sink restores stderr.
  void SetStderrSink(Sink sink);

  // Appends lines at or above `level` to `path` (created 0600, its directory must exist).
  // Replaces any file opened before.
  Status OpenFile(const std::string& path, Level level = Level::kDebug);
  void CloseFile();
  // The open log file's path, or "".
  std::string file_path() const;

  bool Enabled(Level level) const;
  void Write(Level level, const char* source_file, int source_line, std::string_view message);

 private:
  Clock& clock_;
  mutable std::mutex mu_;
  Level stderr_level_ = Level::kWarning;
  StderrFormat stderr_format_ = StderrFormat::kBrief;
  std::string program_ = "fun";
  Sink stderr_sink_;
  std::FILE* file_ = nullptr;
  std::string file_path_;
  Level file_level_ = Level::kOff;
};

// The process-wide logger that FUN_LOG writes to.
Logger& Default();

}  // namespace fun::log

// Let fmt print a Status with "{}".
template <>
struct fmt::formatter<fun::Status> : fmt::ostream_formatter {};

// FUN_LOG(Info, "format {}", args...): logs at Debug, Info, Warning or Error. The message is
// only formatted when the level is enabled somewhere.
#define FUN_LOG(level, ...)                                              \
  do {                                                                   \
    ::fun::log::Logger& fun_logger_ = ::fun::log::Default();             \
    if (fun_logger_.Enabled(::fun::log::Level::k##level)) {              \
      fun_logger_.Write(::fun::log::Level::k##level, __FILE__, __LINE__, \
                        ::fmt::format(__VA_ARGS__));                     \
    }                                                                    \
  } while (0)
