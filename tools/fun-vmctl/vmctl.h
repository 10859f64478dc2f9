// vmctl.h: the commands of fun-vmctl, as a library (main only passes argv and the streams).
//
//   int code = fun::vmctl::Run({"config", "--json"}, fun::PathsInputFromEnvironment(),
//                              std::cout, std::cerr);
//
// Exit codes: 0 success, 1 the operation failed, 2 bad usage (unknown command or flag).
// Thread-safety: none needed; one call per process.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "lib/base/paths.h"

namespace fun::vmctl {

int Run(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
        std::ostream& err);

}  // namespace fun::vmctl
