#include "guest/guestd/guestd.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>
#include <thread>

#include "guest/guestd/image_server.h"
#include "lib/base/files.h"
#include "lib/base/flags.h"
#include "lib/base/log.h"
#include "lib/base/strings.h"
#include "lib/base/version.h"
#include "lib/net/agent_stream.h"
#include "lib/net/listen_ports.h"
#include "lib/net/splice.h"

namespace fun::guestd {
namespace {

using Steady = std::chrono::steady_clock;
using agent::ReplyStatus;

constexpr char kUsage[] =
    "usage: fun-guestd [--listen ADDRESS]... [--token-file PATH] [--containerd-socket PATH]\n"
    "                  [--shutdown-command PATH] [--no-timesync] [--max-connections N]\n"
    "                  [--log-root DIR] [--image-listen ADDRESS] [--image-dir DIR]\n"
    "                  [--udp-idle-timeout SECONDS] [--shares-file PATH]\n"
    "                  [--share-socket-dir DIR] [--share-cache none|mmap|loose]\n"
    "                  [--log-file PATH] [--log-level LEVEL]\n"
    "\n"
    "The agent inside Fun's VM: serves the host's agent channel (containerd, TCP and UDP\n"
    "forwards, listening ports, ping, time sync, shutdown). ADDRESS is tcp:HOST:PORT, unix:PATH or "
    "vsock:PORT\n"
    "(default tcp:0.0.0.0:7070). The instance secret is read from --token-file (default: QEMU\n"
    "fw_cfg opt/fun/secret); it is never accepted on the command line.\n"
    "The host's shared folders are listed in --shares-file (default: fw_cfg opt/fun/shares;\n"
    "missing: none); each is relayed from its virtio-serial port and mounted with 9p.\n"
    "\n";

// How long a ping waits for containerd's socket to accept.
constexpr std::chrono::milliseconds kPingContainerdTimeout{1000};
// How long a ping waits for each share's statfs (a hung share must not hang the ping).
constexpr std::chrono::milliseconds kPingShareTimeout{500};
// Connections accepted per listener per wakeup, so one busy listener cannot starve the others.
constexpr int kAcceptsPerWakeup = 64;
// Pause after accept fails for want of fds or memory (the listener stays readable meanwhile).
constexpr std::chrono::milliseconds kAcceptBackoff{100};

// ---------------------------------------------------------------------------------------
// Sockets.

using agent::MillisUntil;

// Connects within `timeout`, giving up early (Cancelled) once stop_fd is readable. The
// returned fd is blocking, as Connect's are.
StatusOr<UniqueFd> ConnectWithTimeout(const SocketAddress& addr, std::chrono::milliseconds timeout,
                                      int stop_fd) {
  const std::string name = addr.ToString();
  FUN_ASSIGN_OR_RETURN(SockAddr sa, ToSockAddr(addr));
  UniqueFd fd(::socket(sa.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoError(errno, "socket for " + name);
  UnpaceIfLoopback(fd.get(), sa.ss);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) {
      return ErrnoError(errno, "connecting to " + name);
    }
    const auto deadline = Steady::now() + timeout;
    for (;;) {
      pollfd p[2] = {{fd.get(), POLLOUT, 0}, {stop_fd, POLLIN, 0}};
      int n = ::poll(p, 2, MillisUntil(deadline));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError(errno, "poll");
      if (p[1].revents != 0) return CancelledError("connecting to " + name + ": agent stopping");
      if (p[0].revents != 0) break;
      if (Steady::now() >= deadline) {
        return DeadlineExceededError(
            fmt::format("connecting to {}: no answer within {} ms", name, timeout.count()));
      }
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return ErrnoError(err, "connecting to " + name);
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  if (addr.kind == SocketAddress::Kind::kTcp) {
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

StatusOr<UniqueFd> ListenVsock(uint32_t port) {
  UniqueFd fd(::socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return UnimplementedError(
        fmt::format("vsock not supported on this build: socket(AF_VSOCK): {} (the kernel needs "
                    "the vsock transport, e.g. vmw_vsock_virtio_transport; or listen on tcp:)",
                    std::strerror(errno)));
  }
  sockaddr_vm sa{};
  sa.svm_family = AF_VSOCK;
  sa.svm_cid = VMADDR_CID_ANY;
  sa.svm_port = port;
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0) {
    return ErrnoError(errno, fmt::format("binding vsock:{}", port));
  }
  if (::listen(fd.get(), 128) != 0)
    return ErrnoError(errno, fmt::format("listen on vsock:{}", port));
  return fd;
}

std::string VsockPeer(int fd) {
  sockaddr_vm sa{};
  socklen_t len = sizeof(sa);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return "vsock:?";
  return fmt::format("vsock:{}:{}", sa.svm_cid, sa.svm_port);
}

// ---------------------------------------------------------------------------------------
// The protocol, per connection.

// `lines`: the message is data in lines (kPorts), not a one-line reason.
Status SendReply(int fd, ReplyStatus status, std::string_view message, bool lines = false) {
  agent::Reply r{.status = status,
                 .message = std::string(message.substr(0, agent::kMaxMessageSize))};
  for (char& c : r.message) {
    if ((c == '\n' && !lines) || c == '\r') c = ' ';  // one line, as the protocol promises
  }
  FUN_ASSIGN_OR_RETURN(std::string wire, agent::EncodeReply(r));
  return WriteAll(fd, wire);
}

// What a kUdp session moved. "to target": datagrams the host framed, sent on the UDP socket;
// "to host": datagrams the target sent, framed onto the host stream (queued for it: a session
// that ends while the host stream is full never delivers the last few; unsent_bytes says so).
struct UdpStats {
  uint64_t to_target = 0, to_target_bytes = 0, to_target_dropped = 0;
  uint64_t to_host = 0, to_host_bytes = 0, to_host_dropped = 0;
  uint64_t icmp_errors = 0;  // port/host unreachable reported on the socket: counted, not fatal
  uint64_t unsent_bytes = 0;
};

struct Context {
  const Options& options;
  const agent::Token& token;
  GuestSystem& system;
  const SocketAddress& containerd;
  int stop_fd;
  const ShareMounter* shares;  // or nullptr
};

// What a connection came to, for its log line.
struct Outcome {
  std::string_view kind = "-";
  std::string result;
  bool warning = false;
  bool relayed = false;
  std::string target;
  net::SpliceStats bytes;
  // kUdp: datagrams rather than bytes (set once the session started).
  std::optional<UdpStats> udp;
};

void Reply(int conn, ReplyStatus status, std::string_view message, Outcome* o) {
  Status s = SendReply(conn, status, message);
  o->result =
      fmt::format("{}{}{}", agent::ReplyStatusName(status), message.empty() ? "" : ": ", message);
  if (!s.ok()) o->result += fmt::format(" (the reply was lost: {})", s.message());
}

// Reply kOk, pass on the early bytes, then relay until both sides are done.
void Relay(const Context& c, int conn, int target, const std::string& early, Outcome* o) {
  Status s = SendReply(conn, ReplyStatus::kOk, "connected to " + o->target);
  if (!s.ok()) {
    o->result = "sending the reply: " + s.message();
    return;
  }
  o->relayed = true;
  if (!early.empty()) {
    s = WriteAll(target, early);
    if (!s.ok()) {
      o->result = fmt::format("relay failed: writing to {}: {}", o->target, s.message());
      return;
    }
  }
  s = net::Splice(
      conn, target,
      {.stop_fd = c.stop_fd, .stats = &o->bytes, .a_name = "host", .b_name = o->target});
  o->bytes.a_to_b += early.size();
  o->result = s.ok() ? "ok" : fmt::format("relay ended: {}", s.message());
}

// This process's open fds; -1 when they cannot be counted.
int OpenFdCount() {
  auto n = CountOpenFds();
  return n.ok() ? static_cast<int>(*n) : -1;
}

// statvfs of the data dir. avail_bytes is f_bavail: the space left outside ext4's reserved
// blocks, where a full disk shows first (containerd writes as root and could use the reserve,
// but running into it already means the disk is full for practical purposes).
nlohmann::json DataDiskJson(const std::string& dir) {
  struct statvfs sv {};
  if (::statvfs(dir.c_str(), &sv) != 0) {
    return {{"path", dir}, {"error", ErrnoError(errno, "statvfs " + dir).message()}};
  }
  const uint64_t unit = sv.f_frsize != 0 ? sv.f_frsize : sv.f_bsize;
  return {{"path", dir},
          {"total_bytes", static_cast<uint64_t>(sv.f_blocks) * unit},
          {"avail_bytes", static_cast<uint64_t>(sv.f_bavail) * unit},
          {"error", ""}};
}

void ServePing(const Context& c, int conn, Outcome* o) {
  bool containerd_up =
      ConnectWithTimeout(c.containerd, std::min(c.options.connect_timeout, kPingContainerdTimeout),
                         c.stop_fd)
          .ok();
  auto now = c.system.Now().time_since_epoch();
  nlohmann::json j = {
      {"version", kVersion},
      {"revision", kGitRevision},
      {"uptime_s", c.system.Uptime().count()},
      {"containerd", containerd_up},
      {"load", c.system.LoadAverage()},
      {"time_unix_ns", std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()},
      // The agent's own open fds (this ping's included): a leak shows as growth over time.
      {"open_fds", OpenFdCount()},
      {"shares", nlohmann::json::array()},
      {"data_disk", DataDiskJson(c.options.data_dir)},
  };
  if (c.shares != nullptr) {
    for (const ShareMounter::State& s : c.shares->Probe(kPingShareTimeout)) {
      j["shares"].push_back({{"tag", s.share.tag},
                             {"path", s.share.guest_path},
                             {"read_only", s.share.read_only},
                             {"status", s.status},
                             {"error", s.error},
                             {"relay_pid", s.relay_pid},
                             {"relay_adopted", s.adopted},
                             {"connections", s.connections},
                             {"bytes_to_host", s.bytes_to_host},
                             {"bytes_from_host", s.bytes_from_host},
                             {"answering", s.answering},
                             {"probe_error", s.probe_error}});
    }
  }
  Reply(conn, ReplyStatus::kOk, j.dump(), o);
}

void ServeContainerd(const Context& c, int conn, const std::string& early, Outcome* o) {
  o->target = "containerd";
  auto up = ConnectWithTimeout(c.containerd, c.options.connect_timeout, c.stop_fd);
  if (!up.ok()) {
    Reply(conn, ReplyStatus::kUnavailable,
          fmt::format("containerd is not reachable: {}", up.status().message()), o);
    o->warning = true;
    return;
  }
  Relay(c, conn, up->get(), early, o);
}

void ServeTcp(const Context& c, int conn, const agent::Request& r, const std::string& early,
              Outcome* o) {
  auto hp = agent::ParseTarget(r.target);
  if (!hp.ok()) {
    Reply(conn, ReplyStatus::kBadRequest, hp.status().message(), o);
    o->warning = true;
    return;
  }
  o->target = r.target;
  SocketAddress addr{.kind = SocketAddress::Kind::kTcp, .host = hp->host, .port = hp->port};
  auto up = ConnectWithTimeout(addr, c.options.connect_timeout, c.stop_fd);
  if (!up.ok()) {
    Reply(conn, ReplyStatus::kUnavailable, up.status().message(), o);
    return;
  }
  Relay(c, conn, up->get(), early, o);
}

// ---------------------------------------------------------------------------------------
// kUdp: one UDP session per channel (the host opens one per client address).

// Framed datagrams waiting for room in the host stream; what does not fit is dropped, as a
// full socket buffer drops datagrams (UDP promises no delivery).
constexpr size_t kUdpPendingLimit = 256 * 1024;
// Bytes read from the host stream at once. With the one partial frame that may precede them,
// this bounds what the session holds from the host.
constexpr size_t kUdpReadChunk = 64 * 1024;
// Datagrams taken from the target per wakeup, so a flooding target cannot starve the host.
constexpr int kUdpReceivesPerWakeup = 64;

// Errors an ICMP message leaves on a connected UDP socket (port or host unreachable): the
// target may come back (a UDP server restarting), so they are counted, never fatal.
bool IsIcmpError(int err) {
  return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN ||
         err == ENONET;
}

StatusOr<UniqueFd> ConnectUdp(const agent::HostPort& hp) {
  SocketAddress addr{.kind = SocketAddress::Kind::kTcp, .host = hp.host, .port = hp.port};
  FUN_ASSIGN_OR_RETURN(SockAddr sa, ToSockAddr(addr));
  UniqueFd fd(::socket(sa.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoError(errno, "udp socket");
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) != 0) {
    return ErrnoError(errno, "connecting a udp socket to " + addr.ToString().substr(4));
  }
  return fd;
}

// The relay of one session: framed datagrams from the host stream go out one by one on the
// connected UDP socket; what the target sends comes back framed. Single thread, poll(2),
// non-blocking on both fds, every buffer bounded.
class UdpSession {
 public:
  UdpSession(const Context& c, int conn, int udp, std::string target, UdpStats* stats)
      : c_(c), conn_(conn), udp_(udp), target_(std::move(target)), stats_(*stats) {}

  // Runs until the host closes, the session idles out, the agent stops, a frame is malformed
  // (malformed() says so) or either socket fails. OK for a host that closed between frames.
  Status Run(std::string early) {
    in_ = std::move(early);
    recv_buf_.resize(agent::kMaxDatagramSize + 1);
    idle_deadline_ = Steady::now() + c_.options.udp_idle_timeout;
    for (;;) {
      if (!blocked_) FUN_RETURN_IF_ERROR(SendFrames());
      const bool to_host = out_off_ < out_.size();
      pollfd p[3] = {
          {conn_, static_cast<short>((blocked_ ? 0 : POLLIN) | (to_host ? POLLOUT : 0)), 0},
          {udp_, static_cast<short>(POLLIN | (blocked_ ? POLLOUT : 0)), 0},
          {c_.stop_fd, POLLIN, 0}};
      int n = ::poll(p, 3, MillisUntil(idle_deadline_));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError(errno, "poll");
      if (p[2].revents != 0) return CancelledError("agent stopping");
      if (n == 0 && Steady::now() >= idle_deadline_) {
        return DeadlineExceededError(
            fmt::format("no datagram either way for {} s",
                        std::chrono::duration<double>(c_.options.udp_idle_timeout).count()));
      }
      if (p[0].revents & (POLLERR | POLLHUP)) {
        // A reset (POLLERR) or a stream closed both ways: nothing more will move. A host that
        // merely half-closed shows POLLIN and reads EOF below, unless a send is blocked.
        if (blocked_ || !(p[0].revents & POLLIN)) {
          int err = 0;
          socklen_t len = sizeof(err);
          ::getsockopt(conn_, SOL_SOCKET, SO_ERROR, &err, &len);
          return err != 0 ? ErrnoError(err, "host stream") : AbortedError("host stream hung up");
        }
      }
      if (!blocked_ && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
        FUN_ASSIGN_OR_RETURN(bool more, ReadFromHost());
        if (!more) return OkStatus();  // the host closed the channel between frames
      }
      if (p[0].revents & POLLOUT) FUN_RETURN_IF_ERROR(WriteToHost());
      if (p[1].revents & POLLOUT) blocked_ = false;  // room again: SendFrames retries
      if (p[1].revents & (POLLIN | POLLERR)) FUN_RETURN_IF_ERROR(ReceiveFromTarget());
    }
  }

  // What is still queued for the host when the session ends.
  size_t unsent() const { return out_.size() - out_off_; }
  bool malformed() const { return malformed_; }

 private:
  // Sends every complete frame in in_; stops early (blocked_) when the socket has no room.
  Status SendFrames() {
    size_t at = 0;
    for (;;) {
      auto d = agent::DecodeDatagram(std::string_view(in_).substr(at));
      if (!d.ok()) return Malformed(d.status().message());
      if (!d->has_value()) break;
      auto [payload, used] = **d;
      FUN_ASSIGN_OR_RETURN(bool sent, SendToTarget(payload));
      if (!sent) {
        blocked_ = true;
        break;
      }
      at += used;
    }
    in_.erase(0, at);
    return OkStatus();
  }

  // False when the socket has no room (EAGAIN): the caller waits for POLLOUT. A datagram the
  // kernel refuses (too big for IPv4, no buffers, a firewall) is dropped and counted.
  StatusOr<bool> SendToTarget(std::string_view payload) {
    Touch();
    for (int attempt = 0;; ++attempt) {
      if (::send(udp_, payload.data(), payload.size(), MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
        ++stats_.to_target;
        stats_.to_target_bytes += payload.size();
        return true;
      }
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return false;
      if (IsIcmpError(err)) {
        // The error belongs to an earlier datagram; reporting it cleared it and this one was
        // not sent. Once more.
        ++stats_.icmp_errors;
        if (attempt == 0) continue;
      } else if (err != EMSGSIZE && err != ENOBUFS && err != ENOMEM && err != EPERM &&
                 err != EACCES) {
        return ErrnoError(err, "sending to " + target_);
      }
      ++stats_.to_target_dropped;
      return true;
    }
  }

  // Appends what the host sent to in_; false at EOF. A stream that ends inside a frame is
  // malformed (InvalidArgument).
  StatusOr<bool> ReadFromHost() {
    const size_t had = in_.size();
    in_.resize(had + kUdpReadChunk);
    ssize_t n = ::recv(conn_, in_.data() + had, kUdpReadChunk, MSG_DONTWAIT);
    const int err = errno;
    in_.resize(had + static_cast<size_t>(std::max<ssize_t>(n, 0)));
    if (n < 0) {
      if (err == EINTR || err == EAGAIN || err == EWOULDBLOCK) return true;
      return ErrnoError(err, "reading from the host");
    }
    if (n > 0) return true;
    if (in_.empty()) return false;
    if (in_.size() < 2) return Malformed("the stream ended inside a frame's length");
    const size_t declared =
        static_cast<uint8_t>(in_[0]) | (static_cast<size_t>(static_cast<uint8_t>(in_[1])) << 8);
    return Malformed(
        fmt::format("the stream ended {} bytes into a frame of {}", in_.size() - 2, declared));
  }

  Status WriteToHost() {
    while (out_off_ < out_.size()) {
      ssize_t n = ::send(conn_, out_.data() + out_off_, out_.size() - out_off_,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) return ErrnoError(errno, "writing to the host");
      out_off_ += static_cast<size_t>(n);
    }
    if (out_off_ == out_.size()) {
      out_.clear();
      out_off_ = 0;
    } else if (out_off_ > kUdpPendingLimit / 2) {
      out_.erase(0, out_off_);
      out_off_ = 0;
    }
    return OkStatus();
  }

  Status ReceiveFromTarget() {
    for (int i = 0; i < kUdpReceivesPerWakeup; ++i) {
      ssize_t n = ::recv(udp_, recv_buf_.data(), recv_buf_.size(), MSG_DONTWAIT | MSG_TRUNC);
      if (n < 0) {
        const int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) break;
        if (IsIcmpError(err)) {
          ++stats_.icmp_errors;
          continue;
        }
        return ErrnoError(err, "receiving from " + target_);
      }
      Touch();
      const size_t size = static_cast<size_t>(n);
      if (size > agent::kMaxDatagramSize || unsent() + 2 + size > kUdpPendingLimit) {
        ++stats_.to_host_dropped;  // cannot be framed (an IPv6 jumbogram), or the host is slow
        continue;
      }
      auto frame = agent::EncodeDatagram(std::string_view(recv_buf_.data(), size));
      if (!frame.ok()) return frame.status();
      out_ += *frame;
      ++stats_.to_host;
      stats_.to_host_bytes += size;
    }
    return WriteToHost();  // at once: most of the time the stream has room
  }

  void Touch() { idle_deadline_ = Steady::now() + c_.options.udp_idle_timeout; }
  Status Malformed(std::string_view what) {
    malformed_ = true;
    return InvalidArgumentError(fmt::format("malformed frame from the host: {}", what));
  }

  const Context& c_;
  const int conn_;
  const int udp_;
  const std::string target_;
  UdpStats& stats_;
  std::string in_;   // from the host: the frames not sent yet, then a partial one
  std::string out_;  // framed datagrams for the host, from out_off_ on
  size_t out_off_ = 0;
  bool blocked_ = false;  // the UDP socket had no room for the next frame in in_
  bool malformed_ = false;
  std::vector<char> recv_buf_;
  Steady::time_point idle_deadline_;
};

void ServeUdp(const Context& c, int conn, const agent::Request& r, std::string early, Outcome* o) {
  auto hp = agent::ParseTarget(r.target);
  if (!hp.ok()) {
    Reply(conn, ReplyStatus::kBadRequest, hp.status().message(), o);
    o->warning = true;
    return;
  }
  o->target = r.target;
  auto udp = ConnectUdp(*hp);
  if (!udp.ok()) {
    Reply(conn, ReplyStatus::kUnavailable, udp.status().message(), o);
    return;
  }
  Status s = SendReply(conn, ReplyStatus::kOk, "connected to " + r.target);
  if (!s.ok()) {
    o->result = "sending the reply: " + s.message();
    return;
  }
  o->relayed = true;
  o->udp.emplace();
  int flags = ::fcntl(conn, F_GETFL);
  if (flags < 0 || ::fcntl(conn, F_SETFL, flags | O_NONBLOCK) != 0) {
    o->result = fmt::format("making the host stream non-blocking: {}", std::strerror(errno));
    return;
  }
  UdpSession session(c, conn, udp->get(), r.target, &*o->udp);
  s = session.Run(std::move(early));
  o->udp->unsent_bytes = session.unsent();
  if (s.ok()) {
    o->result = "ok: the host closed the channel";
  } else if (s.code() == Code::kDeadlineExceeded) {
    o->result = "idle: " + s.message();
  } else if (s.code() == Code::kCancelled) {
    o->result = s.message();
  } else {
    o->result = fmt::format("{}: {}", session.malformed() ? "closed" : "relay ended", s.message());
    o->warning = session.malformed();
  }
}

// A file of /proc, whole (its size is unknown until read). Bounded: a VM with so many sockets
// that /proc/net/tcp exceeds this is not one we can report on in one reply anyway.
StatusOr<std::string> ReadProcFile(const std::string& path) {
  constexpr size_t kMaxProcFile = 64 << 20;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoError(errno, "opening " + path);
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "reading " + path);
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxProcFile) {
      return ResourceExhaustedError(
          fmt::format("{} holds more than {} MiB", path, kMaxProcFile >> 20));
    }
  }
}

// kPorts: what listens in the VM's network namespace, from /proc/net/{tcp,tcp6,udp,udp6}. A
// kernel without IPv6 has no tcp6 and udp6: nothing listens there then.
void ServePorts(const Context& c, int conn, Outcome* o) {
  struct File {
    std::string_view name;
    net::Protocol protocol;
    bool ipv6;
  };
  std::vector<net::ListenPort> all;
  for (const File& f :
       {File{"tcp", net::Protocol::kTcp, false}, File{"tcp6", net::Protocol::kTcp, true},
        File{"udp", net::Protocol::kUdp, false}, File{"udp6", net::Protocol::kUdp, true}}) {
    const std::string path = fmt::format("{}/{}", c.options.proc_net_dir, f.name);
    auto text = ReadProcFile(path);
    if (!text.ok() && text.status().sys_errno() == ENOENT && f.ipv6) continue;
    auto ports = text.ok() ? net::ParseProcNetSockets(*text, f.protocol, f.ipv6)
                           : StatusOr<std::vector<net::ListenPort>>(text.status());
    if (!ports.ok()) {
      Reply(conn, ReplyStatus::kFailed, ports.status().message(), o);
      o->warning = true;
      return;
    }
    all.insert(all.end(), ports->begin(), ports->end());
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  auto wire = net::EncodeListenPorts(all);
  if (!wire.ok()) {
    Reply(conn, ReplyStatus::kFailed, wire.status().message(), o);
    o->warning = true;
    return;
  }
  Status s = SendReply(conn, ReplyStatus::kOk, *wire, /*lines=*/true);
  const bool truncated = wire->ends_with("\ntruncated\n") || *wire == "truncated\n";
  o->result = fmt::format("ok: {} listening sockets{}", all.size(),
                          truncated ? " (more than one reply holds: truncated)" : "");
  if (!s.ok()) o->result += fmt::format(" (the reply was lost: {})", s.message());
}

void ServeShutdown(const Context& c, int conn, Outcome* o) {
  const std::string& cmd = c.options.shutdown_command;
  if (::access(cmd.c_str(), X_OK) != 0) {
    Reply(conn, ReplyStatus::kFailed,
          fmt::format("cannot shut down: the shutdown command {}: {} (the VM image must provide "
                      "it)",
                      cmd, std::strerror(errno)),
          o);
    o->warning = true;
    return;
  }
  Reply(conn, ReplyStatus::kOk, "shutting down", o);
  Status s = c.system.StartDetached(cmd);
  if (s.ok()) {
    o->result += fmt::format(" (started {})", cmd);
  } else {
    o->result += fmt::format(" but the shutdown command failed: {}", s.message());
    o->warning = true;
  }
}

void ServeTimeSync(const Context& c, int conn, const agent::Request& r, Outcome* o) {
  if (!c.options.allow_timesync) {
    Reply(conn, ReplyStatus::kBadRequest, "time sync is turned off in this VM (--no-timesync)", o);
    return;
  }
  // A relative step (the host measured the offset with a ping): however late this stalled
  // guest gets to it, it lands right. A step that lands before 2000 or after 2070 is no clock
  // offset but a bug (or an older fun-hostd sending an absolute time: that lands in 2082
  // and later). Decades either way are fine: an RTC reset to 1970, a clock set by hand.
  const int64_t delta_ns = static_cast<int64_t>(r.arg);
  constexpr int64_t kEarliestNs = 946684800LL * 1'000'000'000LL;  // 2000-01-01T00:00:00Z
  constexpr int64_t kLatestNs = 3155760000LL * 1'000'000'000LL;   // 2070-01-01T00:00:00Z
  const int64_t now_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(c.system.Now().time_since_epoch())
          .count();
  // now_ns + delta_ns without overflow: both checks are done against the bounds.
  if (delta_ns < kEarliestNs - now_ns || delta_ns >= kLatestNs - now_ns) {
    Reply(conn, ReplyStatus::kBadRequest,
          fmt::format("time sync by {} ns: not a plausible clock offset (the clock would leave "
                      "2000-2070)",
                      delta_ns),
          o);
    o->warning = true;
    return;
  }
  const auto delta = std::chrono::nanoseconds(delta_ns);
  Status s = c.system.StepWallClock(delta);
  if (!s.ok()) {
    Reply(conn, ReplyStatus::kFailed, "stepping the clock: " + s.message(), o);
    o->warning = true;
    return;
  }
  Reply(conn, ReplyStatus::kOk,
        fmt::format("clock stepped by {:+.3f} s", std::chrono::duration<double>(delta).count()), o);
}

// True when `path` is absolute, lies strictly beneath `root` and has no "." or ".." component
// (so a lexical check is a real one); symlinks are refused at open (O_NOFOLLOW on the file;
// the directories under the log root are containerd's, which no container can write).
bool IsConfinedLogPath(std::string_view path, std::string_view root) {
  if (root.empty() || path.size() <= root.size() + 1) return false;
  if (path.substr(0, root.size()) != root || path[root.size()] != '/') return false;
  std::string_view rest = path.substr(root.size() + 1);
  while (!rest.empty()) {
    const size_t slash = rest.find('/');
    const std::string_view part = rest.substr(0, slash);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  return path.back() != '/' && path.find('\0') == std::string_view::npos;
}

// Sends the file's bytes from fd's position to its current end. False when the host is gone.
bool SendToEnd(int file, int conn, Outcome* o) {
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(file, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return true;
    if (!WriteAll(conn, std::string_view(buf, static_cast<size_t>(n))).ok()) return false;
    o->bytes.b_to_a += static_cast<uint64_t>(n);  // (a: the host, b: the target)
  }
}

void ServeLog(const Context& c, int conn, const agent::Request& r, Outcome* o) {
  o->target = r.target;
  if (!IsConfinedLogPath(r.target, c.options.log_root)) {
    Reply(conn, ReplyStatus::kBadRequest,
          fmt::format("log path \"{:.200}\" is not a file under {}", r.target, c.options.log_root),
          o);
    o->warning = true;
    return;
  }
  const bool follow = (r.arg & agent::kLogFollowBit) != 0;
  const uint64_t offset = r.arg & ~agent::kLogFollowBit;
  UniqueFd file(::open(r.target.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!file.valid()) {
    Reply(conn, errno == ENOENT ? ReplyStatus::kUnavailable : ReplyStatus::kFailed,
          fmt::format("opening {}: {}", r.target, std::strerror(errno)), o);
    return;
  }
  struct stat st {};
  if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    Reply(conn, ReplyStatus::kBadRequest, fmt::format("{} is not a regular file", r.target), o);
    o->warning = true;
    return;
  }
  if (offset > 0 && ::lseek(file.get(), static_cast<off_t>(offset), SEEK_SET) < 0) {
    Reply(conn, ReplyStatus::kBadRequest,
          fmt::format("offset {} in {}: {}", offset, r.target, std::strerror(errno)), o);
    return;
  }
  Reply(conn, ReplyStatus::kOk, follow ? "following" : "", o);
  o->relayed = true;
  for (;;) {
    if (!SendToEnd(file.get(), conn, o)) return;
    if (!follow) break;
    // Wait for the file to grow (checked every 100 ms), the host to half-close (then send the
    // rest and end), or the agent to stop.
    pollfd p[2] = {{.fd = conn, .events = POLLIN, .revents = 0},
                   {.fd = c.stop_fd, .events = POLLIN, .revents = 0}};
    int n = ::poll(p, 2, 100);
    if (n < 0 && errno != EINTR) break;
    if (p[1].revents != 0) break;
    if (p[0].revents != 0) {
      char drop[256];
      ssize_t got = ::read(conn, drop, sizeof(drop));
      if (got <= 0) {
        SendToEnd(file.get(), conn, o);
        break;
      }
    }
  }
  ::shutdown(conn, SHUT_WR);
}

Outcome Serve(const Context& c, int conn) {
  Outcome o;
  // A stuck host must not pin a thread on the reply either.
  timeval send_timeout{
      .tv_sec = static_cast<time_t>(c.options.request_deadline.count() / 1000),
      .tv_usec = static_cast<suseconds_t>(c.options.request_deadline.count() % 1000 * 1000)};
  ::setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout));

  std::string buffered;
  auto got = agent::ReadAgentRequest(conn, Steady::now() + c.options.request_deadline, c.stop_fd,
                                     &buffered);
  if (!got.ok()) {
    const Status& s = got.status();
    if (s.code() == Code::kInvalidArgument && buffered.rfind("FUNA", 0) == 0) {
      // Our magic, but another version or an unknown kind: tell the host what we speak.
      Reply(conn, ReplyStatus::kBadRequest, s.message(), &o);
    } else {
      o.result = "closed without a reply: " + s.message();
    }
    o.warning = s.code() != Code::kCancelled;
    return o;
  }
  const agent::Request& r = got->request;
  o.kind = agent::KindName(r.kind);
  if (!agent::TokensEqual(r.token, c.token)) {
    Reply(conn, ReplyStatus::kBadToken, "the host's instance secret does not match this VM's", &o);
    o.warning = true;
    return o;
  }
  switch (r.kind) {
    case agent::Kind::kPing:
      ServePing(c, conn, &o);
      break;
    case agent::Kind::kContainerd:
      ServeContainerd(c, conn, got->early, &o);
      break;
    case agent::Kind::kTcp:
      ServeTcp(c, conn, r, got->early, &o);
      break;
    case agent::Kind::kUdp:
      ServeUdp(c, conn, r, std::move(got->early), &o);
      break;
    case agent::Kind::kShutdown:
      ServeShutdown(c, conn, &o);
      break;
    case agent::Kind::kTimeSync:
      ServeTimeSync(c, conn, r, &o);
      break;
    case agent::Kind::kLog:
      ServeLog(c, conn, r, &o);
      break;
    case agent::Kind::kPorts:
      ServePorts(c, conn, &o);
      break;
    case agent::Kind::kP9:
      Reply(conn, ReplyStatus::kBadRequest,
            "p9 streams go from the guest to the host, not the other way", &o);
      o.warning = true;
      break;
  }
  return o;
}

// Ends a connection that may still hold unread bytes (a request not read to its end, bytes
// pipelined after it) without a reset, which could destroy the reply before the host reads it:
// half-close, then read and drop what comes until the host closes too, for a moment at most.
void LingeringClose(UniqueFd conn, int stop_fd) {
  if (::shutdown(conn.get(), SHUT_WR) != 0) return;
  constexpr std::chrono::milliseconds kLinger{1000};
  constexpr size_t kMaxDrain = 256 * 1024;
  const auto deadline = Steady::now() + kLinger;
  char buf[4096];
  size_t drained = 0;
  while (drained < kMaxDrain) {
    pollfd p[2] = {{conn.get(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int n = ::poll(p, 2, MillisUntil(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || p[1].revents != 0) return;
    ssize_t r = ::recv(conn.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r <= 0) return;
    drained += static_cast<size_t>(r);
  }
}

void LogOutcome(const std::string& peer, const Outcome& o, Steady::duration took) {
  double secs = std::chrono::duration<double>(took).count();
  if (o.udp) {
    const UdpStats& u = *o.udp;
    std::string line = fmt::format(
        "{} {} {}: {}; host->target {} datagrams {} bytes ({} dropped), target->host {} "
        "datagrams {} bytes ({} dropped), {} ICMP errors, {:.1f} s",
        peer, o.kind, o.target, o.result, u.to_target, u.to_target_bytes, u.to_target_dropped,
        u.to_host, u.to_host_bytes, u.to_host_dropped, u.icmp_errors, secs);
    if (u.unsent_bytes > 0) line += fmt::format(" ({} bytes for the host unsent)", u.unsent_bytes);
    if (o.warning) {
      FUN_LOG(Warning, "{}", line);
    } else {
      FUN_LOG(Info, "{}", line);
    }
  } else if (o.relayed) {
    std::string target = o.target == o.kind ? "" : " " + o.target;
    FUN_LOG(Info, "{} {}{}: {}; host->target {} bytes, target->host {} bytes, {:.1f} s", peer,
            o.kind, target, o.result, o.bytes.a_to_b, o.bytes.b_to_a, secs);
  } else if (o.warning) {
    FUN_LOG(Warning, "{} {}: {}", peer, o.kind, o.result);
  } else {
    FUN_LOG(Info, "{} {}: {}", peer, o.kind, o.result);
  }
}

}  // namespace

// -----------------------------------------------------------------------------------------
// Flags and the token.

std::string ListenAddress::ToString() const {
  return vsock ? fmt::format("vsock:{}", vsock_port) : socket.ToString();
}

StatusOr<ListenAddress> ParseListenAddress(std::string_view spec) {
  ListenAddress a;
  if (spec.rfind("vsock:", 0) == 0) {
    auto port = ParseInt(spec.substr(6), "port");
    if (!port.ok() || *port < 0) {
      return InvalidArgumentError(
          fmt::format("bad address \"{}\": use vsock:PORT with a port number", spec));
    }
    a.vsock = true;
    a.vsock_port = static_cast<uint32_t>(*port);
    return a;
  }
  auto s = ParseSocketAddress(spec);
  if (!s.ok()) {
    return InvalidArgumentError(s.status().message() + " (or vsock:PORT)");
  }
  a.socket = std::move(*s);
  return a;
}

StatusOr<Options> ParseArgs(const std::vector<std::string>& args) {
  Options o;
  std::vector<std::string> listen;
  bool allow_timesync = false, no_timesync = false;
  FlagSet flags("fun-guestd");
  flags.Repeated("listen", &listen, "tcp:HOST:PORT, unix:PATH or vsock:PORT (repeatable)");
  flags.String("token-file", &o.token_file, "the 32-byte instance secret");
  flags.String("containerd-socket", &o.containerd_socket, "containerd's CRI socket");
  flags.String("shutdown-command", &o.shutdown_command,
               "run (detached) on a shutdown request: stops containers, syncs, powers off");
  flags.Bool("allow-timesync", &allow_timesync, "let the host set the clock (the default)");
  flags.Bool("no-timesync", &no_timesync, "refuse the host's time sync requests");
  flags.Int("max-connections", &o.max_connections, "connections served at once (1 .. 65536)");
  flags.String("proc-net-dir", &o.proc_net_dir,
               "where kPorts reads tcp, tcp6, udp, udp6 (tests on a host point it elsewhere)");
  int udp_idle_s = static_cast<int>(
      std::chrono::duration_cast<std::chrono::seconds>(o.udp_idle_timeout).count());
  flags.Int("udp-idle-timeout", &udp_idle_s,
            "end a UDP session after this many seconds without a datagram (1 .. 86400)");
  flags.String("log-root", &o.log_root, "container logs the host may read (kLog) live under it");
  flags.String("data-dir", &o.data_dir, "kPing reports the free space of this directory's disk");
  flags.String("image-listen", &o.image_listen,
               "serve the OCI layouts of --image-dir as a read-only registry here (tcp:HOST:PORT)");
  flags.String("image-dir", &o.image_dir, "OCI image layouts, one per repository name");
  flags.String("shares-file", &o.shares_file,
               "the host's share table (lib/net/share_table.h); a missing file means no shares");
  flags.String("share-vsock-port-file", &o.share_vsock_port_file,
               "holds the host's vsock port for the shares' 9P (a missing file: serial ports)");
  flags.String("share-socket-dir", &o.share_socket_dir,
               "where the 9p mounts' unix sockets live (a directory containers do not see)");
  flags.String("share-cache", &o.share_cache,
               "mount every share with this v9fs cache mode instead of the table's (measurements)");
  flags.String("log-file", &o.log_file, "also log to this file");
  flags.String("log-level", &o.log_level, "debug, info, warning, error");
  FUN_ASSIGN_OR_RETURN(auto rest, flags.Parse(args));
  if (!rest.empty()) {
    return InvalidArgumentError(
        fmt::format("unexpected argument \"{}\": see 'fun-guestd --help'", rest[0]));
  }
  if (!o.share_cache.empty() && o.share_cache != "none" && o.share_cache != "mmap" &&
      o.share_cache != "loose") {
    return InvalidArgumentError(
        fmt::format("--share-cache {:?}: use none, mmap or loose", o.share_cache));
  }
  if (allow_timesync && no_timesync) {
    return InvalidArgumentError("--allow-timesync and --no-timesync contradict each other");
  }
  o.allow_timesync = !no_timesync;
  if (!listen.empty()) o.listen = std::move(listen);
  for (const auto& l : o.listen) FUN_RETURN_IF_ERROR_CTX(ParseListenAddress(l), "--listen");
  if (o.max_connections < 1 || o.max_connections > 65536) {
    return InvalidArgumentError(
        fmt::format("--max-connections: {} is out of range: use 1 .. 65536", o.max_connections));
  }
  if (udp_idle_s < 1 || udp_idle_s > 86400) {
    return InvalidArgumentError(
        fmt::format("--udp-idle-timeout: {} is out of range: use 1 .. 86400 seconds", udp_idle_s));
  }
  o.udp_idle_timeout = std::chrono::seconds(udp_idle_s);
  if (o.token_file.empty()) return InvalidArgumentError("--token-file: empty path");
  if (o.log_root.size() < 2 || o.log_root.front() != '/' || o.log_root.back() == '/') {
    return InvalidArgumentError(fmt::format(
        "--log-root \"{}\": must be an absolute directory path without a trailing /", o.log_root));
  }
  if (o.data_dir.empty() || o.data_dir.front() != '/') {
    return InvalidArgumentError(
        fmt::format("--data-dir \"{}\": must be an absolute path", o.data_dir));
  }
  if (o.shutdown_command.empty() || o.shutdown_command.front() != '/') {
    return InvalidArgumentError(
        fmt::format("--shutdown-command \"{}\": must be an absolute path", o.shutdown_command));
  }
  FUN_RETURN_IF_ERROR_CTX(ParseSocketAddress("unix:" + o.containerd_socket), "--containerd-socket");
  if (!o.image_listen.empty()) {
    FUN_RETURN_IF_ERROR_CTX(ParseSocketAddress(o.image_listen), "--image-listen");
  }
  FUN_RETURN_IF_ERROR_CTX(log::ParseLevel(o.log_level), "--log-level");
  return o;
}

StatusOr<agent::Token> ReadTokenFile(const std::string& path) {
  const std::string hint =
      "the VM must be started with -fw_cfg name=opt/fun/secret,file=<the instance secret> "
      "(fun-hostd does that), or give --token-file";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    Status s = ErrnoError(errno, "reading the instance secret " + path);
    return Status(s.code(), s.message() + ": " + hint);
  }
  std::string data;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "reading the instance secret " + path);
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > 4096) break;  // far too big already; the size check below says so
  }
  if (data.size() != agent::kTokenSize) {
    return InvalidArgumentError(fmt::format(
        "the instance secret {} holds {}{} bytes; it must hold exactly {} (fun-hostd writes 32 "
        "random bytes and hands them over with -fw_cfg name=opt/fun/secret)",
        path, data.size() > 4096 ? "more than " : "", data.size() > 4096 ? 4096 : data.size(),
        agent::kTokenSize));
  }
  agent::Token t;
  std::memcpy(t.data(), data.data(), t.size());
  return t;
}

// -----------------------------------------------------------------------------------------
// The agent.

StatusOr<uint32_t> ReadShareVsockPort(const std::string& path) {
  std::ifstream in(path);
  if (!in) return 0u;  // no such file: the host serves the shares on serial ports
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string_view digits = TrimSpace(text);
  uint64_t port = 0;
  bool ok = !digits.empty() && digits.size() <= 10;
  for (char c : digits) {
    ok = ok && c >= '0' && c <= '9';
    port = port * 10 + static_cast<uint64_t>(c - '0');
  }
  if (!ok || port == 0 || port > 0xffffffffULL) {
    return InvalidArgumentError(
        fmt::format("{}: \"{}\" is no vsock port number (fun-hostd writes the decimal port)", path,
                    text.substr(0, 40)));
  }
  return static_cast<uint32_t>(port);
}

Agent::Agent(const Options& options, const agent::Token& token, GuestSystem& system, UniqueFd stop)
    : options_(options), token_(token), system_(system), stop_(std::move(stop)) {}

StatusOr<std::unique_ptr<Agent>> Agent::Create(const Options& options, const agent::Token& token,
                                               GuestSystem& system) {
  if (options.max_connections < 1) return InvalidArgumentError("max_connections must be >= 1");
  if (options.listen.empty()) return InvalidArgumentError("nothing to listen on");
  FUN_RETURN_IF_ERROR_CTX(ParseSocketAddress("unix:" + options.containerd_socket),
                          "the containerd socket");
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop.valid()) return ErrnoError(errno, "eventfd");
  std::unique_ptr<Agent> a(new Agent(options, token, system, std::move(stop)));
  for (const std::string& spec : options.listen) {
    FUN_ASSIGN_OR_RETURN(ListenAddress addr, ParseListenAddress(spec));
    Listener l{.address = addr};
    if (addr.vsock) {
      FUN_ASSIGN_OR_RETURN(l.fd, ListenVsock(addr.vsock_port));
      l.bound = addr.ToString();
    } else {
      // A deep backlog: the host dials one channel per forwarded connection, a burst of a
      // thousand at once must not wait for SYN retries (the kernel caps it at somaxconn).
      FUN_ASSIGN_OR_RETURN(l.fd, Listen(addr.socket, /*backlog=*/4096));
      l.bound = LocalAddress(l.fd.get()).value_or(spec);
    }
    int flags = ::fcntl(l.fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(l.fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
      return ErrnoError(errno, "making " + l.bound + " non-blocking");
    }
    a->addresses_.push_back(l.bound);
    a->listeners_.push_back(std::move(l));
  }
  return a;
}

Agent::~Agent() {
  Stop();
  std::unique_lock lock(mu_);
  all_ended_.wait(lock, [this] { return active_ == 0; });
  lock.unlock();
  for (const Listener& l : listeners_) {
    if (!l.address.vsock && l.address.socket.kind == SocketAddress::Kind::kUnix) {
      ::unlink(l.address.socket.path.c_str());
    }
  }
}

void Agent::Stop() {
  uint64_t one = 1;
  ssize_t ignored = ::write(stop_.get(), &one, sizeof(one));
  (void)ignored;
}

void Agent::ConnectionEnded() {
  std::lock_guard lock(mu_);
  --active_;
  // Under the lock: once active_ is 0 the agent may be destroyed right after we let go.
  all_ended_.notify_all();
}

bool Agent::AcceptPending(Listener& l) {
  for (int i = 0; i < kAcceptsPerWakeup; ++i) {
    std::string peer;
    auto conn = fun::Accept(l.fd.get(), &peer);
    if (!conn.ok()) {
      int err = conn.status().sys_errno();
      if (err == EAGAIN || err == EWOULDBLOCK) return true;
      FUN_LOG(Warning, "accepting on {}: {}", l.bound, conn.status().message());
      return !(err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM);
    }
    if (l.address.vsock) peer = VsockPeer(conn->get());
    int busy_with = 0;
    {
      std::lock_guard lock(mu_);
      if (active_ < options_.max_connections) {
        ++active_;
      } else {
        busy_with = active_;
      }
    }
    if (busy_with > 0) {
      // The reply fits any socket buffer. Whatever part of the request has arrived is read
      // first (without waiting), so the close is a FIN, not a reset that could destroy the
      // reply before the host reads it.
      char drop[4096];
      while (::recv(conn->get(), drop, sizeof(drop), MSG_DONTWAIT) > 0) {
      }
      SendReply(conn->get(), ReplyStatus::kUnavailable,
                fmt::format("the agent is busy: {} connections already", busy_with))
          .IgnoreError();
      FUN_LOG(Warning, "{}: refused: {} connections already", peer, busy_with);
      continue;
    }
    try {
      std::thread([this, fd = std::move(*conn), peer]() mutable {
        const auto start = Steady::now();
        SocketAddress containerd{.kind = SocketAddress::Kind::kUnix,
                                 .path = options_.containerd_socket};
        Context c{options_, token_, system_, containerd, stop_.get(), shares_.load()};
        Outcome o = Serve(c, fd.get());
        if (!o.relayed) LingeringClose(std::move(fd), stop_.get());
        LogOutcome(peer, o, Steady::now() - start);
        ConnectionEnded();
      }).detach();
    } catch (const std::system_error& e) {
      ConnectionEnded();
      FUN_LOG(Warning, "{}: refused: cannot start a thread: {}", peer, e.what());
    }
  }
  return true;
}

Status Agent::Run(int stop_fd) {
  Steady::time_point backoff_until{};
  for (;;) {
    std::vector<pollfd> p;
    const bool backoff = Steady::now() < backoff_until;
    for (const Listener& l : listeners_) p.push_back({backoff ? -1 : l.fd.get(), POLLIN, 0});
    p.push_back({stop_.get(), POLLIN, 0});
    p.push_back({stop_fd, POLLIN, 0});
    int n = ::poll(p.data(), p.size(), backoff ? MillisUntil(backoff_until) : -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, "poll");
    const size_t L = listeners_.size();
    if (p[L].revents != 0) break;
    if (p[L + 1].revents != 0) {
      FUN_LOG(Info, "stop requested: closing every connection");
      Stop();
      break;
    }
    for (size_t i = 0; i < L; ++i) {
      if (p[i].revents != 0 && !AcceptPending(listeners_[i])) {
        backoff_until = Steady::now() + kAcceptBackoff;
      }
    }
  }
  std::unique_lock lock(mu_);
  all_ended_.wait(lock, [this] { return active_ == 0; });
  return OkStatus();
}

// -----------------------------------------------------------------------------------------
// The program.

StatusOr<std::vector<net::GuestShare>> ReadShareTable(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return std::vector<net::GuestShare>{};
    return ErrnoError(errno, "reading " + path);
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto shares = net::DecodeShareTable(text);
  if (!shares.ok()) return shares.status().WithContext(path);
  return shares;
}

int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err, int stop_fd) {
  for (const auto& a : args) {
    if (a == "-h" || a == "--help") {
      out << kUsage;
      return 0;
    }
  }
  auto opts = ParseArgs(args);
  if (!opts.ok()) {
    err << "fun-guestd: " << opts.status().message() << "\n";
    return 2;
  }
  log::Logger& logger = log::Default();
  log::Level level = *log::ParseLevel(opts->log_level);
  logger.SetStderrFormat(log::StderrFormat::kFull, "fun-guestd");
  logger.SetStderrLevel(level);
  if (!opts->log_file.empty()) {
    Status s = logger.OpenFile(opts->log_file, level);
    if (!s.ok()) {
      err << "fun-guestd: " << s.message() << "\n";
      return 1;
    }
  }
  auto token = ReadTokenFile(opts->token_file);
  if (!token.ok()) {
    err << "fun-guestd: " << token.status().message() << "\n";
    return 1;
  }
  LinuxGuestSystem system;
  auto agent = Agent::Create(*opts, *token, system);
  if (!agent.ok()) {
    err << "fun-guestd: " << agent.status().message() << "\n";
    return 1;
  }
  FUN_LOG(Info, "fun-guestd {} ({}): containerd at {}, time sync {}", kVersion, kGitRevision,
          opts->containerd_socket, opts->allow_timesync ? "on" : "off");
  for (const std::string& a : (*agent)->addresses()) {
    out << "listening on " << a << std::endl;
    FUN_LOG(Info, "listening on {}", a);
  }
  // The image registry for the pod sandbox image (see image_server.h), when asked for. A
  // failure to start it is logged, not fatal: the agent matters more.
  std::unique_ptr<ImageServer> images;
  std::thread images_thread;
  if (!opts->image_listen.empty()) {
    auto is = ImageServer::Create({.listen = opts->image_listen, .dir = opts->image_dir});
    if (is.ok()) {
      images = std::move(*is);
      FUN_LOG(Info, "serving the images in {} on {}", opts->image_dir, images->address());
      images_thread = std::thread([&] { images->Run(); });
    } else {
      FUN_LOG(Error, "image registry: {}", is.status().message());
    }
  }
  // The host's shared folders: relayed and mounted in the background (ports and the 9p module
  // may still be on their way). A bad table is logged, not fatal: the agent matters more.
  std::unique_ptr<ShareMounter> shares;
  if (auto table = ReadShareTable(opts->shares_file); !table.ok()) {
    FUN_LOG(Error, "shares: {}", table.status().message());
  } else if (!table->empty()) {
    ShareMounter::Options so;
    so.socket_dir = opts->share_socket_dir;
    so.token = *token;
    if (auto port = ReadShareVsockPort(opts->share_vsock_port_file); !port.ok()) {
      FUN_LOG(Error, "shares: {}", port.status().message());
    } else {
      so.vsock_port = *port;
    }
    so.mount_settings.cache_override = opts->share_cache;
    auto m = ShareMounter::Start(so, std::move(*table));
    if (m.ok()) {
      shares = std::move(*m);
      (*agent)->SetShares(shares.get());
    } else {
      FUN_LOG(Error, "shares: {}", m.status().message());
    }
  }
  Status s = (*agent)->Run(stop_fd);
  if (shares) shares->Stop();
  if (images) {
    images->Stop();
    images_thread.join();
  }
  if (!s.ok()) {
    err << "fun-guestd: " << s.message() << "\n";
    return 1;
  }
  FUN_LOG(Info, "stopped");
  return 0;
}

}  // namespace fun::guestd
