// exec_stream.h: one interactive exec session over a connection to containerd's stream server
// (the URL CriClient::Exec returns): the upgrade, the streams, and a pump until the command
// ends. The codec is stream_codec.h; this file only moves bytes.
//
// The caller connects (directly to the URL's host:port for a local containerd, or through the
// VM's agent for an instance) and hands the socket over:
//
//   FUN_ASSIGN_OR_RETURN(std::string url, cri->Exec(id, {"sh"}, {.stdin = true, ...}));
//   FUN_ASSIGN_OR_RETURN(stream::StreamUrl u, stream::ParseStreamUrl(url));
//   FUN_ASSIGN_OR_RETURN(UniqueFd conn, Connect(...u.host, u.port...));
//   FUN_ASSIGN_OR_RETURN(int code, RunExecStream(std::move(conn), u, {.stdin_fd = 0, ...}));
//
// Thread-safety: RunExecStream blocks the calling thread until the session ends.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/cri/stream_codec.h"

namespace fun::cri {

struct TerminalSize {
  uint16_t width = 0;   // columns
  uint16_t height = 0;  // rows
};

struct ExecStreamOptions {
  // What the session attaches; must match the Exec request the URL came from (CRI's server
  // waits for exactly those streams). stderr is never attached with a tty.
  bool tty = false;
  // Read until EOF (then stdin is closed in the container) when >= 0; -1: no stdin stream.
  int stdin_fd = -1;
  // Where the command's output goes. An error from a sink ends the session with it.
  std::function<Status(std::string_view)> on_stdout;
  std::function<Status(std::string_view)> on_stderr;
  // tty: the terminal's size, sent at the start and whenever resize_fd becomes readable (a
  // self-pipe a SIGWINCH handler writes to; drained here). nullopt: unknown, not sent.
  std::function<std::optional<TerminalSize>()> terminal_size;
  int resize_fd = -1;
  // The upgrade must be answered within this.
  std::chrono::milliseconds handshake_timeout{std::chrono::seconds(10)};
};

// Runs the session on `conn` (connected to url's host:port) until the server closes it, and
// returns the command's exit code. A command that could not run (CRI reports no exit code:
// "executable file not found", ...) is FailedPrecondition with containerd's message; a server
// that closes without reporting a status is Unavailable.
StatusOr<int> RunExecStream(UniqueFd conn, const stream::StreamUrl& url,
                            const ExecStreamOptions& options);

}  // namespace fun::cri
