#include "lib/vsock/packet.h"

#include <fmt/format.h>

#include <algorithm>

#include "lib/base/strings.h"

namespace fun::vsock {
namespace {

constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;

template <typename T>
T Load(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(p[i]) << (8 * i));
  return v;
}

template <typename T>
void Store(T v, uint8_t* p) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

bool IsOp(const Header& h, Op op) { return h.op == static_cast<uint16_t>(op); }

}  // namespace

std::string OpName(uint16_t op) {
  switch (static_cast<Op>(op)) {
    case Op::kInvalid:
      return "INVALID";
    case Op::kRequest:
      return "REQUEST";
    case Op::kResponse:
      return "RESPONSE";
    case Op::kRst:
      return "RST";
    case Op::kShutdown:
      return "SHUTDOWN";
    case Op::kRw:
      return "RW";
    case Op::kCreditUpdate:
      return "CREDIT_UPDATE";
    case Op::kCreditRequest:
      return "CREDIT_REQUEST";
  }
  return fmt::format("op {}", op);
}

StatusOr<Header> DecodeHeader(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) {
    return InvalidArgumentError(
        fmt::format("vsock packet header: {} bytes, expected {}", bytes.size(), kHeaderSize));
  }
  const uint8_t* p = bytes.data();
  Header h;
  h.src_cid = Load<uint64_t>(p);
  h.dst_cid = Load<uint64_t>(p + 8);
  h.src_port = Load<uint32_t>(p + 16);
  h.dst_port = Load<uint32_t>(p + 20);
  h.len = Load<uint32_t>(p + 24);
  h.type = Load<uint16_t>(p + 28);
  h.op = Load<uint16_t>(p + 30);
  h.flags = Load<uint32_t>(p + 32);
  h.buf_alloc = Load<uint32_t>(p + 36);
  h.fwd_cnt = Load<uint32_t>(p + 40);
  return h;
}

void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]) {
  Store(h.src_cid, out);
  Store(h.dst_cid, out + 8);
  Store(h.src_port, out + 16);
  Store(h.dst_port, out + 20);
  Store(h.len, out + 24);
  Store(h.type, out + 28);
  Store(h.op, out + 30);
  Store(h.flags, out + 32);
  Store(h.buf_alloc, out + 36);
  Store(h.fwd_cnt, out + 40);
}

std::string ConnectLine(uint32_t cid, uint32_t port) {
  return fmt::format("{:08x}.{:08x}\n", cid, port);
}

StatusOr<ConnectTarget> ParseConnectLine(std::span<const uint8_t> line) {
  auto bad = [&](std::string_view what) {
    std::string shown;
    for (uint8_t b : line.first(std::min<size_t>(line.size(), kConnectLineSize))) {
      shown += (b >= 0x20 && b < 0x7f) ? static_cast<char>(b) : '?';
    }
    return InvalidArgumentError(
        fmt::format("vsock connect line \"{}\": {} (want {} bytes: the guest's CID and the port as "
                    "%08x.%08x and a newline)",
                    shown, what, kConnectLineSize));
  };
  if (line.size() != kConnectLineSize) return bad(fmt::format("{} bytes", line.size()));
  if (line[8] != '.' || line[17] != '\n') return bad("no '.' at byte 9 or newline at byte 18");
  auto hex = [&](size_t at, uint32_t* out) {
    auto v = ParseHex32(std::string_view(reinterpret_cast<const char*>(line.data()) + at, 8));
    if (v) *out = *v;
    return v.has_value();
  };
  ConnectTarget t;
  if (!hex(0, &t.cid) || !hex(9, &t.port)) return bad("not 8 hex digits");
  return t;
}

Mux::Mux(MuxOptions o) : o_(o) {}

void Mux::Listen(uint32_t host_port) {
  if (std::find(listening_.begin(), listening_.end(), host_port) == listening_.end()) {
    listening_.push_back(host_port);
  }
}

StatusOr<ConnKey> Mux::Connect(uint32_t guest_port) {
  if (conns_.size() >= o_.max_connections) {
    return ResourceExhaustedError(fmt::format("vsock: {} connections open, no more (guest port {})",
                                              conns_.size(), guest_port));
  }
  // Fewer connections than ports: a free one turns up within conns_.size() + listened steps.
  for (;;) {
    const uint32_t port = next_connect_port_;
    next_connect_port_ = port == UINT32_MAX ? kFirstConnectPort : port + 1;
    const ConnKey k{.guest_port = guest_port, .host_port = port};
    if (conns_.count(k) != 0 ||
        std::find(listening_.begin(), listening_.end(), port) != listening_.end()) {
      continue;
    }
    conns_[k].connecting = true;
    control_.push_back(Reply(k, Op::kRequest));
    return k;
  }
}

bool Mux::Connecting(const ConnKey& k) const {
  auto it = conns_.find(k);
  return it != conns_.end() && it->second.connecting;
}

std::vector<Event> Mux::OnGuestPacket(const Header& h, std::span<const uint8_t> payload) {
  if (h.dst_cid != kHostCid || h.src_cid != o_.guest_cid || payload.size() != h.len) {
    ++stats_.dropped;
    return {};
  }
  const ConnKey k{.guest_port = h.src_port, .host_port = h.dst_port};
  auto it = conns_.find(k);
  if (IsOp(h, Op::kRst)) {
    // Never answered. Only a stream RST ends a stream connection.
    if (it == conns_.end() || h.type != kTypeStream) {
      ++stats_.dropped;
      return {};
    }
    conns_.erase(it);
    return {{Event::Kind::kClosed, k}};
  }
  if (h.type != kTypeStream) {
    QueueRst(h);
    return {};
  }
  if (it == conns_.end()) {
    if (!IsOp(h, Op::kRequest) ||
        std::find(listening_.begin(), listening_.end(), h.dst_port) == listening_.end() ||
        conns_.size() >= o_.max_connections) {
      QueueRst(h);
      return {};
    }
    Conn& c = conns_[k];
    c.peer_buf_alloc = h.buf_alloc;
    c.peer_fwd_cnt = h.fwd_cnt;
    control_.push_back(Reply(k, Op::kResponse));
    return {{Event::Kind::kAccepted, k}};
  }
  if (IsOp(h, Op::kRequest)) {
    // The guest thinks these ports are free: ours is stale. Reset it; the guest retries.
    ResetConn(k);
    return {{Event::Kind::kClosed, k}};
  }
  return OnConnPacket(k, h, payload);
}

std::vector<Event> Mux::OnConnPacket(const ConnKey& k, const Header& h,
                                     std::span<const uint8_t> payload) {
  std::vector<Event> events;
  Conn& c = conns_.at(k);
  if (c.connecting) {
    if (!IsOp(h, Op::kResponse)) {
      ResetConn(k);  // the guest owes an answer first
      return {{Event::Kind::kClosed, k}};
    }
    c.connecting = false;
    c.peer_buf_alloc = h.buf_alloc;
    c.peer_fwd_cnt = h.fwd_cnt;
    return {{Event::Kind::kConnected, k}};
  }
  const uint32_t window_before = Window(c);
  c.peer_buf_alloc = h.buf_alloc;
  c.peer_fwd_cnt = h.fwd_cnt;
  switch (static_cast<Op>(h.op)) {
    case Op::kRw: {
      if (payload.empty()) break;
      if ((c.guest_shutdown & kShutdownSend) != 0) {
        ++stats_.dropped;  // it said it would send no more
        break;
      }
      if (payload.size() > o_.buf_alloc - c.Buffered()) {
        ResetConn(k);  // it ignored its credit
        return {{Event::Kind::kClosed, k}};
      }
      const auto n = static_cast<uint32_t>(payload.size());
      c.rx_cnt += n;
      if ((c.host_shutdown & kShutdownRcv) != 0) {
        c.fwd_cnt += n;  // discarded, as if consumed
        break;
      }
      c.inbound.insert(c.inbound.end(), payload.begin(), payload.end());
      events.push_back({Event::Kind::kReadable, k});
      break;
    }
    case Op::kCreditRequest:
      control_.push_back(Reply(k, Op::kCreditUpdate));
      break;
    case Op::kCreditUpdate:
      break;  // the credit fields above were the point
    case Op::kShutdown: {
      const uint32_t bits = h.flags & kShutdownBoth;
      const uint32_t fresh = bits & ~c.guest_shutdown;
      c.guest_shutdown |= bits;
      if ((fresh & kShutdownSend) != 0) events.push_back({Event::Kind::kPeerShutdown, k});
      if (MaybeClose(k)) {
        events.push_back({Event::Kind::kClosed, k});
        return events;
      }
      break;
    }
    default:
      ++stats_.dropped;  // RESPONSE on an open connection, or an unknown op
      break;
  }
  if (window_before == 0 && Window(c) > 0) events.push_back({Event::Kind::kWritable, k});
  return events;
}

Header Mux::PopControl() {
  if (control_.empty()) return {};
  Header h = control_.front();
  control_.pop_front();
  return h;
}

std::vector<ConnKey> Mux::Connections() const {
  std::vector<ConnKey> keys;
  keys.reserve(conns_.size());
  for (const auto& [k, c] : conns_) keys.push_back(k);
  return keys;
}

std::span<const uint8_t> Mux::Inbound(const ConnKey& k) const {
  auto it = conns_.find(k);
  if (it == conns_.end()) return {};
  const Conn& c = it->second;
  return std::span<const uint8_t>(c.inbound).subspan(c.inbound_start);
}

void Mux::Consume(const ConnKey& k, size_t n) {
  auto it = conns_.find(k);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  n = std::min(n, c.Buffered());
  if (n == 0) return;
  c.inbound_start += n;
  if (c.inbound_start == c.inbound.size()) {
    c.inbound.clear();
    c.inbound_start = 0;
  } else if (c.inbound_start > c.inbound.size() / 2) {
    // Moves fewer bytes than were consumed since the last compaction: O(1) a byte overall.
    c.inbound.erase(c.inbound.begin(), c.inbound.begin() + static_cast<ptrdiff_t>(c.inbound_start));
    c.inbound_start = 0;
  }
  c.fwd_cnt += static_cast<uint32_t>(n);  // n <= buf_alloc
  if (MaybeClose(k)) return;
  MaybeCreditUpdate(k);
}

void Mux::MaybeCreditUpdate(const ConnKey& k) {
  Conn& c = conns_.at(k);
  // Consumed bytes the guest has not heard of: its view of our free space is short by that
  // much. (Once Inbound is empty rx_cnt == fwd_cnt, so the guest sees buf_alloc - behind free:
  // a separate "drained and the guest sees less than half free" rule would never add a packet.)
  const uint32_t behind = c.fwd_cnt - c.fwd_cnt_told;
  if (behind != 0 && behind >= o_.buf_alloc / 4) control_.push_back(Reply(k, Op::kCreditUpdate));
}

uint32_t Mux::Window(const Conn& c) const {
  if (c.connecting) return 0;
  if ((c.host_shutdown & kShutdownSend) != 0 || (c.guest_shutdown & kShutdownRcv) != 0) return 0;
  const uint32_t in_flight = c.tx_cnt - c.peer_fwd_cnt;
  // A guest reporting a fwd_cnt past tx_cnt or a shrunken buf_alloc gets nothing, not 4 GiB.
  return in_flight >= c.peer_buf_alloc ? 0 : c.peer_buf_alloc - in_flight;
}

uint32_t Mux::SendWindow(const ConnKey& k) const {
  auto it = conns_.find(k);
  return it == conns_.end() ? 0 : Window(it->second);
}

Header Mux::Rw(const ConnKey& k, uint32_t n) {
  auto it = conns_.find(k);
  if (it == conns_.end()) return Reply(k, Op::kRw);  // len 0
  Conn& c = it->second;
  n = std::min(n, Window(c));
  c.tx_cnt += n;
  Header h = Reply(k, Op::kRw);
  h.len = n;
  return h;
}

void Mux::Shutdown(const ConnKey& k, uint32_t flags) {
  auto it = conns_.find(k);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  if (c.connecting) {
    ResetConn(k);
    return;
  }
  const uint32_t fresh = flags & kShutdownBoth & ~c.host_shutdown;
  if (fresh == 0) return;
  c.host_shutdown |= fresh;
  if ((fresh & kShutdownRcv) != 0) {
    c.fwd_cnt += static_cast<uint32_t>(c.Buffered());
    c.inbound = {};
    c.inbound_start = 0;
  }
  control_.push_back(Reply(k, Op::kShutdown, c.host_shutdown));
  MaybeClose(k);
}

void Mux::Reset(const ConnKey& k) {
  if (conns_.count(k) != 0) ResetConn(k);
}

Header Mux::Reply(const ConnKey& k, Op op, uint32_t flags) {
  Header h;
  h.src_cid = kHostCid;
  h.dst_cid = o_.guest_cid;
  h.src_port = k.host_port;
  h.dst_port = k.guest_port;
  h.type = kTypeStream;
  h.op = static_cast<uint16_t>(op);
  h.flags = flags;
  h.buf_alloc = o_.buf_alloc;
  if (auto it = conns_.find(k); it != conns_.end()) {
    h.fwd_cnt = it->second.fwd_cnt;
    it->second.fwd_cnt_told = it->second.fwd_cnt;
  }
  return h;
}

void Mux::QueueRst(const Header& to) {
  Header h;
  h.src_cid = kHostCid;
  h.dst_cid = o_.guest_cid;
  h.src_port = to.dst_port;
  h.dst_port = to.src_port;
  h.type = to.type;  // a RST of another type would not reach the guest's socket
  h.op = static_cast<uint16_t>(Op::kRst);
  h.buf_alloc = o_.buf_alloc;
  control_.push_back(h);
  ++stats_.resets_sent;
}

void Mux::ResetConn(const ConnKey& k) {
  control_.push_back(Reply(k, Op::kRst));
  ++stats_.resets_sent;
  conns_.erase(k);
}

bool Mux::MaybeClose(const ConnKey& k) {
  const Conn& c = conns_.at(k);
  const bool in_done =
      (c.guest_shutdown & kShutdownSend) != 0 || (c.host_shutdown & kShutdownRcv) != 0;
  const bool out_done =
      (c.host_shutdown & kShutdownSend) != 0 || (c.guest_shutdown & kShutdownRcv) != 0;
  if (!in_done || !out_done || c.Buffered() != 0) return false;
  ResetConn(k);
  return true;
}

}  // namespace fun::vsock
