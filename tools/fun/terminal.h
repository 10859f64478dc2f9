// terminal.h: the local terminal during an interactive `fun exec -it`: raw mode (every key
// goes to the container, ^C included), restored on every way out, and its size with a
// wake-up on SIGWINCH.
//
//   FUN_ASSIGN_OR_RETURN(auto term, TerminalSession::Start(0, /*raw=*/true));
//   ... poll term->resize_fd(); term->Size() ...
//   // the destructor restores the terminal; so do SIGTERM, SIGHUP, SIGINT and SIGQUIT
//   // (which then end the process as they would have)
//
// Thread-safety: one session per process at a time (signal handlers are process-wide).
#pragma once

#include <memory>
#include <optional>

#include "lib/base/status.h"
#include "lib/cri/exec_stream.h"

namespace fun::cli {

class TerminalSession {
 public:
  // `fd` must be a terminal. With raw, its mode is switched to raw until the session ends.
  static StatusOr<std::unique_ptr<TerminalSession>> Start(int fd, bool raw);
  ~TerminalSession();
  TerminalSession(const TerminalSession&) = delete;
  TerminalSession& operator=(const TerminalSession&) = delete;

  // Readable after the terminal's size changed (drain it, then call Size()).
  int resize_fd() const;
  // The size now, or nullopt when the terminal does not say.
  std::optional<cri::TerminalSize> Size() const;

 private:
  explicit TerminalSession(int fd) : fd_(fd) {}
  int fd_;
};

// The size of terminal `fd`, or nullopt.
std::optional<cri::TerminalSize> TerminalSizeOf(int fd);

}  // namespace fun::cli
