// shares.h: the guest end of the instance's shared folders.
//
// With HyperKit a share is a virtio-9p device whose mount tag is the share's tag: hyperkit
// relays its 9P stream to fun-hostd's server itself, so fun-guestd mounts it with trans=virtio
// (aname=<tag>) and relays nothing (unverified: no Mac here; the same code mounts QEMU's own
// virtio-9p in the harness). When a VM has both, the virtio-9p device wins.
//
// With QEMU and fun-hostd's own vsock device (lib/vsock/device.h; the fw_cfg file
// opt/fun/p9-vsock names its port), each share is a vsock stream to the host: fun-guestd
// connects, proves it knows the instance secret (an agent Request of kind kP9 naming the share;
// a container, which cannot read the secret, is turned away), and mounts v9fs with trans=fd on
// the stream. The kernel keeps the stream: no relay process, and a restart of fun-guestd leaves
// the mount alone. A virtio-9p device carrying the share's tag still wins.
//
// Otherwise, with QEMU, fun-hostd serves each share over 9P on a virtio-serial port named
// "fun.p9.<tag>" and lists the shares in the fw_cfg file opt/fun/shares (lib/net/share_table.h).
// The kernel's v9fs cannot use a virtio-serial port itself (trans=fd on the port fails: "kernel
// write not supported"), so fun-guestd relays: for each share it opens the port (/dev/vportNpM,
// found by name under /sys/class/virtio-ports), listens on <socket_dir>/<tag>.sock (a directory of
// the VM's own mount namespace, 0700: containers never see it, and no TCP port exists for them to
// dial) and relays each connection to the port, one at a time; then it mounts the share with
// trans=unix on that socket at the share's path in the VM.
//
// The relay of each share is a process of its own (`fun-guestd --p9-relay`, named
// fun-p9-relay, in a session of its own), so that a crash or restart of fun-guestd does not cut
// the 9P connection of the mount, and containers holding a bind mount of it keep working. A
// restarted fun-guestd finds the relay by its pid file (<socket_dir>/<tag>.relay) and adopts it
// when the share is still mounted; when a relay dies, the share's mount (its socket gone) is
// detached, a new relay starts and the share is mounted again. A relay serves one connection at
// a time: it ends when its connection ends (an unmount); the port stays open for the next one,
// and bytes a previous connection left in the port are dropped before a new one starts. The
// relay writes its counters to <socket_dir>/<tag>.stats after each connection. The 9P session
// state lives in fun-hostd: if the host end goes away, the mount fails with EIO until the VM
// restarts (hostd takes the VM down with it).
//
//   ShareMounter::Options o;               // defaults: the real VM's paths
//   FUN_ASSIGN_OR_RETURN(auto shares, ShareMounter::Start(o, table));
//   ... shares->States() ...               // for kPing (the doctor)
//   shares->Stop();                        // the relays and mounts stay
//
// Thread-safety: States and Stop from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/net/agent_protocol.h"
#include "lib/net/share_table.h"

namespace fun::guestd {

inline constexpr char kDefaultShareTableFile[] =
    "/sys/firmware/qemu_fw_cfg/by_name/opt/fun/shares/raw";
// The host port of fun-hostd's 9P server on the VM's vsock device, when QEMU has one served by
// fun-hostd (lib/vsock/device.h): its decimal number. Missing: the virtio-serial ports.
inline constexpr char kDefaultShareVsockPortFile[] =
    "/sys/firmware/qemu_fw_cfg/by_name/opt/fun/p9-vsock/raw";

// Where a virtio-9p device with mount tag `tag` stands among the virtio devices in `dir`.
enum class Virtio9pTag {
  kFound,    // a 9P device bound to 9pnet_virtio has this tag
  kUnbound,  // not found, but some 9P device has no driver yet (9pnet_virtio still loading)
  kAbsent,   // no 9P device has it
};
Virtio9pTag FindVirtio9pTag(const std::string& dir, const std::string& tag);

class ShareMounter {
 public:
  struct Options {
    std::string socket_dir = "/run/fun/p9";
    std::string ports_dir = "/sys/class/virtio-ports";  // <port>/name holds the port's name
    std::string dev_dir = "/dev";                       // where /dev/<port> is
    // Virtio devices: <dev>/device holds the virtio device id (9P: 0x0009), <dev>/mount_tag
    // the 9P tag once the 9pnet_virtio driver has bound it.
    std::string virtio_devices_dir = "/sys/bus/virtio/devices";
    net::NinePMountSettings mount_settings;
    // false (tests): relay only; mounting needs root and the 9p module.
    bool mount = true;
    // How long a share waits for its port to appear and for the 9p file system to be known
    // (the modules load in the background at boot).
    std::chrono::milliseconds settle_timeout{30000};
    // The fun-guestd binary the relays run (`--p9-relay`); "": this process's own executable.
    std::string relay_binary;
    // Non-zero: fun-hostd serves the shares on this vsock port of the host (CID 2). Each share
    // is then a stream of its own, opened with an agent Request of kind kP9 carrying `token`
    // and the share's tag, and mounted with trans=fd on it: no relay, no serial port.
    uint32_t vsock_port = 0;
    agent::Token token{};
    uint32_t vsock_cid = 2;  // VMADDR_CID_HOST; tests use 1 (local loopback)
  };

  struct State {
    net::GuestShare share;
    std::string status;    // "waiting", "mounted", "relaying" (mount off), "failed"
    std::string error;     // when failed
    int relay_pid = 0;     // the share's relay process (0: none yet)
    bool adopted = false;  // the relay was started by an earlier fun-guestd
    // The relay's counters (from its stats file): connections ended, bytes of those.
    uint64_t connections = 0;
    uint64_t bytes_to_host = 0, bytes_from_host = 0;
    // Filled in by Probe only: a statfs of the mount point came back in time and succeeded.
    bool answering = false;
    std::string probe_error;
  };

  // Starts a thread per share; returns at once (ports and mounts settle in the background).
  static StatusOr<std::unique_ptr<ShareMounter>> Start(const Options& options,
                                                       std::vector<net::GuestShare> shares);
  ~ShareMounter();  // Stop + join
  ShareMounter(const ShareMounter&) = delete;
  ShareMounter& operator=(const ShareMounter&) = delete;

  std::vector<State> States() const;
  // States, plus whether each mounted share answers: a statfs(2) of its mount point, waited
  // for at most `timeout`. A statfs that does not return (a hung server) stays on its own
  // detached thread; while it is stuck, later probes of that share report it instead of
  // starting another.
  std::vector<State> Probe(std::chrono::milliseconds timeout) const;
  void Stop();

  // The socket a share's relay listens on, its pid file and its counters.
  std::string SocketPath(const std::string& tag) const;
  std::string RelayPidPath(const std::string& tag) const;
  std::string RelayStatsPath(const std::string& tag) const;

 private:
  ShareMounter(const Options& options, UniqueFd stop);
  void RunShare(size_t index);
  // Mounts a share whose virtio-9p device was found (no relay).
  void MountVirtio9p(size_t index, std::chrono::steady_clock::time_point deadline);
  // Mounts a share over a vsock stream to fun-hostd (options_.vsock_port; no relay).
  void MountVsock(size_t index, std::chrono::steady_clock::time_point deadline);
  // One relay's life: adopts a live one or starts one (and mounts); returns when it died
  // (true) or on Stop (false).
  bool RunRelay(size_t index, const std::string& port_name,
                std::chrono::steady_clock::time_point deadline);
  void Set(size_t index, std::string status, std::string error = "");
  bool WaitStop(std::chrono::milliseconds d);  // true once stopped

  const Options options_;
  UniqueFd stop_;  // eventfd, readable once Stop() ran
  mutable std::mutex mu_;
  std::vector<State> states_;
  std::vector<std::thread> threads_;
  struct ProbeSlot;
  mutable std::vector<std::shared_ptr<ProbeSlot>> probes_;  // one per share; guarded by mu_
};

// The relay process: `fun-guestd --p9-relay TAG STATS_FILE` with the share's port on fd
// kRelayPortFd and its listening socket on kRelayListenFd (main.cc dispatches here). Relays
// one connection at a time until `stop_fd` (SIGTERM) is readable or accepting fails.
inline constexpr int kRelayPortFd = 3;
inline constexpr int kRelayListenFd = 4;
inline constexpr char kRelayFlag[] = "--p9-relay";
int RunRelayProcess(const std::vector<std::string>& args, int stop_fd);

// The /dev name of the virtio-serial port called `name` ("vport2p1"), from
// <ports_dir>/*/name; NotFound when no port has that name.
StatusOr<std::string> FindVirtioPort(const std::string& ports_dir, const std::string& name);

}  // namespace fun::guestd
