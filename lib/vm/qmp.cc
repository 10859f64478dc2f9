#include "lib/vm/qmp.h"

#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>

namespace fun::vm {

StatusOr<QmpMessage> ParseQmpLine(std::string_view line) {
  auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError(fmt::format("not a QMP message: \"{}\"",
                                            line.substr(0, std::min<size_t>(line.size(), 80))));
  }
  QmpMessage m;
  if (j.contains("QMP")) {
    m.kind = QmpMessage::Kind::kGreeting;
    m.body = j["QMP"];
  } else if (j.contains("return")) {
    m.kind = QmpMessage::Kind::kReturn;
    m.body = j["return"];
  } else if (j.contains("error")) {
    m.kind = QmpMessage::Kind::kError;
    m.body = j["error"];
  } else if (j.contains("event") && j["event"].is_string()) {
    m.kind = QmpMessage::Kind::kEvent;
    m.body = j;
  } else {
    return InvalidArgumentError("QMP message without return, error or event");
  }
  return m;
}

StatusOr<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                        std::chrono::milliseconds timeout) {
  SocketAddress addr{.kind = SocketAddress::Kind::kUnix, .path = socket_path};
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, fun::Connect(addr));
  std::unique_ptr<QmpClient> c(new QmpClient(std::move(fd), timeout));
  FUN_ASSIGN_OR_RETURN(std::string greeting, c->ReadLine());
  FUN_ASSIGN_OR_RETURN(QmpMessage g, ParseQmpLine(greeting));
  if (g.kind != QmpMessage::Kind::kGreeting) {
    return UnavailableError("QMP: expected a greeting, got: " + greeting);
  }
  FUN_RETURN_IF_ERROR_CTX(c->Execute("qmp_capabilities").status(), "QMP capabilities");
  return c;
}

StatusOr<std::string> QmpClient::ReadLine() {
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (buffer_.size() > (1 << 20)) return DataLossError("QMP: a line over 1 MiB");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return DeadlineExceededError("QMP: no answer in time");
    pollfd p{fd_.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) return ErrnoError(errno, "QMP poll");
    if (n <= 0) continue;
    char buf[4096];
    ssize_t r = ::read(fd_.get(), buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "QMP read");
    }
    if (r == 0) return UnavailableError("QMP: QEMU closed the connection");
    buffer_.append(buf, static_cast<size_t>(r));
  }
}

StatusOr<nlohmann::json> QmpClient::Execute(const std::string& command,
                                            const nlohmann::json& arguments) {
  nlohmann::json req = {{"execute", command}};
  if (!arguments.is_null()) req["arguments"] = arguments;
  FUN_RETURN_IF_ERROR(WriteAll(fd_.get(), req.dump() + "\n"));
  for (;;) {
    FUN_ASSIGN_OR_RETURN(std::string line, ReadLine());
    FUN_ASSIGN_OR_RETURN(QmpMessage m, ParseQmpLine(line));
    switch (m.kind) {
      case QmpMessage::Kind::kEvent:
      case QmpMessage::Kind::kGreeting:
        continue;
      case QmpMessage::Kind::kReturn:
        return m.body;
      case QmpMessage::Kind::kError:
        return FailedPreconditionError(
            fmt::format("QMP {}: {}", command,
                        m.body.is_object() && m.body.contains("desc") && m.body["desc"].is_string()
                            ? m.body["desc"].get<std::string>()
                            : m.body.dump()));
    }
  }
}

StatusOr<std::string> QmpClient::QueryStatus() {
  FUN_ASSIGN_OR_RETURN(nlohmann::json r, Execute("query-status"));
  if (!r.is_object() || !r.contains("status") || !r["status"].is_string()) {
    return DataLossError("QMP query-status: unexpected answer " + r.dump());
  }
  return r["status"].get<std::string>();
}

}  // namespace fun::vm
