// fun-guestd: the agent inside Fun's VM. All logic lives in guestd.cc.
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "guest/guestd/guestd.h"
#include "guest/guestd/shares.h"
#include "lib/base/stop_signals.h"

int main(int argc, char** argv) {
  // SIGTERM (busybox init stopping the agent) and SIGINT end the agent cleanly: blocked on
  // every thread, they make a signalfd readable, which the accept loop watches.
  int stop_fd = fun::StopSignalsFd();
  if (stop_fd < 0) {
    std::cerr << "fun-guestd: signalfd: " << std::strerror(errno) << "\n";
    return 1;
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  // A share's 9P relay, started by fun-guestd itself (shares.h).
  if (!args.empty() && args[0] == fun::guestd::kRelayFlag) {
    return fun::guestd::RunRelayProcess(args, stop_fd);
  }
  return fun::guestd::Main(args, std::cout, std::cerr, stop_fd);
}
