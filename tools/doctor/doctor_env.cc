// doctor_env.cc: RealDoctorEnv, the POSIX part (host_info_{linux,darwin}.cc hold the rest).
#include "tools/doctor/doctor_env.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "lib/base/socket.h"
#include "lib/net/agent_client.h"
#include "lib/vm/image.h"
#include "lib/vm/instance_agent.h"

namespace fun::doctor {

std::string_view FileTypeName(FileType type) {
  switch (type) {
    case FileType::kRegular:
      return "file";
    case FileType::kDirectory:
      return "directory";
    case FileType::kSocket:
      return "socket";
    case FileType::kSymlink:
      return "symlink";
    case FileType::kOther:
      return "special file";
  }
  return "unknown";
}

StatusOr<FileInfo> RealDoctorEnv::Stat(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return ErrnoError(errno, path);
  FileInfo f;
  f.type = S_ISREG(st.st_mode)    ? FileType::kRegular
           : S_ISDIR(st.st_mode)  ? FileType::kDirectory
           : S_ISSOCK(st.st_mode) ? FileType::kSocket
           : S_ISLNK(st.st_mode)  ? FileType::kSymlink
                                  : FileType::kOther;
  f.mode = static_cast<unsigned>(st.st_mode) & 07777;
  f.owner = st.st_uid;
  f.size = st.st_size > 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return f;
}

Status RealDoctorEnv::Access(const std::string& path, int mode) {
  if (::access(path.c_str(), mode) != 0) return ErrnoError(errno, path);
  return OkStatus();
}

StatusOr<std::string> RealDoctorEnv::ReadFileTail(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, path);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int err = errno;
    ::close(fd);
    return S_ISREG(st.st_mode) ? ErrnoError(err, path)
                               : InvalidArgumentError(path + " is not a regular file");
  }
  // Files in /proc report size 0: those (and any file that fits) are read from the start,
  // up to max_bytes; a longer file from size - max_bytes.
  auto size = static_cast<uint64_t>(st.st_size);
  off_t offset = size > max_bytes ? static_cast<off_t>(size - max_bytes) : 0;
  if (offset > 0 && ::lseek(fd, offset, SEEK_SET) < 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, "seeking in " + path);
  }
  std::string out;
  char buf[65536];
  while (out.size() < max_bytes) {
    size_t want = std::min(sizeof(buf), max_bytes - out.size());
    ssize_t n = ::read(fd, buf, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return ErrnoError(err, "reading " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

StatusOr<std::vector<std::string>> RealDoctorEnv::ListDir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return ErrnoError(errno, path);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

StatusOr<uint64_t> RealDoctorEnv::FreeDiskBytes(const std::string& path) {
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) return ErrnoError(errno, "statvfs " + path);
  return static_cast<uint64_t>(vfs.f_bavail) * static_cast<uint64_t>(vfs.f_frsize);
}

uid_t RealDoctorEnv::Uid() { return ::getuid(); }

StatusOr<std::string> RealDoctorEnv::FindProgram(const std::string& name) {
  const char* path = std::getenv("PATH");  // NOLINT(concurrency-mt-unsafe): read-only here
  return fun::FindProgram(name, path != nullptr ? std::string(path) : std::string());
}

StatusOr<ProcessResult> RealDoctorEnv::RunCommand(const Command& command) {
  return ProcessRunner::Default().Run(command);
}

std::string RealDoctorEnv::ExecutableDir() { return vm::ExecutableDir(); }

vm::HostFacts RealDoctorEnv::ProbeHostFacts() { return vm::ProbeHostFacts(); }

std::vector<std::string> RealDoctorEnv::ImageSearchPath(const Paths& paths) {
  return vm::ImageSearchPath(paths, "");
}

vm::InstanceStatus RealDoctorEnv::GetInstanceStatus(const Paths& paths, const std::string& name) {
  return vm::GetInstanceStatus(paths, name);
}

StatusOr<cri::RuntimeVersion> RealDoctorEnv::CriVersion(const std::string& socket,
                                                        std::chrono::milliseconds deadline) {
  cri::CriClientOptions o;
  o.default_timeout = deadline;
  o.max_receive_bytes = 1 << 20;  // a Version reply is tiny
  FUN_ASSIGN_OR_RETURN(std::unique_ptr<cri::CriClient> client, cri::CriClient::Connect(socket, o));
  return client->Version({.timeout = deadline});
}

namespace {

using Steady = std::chrono::steady_clock;

// What is left of `deadline`, at least 1 ms (so a poll or socket timeout of 0, which means
// "forever" for SO_RCVTIMEO, is never asked for).
std::chrono::milliseconds Remaining(Steady::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now());
  return std::max(left, std::chrono::milliseconds(1));
}

bool Expired(Steady::time_point deadline) { return Steady::now() >= deadline; }

// Waits until `fd` has `events` or the deadline passes: true when ready.
StatusOr<bool> WaitFor(int fd, short events, Steady::time_point deadline) {
  for (;;) {
    pollfd p{.fd = fd, .events = events, .revents = 0};
    int rc = ::poll(&p, 1, static_cast<int>(Remaining(deadline).count()));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return ErrnoError(errno, "poll");
    if (rc > 0) return true;
    if (Expired(deadline)) return false;
  }
}

void SetTimeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// ReadExactly with the socket's receive timeout turned into DeadlineExceeded.
Status ReadWithin(int fd, char* buf, size_t n, Steady::time_point deadline) {
  SetTimeouts(fd, Remaining(deadline));
  Status s = ReadExactly(fd, buf, n);
  if (!s.ok() && (s.sys_errno() == EAGAIN || s.sys_errno() == EWOULDBLOCK)) {
    return DeadlineExceededError("no bytes in time");
  }
  return s;
}

}  // namespace

Status RealDoctorEnv::TcpConnect(const std::string& ip, uint16_t port,
                                 std::chrono::milliseconds timeout) {
  auto deadline = Steady::now() + timeout;
  SocketAddress addr{.kind = SocketAddress::Kind::kTcp, .host = ip, .port = port};
  FUN_ASSIGN_OR_RETURN(SockAddr sa, ToSockAddr(addr));
  std::string name = addr.ToString();
  UniqueFd fd(::socket(sa.ss.ss_family, SOCK_STREAM, 0));
  if (!fd.valid()) return ErrnoError(errno, "socket for " + name);
  ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) == 0) {
    return OkStatus();
  }
  if (errno != EINPROGRESS && errno != EINTR) return ErrnoError(errno, "connecting to " + name);
  FUN_ASSIGN_OR_RETURN(bool ready, WaitFor(fd.get(), POLLOUT, deadline));
  if (!ready) {
    return DeadlineExceededError(
        fmt::format("connecting to {}: no answer within {} ms", name, timeout.count()));
  }
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) return ErrnoError(err, "connecting to " + name);
  return OkStatus();
}

StatusOr<agent::AgentPing> RealDoctorEnv::PingGuest(const std::string& instance_dir,
                                                    const std::string& name,
                                                    std::chrono::milliseconds timeout) {
  FUN_ASSIGN_OR_RETURN(agent::AgentEndpoint ep, vm::InstanceAgentEndpoint(instance_dir, name));
  return agent::PingAgent(ep, timeout);
}

StatusOr<cri::RuntimeStatus> RealDoctorEnv::CriStatus(const std::string& socket,
                                                      std::chrono::milliseconds deadline) {
  cri::CriClientOptions o;
  o.default_timeout = deadline;
  o.max_receive_bytes = 1 << 20;
  FUN_ASSIGN_OR_RETURN(std::unique_ptr<cri::CriClient> client, cri::CriClient::Connect(socket, o));
  return client->Status({.timeout = deadline});
}

StatusOr<std::string> RealDoctorEnv::StepGuestClock(const std::string& instance_dir,
                                                    const std::string& name, int64_t delta_ns,
                                                    std::chrono::milliseconds timeout) {
  FUN_ASSIGN_OR_RETURN(agent::AgentEndpoint ep, vm::InstanceAgentEndpoint(instance_dir, name));
  return agent::StepGuestClock(ep, delta_ns, timeout);
}

Status RealDoctorEnv::StopInstance(const Paths& paths, const std::string& name, bool force) {
  return vm::StopInstance(paths, name, {.force = force});
}

Status RealDoctorEnv::Chmod(const std::string& path, unsigned mode) {
  if (::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) {
    return ErrnoError(errno, "chmod " + path);
  }
  return OkStatus();
}

Status RealDoctorEnv::RemoveFile(const std::string& path) {
  if (::unlink(path.c_str()) != 0) return ErrnoError(errno, "removing " + path);
  return OkStatus();
}

Status RealDoctorEnv::WriteFile(const std::string& path, std::string_view contents, unsigned mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                     static_cast<mode_t>(mode)));
  if (!fd.valid()) return ErrnoError(errno, "creating " + path);
  if (::fchmod(fd.get(), static_cast<mode_t>(mode)) != 0) {
    return ErrnoError(errno, "chmod " + path);
  }
  FUN_RETURN_IF_ERROR_CTX(WriteAll(fd.get(), contents), "writing " + path);
  if (::fsync(fd.get()) != 0) return ErrnoError(errno, "fsync " + path);
  return OkStatus();
}

StatusOr<VmOutbound> RealDoctorEnv::ProbeVmOutbound(const std::string& instance_dir,
                                                    const std::string& name,
                                                    std::chrono::milliseconds timeout) {
  auto deadline = Steady::now() + timeout;
  FUN_ASSIGN_OR_RETURN(agent::AgentEndpoint ep, vm::InstanceAgentEndpoint(instance_dir, name));
  FUN_ASSIGN_OR_RETURN(
      UniqueFd listener,
      Listen(SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = 0}, 4));
  FUN_ASSIGN_OR_RETURN(std::string local, LocalAddress(listener.get()));
  FUN_ASSIGN_OR_RETURN(SocketAddress bound, ParseSocketAddress(local));
  VmOutbound out{.target = fmt::format("{}:{}", host_alias_, bound.port),
                 .listener = fmt::format("127.0.0.1:{}", bound.port)};
  // The agent answers once its connect(2) succeeded: the kernel completes the handshake from
  // the listen backlog, so accepting comes after.
  auto stream =
      agent::DialAgent(ep, {.kind = agent::Kind::kTcp, .target = out.target}, Remaining(deadline));
  if (!stream.ok()) {
    return stream.status().WithContext(fmt::format("the guest agent dialing {}", out.target));
  }
  FUN_ASSIGN_OR_RETURN(bool arrived, WaitFor(listener.get(), POLLIN, deadline));
  if (!arrived) {
    return DeadlineExceededError(
        fmt::format("the agent dialed {} but no connection arrived at {} within {} ms", out.target,
                    out.listener, timeout.count()));
  }
  FUN_ASSIGN_OR_RETURN(UniqueFd conn, Accept(listener.get()));
  // Bytes both ways, so the connection that arrived is the agent's (not a stray local one)
  // and the NAT path carries data, not just handshakes.
  const std::string ping = fmt::format("fun-doctor ping {}\n", bound.port);
  const std::string pong = fmt::format("fun-doctor pong {}\n", bound.port);
  auto exchange = [&](int from, int to, const std::string& bytes, const char* way) -> Status {
    SetTimeouts(from, Remaining(deadline));
    if (Status s = WriteAll(from, bytes); !s.ok()) {
      return s.WithContext(fmt::format("sending {}", way));
    }
    std::string got(bytes.size(), '\0');
    if (Status s = ReadWithin(to, got.data(), got.size(), deadline); !s.ok()) {
      return s.WithContext(fmt::format("receiving {}", way));
    }
    if (got != bytes) return DataLossError(fmt::format("{}: other bytes arrived", way));
    return OkStatus();
  };
  FUN_RETURN_IF_ERROR(exchange(stream->get(), conn.get(), ping, "VM to host"));
  FUN_RETURN_IF_ERROR(exchange(conn.get(), stream->get(), pong, "host to VM"));
  return out;
}

StatusOr<VmDnsExchange> RealDoctorEnv::ExchangeVmDns(const std::string& instance_dir,
                                                     const std::string& name,
                                                     const std::string& server,
                                                     std::string_view query, int attempts,
                                                     std::chrono::milliseconds attempt_timeout) {
  if (query.size() < 2) return InvalidArgumentError("a DNS query starts with a 2-byte id");
  attempts = std::max(attempts, 1);
  const auto start = Steady::now();
  // Send i (1-based) waits until start + i * attempt_timeout: the dial counts against the first.
  auto attempt_end = [&](int i) { return start + i * attempt_timeout; };
  FUN_ASSIGN_OR_RETURN(agent::AgentEndpoint ep, vm::InstanceAgentEndpoint(instance_dir, name));
  auto stream = agent::DialAgent(ep, {.kind = agent::Kind::kUdp, .target = server},
                                 Remaining(attempt_end(1)));
  if (!stream.ok()) {
    return stream.status().WithContext(
        fmt::format("the guest agent opening a UDP channel to {}", server));
  }
  FUN_ASSIGN_OR_RETURN(std::string frame, agent::EncodeDatagram(query));
  VmDnsExchange out{.server = server};
  std::string buffered;
  int other_ids = 0;
  for (int send = 1; send <= attempts; ++send) {
    const auto until = attempt_end(send);
    SetTimeouts(stream->get(), Remaining(until));
    if (Status s = WriteAll(stream->get(), frame); !s.ok()) {
      return s.WithContext(fmt::format("sending the query to {} through the guest agent", server));
    }
    out.sends = send;
    for (;;) {
      FUN_ASSIGN_OR_RETURN(bool ready, WaitFor(stream->get(), POLLIN, until));
      if (!ready) break;  // this send's time is up: send again, or give up
      char buf[8192];
      ssize_t n = ::read(stream->get(), buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n < 0) return ErrnoError(errno, "reading the guest agent's UDP channel");
      if (n == 0) {
        return UnavailableError(fmt::format(
            "the guest agent closed the UDP channel to {} before an answer came", server));
      }
      buffered.append(buf, static_cast<size_t>(n));
      // Every complete datagram in what arrived: the answer, or one to ignore.
      for (;;) {
        FUN_ASSIGN_OR_RETURN(auto d, agent::DecodeDatagram(buffered));
        if (!d) break;
        auto [payload, used] = *d;
        if (payload.substr(0, 2) == query.substr(0, 2)) {
          out.response = std::string(payload);
          return out;
        }
        ++other_ids;
        buffered.erase(0, used);
      }
    }
  }
  auto waited =
      std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start).count();
  return DeadlineExceededError(
      fmt::format("no answer from {} within {} ms ({} {} sent{})", server, waited, out.sends,
                  out.sends == 1 ? "query" : "queries",
                  other_ids == 0 ? std::string()
                                 : fmt::format("; {} datagram{} with another id ignored", other_ids,
                                               other_ids == 1 ? "" : "s")));
}

StatusOr<uint64_t> ParseMemTotal(std::string_view meminfo) {
  // "MemTotal:       16318436 kB"
  constexpr std::string_view kKey = "MemTotal:";
  size_t at = 0;
  while (at < meminfo.size()) {
    size_t nl = meminfo.find('\n', at);
    std::string_view line =
        meminfo.substr(at, nl == std::string_view::npos ? std::string_view::npos : nl - at);
    at = nl == std::string_view::npos ? meminfo.size() : nl + 1;
    if (line.substr(0, kKey.size()) != kKey) continue;
    line.remove_prefix(kKey.size());
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    uint64_t kib = 0;
    size_t i = 0;
    for (; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i) {
      if (kib > (UINT64_MAX >> 10) / 10) return InvalidArgumentError("MemTotal is too large");
      kib = kib * 10 + static_cast<uint64_t>(line[i] - '0');
    }
    std::string_view unit = line.substr(i);
    while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
    if (i == 0 || unit != "kB") {
      return InvalidArgumentError(fmt::format("malformed MemTotal line: \"MemTotal:{}\"", line));
    }
    return kib << 10;
  }
  return InvalidArgumentError("no MemTotal line in /proc/meminfo");
}

StatusOr<std::vector<vm::PublishState>> RealDoctorEnv::RequestPortTable(
    const std::string& instance_dir, std::chrono::milliseconds timeout) {
  return vm::RequestPublish(instance_dir, timeout);
}

}  // namespace fun::doctor
