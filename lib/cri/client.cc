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

}  // namespace

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

template <typename Rpc>
fun::Status CriClient::Call(std::string_view method, milliseconds timeout, Rpc&& rpc) {
  std::shared_ptr<Channel> ch = CurrentChannel();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  const grpc::Status s = std::forward<Rpc>(rpc)(*ch, &ctx);
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

}  // namespace fun::cri
