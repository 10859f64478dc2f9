// port_forward.h: the host end of published ports. A forward listens on a host address and
// carries each TCP connection, or each UDP client's datagrams, to a target inside the VM over
// agent channels (see agent_protocol.h: kTcp, kUdp) that a ChannelDialer opens.
//
// fun-hostd runs one forward per published port (`fun run -p 8080:80` -> target
// "10.88.0.5:80"), with a dialer that opens agent channels to fun-guestd:
//
//   agent::AgentEndpoint ep = ...;
//   net::ChannelDialer dial = [ep](agent::Kind kind, const std::string& target) {
//     return agent::DialAgent(ep, {.kind = kind, .target = target}, 5s);
//   };
//   FUN_ASSIGN_OR_RETURN(auto web, net::TcpForward::Listen(
//       {.host_ip = "127.0.0.1", .host_port = 8080, .target = "10.88.0.5:80"}, dial));
//   FUN_ASSIGN_OR_RETURN(auto dns, net::UdpForward::Listen(
//       {.host_ip = "127.0.0.1", .host_port = 5353, .target = "10.88.0.5:53"}, dial));
//   FUN_LOG(Info, "{} open connections", web->counters().active);
//   web->Stop();  // or destroy it: the listener closes and every relay ends
//
// Listen binds before it returns, so a port in use or a privileged port is the caller's error,
// in one line that says what to do: "127.0.0.1:8080 is already in use by another program: pick
// another host port (-p HOSTPORT:...)".
//
// TcpForward: a thread per connection (AcceptLoop, with a small stack: options.thread_stack_size),
// which dials a kTcp channel and relays with net::Splice (half-close, backpressure with
// options.buffer_size per direction, idle timeout). A failed dial closes that client's
// connection only. Thousands of connections at once are fine; past options.max_connections
// new ones are closed at once. Accept errors (out of fds) pause accepting, never end it.
//
// UdpForward: one event-loop thread (poll) for the socket and every session. A session per
// client address: its first datagram dials a kUdp channel (on a thread of its own, so a slow
// dial stalls no one); datagrams travel framed (agent::EncodeDatagram) both ways. Writes to a
// channel never block: each session queues at most options.udp_queue_bytes and drops what does
// not fit (UDP may lose datagrams; counters().datagrams_dropped says how many). A session ends
// on its channel's EOF or error, on a frame no UDP datagram could fill (a broken guest), or
// after options.udp_idle_timeout without a datagram; past options.max_udp_sessions the
// session idle the longest is evicted. A failed dial drops the datagram and the client's next
// datagrams until a backoff (doubling, options.dial_backoff_*) has passed; then one dials again.
// Replies leave from the bound socket: with a wildcard host_ip on a host with several
// addresses, their source is the kernel's choice (no IP_PKTINFO), as with most UDP relays.
//
// Dial failures are logged at most once per options.log_interval per forward (with how many
// were left unsaid); every connection's end is logged at Debug.
//
// Thread-safety: Listen, Stop, counters() and the destructor may be called from any thread;
// Stop is idempotent. The dialer is called from many threads at once and must be thread-safe.
// Stop waits for dials in flight: a dialer bounds its own time (DialAgent's timeout).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "lib/base/accept_loop.h"
#include "lib/base/instance_config.h"
#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/net/agent_protocol.h"
#include "lib/net/splice.h"

namespace fun::net {

// Opens a channel of `kind` (kTcp, kUdp) to `target` ("IP:PORT" inside the VM): a connected
// stream after the agent's handshake.
using ChannelDialer =
    std::function<StatusOr<UniqueFd>(agent::Kind kind, const std::string& target)>;

struct ForwardSpec {
  std::string host_ip = "127.0.0.1";  // an IPv4 or IPv6 literal: "0.0.0.0", "::1"
  uint16_t host_port = 0;             // 0: any free port (see port())
  std::string target;                 // "IP:PORT" or "[IPv6]:PORT" inside the VM
};

struct ForwardOptions {
  // TCP: the most bytes each direction of a relay holds at once (Splice's buffer_size: rings
  // start at 64 KiB and grow while a bulk transfer fills them).
  size_t buffer_size = 1024 * 1024;
  SpliceMethod splice_method = SpliceMethod::kAuto;
  // TCP: a relay in which no byte moved for this long ends; 0: never.
  std::chrono::milliseconds tcp_idle_timeout{0};
  // TCP: the most connections relayed at once; more are closed as soon as they arrive.
  int max_connections = 4096;
  // TCP: the listen backlog (the kernel caps it at net.core.somaxconn) and the stack of each
  // connection's thread (Splice and a dial need a few KiB).
  int backlog = 1024;
  size_t thread_stack_size = 256 * 1024;
  // UDP: a session without a datagram either way for this long ends.
  std::chrono::milliseconds udp_idle_timeout{60000};
  // UDP: the most sessions at once; one more evicts the session idle the longest.
  size_t max_udp_sessions = 1024;
  // UDP: framed bytes a session holds for its channel (while dialing, or while the channel
  // is slow); a datagram that does not fit is dropped.
  size_t udp_queue_bytes = 256 * 1024;
  // UDP: after a failed dial, a client's datagrams are dropped for this long (doubling on each
  // failure in a row, up to the max); the first one after that dials again.
  std::chrono::milliseconds dial_backoff_initial{100};
  std::chrono::milliseconds dial_backoff_max{5000};
  // At most one log line about failed dials (or refused connections) per interval.
  std::chrono::milliseconds log_interval{10000};
};

// A snapshot; every count is since Listen.
struct ForwardCounters {
  uint64_t active = 0;           // TCP: connections being relayed (or dialing); UDP: sessions
  uint64_t accepted = 0;         // TCP: connections accepted; UDP: sessions opened
  uint64_t dial_failures = 0;    // channels the dialer could not open
  uint64_t refused = 0;          // TCP: closed on arrival, over max_connections
  uint64_t evicted = 0;          // UDP: sessions ended to make room for a new client
  uint64_t bytes_to_target = 0;  // client -> target (UDP: payload bytes). TCP: once a
  uint64_t bytes_to_client = 0;  //   connection ends (Splice reports then)
  uint64_t datagrams_to_target = 0;
  uint64_t datagrams_to_client = 0;
  uint64_t datagrams_dropped = 0;  // UDP: queue full, no channel (dialing failed), send failed
};

class TcpForward {
 public:
  // Binds spec.host_ip:spec.host_port now and starts accepting.
  static StatusOr<std::unique_ptr<TcpForward>> Listen(ForwardSpec spec, ChannelDialer dialer,
                                                      ForwardOptions options = {});
  ~TcpForward();
  TcpForward(const TcpForward&) = delete;
  TcpForward& operator=(const TcpForward&) = delete;

  // Closes the listener and ends every relay (their connections close); returns once every
  // connection thread has ended.
  void Stop();

  // The bound address: "127.0.0.1:8080", "[::1]:8080".
  const std::string& address() const { return address_; }
  uint16_t port() const { return port_; }
  const ForwardSpec& spec() const { return spec_; }
  ForwardCounters counters() const;

 private:
  struct Counters;
  TcpForward(ForwardSpec spec, ChannelDialer dialer, ForwardOptions options);
  void Serve(UniqueFd client, const std::string& peer);

  const ForwardSpec spec_;
  const ChannelDialer dialer_;
  const ForwardOptions options_;
  std::string address_;
  uint16_t port_ = 0;
  UniqueFd stop_read_, stop_write_;  // a pipe: readable once Stop() ran (Splice's stop_fd)
  std::unique_ptr<Counters> counters_;
  std::mutex stop_mu_;  // serializes Stop
  std::unique_ptr<AcceptLoop> loop_;
  std::thread loop_thread_;
};

class UdpForward {
 public:
  static StatusOr<std::unique_ptr<UdpForward>> Listen(ForwardSpec spec, ChannelDialer dialer,
                                                      ForwardOptions options = {});
  ~UdpForward();
  UdpForward(const UdpForward&) = delete;
  UdpForward& operator=(const UdpForward&) = delete;

  // Closes the socket and every session's channel; returns once the loop and any dial in
  // flight have ended.
  void Stop();

  // The bound address: "127.0.0.1:5353", "[::1]:5353".
  const std::string& address() const { return address_; }
  uint16_t port() const { return port_; }
  const ForwardSpec& spec() const { return spec_; }
  ForwardCounters counters() const;

 private:
  class Loop;
  UdpForward(ForwardSpec spec, std::unique_ptr<Loop> loop);

  const ForwardSpec spec_;
  std::string address_;
  uint16_t port_ = 0;
  std::mutex stop_mu_;
  std::unique_ptr<Loop> loop_;
  std::thread loop_thread_;
};

// A command-line forward: "[HOSTIP:]HOSTPORT:TARGETIP:TARGETPORT[/tcp|/udp]", IPv6 addresses
// in brackets ("[::1]:8080:[fd00::5]:80"). The host address defaults to 127.0.0.1.
struct ForwardFlag {
  ForwardSpec spec;
  Protocol protocol = Protocol::kTcp;
};
StatusOr<ForwardFlag> ParseForwardFlag(std::string_view flag);
// "127.0.0.1:8080 -> 10.88.0.5:80/tcp".
std::string FormatForwardFlag(const ForwardFlag& f);

}  // namespace fun::net
