#include "lib/vsock/packet.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace fun::vsock {
namespace {

constexpr uint64_t kGuestCid = 3;
constexpr uint32_t kPort = 5640;       // listened on
constexpr uint32_t kGuestPort = 1025;  // the guest's ephemeral port
constexpr ConnKey kKey{.guest_port = kGuestPort, .host_port = kPort};
constexpr uint32_t kBufAlloc = 1000;  // the host's
constexpr uint32_t kGuestBufAlloc = 4096;

uint16_t O(Op op) { return static_cast<uint16_t>(op); }

std::string Str(const Header& h) {
  return fmt::format("{} {}:{}->{}:{} len={} type={} flags={} buf_alloc={} fwd_cnt={}",
                     OpName(h.op), h.src_cid, h.src_port, h.dst_cid, h.dst_port, h.len, h.type,
                     h.flags, h.buf_alloc, h.fwd_cnt);
}

std::string Str(const std::vector<Event>& events) {
  std::string out;
  for (const Event& e : events) {
    static constexpr const char* kNames[] = {"Accepted",     "Readable", "Writable",
                                             "PeerShutdown", "Closed",   "Connected"};
    if (!out.empty()) out += " ";
    out += fmt::format("{}({}:{})", kNames[static_cast<int>(e.kind)], e.key.guest_port,
                       e.key.host_port);
  }
  return out;
}

// A packet from the guest, `from` guest port `to` host port.
Header G(Op op, uint32_t from = kGuestPort, uint32_t to = kPort, uint32_t fwd_cnt = 0,
         uint32_t buf_alloc = kGuestBufAlloc) {
  return {.src_cid = kGuestCid,
          .dst_cid = kHostCid,
          .src_port = from,
          .dst_port = to,
          .type = kTypeStream,
          .op = O(op),
          .buf_alloc = buf_alloc,
          .fwd_cnt = fwd_cnt};
}

// What the host sends on kKey's connection.
std::string Host(Op op, uint32_t fwd_cnt = 0, uint32_t flags = 0, uint32_t len = 0,
                 ConnKey k = kKey) {
  return Str({.src_cid = kHostCid,
              .dst_cid = kGuestCid,
              .src_port = k.host_port,
              .dst_port = k.guest_port,
              .len = len,
              .type = kTypeStream,
              .op = O(op),
              .flags = flags,
              .buf_alloc = kBufAlloc,
              .fwd_cnt = fwd_cnt});
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string Text(std::span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

class MuxTest : public ::testing::Test {
 protected:
  MuxTest() { mux_.Listen(kPort); }

  std::string Send(Header h, std::string_view data = {}) {
    h.len = static_cast<uint32_t>(data.size());
    return Str(mux_.OnGuestPacket(h, Bytes(data)));
  }
  // An RW from the guest on kKey carrying its fwd_cnt.
  std::string SendRw(std::string_view data, uint32_t fwd_cnt = 0) {
    return Send(G(Op::kRw, kGuestPort, kPort, fwd_cnt), data);
  }
  std::vector<std::string> Drain() {
    std::vector<std::string> out;
    while (mux_.HasControl()) out.push_back(Str(mux_.PopControl()));
    return out;
  }
  void Connect() {
    ASSERT_EQ(Send(G(Op::kRequest)), "Accepted(1025:5640)");
    ASSERT_EQ(Drain(), std::vector<std::string>{Host(Op::kResponse)});
  }

  Mux mux_{{.guest_cid = kGuestCid, .buf_alloc = kBufAlloc, .max_connections = 4}};
};

TEST(HeaderTest, RoundTripsEveryField) {
  const Header h{.src_cid = 0x0102030405060708,
                 .dst_cid = 0x1112131415161718,
                 .src_port = 0x21222324,
                 .dst_port = 0x31323334,
                 .len = 0x41424344,
                 .type = 0x5152,
                 .op = 0x6162,
                 .flags = 0x71727374,
                 .buf_alloc = 0x81828384,
                 .fwd_cnt = 0x91929394};
  uint8_t wire[kHeaderSize + 3] = {};
  EncodeHeader(h, wire);
  // Little-endian, in the spec's order.
  EXPECT_EQ(wire[0], 0x08);
  EXPECT_EQ(wire[7], 0x01);
  EXPECT_EQ(wire[8], 0x18);
  EXPECT_EQ(wire[16], 0x24);
  EXPECT_EQ(wire[20], 0x34);
  EXPECT_EQ(wire[24], 0x44);
  EXPECT_EQ(wire[28], 0x52);
  EXPECT_EQ(wire[29], 0x51);
  EXPECT_EQ(wire[30], 0x62);
  EXPECT_EQ(wire[32], 0x74);
  EXPECT_EQ(wire[36], 0x84);
  EXPECT_EQ(wire[40], 0x94);
  EXPECT_EQ(wire[43], 0x91);
  EXPECT_EQ(wire[44], 0);          // nothing past the header
  auto back = DecodeHeader(wire);  // longer input: the rest is the payload's business
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(Str(*back), Str(h));
  EXPECT_EQ(back->src_cid, h.src_cid);
  EXPECT_EQ(back->dst_cid, h.dst_cid);
}

TEST(HeaderTest, DecodeRefusesShortInput) {
  uint8_t wire[kHeaderSize] = {};
  auto r = DecodeHeader(std::span<const uint8_t>(wire, kHeaderSize - 1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("43 bytes"), std::string::npos) << r.status();
  EXPECT_FALSE(DecodeHeader({}).ok());
  EXPECT_TRUE(DecodeHeader(wire).ok());
}

TEST(HeaderTest, OpNames) {
  EXPECT_EQ(OpName(1), "REQUEST");
  EXPECT_EQ(OpName(2), "RESPONSE");
  EXPECT_EQ(OpName(3), "RST");
  EXPECT_EQ(OpName(4), "SHUTDOWN");
  EXPECT_EQ(OpName(5), "RW");
  EXPECT_EQ(OpName(6), "CREDIT_UPDATE");
  EXPECT_EQ(OpName(7), "CREDIT_REQUEST");
  EXPECT_EQ(OpName(0), "INVALID");
  EXPECT_EQ(OpName(8), "op 8");
  EXPECT_EQ(OpName(65535), "op 65535");
}

TEST(ConnectLineTest, RoundTripsAndSaysWhatIsWrong) {
  EXPECT_EQ(ConnectLine(3, 7070), "00000003.00001b9e\n");
  EXPECT_EQ(ConnectLine(3, 0xffffffff), "00000003.ffffffff\n");
  auto t = ParseConnectLine(Bytes("00000003.00001B9E\n"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->cid, 3u);
  EXPECT_EQ(t->port, 7070u);
  t = ParseConnectLine(Bytes(ConnectLine(0xdeadbeef, 0)));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->cid, 0xdeadbeefu);
  EXPECT_EQ(t->port, 0u);
  for (std::string_view bad :
       {"00000003.00001b9e", "00000003.00001b9e\n\n", "00000003:00001b9e\n", "00000003.00001b9e ",
        "0000000x.00001b9e\n", "00000003.-0001b9e\n", ""}) {
    auto r = ParseConnectLine(Bytes(bad));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find("%08x.%08x"), std::string::npos) << r.status();
  }
}

TEST_F(MuxTest, AcceptsOnListenedPort) {
  EXPECT_FALSE(mux_.Has(kKey));
  EXPECT_EQ(Send(G(Op::kRequest)), "Accepted(1025:5640)");
  ASSERT_TRUE(mux_.HasControl());
  EXPECT_EQ(mux_.ControlPending(), 1u);
  Header r = mux_.PopControl();
  EXPECT_EQ(r.src_cid, kHostCid);
  EXPECT_EQ(r.dst_cid, kGuestCid);
  EXPECT_EQ(r.src_port, kPort);
  EXPECT_EQ(r.dst_port, kGuestPort);
  EXPECT_EQ(r.op, O(Op::kResponse));
  EXPECT_EQ(r.type, kTypeStream);
  EXPECT_EQ(r.buf_alloc, kBufAlloc);
  EXPECT_EQ(r.len, 0u);
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_TRUE(mux_.Has(kKey));
  EXPECT_EQ(mux_.Connections(), std::vector<ConnKey>{kKey});
  EXPECT_EQ(mux_.SendWindow(kKey), kGuestBufAlloc);
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
}

TEST_F(MuxTest, ResetsRequestToUnlistenedPort) {
  EXPECT_EQ(Send(G(Op::kRequest, 2000, 22)), "");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst, 0, 0, 0, {2000, 22})});
  EXPECT_TRUE(mux_.Connections().empty());
  EXPECT_EQ(mux_.stats().resets_sent, 1u);
}

TEST_F(MuxTest, ResetsSeqpacketWithItsOwnType) {
  Header h = G(Op::kRequest);
  h.type = kTypeSeqpacket;
  EXPECT_EQ(Send(h), "");
  ASSERT_TRUE(mux_.HasControl());
  Header r = mux_.PopControl();
  EXPECT_EQ(r.op, O(Op::kRst));
  EXPECT_EQ(r.type, kTypeSeqpacket);  // else the guest's seqpacket socket would not hear it
  EXPECT_EQ(r.src_port, kPort);
  EXPECT_EQ(r.dst_port, kGuestPort);
  EXPECT_FALSE(mux_.Has(kKey));

  // Nor does a packet of another type touch a stream connection on the same ports.
  Connect();
  h.op = O(Op::kRw);
  EXPECT_EQ(Send(h, "x"), "");
  EXPECT_EQ(mux_.PopControl().op, O(Op::kRst));
  h.op = O(Op::kRst);
  EXPECT_EQ(Send(h), "");
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_TRUE(mux_.Has(kKey));
}

TEST_F(MuxTest, ResetsPacketsForNoConnection) {
  for (Op op : {Op::kRw, Op::kShutdown, Op::kCreditUpdate, Op::kCreditRequest, Op::kResponse,
                Op::kInvalid}) {
    EXPECT_EQ(Send(G(op, 7, kPort), op == Op::kRw ? "data" : ""), "") << OpName(O(op));
    // Ports swapped, len 0 (even answering an RW with a payload).
    EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst, 0, 0, 0, {7, kPort})})
        << OpName(O(op));
  }
  Header unknown = G(Op::kRw);
  unknown.op = 99;
  EXPECT_EQ(Send(unknown), "");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst)});
  EXPECT_TRUE(mux_.Connections().empty());
  EXPECT_EQ(mux_.stats().resets_sent, 7u);
}

TEST_F(MuxTest, NeverAnswersRst) {
  EXPECT_EQ(Send(G(Op::kRst)), "");
  EXPECT_EQ(Send(G(Op::kRst, 1, 2)), "");
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_EQ(mux_.stats().resets_sent, 0u);
  EXPECT_EQ(mux_.stats().dropped, 2u);
}

TEST_F(MuxTest, GuestRstClosesWithoutReply) {
  Connect();
  EXPECT_EQ(Send(G(Op::kRst)), "Closed(1025:5640)");
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_FALSE(mux_.Has(kKey));
  EXPECT_EQ(Send(G(Op::kRst)), "");  // the second one finds nothing; still no reply
  EXPECT_FALSE(mux_.HasControl());
}

TEST_F(MuxTest, DropsWrongCidsAndLengthMismatch) {
  Header h = G(Op::kRequest);
  h.dst_cid = 5;  // not the host
  EXPECT_EQ(Send(h), "");
  h = G(Op::kRequest);
  h.src_cid = 4;  // not the guest
  EXPECT_EQ(Send(h), "");
  h = G(Op::kRequest);
  h.src_cid = kHostCid;
  EXPECT_EQ(Send(h), "");
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_FALSE(mux_.Has(kKey));
  EXPECT_EQ(mux_.stats().dropped, 3u);

  Connect();
  h = G(Op::kRw);
  h.len = 5;
  EXPECT_EQ(Str(mux_.OnGuestPacket(h, Bytes("abc"))), "");
  h.len = 1;
  EXPECT_EQ(Str(mux_.OnGuestPacket(h, Bytes("abc"))), "");
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
  EXPECT_EQ(mux_.stats().dropped, 5u);
  EXPECT_TRUE(mux_.Has(kKey));
  EXPECT_FALSE(mux_.HasControl());
}

TEST_F(MuxTest, RwDataArrivesInOrder) {
  Connect();
  EXPECT_EQ(SendRw("hello "), "Readable(1025:5640)");
  EXPECT_EQ(SendRw("vsock "), "Readable(1025:5640)");
  EXPECT_EQ(SendRw(""), "");  // harmless
  EXPECT_EQ(SendRw("world"), "Readable(1025:5640)");
  EXPECT_EQ(Text(mux_.Inbound(kKey)), "hello vsock world");
  mux_.Consume(kKey, 6);
  EXPECT_EQ(Text(mux_.Inbound(kKey)), "vsock world");
  EXPECT_EQ(SendRw("!"), "Readable(1025:5640)");
  mux_.Consume(kKey, 7);  // past half: compacted
  EXPECT_EQ(Text(mux_.Inbound(kKey)), "orld!");
  mux_.Consume(kKey, 100);  // clamped
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
  EXPECT_TRUE(mux_.Has(kKey));
  EXPECT_TRUE(mux_.Inbound({1, 2}).empty());
  mux_.Consume({1, 2}, 5);  // unknown: ignored
}

TEST_F(MuxTest, InboundKeepsOrderThroughManyPartialConsumes) {
  Connect();
  std::string sent, taken;
  uint32_t n = 0;
  for (int round = 0; round < 500; ++round) {
    std::string chunk;
    for (size_t i = 0; i < static_cast<size_t>(round % 37) + 1; ++i) {
      chunk += static_cast<char>('a' + n++ % 26);
    }
    if (mux_.Inbound(kKey).size() + chunk.size() > kBufAlloc) break;
    ASSERT_EQ(SendRw(chunk), "Readable(1025:5640)");
    sent += chunk;
    auto in = mux_.Inbound(kKey);
    size_t take = std::min<size_t>(in.size(), static_cast<size_t>(round % 41));
    taken += Text(in.first(take));
    mux_.Consume(kKey, take);
  }
  taken += Text(mux_.Inbound(kKey));
  EXPECT_EQ(taken, sent);
  EXPECT_GT(sent.size(), 5000u);
}

TEST_F(MuxTest, ConsumeSendsCreditUpdateAfterAQuarter) {
  Connect();
  ASSERT_EQ(SendRw(std::string(600, 'x')), "Readable(1025:5640)");
  mux_.Consume(kKey, 100);  // the guest sees 400 free: fine for now
  EXPECT_FALSE(mux_.HasControl());
  mux_.Consume(kKey, 149);
  EXPECT_FALSE(mux_.HasControl());
  mux_.Consume(kKey, 1);  // 250 = a quarter of 1000 behind
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kCreditUpdate, 250)});
  mux_.Consume(kKey, 10);
  EXPECT_FALSE(mux_.HasControl());
  mux_.Consume(kKey, 1000);  // clamped to the 340 left: 350 behind
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kCreditUpdate, 600)});
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
  // Drained while the guest still sees 800 of 1000 free: no packet for so little.
  ASSERT_EQ(SendRw(std::string(200, 'y')), "Readable(1025:5640)");
  mux_.Consume(kKey, 200);
  EXPECT_FALSE(mux_.HasControl());
  ASSERT_EQ(SendRw(std::string(100, 'z')), "Readable(1025:5640)");
  mux_.Consume(kKey, 100);
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kCreditUpdate, 900)});
}

TEST_F(MuxTest, CreditRequestIsAnswered) {
  Connect();
  ASSERT_EQ(SendRw("abc"), "Readable(1025:5640)");
  mux_.Consume(kKey, 2);
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_EQ(Send(G(Op::kCreditRequest)), "");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kCreditUpdate, 2)});
}

// A guest that sends whenever it has credit, exactly up to its credit, must never wait forever
// once the host side consumed what it had: whatever the packet sizes and consume steps.
struct StallCase {
  uint32_t buf_alloc;
  std::vector<uint32_t> sizes;
  size_t consume_step;
  // The guest waits for credit for a whole packet instead of sending what credit allows (as
  // Linux does); fine for packets up to 3/4 of buf_alloc (see Mux::Consume).
  bool whole_packets;
};

class NoStallTest : public ::testing::TestWithParam<StallCase> {};

TEST_P(NoStallTest, GuestAlwaysGetsCreditBack) {
  const StallCase& tc = GetParam();
  Mux mux({.guest_cid = kGuestCid, .buf_alloc = tc.buf_alloc, .max_connections = 1});
  mux.Listen(kPort);
  ASSERT_EQ(Str(mux.OnGuestPacket(G(Op::kRequest), {})), "Accepted(1025:5640)");
  Header resp = mux.PopControl();
  ASSERT_EQ(resp.op, O(Op::kResponse));

  std::string data;
  for (size_t i = 0; i < 50000; ++i) data += static_cast<char>('A' + (i * 7 + i / 13) % 57);
  // The guest's view of the host: its buf_alloc and fwd_cnt from the last packet heard.
  uint32_t peer_buf_alloc = resp.buf_alloc, peer_fwd_cnt = resp.fwd_cnt, tx_cnt = 0;
  size_t sent = 0, next_size = 0, updates = 0;
  std::string received;
  while (received.size() < data.size()) {
    bool progressed = false;
    for (;;) {
      uint32_t credit = peer_buf_alloc - (tx_cnt - peer_fwd_cnt);
      uint32_t want = std::min<uint32_t>(tc.sizes[next_size % tc.sizes.size()],
                                         static_cast<uint32_t>(data.size() - sent));
      uint32_t n = tc.whole_packets ? (credit >= want ? want : 0) : std::min(want, credit);
      if (n == 0) break;
      Header h = G(Op::kRw);
      h.len = n;
      ASSERT_EQ(Str(mux.OnGuestPacket(h, Bytes(std::string_view(data).substr(sent, n)))),
                "Readable(1025:5640)");
      sent += n;
      tx_cnt += n;
      ++next_size;
      progressed = true;
    }
    auto in = mux.Inbound(kKey);
    ASSERT_LE(in.size(), tc.buf_alloc);
    if (!in.empty()) {
      size_t take = std::min(in.size(), tc.consume_step);
      received += Text(in.first(take));
      mux.Consume(kKey, take);
      progressed = true;
    }
    while (mux.HasControl()) {
      Header h = mux.PopControl();
      ASSERT_EQ(h.op, O(Op::kCreditUpdate)) << Str(h);
      peer_buf_alloc = h.buf_alloc;
      peer_fwd_cnt = h.fwd_cnt;
      ++updates;
    }
    ASSERT_TRUE(progressed) << "stalled with " << received.size() << " of " << data.size()
                            << " bytes received; the guest's credit is "
                            << peer_buf_alloc - (tx_cnt - peer_fwd_cnt);
  }
  EXPECT_EQ(received, data);
  EXPECT_TRUE(mux.Has(kKey));
  // Updates come in steps of at least a quarter buffer, not per consume.
  EXPECT_LE(updates, data.size() / std::max<size_t>(1, tc.buf_alloc / 4));
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, NoStallTest,
    ::testing::Values(StallCase{1000, {1}, 1000, false}, StallCase{1000, {7, 13, 250}, 1, false},
                      StallCase{1000, {7, 13, 250}, 97, false},
                      StallCase{1000, {1000}, 1000, false}, StallCase{1000, {999, 2}, 333, false},
                      StallCase{1024, {4096}, 100, false}, StallCase{3, {1, 2, 5}, 1, false},
                      StallCase{1, {1}, 1, false}, StallCase{1000, {500, 499, 3}, 7, true},
                      StallCase{1000, {700}, 1000, true}, StallCase{1000, {740, 10}, 64, true},
                      StallCase{65536, {1500, 65536, 4096}, 4000, false}));

TEST_F(MuxTest, GuestExceedingItsCreditIsReset) {
  Connect();
  ASSERT_EQ(SendRw(std::string(600, 'a')), "Readable(1025:5640)");
  ASSERT_EQ(SendRw(std::string(400, 'b')), "Readable(1025:5640)");  // exactly full: fine
  EXPECT_EQ(mux_.Inbound(kKey).size(), kBufAlloc);
  EXPECT_EQ(SendRw("c"), "Closed(1025:5640)");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst)});
  EXPECT_FALSE(mux_.Has(kKey));
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
}

TEST_F(MuxTest, OversizedFirstPacketIsReset) {
  Connect();
  EXPECT_EQ(SendRw(std::string(kBufAlloc + 1, 'a')), "Closed(1025:5640)");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst)});
}

TEST_F(MuxTest, SendWindowFollowsGuestCredit) {
  Connect();
  EXPECT_EQ(mux_.SendWindow(kKey), 4096u);
  Header rw = mux_.Rw(kKey, 1000);
  EXPECT_EQ(Str(rw), Host(Op::kRw, 0, 0, 1000));
  EXPECT_EQ(mux_.SendWindow(kKey), 3096u);
  rw = mux_.Rw(kKey, 5000);  // a caller bug: clamped to the window
  EXPECT_EQ(rw.len, 3096u);
  EXPECT_EQ(mux_.SendWindow(kKey), 0u);
  EXPECT_EQ(mux_.Rw(kKey, 10).len, 0u);

  // The guest consumed 1000: credit reopens.
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 1000)), "Writable(1025:5640)");
  EXPECT_EQ(mux_.SendWindow(kKey), 1000u);
  // The same news again, and an RW carrying more: no second kWritable (the window was open).
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 1000)), "");
  EXPECT_EQ(SendRw("x", 2000), "Readable(1025:5640)");
  EXPECT_EQ(mux_.SendWindow(kKey), 2000u);
  // A bigger buffer counts too.
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 2000, 8192)), "");
  EXPECT_EQ(mux_.SendWindow(kKey), 6096u);
  // Nonsense: a fwd_cnt past what was sent, or a buffer smaller than what is in flight.
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 5000)), "");
  EXPECT_EQ(mux_.SendWindow(kKey), 0u);
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 2000, 100)), "");
  EXPECT_EQ(mux_.SendWindow(kKey), 0u);
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 4096)), "Writable(1025:5640)");
  EXPECT_EQ(mux_.SendWindow(kKey), 4096u);
  EXPECT_EQ(mux_.SendWindow({1, 2}), 0u);
  EXPECT_EQ(mux_.Rw({1, 2}, 10).len, 0u);
}

TEST_F(MuxTest, RwCarriesFwdCntAndCountsWrapAround) {
  Connect();
  ASSERT_EQ(SendRw("abcd"), "Readable(1025:5640)");
  mux_.Consume(kKey, 4);
  EXPECT_EQ(Drain(), std::vector<std::string>{});  // 4 of 1000, guest sees 996 free
  // The RW tells the guest fwd_cnt 4 (so no update is owed any more).
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 0, 0xffffffff)), "");
  EXPECT_EQ(Str(mux_.Rw(kKey, 0xf0000000)), Host(Op::kRw, 4, 0, 0xf0000000));
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 0xf0000000, 0xffffffff)), "");
  EXPECT_EQ(mux_.Rw(kKey, 0x20000000).len, 0x20000000u);  // tx_cnt wraps to 0x10000000
  EXPECT_EQ(mux_.SendWindow(kKey), 0xffffffffu - 0x20000000u);
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 0x10000000, 0xffffffff)), "");
  EXPECT_EQ(mux_.SendWindow(kKey), 0xffffffffu);
}

TEST_F(MuxTest, GuestHalfCloseThenHostShutdownCloses) {
  Connect();
  ASSERT_EQ(SendRw("last words"), "Readable(1025:5640)");
  EXPECT_EQ(Send(G(Op::kShutdown, kGuestPort, kPort, 0), ""), "");  // no flags: nothing
  Header sh = G(Op::kShutdown);
  sh.flags = kShutdownSend;
  EXPECT_EQ(Send(sh), "PeerShutdown(1025:5640)");
  EXPECT_EQ(Send(sh), "");  // once only
  EXPECT_TRUE(mux_.Has(kKey));
  EXPECT_EQ(Text(mux_.Inbound(kKey)), "last words");
  EXPECT_EQ(SendRw("more"), "");  // it said it was done: dropped
  EXPECT_EQ(Text(mux_.Inbound(kKey)), "last words");
  // The host may still send.
  EXPECT_EQ(mux_.Rw(kKey, 5).len, 5u);
  mux_.Consume(kKey, 10);
  EXPECT_TRUE(mux_.Has(kKey));
  Drain();
  // Then is done too: both directions done, closed with a RST after the SHUTDOWN.
  mux_.Shutdown(kKey, kShutdownSend);
  EXPECT_EQ(Drain(),
            (std::vector<std::string>{Host(Op::kShutdown, 10, kShutdownSend), Host(Op::kRst, 10)}));
  EXPECT_FALSE(mux_.Has(kKey));
}

TEST_F(MuxTest, GuestFullShutdownClosesAtOnceWhenDrained) {
  Connect();
  Header sh = G(Op::kShutdown);
  sh.flags = kShutdownRcv | kShutdownSend;  // what a Linux guest's close() sends
  EXPECT_EQ(Send(sh), "PeerShutdown(1025:5640) Closed(1025:5640)");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst)});
  EXPECT_FALSE(mux_.Has(kKey));
}

TEST_F(MuxTest, GuestFullShutdownWaitsForInboundToBeConsumed) {
  Connect();
  ASSERT_EQ(SendRw("pending"), "Readable(1025:5640)");
  Header sh = G(Op::kShutdown);
  sh.flags = kShutdownRcv;
  EXPECT_EQ(Send(sh), "");
  EXPECT_EQ(mux_.SendWindow(kKey), 0u);  // it will receive no more
  sh.flags = kShutdownSend;
  EXPECT_EQ(Send(sh), "PeerShutdown(1025:5640)");
  EXPECT_TRUE(mux_.Has(kKey));
  EXPECT_FALSE(mux_.HasControl());
  mux_.Consume(kKey, 3);
  EXPECT_TRUE(mux_.Has(kKey));
  mux_.Consume(kKey, 4);  // the last byte: closed
  EXPECT_FALSE(mux_.Has(kKey));
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst, 7)});
}

TEST_F(MuxTest, HostShutdownSendStopsSendingOnly) {
  Connect();
  mux_.Shutdown(kKey, kShutdownSend | 0x10);  // unknown bits ignored
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kShutdown, 0, kShutdownSend)});
  EXPECT_EQ(mux_.SendWindow(kKey), 0u);
  EXPECT_EQ(mux_.Rw(kKey, 10).len, 0u);
  mux_.Shutdown(kKey, kShutdownSend);  // nothing new: nothing sent
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_EQ(SendRw("still"), "Readable(1025:5640)");
  // A credit update does not reopen the window.
  EXPECT_EQ(Send(G(Op::kCreditUpdate, kGuestPort, kPort, 0, 1 << 20)), "");
  EXPECT_EQ(mux_.SendWindow(kKey), 0u);
  // The guest's close: both done once Inbound is taken.
  Header sh = G(Op::kShutdown);
  sh.flags = kShutdownRcv | kShutdownSend;
  EXPECT_EQ(Send(sh), "PeerShutdown(1025:5640)");
  mux_.Consume(kKey, 5);
  EXPECT_FALSE(mux_.Has(kKey));
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst, 5)});
}

TEST_F(MuxTest, HostShutdownRcvDiscards) {
  Connect();
  ASSERT_EQ(SendRw("unwanted"), "Readable(1025:5640)");
  mux_.Shutdown(kKey, kShutdownRcv);
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kShutdown, 8, kShutdownRcv)});
  EXPECT_EQ(SendRw("late"), "");  // discarded
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
  EXPECT_GT(mux_.SendWindow(kKey), 0u);  // sending is still fine
  // Both bits: closed.
  mux_.Shutdown(kKey, kShutdownSend);
  EXPECT_EQ(Drain(),
            (std::vector<std::string>{Host(Op::kShutdown, 12, kShutdownRcv | kShutdownSend),
                                      Host(Op::kRst, 12)}));
  EXPECT_FALSE(mux_.Has(kKey));
}

TEST_F(MuxTest, HostFullShutdownClosesAtOnce) {
  Connect();
  ASSERT_EQ(SendRw("x"), "Readable(1025:5640)");
  mux_.Shutdown(kKey, kShutdownRcv | kShutdownSend);
  EXPECT_EQ(Drain(), (std::vector<std::string>{Host(Op::kShutdown, 1, kShutdownRcv | kShutdownSend),
                                               Host(Op::kRst, 1)}));
  EXPECT_FALSE(mux_.Has(kKey));
  // The guest's own RST crossing ours finds nothing and gets no answer.
  EXPECT_EQ(Send(G(Op::kRst)), "");
  EXPECT_FALSE(mux_.HasControl());
  mux_.Shutdown(kKey, kShutdownSend);  // unknown: ignored
  EXPECT_FALSE(mux_.HasControl());
}

TEST_F(MuxTest, MaxConnections) {
  for (uint32_t p = 1; p <= 4; ++p) {
    EXPECT_EQ(Send(G(Op::kRequest, p)), fmt::format("Accepted({}:5640)", p));
  }
  Drain();
  EXPECT_EQ(Send(G(Op::kRequest, 5)), "");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst, 0, 0, 0, {5, kPort})});
  EXPECT_EQ(mux_.Connections().size(), 4u);
  EXPECT_FALSE(mux_.Has({5, kPort}));
  EXPECT_EQ(Send(G(Op::kRst, 2)), "Closed(2:5640)");
  EXPECT_EQ(Send(G(Op::kRequest, 5)), "Accepted(5:5640)");
  EXPECT_EQ(mux_.Connections(),
            (std::vector<ConnKey>{{1, kPort}, {3, kPort}, {4, kPort}, {5, kPort}}));
}

TEST_F(MuxTest, DuplicateRequestResetsTheStaleConnection) {
  Connect();
  ASSERT_EQ(SendRw("old"), "Readable(1025:5640)");
  EXPECT_EQ(Send(G(Op::kRequest)), "Closed(1025:5640)");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst)});
  EXPECT_FALSE(mux_.Has(kKey));
  Connect();  // the guest's retry
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
}

TEST_F(MuxTest, ResponseOnAConnectionIsDropped) {
  Connect();
  EXPECT_EQ(Send(G(Op::kResponse)), "");
  Header odd = G(Op::kRw);
  odd.op = 42;
  EXPECT_EQ(Send(odd), "");
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_TRUE(mux_.Has(kKey));
  EXPECT_EQ(mux_.stats().dropped, 2u);
}

TEST_F(MuxTest, HostReset) {
  Connect();
  ConnKey other{.guest_port = 77, .host_port = kPort};
  ASSERT_EQ(Send(G(Op::kRequest, 77)), "Accepted(77:5640)");
  ASSERT_EQ(SendRw("abc"), "Readable(1025:5640)");
  Drain();
  mux_.Reset(kKey);
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst)});
  EXPECT_FALSE(mux_.Has(kKey));
  EXPECT_TRUE(mux_.Has(other));
  EXPECT_TRUE(mux_.Inbound(kKey).empty());
  EXPECT_EQ(mux_.stats().resets_sent, 1u);
  mux_.Reset(kKey);  // gone: nothing more
  EXPECT_FALSE(mux_.HasControl());
  // An RW that crossed the RST is answered as for no connection.
  EXPECT_EQ(SendRw("def"), "");
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst)});
}

// --- the host connecting to the guest (Connect) ---

constexpr uint32_t kAgentPort = 7070;  // a port the guest listens on
constexpr ConnKey kOut{.guest_port = kAgentPort, .host_port = Mux::kFirstConnectPort};

TEST_F(MuxTest, ConnectSendsARequestAndTheGuestsResponseOpensIt) {
  auto k = mux_.Connect(kAgentPort);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ(*k, kOut);
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRequest, 0, 0, 0, kOut)});
  EXPECT_TRUE(mux_.Has(kOut));
  EXPECT_TRUE(mux_.Connecting(kOut));
  EXPECT_EQ(mux_.SendWindow(kOut), 0u);
  EXPECT_EQ(mux_.Rw(kOut, 10).len, 0u);

  EXPECT_EQ(Send(G(Op::kResponse, kAgentPort, kOut.host_port)),
            fmt::format("Connected({}:{})", kAgentPort, kOut.host_port));
  EXPECT_FALSE(mux_.Connecting(kOut));
  EXPECT_EQ(mux_.SendWindow(kOut), kGuestBufAlloc);
  EXPECT_FALSE(mux_.HasControl());
  // Open: bytes both ways, and a second RESPONSE is dropped as on any open connection.
  EXPECT_EQ(Send(G(Op::kRw, kAgentPort, kOut.host_port), "hello"),
            fmt::format("Readable({}:{})", kAgentPort, kOut.host_port));
  EXPECT_EQ(Text(mux_.Inbound(kOut)), "hello");
  EXPECT_EQ(mux_.Rw(kOut, 3).len, 3u);
  EXPECT_EQ(Send(G(Op::kResponse, kAgentPort, kOut.host_port)), "");
  EXPECT_EQ(mux_.stats().dropped, 1u);
}

TEST_F(MuxTest, AConnectTheGuestRefusesIsClosed) {
  ASSERT_TRUE(mux_.Connect(kAgentPort).ok());
  Drain();
  EXPECT_EQ(Send(G(Op::kRst, kAgentPort, kOut.host_port)),
            fmt::format("Closed({}:{})", kAgentPort, kOut.host_port));
  EXPECT_FALSE(mux_.Has(kOut));
  EXPECT_FALSE(mux_.HasControl());  // a RST is never answered
}

TEST_F(MuxTest, AnythingButAnAnswerWhileConnectingResetsTheConnect) {
  for (Op op : {Op::kRw, Op::kShutdown, Op::kCreditUpdate, Op::kCreditRequest, Op::kRequest}) {
    auto k = mux_.Connect(kAgentPort);
    ASSERT_TRUE(k.ok());
    Drain();
    EXPECT_EQ(Send(G(op, kAgentPort, k->host_port), op == Op::kRw ? "early" : ""),
              fmt::format("Closed({}:{})", kAgentPort, k->host_port))
        << OpName(static_cast<uint16_t>(op));
    EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst, 0, 0, 0, *k)});
    EXPECT_FALSE(mux_.Has(*k));
  }
}

TEST_F(MuxTest, GivingUpOnAConnectResetsIt) {
  ASSERT_TRUE(mux_.Connect(kAgentPort).ok());
  Drain();
  mux_.Shutdown(kOut, kShutdownSend | kShutdownRcv);
  EXPECT_EQ(Drain(), std::vector<std::string>{Host(Op::kRst, 0, 0, 0, kOut)});
  EXPECT_FALSE(mux_.Has(kOut));
  // The guest's answer crossed the RST: answered as for no connection.
  EXPECT_EQ(Send(G(Op::kResponse, kAgentPort, kOut.host_port)), "");
  EXPECT_EQ(mux_.ControlPending(), 1u);
}

TEST_F(MuxTest, ConnectPicksFreshPortsAndStopsAtMaxConnections) {
  mux_.Listen(Mux::kFirstConnectPort + 1);  // never picked
  auto a = mux_.Connect(kAgentPort);
  auto b = mux_.Connect(kAgentPort);
  auto c = mux_.Connect(kAgentPort + 1);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->host_port, Mux::kFirstConnectPort);
  EXPECT_EQ(b->host_port, Mux::kFirstConnectPort + 2);
  EXPECT_EQ(c->host_port, Mux::kFirstConnectPort + 3);
  ASSERT_EQ(Send(G(Op::kRequest)), "Accepted(1025:5640)");  // the 4th connection
  auto d = mux_.Connect(kAgentPort);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), Code::kResourceExhausted);
  EXPECT_NE(d.status().message().find("4 connections open"), std::string::npos) << d.status();
}

TEST_F(MuxTest, PopControlOnEmptyQueue) {
  EXPECT_FALSE(mux_.HasControl());
  EXPECT_EQ(mux_.PopControl().op, O(Op::kInvalid));
}

}  // namespace
}  // namespace fun::vsock
