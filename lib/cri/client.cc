#include "lib/cri/client.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <sys/un.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "lib/base/log.h"
#include "lib/cri/proto/api.grpc.pb.h"
#include "lib/cri/proto/api.pb.h"

namespace fun::cri {

namespace v1 = ::runtime::v1;
using std::chrono::milliseconds;

struct CriClient::Channel {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::RuntimeService::Stub> runtime;
  std::unique_ptr<v1::ImageService::Stub> images;
};

namespace {

std::string Seconds(milliseconds d) {
  return fmt::format("{:.1f} s", static_cast<double>(d.count()) / 1000.0);
}

bool Contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// A gRPC error as a fun::Status: same code, containerd's (or gRPC's) message, "CRI <method>: "
// in front, and a hint for the codes that mean "not containerd's answer".
fun::Status FromGrpc(const grpc::Status& s, std::string_view method, const std::string& socket,
                     milliseconds timeout) {
  const int code = static_cast<int>(s.error_code());
  std::string msg;
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      msg = fmt::format("cannot reach containerd on {}: {}", socket, s.error_message());
      break;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      msg = fmt::format("no reply from containerd on {} within {} ({})", socket, Seconds(timeout),
                        s.error_message());
      break;
    case grpc::StatusCode::UNIMPLEMENTED:
      msg = fmt::format(
          "{} (containerd on {} does not serve CRI runtime.v1: its CRI plugin is disabled in "
          "config.toml or failed to load; see containerd's log)",
          s.error_message(), socket);
      break;
    default:
      msg = s.error_message();
      break;
  }
  return FromCanonicalCode(code, std::move(msg)).WithContext(fmt::format("CRI {}", method));
}

RuntimeStatus ToRuntimeStatus(const v1::StatusResponse& resp) {
  RuntimeStatus out;
  for (const v1::RuntimeCondition& c : resp.status().conditions()) {
    out.conditions.push_back(RuntimeCondition{
        .type = c.type(), .status = c.status(), .reason = c.reason(), .message = c.message()});
    if (c.type() == kRuntimeReady) out.runtime_ready = c.status();
    if (c.type() == kNetworkReady) out.network_ready = c.status();
  }
  return out;
}

Image ToImage(const v1::Image& in) {
  Image out;
  out.id = in.id();
  out.repo_tags.assign(in.repo_tags().begin(), in.repo_tags().end());
  out.repo_digests.assign(in.repo_digests().begin(), in.repo_digests().end());
  out.size_bytes = in.size();
  if (in.has_uid()) out.uid = in.uid().value();
  out.username = in.username();
  out.pinned = in.pinned();
  return out;
}

// Errors WaitUntilReady keeps polling through: the socket is not there or not answering yet,
// or containerd is still starting its CRI service ("server is not initialized yet" is Unknown).
bool IsTransient(Code code) {
  switch (code) {
    case Code::kUnimplemented:
    case Code::kPermissionDenied:
    case Code::kUnauthenticated:
    case Code::kInvalidArgument:
      return false;
    default:
      return true;
  }
}

void SetMap(google::protobuf::Map<std::string, std::string>* out, const StringMap& in) {
  for (const auto& [k, v] : in) (*out)[k] = v;
}

StringMap ToMap(const google::protobuf::Map<std::string, std::string>& in) {
  return StringMap(in.begin(), in.end());
}

v1::Protocol ToProto(PortMapping::Protocol p) {
  switch (p) {
    case PortMapping::Protocol::kUdp:
      return v1::UDP;
    case PortMapping::Protocol::kSctp:
      return v1::SCTP;
    case PortMapping::Protocol::kTcp:
      break;
  }
  return v1::TCP;
}

void ToProto(const PodSpec& in, v1::PodSandboxConfig* out) {
  v1::PodSandboxMetadata* md = out->mutable_metadata();
  md->set_name(in.name);
  md->set_uid(in.uid);
  md->set_namespace_(in.ns);
  md->set_attempt(in.attempt);
  out->set_hostname(in.hostname);
  out->set_log_directory(in.log_directory);
  for (const std::string& server : in.dns_servers) out->mutable_dns_config()->add_servers(server);
  for (const PortMapping& p : in.ports) {
    v1::PortMapping* pm = out->add_port_mappings();
    pm->set_protocol(ToProto(p.protocol));
    pm->set_container_port(p.container_port);
    pm->set_host_port(p.host_port);
    pm->set_host_ip(p.host_ip);
  }
  SetMap(out->mutable_labels(), in.labels);
  SetMap(out->mutable_annotations(), in.annotations);
  v1::LinuxSandboxSecurityContext* sc = out->mutable_linux()->mutable_security_context();
  sc->mutable_namespace_options()->set_network(in.host_network ? v1::NODE : v1::POD);
  if (in.host_pid) sc->mutable_namespace_options()->set_pid(v1::NODE);
  sc->set_privileged(in.privileged);
}

SandboxState FromProto(v1::PodSandboxState s) {
  return s == v1::SANDBOX_READY ? SandboxState::kReady : SandboxState::kNotReady;
}

ContainerState FromProto(v1::ContainerState s) {
  switch (s) {
    case v1::CONTAINER_CREATED:
      return ContainerState::kCreated;
    case v1::CONTAINER_RUNNING:
      return ContainerState::kRunning;
    case v1::CONTAINER_EXITED:
      return ContainerState::kExited;
    default:
      return ContainerState::kUnknown;
  }
}

v1::ContainerState ToProto(ContainerState s) {
  switch (s) {
    case ContainerState::kCreated:
      return v1::CONTAINER_CREATED;
    case ContainerState::kRunning:
      return v1::CONTAINER_RUNNING;
    case ContainerState::kExited:
      return v1::CONTAINER_EXITED;
    case ContainerState::kUnknown:
      break;
  }
  return v1::CONTAINER_UNKNOWN;
}

MountSpec FromProto(const v1::Mount& m) {
  return MountSpec{
      .container_path = m.container_path(), .host_path = m.host_path(), .readonly = m.readonly()};
}

}  // namespace

std::string_view ContainerStateName(ContainerState s) {
  switch (s) {
    case ContainerState::kCreated:
      return "created";
    case ContainerState::kRunning:
      return "running";
    case ContainerState::kExited:
      return "exited";
    case ContainerState::kUnknown:
      break;
  }
  return "unknown";
}

// --- RuntimeStatus, ReadyProgress -----------------------------------------------------------

const RuntimeCondition* RuntimeStatus::Find(std::string_view type) const {
  for (const RuntimeCondition& c : conditions) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

std::string RuntimeStatus::Describe() const {
  auto part = [this](std::string_view what, std::string_view type, bool ok) {
    if (ok) return fmt::format("{} ready", what);
    const RuntimeCondition* c = Find(type);
    if (c == nullptr) return fmt::format("{} not ready (no {} condition)", what, type);
    if (c->reason.empty() && c->message.empty()) return fmt::format("{} not ready", what);
    return fmt::format("{} not ready ({}: {})", what, c->reason, c->message);
  };
  return part("runtime", kRuntimeReady, runtime_ready) + ", " +
         part("network", kNetworkReady, network_ready);
}

std::string ReadyProgress::Describe() const {
  if (status.has_value()) return status->Describe();
  const std::string& m = error.message();
  switch (error.code()) {
    case Code::kOk:
      return "no answer yet";
    case Code::kUnavailable:
      if (Contains(m, "No such file or directory")) return "containerd socket not there yet";
      if (Contains(m, "Connection refused")) {
        return "nothing answers on the containerd socket yet";
      }
      return m;
    case Code::kUnknown:
      if (Contains(m, "not initialized")) {
        return "containerd is starting (its CRI service is not initialized yet)";
      }
      return m;
    default:
      return m;
  }
}

// --- CriClient --------------------------------------------------------------------------------

CriClient::CriClient(std::string socket_path, Options options)
    : socket_path_(std::move(socket_path)), options_(options) {}

CriClient::~CriClient() = default;

StatusOr<std::unique_ptr<CriClient>> CriClient::Connect(std::string socket_path, Options options) {
  if (socket_path.empty()) return InvalidArgumentError("CRI socket path is empty");
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::absolute(socket_path, ec);
  if (ec) {
    return InvalidArgumentError(
        fmt::format("CRI socket path {}: cannot make it absolute: {}", socket_path, ec.message()));
  }
  std::string path = abs.lexically_normal().string();
  constexpr size_t kMaxPath = sizeof(sockaddr_un::sun_path) - 1;
  if (path.size() > kMaxPath) {
    return InvalidArgumentError(
        fmt::format("CRI socket path is {} bytes, a unix socket path may have at most {}: {}",
                    path.size(), kMaxPath, path));
  }
  std::unique_ptr<CriClient> client(new CriClient(std::move(path), options));
  client->RenewChannel(nullptr);
  return client;
}

std::shared_ptr<CriClient::Channel> CriClient::CurrentChannel() const {
  std::lock_guard<std::mutex> lock(mu_);
  return channel_;
}

// Why a fresh channel rather than gRPC's own reconnect: once a channel has failed to connect,
// gRPC (1.51) keeps failing calls at once with the old error until a new connection is READY,
// and a connection only becomes READY when some thread polls it to read the server's HTTP/2
// SETTINGS. Calls that fail at once do not poll, so that is left to gRPC's backup poller, every
// 5 s. A fresh channel (with a subchannel of its own, not one from the global pool) connects
// while the next call waits on it, so that call sees containerd as soon as it is up.
void CriClient::RenewChannel(const std::shared_ptr<Channel>& failed) {
  std::lock_guard<std::mutex> lock(mu_);
  if (channel_ != failed) return;  // another thread renewed it already

  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // Reconnect quickly to a socket that comes back while the channel lives. Not GRPC_ARG_MIN_
  // RECONNECT_BACKOFF_MS: gRPC also uses it as the connect timeout (time to the server's
  // SETTINGS), which a containerd still starting, or one at the end of the agent channel in a
  // slow VM, needs to be generous; each call's deadline bounds the wait anyway.
  const int max_backoff = static_cast<int>(
      std::clamp<int64_t>(options_.max_reconnect_backoff.count(), 1, int64_t{1} << 30));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(max_backoff, 100));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff);
  args.SetMaxReceiveMessageSize(options_.max_receive_bytes);

  auto ch = std::make_shared<Channel>();
  ch->channel =
      grpc::CreateCustomChannel("unix:" + socket_path_, grpc::InsecureChannelCredentials(), args);
  ch->runtime = v1::RuntimeService::NewStub(ch->channel);
  ch->images = v1::ImageService::NewStub(ch->channel);
  channel_ = std::move(ch);
}

namespace {
// When this process loaded the client: `--debug` lines say when each call started, so the gaps
// between calls (polling, the command's own work) show as well as the calls.
const std::chrono::steady_clock::time_point kProcessStart = std::chrono::steady_clock::now();
}  // namespace

template <typename Rpc>
fun::Status CriClient::Call(std::string_view method, milliseconds timeout, Rpc&& rpc) {
  std::shared_ptr<Channel> ch = CurrentChannel();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  const auto t0 = std::chrono::steady_clock::now();
  const grpc::Status s = std::forward<Rpc>(rpc)(*ch, &ctx);
  // `fun --debug` shows where a command spends its time, call by call.
  FUN_LOG(Debug, "CRI {} at +{:.1f} ms took {:.1f} ms ({})", method,
          std::chrono::duration<double, std::milli>(t0 - kProcessStart).count(),
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
          s.ok() ? "ok" : s.error_message());
  if (s.ok()) return fun::OkStatus();
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) RenewChannel(ch);
  fun::Status err = FromGrpc(s, method, socket_path_, timeout);
  FUN_LOG(Debug, "{}", err);
  return err;
}

StatusOr<RuntimeVersion> CriClient::Version(CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::VersionRequest req;
  req.set_version("v1");
  v1::VersionResponse resp;
  FUN_RETURN_IF_ERROR(Call("Version", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->Version(ctx, req, &resp);
  }));
  return RuntimeVersion{.version = resp.version(),
                        .runtime_name = resp.runtime_name(),
                        .runtime_version = resp.runtime_version(),
                        .runtime_api_version = resp.runtime_api_version()};
}

StatusOr<RuntimeStatus> CriClient::Status(CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::StatusRequest req;
  v1::StatusResponse resp;
  FUN_RETURN_IF_ERROR(Call("Status", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->Status(ctx, req, &resp);
  }));
  return ToRuntimeStatus(resp);
}

StatusOr<bool> CriClient::WaitUntilReady(const WaitReadyOptions& options) {
  Clock& clock = options.clock != nullptr ? *options.clock : Clock::Real();
  const Clock::MonoTime start = clock.MonotonicNow();
  const Clock::MonoTime deadline = start + options.timeout;
  const milliseconds max_call = std::max(options_.default_timeout, kMinPollCallTimeout);
  for (int attempt = 1;; ++attempt) {
    // A call ends by the overall deadline. Only the first can get more (kMinPollCallTimeout,
    // when the whole timeout is shorter than that): a call with next to no time could not
    // tell "not ready" from "no time to answer".
    const auto remaining =
        std::chrono::duration_cast<milliseconds>(deadline - clock.MonotonicNow());
    const milliseconds call_timeout = std::clamp(remaining, kMinPollCallTimeout, max_call);
    StatusOr<RuntimeStatus> st = Status(CallOptions{.timeout = call_timeout});

    ReadyProgress progress;
    progress.attempt = attempt;
    progress.elapsed = clock.MonotonicNow() - start;
    if (st.ok()) {
      progress.status = *st;
      progress.ready = st->runtime_ready && (!options.require_network || st->network_ready);
    } else {
      progress.error = st.status();
    }
    if (options.on_progress) options.on_progress(progress);
    if (progress.ready) return true;
    if (!st.ok() && !IsTransient(st.status().code())) {
      return st.status().WithContext(
          fmt::format("waiting for containerd on {} to become ready", socket_path_));
    }

    // Sleep, unless the next poll would not have kMinPollCallTimeout left before the deadline.
    const Clock::Duration can_sleep = deadline - clock.MonotonicNow() - kMinPollCallTimeout;
    if (can_sleep <= Clock::Duration::zero()) return false;
    clock.SleepFor(std::min<Clock::Duration>(options.poll_interval, can_sleep));
  }
}

StatusOr<std::vector<Image>> CriClient::ListImages(CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::ListImagesRequest req;
  v1::ListImagesResponse resp;
  FUN_RETURN_IF_ERROR(Call("ListImages", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.images->ListImages(ctx, req, &resp);
  }));
  std::vector<Image> out;
  out.reserve(static_cast<size_t>(resp.images_size()));
  for (const v1::Image& img : resp.images()) out.push_back(ToImage(img));
  return out;
}

StatusOr<std::optional<Image>> CriClient::ImageStatus(std::string_view ref, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::ImageStatusRequest req;
  req.mutable_image()->set_image(std::string(ref));
  v1::ImageStatusResponse resp;
  FUN_RETURN_IF_ERROR(Call("ImageStatus", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.images->ImageStatus(ctx, req, &resp);
  }));
  if (!resp.has_image()) return std::optional<Image>();
  return std::optional<Image>(ToImage(resp.image()));
}

StatusOr<std::string> CriClient::PullImage(std::string_view ref, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.pull_timeout);
  v1::PullImageRequest req;
  req.mutable_image()->set_image(std::string(ref));
  v1::PullImageResponse resp;
  FUN_RETURN_IF_ERROR(Call("PullImage", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.images->PullImage(ctx, req, &resp);
  }));
  return resp.image_ref();
}

fun::Status CriClient::RemoveImage(std::string_view ref, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::RemoveImageRequest req;
  req.mutable_image()->set_image(std::string(ref));
  v1::RemoveImageResponse resp;
  return Call("RemoveImage", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.images->RemoveImage(ctx, req, &resp);
  });
}

// --- Pods and containers ----------------------------------------------------------------------

StatusOr<std::string> CriClient::RunPodSandbox(const PodSpec& pod, CallOptions call) {
  // Starting a sandbox may pull the pause image and set up the network: more than a plain call.
  const milliseconds timeout = call.timeout.value_or(options_.pull_timeout);
  v1::RunPodSandboxRequest req;
  ToProto(pod, req.mutable_config());
  v1::RunPodSandboxResponse resp;
  FUN_RETURN_IF_ERROR(Call("RunPodSandbox", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->RunPodSandbox(ctx, req, &resp);
  }));
  return resp.pod_sandbox_id();
}

fun::Status CriClient::StopPodSandbox(std::string_view pod_id, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::StopPodSandboxRequest req;
  req.set_pod_sandbox_id(std::string(pod_id));
  v1::StopPodSandboxResponse resp;
  return Call("StopPodSandbox", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->StopPodSandbox(ctx, req, &resp);
  });
}

fun::Status CriClient::RemovePodSandbox(std::string_view pod_id, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::RemovePodSandboxRequest req;
  req.set_pod_sandbox_id(std::string(pod_id));
  v1::RemovePodSandboxResponse resp;
  return Call("RemovePodSandbox", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->RemovePodSandbox(ctx, req, &resp);
  });
}

StatusOr<PodSandbox> CriClient::PodSandboxStatus(std::string_view pod_id, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::PodSandboxStatusRequest req;
  req.set_pod_sandbox_id(std::string(pod_id));
  v1::PodSandboxStatusResponse resp;
  FUN_RETURN_IF_ERROR(Call("PodSandboxStatus", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->PodSandboxStatus(ctx, req, &resp);
  }));
  const v1::PodSandboxStatus& st = resp.status();
  return PodSandbox{.id = st.id(),
                    .name = st.metadata().name(),
                    .uid = st.metadata().uid(),
                    .ns = st.metadata().namespace_(),
                    .attempt = st.metadata().attempt(),
                    .state = FromProto(st.state()),
                    .created_at_ns = st.created_at(),
                    .ip = st.network().ip(),
                    .labels = ToMap(st.labels()),
                    .annotations = ToMap(st.annotations())};
}

StatusOr<std::vector<PodSandbox>> CriClient::ListPodSandbox(const StringMap& label_selector,
                                                            CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::ListPodSandboxRequest req;
  if (!label_selector.empty())
    SetMap(req.mutable_filter()->mutable_label_selector(), label_selector);
  v1::ListPodSandboxResponse resp;
  FUN_RETURN_IF_ERROR(Call("ListPodSandbox", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->ListPodSandbox(ctx, req, &resp);
  }));
  std::vector<PodSandbox> out;
  for (const v1::PodSandbox& p : resp.items()) {
    out.push_back(PodSandbox{.id = p.id(),
                             .name = p.metadata().name(),
                             .uid = p.metadata().uid(),
                             .ns = p.metadata().namespace_(),
                             .attempt = p.metadata().attempt(),
                             .state = FromProto(p.state()),
                             .created_at_ns = p.created_at(),
                             .labels = ToMap(p.labels()),
                             .annotations = ToMap(p.annotations())});
  }
  return out;
}

StatusOr<std::string> CriClient::CreateContainer(std::string_view pod_id, const ContainerSpec& spec,
                                                 const PodSpec& pod, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::CreateContainerRequest req;
  req.set_pod_sandbox_id(std::string(pod_id));
  ToProto(pod, req.mutable_sandbox_config());
  v1::ContainerConfig* c = req.mutable_config();
  c->mutable_metadata()->set_name(spec.name);
  c->mutable_metadata()->set_attempt(spec.attempt);
  c->mutable_image()->set_image(spec.image);
  for (const std::string& a : spec.command) c->add_command(a);
  for (const std::string& a : spec.args) c->add_args(a);
  c->set_working_dir(spec.working_dir);
  for (const auto& [k, v] : spec.envs) {
    v1::KeyValue* kv = c->add_envs();
    kv->set_key(k);
    kv->set_value(v);
  }
  for (const MountSpec& m : spec.mounts) {
    v1::Mount* pm = c->add_mounts();
    pm->set_container_path(m.container_path);
    pm->set_host_path(m.host_path);
    pm->set_readonly(m.readonly);
    // Docker's defaults for -v: mounts made later under the source do not propagate either way,
    // and the source is never relabelled (no SELinux in the VM; natively it is the user's).
    pm->set_propagation(v1::PROPAGATION_PRIVATE);
    pm->set_selinux_relabel(false);
  }
  SetMap(c->mutable_labels(), spec.labels);
  SetMap(c->mutable_annotations(), spec.annotations);
  c->set_log_path(spec.log_path);
  c->set_stdin(spec.stdin);
  c->set_stdin_once(spec.stdin_once);
  c->set_tty(spec.tty);
  // Like Docker, a container's processes start at oom_score_adj 0, whatever the runtime's own
  // score (in the VM, containerd and the agent run at -999 so that a container that eats the
  // VM's memory loses its own process to the OOM killer). Without resources CRI leaves the
  // score to inheritance: the shim's, one above containerd's.
  c->mutable_linux()->mutable_resources()->set_oom_score_adj(0);
  v1::LinuxContainerSecurityContext* sc = c->mutable_linux()->mutable_security_context();
  if (spec.run_as_user) sc->mutable_run_as_user()->set_value(*spec.run_as_user);
  if (spec.run_as_group) sc->mutable_run_as_group()->set_value(*spec.run_as_group);
  sc->set_run_as_username(spec.run_as_username);
  sc->set_privileged(spec.privileged);
  sc->mutable_namespace_options()->set_network(spec.host_network ? v1::NODE : v1::POD);
  // Like Docker, the container's process is PID 1 of a PID namespace of its own (CRI's
  // default, POD, would make the pause process PID 1 and change how signals reach it).
  sc->mutable_namespace_options()->set_pid(spec.host_pid ? v1::NODE : v1::CONTAINER);
  v1::CreateContainerResponse resp;
  FUN_RETURN_IF_ERROR(Call("CreateContainer", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->CreateContainer(ctx, req, &resp);
  }));
  return resp.container_id();
}

fun::Status CriClient::StartContainer(std::string_view id, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::StartContainerRequest req;
  req.set_container_id(std::string(id));
  v1::StartContainerResponse resp;
  return Call("StartContainer", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->StartContainer(ctx, req, &resp);
  });
}

fun::Status CriClient::StopContainer(std::string_view id, std::chrono::seconds grace,
                                     CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(
      std::chrono::duration_cast<milliseconds>(grace) + options_.default_timeout);
  v1::StopContainerRequest req;
  req.set_container_id(std::string(id));
  req.set_timeout(grace.count());
  v1::StopContainerResponse resp;
  return Call("StopContainer", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->StopContainer(ctx, req, &resp);
  });
}

fun::Status CriClient::RemoveContainer(std::string_view id, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::RemoveContainerRequest req;
  req.set_container_id(std::string(id));
  v1::RemoveContainerResponse resp;
  return Call("RemoveContainer", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->RemoveContainer(ctx, req, &resp);
  });
}

StatusOr<std::vector<Container>> CriClient::ListContainers(const ContainerFilter& filter,
                                                           CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::ListContainersRequest req;
  v1::ContainerFilter* f = req.mutable_filter();
  f->set_id(filter.id);
  f->set_pod_sandbox_id(filter.pod_sandbox_id);
  if (filter.state) f->mutable_state()->set_state(ToProto(*filter.state));
  SetMap(f->mutable_label_selector(), filter.label_selector);
  v1::ListContainersResponse resp;
  FUN_RETURN_IF_ERROR(Call("ListContainers", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->ListContainers(ctx, req, &resp);
  }));
  std::vector<Container> out;
  for (const v1::Container& c : resp.containers()) {
    Container o;
    o.id = c.id();
    o.pod_sandbox_id = c.pod_sandbox_id();
    o.name = c.metadata().name();
    o.attempt = c.metadata().attempt();
    o.image = c.image().image();
    o.image_ref = c.image_ref();
    o.state = FromProto(c.state());
    o.created_at_ns = c.created_at();
    o.labels = ToMap(c.labels());
    o.annotations = ToMap(c.annotations());
    out.push_back(std::move(o));
  }
  return out;
}

StatusOr<Container> CriClient::ContainerStatus(std::string_view id, CallOptions call) {
  const milliseconds timeout = call.timeout.value_or(options_.default_timeout);
  v1::ContainerStatusRequest req;
  req.set_container_id(std::string(id));
  v1::ContainerStatusResponse resp;
  FUN_RETURN_IF_ERROR(Call("ContainerStatus", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->ContainerStatus(ctx, req, &resp);
  }));
  const v1::ContainerStatus& st = resp.status();
  Container o;
  o.id = st.id();
  o.name = st.metadata().name();
  o.attempt = st.metadata().attempt();
  o.image = st.image().image();
  o.image_ref = st.image_ref();
  o.state = FromProto(st.state());
  o.created_at_ns = st.created_at();
  o.started_at_ns = st.started_at();
  o.finished_at_ns = st.finished_at();
  o.exit_code = st.exit_code();
  o.reason = st.reason();
  o.message = st.message();
  o.log_path = st.log_path();
  for (const v1::Mount& m : st.mounts()) o.mounts.push_back(FromProto(m));
  o.labels = ToMap(st.labels());
  o.annotations = ToMap(st.annotations());
  return o;
}

StatusOr<ExecResult> CriClient::ExecSync(std::string_view id, const std::vector<std::string>& cmd,
                                         std::chrono::seconds timeout_s, CallOptions call) {
  // The command may run as long as its own timeout; without one, as long as the pull timeout.
  const milliseconds timeout = call.timeout.value_or(
      timeout_s.count() > 0
          ? std::chrono::duration_cast<milliseconds>(timeout_s) + options_.default_timeout
          : options_.pull_timeout);
  v1::ExecSyncRequest req;
  req.set_container_id(std::string(id));
  for (const std::string& a : cmd) req.add_cmd(a);
  req.set_timeout(timeout_s.count());
  v1::ExecSyncResponse resp;
  FUN_RETURN_IF_ERROR(Call("ExecSync", timeout, [&](Channel& ch, grpc::ClientContext* ctx) {
    return ch.runtime->ExecSync(ctx, req, &resp);
  }));
  return ExecResult{
      .stdout_bytes = resp.stdout(), .stderr_bytes = resp.stderr(), .exit_code = resp.exit_code()};
}

StatusOr<std::string> CriClient::Exec(std::string_view id, const std::vector<std::string>& cmd,
                                      const ExecStreams& streams, CallOptions call) {
  v1::ExecRequest req;
  req.set_container_id(std::string(id));
  for (const std::string& a : cmd) req.add_cmd(a);
  req.set_tty(streams.tty);
  req.set_stdin(streams.stdin);
  req.set_stdout(streams.stdout);
  req.set_stderr(streams.stderr);
  v1::ExecResponse resp;
  FUN_RETURN_IF_ERROR(Call(
      "Exec", call.timeout.value_or(options_.default_timeout),
      [&](Channel& ch, grpc::ClientContext* ctx) { return ch.runtime->Exec(ctx, req, &resp); }));
  if (resp.url().empty()) return InternalError("CRI Exec: containerd returned no streaming URL");
  return resp.url();
}

StatusOr<std::string> CriClient::Attach(std::string_view id, const ExecStreams& streams,
                                        CallOptions call) {
  v1::AttachRequest req;
  req.set_container_id(std::string(id));
  req.set_tty(streams.tty);
  req.set_stdin(streams.stdin);
  req.set_stdout(streams.stdout);
  req.set_stderr(streams.stderr);
  v1::AttachResponse resp;
  FUN_RETURN_IF_ERROR(Call(
      "Attach", call.timeout.value_or(options_.default_timeout),
      [&](Channel& ch, grpc::ClientContext* ctx) { return ch.runtime->Attach(ctx, req, &resp); }));
  if (resp.url().empty()) return InternalError("CRI Attach: containerd returned no streaming URL");
  return resp.url();
}

}  // namespace fun::cri
