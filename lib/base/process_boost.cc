// process_boost.cc: BoostProcessRunner, real children started with Boost.Process v1 (1.74).
//
// Starting. bp::child does the fork, the execve and the report of a failed exec (the child
// writes errno to a close-on-exec pipe; with a std::error_code argument nothing throws). All
// the rest is one handler of ours, ChildSetup, rather than Boost's own initializers, because
// in 1.74:
//   - bp::exe/bp::args build argv with `&arg.front()`, undefined for an empty argument;
//   - bp::start_dir ignores a failed chdir (the child would run in the wrong directory);
//   - bp::std_out > async_pipe creates pipes without close-on-exec, so a child started at the
//     same time by another thread inherits them and the reader never sees EOF;
//   - a failed exec leaves a zombie (executor returns an empty child without reaping it);
//   - child::wait_for is unreliable and bp::on_exit installs a SIGCHLD handler that reaps.
// ChildSetup prepares argv and envp in the parent, so that between fork and exec the child
// only makes async-signal-safe calls: reset the signal mask and SIGPIPE, setpgid, chdir, dup2
// the stdio fds, and mark every other fd close-on-exec (so no child ever holds a pipe or socket
// of ours). The program is resolved beforehand with FindProgram, which says why it was not
// found, and a failed exec is reaped in on_error.
//
// Waiting. Each child has a waiter thread blocked in waitid(WEXITED | WNOWAIT), which reports
// the exit without reaping; the waiter then reaps under the mutex. Signals are sent under the
// same mutex only while the child is not reaped, so they can never reach a recycled pid. No
// SIGCHLD handler, no polling, no waitpid(-1).
//
// Output. When stdin is fed or output captured, an I/O thread runs an asio::io_context that
// writes stdin and drains stdout and stderr concurrently (no deadlock, however large the
// output). Once the child has exited, a grandchild still holding the pipes (`sh -c 'x &'`) has
// kDrainAfterExit to finish; then the pipes are closed and Wait returns what was read.
//
// Process groups: see process.h. The default (same group as ours) keeps terminal Ctrl-C
// working for CLIs; Command::new_process_group makes every signal reach the whole group.
#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/process/child.hpp>
#include <boost/process/extend.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include "lib/base/process.h"

extern char** environ;  // NOLINT: POSIX; unistd.h declares it only with _GNU_SOURCE

namespace fun {
namespace {

namespace asio = boost::asio;
namespace bp = boost::process;
using std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

// How long output may keep flowing after the child exited (from a grandchild holding the
// pipes) before we stop reading.
constexpr milliseconds kDrainAfterExit{1000};
// PATH when neither the command nor our environment sets one.
constexpr const char* kDefaultPath = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
// Longer waits are treated as "forever" (so deadline arithmetic cannot overflow).
constexpr milliseconds kForever = std::chrono::hours(24 * 365);

// An owned file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

Status SetCloseOnExec(int fd) {
  int flags = ::fcntl(fd, F_GETFD);
  if (flags < 0 || ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) != 0) {
    return ErrnoError(errno, "fcntl(FD_CLOEXEC)");
  }
  return OkStatus();
}

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

// A pipe with both ends close-on-exec (pipe2 is not on macOS; ChildSetup closes the window
// between pipe and fcntl for our own children).
StatusOr<Pipe> MakePipe() {
  int fds[2];
  if (::pipe(fds) != 0) return ErrnoError(errno, "pipe");
  Pipe p{UniqueFd(fds[0]), UniqueFd(fds[1])};
  FUN_RETURN_IF_ERROR(SetCloseOnExec(p.read.get()));
  FUN_RETURN_IF_ERROR(SetCloseOnExec(p.write.get()));
  return p;
}

// Blocks the signals a process handles asynchronously (SIGINT, SIGTERM, SIGCHLD, SIGPIPE...)
// in the calling helper thread, so they are delivered to the program's own threads, and so a
// write to a pipe whose reader exited fails with EPIPE instead of killing the process.
void BlockAsyncSignalsInThisThread() {
  sigset_t set;
  sigfillset(&set);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&set, sig);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

std::string ForceAbsolute(std::string path) {
  if (path.empty() || path[0] == '/') return path;
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) return path;
  return std::string(cwd) + "/" + path;
}

Status CheckNoNul(std::string_view s, std::string_view what) {
  if (s.find('\0') != std::string_view::npos) {
    return InvalidArgumentError(std::string(what) + " contains a NUL byte");
  }
  return OkStatus();
}

Status ValidateCommand(const Command& command) {
  FUN_RETURN_IF_ERROR(CheckNoNul(command.program, "the program name"));
  for (size_t i = 0; i < command.args.size(); ++i) {
    FUN_RETURN_IF_ERROR(CheckNoNul(command.args[i], fmt::format("argument {}", i + 1)));
  }
  for (const auto& [key, value] : command.env_overrides) {
    if (key.empty() || key.find('=') != std::string::npos) {
      return InvalidArgumentError(fmt::format("bad environment variable name '{}'", key));
    }
    FUN_RETURN_IF_ERROR(CheckNoNul(key, "an environment variable name"));
    FUN_RETURN_IF_ERROR(CheckNoNul(value, "environment variable " + key));
  }
  if (command.working_dir) FUN_RETURN_IF_ERROR(CheckNoNul(*command.working_dir, "working_dir"));
  if (command.stdout_file) FUN_RETURN_IF_ERROR(CheckNoNul(*command.stdout_file, "stdout_file"));
  if (command.stderr_file) FUN_RETURN_IF_ERROR(CheckNoNul(*command.stderr_file, "stderr_file"));
  return OkStatus();
}

// Waits on `cv` until `pred` or `timeout` (nullopt or huge: no limit). Returns pred().
template <typename Pred>
bool WaitFor(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
             std::optional<milliseconds> timeout, Pred pred) {
  if (!timeout || *timeout >= kForever) {
    cv.wait(lock, pred);
    return true;
  }
  return cv.wait_for(lock, std::max(*timeout, milliseconds(0)), pred);
}

// What the child does between fork and exec; prepared in the parent (see the top).
struct ChildSetup : bp::extend::handler {
  static constexpr int kInherit = -1;  // keep our own stdio fd
  static constexpr int kDevNull = -2;  // /dev/null

  const char* exe = nullptr;
  char** argv = nullptr;
  char** envp = nullptr;
  const char* working_dir = nullptr;  // or nullptr
  int stdio[3] = {kDevNull, kInherit, kInherit};
  bool new_process_group = false;
  int parent_death_signal = 0;
  pid_t parent = 0;
  int max_fd = 1024;  // for the close-on-exec loop where close_range is missing

  template <class Executor>
  void on_setup(Executor& e) const {
    e.exe = exe;
    e.cmd_line = argv;
    e.env = envp;
  }

  // The parent, after a failed start: reap the child that failed to exec.
  template <class Executor>
  void on_error(Executor& e, const std::error_code&) const {
    if (e.pid > 0) {
      while (::waitpid(e.pid, nullptr, 0) == -1 && errno == EINTR) {
      }
    }
  }

  // The child. Async-signal-safe calls only.
  template <class Executor>
  void on_exec_setup(Executor& e) const {
    auto fail = [&e](const char* what) {
      int err = errno;
      e.set_error(std::error_code(err, std::system_category()), what);
      ::_exit(127);
    };
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);  // servers ignore it; their children should not

    // bp::child returns only once the exec happened, so the group exists when Start returns.
    if (new_process_group && ::setpgid(0, 0) != 0) fail("setpgid");
#ifdef __linux__
    if (parent_death_signal != 0) {
      if (::prctl(PR_SET_PDEATHSIG, parent_death_signal) != 0) fail("prctl(PR_SET_PDEATHSIG)");
      // The parent may have died before the prctl: then nobody would ever send the signal.
      if (::getppid() != parent) ::_exit(127);
    }
#endif
    if (working_dir != nullptr && ::chdir(working_dir) != 0) fail("chdir");

    // Move sources out of 0..2 first so no dup2 clobbers a source not yet used.
    int src[3];
    for (int i = 0; i < 3; ++i) {
      src[i] = stdio[i];
      if (src[i] >= 0 && src[i] < 3) {
        src[i] = ::fcntl(src[i], F_DUPFD_CLOEXEC, 3);
        if (src[i] < 0) fail("fcntl(F_DUPFD)");
      }
    }
    for (int i = 0; i < 3; ++i) {
      if (src[i] >= 0) {
        if (::dup2(src[i], i) < 0) fail("dup2");
      } else if (src[i] == kDevNull) {
        int fd = ::open("/dev/null", i == 0 ? O_RDONLY : O_WRONLY);
        if (fd < 0) fail("open /dev/null");
        if (fd != i) {
          if (::dup2(fd, i) < 0) fail("dup2");
          ::close(fd);
        }
      }
    }
    MarkCloseOnExecFrom3();
  }

  void MarkCloseOnExecFrom3() const {
#if defined(__linux__) && defined(CLOSE_RANGE_CLOEXEC)
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;  // Linux >= 5.11
#endif
    for (int fd = 3; fd < max_fd; ++fd) {
      int flags = ::fcntl(fd, F_GETFD);
      if (flags >= 0 && (flags & FD_CLOEXEC) == 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
  }
};

// The close-on-exec loop's bound: the fd limit, capped so a huge limit does not make every
// start slow where close_range is missing.
int MaxFdForLoop() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 65536;
  return static_cast<int>(std::min<rlim_t>(rl.rlim_cur, 65536));
}

// A started child; see the top of the file.
class BoostProcess final : public Process {
 public:
  BoostProcess(std::string program, bool new_process_group)
      : program_(std::move(program)), group_(new_process_group) {}

  ~BoostProcess() override {
    if (waiter_.joinable()) {
      {
        std::lock_guard lock(mu_);
        if (!exited_) KillLocked(SIGKILL);
      }
      waiter_.join();
    }
    if (io_thread_.joinable()) {
      asio::post(*ioc_, [this] { CloseAllPipes(); });
      io_thread_.join();
    }
  }

  // Before the spawn: takes the parent's ends of the pipes (any may be invalid).
  void AttachPipes(UniqueFd stdin_write, std::string stdin_data, UniqueFd stdout_read,
                   UniqueFd stderr_read) {
    if (!stdin_write.valid() && !stdout_read.valid() && !stderr_read.valid()) return;
    ioc_ = std::make_unique<asio::io_context>(1);
    if (stdin_write.valid()) {
      stdin_pipe_.emplace(*ioc_, stdin_write.release());
      stdin_data_ = std::move(stdin_data);
    }
    if (stdout_read.valid()) stdout_pipe_.emplace(*ioc_, stdout_read.release());
    if (stderr_read.valid()) stderr_pipe_.emplace(*ioc_, stderr_read.release());
  }

  // After the spawn: starts the waiter and I/O threads. On error the child is killed and
  // reaped by the destructor.
  Status Begin(pid_t pid, SteadyTime start) {
    pid_ = pid;
    start_ = start;
    try {
      waiter_ = std::thread(&BoostProcess::WaiterMain, this);
    } catch (const std::system_error& e) {
      ::kill(pid_, SIGKILL);
      while (::waitpid(pid_, nullptr, 0) == -1 && errno == EINTR) {
      }
      exited_ = true;
      return ResourceExhaustedError(
          fmt::format("starting {}: cannot create its waiter thread: {}", program_, e.what()));
    }
    if (ioc_ != nullptr) {
      io_done_ = false;
      asio::post(*ioc_, [this] { StartIo(); });
      try {
        io_thread_ = std::thread(&BoostProcess::IoMain, this);
      } catch (const std::system_error& e) {
        io_done_ = true;
        return ResourceExhaustedError(
            fmt::format("starting {}: cannot create its I/O thread: {}", program_, e.what()));
      }
    }
    return OkStatus();
  }

  int pid() const override { return pid_; }

  bool Running() override {
    std::lock_guard lock(mu_);
    if (exited_) return false;
    siginfo_t info;
    std::memset(&info, 0, sizeof info);
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
      return errno != ECHILD;  // ECHILD: someone else reaped it
    }
    return info.si_pid != pid_;  // a zombie (exited, reaped shortly by the waiter) has si_pid
  }

  StatusOr<ProcessResult> Wait(std::optional<milliseconds> timeout) override {
    std::unique_lock lock(mu_);
    if (!WaitFor(cv_, lock, timeout, [this] { return exited_; })) {
      return DeadlineExceededError(
          fmt::format("waiting for {}: still running after {} ms", Who(), timeout->count()));
    }
    if (!io_done_ &&
        !cv_.wait_until(lock, exit_time_ + kDrainAfterExit, [this] { return io_done_; })) {
      // A grandchild holds the pipes open: stop reading.
      asio::post(*ioc_, [this] { CloseAllPipes(); });
      cv_.wait(lock, [this] { return io_done_; });
    }
    if (!wait_error_.ok()) return wait_error_;
    ProcessResult result;
    if (WIFEXITED(wait_status_)) {
      result.exit_code = WEXITSTATUS(wait_status_);
    } else if (WIFSIGNALED(wait_status_)) {
      result.exit_code = -1;
      result.term_signal = WTERMSIG(wait_status_);
    }
    result.stdout_data = stdout_data_;
    result.stderr_data = stderr_data_;
    result.elapsed = std::chrono::duration_cast<milliseconds>(exit_time_ - start_);
    return result;
  }

  Status Signal(int sig) override {
    std::lock_guard lock(mu_);
    if (exited_) return FailedPreconditionError(Who() + " has already exited");
    if (!KillLocked(sig)) {
      return ErrnoError(errno, fmt::format("sending {} to {}", SignalName(sig), Who()));
    }
    return OkStatus();
  }

  Status Terminate(milliseconds grace) override {
    std::unique_lock lock(mu_);
    if (exited_) return OkStatus();
    if (!KillLocked(SIGTERM) && errno != ESRCH) {
      return ErrnoError(errno, fmt::format("sending SIGTERM to {}", Who()));
    }
    if (!WaitFor(cv_, lock, grace, [this] { return exited_; })) {
      if (!KillLocked(SIGKILL) && errno != ESRCH) {
        return ErrnoError(errno, fmt::format("sending SIGKILL to {}", Who()));
      }
      cv_.wait(lock, [this] { return exited_; });
    }
    return OkStatus();
  }

 private:
  std::string Who() const { return fmt::format("{} (pid {})", program_, pid_); }

  // Sends `sig` to the child (or its group); false with errno on failure. Requires mu_ and a
  // child not yet reaped.
  bool KillLocked(int sig) { return ::kill(group_ ? -pid_ : pid_, sig) == 0; }

  void WaiterMain() {
    BlockAsyncSignalsInThisThread();
    siginfo_t info;
    int rc;
    do {
      std::memset(&info, 0, sizeof info);
      rc = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT);
    } while (rc != 0 && errno == EINTR);
    int err = rc == 0 ? 0 : errno;

    std::lock_guard lock(mu_);
    int status = 0;
    if (err == 0) {
      pid_t reaped;
      do {
        reaped = ::waitpid(pid_, &status, 0);  // a zombie by now: returns at once
      } while (reaped == -1 && errno == EINTR);
      if (reaped == -1) err = errno;
    }
    if (err != 0) {
      wait_error_ = ErrnoError(err, fmt::format("waiting for {}", Who()));
      if (err == ECHILD) {
        wait_error_ = InternalError(fmt::format(
            "waiting for {}: it was reaped by someone else (SIGCHLD ignored, or a waitpid(-1) "
            "elsewhere in this program)",
            Who()));
      }
    }
    wait_status_ = status;
    exit_time_ = std::chrono::steady_clock::now();
    exited_ = true;
    cv_.notify_all();
  }

  void IoMain() {
    BlockAsyncSignalsInThisThread();
    try {
      ioc_->run();
    } catch (const std::exception&) {
      // Only allocation can throw in our handlers; stop with what was read.
    }
    std::lock_guard lock(mu_);
    io_done_ = true;
    cv_.notify_all();
  }

  // On the I/O thread (so even a speculative write happens with SIGPIPE blocked).
  void StartIo() {
    if (stdin_pipe_) {
      if (stdin_data_.empty()) {
        boost::system::error_code ignored;
        stdin_pipe_->close(ignored);
      } else {
        asio::async_write(*stdin_pipe_, asio::buffer(stdin_data_),
                          [this](const boost::system::error_code&, std::size_t) {
                            // Done, or the child stopped reading (EPIPE): either way, EOF.
                            boost::system::error_code ignored;
                            stdin_pipe_->close(ignored);
                          });
      }
    }
    if (stdout_pipe_) Read(*stdout_pipe_, stdout_data_);
    if (stderr_pipe_) Read(*stderr_pipe_, stderr_data_);
  }

  void Read(asio::posix::stream_descriptor& pipe, std::string& out) {
    auto buffer = std::make_shared<std::vector<char>>(64 * 1024);
    ReadMore(pipe, out, std::move(buffer));
  }

  void ReadMore(asio::posix::stream_descriptor& pipe, std::string& out,
                std::shared_ptr<std::vector<char>> buffer) {
    auto* raw = buffer.get();
    pipe.async_read_some(asio::buffer(*raw),
                         [this, &pipe, &out, buffer = std::move(buffer)](
                             const boost::system::error_code& ec, std::size_t n) mutable {
                           out.append(buffer->data(), n);
                           if (ec) {  // EOF, or closed by CloseAllPipes
                             boost::system::error_code ignored;
                             pipe.close(ignored);
                             return;
                           }
                           ReadMore(pipe, out, std::move(buffer));
                         });
  }

  // On the I/O thread: ends every pending operation, so run() returns.
  void CloseAllPipes() {
    boost::system::error_code ignored;
    if (stdin_pipe_) stdin_pipe_->close(ignored);
    if (stdout_pipe_) stdout_pipe_->close(ignored);
    if (stderr_pipe_) stderr_pipe_->close(ignored);
  }

  const std::string program_;
  const bool group_;
  pid_t pid_ = -1;    // set by Begin, before any thread starts
  SteadyTime start_;  // likewise

  std::mutex mu_;
  std::condition_variable cv_;
  bool exited_ = false;  // reaped (or failed to be); guarded by mu_
  int wait_status_ = 0;  // guarded by mu_
  SteadyTime exit_time_;
  Status wait_error_;
  bool io_done_ = true;  // the I/O thread has finished; guarded by mu_

  // Touched only by the I/O thread while it runs, then by Wait once io_done_.
  std::unique_ptr<asio::io_context> ioc_;
  std::optional<asio::posix::stream_descriptor> stdin_pipe_;
  std::optional<asio::posix::stream_descriptor> stdout_pipe_;
  std::optional<asio::posix::stream_descriptor> stderr_pipe_;
  std::string stdin_data_;
  std::string stdout_data_;
  std::string stderr_data_;

  std::thread waiter_;
  std::thread io_thread_;
};

StatusOr<UniqueFd> OpenLog(const std::string& path, std::string_view which) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) return ErrnoError(errno, fmt::format("opening {} file {}", which, path));
  return UniqueFd(fd);
}

StatusOr<std::unique_ptr<Process>> StartChild(const Command& command) {
  const std::string& program = command.program;
  if (program.empty()) return InvalidArgumentError("cannot start a program with an empty name");
  const std::string context = "starting " + program;
  FUN_RETURN_IF_ERROR_CTX(ValidateCommand(command), context);

  // The environment: ours, with the overrides replacing or adding entries.
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    std::string key(entry.substr(0, entry.find('=')));
    if (command.env_overrides.count(key) == 0) env.emplace_back(entry);
  }
  for (const auto& [key, value] : command.env_overrides) env.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (std::string& entry : env) envp.push_back(entry.data());
  envp.push_back(nullptr);

  // The program, looked up in the child's PATH.
  std::string path_env = kDefaultPath;
  if (auto it = command.env_overrides.find("PATH"); it != command.env_overrides.end()) {
    path_env = it->second;
  } else if (const char* ours = std::getenv("PATH"); ours != nullptr) {
    path_env = ours;
  }
  std::string lookup = program;
  if (command.working_dir && program.find('/') != std::string::npos && program[0] != '/') {
    lookup = *command.working_dir + "/" + program;  // relative to the child's directory
  }
  StatusOr<std::string> found = FindProgram(lookup, path_env);
  if (!found.ok()) return Status(found.status().code(), "starting " + found.status().message());
  std::string exe = ForceAbsolute(*std::move(found));

  if (command.working_dir) {
    struct stat st {};
    if (::stat(command.working_dir->c_str(), &st) != 0) {
      return ErrnoError(errno, "working directory " + *command.working_dir).WithContext(context);
    }
    if (!S_ISDIR(st.st_mode)) {
      return InvalidArgumentError("working directory " + *command.working_dir +
                                  " is not a directory")
          .WithContext(context);
    }
  }

  std::vector<std::string> args;
  args.reserve(command.args.size() + 1);
  args.push_back(program);  // argv[0] as given, like a shell
  args.insert(args.end(), command.args.begin(), command.args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  // Stdio: the child's ends (closed here once it started) and the parent's ends.
  UniqueFd child_in, child_out, child_err, parent_in, parent_out, parent_err;
  if (command.stdin_data) {
    FUN_ASSIGN_OR_RETURN(Pipe p, MakePipe());
    child_in = std::move(p.read);
    parent_in = std::move(p.write);
  }
  if (command.stdout_file) {
    StatusOr<UniqueFd> fd = OpenLog(*command.stdout_file, "stdout");
    if (!fd.ok()) return fd.status().WithContext(context);
    child_out = *std::move(fd);
  } else if (command.capture_output) {
    FUN_ASSIGN_OR_RETURN(Pipe p, MakePipe());
    child_out = std::move(p.write);
    parent_out = std::move(p.read);
  }
  if (command.stderr_file) {
    StatusOr<UniqueFd> fd = OpenLog(*command.stderr_file, "stderr");
    if (!fd.ok()) return fd.status().WithContext(context);
    child_err = *std::move(fd);
  } else if (command.capture_output) {
    FUN_ASSIGN_OR_RETURN(Pipe p, MakePipe());
    child_err = std::move(p.write);
    parent_err = std::move(p.read);
  }

  auto process = std::make_unique<BoostProcess>(program, command.new_process_group);
  process->AttachPipes(std::move(parent_in), command.stdin_data.value_or(""), std::move(parent_out),
                       std::move(parent_err));

  ChildSetup setup;
  setup.exe = exe.c_str();
  setup.argv = argv.data();
  setup.envp = envp.data();
  setup.working_dir = command.working_dir ? command.working_dir->c_str() : nullptr;
  setup.stdio[0] = child_in.valid() ? child_in.get() : ChildSetup::kDevNull;
  setup.stdio[1] = child_out.valid() ? child_out.get() : ChildSetup::kInherit;
  setup.stdio[2] = child_err.valid() ? child_err.get() : ChildSetup::kInherit;
  setup.new_process_group = command.new_process_group;
  setup.parent_death_signal = command.parent_death_signal;
  setup.parent = ::getpid();
  setup.max_fd = MaxFdForLoop();

  std::error_code ec;
  SteadyTime start = std::chrono::steady_clock::now();
  bp::child child(setup, ec);
  if (ec) {
    if (ec.category() == std::system_category()) return ErrnoError(ec.value(), context);
    return InternalError(context + ": " + ec.message());
  }
  pid_t pid = child.id();
  child.detach();  // we reap it ourselves (see BoostProcess)
  child_in.reset();
  child_out.reset();
  child_err.reset();

  FUN_RETURN_IF_ERROR(process->Begin(pid, start));
  return std::unique_ptr<Process>(std::move(process));
}

}  // namespace

StatusOr<std::unique_ptr<Process>> BoostProcessRunner::Start(const Command& command) {
  try {
    return StartChild(command);
  } catch (const std::system_error& e) {  // includes bp::process_error
    if (e.code().category() == std::system_category()) {
      return ErrnoError(e.code().value(), "starting " + command.program);
    }
    return InternalError("starting " + command.program + ": " + e.what());
  } catch (const boost::system::system_error& e) {  // from Asio
    return ErrnoError(e.code().value(), "starting " + command.program);
  }
}

ProcessRunner& ProcessRunner::Default() {
  static BoostProcessRunner* runner = new BoostProcessRunner();  // never destroyed
  return *runner;
}

}  // namespace fun
