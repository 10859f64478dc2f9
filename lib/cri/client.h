// client.h: a CRI (Kubernetes Container Runtime Interface, runtime.v1) client for containerd,
// over its unix socket: runtime version and readiness, and images (list, status, pull, remove).
//
// The wire format is the project's own proto subset (lib/cri/proto/api.proto, upstream names and
// field numbers); this header exposes plain structs, so users never see gRPC or protobuf types.
//
// Every call has a deadline: CallOptions::timeout, else the client's default (PullImage has a
// longer one of its own). A gRPC error becomes a fun::Status with the same canonical code,
// containerd's message, and the call as context:
//   "CRI PullImage: failed to pull and unpack image ...: dial tcp 127.0.0.1:1: connect: connection
//   refused"
// Nothing listening on the socket (or no socket yet) is Unavailable; no reply in time is
// DeadlineExceeded; a containerd without its CRI plugin answers Unimplemented.
//
// Example:
//   FUN_ASSIGN_OR_RETURN(auto cri, fun::cri::CriClient::Connect(instance_dir +
//   "/containerd.sock")); FUN_ASSIGN_OR_RETURN(bool ready, cri->WaitUntilReady({
//       .timeout = std::chrono::seconds(60),
//       .on_progress = [](const fun::cri::ReadyProgress& p) { Print(p.Describe()); }}));
//   if (!ready) return fun::UnavailableError("containerd did not become ready in 60 s");
//   FUN_ASSIGN_OR_RETURN(fun::cri::RuntimeVersion v, cri->Version());
//   FUN_ASSIGN_OR_RETURN(std::string id, cri->PullImage("127.0.0.1:5000/busybox:latest"));
//
// Reconnecting: a call that finds containerd unreachable (Unavailable) makes the next call use
// a fresh gRPC channel, so a containerd that comes (back) up is seen by the next call, not
// after gRPC's reconnect backoff and polling delays (seconds).
//
// Thread-safety: a CriClient is safe to use from many threads at once (they share one channel);
// WaitUntilReady blocks only the calling thread. The structs are values.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lib/base/clock.h"
#include "lib/base/status.h"

namespace fun::cri {

// The condition types of RuntimeStatus that CRI defines as required.
inline constexpr std::string_view kRuntimeReady = "RuntimeReady";
inline constexpr std::string_view kNetworkReady = "NetworkReady";

// VersionResponse.
struct RuntimeVersion {
  std::string version;              // the CRI API version string echoed by the runtime
  std::string runtime_name;         // "containerd"
  std::string runtime_version;      // "1.6.20~ds1"
  std::string runtime_api_version;  // "v1"
};

// One RuntimeCondition.
struct RuntimeCondition {
  std::string type;  // kRuntimeReady, kNetworkReady, or a runtime-specific one
  bool status = false;
  std::string reason;  // CamelCase, e.g. "NetworkPluginNotReady"
  std::string message;
};

// StatusResponse.status, with the two required conditions pulled out.
struct RuntimeStatus {
  bool runtime_ready = false;  // condition RuntimeReady is true
  bool network_ready = false;  // condition NetworkReady is true (a CNI config is loaded)
  std::vector<RuntimeCondition> conditions;

  // The condition of that type, or nullptr.
  const RuntimeCondition* Find(std::string_view type) const;
  // "runtime ready, network ready", or with what is not ready and why:
  // "runtime ready, network not ready (NetworkPluginNotReady: Network plugin returns error: ...)".
  std::string Describe() const;
};

// One image of the runtime's store (CRI Image).
struct Image {
  std::string id;  // "sha256:..."
  std::vector<std::string> repo_tags;
  std::vector<std::string> repo_digests;
  uint64_t size_bytes = 0;
  std::optional<int64_t> uid;  // the image config's user, when numeric
  std::string username;        // the image config's user, when a name
  bool pinned = false;
};

// --- Pods and containers (RuntimeService) -------------------------------------------------------

using StringMap = std::map<std::string, std::string>;

// One published port of a pod (CRI PortMapping; reaches CNI's portmap plugin).
struct PortMapping {
  enum class Protocol { kTcp, kUdp, kSctp };
  Protocol protocol = Protocol::kTcp;
  int32_t container_port = 0;
  int32_t host_port = 0;
  std::string host_ip;  // "": all addresses
};

// What RunPodSandbox needs (PodSandboxConfig). The metadata (name, uid, namespace, attempt) is
// what containerd names the sandbox by: name + namespace + uid + attempt must be unique.
struct PodSpec {
  std::string name;
  std::string uid;
  std::string ns = "default";
  uint32_t attempt = 0;
  std::string hostname;
  // Container logs go to log_directory/<ContainerSpec::log_path>; both empty: no log.
  std::string log_directory;
  std::vector<std::string> dns_servers;
  std::vector<PortMapping> ports;
  bool host_network = false;  // NamespaceMode NODE: the pod shares the host's (VM's) network
  // LinuxSandboxSecurityContext.privileged: containerd refuses a privileged container in a pod
  // that is not privileged itself.
  bool privileged = false;
  bool host_pid = false;  // NamespaceMode NODE for PIDs: the host's (VM's) processes are seen
  StringMap labels;
  StringMap annotations;
};

enum class SandboxState { kReady, kNotReady };

struct PodSandbox {
  std::string id;
  std::string name;
  std::string uid;
  std::string ns;
  uint32_t attempt = 0;
  SandboxState state = SandboxState::kNotReady;
  int64_t created_at_ns = 0;
  std::string ip;  // PodSandboxStatus only: the pod's address, "" with host networking
  StringMap labels;
  StringMap annotations;
};

struct MountSpec {
  std::string container_path;
  std::string host_path;  // a path where containerd runs (in the VM for a VM instance)
  bool readonly = false;
};

// What CreateContainer needs (ContainerConfig).
struct ContainerSpec {
  std::string name;
  uint32_t attempt = 0;
  std::string image;                 // a reference or an image id
  std::vector<std::string> command;  // replaces the image's entrypoint when not empty
  std::vector<std::string> args;     // replaces the image's cmd when not empty
  std::string working_dir;
  std::vector<std::pair<std::string, std::string>> envs;
  std::vector<MountSpec> mounts;
  StringMap labels;
  StringMap annotations;
  std::string log_path;  // relative to the pod's log_directory
  bool stdin = false;
  bool stdin_once = false;
  bool tty = false;
  // The user: a numeric uid (run_as_user) or a name from the image's /etc/passwd.
  std::optional<int64_t> run_as_user;
  std::optional<int64_t> run_as_group;
  std::string run_as_username;
  // Every capability, every device, no seccomp or AppArmor, /sys and /proc writable (Docker's
  // --privileged); the pod must be privileged too.
  bool privileged = false;
  bool host_network = false;  // must match the pod's
  bool host_pid = false;      // the host's (VM's) PID namespace; must match the pod's
};

enum class ContainerState { kCreated, kRunning, kExited, kUnknown };
// "created", "running", "exited", "unknown".
std::string_view ContainerStateName(ContainerState s);

// ListContainers' Container and ContainerStatus in one struct (the status-only fields stay
// zero/empty in a listing).
struct Container {
  std::string id;
  std::string pod_sandbox_id;
  std::string name;
  uint32_t attempt = 0;
  std::string image;      // as the container was created (reference or id)
  std::string image_ref;  // the image id
  ContainerState state = ContainerState::kUnknown;
  int64_t created_at_ns = 0;
  int64_t started_at_ns = 0;      // status: 0 until started
  int64_t finished_at_ns = 0;     // status: 0 until exited
  int32_t exit_code = 0;          // status: meaningful once finished_at_ns != 0
  std::string reason;             // status: "Completed", "Error", "OOMKilled", ...
  std::string message;            // status
  std::string log_path;           // status: the absolute log file, where containerd runs
  std::vector<MountSpec> mounts;  // status
  StringMap labels;
  StringMap annotations;
};

struct ContainerFilter {
  std::string id;
  std::string pod_sandbox_id;
  std::optional<ContainerState> state;
  StringMap label_selector;  // every pair must match
};

struct ExecResult {
  std::string stdout_bytes;
  std::string stderr_bytes;
  int32_t exit_code = 0;
};

// Which streams an Exec attaches (ExecRequest's tty, stdin, stdout, stderr).
struct ExecStreams {
  bool tty = false;
  bool stdin = false;
  bool stdout = true;
  bool stderr = true;  // must be false with tty
};

// Per-call options.
struct CallOptions {
  // The call's deadline is now + timeout; unset: the client's default for that call.
  std::optional<std::chrono::milliseconds> timeout{};
};

struct CriClientOptions {
  // Deadline of every call without a timeout of its own.
  std::chrono::milliseconds default_timeout{std::chrono::seconds(10)};
  // Deadline of PullImage (it downloads and unpacks layers).
  std::chrono::milliseconds pull_timeout{std::chrono::minutes(10)};
  // Upper bound of gRPC's reconnect backoff within one channel (gRPC's own, 120 s, is for
  // networks). Matters little: a call that gets Unavailable makes the next use a fresh channel.
  std::chrono::milliseconds max_reconnect_backoff{std::chrono::seconds(1)};
  // Largest reply accepted (bounds what an untrusted peer can make us allocate). ExecSync
  // replies may carry up to 16 MiB of stdout plus 16 MiB of stderr.
  int max_receive_bytes = 64 << 20;
};

// One observation of WaitUntilReady.
struct ReadyProgress {
  int attempt = 0;                      // 1 for the first poll
  Clock::Duration elapsed{0};           // since WaitUntilReady started (on its clock)
  fun::Status error;                    // why Status failed; OK when it answered
  std::optional<RuntimeStatus> status;  // the answer, when Status answered
  bool ready = false;                   // this observation ends the wait

  // For people watching `fun-vmctl start`: "containerd socket not there yet", "containerd is
  // starting (its CRI service is not initialized yet)", "runtime ready, network not ready
  // (...)", or the error's message.
  std::string Describe() const;
};

// The least time a poll of WaitUntilReady gets to answer.
inline constexpr std::chrono::milliseconds kMinPollCallTimeout{500};

struct WaitReadyOptions {
  // Give up (return false) by the time this much has passed on `clock`. Each Status call ends
  // by then too (its deadline is what remains, at most the client's default timeout); a poll
  // is started only while kMinPollCallTimeout remains, so the last one is at most that long
  // before the deadline. Only the first poll may end later, when the timeout is shorter than
  // kMinPollCallTimeout.
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // Time between two polls.
  std::chrono::milliseconds poll_interval{std::chrono::milliseconds(200)};
  // Also wait for NetworkReady (a CNI config). Without it only RuntimeReady is required.
  bool require_network = false;
  // Measures the timeout and sleeps between polls; nullptr means Clock::Real().
  Clock* clock = nullptr;
  // Called after every poll (also the last one), on the calling thread.
  std::function<void(const ReadyProgress&)> on_progress{};
};

class CriClient {
 public:
  using Options = CriClientOptions;

  // A client for the CRI server on the unix socket `socket_path` (made absolute). Does not
  // connect yet and does not fail when the socket is not there yet: calls connect (and
  // reconnect) as needed, so a client may be made before containerd is up.
  // InvalidArgument for an empty path or one too long for a unix socket (108 bytes).
  static StatusOr<std::unique_ptr<CriClient>> Connect(std::string socket_path,
                                                      Options options = {});
  ~CriClient();
  CriClient(const CriClient&) = delete;
  CriClient& operator=(const CriClient&) = delete;

  // The absolute socket path.
  const std::string& socket_path() const { return socket_path_; }
  const Options& options() const { return options_; }

  // RuntimeService.Version.
  StatusOr<RuntimeVersion> Version(CallOptions call = {});
  // RuntimeService.Status (named after the RPC: inside this class, write fun::Status for the
  // error type).
  StatusOr<RuntimeStatus> Status(CallOptions call = {});

  // Polls Status until RuntimeReady (and NetworkReady, if required) is true: true once ready,
  // false when the timeout passed first (the last ReadyProgress says why). Not being able to
  // reach the socket yet (Unavailable), a call timing out, and containerd's "not initialized
  // yet" (Unknown) are "not ready yet"; an error that polling cannot fix (Unimplemented: no
  // CRI plugin; PermissionDenied; InvalidArgument; Unauthenticated) is returned at once.
  StatusOr<bool> WaitUntilReady(const WaitReadyOptions& options);

  // ImageService.ListImages: every image in the store (CRI's namespace, k8s.io).
  StatusOr<std::vector<Image>> ListImages(CallOptions call = {});
  // ImageService.ImageStatus: the image `ref` names (reference, id or digest), or nullopt when
  // the store has none.
  StatusOr<std::optional<Image>> ImageStatus(std::string_view ref, CallOptions call = {});
  // ImageService.PullImage (no authentication, no progress): returns the image's id
  // ("sha256:..."). Deadline: options().pull_timeout unless `call` sets one.
  StatusOr<std::string> PullImage(std::string_view ref, CallOptions call = {});
  // ImageService.RemoveImage. Removing an image that is not there is OK (CRI makes it
  // idempotent).
  fun::Status RemoveImage(std::string_view ref, CallOptions call = {});

  // RuntimeService.RunPodSandbox: the sandbox's id. Pulls nothing: the sandbox (pause) image
  // of containerd's config must be in the store or pullable.
  StatusOr<std::string> RunPodSandbox(const PodSpec& pod, CallOptions call = {});
  // StopPodSandbox / RemovePodSandbox: idempotent (an unknown id is OK), as CRI defines.
  fun::Status StopPodSandbox(std::string_view pod_id, CallOptions call = {});
  fun::Status RemovePodSandbox(std::string_view pod_id, CallOptions call = {});
  // PodSandboxStatus: NotFound for an unknown id.
  StatusOr<PodSandbox> PodSandboxStatus(std::string_view pod_id, CallOptions call = {});
  // ListPodSandbox, filtered by labels (every pair must match) when not empty.
  StatusOr<std::vector<PodSandbox>> ListPodSandbox(const StringMap& label_selector = {},
                                                   CallOptions call = {});

  // CreateContainer in pod `pod_id` (whose config `pod` must be passed again, as CRI asks).
  StatusOr<std::string> CreateContainer(std::string_view pod_id, const ContainerSpec& spec,
                                        const PodSpec& pod, CallOptions call = {});
  fun::Status StartContainer(std::string_view id, CallOptions call = {});
  // Sends the stop signal, and SIGKILL after `grace` (0: at once). The call's deadline is
  // grace plus the client's default timeout unless `call` sets one.
  fun::Status StopContainer(std::string_view id, std::chrono::seconds grace, CallOptions call = {});
  fun::Status RemoveContainer(std::string_view id, CallOptions call = {});
  StatusOr<std::vector<Container>> ListContainers(const ContainerFilter& filter = {},
                                                  CallOptions call = {});
  // ContainerStatus: NotFound for an unknown id.
  StatusOr<Container> ContainerStatus(std::string_view id, CallOptions call = {});
  // ExecSync: runs `cmd` in the container and returns its output and exit code; `timeout` (0:
  // none) is the command's own limit, enforced by containerd.
  StatusOr<ExecResult> ExecSync(std::string_view id, const std::vector<std::string>& cmd,
                                std::chrono::seconds timeout, CallOptions call = {});
  // Exec: prepares `cmd` in the container and returns the URL of containerd's streaming
  // server where it runs once a client connects (stream_codec.h speaks to it). The URL is
  // single-use and expires (containerd: after 1 minute) when nobody connects. CRI refuses tty
  // together with stderr (a terminal has one output) and a request with none of the streams.
  StatusOr<std::string> Exec(std::string_view id, const std::vector<std::string>& cmd,
                             const ExecStreams& streams, CallOptions call = {});
  // Attach: the streaming URL for the running container's own process (its stdin only if it
  // was created with stdin). Same rules as Exec; the session's status says nothing about the
  // container's exit code (ContainerStatus does).
  StatusOr<std::string> Attach(std::string_view id, const ExecStreams& streams,
                               CallOptions call = {});

 private:
  struct Channel;  // one gRPC channel and its stubs (client.cc)

  CriClient(std::string socket_path, Options options);
  std::shared_ptr<Channel> CurrentChannel() const;
  // Replaces `failed` (if it is still the current channel) by a fresh one; see client.cc.
  void RenewChannel(const std::shared_ptr<Channel>& failed);
  // Runs one RPC, `rpc(channel, context)`, with a deadline of now + timeout.
  template <typename Rpc>
  fun::Status Call(std::string_view method, std::chrono::milliseconds timeout, Rpc&& rpc);

  const std::string socket_path_;
  const Options options_;
  mutable std::mutex mu_;
  std::shared_ptr<Channel> channel_;  // guarded by mu_
};

}  // namespace fun::cri
