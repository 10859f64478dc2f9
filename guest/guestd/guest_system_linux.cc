#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <vector>

#include "guest/guestd/guest_system.h"

namespace fun::guestd {

Clock::WallTime LinuxGuestSystem::Now() { return std::chrono::system_clock::now(); }

Status LinuxGuestSystem::StepWallClock(std::chrono::nanoseconds delta) {
  // ADJ_SETOFFSET adds the offset in the kernel, atomically: no read-modify-write window.
  // With ADJ_NANO, time.tv_usec holds nanoseconds, normalized to [0, 1e9).
  const int64_t ns = delta.count();
  int64_t sec = ns / 1'000'000'000;
  int64_t rest = ns % 1'000'000'000;
  if (rest < 0) {
    rest += 1'000'000'000;
    sec -= 1;
  }
  timex tx{};
  tx.modes = ADJ_SETOFFSET | ADJ_NANO;
  tx.time.tv_sec = static_cast<time_t>(sec);
  tx.time.tv_usec = static_cast<suseconds_t>(rest);
  if (::clock_adjtime(CLOCK_REALTIME, &tx) < 0) {
    return ErrnoError(errno, "clock_adjtime(CLOCK_REALTIME, ADJ_SETOFFSET)");
  }
  return OkStatus();
}

std::chrono::duration<double> LinuxGuestSystem::Uptime() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return std::chrono::duration<double>(static_cast<double>(ts.tv_sec) +
                                       static_cast<double>(ts.tv_nsec) / 1e9);
}

std::array<double, 3> LinuxGuestSystem::LoadAverage() {
  std::array<double, 3> load{};
  if (::getloadavg(load.data(), 3) != 3) load = {0, 0, 0};
  return load;
}

namespace {

// Runs in the grandchild, between fork and exec: async-signal-safe calls only.
[[noreturn]] void ExecDetached(const char* path, char* const argv[], int error_fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);  // the agent blocks SIGTERM for its signalfd
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) ::signal(sig, SIG_DFL);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
  // Every other fd the agent holds (connections, listeners) closes on exec.
  ::syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
  ::fcntl(error_fd, F_SETFD, FD_CLOEXEC);
  ::execv(path, argv);
  int err = errno;
  ssize_t ignored = ::write(error_fd, &err, sizeof(err));
  (void)ignored;
  ::_exit(127);
}

}  // namespace

Status LinuxGuestSystem::StartDetached(const std::string& program) {
  std::vector<char> path(program.begin(), program.end());
  path.push_back('\0');
  char* const argv[] = {path.data(), nullptr};
  // The grandchild reports a failed exec through this pipe; a successful exec closes it.
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return ErrnoError(errno, "pipe");
  pid_t child = ::fork();
  if (child < 0) {
    int err = errno;
    ::close(p[0]);
    ::close(p[1]);
    return ErrnoError(err, "fork");
  }
  if (child == 0) {
    ::close(p[0]);
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild == 0) ExecDetached(path.data(), argv, p[1]);
    if (grandchild < 0) {
      int err = errno;
      ssize_t ignored = ::write(p[1], &err, sizeof(err));
      (void)ignored;
    }
    ::_exit(0);  // the grandchild is now init's
  }
  ::close(p[1]);
  int wstatus = 0;
  while (::waitpid(child, &wstatus, 0) < 0 && errno == EINTR) {
  }
  int err = 0;
  ssize_t n;
  do {
    n = ::read(p[0], &err, sizeof(err));
  } while (n < 0 && errno == EINTR);
  ::close(p[0]);
  if (n == static_cast<ssize_t>(sizeof(err))) return ErrnoError(err, "starting " + program);
  return OkStatus();
}

}  // namespace fun::guestd
