// hostd.h: fun-hostd, the one long-lived host process of an instance.
//
// It starts QEMU as its child and supervises it; writes hostd.pid and vm.pid (with start
// times); serves <instance>/containerd.sock (0600), relaying each connection through the agent
// channel to the guest's containerd; watches the guest agent until containerd answers (phase
// "running" in state.json) and keeps the guest clock in step; and on a stop request shuts the
// guest down in escalating steps: agent shutdown, ACPI power button (QMP), SIGTERM, SIGKILL.
// Once containerd is ready it publishes host ports (PortPublisher): the config's `ports`, the -p
// ports of running containers (read over CRI), and what listens in the VM (auto_forward); every
// publish_interval, and at once when a client connects to <instance>/hostd.sock (`fun run -p`
// does, and reads the table back). The table is also in <instance>/ports.json.
// The instance's shares (config `shares`) are served by lib/p9 on <instance>/p9.sock, which
// QEMU connects one virtio-serial port per share to (fun-guestd relays each to the kernel's
// v9fs, guest/guestd/shares.h); files are created as the user running fun-hostd. QEMU gets
// SIGTERM if fun-hostd dies (PR_SET_PDEATHSIG): a VM whose shares' server is gone would hang
// on every access to them, so, as HyperKit does, the VM goes down with it.
// When the VM ends, for whatever reason, it records why (state.json last_exit), removes its
// sockets and pid files, and returns.
//
//   HostdOptions o{.instance = "default", .paths = *paths, .image_dir = dir};
//   FUN_ASSIGN_OR_RETURN(auto hostd, Hostd::Create(o));
//   std::thread sig([&] { WaitForSignal(); hostd->RequestStop(); });
//   Status s = hostd->Run();   // blocks until the VM is gone
//
// One hostd per instance: a second one on the same instance fails at once (flock on
// <instance>/hostd.lock), which also makes concurrent `fun-vmctl start`s start one VM.
// Thread-safety: Run on one thread; RequestStop from any thread (a signal-waiting thread).
//
// Tests (hostd_test.cc) run it without a VM through the seams in HostdOptions: `runner` (a
// FakeProcessRunner stands in for QEMU), `agent_port` (where a stand-in agent listens),
// `clock`, and short `stop_timeout`/`kill_grace`; a fake QMP server listens on
// <instance>/qmp.sock, the path Hostd always uses.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/accept_loop.h"
#include "lib/base/clock.h"
#include "lib/base/instance_config.h"
#include "lib/base/paths.h"
#include "lib/base/process.h"
#include "lib/base/status.h"
#include "lib/base/unique_fd.h"
#include "lib/net/agent_client.h"
#include "lib/net/agent_protocol.h"
#include "lib/p9/listener.h"
#include "lib/p9/server.h"
#include "lib/vm/accel.h"
#include "lib/vm/image.h"
#include "lib/vm/instance_state.h"
#include "lib/vm/port_publisher.h"

namespace fun::cri {
class Engine;
}

namespace fun::vsock {
class VsockDevice;
}

namespace fun::vm {

// fun-hostd's exit status when another fun-hostd already runs the instance (its lock is held):
// a concurrent `fun-vmctl start` that spawned this one waits for the other instead of failing.
inline constexpr int kHostdExitAlreadyRunning = 3;

struct HostdOptions {
  std::string instance = "default";
  Paths paths;
  // Holds fun-kernel, fun-initrd.img and fun-cmdline (LinuxKit's kernel+initrd layout).
  std::string image_dir;
  std::string qemu_binary = "qemu-system-x86_64";
  // For config backend "hyperkit" (macOS on Intel): the hyperkit binary. That backend is built
  // to HyperKit's documented contract (lib/vm/hyperkit_command.h) and tested here with a fake
  // hyperkit; it has never run on a Mac.
  std::string hyperkit_binary = "hyperkit";
  // What the accelerator choice sees of the host; unset: probed (ProbeHostFacts). Tests of the
  // hyperkit backend on Linux say "a Mac with HVF" here.
  std::optional<HostFacts> host_facts;
  std::string machine = "q35";
  // Appended to QEMU's command line as they are (fun-hostd takes them from
  // $FUN_QEMU_EXTRA_ARGS): for measurements and debugging only, logged when set.
  std::vector<std::string> qemu_extra_args;
  // How long a graceful stop may take before escalating to signals: 60% of it for the agent
  // shutdown, 30% for the ACPI power button.
  std::chrono::milliseconds stop_timeout{30000};
  // After SIGTERM, how long QEMU may take to exit before SIGKILL.
  std::chrono::milliseconds kill_grace{5000};
  std::chrono::seconds time_sync_interval{60};
  // How often the published ports are compared with containers and listening sockets.
  std::chrono::milliseconds publish_interval{2000};
  // Agent channels the published ports open at once. QEMU's user-mode network accepts the
  // agent's forwarded port with a listen backlog of 1: a burst of connects overflows it and the
  // kernel's SYN retries make some wait many seconds. More connections queue here instead.
  int max_concurrent_dials = 4;
  // The loopback port QEMU forwards to the guest agent (hostfwd); 0 picks a free one. Tests set
  // it to where a stand-in agent already listens (the QEMU process is a fake there).
  uint16_t agent_port = 0;
  // Injectable seams. The QMP socket is always <instance>/qmp.sock (a test serves a fake there).
  ProcessRunner* runner = nullptr;  // default: ProcessRunner::Default()
  Clock* clock = nullptr;           // default: Clock::Real()
};

class Hostd {
 public:
  static StatusOr<std::unique_ptr<Hostd>> Create(HostdOptions options);
  ~Hostd();

  // Starts the VM and serves until it ends. Returns OK when the VM ended (stopped or died:
  // state.json says which); an error when it could not start at all.
  Status Run();
  // Begins a graceful stop (idempotent). `force` skips the agent and ACPI steps; a forced
  // request during a graceful stop cuts the remaining graceful steps short.
  void RequestStop(bool force = false);
  // Logs the shares' counters: the 9P server's, and the vsock device's with its reply latency
  // (fun-hostd does on SIGUSR1 and when the shares stop; perf/p9_vm.sh reads them). Any thread.
  void LogShareStats(std::string_view when);

 private:
  explicit Hostd(HostdOptions options);
  std::string File(InstanceFileKind kind) const;
  std::string File(std::string_view name) const;
  Status Prepare();
  Status StartVm();
  // The hypervisor's command for the backend; Start*'s caller has served the shares already.
  Status StartQemu(const AccelChoice& accel, const ImageFiles& image, const std::string& disk,
                   const std::string& console, const std::vector<std::string>& share_tags);
  Status StartHyperkit(const ImageFiles& image, const std::string& disk, const std::string& console,
                       const std::vector<std::string>& share_tags);
  // Starts `cmd` and checks that it lives past its first 300 ms (a hypervisor that cannot start
  // says so at once); `what` names it in errors. Sets vm_ and vm.pid.
  Status LaunchHypervisor(const Command& cmd, std::string_view what);
  // Starts the 9P server for config_.shares on <instance>/p9.sock and writes the share table
  // the guest reads; the tags in the order of the VM's ports.
  StatusOr<std::vector<std::string>> ServeShares();
  void StopShares();
  Status ServeContainerd();
  void WatchReady();
  // Every config share mounted or failed in the guest (not still waiting).
  bool SharesSettled(const agent::AgentPing& ping) const;
  static constexpr std::chrono::seconds kSharesSettleTimeout{30};
  // Each readiness ping while the VM boots (retried every 100 ms until one answers).
  static constexpr std::chrono::milliseconds kBootPingTimeout{500};
  std::optional<Clock::MonoTime> shares_wait_since_;  // WatchReady's thread only
  // The guest clock: measured with a ping, stepped by the offset (WatchReady's thread).
  Clock::Duration SyncGuestClock();
  // A ping whose round trip is longer than twice this measures too loosely: retried soon.
  static constexpr std::chrono::nanoseconds kTimeSyncMaxUncertainty{std::chrono::milliseconds(250)};
  static constexpr std::chrono::seconds kTimeSyncRetry{5};
  // What the clock may be off, beyond the measurement's uncertainty, before it is stepped.
  static constexpr std::chrono::nanoseconds kTimeSyncTolerance{std::chrono::milliseconds(10)};
  Status ServeControl();
  void PublishLoop();
  std::vector<PublishRequest> WantedPorts(cri::Engine* engine);
  void StopVm();
  void Finish(const ProcessResult* result);
  void SaveState();  // requires mu_

  HostdOptions o_;
  std::string dir_;
  InstanceConfig config_;
  agent::AgentEndpoint agent_;
  int lock_fd_ = -1;

  std::mutex mu_;
  std::condition_variable cv_;
  InstanceState state_;  // guarded by mu_ (RequestStop writes it from another thread)
  bool stop_requested_ = false;
  bool force_stop_ = false;
  bool vm_exited_ = false;
  std::optional<ProcessResult> vm_result_;
  std::unique_ptr<Process> vm_;  // the hypervisor: QEMU or hyperkit
  std::unique_ptr<AcceptLoop> containerd_loop_;
  std::unique_ptr<AcceptLoop> control_loop_;
  std::unique_ptr<PortPublisher> publisher_;
  // The shares' 9P server: up before QEMU starts (QEMU connects to it) and until QEMU is gone.
  std::mutex shares_mu_;  // LogShareStats against StopShares' resets of p9_ and vsock_device_
  std::unique_ptr<p9::Server> p9_;
  std::unique_ptr<p9::Listener> p9_listener_;
  std::thread p9_thread_;
  // share_transport "vsock" (Linux): the vhost-user vsock device QEMU connects to, and a thread
  // per guest stream (the kP9 request, then the 9P server's ServeConnection).
  bool shares_over_vsock_ = false;
  // agent_transport "vsock": the agent channel goes through the device's connect socket.
  bool agent_over_vsock_ = false;
  Status ServeVsock();
  static constexpr uint32_t kP9VsockPort = agent::kHostP9VsockPort;
  static constexpr uint64_t kGuestCid = agent::kGuestCid;
  static constexpr std::chrono::seconds kP9RequestTimeout{10};
  // shared_ptr: the type stays incomplete here (the device is Linux only), its deleter is set
  // where it is made.
  std::shared_ptr<vsock::VsockDevice> vsock_device_;
  std::thread vsock_thread_;
  // Threads of streams that ended are joined when the next stream comes (a container dialing the
  // port over and over must not pile up threads); the rest at StopShares, which wakes those
  // still waiting for a request through p9_streams_stop_.
  struct P9Stream {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex p9_streams_mu_;
  std::vector<P9Stream> p9_streams_;  // guarded by p9_streams_mu_
  UniqueFd p9_streams_stop_;          // an eventfd
  void ServeP9Stream(uint32_t port, UniqueFd stream);
  // hostd.sock asks for a publish round (requested), PublishLoop says which it finished (done).
  uint64_t publish_requested_ = 0;  // guarded by mu_
  uint64_t publish_done_ = 0;       // guarded by mu_
  bool publishing_ = false;         // guarded by mu_: PublishLoop is past containerd's start
  // Free dial slots for published ports (max_concurrent_dials).
  std::mutex dial_mu_;
  std::condition_variable dial_cv_;
  int dial_slots_ = 0;
  // A pipe made readable once the VM has ended: every containerd.sock relay watches it, so a
  // client that keeps an idle connection open cannot keep Run from returning.
  UniqueFd relays_stop_read_, relays_stop_write_;
};

}  // namespace fun::vm
