// containerd_fixture.h: a real containerd for tests (no mocks), run natively from
// /usr/bin/containerd in a temp dir of its own.
//
// Create() makes a short temp dir (/tmp/fun-ctd.XXXXXX: the socket path must stay under 108
// bytes), writes a version 2 config.toml there (root, state, gRPC socket, CRI plugin with its
// CNI conf_dir, the overlayfs snapshotter, or native where this kernel cannot mount overlay in
// the temp dir), starts containerd with its log in the temp dir, and waits until its socket
// answers and CRI reports RuntimeReady. The destructor stops containerd (SIGTERM, then SIGKILL),
// kills shims left behind, unmounts whatever is still mounted under the temp dir and removes
// it. Each fixture has its own root, so tests may run fixtures side by side (containerd
// refuses two instances on one root). A test process that dies without its destructor (a
// crash, a ctest timeout) leaves containerd running: the next Create() in the same parent dir
// finds such dirs (their owner.pid is dead), kills what runs there and removes them.
//
// containerd needs root: CanRun() says why a fixture cannot run here, for GTEST_SKIP.
//
//   if (fun::Status why = ContainerdFixture::CanRun(); !why.ok()) GTEST_SKIP() << why;
//   auto ctd = ContainerdFixture::Create();
//   ASSERT_TRUE(ctd.ok()) << ctd.status();
//   auto cri = fun::cri::CriClient::Connect((*ctd)->socket_path()).value();
//   ASSERT_TRUE((*ctd)->WriteCniConfig().ok());   // NetworkReady becomes true soon after
//   // on failure: ADD_FAILURE() << (*ctd)->LogTail();
//
// Thread-safety: not thread-safe; one test thread drives a fixture (Launch may be called from
// a WaitUntilReady progress callback on that same thread).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/base/process.h"
#include "lib/base/status.h"

namespace fun::cri::testing {

struct ContainerdFixtureOptions {
  // The containerd binary.
  std::string containerd = "/usr/bin/containerd";
  // Where the temp dir is made. "": $TMPDIR if the socket path fits under it, else /tmp.
  std::string parent_dir{};
  // "overlayfs" or "native"; "": overlayfs when overlay mounts in the temp dir, else native.
  std::string snapshotter{};
  // false disables containerd's CRI plugin (to test a containerd that does not serve CRI).
  bool enable_cri = true;
  // Create() also starts containerd and waits for it. false: the test calls Launch() (and
  // WaitUntilUp()) itself, e.g. to make a client before the socket exists.
  bool launch = true;
  // Give up waiting for the socket (and CRI readiness) after this long.
  std::chrono::milliseconds start_timeout{std::chrono::seconds(30)};
  // How long containerd may take to exit after SIGTERM before SIGKILL.
  std::chrono::milliseconds stop_grace{std::chrono::seconds(10)};
  // Registries containerd pulls from over plain HTTP, as "HOST:PORT" (e.g. a RegistryFixture's
  // host()): each gets a hosts.toml in registry_config_dir() (see TrustPlainHttpRegistry).
  std::vector<std::string> plain_http_registries{};
  // The CRI plugin's sandbox_image (every pod's pause image), e.g. a RegistryFixture's
  // pause_ref(); "": containerd's default (registry.k8s.io/pause, unreachable offline).
  std::string sandbox_image{};
};

// A CNI network for WriteCniConfig: bridge (host-local IPAM) + portmap. containerd adds the
// loopback network itself (plugin "loopback" from the same bin_dir).
struct CniNetworkOptions {
  // The Linux bridge; "": a fresh "funbr" + 8 hex digits (interface names are <= 15 bytes).
  std::string bridge{};
  // The pod subnet; "": a random 10.X.Y.0/24.
  std::string subnet{};
  std::string network_name = "fun-test";
  // Written in the CRI plugin's conf_dir; containerd loads the first file in name order.
  std::string file_name = "10-fun-test.conflist";
  // The VM's own network (guest/rootfs/etc/cni/net.d): bridge only, without the per-pod
  // ipMasq chains and the portmap plugin (Fun publishes ports through its agent, and the VM
  // masquerades its pod subnet with one rule). false: bridge with ipMasq + portmap, as a
  // stock containerd install has it.
  bool as_in_vm = false;
};

// The last `max_lines` lines of a log file, or "(no log at PATH)" (both fixtures' LogTail).
std::string TailOfLog(const std::string& path, size_t max_lines);

class ContainerdFixture {
 public:
  using Options = ContainerdFixtureOptions;

  // OK if a fixture can run here; otherwise FailedPrecondition naming what is missing (root,
  // the containerd binary).
  static Status CanRun(const Options& options = {});

  // Makes the temp dir and config; with options.launch, also Launch() + WaitUntilUp(). On a
  // failure the error carries the tail of containerd's log.
  static StatusOr<std::unique_ptr<ContainerdFixture>> Create(Options options = {});

  ~ContainerdFixture();
  ContainerdFixture(const ContainerdFixture&) = delete;
  ContainerdFixture& operator=(const ContainerdFixture&) = delete;

  // Starts containerd and returns at once. FailedPrecondition if it runs already.
  Status Launch();
  // Waits until the socket accepts connections and (with the CRI plugin) CRI reports
  // RuntimeReady. Fails early, with the log's tail, if containerd exits.
  Status WaitUntilUp();
  // Stops containerd (SIGTERM, SIGKILL after stop_grace) and kills shims it left. OK if it was
  // not running. The temp dir stays until the destructor.
  Status Stop();
  bool running() const { return process_ != nullptr; }
  // Sends containerd a signal: SIGSTOP makes it a containerd that answers nothing until
  // SIGCONT. FailedPrecondition when it does not run.
  Status Signal(int sig);

  // Writes a CNI conflist into cni_conf_dir() (atomically: write, then rename), so that the
  // CRI plugin loads it and reports NetworkReady. Returns the file's path.
  StatusOr<std::string> WriteCniConfig(const CniNetworkOptions& network = {});

  // Makes containerd pull from `host` ("127.0.0.1:5000") over plain HTTP: writes
  // registry_config_dir()/<host>/hosts.toml with server "http://<host>" and a [host] entry
  // that may pull and resolve. containerd reads hosts.toml at each pull, so this works on a
  // running containerd too. InvalidArgument for a host with '/' or whitespace.
  Status TrustPlainHttpRegistry(std::string_view host);

  // The last `max_lines` lines of containerd's log (for failure messages).
  std::string LogTail(size_t max_lines = 30) const;

  const std::string& dir() const { return dir_; }
  const std::string& socket_path() const { return socket_path_; }
  const std::string& config_path() const { return config_path_; }
  const std::string& log_path() const { return log_path_; }
  const std::string& cni_conf_dir() const { return cni_conf_dir_; }
  // The CRI plugin's registry config_path (per-host hosts.toml dirs).
  const std::string& registry_config_dir() const { return registry_config_dir_; }
  const std::string& snapshotter() const { return snapshotter_; }
  // From Launch() to the socket accepting, and to CRI RuntimeReady (0 before WaitUntilUp).
  std::chrono::milliseconds socket_up_after() const { return socket_up_after_; }
  std::chrono::milliseconds ready_after() const { return ready_after_; }

 private:
  explicit ContainerdFixture(Options options) : options_(std::move(options)) {}
  Status Prepare();
  Status WriteConfig();
  void Cleanup();

  Options options_;
  std::string dir_;
  std::string socket_path_;
  std::string config_path_;
  std::string log_path_;
  std::string cni_conf_dir_;
  std::string registry_config_dir_;
  std::string snapshotter_;
  std::unique_ptr<Process> process_;
  std::chrono::steady_clock::time_point launched_at_{};
  std::chrono::milliseconds socket_up_after_{0};
  std::chrono::milliseconds ready_after_{0};
};

}  // namespace fun::cri::testing
