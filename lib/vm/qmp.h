// qmp.h: a small client for QEMU's machine protocol (QMP) over its unix socket: power off the
// guest (ACPI power button), quit, and ask whether the VM runs.
//
//   FUN_ASSIGN_OR_RETURN(auto qmp, QmpClient::Connect(dir + "/qmp.sock", 2s));
//   FUN_RETURN_IF_ERROR(qmp->Execute("system_powerdown").status());
//   FUN_ASSIGN_OR_RETURN(std::string st, qmp->QueryStatus());   // "running", "paused", ...
//
// QMP speaks one JSON object per line. ParseQmpLine (pure, fuzzed with the other parsers) tells
// greetings, returns, errors and asynchronous events apart; Execute skips events.
// Thread-safety: a QmpClient is used by one thread at a time.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lib/base/socket.h"
#include "lib/base/status.h"

namespace fun::vm {

struct QmpMessage {
  enum class Kind { kGreeting, kReturn, kError, kEvent } kind = Kind::kReturn;
  nlohmann::json body;  // the "return" value, the "error" object, the event, the greeting
};

// One line of QMP output. InvalidArgument for anything that is not a QMP message.
StatusOr<QmpMessage> ParseQmpLine(std::string_view line);

class QmpClient {
 public:
  // Connects, reads the greeting and negotiates capabilities, all within `timeout`.
  static StatusOr<std::unique_ptr<QmpClient>> Connect(const std::string& socket_path,
                                                      std::chrono::milliseconds timeout);

  // Runs one command and returns its "return" value; a QMP error becomes a Status with QEMU's
  // description. Events that arrive meanwhile are skipped.
  StatusOr<nlohmann::json> Execute(const std::string& command,
                                   const nlohmann::json& arguments = nullptr);
  // query-status: "running", "paused", "shutdown", ...
  StatusOr<std::string> QueryStatus();

 private:
  QmpClient(UniqueFd fd, std::chrono::milliseconds timeout)
      : fd_(std::move(fd)), timeout_(timeout) {}
  StatusOr<std::string> ReadLine();

  UniqueFd fd_;
  std::chrono::milliseconds timeout_;
  std::string buffer_;
};

}  // namespace fun::vm
