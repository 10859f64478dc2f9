// The parser runs on /proc/net text captured from a real kernel (Linux 6.18, x86_64: little
// endian), with sockets opened for it: TCP listening on 0.0.0.0, 127.0.0.1, ::, ::1 and
// ::ffff:127.0.0.1 and one established connection (both ends); UDP bound to 0.0.0.0,
// 127.0.0.1, ::, ::1 and ::ffff:127.0.0.1, and a connected UDP socket per family.
#include "lib/net/listen_ports.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tuple>

#include "lib/net/agent_protocol.h"

namespace fun::net {

void PrintTo(const ListenPort& p, std::ostream* os) {
  *os << ProtocolName(p.protocol) << " " << p.address << " " << p.port;
}

namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr std::string_view kProcNetTcp =
    R"proc(  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 0100007F:1389 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1868040 1 00000000e7780a04 100 0 0 10 0                   
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1868039 1 00000000902df97d 100 0 0 10 0                   
   2: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 639 1 0000000075fd6124 100 0 0 10 0                       
   3: 0100007F:B648 0100007F:1389 01 00000000:00000000 00:00000000 00000000     0        0 1868044 2 0000000045cbb98a 20 0 0 10 -1                   
   4: 0100007F:1389 0100007F:B648 01 00000000:00000000 00:00000000 00000000     0        0 1868045 1 00000000ea92904a 20 0 0 10 -1                   
)proc";

constexpr std::string_view kProcNetTcp6 =
    R"proc(  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:1B9E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1868043 1 00000000fc0cb567 100 0 0 10 0
   1: 00000000000000000000000000000000:192B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1868041 1 00000000857c6445 100 0 0 10 0
   2: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1868042 1 00000000c1881ebe 100 0 0 10 0
)proc";

constexpr std::string_view kProcNetUdp =
    R"proc(   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
 2636: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1868047 2 00000000e226fc17 0       
 5241: 0100007F:8A62 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 1868048 2 000000007f39df7f 0       
 7936: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1868046 2 000000004aa308a5 0       
)proc";

constexpr std::string_view kProcNetUdp6 =
    R"proc(  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 3129: 00000000000000000000000000000000:0222 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1868049 2 000000004011a99b 0
 7372: 0000000000000000FFFF00000100007F:12B5 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1868051 2 0000000014d43516 0
 9344: 00000000000000000000000001000000:9A69 00000000000000000000000001000000:1FBD 01 00000000:00000000 00:00000000 00000000     0        0 1868052 2 00000000840bda7a 0
10708: 00000000000000000000000001000000:1FBD 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1868050 2 000000006e14f6cb 0
)proc";

ListenPort Tcp(std::string address, uint16_t port) {
  return {.protocol = Protocol::kTcp, .address = std::move(address), .port = port};
}
ListenPort Udp(std::string address, uint16_t port) {
  return {.protocol = Protocol::kUdp, .address = std::move(address), .port = port};
}

std::vector<ListenPort> Parse(std::string_view text, Protocol p, bool ipv6) {
  auto got = ParseProcNetSockets(text, p, ipv6);
  EXPECT_TRUE(got.ok()) << got.status();
  return got.ok() ? *got : std::vector<ListenPort>{};
}

TEST(ParseProcNetSocketsTest, CapturedTcpListenersOnly) {
  EXPECT_THAT(Parse(kProcNetTcp, Protocol::kTcp, false),
              ElementsAre(Tcp("0.0.0.0", 2024), Tcp("0.0.0.0", 8080), Tcp("127.0.0.1", 5001)));
  EXPECT_THAT(Parse(kProcNetTcp6, Protocol::kTcp, true),
              ElementsAre(Tcp("::", 6443), Tcp("::1", 9000), Tcp("::ffff:127.0.0.1", 7070)));
}

TEST(ParseProcNetSocketsTest, CapturedUdpBoundAndUnconnectedOnly) {
  EXPECT_THAT(Parse(kProcNetUdp, Protocol::kUdp, false),
              ElementsAre(Udp("0.0.0.0", 5353), Udp("127.0.0.1", 53)));
  EXPECT_THAT(Parse(kProcNetUdp6, Protocol::kUdp, true),
              ElementsAre(Udp("::", 546), Udp("::1", 8125), Udp("::ffff:127.0.0.1", 4789)));
}

TEST(ParseProcNetSocketsTest, HeaderOnlyAndEmptyAreNoSockets) {
  EXPECT_TRUE(
      Parse("  sl  local_address rem_address   st tx_queue rx_queue\n", Protocol::kTcp, false)
          .empty());
  EXPECT_TRUE(Parse("", Protocol::kUdp, true).empty());
}

// Hand-made lines: the byte order of each 32-bit word, states, duplicates, port 0.
TEST(ParseProcNetSocketsTest, HandMadeEdgeCases) {
  constexpr std::string_view kTcp =
      "  sl  local_address rem_address   st\n"
      "   0: 0100007F:0050 00000000:0000 0A\n"   // 127.0.0.1:80, LISTEN
      "   1: 0100007F:0050 00000000:0000 0A\n"   // the same again (SO_REUSEPORT): once
      "   2: 0F02000A:01BB 00000000:0000 0a\n"   // 10.0.2.15:443, lower-case hex
      "   3: 0100007F:0051 0100007F:D431 01\n"   // ESTABLISHED: not a listener
      "   4: 0100007F:0052 0100007F:D432 06\n"   // TIME_WAIT
      "   5: 00000000:0053 00000000:0000 07\n"   // CLOSE (a TCP socket bound, not listening)
      "   6: 00000000:0000 00000000:0000 0A\n";  // port 0: never reported
  EXPECT_THAT(Parse(kTcp, Protocol::kTcp, false),
              ElementsAre(Tcp("10.0.2.15", 443), Tcp("127.0.0.1", 80)));
  constexpr std::string_view kUdp6 =
      "  sl  local_address                         remote_address                        st\n"
      "   0: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07\n"
      "   1: 000080FE000000000000000001000000:0036 00000000000000000000000000000000:0000 07\n"
      "   2: 00000000000000000000000000000000:0000 00000000000000000000000000000000:0000 07\n"
      "   3: 00000000000000000000000001000000:0037 00000000000000000000000001000000:0035 01\n";
  EXPECT_THAT(Parse(kUdp6, Protocol::kUdp, true), ElementsAre(Udp("::1", 53), Udp("fe80::1", 54)));
}

TEST(ParseProcNetSocketsTest, MalformedLinesAreErrorsNamingTheLine) {
  const std::string header = "  sl  local_address rem_address   st\n";
  for (std::string_view line : {
           "   0: 0100007F:0050 00000000:0000\n",                             // no state
           "   0: 0100007F0050 00000000:0000 0A\n",                           // no colon
           "   0: 0100007G:0050 00000000:0000 0A\n",                          // not hex
           "   0: 100007F:0050 00000000:0000 0A\n",                           // 7 digits
           "   0: 0100007F:050 00000000:0000 0A\n",                           // 3-digit port
           "   0: 0100007F:0050 00000000:0000 A\n",                           // 1-digit state
           "   x: 0100007F:0050 00000000:0000 0A\n",                          // slot
           "   0: 00000000000000000000000001000000:0035 00000000:0000 0A\n",  // IPv6 in tcp
       }) {
    auto got = ParseProcNetSockets(header + std::string(line), Protocol::kTcp, false);
    ASSERT_FALSE(got.ok()) << line;
    EXPECT_THAT(got.status().message(), HasSubstr("/proc/net/tcp line 2 ")) << line;
  }
  // An IPv4 line in tcp6.
  auto got = ParseProcNetSockets(kProcNetTcp, Protocol::kTcp, true);
  ASSERT_FALSE(got.ok());
  EXPECT_THAT(got.status().message(), HasSubstr("/proc/net/tcp6 line 2 "));
  EXPECT_THAT(got.status().message(), HasSubstr("not a local IPv6 address:port"));
}

// --- the report ---------------------------------------------------------------------------

TEST(ListenPortsCodecTest, RoundTrip) {
  std::vector<ListenPort> ports = {Tcp("0.0.0.0", 8080),  Tcp("::1", 9000),
                                   Udp("127.0.0.1", 53),  Udp("::ffff:127.0.0.1", 4789),
                                   Tcp("fe80::1", 65535), Udp("::", 1)};
  auto wire = EncodeListenPorts(ports);
  ASSERT_TRUE(wire.ok()) << wire.status();
  EXPECT_EQ(*wire,
            "tcp 0.0.0.0 8080\ntcp ::1 9000\nudp 127.0.0.1 53\nudp ::ffff:127.0.0.1 4789\n"
            "tcp fe80::1 65535\nudp :: 1\n");
  auto got = DecodeListenPorts(*wire);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ports, ports);
  EXPECT_FALSE(got->truncated);
  EXPECT_EQ(*EncodeListenPorts({}), "");
  EXPECT_EQ(*DecodeListenPorts(""), ListenPortReport{});
}

TEST(ListenPortsCodecTest, TooManyAreTruncatedAndSaySo) {
  std::vector<ListenPort> many;
  // Short lines ("tcp :: 1"): the line limit cuts first.
  for (int i = 1; i <= 2000; ++i) many.push_back(Tcp("::", static_cast<uint16_t>(i)));
  auto wire = EncodeListenPorts(many);
  ASSERT_TRUE(wire.ok()) << wire.status();
  EXPECT_LE(wire->size(), agent::kMaxMessageSize);
  EXPECT_TRUE(wire->ends_with("\ntruncated\n"));
  auto got = DecodeListenPorts(*wire);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->truncated);
  EXPECT_EQ(got->ports.size(), kMaxListenPorts);
  EXPECT_TRUE(std::equal(got->ports.begin(), got->ports.end(), many.begin()));

  // Long IPv6 lines: the byte limit cuts first, and leaves room for the marker.
  std::vector<ListenPort> wide;
  for (int i = 1; i <= 1000; ++i) {
    wide.push_back(Udp(fmt::format("fd00:1234:5678:9abc:def0:1234:5678:{:x}", i), 65535));
  }
  wire = EncodeListenPorts(wide);
  ASSERT_TRUE(wire.ok()) << wire.status();
  EXPECT_LE(wire->size(), agent::kMaxMessageSize);
  got = DecodeListenPorts(*wire);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->truncated);
  EXPECT_LT(got->ports.size(), wide.size());
  EXPECT_GT(got->ports.size(), 200u);

  // Exactly the limit: no marker.
  many.resize(kMaxListenPorts);
  got = DecodeListenPorts(*EncodeListenPorts(many));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_FALSE(got->truncated);
  EXPECT_EQ(got->ports, many);
  // A list already cut keeps its mark.
  EXPECT_EQ(*EncodeListenPorts({Tcp("::", 22)}, true), "tcp :: 22\ntruncated\n");
}

TEST(ListenPortsCodecTest, EncoderRefusesWhatTheDecoderWould) {
  EXPECT_FALSE(EncodeListenPorts({Tcp("localhost", 80)}).ok());
  EXPECT_FALSE(EncodeListenPorts({Tcp("::0", 80)}).ok());  // not canonical ("::")
  EXPECT_FALSE(EncodeListenPorts({Tcp("127.0.0.1", 0)}).ok());
  EXPECT_FALSE(
      EncodeListenPorts({{.protocol = static_cast<Protocol>(7), .address = "::", .port = 1}}).ok());
}

TEST(ListenPortsCodecTest, DecoderIsStrictAndNamesTheLine) {
  struct Case {
    std::string text;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {"sctp 0.0.0.0 80\n", "line 1 \"sctp 0.0.0.0 80\": the protocol must be tcp or udp"},
           {"tcp 0.0.0.0 80\nTCP :: 80\n", "line 2 \"TCP :: 80\": the protocol"},
           {"tcp 0.0.0.0 0\n", "the port must be 1..65535"},
           {"tcp 0.0.0.0 65536\n", "the port must be 1..65535"},
           {"tcp 0.0.0.0 080\n", "no leading zeros"},
           {"tcp 0.0.0.0 +80\n", "the port must be"},
           {"tcp 0.0.0.0 80 \n", "expected \"tcp|udp ADDRESS PORT\""},
           {"tcp  0.0.0.0 80\n", "expected"},
           {"tcp 0.0.0.0\n", "expected"},
           {"\n", "line 1 \"\": expected"},
           {"tcp 0.0.0.0 80", "line 1 \"tcp 0.0.0.0 80\": no newline at its end"},
           {"tcp 0.0.0.0 80\r\n", "the port must be"},
           {"tcp 1.2.3 80\n", "not an IP address in canonical form"},
           {"tcp 01.2.3.4 80\n", "not an IP address"},
           {"tcp ::0 80\n", "canonical form"},
           {"tcp 0:0:0:0:0:0:0:1 80\n", "canonical form"},
           {"tcp localhost 80\n", "not an IP address"},
           {std::string("tcp 1.2.3.4\0 80\n", 16), "line 1 \"tcp 1.2.3.4\\x00 80\": not an IP"},
           {"truncated\ntcp :: 80\n", "line 2 \"tcp :: 80\": a line after \"truncated\""},
           {"udp " + std::string(70, '1') + " 1\n", "longer than 64 bytes"},
       }) {
    auto got = DecodeListenPorts(c.text);
    ASSERT_FALSE(got.ok()) << c.text;
    EXPECT_THAT(got.status().message(), HasSubstr(c.error)) << c.text;
    EXPECT_THAT(got.status().message(), ::testing::StartsWith("listening ports"));
  }
  // Too many lines, and too many bytes.
  std::string many;
  for (size_t i = 0; i <= kMaxListenPorts; ++i) many += "tcp :: 1\n";
  EXPECT_THAT(DecodeListenPorts(many).status().message(),
              HasSubstr("line 1025 \"tcp :: 1\": more than 1024 entries"));
  EXPECT_THAT(DecodeListenPorts(std::string(agent::kMaxMessageSize + 1, '\n')).status().message(),
              HasSubstr("a report of 16385 bytes (at most 16384)"));
}

// What the guest reports is what the host reads: the parser's output encodes and decodes back.
TEST(ListenPortsCodecTest, ParsedCapturesRoundTrip) {
  std::vector<ListenPort> all;
  for (auto [text, p, v6] : {std::tuple{kProcNetTcp, Protocol::kTcp, false},
                             std::tuple{kProcNetTcp6, Protocol::kTcp, true},
                             std::tuple{kProcNetUdp, Protocol::kUdp, false},
                             std::tuple{kProcNetUdp6, Protocol::kUdp, true}}) {
    auto got = Parse(text, p, v6);
    all.insert(all.end(), got.begin(), got.end());
  }
  ASSERT_EQ(all.size(), 11u);
  auto got = DecodeListenPorts(*EncodeListenPorts(all));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ports, all);
}

}  // namespace
}  // namespace fun::net
