// fun-vmctl: start, stop and inspect Fun's VM instances. All logic lives in vmctl.cc.
#include <iostream>
#include <string>
#include <vector>

#include "tools/fun-vmctl/vmctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return fun::vmctl::Run(args, fun::PathsInputFromEnvironment(), std::cout, std::cerr);
}
