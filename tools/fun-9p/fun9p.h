// fun9p.h: the fun-9p command (serve host folders over 9P2000.L), as a library.
//
//   fun-9p serve --export NAME=DIR[:ro] ... --listen tcp:HOST:PORT|unix:PATH ... [--fd N]
//                [--msize BYTES] [--workers N] [--log-level LEVEL] [--log-file PATH]
//
// The client's aname picks an export by NAME (its DIR path works too). Each bound address is
// printed on stdout as "listening on ADDRESS" once it accepts, so scripts can ask for port 0.
// Thread-safety: one Run per process.
#pragma once

#include <atomic>
#include <ostream>
#include <string>
#include <vector>

#include "lib/base/status.h"
#include "lib/p9/server.h"

namespace fun::fun9p {

struct ServeOptions {
  p9::ServerOptions server;
  std::vector<std::string> listen;  // addresses as given
  std::vector<int> fds;             // already-connected fds to serve
  std::string log_level = "info";
  std::string log_file;
};

// "NAME=DIR", "NAME=DIR:ro", "NAME=DIR:rw"; DIR must be absolute.
StatusOr<p9::ExportSpec> ParseExport(std::string_view spec);
// Parses the flags after "serve". InvalidArgument (one line) on any bad flag or value.
StatusOr<ServeOptions> ParseServeArgs(const std::vector<std::string>& args);

// Runs `fun-9p ARGS...`; `stop` set from elsewhere (a signal thread) ends a serve, as does the
// end of every --fd connection when there are no listeners. Exit codes: 0, 1 failure, 2 usage.
int Run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
        std::atomic<bool>* stop);

}  // namespace fun::fun9p
