#include "lib/net/port_check.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace fun::net {

std::string FormatHostPort(const HostPort& hp) {
  return hp.ip.find(':') != std::string::npos
             ? fmt::format("[{}]:{}/{}", hp.ip, hp.port, ::fun::ProtocolName(hp.protocol))
             : fmt::format("{}:{}/{}", hp.ip, hp.port, ::fun::ProtocolName(hp.protocol));
}

Status ExplainBindError(int err, const HostPort& hp) {
  const std::string where = FormatHostPort(hp);
  switch (err) {
    case EADDRINUSE:
      return AlreadyExistsError(fmt::format(
          "{} is already in use on this host: stop what uses it or publish another host port "
          "(-p OTHERPORT:{})",
          where, hp.port));
    case EACCES:
    case EPERM: {
#ifdef __linux__
      int start = 1024;
      std::ifstream("/proc/sys/net/ipv4/ip_unprivileged_port_start") >> start;
      return PermissionDeniedError(fmt::format(
          "{}: port {} is a privileged port: run as root or pick a host port >= {} (on Linux "
          "the first unprivileged port is sysctl net.ipv4.ip_unprivileged_port_start, now {})",
          where, hp.port, start, start));
#else
      return PermissionDeniedError(
          fmt::format("{}: port {} is a privileged port: run as root or pick a host port >= 1024",
                      where, hp.port));
#endif
    }
    case EADDRNOTAVAIL:
      return InvalidArgumentError(fmt::format(
          "{}: {} is not an address of this host: use 127.0.0.1, 0.0.0.0 or one of its addresses",
          where, hp.ip));
    case EAFNOSUPPORT:
      return UnavailableError(fmt::format("{}: this host has no IPv6", where));
    default:
      return ErrnoError(err, fmt::format("binding {}", where));
  }
}

StatusOr<UniqueFd> BindHostPort(const HostPort& hp, int backlog) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = AF_INET;
  if (auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_pton(AF_INET6, hp.ip.c_str(), &a6->sin6_addr) == 1) {
    family = AF_INET6;
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(hp.port);
    len = sizeof(sockaddr_in6);
  } else if (auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
             ::inet_pton(AF_INET, hp.ip.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(hp.port);
    len = sizeof(sockaddr_in);
  } else {
    return InvalidArgumentError(fmt::format(
        "\"{:.64}\" is not an IP address: publish on 127.0.0.1, 0.0.0.0, ::1 or ::", hp.ip));
  }
  const int type = hp.protocol == ::fun::Protocol::kUdp ? SOCK_DGRAM : SOCK_STREAM;
  UniqueFd fd(::socket(family, type | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ExplainBindError(errno, hp);
  if (family == AF_INET6) {
    // "::" means IPv6 only, as it does for Docker's proxies; 0.0.0.0 covers IPv4.
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (hp.protocol == ::fun::Protocol::kTcp) {
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return ExplainBindError(errno, hp);
  }
  if (hp.protocol == ::fun::Protocol::kTcp && ::listen(fd.get(), backlog) != 0) {
    return ExplainBindError(errno, hp);
  }
  return fd;
}

}  // namespace fun::net
