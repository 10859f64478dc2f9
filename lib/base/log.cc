#include "lib/base/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace fun::log {

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarning:
      return "warning";
    case Level::kError:
      return "error";
    case Level::kOff:
      return "off";
  }
  return "unknown";
}

StatusOr<Level> ParseLevel(std::string_view name) {
  std::string lower;
  for (char c : name) lower.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
  if (lower == "debug") return Level::kDebug;
  if (lower == "info") return Level::kInfo;
  if (lower == "warning" || lower == "warn") return Level::kWarning;
  if (lower == "error") return Level::kError;
  if (lower == "off") return Level::kOff;
  return InvalidArgumentError(
      fmt::format("unknown log level \"{}\": use debug, info, warning, error or off", name));
}

namespace {

char LevelLetter(Level level) {
  switch (level) {
    case Level::kDebug:
      return 'D';
    case Level::kInfo:
      return 'I';
    case Level::kWarning:
      return 'W';
    case Level::kError:
      return 'E';
    case Level::kOff:
      break;
  }
  return '?';
}

std::string_view Basename(const char* path) {
  std::string_view p(path ? path : "");
  auto slash = p.rfind('/');
  return slash == std::string_view::npos ? p : p.substr(slash + 1);
}

}  // namespace

Logger::Logger(Clock& clock) : clock_(clock) {}

Logger::~Logger() { CloseFile(); }

void Logger::SetStderrLevel(Level level) {
  std::lock_guard lock(mu_);
  stderr_level_ = level;
}

void Logger::SetStderrFormat(StderrFormat format, std::string program_name) {
  std::lock_guard lock(mu_);
  stderr_format_ = format;
  program_ = std::move(program_name);
}

void Logger::SetStderrSink(Sink sink) {
  std::lock_guard lock(mu_);
  stderr_sink_ = std::move(sink);
}

Status Logger::OpenFile(const std::string& path, Level level) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError(errno, "opening log file " + path);
  std::FILE* f = ::fdopen(fd, "a");
  if (f == nullptr) {
    Status s = ErrnoError(errno, "opening log file " + path);
    ::close(fd);
    return s;
  }
  std::setvbuf(f, nullptr, _IOLBF, 0);
  std::lock_guard lock(mu_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = f;
  file_path_ = path;
  file_level_ = level;
  return OkStatus();
}

void Logger::CloseFile() {
  std::lock_guard lock(mu_);
  if (file_ != nullptr) std::fclose(file_);
  file_ = nullptr;
  file_path_.clear();
  file_level_ = Level::kOff;
}

std::string Logger::file_path() const {
  std::lock_guard lock(mu_);
  return file_path_;
}

bool Logger::Enabled(Level level) const {
  if (level == Level::kOff) return false;
  std::lock_guard lock(mu_);
  return level >= stderr_level_ || (file_ != nullptr && level >= file_level_);
}

void Logger::Write(Level level, const char* source_file, int source_line,
                   std::string_view message) {
  if (level == Level::kOff) return;
  // Strip trailing newlines: each message is exactly one line in the log.
  while (!message.empty() && message.back() == '\n') message.remove_suffix(1);
  std::string full =
      fmt::format("{} {} {} {}:{}] {}\n", FormatRfc3339Millis(clock_.Now()), LevelLetter(level),
                  ::getpid(), Basename(source_file), source_line, message);
  std::lock_guard lock(mu_);
  if (file_ != nullptr && level >= file_level_) {
    std::fwrite(full.data(), 1, full.size(), file_);
  }
  if (level >= stderr_level_) {
    std::string brief;
    const std::string* line = &full;
    if (stderr_format_ == StderrFormat::kBrief) {
      brief = level == Level::kInfo
                  ? fmt::format("{}: {}\n", program_, message)
                  : fmt::format("{}: {}: {}\n", program_, LevelName(level), message);
      line = &brief;
    }
    if (stderr_sink_) {
      stderr_sink_(*line);
    } else {
      std::fwrite(line->data(), 1, line->size(), stderr);
    }
  }
}

Logger& Default() {
  static Logger* logger = new Logger();  // never destroyed: usable from static destructors
  return *logger;
}

}  // namespace fun::log
