// forward.h: the fun-forward command, as a library (main.cc only wires signals).
//
//   fun-forward --agent tcp:127.0.0.1:7070 --token-file ~/.fun/default/secret
//               -p 8080:10.88.0.5:80 -p 0.0.0.0:5353:10.88.0.5:53/udp
//   fun-forward --direct -p 8080:127.0.0.1:80        # no agent: the host dials the target
//
// Runs net::TcpForward / net::UdpForward for each -p [HOSTIP:]HOSTPORT:TARGETIP:TARGETPORT
// [/udp], through a guest agent (fun-guestd) reached at --agent with the instance secret in
// --token-file, until the stop fd is readable (SIGINT/SIGTERM in main.cc). Each forward prints
// "forwarding HOST -> TARGET/PROTO" on stdout once it listens (port 0 shows the port picked),
// then "ready"; at the end, one line of counters per forward. Used by perf/port_forward.sh and
// for debugging a published port without fun-hostd.
//
// Exit codes: 0 after a stop, 1 when a forward cannot start (port in use, unreadable token),
// 2 for bad flags (one line on stderr).
// Thread-safety: one Run per process.
#pragma once

#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "lib/base/socket.h"
#include "lib/base/status.h"
#include "lib/net/port_forward.h"

namespace fun::forward {

struct Options {
  std::string agent;  // "tcp:HOST:PORT" or "unix:PATH"; empty with direct
  std::string token_file;
  bool direct = false;
  std::vector<net::ForwardFlag> forwards;
  net::ForwardOptions forward;
  std::chrono::milliseconds dial_timeout{5000};
  std::string log_level = "warning";
};

// InvalidArgument (one line) on any bad flag or value.
StatusOr<Options> ParseArgs(const std::vector<std::string>& args);

// Runs `fun-forward ARGS...` until `stop_fd` is readable.
int Run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err, int stop_fd);

}  // namespace fun::forward
