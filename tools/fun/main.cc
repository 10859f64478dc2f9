// fun: run containers in Fun's VM (or the host's containerd), with Docker's commands.
// All logic lives in fun.cc.
#include <iostream>
#include <string>
#include <vector>

#include "tools/fun/fun.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return fun::cli::Run(args, fun::cli::EnvironmentFromProcess(), std::cout, std::cerr);
}
