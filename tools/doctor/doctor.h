// doctor.h: fun-doctor's command line, as a library (main only passes argv and the streams).
//
//   fun::doctor::RealDoctorEnv env;
//   int code = fun::doctor::Run({"--json", "--check", "FUN0011"},
//                               fun::PathsInputFromEnvironment(), env, std::cout, std::cerr);
//
// Flags: --instance NAME (default "default"), --check ID (repeatable; case-insensitive),
// --json, --verbose/-v (detail lines of passing checks too), --list (the catalog), --help;
// FUN0016's --dns-name NAME (default deb.debian.org) and --dns-server IP:PORT (default the
// VM's nameserver, 10.0.2.3:53).
//
// Exit codes: 0 every check passed (warnings and skips allowed), 1 at least one check failed,
// 2 the doctor itself could not run (bad flags, an unknown check id, a bad instance name, a
// --dns-name that is not a host name, state paths that cannot be resolved). Errors are one
// line on `err`.
//
// Thread-safety: none needed; one call per process.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "lib/base/paths.h"
#include "tools/doctor/doctor_env.h"

namespace fun::doctor {

int Run(const std::vector<std::string>& args, const PathsInput& paths_input, DoctorEnv& env,
        std::ostream& out, std::ostream& err);

}  // namespace fun::doctor
