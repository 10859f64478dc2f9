#include "lib/net/port_forward.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "lib/base/log.h"
#include "lib/base/socket.h"
#include "lib/net/port_check.h"

namespace fun::net {
namespace {

using Steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

// The largest payload a UDP datagram carries (65535 minus the UDP header, and for IPv4 the
// IP header too). A frame from the guest that claims more is not a datagram: the guest is
// broken, and its session ends.
constexpr size_t kMaxUdpPayloadV4 = 65507;
constexpr size_t kMaxUdpPayloadV6 = 65527;
// Per wakeup of the UDP loop: datagrams taken from the socket, reads from one channel. Bounded
// so one busy client or channel cannot starve the others.
constexpr int kDatagramsPerWakeup = 64;
constexpr int kReadsPerWakeup = 8;
constexpr size_t kChannelReadSize = 64 * 1024;

// At most one line per interval; says how many were held back meanwhile.
class LogLimiter {
 public:
  explicit LogLimiter(milliseconds every) : every_(every) {}
  // True when a line may be written now; *held_back gets how many were not since the last.
  bool Allow(uint64_t* held_back) {
    std::lock_guard lock(mu_);
    auto now = Steady::now();
    if (written_ && now - last_ < every_) {
      ++held_back_;
      return false;
    }
    written_ = true;
    last_ = now;
    *held_back = std::exchange(held_back_, 0);
    return true;
  }

 private:
  const milliseconds every_;
  std::mutex mu_;
  bool written_ = false;
  Steady::time_point last_{};
  uint64_t held_back_ = 0;
};

std::string HeldBack(uint64_t n) {
  return n == 0 ? "" : fmt::format(" ({} more like it since the last such line)", n);
}

std::string HostPortString(const std::string& ip, uint16_t port) {
  if (ip.find(':') != std::string::npos) return fmt::format("[{}]:{}", ip, port);
  return fmt::format("{}:{}", ip, port);
}

bool IsIpLiteral(const std::string& ip) {
  unsigned char buf[16];
  return inet_pton(AF_INET, ip.c_str(), buf) == 1 || inet_pton(AF_INET6, ip.c_str(), buf) == 1;
}

Status CheckSpec(const ForwardSpec& spec) {
  if (!IsIpLiteral(spec.host_ip)) {
    return InvalidArgumentError(fmt::format(
        "host address \"{}\" is not an IP address (use 127.0.0.1, 0.0.0.0, ::1 or another "
        "address of this host)",
        spec.host_ip));
  }
  return agent::ParseTarget(spec.target).status();
}

// The bind error a person can act on (the one wording of lib/net/port_check.h).
Status BindError(const Status& s, const ForwardSpec& spec, Protocol protocol) {
  if (s.sys_errno() == 0) return s;
  return ExplainBindError(
      s.sys_errno(), HostPort{.protocol = protocol, .ip = spec.host_ip, .port = spec.host_port});
}

std::string StripKind(const std::string& address) {
  return address.rfind("tcp:", 0) == 0 ? address.substr(4) : address;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TcpForward

struct TcpForward::Counters {
  std::atomic<uint64_t> active{0}, accepted{0}, dial_failures{0}, refused{0};
  std::atomic<uint64_t> bytes_to_target{0}, bytes_to_client{0};
  LogLimiter dial_log;
  LogLimiter refuse_log;
  explicit Counters(milliseconds every) : dial_log(every), refuse_log(every) {}
};

TcpForward::TcpForward(ForwardSpec spec, ChannelDialer dialer, ForwardOptions options)
    : spec_(std::move(spec)),
      dialer_(std::move(dialer)),
      options_(options),
      counters_(std::make_unique<Counters>(options.log_interval)) {}

StatusOr<std::unique_ptr<TcpForward>> TcpForward::Listen(ForwardSpec spec, ChannelDialer dialer,
                                                         ForwardOptions options) {
  FUN_RETURN_IF_ERROR(CheckSpec(spec));
  if (!dialer) return InvalidArgumentError("a forward needs a channel dialer");
  std::unique_ptr<TcpForward> f(new TcpForward(spec, std::move(dialer), options));
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoError(errno, "pipe");
  f->stop_read_.reset(p[0]);
  f->stop_write_.reset(p[1]);
  TcpForward* self = f.get();
  auto loop = AcceptLoop::Create(
      SocketAddress{
          .kind = SocketAddress::Kind::kTcp, .host = spec.host_ip, .port = spec.host_port},
      [self](UniqueFd c, std::string peer) { self->Serve(std::move(c), peer); },
      {.backlog = options.backlog, .thread_stack_size = options.thread_stack_size});
  if (!loop.ok()) return BindError(loop.status(), spec, Protocol::kTcp);
  f->loop_ = std::move(*loop);
  f->address_ = StripKind(f->loop_->address());
  FUN_ASSIGN_OR_RETURN(SocketAddress bound, ParseSocketAddress(f->loop_->address()));
  f->port_ = bound.port;
  f->loop_thread_ = std::thread([self] {
    Status s = self->loop_->Run();
    if (!s.ok()) {
      FUN_LOG(Error, "forward {} -> {}: stopped accepting: {}", self->address_, self->spec_.target,
              s);
    }
  });
  FUN_LOG(Info, "forwarding {} -> {} (tcp)", f->address_, spec.target);
  return f;
}

TcpForward::~TcpForward() { Stop(); }

void TcpForward::Stop() {
  std::lock_guard lock(stop_mu_);
  if (!loop_) return;
  // First the relays (their Splice watches stop_read_), then the listener; ~AcceptLoop joins
  // every connection thread and closes the listening socket.
  char c = 1;
  (void)!::write(stop_write_.get(), &c, 1);
  loop_->Stop();
  if (loop_thread_.joinable()) loop_thread_.join();
  loop_.reset();
}

ForwardCounters TcpForward::counters() const {
  const Counters& c = *counters_;
  return {.active = c.active.load(),
          .accepted = c.accepted.load(),
          .dial_failures = c.dial_failures.load(),
          .refused = c.refused.load(),
          .bytes_to_target = c.bytes_to_target.load(),
          .bytes_to_client = c.bytes_to_client.load()};
}

void TcpForward::Serve(UniqueFd client, const std::string& peer_address) {
  Counters& c = *counters_;
  const std::string peer = StripKind(peer_address);
  c.accepted.fetch_add(1);
  if (c.active.fetch_add(1) >= static_cast<uint64_t>(std::max(options_.max_connections, 0))) {
    c.active.fetch_sub(1);
    c.refused.fetch_add(1);
    uint64_t held = 0;
    if (c.refuse_log.Allow(&held)) {
      FUN_LOG(Warning, "forward {} -> {}: closed the connection from {}: {} connections already{}",
              address_, spec_.target, peer, options_.max_connections, HeldBack(held));
    }
    return;
  }
  struct Release {
    std::atomic<uint64_t>& active;
    ~Release() { active.fetch_sub(1); }
  } release{c.active};

  StatusOr<UniqueFd> channel = dialer_(agent::Kind::kTcp, spec_.target);
  if (!channel.ok()) {
    c.dial_failures.fetch_add(1);
    uint64_t held = 0;
    if (c.dial_log.Allow(&held)) {
      FUN_LOG(Warning,
              "forward {} -> {}: cannot reach the target for {}: {} (closed its "
              "connection){}",
              address_, spec_.target, peer, channel.status().message(), HeldBack(held));
    }
    return;
  }
  const std::string channel_name = "the channel to " + spec_.target;
  SpliceStats stats;
  Status s = Splice(client.get(), channel->get(),
                    {.buffer_size = options_.buffer_size,
                     .idle_timeout = options_.tcp_idle_timeout,
                     .stop_fd = stop_read_.get(),
                     .method = options_.splice_method,
                     .stats = &stats,
                     .a_name = peer,
                     .b_name = channel_name});
  c.bytes_to_target.fetch_add(stats.a_to_b);
  c.bytes_to_client.fetch_add(stats.b_to_a);
  FUN_LOG(Debug, "forward {} -> {}: {} ended: {} ({} bytes to the target, {} back)", address_,
          spec_.target, peer, s.ok() ? "ok" : s.message(), stats.a_to_b, stats.b_to_a);
}

// ---------------------------------------------------------------------------------------------
// UdpForward

class UdpForward::Loop {
 public:
  Loop(ForwardSpec spec, ChannelDialer dialer, ForwardOptions options, UniqueFd sock,
       std::string address, UniqueFd stop_read, UniqueFd stop_write, UniqueFd wake_read,
       UniqueFd wake_write)
      : spec_(std::move(spec)),
        dialer_(std::move(dialer)),
        options_(options),
        sock_(std::move(sock)),
        address_(std::move(address)),
        stop_read_(std::move(stop_read)),
        stop_write_(std::move(stop_write)),
        wake_read_(std::move(wake_read)),
        wake_write_(std::move(wake_write)),
        dial_log_(options.log_interval),
        datagram_(std::make_unique_for_overwrite<char[]>(65536)),
        channel_buf_(std::make_unique_for_overwrite<char[]>(kChannelReadSize)) {}

  ~Loop() { JoinDials(); }

  void Run();
  void RequestStop() {
    char c = 1;
    (void)!::write(stop_write_.get(), &c, 1);
  }
  // After Run has returned: frees the port.
  void CloseSocket() { sock_.reset(); }
  // After Run has returned: waits for dials in flight.
  void JoinDials() {
    for (auto& d : dials_) {
      if (d.thread.joinable()) d.thread.join();
    }
    dials_.clear();
  }

  ForwardCounters counters() const {
    return {.active = active_.load(),
            .accepted = accepted_.load(),
            .dial_failures = dial_failures_.load(),
            .evicted = evicted_.load(),
            .bytes_to_target = bytes_to_target_.load(),
            .bytes_to_client = bytes_to_client_.load(),
            .datagrams_to_target = datagrams_to_target_.load(),
            .datagrams_to_client = datagrams_to_client_.load(),
            .datagrams_dropped = dropped_.load()};
  }

 private:
  enum class State { kDialing, kOpen, kBackoff };
  struct Session {
    uint64_t id = 0;
    std::string key;
    sockaddr_storage client{};
    socklen_t client_len = 0;
    std::string name;  // "127.0.0.1:5555"
    State state = State::kDialing;
    UniqueFd channel;
    std::string out;  // framed datagrams for the channel, from out_off on
    size_t out_off = 0;
    std::string in;  // bytes from the channel that are not a whole frame yet
    uint64_t dialing_datagrams = 0, dialing_bytes = 0;  // queued while dialing
    Steady::time_point last_activity{};
    Steady::time_point retry_at{};
    milliseconds backoff{0};
    size_t pending() const { return out.size() - out_off; }
  };
  struct DialResult {
    uint64_t id;
    StatusOr<UniqueFd> channel;
  };
  struct DialThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  static std::string ClientKey(const sockaddr_storage& ss) {
    std::string key;
    if (ss.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
      key.assign("4");
      key.append(reinterpret_cast<const char*>(&v4->sin_addr), sizeof(v4->sin_addr));
      key.append(reinterpret_cast<const char*>(&v4->sin_port), sizeof(v4->sin_port));
    } else {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
      key.assign("6");
      key.append(reinterpret_cast<const char*>(&v6->sin6_addr), sizeof(v6->sin6_addr));
      key.append(reinterpret_cast<const char*>(&v6->sin6_port), sizeof(v6->sin6_port));
      key.append(reinterpret_cast<const char*>(&v6->sin6_scope_id), sizeof(v6->sin6_scope_id));
    }
    return key;
  }

  void ReceiveFromClients();
  void OnDatagram(const sockaddr_storage& from, socklen_t from_len, std::string_view payload);
  Session* NewSession(const sockaddr_storage& from, socklen_t from_len, std::string key);
  void StartDial(Session* s);
  void TakeDialResults();
  void ReapDials();
  void Enqueue(Session* s, std::string_view payload);
  bool Flush(Session* s);        // false: the session was closed
  bool ReadChannel(Session* s);  // false: the session was closed
  bool DeliverFrames(Session* s);
  void Close(Session* s, std::string_view why);
  void EvictOldest();
  void Sweep(Steady::time_point now);
  void UpdateActive() { active_.store(sessions_.size()); }

  const ForwardSpec spec_;
  const ChannelDialer dialer_;
  const ForwardOptions options_;
  UniqueFd sock_;
  const std::string address_;
  const UniqueFd stop_read_, stop_write_;
  const UniqueFd wake_read_, wake_write_;  // a dial thread's result is ready
  LogLimiter dial_log_;
  std::unique_ptr<char[]> datagram_;
  std::unique_ptr<char[]> channel_buf_;

  // The loop thread's alone.
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions_;
  std::unordered_map<std::string, uint64_t> by_client_;
  Steady::time_point next_sweep_ = Steady::time_point::max();
  std::vector<DialThread> dials_;

  std::mutex results_mu_;
  std::vector<DialResult> results_;

  std::atomic<uint64_t> active_{0}, accepted_{0}, dial_failures_{0}, evicted_{0};
  std::atomic<uint64_t> bytes_to_target_{0}, bytes_to_client_{0};
  std::atomic<uint64_t> datagrams_to_target_{0}, datagrams_to_client_{0}, dropped_{0};
};

void UdpForward::Loop::Run() {
  std::vector<pollfd> p;
  std::vector<uint64_t> ids;
  for (;;) {
    p.clear();
    ids.clear();
    p.push_back({sock_.get(), POLLIN, 0});
    p.push_back({stop_read_.get(), POLLIN, 0});
    p.push_back({wake_read_.get(), POLLIN, 0});
    for (const auto& [id, s] : sessions_) {
      if (s->state != State::kOpen) continue;
      p.push_back({s->channel.get(), static_cast<short>(POLLIN | (s->pending() ? POLLOUT : 0)), 0});
      ids.push_back(id);
    }
    int timeout_ms = -1;
    if (next_sweep_ != Steady::time_point::max()) {
      auto left = std::chrono::ceil<milliseconds>(next_sweep_ - Steady::now()).count();
      timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, 60 * 60 * 1000));
    }
    int n = ::poll(p.data(), p.size(), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      FUN_LOG(Error, "forward {}/udp -> {}: poll: {} (stopped)", address_, spec_.target,
              std::strerror(errno));
      break;
    }
    if (p[1].revents != 0) break;
    if (p[2].revents != 0) {
      char drain[256];
      while (::read(wake_read_.get(), drain, sizeof(drain)) > 0) {
      }
      TakeDialResults();
      ReapDials();
    }
    for (size_t i = 3; i < p.size(); ++i) {
      if (p[i].revents == 0) continue;
      auto it = sessions_.find(ids[i - 3]);
      if (it == sessions_.end()) continue;  // closed earlier in this round
      Session* s = it->second.get();
      if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && !ReadChannel(s)) continue;
      if ((p[i].revents & POLLOUT) != 0) Flush(s);
    }
    if (p[0].revents != 0) ReceiveFromClients();
    auto now = Steady::now();
    if (now >= next_sweep_) Sweep(now);
  }
  sessions_.clear();
  by_client_.clear();
  UpdateActive();
}

void UdpForward::Loop::ReceiveFromClients() {
  for (int i = 0; i < kDatagramsPerWakeup; ++i) {
    sockaddr_storage from{};
    socklen_t from_len = sizeof(from);
    ssize_t n = ::recvfrom(sock_.get(), datagram_.get(), 65536, MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        FUN_LOG(Debug, "forward {}/udp: recvfrom: {}", address_, std::strerror(errno));
      }
      return;
    }
    if (from.ss_family != AF_INET && from.ss_family != AF_INET6) continue;
    OnDatagram(from, from_len, std::string_view(datagram_.get(), static_cast<size_t>(n)));
  }
}

void UdpForward::Loop::OnDatagram(const sockaddr_storage& from, socklen_t from_len,
                                  std::string_view payload) {
  const auto now = Steady::now();
  std::string key = ClientKey(from);
  Session* s;
  if (auto it = by_client_.find(key); it != by_client_.end()) {
    s = sessions_.at(it->second).get();
  } else {
    if (sessions_.size() >= std::max<size_t>(options_.max_udp_sessions, 1)) EvictOldest();
    s = NewSession(from, from_len, std::move(key));
    StartDial(s);
  }
  s->last_activity = now;
  if (s->state == State::kBackoff) {
    if (now < s->retry_at) {
      dropped_.fetch_add(1);
      return;
    }
    StartDial(s);
  }
  Enqueue(s, payload);
  if (s->state == State::kOpen) Flush(s);
}

UdpForward::Loop::Session* UdpForward::Loop::NewSession(const sockaddr_storage& from,
                                                        socklen_t from_len, std::string key) {
  auto s = std::make_unique<Session>();
  s->id = next_id_++;
  s->key = std::move(key);
  s->client = from;
  s->client_len = from_len;
  s->name = FormatIpPort(from);
  s->last_activity = Steady::now();
  Session* raw = s.get();
  by_client_[raw->key] = raw->id;
  sessions_[raw->id] = std::move(s);
  accepted_.fetch_add(1);
  UpdateActive();
  // A new session expires no earlier than any other: the next sweep stays right, unless there
  // was none to come.
  if (next_sweep_ == Steady::time_point::max()) {
    next_sweep_ = raw->last_activity + options_.udp_idle_timeout;
  }
  FUN_LOG(Debug, "forward {}/udp -> {}: new session for {}", address_, spec_.target, raw->name);
  return raw;
}

void UdpForward::Loop::StartDial(Session* s) {
  s->state = State::kDialing;
  auto done = std::make_shared<std::atomic<bool>>(false);
  const uint64_t id = s->id;
  try {
    std::thread t([this, id, done] {
      StatusOr<UniqueFd> channel = dialer_(agent::Kind::kUdp, spec_.target);
      {
        std::lock_guard lock(results_mu_);
        results_.push_back({id, std::move(channel)});
      }
      char c = 1;
      (void)!::write(wake_write_.get(), &c, 1);  // a full pipe is readable already
      done->store(true);
    });
    dials_.push_back({std::move(t), done});
  } catch (const std::system_error& e) {
    std::lock_guard lock(results_mu_);
    results_.push_back(
        {id, ResourceExhaustedError(fmt::format("cannot start a dial thread: {}", e.what()))});
    char c = 1;
    (void)!::write(wake_write_.get(), &c, 1);
  }
}

void UdpForward::Loop::ReapDials() {
  for (auto it = dials_.begin(); it != dials_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = dials_.erase(it);
    } else {
      ++it;
    }
  }
}

void UdpForward::Loop::TakeDialResults() {
  std::vector<DialResult> results;
  {
    std::lock_guard lock(results_mu_);
    results.swap(results_);
  }
  for (DialResult& r : results) {
    auto it = sessions_.find(r.id);
    if (it == sessions_.end()) continue;  // ended while dialing: the channel just closes
    Session* s = it->second.get();
    if (r.channel.ok()) {
      s->channel = std::move(*r.channel);
      int flags = ::fcntl(s->channel.get(), F_GETFL);
      if (flags >= 0) ::fcntl(s->channel.get(), F_SETFL, flags | O_NONBLOCK);
      s->state = State::kOpen;
      s->backoff = milliseconds{0};
      datagrams_to_target_.fetch_add(s->dialing_datagrams);
      bytes_to_target_.fetch_add(s->dialing_bytes);
      s->dialing_datagrams = s->dialing_bytes = 0;
      Flush(s);
      continue;
    }
    dial_failures_.fetch_add(1);
    dropped_.fetch_add(s->dialing_datagrams);
    s->dialing_datagrams = s->dialing_bytes = 0;
    s->out.clear();
    s->out_off = 0;
    s->state = State::kBackoff;
    s->backoff = s->backoff.count() == 0
                     ? options_.dial_backoff_initial
                     : std::min(s->backoff * 2,
                                std::max(options_.dial_backoff_max, options_.dial_backoff_initial));
    s->retry_at = Steady::now() + s->backoff;
    uint64_t held = 0;
    if (dial_log_.Allow(&held)) {
      FUN_LOG(Warning,
              "forward {}/udp -> {}: cannot reach the target for {}: {} (dropping its "
              "datagrams for {} ms, then trying again){}",
              address_, spec_.target, s->name, r.channel.status().message(), s->backoff.count(),
              HeldBack(held));
    }
  }
}

void UdpForward::Loop::Enqueue(Session* s, std::string_view payload) {
  StatusOr<std::string> frame = agent::EncodeDatagram(payload);
  if (!frame.ok() || s->pending() + frame->size() > options_.udp_queue_bytes) {
    dropped_.fetch_add(1);
    return;
  }
  if (s->out_off > 0 && s->out_off == s->out.size()) {
    s->out.clear();
    s->out_off = 0;
  }
  s->out += *frame;
  if (s->state == State::kDialing) {
    ++s->dialing_datagrams;
    s->dialing_bytes += payload.size();
  } else {
    datagrams_to_target_.fetch_add(1);
    bytes_to_target_.fetch_add(payload.size());
  }
}

bool UdpForward::Loop::Flush(Session* s) {
  while (s->pending() > 0) {
    ssize_t n = ::send(s->channel.get(), s->out.data() + s->out_off, s->pending(),
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK)
      n = ::write(s->channel.get(), s->out.data() + s->out_off, s->pending());
    if (n > 0) {
      s->out_off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    Close(s, fmt::format("writing to the channel: {}", std::strerror(errno)));
    return false;
  }
  if (s->out_off == s->out.size()) {
    s->out.clear();
    s->out_off = 0;
  } else if (s->out_off >= 64 * 1024 && s->out_off * 2 >= s->out.size()) {
    s->out.erase(0, s->out_off);
    s->out_off = 0;
  }
  return true;
}

bool UdpForward::Loop::ReadChannel(Session* s) {
  for (int i = 0; i < kReadsPerWakeup; ++i) {
    ssize_t n = ::read(s->channel.get(), channel_buf_.get(), kChannelReadSize);
    if (n > 0) {
      s->in.append(channel_buf_.get(), static_cast<size_t>(n));
      if (!DeliverFrames(s)) return false;
      continue;
    }
    if (n == 0) {
      Close(s, "the channel ended");
      return false;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    Close(s, fmt::format("reading from the channel: {}", std::strerror(errno)));
    return false;
  }
  return true;
}

bool UdpForward::Loop::DeliverFrames(Session* s) {
  const size_t max_payload = s->client.ss_family == AF_INET ? kMaxUdpPayloadV4 : kMaxUdpPayloadV6;
  size_t pos = 0;
  for (;;) {
    std::string_view rest = std::string_view(s->in).substr(pos);
    if (rest.size() >= 2) {
      // Judged on the length alone, before the payload arrives: no need to buffer 64 KiB of
      // a frame that can only be refused.
      size_t len =
          static_cast<uint8_t>(rest[0]) | (static_cast<size_t>(static_cast<uint8_t>(rest[1])) << 8);
      if (len > max_payload) {
        Close(s, fmt::format("a malformed frame from the channel: {} bytes, more than a UDP "
                             "datagram to {} can hold ({})",
                             len, s->name, max_payload));
        return false;
      }
    }
    auto got = agent::DecodeDatagram(rest);
    if (!got.ok()) {
      Close(s, "a malformed frame from the channel: " + got.status().message());
      return false;
    }
    if (!got->has_value()) break;
    auto [payload, consumed] = **got;
    pos += consumed;
    ssize_t n;
    do {
      n = ::sendto(sock_.get(), payload.data(), payload.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                   reinterpret_cast<const sockaddr*>(&s->client), s->client_len);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      dropped_.fetch_add(1);  // the socket's buffer is full, or the client is unreachable
    } else {
      datagrams_to_client_.fetch_add(1);
      bytes_to_client_.fetch_add(payload.size());
    }
    s->last_activity = Steady::now();
  }
  s->in.erase(0, pos);
  return true;
}

void UdpForward::Loop::Close(Session* s, std::string_view why) {
  FUN_LOG(Debug, "forward {}/udp -> {}: session for {} ended: {}", address_, spec_.target, s->name,
          why);
  if (s->state == State::kDialing) dropped_.fetch_add(s->dialing_datagrams);
  by_client_.erase(s->key);
  sessions_.erase(s->id);  // closes the channel; a dial in flight finds no session
  UpdateActive();
}

void UdpForward::Loop::EvictOldest() {
  Session* oldest = nullptr;
  for (auto& [id, s] : sessions_) {
    if (oldest == nullptr || s->last_activity < oldest->last_activity) oldest = s.get();
  }
  if (oldest == nullptr) return;
  evicted_.fetch_add(1);
  Close(oldest,
        fmt::format("evicted for a new client ({} sessions at most)", options_.max_udp_sessions));
}

void UdpForward::Loop::Sweep(Steady::time_point now) {
  std::vector<Session*> expired;
  next_sweep_ = Steady::time_point::max();
  for (auto& [id, s] : sessions_) {
    auto deadline = s->last_activity + options_.udp_idle_timeout;
    if (deadline <= now) {
      expired.push_back(s.get());
    } else {
      next_sweep_ = std::min(next_sweep_, deadline);
    }
  }
  for (Session* s : expired) {
    Close(s, fmt::format("idle for {} ms", options_.udp_idle_timeout.count()));
  }
}

UdpForward::UdpForward(ForwardSpec spec, std::unique_ptr<Loop> loop)
    : spec_(std::move(spec)), loop_(std::move(loop)) {}

StatusOr<std::unique_ptr<UdpForward>> UdpForward::Listen(ForwardSpec spec, ChannelDialer dialer,
                                                         ForwardOptions options) {
  FUN_RETURN_IF_ERROR(CheckSpec(spec));
  if (!dialer) return InvalidArgumentError("a forward needs a channel dialer");
  auto sock = BindUdp(SocketAddress{
      .kind = SocketAddress::Kind::kTcp, .host = spec.host_ip, .port = spec.host_port});
  if (!sock.ok()) return BindError(sock.status(), spec, Protocol::kUdp);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (::getsockname(sock->get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return ErrnoError(errno, "getsockname");
  }
  const std::string address = FormatIpPort(bound);
  const uint16_t port =
      ntohs(bound.ss_family == AF_INET ? reinterpret_cast<const sockaddr_in*>(&bound)->sin_port
                                       : reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
  int stop[2], wake[2];
  if (::pipe2(stop, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoError(errno, "pipe");
  UniqueFd stop_read(stop[0]), stop_write(stop[1]);
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) return ErrnoError(errno, "pipe");
  auto loop = std::make_unique<Loop>(spec, std::move(dialer), options, std::move(*sock), address,
                                     std::move(stop_read), std::move(stop_write), UniqueFd(wake[0]),
                                     UniqueFd(wake[1]));
  std::unique_ptr<UdpForward> f(new UdpForward(spec, std::move(loop)));
  f->address_ = address;
  f->port_ = port;
  Loop* raw = f->loop_.get();
  f->loop_thread_ = std::thread([raw] { raw->Run(); });
  FUN_LOG(Info, "forwarding {}/udp -> {}", address, spec.target);
  return f;
}

UdpForward::~UdpForward() { Stop(); }

void UdpForward::Stop() {
  std::lock_guard lock(stop_mu_);
  if (!loop_) return;
  loop_->RequestStop();
  if (loop_thread_.joinable()) loop_thread_.join();
  loop_->CloseSocket();
  loop_->JoinDials();
}

ForwardCounters UdpForward::counters() const { return loop_->counters(); }

// ---------------------------------------------------------------------------------------------
// Flags

StatusOr<ForwardFlag> ParseForwardFlag(std::string_view flag) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(
        fmt::format("bad forward \"{}\": {} (expected [HOSTIP:]HOSTPORT:TARGETIP:TARGETPORT"
                    "[/udp], IPv6 addresses in brackets)",
                    flag.substr(0, 200), why));
  };
  ForwardFlag f;
  std::string_view rest = flag;
  if (auto slash = rest.rfind('/'); slash != std::string_view::npos) {
    std::string_view proto = rest.substr(slash + 1);
    if (proto == "tcp") {
      f.protocol = Protocol::kTcp;
    } else if (proto == "udp") {
      f.protocol = Protocol::kUdp;
    } else {
      return bad(fmt::format("\"{}\" is not a protocol (tcp or udp)", proto));
    }
    rest = rest.substr(0, slash);
  }
  std::vector<std::string_view> parts;
  size_t start = 0;
  bool in_brackets = false;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == '[') in_brackets = true;
    if (rest[i] == ']') in_brackets = false;
    if (rest[i] == ':' && !in_brackets) {
      parts.push_back(rest.substr(start, i - start));
      start = i + 1;
    }
  }
  parts.push_back(rest.substr(start));
  if (parts.size() != 3 && parts.size() != 4) {
    return bad("it needs a host port, a target address and a target port");
  }
  if (parts.size() == 4) {
    std::string_view ip = parts[0];
    if (ip.size() >= 2 && ip.front() == '[' && ip.back() == ']') ip = ip.substr(1, ip.size() - 2);
    f.spec.host_ip = std::string(ip);
    if (!IsIpLiteral(f.spec.host_ip)) {
      return bad(fmt::format("the host address \"{}\" is not an IP address", ip));
    }
    if (f.spec.host_ip.find(':') != std::string::npos && parts[0].front() != '[') {
      return bad("an IPv6 host address goes in brackets: [::1]:8080:...");
    }
  }
  std::string_view host_port = parts[parts.size() - 3];
  int port = -1;
  if (!host_port.empty() && host_port.size() <= 5 &&
      std::all_of(host_port.begin(), host_port.end(),
                  [](char c) { return c >= '0' && c <= '9'; })) {
    port = std::stoi(std::string(host_port));
  }
  if (port < 0 || port > 65535) {
    return bad(fmt::format("the host port \"{}\" is not a number from 0 to 65535", host_port));
  }
  f.spec.host_port = static_cast<uint16_t>(port);
  f.spec.target = fmt::format("{}:{}", parts[parts.size() - 2], parts[parts.size() - 1]);
  auto target = agent::ParseTarget(f.spec.target);
  if (!target.ok()) return bad(target.status().message());
  return f;
}

std::string FormatForwardFlag(const ForwardFlag& f) {
  return fmt::format("{} -> {}/{}", HostPortString(f.spec.host_ip, f.spec.host_port), f.spec.target,
                     ProtocolName(f.protocol));
}

}  // namespace fun::net
