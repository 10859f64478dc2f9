// Fuzzes the host end of virtio-vsock (lib/vsock/packet.h): the input is a script of packets
// from a hostile guest (whatever it writes on the tx queue) interleaved with what the host side
// may do (consume, send within the window, shut down, reset, drain the control queue). Whatever
// the script, no crash or undefined behaviour, and:
//  - the Mux never grows past its limits: at most max_connections connections, at most
//    buf_alloc bytes in any Inbound;
//  - its events tell the whole story: a model fed only from the events (and the host's own
//    calls) has the same connections and the same Inbound bytes;
//  - one guest packet queues at most one control packet, and every control packet goes from
//    the host's CID to the guest's, carries no payload and is one of the ops the host sends.
//
// Input: byte 0 picks the options; then steps, each a tag byte and its operands:
//   tag % 8 in 0..3: a guest packet: 44 header bytes, a length (1 byte, 2 with tag bit 3),
//                    that many payload bytes (fewer at the end of the input). Unless tag bits
//                    4-5 are both set, header.len is set to the payload's size; unless tag bits
//                    6-7 are both set, the CIDs are set right. With tag % 8 == 3 the ports are
//                    one open connection's (a byte picks it), as a guest answering would send.
//   4: Consume (operands: connection, amount; 255 = everything)
//   5: Rw (connection, amount; tag bit 3: ask for more than the window)
//   6: Shutdown (connection, flags)
//   7: Reset (connection) with tag bit 3; else Connect (guest port byte) with tag bit 4; else
//      pop every control packet.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "lib/vsock/packet.h"

namespace {

using fun::vsock::ConnKey;
using fun::vsock::Event;
using fun::vsock::Header;
using fun::vsock::Mux;
using fun::vsock::Op;

constexpr uint64_t kGuestCid = 3;
constexpr uint32_t kListened[] = {5640, 22};
constexpr uint32_t kBufAllocs[] = {1, 7, 64, 300};

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "vsock_mux_fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ == size_; }
  uint8_t Byte() { return empty() ? 0 : data_[pos_++]; }
  std::span<const uint8_t> Take(size_t n) {
    n = std::min(n, size_ - pos_);
    std::span<const uint8_t> s(data_ + pos_, n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

uint16_t O(Op op) { return static_cast<uint16_t>(op); }

struct Fuzz {
  explicit Fuzz(uint8_t config)
      : buf_alloc(kBufAllocs[config % 4]),
        max_connections(1 + (config >> 2) % 3),
        mux({.guest_cid = kGuestCid, .buf_alloc = buf_alloc, .max_connections = max_connections}) {
    for (uint32_t p : kListened) mux.Listen(p);
  }

  // A connection to act on: one of the open ones, or a made-up one when there are none.
  ConnKey Pick(Input& in) {
    std::vector<ConnKey> keys = mux.Connections();
    uint8_t b = in.Byte();
    if (keys.empty()) return {.guest_port = b, .host_port = kListened[0]};
    return keys[b % keys.size()];
  }

  void GuestPacket(uint8_t tag, Input& in) {
    std::span<const uint8_t> raw = in.Take(fun::vsock::kHeaderSize);
    auto decoded = fun::vsock::DecodeHeader(raw);
    if (raw.size() < fun::vsock::kHeaderSize) {
      Check(!decoded.ok(), "a short header decodes");
      return;
    }
    Check(decoded.ok(), "a full header does not decode");
    uint8_t again[fun::vsock::kHeaderSize];
    fun::vsock::EncodeHeader(*decoded, again);
    Check(std::equal(raw.begin(), raw.end(), again), "header does not round-trip");

    Header h = *decoded;
    Check(!fun::vsock::OpName(h.op).empty(), "an op without a name");
    if (tag % 8 == 3) {
      const ConnKey target = Pick(in);
      h.src_port = target.guest_port;
      h.dst_port = target.host_port;
    }
    size_t len = in.Byte();
    if ((tag & 0x08) != 0) len |= static_cast<size_t>(in.Byte()) << 8;
    std::span<const uint8_t> payload = in.Take(len);
    if ((tag & 0x30) != 0x30) h.len = static_cast<uint32_t>(payload.size());
    if ((tag & 0xc0) != 0xc0) {
      h.src_cid = kGuestCid;
      h.dst_cid = fun::vsock::kHostCid;
    }
    const bool droppable =
        h.len != payload.size() || h.src_cid != kGuestCid || h.dst_cid != fun::vsock::kHostCid;
    const size_t control_before = mux.ControlPending();
    const uint64_t dropped_before = mux.stats().dropped;
    std::vector<Event> events = mux.OnGuestPacket(h, payload);
    Check(mux.ControlPending() <= control_before + 1, "one packet queued two control packets");
    if (droppable) {
      Check(events.empty() && mux.ControlPending() == control_before &&
                mux.stats().dropped == dropped_before + 1,
            "a packet with wrong CIDs or length was not just dropped");
    }
    const ConnKey k{.guest_port = h.src_port, .host_port = h.dst_port};
    for (const Event& e : events) {
      Check(e.key == k, "an event for another connection");
      switch (e.kind) {
        case Event::Kind::kAccepted:
          Check(h.op == O(Op::kRequest), "accepted without a REQUEST");
          Check(model.count(k) == 0, "accepted twice");
          model[k];
          break;
        case Event::Kind::kReadable:
          Check(h.op == O(Op::kRw) && !payload.empty(), "readable without data");
          Check(model.count(k) == 1, "readable on an unknown connection");
          model[k].append(payload.begin(), payload.end());
          break;
        case Event::Kind::kWritable:
          Check(mux.SendWindow(k) > 0, "writable with a zero window");
          break;
        case Event::Kind::kPeerShutdown:
          Check(h.op == O(Op::kShutdown), "peer shutdown without a SHUTDOWN");
          break;
        case Event::Kind::kConnected:
          Check(h.op == O(Op::kResponse), "connected without a RESPONSE");
          Check(model.count(k) == 1 && model[k].empty(), "connected an unknown connection");
          Check(!mux.Connecting(k) && mux.Has(k), "connected but still connecting");
          break;
        case Event::Kind::kClosed:
          Check(model.erase(k) == 1, "closed an unknown connection");
          Check(!mux.Has(k), "closed but still there");
          Check(&e == &events.back(), "an event after kClosed");
          break;
      }
    }
  }

  void Consume(Input& in) {
    ConnKey k = Pick(in);
    uint8_t b = in.Byte();
    size_t n = b == 255 ? mux.Inbound(k).size() : b;
    mux.Consume(k, n);
    auto it = model.find(k);
    if (it == model.end()) return;
    if (!mux.Has(k)) {
      Check(n >= it->second.size(), "Consume closed a connection with data left");
      model.erase(it);
      return;
    }
    it->second.erase(0, std::min(n, it->second.size()));
  }

  void Rw(uint8_t tag, Input& in) {
    ConnKey k = Pick(in);
    uint32_t w = mux.SendWindow(k);
    uint32_t b = in.Byte();
    uint32_t n = (tag & 0x08) != 0 ? w + b + 1 : std::min(w, b * b);
    if (n < w && (tag & 0x08) != 0) n = UINT32_MAX;  // w + b + 1 wrapped
    Header h = mux.Rw(k, n);
    Check(h.len == std::min(n, w), "Rw did not clamp to the window");
    Check(mux.SendWindow(k) == w - h.len, "Rw did not shrink the window");
    Check(h.op == O(Op::kRw) && h.src_cid == fun::vsock::kHostCid && h.dst_cid == kGuestCid &&
              h.src_port == k.host_port && h.dst_port == k.guest_port,
          "bad RW header");
  }

  void Shutdown(Input& in) {
    ConnKey k = Pick(in);
    uint32_t flags = in.Byte();
    mux.Shutdown(k, flags);
    if (!mux.Has(k)) {
      model.erase(k);
      return;
    }
    if ((flags & fun::vsock::kShutdownSend) != 0) {
      Check(mux.SendWindow(k) == 0, "a window after Shutdown(kShutdownSend)");
    }
    if ((flags & fun::vsock::kShutdownRcv) != 0) model[k].clear();
  }

  void Reset(Input& in) {
    ConnKey k = Pick(in);
    mux.Reset(k);
    Check(!mux.Has(k), "still there after Reset");
    model.erase(k);
  }

  void Connect(Input& in) {
    const uint32_t port = in.Byte();
    const size_t before = mux.Connections().size();
    auto k = mux.Connect(port);
    if (!k.ok()) {
      Check(before >= max_connections, "Connect refused below max_connections");
      return;
    }
    Check(k->guest_port == port && k->host_port >= Mux::kFirstConnectPort,
          "Connect picked a listened port or a port below kFirstConnectPort");
    Check(model.count(*k) == 0, "Connect picked a pair in use");
    Check(mux.Connecting(*k) && mux.SendWindow(*k) == 0, "a fresh Connect with a window");
    model[*k];
  }

  void PopAll() {
    while (mux.HasControl()) {
      Header h = mux.PopControl();
      Check(h.src_cid == fun::vsock::kHostCid && h.dst_cid == kGuestCid,
            "a control packet with the wrong CIDs");
      Check(h.len == 0, "a control packet with a payload");
      Check(h.op == O(Op::kResponse) || h.op == O(Op::kRst) || h.op == O(Op::kShutdown) ||
                h.op == O(Op::kCreditUpdate) || h.op == O(Op::kRequest),
            "a control packet with an op the host does not send");
      Check(h.type == fun::vsock::kTypeStream || h.op == O(Op::kRst),
            "a control packet of another type than stream");
      Check(h.buf_alloc == buf_alloc, "a control packet with another buf_alloc");
    }
  }

  void CheckInvariants() {
    std::vector<ConnKey> keys = mux.Connections();
    Check(keys.size() <= max_connections, "more than max_connections");
    Check(keys.size() == model.size(), "connections the events did not tell of");
    for (const ConnKey& k : keys) {
      auto it = model.find(k);
      Check(it != model.end(), "a connection the events did not tell of");
      std::span<const uint8_t> in = mux.Inbound(k);
      Check(in.size() <= buf_alloc, "Inbound over buf_alloc");
      Check(
          in.size() == it->second.size() &&
              std::equal(in.begin(), in.end(), reinterpret_cast<const uint8_t*>(it->second.data())),
          "Inbound differs from the bytes the events announced");
    }
  }

  const uint32_t buf_alloc;
  const size_t max_connections;
  Mux mux;
  std::map<ConnKey, std::string> model;  // each connection's unconsumed bytes, per the events
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  Fuzz f(in.Byte());
  while (!in.empty()) {
    uint8_t tag = in.Byte();
    switch (tag % 8) {
      case 0:
      case 1:
      case 2:
      case 3:
        f.GuestPacket(tag, in);
        break;
      case 4:
        f.Consume(in);
        break;
      case 5:
        f.Rw(tag, in);
        break;
      case 6:
        f.Shutdown(in);
        break;
      default:
        if ((tag & 0x08) != 0) {
          f.Reset(in);
        } else if ((tag & 0x10) != 0) {
          f.Connect(in);
        } else {
          f.PopAll();
        }
        break;
    }
    f.CheckInvariants();
  }
  f.PopAll();
  return 0;
}
