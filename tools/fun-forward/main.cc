// fun-forward: published-port forwards through a guest agent. All logic lives in forward.cc.
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "tools/fun-forward/forward.h"

int main(int argc, char** argv) {
  // SIGINT and SIGTERM end the forwards cleanly: blocked on every thread, they make a
  // signalfd readable, which Run waits on.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  int stop_fd = signalfd(-1, &set, SFD_CLOEXEC);
  if (stop_fd < 0) {
    std::cerr << "fun-forward: signalfd: " << std::strerror(errno) << "\n";
    return 1;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  return fun::forward::Run(args, std::cout, std::cerr, stop_fd);
}
