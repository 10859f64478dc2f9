// process.cc: the platform-neutral half of process.h: command formatting, result
// descriptions, PATH lookup and the default Run (Start + Wait + Terminate).
#include "lib/base/process.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <utility>

namespace fun {
namespace {

// The signals a person may meet, by name (numbers differ between Linux and macOS).
struct NamedSignal {
  int sig;
  const char* name;
};
constexpr NamedSignal kSignals[] = {
    {SIGHUP, "SIGHUP"},       {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"},   {SIGILL, "SIGILL"},
    {SIGTRAP, "SIGTRAP"},     {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},     {SIGFPE, "SIGFPE"},
    {SIGKILL, "SIGKILL"},     {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"},   {SIGUSR2, "SIGUSR2"},
    {SIGPIPE, "SIGPIPE"},     {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"},   {SIGCHLD, "SIGCHLD"},
    {SIGCONT, "SIGCONT"},     {SIGSTOP, "SIGSTOP"}, {SIGTSTP, "SIGTSTP"},   {SIGTTIN, "SIGTTIN"},
    {SIGTTOU, "SIGTTOU"},     {SIGURG, "SIGURG"},   {SIGXCPU, "SIGXCPU"},   {SIGXFSZ, "SIGXFSZ"},
    {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"}, {SIGWINCH, "SIGWINCH"}, {SIGSYS, "SIGSYS"}};

const char* KnownSignalName(int sig) {
  for (const NamedSignal& s : kSignals) {
    if (s.sig == sig) return s.name;
  }
  return nullptr;
}

std::string DescribeSignal(int sig) {
  const char* name = KnownSignalName(sig);
  return name != nullptr ? fmt::format("signal {} ({})", sig, name) : fmt::format("signal {}", sig);
}

std::string Seconds(std::chrono::milliseconds d) {
  return fmt::format("{:.1f} s", static_cast<double>(d.count()) / 1000.0);
}

// The last non-blank line of `text`, at most 200 bytes of it.
std::string LastLine(std::string_view text) {
  constexpr std::string_view kBlank = " \t\r\n";
  size_t end = text.find_last_not_of(kBlank);
  if (end == std::string_view::npos) return "";
  text = text.substr(0, end + 1);
  size_t nl = text.find_last_of('\n');
  std::string_view line = nl == std::string_view::npos ? text : text.substr(nl + 1);
  size_t begin = line.find_first_not_of(kBlank);
  line = begin == std::string_view::npos ? std::string_view() : line.substr(begin);
  constexpr size_t kMax = 200;
  if (line.size() > kMax) return std::string(line.substr(0, kMax)) + "...";
  return std::string(line);
}

// OK if `path` is an executable regular file; the error names `path`.
Status CheckExecutable(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, path);
  if (S_ISDIR(st.st_mode)) return PermissionDeniedError(path + ": is a directory");
  if (::access(path.c_str(), X_OK) != 0) {
    int err = errno;
    if (err == EACCES) return PermissionDeniedError(path + ": not executable (permission denied)");
    return ErrnoError(err, path);
  }
  return OkStatus();
}

}  // namespace

std::string ShellQuote(std::string_view word) {
  if (word.empty()) return "''";
  bool plain = true;
  for (char c : word) {
    bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
    if (!safe) {
      plain = false;
      break;
    }
  }
  if (plain) return std::string(word);
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += '\'';
  return out;
}

std::string SignalName(int sig) {
  const char* name = KnownSignalName(sig);
  return name != nullptr ? std::string(name) : fmt::format("signal {}", sig);
}

std::string Command::ToString() const {
  std::string out = ShellQuote(program);
  for (const std::string& arg : args) {
    out += ' ';
    out += ShellQuote(arg);
  }
  return out;
}

std::string ProcessResult::Describe() const {
  std::string how;
  if (term_signal != 0) {
    how = "killed by " + DescribeSignal(term_signal);
  } else {
    how = fmt::format("exited with {}", exit_code);
  }
  if (!timed_out) return how;
  if (term_signal != 0) return fmt::format("timed out after {} and was {}", Seconds(elapsed), how);
  return fmt::format("timed out after {} and {} when asked to stop", Seconds(elapsed), how);
}

ProcessResult ProcessResult::Exited(int exit_code, std::string stdout_data,
                                    std::string stderr_data) {
  ProcessResult r;
  r.exit_code = exit_code;
  r.stdout_data = std::move(stdout_data);
  r.stderr_data = std::move(stderr_data);
  return r;
}

ProcessResult ProcessResult::Signaled(int term_signal) {
  ProcessResult r;
  r.exit_code = -1;
  r.term_signal = term_signal;
  return r;
}

Status CheckExit(const Command& command, const ProcessResult& result) {
  if (result.ok()) return OkStatus();
  std::string message = command.program + " " + result.Describe();
  std::string last = LastLine(result.stderr_data);
  if (!last.empty()) message += ": " + last;
  if (result.timed_out) return DeadlineExceededError(std::move(message));
  return Status(Code::kUnknown, std::move(message));
}

StatusOr<std::string> FindProgram(std::string_view name, const std::string& path_env) {
  if (name.empty()) return InvalidArgumentError("empty program name");
  if (name.find('\0') != std::string_view::npos) {
    return InvalidArgumentError("program name contains a NUL byte");
  }
  std::string program(name);
  if (program.find('/') != std::string::npos) {
    FUN_RETURN_IF_ERROR(CheckExecutable(program));
    return program;
  }
  std::string not_executable;  // the first match that exists but cannot be run
  size_t begin = 0;
  while (begin <= path_env.size()) {
    size_t end = path_env.find(':', begin);
    if (end == std::string::npos) end = path_env.size();
    std::string dir = path_env.substr(begin, end - begin);
    begin = end + 1;
    if (dir.empty()) continue;
    std::string candidate = dir.back() == '/' ? dir + program : dir + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) != 0 || S_ISDIR(st.st_mode)) continue;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (not_executable.empty()) not_executable = candidate;
  }
  if (!not_executable.empty()) {
    return PermissionDeniedError(
        fmt::format("{}: found {} but it is not executable", program, not_executable));
  }
  return NotFoundError(fmt::format("{}: not found in PATH ({})", program,
                                   path_env.empty() ? std::string("empty") : path_env));
}

StatusOr<ProcessResult> ProcessRunner::Run(const Command& command) {
  FUN_ASSIGN_OR_RETURN(std::unique_ptr<Process> process, Start(command));
  StatusOr<ProcessResult> result = process->Wait(command.timeout);
  if (result.ok() || !command.timeout.has_value() ||
      result.status().code() != Code::kDeadlineExceeded) {
    return result;
  }
  FUN_RETURN_IF_ERROR_CTX(process->Terminate(command.kill_grace),
                          "stopping " + command.program + " after its timeout");
  FUN_ASSIGN_OR_RETURN(ProcessResult stopped, process->Wait(std::nullopt));
  stopped.timed_out = true;
  return stopped;
}

}  // namespace fun
