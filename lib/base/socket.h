// socket.h: stream sockets (TCP over IPv4/IPv6, unix) with errors as Status, for every room
// that listens or dials: the 9P server, port forwards, the agent channel.
//
//   FUN_ASSIGN_OR_RETURN(auto addr, fun::ParseSocketAddress("tcp:127.0.0.1:0"));
//   FUN_ASSIGN_OR_RETURN(fun::UniqueFd lfd, fun::Listen(addr));
//   std::string bound = fun::LocalAddress(lfd.get()).value_or("?");  // "tcp:127.0.0.1:41234"
//   FUN_ASSIGN_OR_RETURN(fun::UniqueFd c, fun::Accept(lfd.get()));
//
// Addresses are written "tcp:HOST:PORT" (IPv6 as "tcp:[::1]:PORT") or "unix:PATH". UDP
// sockets (BindUdp) take the tcp: form's HOST:PORT: it names an IP address and a port.
// Thread-safety: functions are safe to call concurrently; a UniqueFd is owned by one thread.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"

namespace fun {

struct SocketAddress {
  enum class Kind { kTcp, kUnix } kind = Kind::kTcp;
  std::string host;  // tcp: an IPv4 or IPv6 literal, or "localhost"
  uint16_t port = 0;
  std::string path;  // unix
  std::string ToString() const;
};

// Parses "tcp:HOST:PORT", "tcp:[V6]:PORT" or "unix:PATH". Errors say what form is expected.
StatusOr<SocketAddress> ParseSocketAddress(std::string_view spec);

// A SocketAddress as the sockaddr that bind/connect take.
struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
};
StatusOr<SockAddr> ToSockAddr(const SocketAddress& addr);

// Binds and listens (SO_REUSEADDR for TCP). For unix sockets, a stale socket file left by a
// dead server is replaced, but a live one (something accepts on it) is AddressInUse-style
// AlreadyExists; the socket file gets `unix_mode` (default 0600: only this user).
StatusOr<UniqueFd> Listen(const SocketAddress& addr, int backlog = 128, unsigned unix_mode = 0600);
// The bound address of a listening or connected socket, in ParseSocketAddress form.
StatusOr<std::string> LocalAddress(int fd);
// Accepts one connection (retries EINTR). The new fd is close-on-exec.
StatusOr<UniqueFd> Accept(int listen_fd, std::string* peer = nullptr);
StatusOr<UniqueFd> Connect(const SocketAddress& addr);

// A UDP socket bound to addr's IP address and port (addr.kind must be kTcp: "tcp:[::1]:5353").
// Close-on-exec, blocking. Bind errors keep their errno (EADDRINUSE, EACCES) for the caller.
StatusOr<UniqueFd> BindUdp(const SocketAddress& addr);
// An AF_INET / AF_INET6 sockaddr as "127.0.0.1:8080" or "[::1]:8080" (no kind prefix), for
// log lines about UDP peers; "unknown" for other families.
std::string FormatIpPort(const sockaddr_storage& ss);

// True for loopback addresses: 127.0.0.0/8, ::1, and 127.0.0.0/8 mapped into IPv6.
bool IsLoopback(const sockaddr_storage& ss);

// A TCP socket that talks over loopback (`addr`: its peer, or a listener's bound address) stops
// pacing: a socket using BBR is switched to cubic (reno where cubic is not allowed); any other
// congestion control is left as the host chose it, and so is every non-loopback socket. BBR
// paces each socket from a timer (without the fq qdisc); between two processes on one machine
// there is no link to pace for, and the pacing cost fun's two-relay port forward a third of its
// throughput on a host whose default is bbr (perf/port_forward.sh, 11 -> 16 Gbit/s). Best
// effort: a refusal leaves the socket as it was. Listen, Connect and Accept call it; code that
// makes its own TCP sockets calls it before connect() or listen(), so BBR never starts.
// Linux only (macOS has no TCP_CONGESTION: there it does nothing).
void UnpaceIfLoopback(int fd, const sockaddr_storage& addr);

// Writes all of `data` (retries short writes and EINTR; no SIGPIPE).
Status WriteAll(int fd, std::string_view data);
// Reads exactly n bytes into buf. A clean EOF before the first byte is OutOfRange "EOF"; an EOF
// part-way is DataLoss.
Status ReadExactly(int fd, char* buf, size_t n);

}  // namespace fun
