#include "lib/vsock/device.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>

#include "lib/base/log.h"
#include "lib/base/socket.h"
#include "lib/vhost/message.h"
#include "lib/vhost/virtqueue.h"
#include "lib/vsock/packet.h"

namespace fun::vsock {
namespace {

constexpr uint32_t kRx = 0;  // device to driver
constexpr uint32_t kTx = 1;  // driver to device
constexpr uint32_t kQueues = 2;

// epoll tags: the kind in the high half, an fd in the low half for streams.
enum Tag : uint64_t {
  kListen = 1,
  kStop,
  kFrontend,
  kKickRx,
  kKickTx,
  kStream,
  kConnectListen,  // the connect socket
  kDialer,         // a connect socket client still writing its line
  kConnecting,     // a client whose Connect the guest has not answered
};
uint64_t MakeTag(Tag t, int fd = 0) { return (uint64_t{t} << 32) | static_cast<uint32_t>(fd); }

struct Ring {
  uint32_t num = 0;
  std::optional<vhost::VringAddr> addr;
  uint16_t base = 0;
  UniqueFd kick;
  UniqueFd call;
  bool disabled = false;  // SET_VRING_ENABLE 0
  vhost::SplitQueue q;
  bool running() const { return q.configured() && kick.valid() && !disabled; }
};

struct Mapping {
  void* base = MAP_FAILED;
  size_t len = 0;
};

struct Stream {
  UniqueFd fd;
  bool eof = false;            // the host side closed: nothing more to read
  bool peer_shutdown = false;  // the guest sends no more: shut our write side once flushed
  bool write_shut = false;
  // When the guest's latest bytes arrived, while the host has not answered them yet: the
  // reply latency clock (VsockDeviceStats::replies).
  std::optional<std::chrono::steady_clock::time_point> unanswered_since;
  bool guest_opened = true;  // false: through the connect socket (not timed)
};

bool ReadFull(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Calls fn(piece, length) for the chain's segments from byte `offset` on, `n` bytes at most, in
// order; returns how many bytes the pieces hold in all.
template <typename Fn>
size_t ForEachPiece(const std::vector<vhost::Segment>& segs, size_t offset, size_t n, Fn fn) {
  size_t done = 0;
  for (const auto& s : segs) {
    if (done == n) break;
    if (offset >= s.len) {
      offset -= s.len;
      continue;
    }
    size_t k = std::min<size_t>(s.len - offset, n - done);
    fn(s.data + offset, k);
    done += k;
    offset = 0;
  }
  return done;
}

// Copies `n` bytes at `offset` of the chain's segments to `out` (gather).
size_t Gather(const std::vector<vhost::Segment>& segs, size_t offset, uint8_t* out, size_t n) {
  return ForEachPiece(segs, offset, n, [&, at = out](uint8_t* p, size_t k) mutable {
    std::memcpy(at, p, k);
    at += k;
  });
}

// Copies `n` bytes to the chain's segments from `offset` on (scatter).
void Scatter(const std::vector<vhost::Segment>& segs, size_t offset, const uint8_t* in, size_t n) {
  ForEachPiece(segs, offset, n, [at = in](uint8_t* p, size_t k) mutable {
    std::memcpy(p, at, k);
    at += k;
  });
}

// The segments' iovecs from `offset`, at most `n` bytes.
std::vector<iovec> Iovecs(const std::vector<vhost::Segment>& segs, size_t offset, size_t n) {
  std::vector<iovec> v;
  ForEachPiece(segs, offset, n, [&](uint8_t* p, size_t k) { v.push_back({p, k}); });
  return v;
}

}  // namespace

class VsockDevice::Impl {
 public:
  explicit Impl(VsockDeviceOptions o) : o_(std::move(o)) {}
  ~Impl() { DropFrontend(); }

  Status Init();
  Status Run();
  void Stop() { (void)::eventfd_write(stop_.get(), 1); }
  VsockDeviceStats stats() const {
    VsockDeviceStats s;
    s.frontends = frontends_;
    s.streams = streams_opened_;
    s.connects = connects_;
    s.connects_failed = connects_failed_;
    s.bytes_to_guest = bytes_to_guest_;
    s.bytes_from_guest = bytes_from_guest_;
    s.notifies = notifies_;
    s.protocol_errors = protocol_errors_;
    s.replies = replies_;
    s.reply_latency_ns = reply_latency_ns_;
    return s;
  }

 private:
  void Log(const std::string& m) {
    if (o_.log) {
      o_.log(m);
    } else {
      FUN_LOG(Info, "vsock device: {}", m);
    }
  }
  Status Watch(int fd, uint32_t events, uint64_t tag) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      return ErrnoError(errno, "epoll_ctl add");
    }
    return OkStatus();
  }
  void Unwatch(int fd) { (void)::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

  void AcceptFrontend();
  // The connect socket: new clients, their lines, and clients that hang up while connecting.
  void AcceptDialers();
  void ReadDialer(int fd);
  void DialerHungUp(int fd);
  void FailConnect(const std::string& why);
  // A connection table listening on the options' ports (a new front-end, a reset device).
  std::unique_ptr<Mux> NewMux() const;
  // One message from QEMU. An error drops the front-end.
  Status HandleMessage();
  Status Dispatch(const vhost::Header& h, std::span<const uint8_t> payload,
                  std::vector<UniqueFd>& fds, bool& replied);
  Status Reply(const std::string& bytes);
  Status SetMemTable(std::span<const uint8_t> payload, std::vector<UniqueFd>& fds);
  Status StartRing(uint32_t index);
  void StopRing(uint32_t index);
  void DropFrontend();
  void DropStreams();

  // Moves packets and bytes as far as the rings, credits and sockets allow.
  Status Pump();
  // Each returns whether it moved anything.
  StatusOr<bool> DrainTx();
  void HandleEvents(const std::vector<Event>& events);
  // Watches a connected stream's fd and adds it (false, with the connection reset, when
  // epoll refuses it).
  bool AddStream(const ConnKey& k, UniqueFd fd);
  void CloseStream(const ConnKey& k);
  bool FlushToHost();
  StatusOr<bool> FillRx();
  void Notify();

  VsockDeviceOptions o_;
  UniqueFd listen_;
  UniqueFd epoll_;
  UniqueFd stop_;
  UniqueFd frontend_;
  uint64_t features_ = 0;
  uint64_t protocol_features_ = 0;
  std::vector<Mapping> maps_;
  vhost::GuestMemory mem_;
  Ring rings_[kQueues];
  std::unique_ptr<Mux> mux_;
  std::map<ConnKey, Stream> streams_;
  std::vector<uint8_t> scratch_;
  UniqueFd connect_listen_;
  std::map<int, std::pair<UniqueFd, std::string>> dialers_;  // by fd: the line so far
  std::map<ConnKey, UniqueFd> connecting_;                   // Connects the guest owes an answer

  std::atomic<uint64_t> frontends_{0};
  std::atomic<uint64_t> streams_opened_{0};
  std::atomic<uint64_t> connects_{0};
  std::atomic<uint64_t> connects_failed_{0};
  std::atomic<uint64_t> bytes_to_guest_{0};
  std::atomic<uint64_t> bytes_from_guest_{0};
  std::atomic<uint64_t> notifies_{0};
  std::atomic<uint64_t> protocol_errors_{0};
  std::atomic<uint64_t> replies_{0};
  std::atomic<uint64_t> reply_latency_ns_{0};
};

Status VsockDevice::Impl::Init() {
  if (o_.socket_path.empty()) return InvalidArgumentError("vsock device: no socket path");
  FUN_ASSIGN_OR_RETURN(
      listen_,
      Listen(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = o_.socket_path}, 4, 0600));
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!epoll_ || !stop_) return ErrnoError(errno, "vsock device: epoll/eventfd");
  FUN_RETURN_IF_ERROR(Watch(listen_.get(), EPOLLIN, MakeTag(kListen)));
  FUN_RETURN_IF_ERROR(Watch(stop_.get(), EPOLLIN, MakeTag(kStop)));
  if (!o_.connect_socket_path.empty()) {
    FUN_ASSIGN_OR_RETURN(connect_listen_, Listen(SocketAddress{.kind = SocketAddress::Kind::kUnix,
                                                               .path = o_.connect_socket_path},
                                                 64, 0600));
    (void)::fcntl(connect_listen_.get(), F_SETFL, O_NONBLOCK);  // AcceptDialers takes them all
    FUN_RETURN_IF_ERROR(Watch(connect_listen_.get(), EPOLLIN, MakeTag(kConnectListen)));
  }
  return OkStatus();
}

Status VsockDevice::Impl::Run() {
  epoll_event evs[64];
  while (true) {
    int n = ::epoll_wait(epoll_.get(), evs, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, "vsock device: epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      uint64_t tag = evs[i].data.u64;
      switch (static_cast<Tag>(tag >> 32)) {
        case kStop:
          return OkStatus();
        case kListen:
          AcceptFrontend();
          break;
        case kFrontend:
          if (frontend_) {
            Status s = HandleMessage();
            if (!s.ok()) {
              Log("front-end dropped: " + s.message());
              DropFrontend();
            }
          }
          break;
        case kKickRx:
        case kKickTx: {
          uint32_t q = (tag >> 32) == kKickRx ? kRx : kTx;
          eventfd_t v;
          if (rings_[q].kick) (void)::eventfd_read(rings_[q].kick.get(), &v);
          break;
        }
        case kStream:
          break;  // Pump visits every stream
        case kConnectListen:
          AcceptDialers();
          break;
        case kDialer:
          ReadDialer(static_cast<int>(tag & 0xffffffff));
          break;
        case kConnecting:
          DialerHungUp(static_cast<int>(tag & 0xffffffff));
          break;
      }
    }
    if (frontend_) {
      Status s = Pump();
      if (!s.ok()) {
        ++protocol_errors_;
        Log("the guest broke a virtqueue, device stopped until QEMU sets it up again: " +
            s.message());
        DropFrontend();
      }
    }
  }
}

void VsockDevice::Impl::AcceptFrontend() {
  auto c = Accept(listen_.get());
  if (!c.ok()) {
    Log("accept: " + c.status().message());
    return;
  }
  if (frontend_) {
    Log("a second front-end connected while one is served: refused");
    return;  // closed
  }
  frontend_ = std::move(*c);
  if (Status s = Watch(frontend_.get(), EPOLLIN, MakeTag(kFrontend)); !s.ok()) {
    Log(s.message());
    frontend_.reset();
    return;
  }
  mux_ = NewMux();
  ++frontends_;
}

void VsockDevice::Impl::AcceptDialers() {
  for (;;) {
    int fd = ::accept4(connect_listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        Log(fmt::format("connect socket: accept: {}", std::strerror(errno)));
      }
      return;
    }
    UniqueFd c(fd);
    if (!Watch(fd, EPOLLIN | EPOLLRDHUP, MakeTag(kDialer, fd)).ok()) continue;  // closed
    dialers_[fd] = {std::move(c), std::string()};
  }
}

// Logged the first few times, then every 100th: a booting guest refuses the agent's dials
// every 100 ms until it listens.
void VsockDevice::Impl::FailConnect(const std::string& why) {
  const uint64_t n = ++connects_failed_;
  if (n <= 8 || n % 100 == 0) {
    Log(fmt::format("connect socket: {} ({} failed so far)", why, n));
  }
}

// Reads no further than the line: what the client sends next is the stream's.
void VsockDevice::Impl::ReadDialer(int fd) {
  auto it = dialers_.find(fd);
  if (it == dialers_.end()) return;
  std::string& line = it->second.second;
  char buf[kConnectLineSize];
  ssize_t r;
  do {
    r = ::recv(fd, buf, kConnectLineSize - line.size(), MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (r <= 0) {
    Unwatch(fd);
    dialers_.erase(it);  // gone before its line was whole
    return;
  }
  line.append(buf, static_cast<size_t>(r));
  if (line.size() < kConnectLineSize) return;
  Unwatch(fd);
  UniqueFd c = std::move(it->second.first);
  const std::string whole = std::move(line);
  dialers_.erase(it);
  auto target = ParseConnectLine(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(whole.data()), whole.size()));
  if (!target.ok()) return FailConnect(target.status().message());
  if (target->cid != o_.guest_cid) {
    return FailConnect(
        fmt::format("CID {} asked for; the guest is CID {}", target->cid, o_.guest_cid));
  }
  if (!mux_ || !rings_[kRx].running()) {
    return FailConnect(
        fmt::format("no guest to connect to port {} (the VM is not up)", target->port));
  }
  auto k = mux_->Connect(target->port);
  if (!k.ok()) return FailConnect(k.status().message());
  // Until the guest answers, only a hang-up matters (the bytes after the line wait).
  // Edge-triggered: a client that shut down its write side after its request is not gone.
  if (!Watch(c.get(), EPOLLRDHUP | EPOLLET, MakeTag(kConnecting, c.get())).ok()) {
    mux_->Reset(*k);
    return FailConnect("epoll_ctl failed");
  }
  connecting_[*k] = std::move(c);
}

void VsockDevice::Impl::DialerHungUp(int fd) {
  for (auto it = connecting_.begin(); it != connecting_.end(); ++it) {
    if (it->second.get() != fd) continue;
    char c;
    ssize_t r = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) return;
    Unwatch(fd);
    if (mux_) mux_->Reset(it->first);
    connecting_.erase(it);
    return FailConnect("a client hung up before the guest answered");
  }
}

std::unique_ptr<Mux> VsockDevice::Impl::NewMux() const {
  MuxOptions mo;
  mo.guest_cid = o_.guest_cid;
  mo.buf_alloc = o_.buf_alloc;
  mo.max_connections = o_.max_connections;
  auto mux = std::make_unique<Mux>(mo);
  for (uint32_t p : o_.ports) mux->Listen(p);
  return mux;
}

Status VsockDevice::Impl::HandleMessage() {
  uint8_t head[vhost::kHeaderSize];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  iovec iov{head, sizeof(head)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t r;
  do {
    r = ::recvmsg(frontend_.get(), &msg, MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return UnavailableError("QEMU closed the vhost-user socket");
  if (r < 0) return ErrnoError(errno, "read from QEMU");
  std::vector<UniqueFd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(fd);
      }
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) return InvalidArgumentError("QEMU sent more fds than expected");
  if (static_cast<size_t>(r) < sizeof(head) &&
      !ReadFull(frontend_.get(), head + r, sizeof(head) - static_cast<size_t>(r))) {
    return UnavailableError("QEMU closed the vhost-user socket mid-message");
  }
  FUN_ASSIGN_OR_RETURN(vhost::Header h, vhost::DecodeHeader(head));
  std::vector<uint8_t> payload(h.size);
  if (h.size > 0 && !ReadFull(frontend_.get(), payload.data(), payload.size())) {
    return UnavailableError("QEMU closed the vhost-user socket mid-message");
  }
  bool replied = false;
  Status s = Dispatch(h, payload, fds, replied);
  if ((protocol_features_ & vhost::kProtocolReplyAck) && (h.flags & vhost::kFlagNeedReply) &&
      !replied) {
    FUN_RETURN_IF_ERROR(Reply(vhost::EncodeReplyU64(h.request, s.ok() ? 0 : 1)));
  }
  if (!s.ok()) {
    return Status(s.code(), vhost::RequestName(h.request) + ": " + s.message());
  }
  return OkStatus();
}

Status VsockDevice::Impl::Reply(const std::string& bytes) {
  return WriteAll(frontend_.get(), bytes);
}

Status VsockDevice::Impl::Dispatch(const vhost::Header& h, std::span<const uint8_t> payload,
                                   std::vector<UniqueFd>& fds, bool& replied) {
  using vhost::Request;
  auto ring_index = [](uint32_t i) -> Status {
    if (i >= kQueues) {
      return InvalidArgumentError(fmt::format("ring {} (the device has {})", i, kQueues));
    }
    return OkStatus();
  };
  switch (static_cast<Request>(h.request)) {
    case Request::kGetFeatures:
      replied = true;
      return Reply(vhost::EncodeReplyU64(
          h.request, vhost::kFeatureVersion1 | vhost::kFeatureProtocolFeatures));
    case Request::kSetFeatures: {
      FUN_ASSIGN_OR_RETURN(features_, vhost::DecodeU64(payload));
      return OkStatus();
    }
    case Request::kGetProtocolFeatures:
      replied = true;
      return Reply(
          vhost::EncodeReplyU64(h.request, vhost::kProtocolReplyAck | vhost::kProtocolConfig));
    case Request::kSetProtocolFeatures: {
      FUN_ASSIGN_OR_RETURN(uint64_t p, vhost::DecodeU64(payload));
      protocol_features_ = p & (vhost::kProtocolReplyAck | vhost::kProtocolConfig);
      return OkStatus();
    }
    case Request::kSetOwner:
    case Request::kResetOwner:
      return OkStatus();
    case Request::kGetQueueNum:
      replied = true;
      return Reply(vhost::EncodeReplyU64(h.request, kQueues));
    case Request::kSetMemTable:
      return SetMemTable(payload, fds);
    case Request::kSetVringNum: {
      FUN_ASSIGN_OR_RETURN(vhost::VringState st, vhost::DecodeVringState(payload));
      FUN_RETURN_IF_ERROR(ring_index(st.index));
      rings_[st.index].num = st.num;
      return OkStatus();
    }
    case Request::kSetVringBase: {
      FUN_ASSIGN_OR_RETURN(vhost::VringState st, vhost::DecodeVringState(payload));
      FUN_RETURN_IF_ERROR(ring_index(st.index));
      rings_[st.index].base = static_cast<uint16_t>(st.num);
      return OkStatus();
    }
    case Request::kSetVringAddr: {
      FUN_ASSIGN_OR_RETURN(vhost::VringAddr a, vhost::DecodeVringAddr(payload));
      FUN_RETURN_IF_ERROR(ring_index(a.index));
      if (a.flags & 1) return InvalidArgumentError("used ring logging is not supported");
      rings_[a.index].addr = a;
      return OkStatus();
    }
    case Request::kSetVringKick:
    case Request::kSetVringCall:
    case Request::kSetVringErr: {
      FUN_ASSIGN_OR_RETURN(vhost::VringFd vf, vhost::DecodeVringFd(payload));
      FUN_RETURN_IF_ERROR(ring_index(vf.index));
      if (vf.no_fd || fds.size() != 1) {
        return InvalidArgumentError("an eventfd is needed (polling mode is not supported)");
      }
      Ring& ring = rings_[vf.index];
      if (h.request == static_cast<uint32_t>(Request::kSetVringErr)) return OkStatus();
      if (h.request == static_cast<uint32_t>(Request::kSetVringCall)) {
        ring.call = std::move(fds[0]);
        return OkStatus();
      }
      if (ring.kick) {
        Unwatch(ring.kick.get());
        ring.kick.reset();
      }
      ring.kick = std::move(fds[0]);
      (void)::fcntl(ring.kick.get(), F_SETFL, O_NONBLOCK);
      FUN_RETURN_IF_ERROR(
          Watch(ring.kick.get(), EPOLLIN, MakeTag(vf.index == kRx ? kKickRx : kKickTx)));
      return StartRing(vf.index);
    }
    case Request::kGetVringBase: {
      FUN_ASSIGN_OR_RETURN(vhost::VringState st, vhost::DecodeVringState(payload));
      FUN_RETURN_IF_ERROR(ring_index(st.index));
      Ring& ring = rings_[st.index];
      uint16_t last = ring.q.configured() ? ring.q.last_avail_idx() : ring.base;
      StopRing(st.index);
      replied = true;
      return Reply(vhost::EncodeReplyVringState(h.request, {st.index, last}));
    }
    case Request::kSetVringEnable: {
      FUN_ASSIGN_OR_RETURN(vhost::VringState st, vhost::DecodeVringState(payload));
      FUN_RETURN_IF_ERROR(ring_index(st.index));
      rings_[st.index].disabled = st.num == 0;
      return OkStatus();
    }
    case Request::kGetConfig: {
      FUN_ASSIGN_OR_RETURN(vhost::ConfigRequest c, vhost::DecodeConfig(payload));
      // struct virtio_vsock_config { le64 guest_cid; }
      uint8_t space[8];
      for (int i = 0; i < 8; ++i) space[i] = static_cast<uint8_t>(o_.guest_cid >> (8 * i));
      std::vector<uint8_t> out(c.size, 0);
      for (uint32_t i = 0; i < c.size; ++i) {
        uint64_t at = uint64_t{c.offset} + i;
        if (at < sizeof(space)) out[i] = space[at];
      }
      replied = true;
      return Reply(vhost::EncodeReplyConfig(h.request, c, out));
    }
    default:
      return UnimplementedError("not supported by this back-end");
  }
}

Status VsockDevice::Impl::SetMemTable(std::span<const uint8_t> payload,
                                      std::vector<UniqueFd>& fds) {
  FUN_ASSIGN_OR_RETURN(std::vector<vhost::MemoryRegion> regions, vhost::DecodeMemTable(payload));
  if (fds.size() != regions.size()) {
    return InvalidArgumentError(
        fmt::format("{} regions but {} fds came with them", regions.size(), fds.size()));
  }
  std::vector<Mapping> maps;
  vhost::GuestMemory mem;
  auto unmap = [](std::vector<Mapping>& m) {
    for (auto& x : m) ::munmap(x.base, x.len);
    m.clear();
  };
  for (size_t i = 0; i < regions.size(); ++i) {
    const auto& r = regions[i];
    uint64_t len;
    if (__builtin_add_overflow(r.size, r.mmap_offset, &len)) {
      unmap(maps);
      return InvalidArgumentError("memory region size + offset overflows");
    }
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i].get(), 0);
    if (p == MAP_FAILED) {
      int e = errno;
      unmap(maps);
      return ErrnoError(e, fmt::format("map guest memory region {} ({} bytes)", i, len));
    }
    maps.push_back({p, len});
    mem.AddRegion(r, static_cast<uint8_t*>(p) + r.mmap_offset);
  }
  // The rings point into the old mapping: translate them again in the new one.
  std::vector<Mapping> old = std::move(maps_);
  maps_ = std::move(maps);
  mem_ = std::move(mem);
  Status s = OkStatus();
  for (uint32_t i = 0; i < kQueues; ++i) {
    if (rings_[i].q.configured()) {
      uint16_t last = rings_[i].q.last_avail_idx();
      rings_[i].q.Reset();
      rings_[i].base = last;
      Status r = StartRing(i);
      if (s.ok() && !r.ok()) s = r;
    }
  }
  unmap(old);
  return s;
}

Status VsockDevice::Impl::StartRing(uint32_t index) {
  Ring& ring = rings_[index];
  if (!ring.addr || ring.num == 0 || mem_.empty()) {
    return FailedPreconditionError("the ring's kick came before its size, addresses or memory");
  }
  return ring.q.Configure(mem_, ring.num, *ring.addr, ring.base);
}

void VsockDevice::Impl::StopRing(uint32_t index) {
  Ring& ring = rings_[index];
  if (ring.kick) {
    Unwatch(ring.kick.get());
    ring.kick.reset();
  }
  ring.base = ring.q.configured() ? ring.q.last_avail_idx() : ring.base;
  ring.q.Reset();
  // A stopped device (driver reset, VM shutdown): the guest forgot its sockets.
  if (!rings_[kRx].q.configured() && !rings_[kTx].q.configured()) DropStreams();
}

void VsockDevice::Impl::DropStreams() {
  for (auto& [k, s] : streams_) Unwatch(s.fd.get());
  streams_.clear();
  for (auto& [k, fd] : connecting_) Unwatch(fd.get());
  connecting_.clear();
  if (mux_) mux_ = NewMux();  // the guest forgot its connections
}

void VsockDevice::Impl::DropFrontend() {
  DropStreams();
  mux_.reset();
  for (auto& r : rings_) {
    if (r.kick && epoll_) Unwatch(r.kick.get());
    r = Ring{};
  }
  for (auto& m : maps_) ::munmap(m.base, m.len);
  maps_.clear();
  mem_.Clear();
  features_ = protocol_features_ = 0;
  if (frontend_ && epoll_) Unwatch(frontend_.get());
  frontend_.reset();
}

Status VsockDevice::Impl::Pump() {
  if (!mux_) return OkStatus();
  // Until nothing moves: a credit update from the guest lets bytes out, a stream's end queues
  // a control packet, and so on. Bounded: the guest keeps adding work while we run.
  for (int round = 0; round < 64; ++round) {
    FUN_ASSIGN_OR_RETURN(bool tx, DrainTx());
    bool flushed = FlushToHost();
    FUN_ASSIGN_OR_RETURN(bool rx, FillRx());
    Notify();
    // The Mux forgets a connection without an event when our side's actions end it
    // (Consume after the guest's shutdown, Shutdown after the guest's): close those streams.
    for (auto it = streams_.begin(); it != streams_.end();) {
      if (mux_->Has(it->first)) {
        ++it;
      } else {
        Unwatch(it->second.fd.get());
        it = streams_.erase(it);
      }
    }
    if (!tx && !flushed && !rx) break;
  }
  return OkStatus();
}

StatusOr<bool> VsockDevice::Impl::DrainTx() {
  Ring& ring = rings_[kTx];
  if (!ring.running()) return false;
  bool moved = false;
  while (true) {
    FUN_ASSIGN_OR_RETURN(std::optional<vhost::Chain> c, ring.q.Pop(mem_));
    if (!c) break;
    moved = true;
    if (c->readable_len >= kHeaderSize) {
      uint8_t head[kHeaderSize];
      Gather(c->readable, 0, head, kHeaderSize);
      auto h = DecodeHeader(head);
      size_t len = static_cast<size_t>(c->readable_len - kHeaderSize);
      std::span<const uint8_t> payload;
      // The usual layout: the header alone, then the payload in one descriptor.
      if (len > 0 && c->readable.size() == 2 && c->readable[0].len == kHeaderSize) {
        payload = {c->readable[1].data, c->readable[1].len};
      } else if (len > 0) {
        scratch_.resize(len);
        Gather(c->readable, kHeaderSize, scratch_.data(), len);
        payload = scratch_;
      }
      if (h.ok()) {
        std::vector<Event> events = mux_->OnGuestPacket(*h, payload);
        HandleEvents(events);
        if (h->op == static_cast<uint16_t>(Op::kRw) && payload.size() == h->len &&
            !payload.empty()) {
          bytes_from_guest_ += payload.size();
          auto it = streams_.find(ConnKey{h->src_port, h->dst_port});
          if (it != streams_.end() && it->second.guest_opened) {
            it->second.unanswered_since = std::chrono::steady_clock::now();
          }
        }
      }
    }
    ring.q.Push(c->head, 0);
  }
  return moved;
}

void VsockDevice::Impl::HandleEvents(const std::vector<Event>& events) {
  for (const Event& e : events) {
    switch (e.kind) {
      case Event::Kind::kAccepted: {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
          Log(fmt::format("socketpair for guest port {}: {}", e.key.guest_port,
                          std::strerror(errno)));
          mux_->Reset(e.key);
          break;
        }
        UniqueFd mine(sv[0]), theirs(sv[1]);
        (void)::fcntl(mine.get(), F_SETFL, O_NONBLOCK);
        if (!AddStream(e.key, std::move(mine))) break;
        ++streams_opened_;
        if (o_.on_connection) o_.on_connection(e.key.host_port, std::move(theirs));
        break;
      }
      case Event::Kind::kPeerShutdown: {
        auto it = streams_.find(e.key);
        if (it != streams_.end()) it->second.peer_shutdown = true;
        break;
      }
      case Event::Kind::kConnected: {
        auto it = connecting_.find(e.key);
        if (it == connecting_.end()) break;
        UniqueFd fd = std::move(it->second);
        connecting_.erase(it);
        Unwatch(fd.get());
        if (AddStream(e.key, std::move(fd))) {
          streams_[e.key].guest_opened = false;
          ++connects_;
        }
        break;
      }
      case Event::Kind::kClosed:
        if (auto it = connecting_.find(e.key); it != connecting_.end()) {
          FailConnect(fmt::format("the guest refused a connection to port {}", e.key.guest_port));
          Unwatch(it->second.get());
          connecting_.erase(it);  // closed: the client reads EOF
          break;
        }
        CloseStream(e.key);
        break;
      case Event::Kind::kReadable:
      case Event::Kind::kWritable:
        break;  // the pump moves the bytes
    }
  }
}

bool VsockDevice::Impl::AddStream(const ConnKey& k, UniqueFd fd) {
  if (!Watch(fd.get(), EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, MakeTag(kStream, fd.get()))
           .ok()) {
    mux_->Reset(k);
    return false;
  }
  Stream s;
  s.fd = std::move(fd);
  streams_[k] = std::move(s);
  return true;
}

void VsockDevice::Impl::CloseStream(const ConnKey& k) {
  auto it = streams_.find(k);
  if (it == streams_.end()) return;
  Unwatch(it->second.fd.get());
  streams_.erase(it);
}

bool VsockDevice::Impl::FlushToHost() {
  bool moved = false;
  std::vector<ConnKey> reset;
  for (auto& [k, s] : streams_) {
    if (!mux_->Has(k)) continue;
    while (true) {
      std::span<const uint8_t> in = mux_->Inbound(k);
      if (in.empty()) break;
      ssize_t w = ::send(s.fd.get(), in.data(), in.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (w < 0) {
        reset.push_back(k);  // the host side is gone
        break;
      }
      mux_->Consume(k, static_cast<size_t>(w));
      moved = true;
    }
    if (s.peer_shutdown && !s.write_shut && mux_->Inbound(k).empty()) {
      ::shutdown(s.fd.get(), SHUT_WR);
      s.write_shut = true;
    }
  }
  for (const auto& k : reset) {
    mux_->Reset(k);
    CloseStream(k);
    moved = true;
  }
  return moved;
}

StatusOr<bool> VsockDevice::Impl::FillRx() {
  Ring& ring = rings_[kRx];
  if (!ring.running()) return false;
  bool moved = false;
  uint8_t head[kHeaderSize];
  // Control packets first: they open, close and unblock streams.
  while (mux_->HasControl()) {
    FUN_ASSIGN_OR_RETURN(std::optional<vhost::Chain> c, ring.q.Pop(mem_));
    if (!c) return moved;
    if (c->writable_len < kHeaderSize) {
      return InvalidArgumentError(
          fmt::format("an rx buffer of {} bytes cannot hold a packet header", c->writable_len));
    }
    EncodeHeader(mux_->PopControl(), head);
    Scatter(c->writable, 0, head, kHeaderSize);
    ring.q.Push(c->head, kHeaderSize);
    moved = true;
  }
  std::vector<ConnKey> eof;
  std::vector<ConnKey> broken;
  for (auto& [k, s] : streams_) {
    if (s.eof || !mux_->Has(k)) continue;
    while (true) {
      uint32_t window = mux_->SendWindow(k);
      if (window == 0) break;
      FUN_ASSIGN_OR_RETURN(std::optional<vhost::Chain> c, ring.q.Pop(mem_));
      if (!c) break;
      if (c->writable_len < kHeaderSize) {
        return InvalidArgumentError(
            fmt::format("an rx buffer of {} bytes cannot hold a packet header", c->writable_len));
      }
      size_t room = static_cast<size_t>(std::min<uint64_t>(c->writable_len - kHeaderSize, window));
      std::vector<iovec> iov = Iovecs(c->writable, kHeaderSize, room);
      ssize_t r;
      do {
        r = ::readv(s.fd.get(), iov.data(), static_cast<int>(iov.size()));
      } while (r < 0 && errno == EINTR);
      if (r <= 0) {
        ring.q.Unpop();
        if (r == 0) {
          eof.push_back(k);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
          broken.push_back(k);
        }
        break;
      }
      EncodeHeader(mux_->Rw(k, static_cast<uint32_t>(r)), head);
      Scatter(c->writable, 0, head, kHeaderSize);
      ring.q.Push(c->head, static_cast<uint32_t>(kHeaderSize + static_cast<size_t>(r)));
      bytes_to_guest_ += static_cast<uint64_t>(r);
      if (s.unanswered_since) {
        ++replies_;
        reply_latency_ns_ +=
            static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                      std::chrono::steady_clock::now() - *s.unanswered_since)
                                      .count());
        s.unanswered_since.reset();
      }
      moved = true;
    }
    if (!ring.q.HasAvailable()) break;
  }
  for (const auto& k : eof) {
    streams_[k].eof = true;
    mux_->Shutdown(k, kShutdownSend | kShutdownRcv);
    moved = true;  // a SHUTDOWN to send on the next round
  }
  for (const auto& k : broken) {
    mux_->Reset(k);
    CloseStream(k);
    moved = true;
  }
  return moved;
}

void VsockDevice::Impl::Notify() {
  for (auto& ring : rings_) {
    if (ring.q.configured() && ring.q.ShouldNotify() && ring.call) {
      (void)::eventfd_write(ring.call.get(), 1);
      ++notifies_;
    }
  }
}

StatusOr<std::unique_ptr<VsockDevice>> VsockDevice::Create(VsockDeviceOptions o) {
  auto impl = std::make_unique<Impl>(std::move(o));
  FUN_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<VsockDevice>(new VsockDevice(std::move(impl)));
}

VsockDevice::VsockDevice(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VsockDevice::~VsockDevice() = default;
Status VsockDevice::Run() { return impl_->Run(); }
void VsockDevice::Stop() { impl_->Stop(); }
VsockDeviceStats VsockDevice::stats() const { return impl_->stats(); }

}  // namespace fun::vsock
