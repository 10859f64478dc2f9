// fun-guestd: the agent inside Fun's VM. All logic lives in guestd.cc.
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "guest/guestd/guestd.h"

int main(int argc, char** argv) {
  // SIGTERM (busybox init stopping the agent) and SIGINT end the agent cleanly: blocked on
  // every thread, they make a signalfd readable, which the accept loop watches.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  int stop_fd = signalfd(-1, &set, SFD_CLOEXEC);
  if (stop_fd < 0) {
    std::cerr << "fun-guestd: signalfd: " << std::strerror(errno) << "\n";
    return 1;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  return fun::guestd::Main(args, std::cout, std::cerr, stop_fd);
}
