#include "lib/net/agent_client.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>

#include "lib/vsock/packet.h"

namespace fun::agent {

StatusOr<Token> ReadTokenFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "reading the agent token " + path);
  UniqueFd f(fd);
  Token t{};
  char extra;
  Status s = ReadExactly(fd, reinterpret_cast<char*>(t.data()), t.size());
  if (!s.ok() || ::read(fd, &extra, 1) != 0) {
    return DataLossError(
        fmt::format("the agent token {} is not exactly {} bytes", path, kTokenSize));
  }
  return t;
}

StatusOr<Token> CreateTokenFile(const std::string& path) {
  Token t{};
  {
    int r = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (r < 0) return ErrnoError(errno, "/dev/urandom");
    UniqueFd rf(r);
    FUN_RETURN_IF_ERROR(ReadExactly(r, reinterpret_cast<char*>(t.data()), t.size()));
  }
  // Written whole under a private name, then linked into place: link() never replaces, so a
  // concurrent creator either wins or sees EEXIST, and no reader ever sees a partial token.
  std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError(errno, "creating the agent token " + tmp);
  UniqueFd f(fd);
  Status w = WriteAll(fd, std::string_view(reinterpret_cast<char*>(t.data()), t.size()));
  if (w.ok() && ::fsync(fd) != 0) w = ErrnoError(errno, "fsync " + tmp);
  int link_errno = 0;
  if (w.ok() && ::link(tmp.c_str(), path.c_str()) != 0) link_errno = errno;
  ::unlink(tmp.c_str());
  FUN_RETURN_IF_ERROR(w);
  if (link_errno != 0) return ErrnoError(link_errno, "creating the agent token " + path);
  return t;
}

StatusOr<Token> EnsureTokenFile(const std::string& path) {
  auto created = CreateTokenFile(path);
  if (created.ok() || created.status().sys_errno() != EEXIST) return created;
  return ReadTokenFile(path);
}

namespace {

void SetTimeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

StatusOr<std::pair<UniqueFd, Reply>> Exchange(const AgentEndpoint& ep, Request request,
                                              std::chrono::milliseconds timeout) {
  request.token = ep.token;
  FUN_ASSIGN_OR_RETURN(std::string wire, EncodeRequest(request));
  FUN_ASSIGN_OR_RETURN(UniqueFd fd, Connect(ep.address));
  SetTimeouts(fd.get(), timeout);
  std::string what = fmt::format(
      "agent {}{} ({})", ep.address.ToString(),
      ep.vsock_connect_port != 0 ? fmt::format(" vsock port {}", ep.vsock_connect_port) : "",
      KindName(request.kind));
  if (ep.vsock_connect_port != 0) {
    Status w = WriteAll(fd.get(), vsock::ConnectLine(kGuestCid, ep.vsock_connect_port));
    if (!w.ok()) return w.WithContext(what);
  }
  // SO_RCVTIMEO/SO_SNDTIMEO end a blocked call with EAGAIN: say what that means.
  auto timed = [&](Status st) {
    if (st.sys_errno() == EAGAIN || st.sys_errno() == EWOULDBLOCK) {
      return DeadlineExceededError(
          fmt::format("{}: no answer within {} ms", what, timeout.count()));
    }
    return st.WithContext(what);
  };
  // A peer that closes with our request unread resets the connection (hyperkit's connect
  // socket does so when nothing listens on the vsock port): that is a closed guest end too.
  auto closed = [](const Status& st) {
    return st.code() == Code::kOutOfRange || st.sys_errno() == ECONNRESET ||
           st.sys_errno() == EPIPE;
  };
  if (Status w = WriteAll(fd.get(), wire); !w.ok()) {
    if (closed(w)) {
      return UnavailableError(what + ": the guest closed the connection (agent not up yet?)");
    }
    return timed(w);
  }
  // magic[4] status[1] len[2], then exactly len bytes: never read past the reply.
  std::string buf(7, '\0');
  Status s = ReadExactly(fd.get(), buf.data(), 7);
  if (!s.ok()) {
    if (closed(s)) {
      return UnavailableError(what + ": the guest closed the connection (agent not up yet?)");
    }
    return timed(s);
  }
  size_t len =
      static_cast<uint8_t>(buf[5]) | (static_cast<size_t>(static_cast<uint8_t>(buf[6])) << 8);
  if (len > kMaxMessageSize) return DataLossError(what + ": oversized reply");
  buf.resize(7 + len);
  if (len > 0) {
    if (Status b = ReadExactly(fd.get(), buf.data() + 7, len); !b.ok()) return timed(b);
  }
  auto reply = DecodeReply(buf);
  if (!reply.ok()) return reply.status().WithContext(what);
  if (!reply->has_value()) return DataLossError(what + ": truncated reply");
  // The stream that follows is the caller's: lift the timeouts.
  SetTimeouts(fd.get(), std::chrono::milliseconds(0));
  return std::make_pair(std::move(fd), std::move((*reply)->first));
}

}  // namespace

Status ReplyToStatus(const Reply& r, const std::string& what) {
  switch (r.status) {
    case ReplyStatus::kOk:
      return OkStatus();
    case ReplyStatus::kBadToken:
      return PermissionDeniedError(what + ": the guest refused the token: " + r.message);
    case ReplyStatus::kUnavailable:
      return UnavailableError(what + ": " + r.message);
    case ReplyStatus::kBadRequest:
    case ReplyStatus::kFailed:
      break;
  }
  return FailedPreconditionError(what + ": " + r.message);
}

StatusOr<UniqueFd> DialAgent(const AgentEndpoint& ep, Request request,
                             std::chrono::milliseconds timeout) {
  std::string what = fmt::format("agent {}", KindName(request.kind));
  FUN_ASSIGN_OR_RETURN(auto got, Exchange(ep, std::move(request), timeout));
  FUN_RETURN_IF_ERROR(ReplyToStatus(got.second, what));
  return std::move(got.first);
}

StatusOr<Reply> CallAgent(const AgentEndpoint& ep, Request request,
                          std::chrono::milliseconds timeout) {
  FUN_ASSIGN_OR_RETURN(auto got, Exchange(ep, std::move(request), timeout));
  return std::move(got.second);
}

StatusOr<AgentPing> ParseAgentPing(std::string_view json) {
  AgentPing p;
  p.raw = std::string(json);
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return DataLossError("agent ping: the guest's answer is not a JSON object: " +
                         std::string(json.substr(0, 80)));
  }
  if (auto it = j.find("time_unix_ns"); it != j.end() && it->is_number_integer()) {
    p.guest_time_unix_ns = it->get<int64_t>();
  }
  if (auto it = j.find("data_disk"); it != j.end() && it->is_object()) {
    GuestDiskState d;
    auto path = it->find("path");
    if (path != it->end() && path->is_string()) d.path = path->get<std::string>();
    auto error = it->find("error");
    if (error != it->end() && error->is_string()) d.error = error->get<std::string>();
    auto total = it->find("total_bytes");
    auto avail = it->find("avail_bytes");
    if (total != it->end() && total->is_number_unsigned() && avail != it->end() &&
        avail->is_number_unsigned()) {
      d.total_bytes = total->get<uint64_t>();
      d.avail_bytes = avail->get<uint64_t>();
    } else if (d.error.empty()) {
      d.error = "the guest sent no sizes";
    }
    if (d.avail_bytes > d.total_bytes && d.error.empty()) {
      d.error = "the guest's sizes do not add up (more available than in total)";
    }
    p.data_disk = std::move(d);
  }
  if (auto it = j.find("containerd"); it != j.end() && it->is_boolean()) {
    p.containerd_ready = it->get<bool>();
  }
  if (auto it = j.find("uptime_s"); it != j.end() && it->is_number()) {
    p.uptime_s = it->get<double>();
  }
  if (auto it = j.find("open_fds"); it != j.end() && it->is_number_integer()) {
    p.open_fds = it->get<int>();
  }
  if (auto it = j.find("version"); it != j.end() && it->is_string()) {
    p.version = it->get<std::string>();
  }
  if (auto it = j.find("shares"); it != j.end() && it->is_array()) {
    p.reports_shares = true;
    for (const auto& e : *it) {
      auto str = [&e](const char* k) {
        auto f = e.is_object() ? e.find(k) : e.end();
        return f != e.end() && f->is_string() ? f->get<std::string>() : std::string();
      };
      GuestShareState s{.tag = str("tag"),
                        .path = str("path"),
                        .status = str("status"),
                        .error = str("error"),
                        .probe_error = str("probe_error")};
      if (auto a = e.find("answering"); a != e.end() && a->is_boolean()) {
        s.answering = a->get<bool>();
      }
      if (s.tag.empty() || s.status.empty()) continue;
      if (auto ro = e.find("read_only"); ro != e.end() && ro->is_boolean()) {
        s.read_only = ro->get<bool>();
      }
      p.shares.push_back(std::move(s));
    }
  }
  return p;
}

ClockOffset MeasureClockOffset(const AgentPing& ping) {
  ClockOffset d;
  const int64_t sent = ping.host_sent_unix_ns,
                received = std::max(ping.host_received_unix_ns, sent);
  const int64_t mid = sent + (received - sent) / 2;
  d.offset_ns = ping.guest_time_unix_ns - mid;
  d.uncertainty_ns = (received - sent) / 2;
  const int64_t magnitude = d.offset_ns < 0 ? -d.offset_ns : d.offset_ns;
  d.excess_ns = std::max<int64_t>(0, magnitude - d.uncertainty_ns);
  return d;
}

StatusOr<std::string> StepGuestClock(const AgentEndpoint& ep, int64_t delta_ns,
                                     std::chrono::milliseconds timeout) {
  FUN_ASSIGN_OR_RETURN(
      Reply r,
      CallAgent(ep, {.kind = Kind::kTimeSync, .arg = static_cast<uint64_t>(delta_ns)}, timeout));
  FUN_RETURN_IF_ERROR(ReplyToStatus(r, "time sync"));
  return r.message;
}

StatusOr<AgentPing> PingAgent(const AgentEndpoint& ep, std::chrono::milliseconds timeout) {
  auto now_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const int64_t sent = now_ns();
  FUN_ASSIGN_OR_RETURN(Reply r, CallAgent(ep, {.kind = Kind::kPing}, timeout));
  const int64_t received = now_ns();
  FUN_RETURN_IF_ERROR(ReplyToStatus(r, "agent ping"));
  FUN_ASSIGN_OR_RETURN(AgentPing p, ParseAgentPing(r.message));
  p.host_sent_unix_ns = sent;
  p.host_received_unix_ns = received;
  return p;
}

StatusOr<std::vector<net::ListenPort>> ListGuestPorts(const AgentEndpoint& ep,
                                                      std::chrono::milliseconds timeout,
                                                      bool* truncated) {
  FUN_ASSIGN_OR_RETURN(Reply r, CallAgent(ep, {.kind = Kind::kPorts}, timeout));
  FUN_RETURN_IF_ERROR(ReplyToStatus(r, "agent ports"));
  auto report = net::DecodeListenPorts(r.message);
  if (!report.ok()) return DataLossError("agent ports: " + report.status().message());
  if (truncated != nullptr) *truncated = report->truncated;
  return std::move(report->ports);
}

}  // namespace fun::agent
