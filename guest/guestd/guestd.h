// guestd.h: fun-guestd, the agent inside the VM, as a library (main.cc only wires signals).
//
//   fun-guestd [--listen tcp:0.0.0.0:7070 | unix:PATH | vsock:PORT]... [--token-file PATH]
//              [--containerd-socket PATH] [--shutdown-command PATH] [--no-timesync]
//              [--max-connections N] [--udp-idle-timeout SECONDS] [--log-file PATH]
//              [--log-level LEVEL]
//
// The host (fun-hostd) opens one connection per use, sends one agent::Request (see
// lib/net/agent_protocol.h) and gets one agent::Reply. The agent checks the token against the
// instance secret (read from QEMU's fw_cfg at start: a secret never travels on a command line),
// then, by kind:
//   kPing        Reply kOk with one line of JSON, then close:
//                {"version":"0.1.0","revision":"…","uptime_s":12.5,"containerd":true,
//                 "load":[0.1,0.05,0.0],"time_unix_ns":…,"open_fds":12,"shares":[…],
//                 "data_disk":{"path":"/var/lib/containerd","total_bytes":…,"avail_bytes":…,
//                              "error":""}}
//                (data_disk: statvfs of --data-dir, where containerd keeps images and
//                containers: the VM's data disk)
//   kContainerd  connect to containerd's socket, Reply, then relay bytes both ways (net::Splice)
//   kTcp         connect to the target IP:PORT (5 s timeout), Reply, then relay
//   kUdp         open a UDP socket connect()ed to the target IP:PORT, Reply, then relay
//                datagrams: each frame from the host (agent::DecodeDatagram) goes out as one
//                datagram, each datagram from the target comes back framed. One channel is one
//                UDP session (the host opens one per client address); it ends when the host
//                closes the stream, after --udp-idle-timeout (60 s) with no datagram either
//                way, on stop, or on a malformed frame (a stream that ends inside a frame:
//                that channel only). Bounded: datagrams for a host stream that is full (more
//                than 256 KiB queued) are dropped and counted, as UDP would drop them; a
//                target that is not listening (ICMP port unreachable) is counted, not fatal.
//   kShutdown    Reply kOk, then start the shutdown command detached (it stops containers,
//                syncs and powers off)
//   kTimeSync    step CLOCK_REALTIME by the signed offset in arg (unless --no-timesync), Reply
//                with the step applied; a step that leaves 2000-2070 is refused
//   kLog         stream a container log file under --log-root from an offset; with follow,
//                keep sending as it grows until the host half-closes (then send the rest)
//   kPorts       Reply kOk with the sockets listening in the VM's network namespace (TCP in
//                LISTEN, UDP bound and unconnected, from /proc/net/{tcp,tcp6,udp,udp6}) as
//                lines in the message (net::EncodeListenPorts), then close
// Bytes that arrive right after the request (a host that does not wait for the Reply) go to
// the target before the relay starts. Every connection runs on its own thread (at most
// max_connections at once; more get kUnavailable) and must deliver its request within
// request_deadline. A request that cannot be decoded ends its connection only: without a reply
// for bytes that are not a request at all, with kBadRequest for a request of another protocol
// version or an unknown kind. One log line per connection: peer, kind, result, bytes moved
// (for kUdp: datagrams and bytes each way, drops, ICMP errors).
//
// Example (what main.cc does):
//   FUN_ASSIGN_OR_RETURN(Options o, ParseArgs(args));
//   FUN_ASSIGN_OR_RETURN(agent::Token token, ReadTokenFile(o.token_file));
//   LinuxGuestSystem system;
//   FUN_ASSIGN_OR_RETURN(auto a, Agent::Create(o, token, system));
//   a->Run(sigterm_fd);   // until SIGTERM (or Stop()); returns once every connection ended
//
// Thread-safety: Agent::Run on one thread; Agent::Stop from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "guest/guestd/guest_system.h"
#include "guest/guestd/shares.h"
#include "lib/base/socket.h"
#include "lib/base/status.h"
#include "lib/net/agent_protocol.h"

namespace fun::guestd {

inline constexpr char kDefaultListen[] = "tcp:0.0.0.0:7070";
inline constexpr char kDefaultTokenFile[] = "/sys/firmware/qemu_fw_cfg/by_name/opt/fun/secret/raw";
inline constexpr char kDefaultContainerdSocket[] = "/run/containerd/containerd.sock";
inline constexpr char kDefaultLogRoot[] = "/var/lib/containerd/fun-logs";
inline constexpr char kDefaultDataDir[] = "/var/lib/containerd";
// busybox poweroff: it signals PID 1 (busybox init), which runs `/init --shutdown` (stop the
// agent and containerd, then the containers, unmount the data disk, sync, power off).
inline constexpr char kDefaultShutdownCommand[] = "/usr/sbin/poweroff";

struct Options {
  std::vector<std::string> listen = {kDefaultListen};
  std::string token_file = kDefaultTokenFile;
  std::string containerd_socket = kDefaultContainerdSocket;
  std::string shutdown_command = kDefaultShutdownCommand;
  bool allow_timesync = true;
  int max_connections = 4096;
  // From accept to a complete request; then the connection is closed.
  std::chrono::milliseconds request_deadline{10000};
  // For kTcp targets (and the containerd socket).
  std::chrono::milliseconds connect_timeout{5000};
  // A kUdp session in which no datagram moved either way for this long ends.
  std::chrono::milliseconds udp_idle_timeout{60000};
  // kPorts reads tcp, tcp6, udp and udp6 here (tests point it at fixtures).
  std::string proc_net_dir = "/proc/net";
  // kLog serves files under this directory only (where the host's engine tells containerd to
  // write container logs: on the data disk, so they survive a VM restart).
  std::string log_root = kDefaultLogRoot;
  // kPing reports the space left here (the data disk's mount point in the VM).
  std::string data_dir = kDefaultDataDir;
  // A read-only image registry (image_server.h) for the layouts in image_dir; "" : none.
  std::string image_listen;
  std::string image_dir = "/usr/share/fun/images";
  // The host's shared folders (shares.h): the table, where the relays' sockets live, and the
  // v9fs cache mode.
  std::string shares_file = kDefaultShareTableFile;
  std::string share_socket_dir = "/run/fun/p9";
  // The vsock port of the host's 9P server (decimal); a missing file: the serial ports.
  std::string share_vsock_port_file = kDefaultShareVsockPortFile;
  std::string share_cache;  // "": each share's own (the table's)
  std::string log_file;
  std::string log_level = "info";
};

// Parses the flags (see the top). InvalidArgument, one line, for a bad flag or value.
StatusOr<Options> ParseArgs(const std::vector<std::string>& args);

// Reads the instance secret: the file must hold exactly agent::kTokenSize bytes.
StatusOr<agent::Token> ReadTokenFile(const std::string& path);

// A --listen value: "tcp:HOST:PORT", "tcp:[V6]:PORT", "unix:PATH" or "vsock:PORT".
struct ListenAddress {
  bool vsock = false;
  SocketAddress socket;     // when !vsock
  uint32_t vsock_port = 0;  // when vsock
  std::string ToString() const;
};
StatusOr<ListenAddress> ParseListenAddress(std::string_view spec);

class Agent {
 public:
  // Binds every address in options.listen (so addresses() is known before Run). `system`
  // must outlive the agent.
  static StatusOr<std::unique_ptr<Agent>> Create(const Options& options, const agent::Token& token,
                                                 GuestSystem& system);
  // Stops, then waits for every connection to end.
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // The bound addresses, in options.listen's order ("tcp:127.0.0.1:41234" for port 0).
  const std::vector<std::string>& addresses() const { return addresses_; }

  // Accepts and serves until Stop() or until `stop_fd` (a signalfd for SIGTERM) is readable,
  // then ends every live connection (relays included) and returns once they have ended.
  Status Run(int stop_fd = -1);
  // Async-signal-safe.
  void Stop();
  // Shares whose state kPing reports; set before Run (or while it runs). Not owned.
  void SetShares(const ShareMounter* shares) { shares_.store(shares); }

 private:
  struct Listener {
    UniqueFd fd;
    ListenAddress address;
    std::string bound;
  };
  Agent(const Options& options, const agent::Token& token, GuestSystem& system, UniqueFd stop);

  // Accepts what is pending on `l`; false when accepting failed for want of resources (the
  // caller backs off for a moment instead of spinning on a listener that stays readable).
  bool AcceptPending(Listener& l);
  void ConnectionEnded();

  const Options options_;
  const agent::Token token_;
  GuestSystem& system_;
  UniqueFd stop_;  // eventfd: readable once Stop() was called; never read
  std::atomic<const ShareMounter*> shares_{nullptr};
  std::vector<Listener> listeners_;
  std::vector<std::string> addresses_;

  std::mutex mu_;
  std::condition_variable all_ended_;
  int active_ = 0;  // guarded by mu_
};

// The whole program: parses args, reads the token, serves until `stop_fd` is readable (main
// passes a signalfd for SIGTERM and SIGINT). Prints "listening on ADDRESS" per listener on
// `out`. Exit codes: 0 after a stop, 1 on a failure (bad token file, cannot listen), 2 usage.
int Main(const std::vector<std::string>& args, std::ostream& out, std::ostream& err, int stop_fd);

// The host's vsock port for the shares (Options::share_vsock_port_file): 0 when the file does
// not exist (the host uses serial ports), InvalidArgument when it holds no port number.
StatusOr<uint32_t> ReadShareVsockPort(const std::string& path);

}  // namespace fun::guestd
