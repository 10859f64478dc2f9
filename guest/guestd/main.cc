// fun-guestd: the agent inside Fun's VM. All logic lives in guestd.cc.
#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "guest/guestd/guestd.h"
#include "guest/guestd/settle_kernel.h"
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
  // Once per boot, from /init: the kernel's static keys flipped with one CPU online.
  if (!args.empty() && args[0] == fun::guestd::kSettleKernelFlag) {
    if (args.size() != 1) {
      std::cerr << "fun-guestd: " << fun::guestd::kSettleKernelFlag << " takes no arguments\n";
      return 2;
    }
    fun::guestd::SettleReport r = fun::guestd::SettleKernel(fun::guestd::SettleOptions{});
    std::cout << "fun-guestd: settled the kernel with " << r.cpus_offlined.size()
              << " CPU(s) offline:";
    for (const auto& d : r.done) std::cout << " [" << d << "]";
    std::cout << "\n";
    for (const auto& e : r.errors)
      std::cerr << "fun-guestd: error: settling the kernel: " << e << "\n";
    return r.errors.empty() ? 0 : 1;
  }
  return fun::guestd::Main(args, std::cout, std::cerr, stop_fd);
}
