// fun-forward: published-port forwards through a guest agent. All logic lives in forward.cc.
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "lib/base/stop_signals.h"
#include "tools/fun-forward/forward.h"

int main(int argc, char** argv) {
  // SIGINT and SIGTERM end the forwards cleanly: blocked on every thread, they make a
  // signalfd readable, which Run waits on.
  int stop_fd = fun::StopSignalsFd();
  if (stop_fd < 0) {
    std::cerr << "fun-forward: signalfd: " << std::strerror(errno) << "\n";
    return 1;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  return fun::forward::Run(args, std::cout, std::cerr, stop_fd);
}
