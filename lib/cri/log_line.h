// log_line.h: containerd's CRI container log format, parsed (pure: bytes in, entries out).
//
// containerd writes each container's stdout and stderr to one file, a line per chunk:
//   <RFC3339Nano time> <stdout|stderr> <P|F> <message>\n
// P marks a partial line (the message continues in the next P/F entry of the same stream), F
// the end of a line. The bytes come from the VM (or from a file any container can fill), so
// the parser is bounded and never trusts them: a malformed line is an error entry, not a crash.
//
//   LogSplitter split;
//   split.Feed(chunk, [&](const LogEntry& e) { (e.stream == LogStream::kStderr ? err : out)
//                                               << e.message << (e.partial ? "" : "\n"); });
//   split.Finish(...);   // a last line without '\n' (a file still being written)
//
// Thread-safety: LogSplitter is not thread-safe; ParseLogLine is a pure function.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

#include "lib/base/status.h"

namespace fun::cri {

enum class LogStream { kStdout, kStderr };

struct LogEntry {
  std::string_view time;  // as written, e.g. "2026-11-29T13:17:26.179496371Z"
  LogStream stream = LogStream::kStdout;
  bool partial = false;      // "P": no newline after the message
  std::string_view message;  // without the trailing newline
};

// Parses one line (without its '\n'). InvalidArgument, naming what is wrong, for anything else.
StatusOr<LogEntry> ParseLogLine(std::string_view line);

// Splits a byte stream into lines and parses them. Lines longer than max_line are cut: the
// first max_line bytes are parsed and the rest of that line is skipped (containerd itself
// splits long output into 16 KiB P entries, so only a corrupt file hits this).
class LogSplitter {
 public:
  using Sink = std::function<void(const StatusOr<LogEntry>&)>;
  explicit LogSplitter(size_t max_line = 1 << 20) : max_line_(max_line) {}
  // Feeds bytes; calls `sink` once per complete line.
  void Feed(std::string_view bytes, const Sink& sink);
  // The bytes of an unterminated last line, parsed as a line (then forgotten).
  void Finish(const Sink& sink);

 private:
  size_t max_line_;
  std::string pending_;
  bool skipping_ = false;  // inside an over-long line, until its '\n'
};

// Keeps the last `n` complete lines (F entries and the P entries before them) of a log, for
// `logs --tail N`: feed whole lines in order, then take them.
class LogTail {
 public:
  explicit LogTail(size_t n) : n_(n) {}
  void Add(std::string_view line);
  // The kept lines, oldest first, each without its '\n'.
  const std::deque<std::string>& lines() const { return lines_; }

 private:
  size_t n_;
  size_t complete_ = 0;  // F lines among lines_
  std::deque<std::string> lines_;
};

}  // namespace fun::cri
