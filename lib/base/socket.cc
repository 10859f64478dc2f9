#include "lib/base/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "lib/base/flags.h"

namespace fun {

std::string SocketAddress::ToString() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  if (host.find(':') != std::string::npos) return fmt::format("tcp:[{}]:{}", host, port);
  return fmt::format("tcp:{}:{}", host, port);
}

StatusOr<SocketAddress> ParseSocketAddress(std::string_view spec) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format(
        "bad address \"{}\": {} (use tcp:HOST:PORT, tcp:[IPV6]:PORT or unix:PATH)", spec, why));
  };
  SocketAddress a;
  if (spec.rfind("unix:", 0) == 0) {
    a.kind = SocketAddress::Kind::kUnix;
    a.path = std::string(spec.substr(5));
    if (a.path.empty()) return bad("empty path");
    if (a.path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      return bad(fmt::format("the path is {} bytes, unix sockets allow {}", a.path.size(),
                             sizeof(sockaddr_un{}.sun_path) - 1));
    }
    return a;
  }
  if (spec.rfind("tcp:", 0) != 0) return bad("unknown kind");
  std::string_view rest = spec.substr(4);
  std::string_view host, port;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return bad("an IPv6 host must be written [ADDR]:PORT");
    }
    host = rest.substr(1, close - 1);
    port = rest.substr(close + 2);
  } else {
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("missing :PORT");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad("write IPv6 hosts in brackets");
  }
  if (host.empty()) return bad("empty host");
  auto p = ParseInt(port, "port");
  if (!p.ok() || *p < 0 || *p > 65535) return bad("the port must be a number from 0 to 65535");
  a.host = host == "localhost" ? "127.0.0.1" : std::string(host);
  a.port = static_cast<uint16_t>(*p);
  in6_addr v6{};
  in_addr v4{};
  if (inet_pton(AF_INET, a.host.c_str(), &v4) != 1 &&
      inet_pton(AF_INET6, a.host.c_str(), &v6) != 1) {
    return bad("the host must be an IP address or localhost");
  }
  return a;
}

StatusOr<SockAddr> ToSockAddr(const SocketAddress& a) {
  SockAddr s;
  if (a.kind == SocketAddress::Kind::kUnix) {
    auto* un = reinterpret_cast<sockaddr_un*>(&s.ss);
    un->sun_family = AF_UNIX;
    if (a.path.size() >= sizeof(un->sun_path)) {
      return InvalidArgumentError("unix socket path too long: " + a.path);
    }
    std::memcpy(un->sun_path, a.path.c_str(), a.path.size() + 1);
    s.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.path.size() + 1);
    return s;
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&s.ss);
  if (inet_pton(AF_INET, a.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(a.port);
    s.len = sizeof(sockaddr_in);
    return s;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&s.ss);
  if (inet_pton(AF_INET6, a.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(a.port);
    s.len = sizeof(sockaddr_in6);
    return s;
  }
  return InvalidArgumentError("not an IP address: " + a.host);
}

namespace {

std::string FromSockAddr(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) return "tcp:" + FormatIpPort(ss);
  if (ss.ss_family == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(&ss);
    return std::string("unix:") + un->sun_path;
  }
  return "unknown";
}

}  // namespace

std::string FormatIpPort(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof(buf));
    return fmt::format("{}:{}", buf, ntohs(v4->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof(buf));
    return fmt::format("[{}]:{}", buf, ntohs(v6->sin6_port));
  }
  return "unknown";
}

bool IsLoopback(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  }
  if (ss.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
  }
  return false;
}

void UnpaceIfLoopback(int fd, const sockaddr_storage& addr) {
#ifndef TCP_CONGESTION  // macOS: no per-socket congestion control to choose
  (void)fd;
  (void)addr;
#else
  if (!IsLoopback(addr)) return;
  char name[16] = {};  // TCP_CA_NAME_MAX
  socklen_t len = sizeof(name);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &len) != 0) return;
  if (std::string_view(name, strnlen(name, sizeof(name))).rfind("bbr", 0) != 0) return;
  for (const char* unpaced : {"cubic", "reno"}) {
    if (::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, unpaced,
                     static_cast<socklen_t>(std::strlen(unpaced))) == 0) {
      return;
    }
  }
#endif
}

StatusOr<UniqueFd> Listen(const SocketAddress& addr, int backlog, unsigned unix_mode) {
  FUN_ASSIGN_OR_RETURN(SockAddr sa, ToSockAddr(addr));
  UniqueFd fd(::socket(sa.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoError(errno, "socket for " + addr.ToString());
  if (addr.kind == SocketAddress::Kind::kTcp) {
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    UnpaceIfLoopback(fd.get(), sa.ss);  // the connections it accepts inherit this
  } else {
    // A socket file left by a dead server is replaced; a live one is not stolen.
    struct stat st {};
    if (::lstat(addr.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return AlreadyExistsError(addr.path + " exists and is not a socket: move it away");
      }
      if (Connect(addr).ok()) {
        return AlreadyExistsError(addr.path + " is in use by another server");
      }
      ::unlink(addr.path.c_str());
    }
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) != 0) {
    int err = errno;
    std::string hint = err == EADDRINUSE ? " (another program listens there: pick another port)"
                       : err == EACCES   ? " (ports below 1024 need privileges)"
                                         : "";
    return ErrnoError(err, "binding " + addr.ToString() + hint);
  }
  if (addr.kind == SocketAddress::Kind::kUnix &&
      ::chmod(addr.path.c_str(), static_cast<mode_t>(unix_mode)) != 0) {
    return ErrnoError(errno, "chmod " + addr.path);
  }
  if (::listen(fd.get(), backlog) != 0) return ErrnoError(errno, "listen on " + addr.ToString());
  return fd;
}

StatusOr<std::string> LocalAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return ErrnoError(errno, "getsockname");
  }
  return FromSockAddr(ss);
}

StatusOr<UniqueFd> Accept(int listen_fd, std::string* peer) {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd >= 0) {
      if (peer != nullptr) *peer = FromSockAddr(ss);
      if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        UnpaceIfLoopback(fd, ss);  // a loopback client of a wildcard listener
      }
      return UniqueFd(fd);
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return ErrnoError(errno, "accept");
  }
}

StatusOr<UniqueFd> Connect(const SocketAddress& addr) {
  FUN_ASSIGN_OR_RETURN(SockAddr sa, ToSockAddr(addr));
  UniqueFd fd(::socket(sa.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoError(errno, "socket for " + addr.ToString());
  UnpaceIfLoopback(fd.get(), sa.ss);
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return ErrnoError(errno, "connecting to " + addr.ToString());
  if (addr.kind == SocketAddress::Kind::kTcp) {
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

StatusOr<UniqueFd> BindUdp(const SocketAddress& addr) {
  if (addr.kind != SocketAddress::Kind::kTcp) {
    return InvalidArgumentError("a UDP socket needs an IP address, not " + addr.ToString());
  }
  FUN_ASSIGN_OR_RETURN(SockAddr sa, ToSockAddr(addr));
  UniqueFd fd(::socket(sa.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  const std::string name = FormatIpPort(sa.ss) + "/udp";
  if (!fd.valid()) return ErrnoError(errno, "socket for " + name);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) != 0) {
    return ErrnoError(errno, "binding " + name);
  }
  return fd;
}

Status WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return OkStatus();
}

Status ReadExactly(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "read");
    }
    if (r == 0) {
      if (got == 0) return OutOfRangeError("EOF");
      return DataLossError(fmt::format("EOF after {} of {} bytes", got, n));
    }
    got += static_cast<size_t>(r);
  }
  return OkStatus();
}

}  // namespace fun
