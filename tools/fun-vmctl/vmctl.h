// vmctl.h: the commands of fun-vmctl, as a library (main only passes argv and the streams).
//
//   int code = fun::vmctl::Run({"config", "--json"}, fun::PathsInputFromEnvironment(),
//                              std::cout, std::cerr);
//
// Exit codes: 0 success, 1 the operation failed, 2 bad usage (unknown command or flag).
// Thread-safety: none needed; one call per process.
#pragma once

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "lib/base/paths.h"
#include "lib/base/progress.h"
#include "lib/base/status.h"
#include "lib/vm/instance.h"

namespace fun::vmctl {

int Run(const std::vector<std::string>& args, const PathsInput& env, std::ostream& out,
        std::ostream& err);

struct StartOptions {
  vm::ConfigOverrides overrides;
  std::string image_dir;  // "": found automatically (vm::FindImageDir)
  std::chrono::seconds timeout{180};
};
// What `fun-vmctl start` does (and `fun` on its first command): creates the instance on first
// use, starts its fun-hostd unless one runs, and waits until CRI reports RuntimeReady, showing
// progress on `spinner`. Returns the line to print ("default is running (booted in 5.2 s, ...)").
// A failed start's error carries the last console and fun-hostd lines and a doctor hint.
StatusOr<std::string> StartInstance(const Paths& paths, const std::string& name,
                                    const StartOptions& options, Spinner& spinner);

}  // namespace fun::vmctl
