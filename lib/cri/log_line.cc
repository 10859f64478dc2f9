#include "lib/cri/log_line.h"

#include <fmt/format.h>

namespace fun::cri {

namespace {

// What a valid time field looks like: digits, '-', ':', 'T', '.', 'Z', '+'; at most 40 bytes.
bool PlausibleTime(std::string_view t) {
  if (t.size() < 20 || t.size() > 40) return false;
  for (char c : t) {
    const bool ok = (c >= '0' && c <= '9') || c == '-' || c == ':' || c == 'T' || c == '.' ||
                    c == 'Z' || c == '+';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

StatusOr<LogEntry> ParseLogLine(std::string_view line) {
  auto bad = [&](std::string_view what) {
    return InvalidArgumentError(fmt::format("not a CRI log line ({}): {:.60}", what, line));
  };
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return bad("no space after the time");
  LogEntry e;
  e.time = line.substr(0, sp1);
  if (!PlausibleTime(e.time)) return bad("the time is not RFC 3339");
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return bad("no space after the stream");
  const std::string_view stream = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (stream == "stdout") {
    e.stream = LogStream::kStdout;
  } else if (stream == "stderr") {
    e.stream = LogStream::kStderr;
  } else {
    return bad("the stream is neither stdout nor stderr");
  }
  // The tag: "P" or "F", possibly with more ':'-separated tags after it (CRI allows that).
  const size_t sp3 = line.find(' ', sp2 + 1);
  const std::string_view tag =
      sp3 == std::string_view::npos ? line.substr(sp2 + 1) : line.substr(sp2 + 1, sp3 - sp2 - 1);
  const std::string_view first = tag.substr(0, tag.find(':'));
  if (first == "P") {
    e.partial = true;
  } else if (first == "F") {
    e.partial = false;
  } else {
    return bad("the tag is neither P nor F");
  }
  e.message = sp3 == std::string_view::npos ? std::string_view() : line.substr(sp3 + 1);
  return e;
}

void LogSplitter::Feed(std::string_view bytes, const Sink& sink) {
  while (!bytes.empty()) {
    const size_t nl = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, nl);
    if (skipping_) {
      if (nl == std::string_view::npos) return;
      skipping_ = false;
      bytes.remove_prefix(nl + 1);
      continue;
    }
    const size_t room = max_line_ - pending_.size();
    if (piece.size() > room) {
      // Over-long: parse what fits, skip to the end of the line.
      pending_.append(piece.substr(0, room));
      sink(ParseLogLine(pending_));
      pending_.clear();
      if (nl == std::string_view::npos) {
        skipping_ = true;
        return;
      }
      bytes.remove_prefix(nl + 1);
      continue;
    }
    if (nl == std::string_view::npos) {
      pending_.append(piece);
      return;
    }
    if (pending_.empty()) {
      sink(ParseLogLine(piece));
    } else {
      pending_.append(piece);
      sink(ParseLogLine(pending_));
      pending_.clear();
    }
    bytes.remove_prefix(nl + 1);
  }
}

void LogSplitter::Finish(const Sink& sink) {
  if (!pending_.empty()) sink(ParseLogLine(pending_));
  pending_.clear();
  skipping_ = false;
}

void LogTail::Add(std::string_view line) {
  auto parsed = ParseLogLine(line);
  const bool complete = !parsed.ok() || !parsed->partial;
  lines_.emplace_back(line);
  if (complete) ++complete_;
  // Drop the oldest whole line (its P pieces and its F) while more than n complete lines remain.
  while (complete_ > n_ && !lines_.empty()) {
    auto front = ParseLogLine(lines_.front());
    const bool front_complete = !front.ok() || !front->partial;
    lines_.pop_front();
    if (front_complete) --complete_;
  }
  // n == 0 keeps nothing, not even pieces of a line still open.
  if (n_ == 0) lines_.clear();
}

}  // namespace fun::cri
