#include "lib/net/agent_protocol.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace fun::agent {
namespace {

using ::testing::HasSubstr;

Token MakeToken(uint8_t seed) {
  Token t;
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<uint8_t>(seed + i * 7);
  return t;
}

TEST(AgentProtocolTest, RequestRoundTripsForEveryKind) {
  for (Kind k : {Kind::kPing, Kind::kContainerd, Kind::kTcp, Kind::kUdp, Kind::kShutdown,
                 Kind::kTimeSync, Kind::kLog, Kind::kPorts, Kind::kP9}) {
    Request r{.token = MakeToken(3),
              .kind = k,
              .arg = 0x0102030405060708ull,
              .target = k == Kind::kTcp  ? "10.4.0.2:80"
                        : k == Kind::kP9 ? "home"
                                         : ""};
    auto wire = EncodeRequest(r);
    ASSERT_TRUE(wire.ok());
    auto got = DecodeRequest(*wire + "trailing stream bytes");
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ((*got)->first, r) << KindName(k);
    EXPECT_EQ((*got)->second, wire->size());
  }
}

TEST(AgentProtocolTest, RequestNeedsMoreBytesUntilComplete) {
  auto wire = *EncodeRequest({.token = MakeToken(1), .kind = Kind::kTcp, .target = "[::1]:8080"});
  for (size_t n = 0; n < wire.size(); ++n) {
    auto got = DecodeRequest(std::string_view(wire).substr(0, n));
    ASSERT_TRUE(got.ok()) << n;
    EXPECT_FALSE(got->has_value()) << n;
  }
}

TEST(AgentProtocolTest, GarbageFailsAtTheFirstWrongByte) {
  auto r = DecodeRequest("GET / HTTP/1.1\r\n");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("wrong magic"));
  EXPECT_FALSE(DecodeRequest("FX").ok());
  EXPECT_TRUE(DecodeRequest("FU").ok());
}

TEST(AgentProtocolTest, RefusesOtherVersionsKindsAndSizes) {
  auto wire = *EncodeRequest({.token = MakeToken(1), .kind = Kind::kPing});
  std::string v2 = wire;
  v2[4] = 2;
  EXPECT_THAT(DecodeRequest(v2).status().message(), HasSubstr("protocol version 2"));
  std::string kind = wire;
  kind[4 + 1 + 32] = 99;
  EXPECT_THAT(DecodeRequest(kind).status().message(), HasSubstr("unknown request kind 99"));
  std::string big = wire;
  big[big.size() - 2] = static_cast<char>(0xff);
  big[big.size() - 1] = static_cast<char>(0xff);
  EXPECT_THAT(DecodeRequest(big).status().message(), HasSubstr("65535 bytes (at most 1024)"));
  EXPECT_FALSE(EncodeRequest({.target = std::string(2000, 'x')}).ok());
  EXPECT_FALSE(EncodeRequest({.kind = static_cast<Kind>(0)}).ok());
}

TEST(AgentProtocolTest, ReplyRoundTripAndErrors) {
  Reply r{.status = ReplyStatus::kUnavailable, .message = "containerd is starting"};
  auto wire = EncodeReply(r);
  ASSERT_TRUE(wire.ok());
  auto got = DecodeReply(*wire);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->first, r);
  EXPECT_FALSE(DecodeReply(std::string_view(*wire).substr(0, wire->size() - 1))->has_value());
  std::string bad = *wire;
  bad[4] = 9;
  EXPECT_THAT(DecodeReply(bad).status().message(), HasSubstr("unknown reply status 9"));
  EXPECT_FALSE(DecodeReply("FUNA").ok());
  EXPECT_FALSE(EncodeReply({.message = std::string(kMaxMessageSize + 1, 'x')}).ok());
}

TEST(AgentProtocolTest, Datagrams) {
  std::string stream = *EncodeDatagram("hello") + *EncodeDatagram("") + *EncodeDatagram("x");
  std::vector<std::string> got;
  std::string_view rest = stream;
  for (;;) {
    auto d = DecodeDatagram(rest);
    ASSERT_TRUE(d.ok());
    if (!d->has_value()) break;
    got.emplace_back((*d)->first);
    rest.remove_prefix((*d)->second);
  }
  EXPECT_EQ(got, (std::vector<std::string>{"hello", "", "x"}));
  EXPECT_TRUE(rest.empty());
  EXPECT_FALSE(EncodeDatagram(std::string(70000, 'x')).ok());
  EXPECT_FALSE(DecodeDatagram("\x05\x00"
                              "abc")
                   ->has_value());
}

TEST(AgentProtocolTest, TokensCompareInFull) {
  Token a = MakeToken(1), b = MakeToken(1);
  EXPECT_TRUE(TokensEqual(a, b));
  b[31] ^= 1;
  EXPECT_FALSE(TokensEqual(a, b));
  b = a;
  b[0] ^= 0x80;
  EXPECT_FALSE(TokensEqual(a, b));
}

TEST(AgentProtocolTest, Targets) {
  auto a = ParseTarget("10.4.0.2:80");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "10.4.0.2");
  EXPECT_EQ(a->port, 80);
  auto b = ParseTarget("[fd00::2]:53");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "fd00::2");
  for (const char* bad :
       {"", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:65536", "host:80", "[::1]80", "[::1:80", ":80"}) {
    EXPECT_FALSE(ParseTarget(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace fun::agent
