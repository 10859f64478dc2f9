// engine.h: Docker's container model on top of CRI, which is what `fun` shows its users.
//
// CRI knows pods and containers; a `docker run` user knows named containers. The engine gives
// every container a pod of its own (a sandbox named like the container, in CRI namespace
// "fun"), labels both so that ours are found among whatever else runs in that containerd, and
// records what CRI does not keep (the command as typed, --rm, published ports, bind mounts as
// the user named them) as annotations:
//
//   labels       io.fun.managed=true, io.fun.name=<name>
//   annotations  io.fun.command=<JSON array>, io.fun.rm=true, io.fun.ports=<JSON>,
//                io.fun.spec=<the whole RunSpec as JSON> (what `fun start` runs again)
//
// Published ports (-p) reach CRI's port_mappings only when `ports_via_cri` (the native
// backend, where CNI's portmap plugin publishes them); in a VM, fun-hostd publishes them on
// the host from the io.fun.ports annotation of each running container (Published()).
//
//   Engine engine(cri.get(), {.log_root = "/var/log/fun"});
//   FUN_ASSIGN_OR_RETURN(RunResult r, engine.Run(spec, on_pull));
//   FUN_ASSIGN_OR_RETURN(int code, engine.Wait(r.container_id));
//
// Names follow Docker's rule ([a-zA-Z0-9][a-zA-Z0-9_.-]*) and are unique among our
// containers; a container is found by its exact name, its full id or a unique id prefix.
//
// Thread-safety: an Engine may be used from many threads if its CriClient is (it is).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lib/base/clock.h"
#include "lib/base/status.h"
#include "lib/cri/client.h"

namespace fun::cri {

inline constexpr std::string_view kLabelManaged = "io.fun.managed";
inline constexpr std::string_view kLabelName = "io.fun.name";
inline constexpr std::string_view kAnnotationCommand = "io.fun.command";
inline constexpr std::string_view kAnnotationRm = "io.fun.rm";
inline constexpr std::string_view kAnnotationPorts = "io.fun.ports";
inline constexpr std::string_view kAnnotationSpec = "io.fun.spec";
inline constexpr std::string_view kPodNamespace = "fun";

// Checks a container name against Docker's rule; InvalidArgument says what is wrong.
Status ValidateContainerName(std::string_view name);

// --user: "UID", "UID:GID" or "NAME" (a user of the image's /etc/passwd). CRI cannot take a
// group name, so "NAME:GROUP" and "UID:GROUPNAME" are refused with a hint.
struct UserSpec {
  std::optional<int64_t> uid;
  std::optional<int64_t> gid;
  std::string name;
};
StatusOr<UserSpec> ParseUserSpec(std::string_view spec);

// A bind mount (-v HOSTPATH:CTRPATH[:ro]). containerd mounts `source`, a path where containerd
// runs: natively the host path itself; for a VM instance the path in the VM where a shared
// folder puts it (lib/vm/bind_mounts.h decides). `host_path` is the folder on the user's machine
// (resolved, no symlinks), what `fun inspect` shows as the mount's source. CRI gets
// Mount{container_path, source, readonly, propagation private, no SELinux relabel}.
struct BindMount {
  std::string host_path;
  std::string source;
  std::string container_path;
  bool readonly = false;

  friend bool operator==(const BindMount&, const BindMount&) = default;
};

// Checks mounts before anything is created: every path absolute, container paths neither "/"
// nor used twice. InvalidArgument names the mount.
Status ValidateBindMounts(const std::vector<BindMount>& mounts);

// `fun run`, as flags give it.
struct RunSpec {
  std::string image;
  std::string name;                                    // "": generated ("fun_" + 8 hex digits)
  std::optional<std::vector<std::string>> entrypoint;  // --entrypoint (replaces the image's)
  std::vector<std::string> cmd;                        // after IMAGE (replaces the image's)
  std::vector<std::pair<std::string, std::string>> env;
  std::string workdir;
  std::string user;  // ParseUserSpec syntax
  bool rm = false;
  bool tty = false;
  bool interactive = false;
  bool host_network = false;
  // --privileged (Docker's): every capability and device, no seccomp/AppArmor confinement, so
  // the container may mount file systems. In a VM it is root of the VM, not of the host.
  bool privileged = false;
  // --pid host (Docker's): the container sees and may signal every process of the host (of
  // the VM: containerd, fun-guestd, other containers), not only its own.
  bool host_pid = false;
  std::vector<PortMapping> ports;
  std::vector<BindMount> mounts;
};

// The io.fun.ports / io.fun.spec annotations: JSON both ways. The parsers check every field
// (containerd hands back what was stored, but anyone with the socket can create containers
// that carry our labels), naming what is wrong.
std::string PortsToJson(const std::vector<PortMapping>& ports);
StatusOr<std::vector<PortMapping>> PortsFromJson(std::string_view json);
std::string RunSpecToJson(const RunSpec& spec);
StatusOr<RunSpec> RunSpecFromJson(std::string_view json);

struct RunResult {
  std::string name;
  std::string container_id;
  std::string pod_id;
  bool pulled = false;  // the image was not in the store and was pulled first
};

// One of our containers, with its pod.
struct ContainerInfo {
  Container container;  // status fields are set (ContainerStatus)
  std::string pod_id;
  std::string pod_ip;
  std::string name;                  // the fun name (label)
  std::vector<std::string> command;  // as run (annotation), may be empty
  bool rm = false;
  std::vector<PortMapping> ports;  // published with -p (annotation)
  bool host_network = false;       // --network host (from the spec annotation)
  bool privileged = false;         // --privileged (from the spec annotation)
  bool host_pid = false;           // --pid host (from the spec annotation)
  // -v mounts: from the spec annotation, else (a container another client made) from
  // ContainerStatus, with host_path = source.
  std::vector<BindMount> mounts;
};

// A port of a running container that must be published on the host.
struct PublishedPort {
  std::string container;  // the fun name
  std::string container_id;
  PortMapping port;    // host_ip "" means 127.0.0.1
  std::string target;  // "IP:PORT" where containerd runs: the pod IP, or 127.0.0.1 for
                       // a host-network container
};

struct EngineOptions {
  // Where containerd writes container logs (a dir on containerd's side: in the VM for a VM
  // instance). Each pod gets <log_root>/<pod name>_<uid>/, the container "<name>.log" in it.
  std::string log_root = "/var/log/fun";
  // Polling interval of Wait.
  std::chrono::milliseconds poll_interval{std::chrono::milliseconds(100)};
  // How long Wait keeps asking while containerd lets each call run out its deadline (a VM that
  // is short of memory or CPU can be that slow for a minute) before it gives up on it.
  std::chrono::seconds wait_patience{std::chrono::minutes(5)};
  Clock* clock = nullptr;  // nullptr: Clock::Real()
  // Pass -p ports to CRI (port_mappings, for CNI's portmap plugin): the native backend. A VM
  // instance's fun-hostd publishes them instead (see Published()).
  bool ports_via_cri = true;
};

// How long containerd has let calls run out their deadline in a row (a VM short of memory or
// CPU can be that slow for a minute): Wait and `fun run`'s log copy go on through such a
// silence, up to a patience.
class Silence {
 public:
  Silence(Clock& clock, Clock::Duration patience) : clock_(clock), patience_(patience) {}
  // A call ran out its deadline: true while the silence (from the first such call since the
  // last Reset) is shorter than the patience.
  bool Bear() {
    const Clock::MonoTime now = clock_.MonotonicNow();
    if (!since_) since_ = now;
    return now - *since_ < patience_;
  }
  // A call was answered.
  void Reset() { since_.reset(); }
  // Since the first unanswered call (0 when the last call was answered).
  Clock::Duration length() const {
    return since_ ? clock_.MonotonicNow() - *since_ : Clock::Duration{};
  }

 private:
  Clock& clock_;
  Clock::Duration patience_;
  std::optional<Clock::MonoTime> since_;
};

class Engine {
 public:
  using PullCallback = std::function<void(std::string_view image)>;  // called before a pull

  Engine(CriClient* cri, EngineOptions options = {});

  // The image's id, pulling it first when the store lacks it.
  StatusOr<std::string> EnsureImage(const std::string& ref, const PullCallback& on_pull = {},
                                    bool* pulled = nullptr);
  // Pod + create + start. On a failure after the pod exists, what was made is removed again,
  // so a failed run leaves nothing behind (the name is free again).
  StatusOr<RunResult> Run(const RunSpec& spec, const PullCallback& on_pull = {});
  // Our containers (running only, unless all), newest first.
  StatusOr<std::vector<ContainerInfo>> List(bool all);
  // By exact name, full id or unique id prefix (of container or pod). NotFound / ambiguous
  // (InvalidArgument) say what to do.
  StatusOr<ContainerInfo> Find(std::string_view name_or_id);
  // Stops the container (SIGTERM, SIGKILL after grace). Stopping an exited one is OK.
  Status Stop(std::string_view name_or_id, std::chrono::seconds grace);
  // Removes the container and its pod; a running one only with force (stopped at once).
  Status Remove(std::string_view name_or_id, bool force);
  // Removes a container and its pod known by their ids (what Run returned), without looking
  // them up first: `run --rm` after the container exited.
  Status RemoveIds(std::string_view container_id, std::string_view pod_id);
  // Runs an exited container again with the spec it was created with (Docker's `start`): CRI
  // cannot restart a container or its pod, so both are made anew under the same name (new
  // ids; the earlier log goes with the old container). A running one: nothing to do.
  StatusOr<RunResult> Start(std::string_view name_or_id);
  // The -p ports of every running container of ours, with where they lead.
  StatusOr<std::vector<PublishedPort>> Published();
  // Blocks until the container exits; returns its exit code.
  StatusOr<int> Wait(std::string_view container_id);
  StatusOr<ExecResult> Exec(std::string_view name_or_id, const std::vector<std::string>& cmd,
                            std::chrono::seconds timeout);
  // An interactive exec (-i, -t): checks the container runs and returns containerd's
  // streaming URL for `cmd` (exec_stream.h connects to it and pumps the streams).
  StatusOr<std::string> ExecStreamUrl(std::string_view name_or_id,
                                      const std::vector<std::string>& cmd,
                                      const ExecStreams& streams);
  // A Silence with this engine's clock and wait_patience.
  Silence NewSilence() const { return Silence(*clock_, options_.wait_patience); }

 private:
  StatusOr<ContainerInfo> Describe(const Container& listed);
  // Run, where the name may still belong to container `replaces_id` (Start's old container,
  // removed only once its successor runs).
  StatusOr<RunResult> RunReplacing(const RunSpec& spec, std::string_view replaces_id,
                                   const PullCallback& on_pull);

  CriClient* cri_;
  EngineOptions options_;
  Clock* clock_;
};

}  // namespace fun::cri
