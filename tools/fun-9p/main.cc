// fun-9p: serve host folders over 9P2000.L. All logic lives in fun9p.cc.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <csignal>
#include <iostream>
#include <thread>

#include "tools/fun-9p/fun9p.h"

int main(int argc, char** argv) {
  // SIGINT/SIGTERM end the server cleanly: block them everywhere, wait for them on one thread.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  static std::atomic<bool> stop{false};
  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    stop = true;
  }).detach();
  std::vector<std::string> args(argv + 1, argv + argc);
  return fun::fun9p::Run(args, std::cout, std::cerr, &stop);
}
