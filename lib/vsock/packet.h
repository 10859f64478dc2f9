// packet.h: virtio-vsock packets (virtio 1.2, section 5.10) and the host end's connection
// table, as pure state: no sockets, no queues, no threads.
//
// A packet is a 44-byte little-endian header and, for RW, a payload. Streams are
// connection-oriented with credit-based flow control: each side advertises its receive
// buffer (buf_alloc) and how much of it its application has consumed (fwd_cnt); a sender
// keeps at most buf_alloc - (tx_cnt - fwd_cnt) bytes unconsumed at the peer.
//
// Mux is fun-hostd's side of the device (CID 2, the host): the guest connects to ports the
// host listens on; the guest's bytes wait in the connection's inbound buffer (at most
// buf_alloc: a guest that sends past its credit is reset) until the host side takes them; the
// host side sends as much as the guest's credit allows. Every input is untrusted (the guest
// writes the headers): whatever the guest sends, Mux answers with a reset or drops it, never
// grows past its limits. fuzz/vsock_mux_fuzzer.cc drives it with arbitrary packets.
//
//   Mux mux({.guest_cid = 3});
//   mux.Listen(5640);
//   for (Event& e : mux.OnGuestPacket(header, payload)) { ... }   // from the tx queue
//   while (mux.HasControl()) send(mux.PopControl());             // into the rx queue
//   uint32_t n = std::min(mux.SendWindow(key), room);  ... Header h = mux.Rw(key, n);
//   std::span<const uint8_t> in = mux.Inbound(key);  ... mux.Consume(key, written);
//
// The rules for what the guest may send (Linux's net/vmw_vsock/virtio_transport_common.c
// behaves the same unless noted):
//  - Dropped without a reply (stats.dropped): a dst_cid other than kHostCid or a src_cid other
//    than the guest's; a payload whose size is not header.len; a RST for no connection (a RST
//    is never answered with a RST); RESPONSE or an unknown op on a connection; RW after the
//    guest's own SHUTDOWN(kShutdownSend) (its credit fields still count).
//  - Answered with a RST (ports swapped, len 0, the packet's own type): anything but a RST for
//    no connection (RW, SHUTDOWN, CREDIT_*, a RESPONSE for a connect the host never made, a
//    REQUEST to a port not listened on, or with max_connections open); any packet but a RST
//    of a type other than kTypeStream (such a packet, and a RST of such a type, leaves a
//    stream connection on the same ports alone, as in Linux: the guest's stream socket ignores
//    a RST of another type). A RST of type kTypeStream the Mux sends always ends the
//    connection under its ports, if there is one, so the guest and the Mux never disagree
//    about which connections exist.
//  - A REQUEST for a connection that already exists: the guest thinks the ports are free, so
//    the old connection is stale. It is reset (RST, kClosed) and the new one is not accepted
//    (the guest's connect fails with ECONNRESET; a retry gets a fresh connection). Linux
//    ignores such a REQUEST, leaving the guest's connect to time out.
//  - An RW that would put the inbound buffer over buf_alloc (the guest ignored its credit)
//    resets the connection (RST, kClosed). Linux drops the packet and keeps the connection.
//  - Every packet on a connection carries the guest's buf_alloc and fwd_cnt: they set the
//    host's SendWindow, and a packet that opens it from 0 yields kWritable (after the op's own
//    events).
//
// Connecting to the guest (Connect): the host sends a REQUEST from a port the Mux picks. The
// guest answers RESPONSE (kConnected: the connection is open, with the guest's credit) or RST
// (kClosed: nothing listens there, or its backlog is full). Until then the connection carries
// nothing: SendWindow is 0, a Shutdown resets it, and any packet from the guest but those two
// resets it (kClosed). The guest's RESPONSE on an open connection is dropped, as before.
//
// Closing: each direction is done when nothing more can flow in it: guest to host when the
// guest sent SHUTDOWN(kShutdownSend) or the host Shutdown(kShutdownRcv), and the host side
// consumed all of Inbound (Shutdown(kShutdownRcv) discards it); host to guest when the host
// Shutdown(kShutdownSend) or the guest sent SHUTDOWN(kShutdownRcv). When both are done the
// connection is closed: a RST is queued (what Linux sends, and what a closing Linux guest waits
// for: its close() sends SHUTDOWN(RCV|SEND)) and the connection is forgotten. Whichever call
// finishes it may close it: OnGuestPacket (the event is kClosed), or Consume or Shutdown (no
// event: the caller checks Has(k)). The guest reads what it already received before the RST.
// Reset(k) closes it at once, also without an event.
//
// Thread-safety: none; one thread (the device's) owns a Mux.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "lib/base/status.h"

namespace fun::vsock {

inline constexpr size_t kHeaderSize = 44;
inline constexpr uint64_t kHostCid = 2;
inline constexpr uint16_t kTypeStream = 1;
inline constexpr uint16_t kTypeSeqpacket = 2;
inline constexpr uint32_t kShutdownRcv = 1;   // the sender will receive no more
inline constexpr uint32_t kShutdownSend = 2;  // the sender will send no more

enum class Op : uint16_t {
  kInvalid = 0,
  kRequest = 1,
  kResponse = 2,
  kRst = 3,
  kShutdown = 4,
  kRw = 5,
  kCreditUpdate = 6,
  kCreditRequest = 7,
};
std::string OpName(uint16_t op);  // "REQUEST", ...; "op <n>" outside the table

struct Header {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;  // payload bytes
  uint16_t type = 0;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;
  uint32_t fwd_cnt = 0;
};
// `bytes` must hold at least kHeaderSize bytes.
StatusOr<Header> DecodeHeader(std::span<const uint8_t> bytes);
void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]);

// Host programs reach a guest port through a device's connect socket the way HyperKit's
// virtio-sock defines it (../shared/PROTOCOLS.md section 3): a unix stream client writes exactly
// kConnectLineSize bytes, "%08x.%08x\n" (the guest's CID and the port in hex), and the
// connection then is the stream to that port, closed if the guest refuses. No reply.
inline constexpr size_t kConnectLineSize = 18;
struct ConnectTarget {
  uint32_t cid = 0;
  uint32_t port = 0;
};
std::string ConnectLine(uint32_t cid, uint32_t port);  // lower-case hex
// `line`: exactly kConnectLineSize bytes as above (hex digits of either case); InvalidArgument
// saying what is wrong otherwise.
StatusOr<ConnectTarget> ParseConnectLine(std::span<const uint8_t> line);

// A connection, named by its two ports (the CIDs are fixed: the guest's and the host's).
struct ConnKey {
  uint32_t guest_port = 0;
  uint32_t host_port = 0;
  auto operator<=>(const ConnKey&) const = default;
};

struct Event {
  enum class Kind {
    kAccepted,      // the guest connected to a listened port (a RESPONSE is queued)
    kReadable,      // bytes arrived in the connection's inbound buffer
    kWritable,      // the guest's credit grew: SendWindow may be > 0 again
    kPeerShutdown,  // the guest will send no more (after what is in Inbound)
    kClosed,        // the connection is gone (guest reset, or both sides shut down)
    kConnected,     // the guest accepted a Connect (RESPONSE)
  };
  Kind kind;
  ConnKey key;
};

struct MuxOptions {
  uint64_t guest_cid = 3;
  uint32_t buf_alloc = 1 << 20;   // each connection's inbound buffer, advertised to the guest
  size_t max_connections = 1024;  // more requests are reset
};

struct MuxStats {
  uint64_t dropped = 0;  // packets ignored: wrong CIDs, unknown op for no connection, ...
  uint64_t resets_sent = 0;
};

class Mux {
 public:
  explicit Mux(MuxOptions o);

  // Ports the guest may connect to; a REQUEST to any other port is reset.
  void Listen(uint32_t host_port);

  // Connects to `guest_port` in the guest: queues a REQUEST from a host port picked from
  // kFirstConnectPort upward (never a listened port, never a pair in use) and returns the
  // connection's key. kConnected or kClosed follows (see Connecting above). ResourceExhausted
  // with max_connections open.
  static constexpr uint32_t kFirstConnectPort = 1u << 30;
  StatusOr<ConnKey> Connect(uint32_t guest_port);
  // A Connect the guest has not answered yet.
  bool Connecting(const ConnKey& k) const;

  // A packet from the guest; `payload` holds header.len bytes (the caller checked that the
  // descriptor chain had them; a mismatch is dropped). Returns what happened, in order.
  std::vector<Event> OnGuestPacket(const Header& h, std::span<const uint8_t> payload);

  // Control packets for the guest (RESPONSE, RST, SHUTDOWN, CREDIT_UPDATE), oldest first.
  // OnGuestPacket queues at most one per packet: a device that stops reading the guest's tx
  // queue while ControlPending() is large bounds the queue (vhost-vsock does the same).
  bool HasControl() const { return !control_.empty(); }
  size_t ControlPending() const { return control_.size(); }
  // Precondition: HasControl() (a zero Header otherwise).
  Header PopControl();

  bool Has(const ConnKey& k) const { return conns_.count(k) != 0; }
  std::vector<ConnKey> Connections() const;

  // Bytes the guest sent that the host side has not taken yet (empty for an unknown
  // connection). Valid until the next non-const call.
  std::span<const uint8_t> Inbound(const ConnKey& k) const;
  // The host side took n bytes of Inbound (n is clamped to Inbound(k).size()): fwd_cnt grows;
  // a CREDIT_UPDATE is queued when the guest's view of the free space has fallen behind by a
  // quarter of buf_alloc or more. So no guest waits for ever once the host side took all of
  // Inbound: the guest then sees buf_alloc minus what it was not told yet free, which is more
  // than 3/4 of buf_alloc or else an update went out. A guest blocked on zero credit always
  // hears; one waiting for credit for a packet larger than 3/4 of buf_alloc might not (Linux
  // guests send what the credit allows). May close the connection (see Closing above).
  void Consume(const ConnKey& k, size_t n);

  // How many bytes the host may send now: the guest's credit (0 after Shutdown(kShutdownSend),
  // after the guest's SHUTDOWN(kShutdownRcv), or for an unknown connection).
  uint32_t SendWindow(const ConnKey& k) const;
  // The header of an RW packet carrying n <= SendWindow(k) bytes (counted as sent). A larger n
  // is a caller bug: it is clamped to SendWindow(k), so check the header's len. An unknown
  // connection gets an RW header with len 0 (harmless to send: the guest answers with a RST,
  // which is dropped).
  Header Rw(const ConnKey& k, uint32_t n);

  // The host side will send no more (kShutdownSend) and/or receive no more (kShutdownRcv):
  // queues a SHUTDOWN carrying every bit sent so far (nothing when no bit is new). On a
  // connection still connecting: Reset.
  // kShutdownRcv discards Inbound and what the guest sends later. Both sides done: the
  // connection is closed with a RST (see Closing above; no event). Other flag bits are ignored.
  void Shutdown(const ConnKey& k, uint32_t flags);
  // The host side drops the connection: queues a RST and forgets it. No kClosed event: the
  // caller knows. An unknown connection is ignored.
  void Reset(const ConnKey& k);

  const MuxStats& stats() const { return stats_; }

 private:
  struct Conn {
    std::vector<uint8_t> inbound;  // bytes from the guest; [inbound_start, end) not consumed
    size_t inbound_start = 0;      // compacted away once past half of `inbound`
    uint32_t rx_cnt = 0;           // bytes received from the guest
    uint32_t fwd_cnt = 0;          // bytes the host side consumed (or discarded)
    uint32_t fwd_cnt_told = 0;     // fwd_cnt the guest last heard
    uint32_t tx_cnt = 0;           // bytes sent to the guest
    uint32_t peer_buf_alloc = 0;
    uint32_t peer_fwd_cnt = 0;
    uint32_t host_shutdown = 0;   // kShutdown* bits the host sent
    uint32_t guest_shutdown = 0;  // kShutdown* bits the guest sent
    bool connecting = false;      // Connect's REQUEST is not answered yet
    size_t Buffered() const { return inbound.size() - inbound_start; }
  };
  uint32_t Window(const Conn& c) const;
  Header Reply(const ConnKey& k, Op op, uint32_t flags = 0);
  void QueueRst(const Header& to);  // a RST answering `to` (no connection needed)
  // Queues a RST for k's connection and forgets it.
  void ResetConn(const ConnKey& k);
  // Closes k's connection when both directions are done (see Closing); true if it did.
  bool MaybeClose(const ConnKey& k);
  void MaybeCreditUpdate(const ConnKey& k);
  std::vector<Event> OnConnPacket(const ConnKey& k, const Header& h,
                                  std::span<const uint8_t> payload);

  MuxOptions o_;
  std::map<ConnKey, Conn> conns_;
  std::vector<uint32_t> listening_;
  std::deque<Header> control_;
  MuxStats stats_;
  uint32_t next_connect_port_ = kFirstConnectPort;
};

}  // namespace fun::vsock
