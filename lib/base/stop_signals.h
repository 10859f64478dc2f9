// stop_signals.h: SIGINT and SIGTERM as a readable fd, for servers that stop cleanly (Linux).
//
//   int stop_fd = fun::StopSignalsFd();   // before any thread starts
//   if (stop_fd < 0) ... errno says why
//   ... poll stop_fd next to the listening sockets; readable: shut down
//
// Blocks both signals for this thread and every thread it starts (so none is killed by them),
// ignores SIGPIPE (a write to a closed peer is EPIPE), and returns a signalfd for them.
// Header-only: fun-guestd, which does not link fun::base, uses it too.
#pragma once

#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <csignal>

namespace fun {

inline int StopSignalsFd() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  return signalfd(-1, &set, SFD_CLOEXEC);
}

}  // namespace fun
