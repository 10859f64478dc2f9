#include "tools/fun/terminal.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>

namespace fun::cli {
namespace {

// Process-wide, for the signal handlers (async-signal-safe use only).
struct State {
  volatile sig_atomic_t active = 0;
  volatile sig_atomic_t raw = 0;
  int fd = -1;
  termios saved{};
  int wake[2] = {-1, -1};
  struct sigaction old[5]{};
};
State g;
constexpr int kFatal[] = {SIGTERM, SIGHUP, SIGINT, SIGQUIT};

void RestoreMode() {
  if (g.raw) {
    ::tcsetattr(g.fd, TCSANOW, &g.saved);
    g.raw = 0;
  }
}

void OnFatal(int sig) {
  RestoreMode();
  // End as the signal would have ended us.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
}

void OnWinch(int) {
  const int saved_errno = errno;
  if (g.wake[1] >= 0) {
    const char c = 'w';
    [[maybe_unused]] ssize_t n = ::write(g.wake[1], &c, 1);
  }
  errno = saved_errno;
}

}  // namespace

std::optional<cri::TerminalSize> TerminalSizeOf(int fd) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) != 0 || (ws.ws_col == 0 && ws.ws_row == 0)) {
    return std::nullopt;
  }
  return cri::TerminalSize{.width = ws.ws_col, .height = ws.ws_row};
}

StatusOr<std::unique_ptr<TerminalSession>> TerminalSession::Start(int fd, bool raw) {
  if (g.active) return FailedPreconditionError("a terminal session is already active");
  if (!::isatty(fd)) return FailedPreconditionError("the input device is not a TTY");
  if (::tcgetattr(fd, &g.saved) != 0) return ErrnoError(errno, "tcgetattr");
  if (::pipe2(g.wake, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoError(errno, "pipe");
  g.fd = fd;
  g.active = 1;
  std::unique_ptr<TerminalSession> s(new TerminalSession(fd));
  struct sigaction sa {};
  ::sigemptyset(&sa.sa_mask);
  sa.sa_handler = OnWinch;
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGWINCH, &sa, &g.old[4]);
  sa.sa_handler = OnFatal;
  sa.sa_flags = 0;
  for (int i = 0; i < 4; ++i) ::sigaction(kFatal[i], &sa, &g.old[i]);
  if (raw) {
    termios t = g.saved;
    ::cfmakeraw(&t);
    // Keep output processing (\n -> \r\n) off too: the container's terminal already did it.
    if (::tcsetattr(fd, TCSANOW, &t) != 0) return ErrnoError(errno, "setting the terminal raw");
    g.raw = 1;
  }
  return s;
}

TerminalSession::~TerminalSession() {
  RestoreMode();
  for (int i = 0; i < 4; ++i) ::sigaction(kFatal[i], &g.old[i], nullptr);
  ::sigaction(SIGWINCH, &g.old[4], nullptr);
  for (int& w : g.wake) {
    if (w >= 0) ::close(w);
    w = -1;
  }
  g.fd = -1;
  g.active = 0;
}

int TerminalSession::resize_fd() const { return g.wake[0]; }

std::optional<cri::TerminalSize> TerminalSession::Size() const { return TerminalSizeOf(fd_); }

}  // namespace fun::cli
