// fun.h: the commands of `fun`, Docker's container commands over CRI, as a library (main only
// passes argv, the environment and the streams).
//
//   int code = fun::cli::Run({"run", "--rm", "busybox", "echo", "hi"}, env, std::cout, std::cerr);
//
// Where containers run (global --host, else $FUN_HOST, else "default"):
//   NAME          a VM instance; the first command starts it (created from defaults on first use)
//   native        the host's containerd (/run/containerd/containerd.sock; Linux)
//   unix:PATH     any containerd CRI socket on this host (logs are read from its files)
//
// Exit codes: 0 success; 1 the operation failed; 2 bad usage; `run` in the foreground and
// `exec` exit with the container's (command's) code.
// Thread-safety: none needed; one call per process.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "lib/base/paths.h"

namespace fun::cli {

struct Environment {
  PathsInput paths;
  std::string fun_host;  // $FUN_HOST
  bool stdout_is_terminal = false;
  bool stderr_is_terminal = false;
  // What `exec -i` reads (until EOF) and `exec -t` sizes and sets raw when it is a terminal.
  int stdin_fd = 0;
};
Environment EnvironmentFromProcess();

int Run(const std::vector<std::string>& args, const Environment& env, std::ostream& out,
        std::ostream& err);

}  // namespace fun::cli
