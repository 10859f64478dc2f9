#include "lib/cri/stream_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

namespace fun::cri::stream {
namespace {

using ::testing::HasSubstr;

TEST(StreamUrlTest, ParsesContainerdsUrls) {
  auto u = ParseStreamUrl("http://127.0.0.1:38245/exec/AbC_d-9");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 38245);
  EXPECT_EQ(u->path, "/exec/AbC_d-9");
  auto v6 = ParseStreamUrl("http://[::1]:80/exec/x?y=1");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->path, "/exec/x?y=1");
  auto noport = ParseStreamUrl("http://localhost");
  ASSERT_TRUE(noport.ok());
  EXPECT_EQ(noport->port, 80);
  EXPECT_EQ(noport->path, "/");
}

TEST(StreamUrlTest, RefusesWhatItCannotSpeakOrWhatIsOdd) {
  EXPECT_EQ(ParseStreamUrl("https://127.0.0.1:1/exec/x").status().code(), Code::kUnimplemented);
  for (const char* bad : {"", "ftp://x/", "http://", "http://:80/x", "http://h:0/x",
                          "http://h:65536/x", "http://h:8x/x", "http://u@h:1/x", "http://[::1/x",
                          "http://[::1]x/y", "http://h:1/a b", "http://h:1/a\r\nX: y"}) {
    auto u = ParseStreamUrl(bad);
    EXPECT_FALSE(u.ok()) << bad;
    EXPECT_EQ(u.status().message().find('\n'), std::string::npos) << u.status();
  }
  EXPECT_FALSE(ParseStreamUrl("http://h:1/" + std::string(5000, 'a')).ok());
}

TEST(UpgradeTest, RequestAsksForSpdyAndV4) {
  const std::string r = EncodeUpgradeRequest({.host = "::1", .port = 9, .path = "/exec/t"});
  EXPECT_EQ(r.substr(0, r.find("\r\n")), "POST /exec/t HTTP/1.1");
  EXPECT_THAT(r, HasSubstr("\r\nHost: [::1]:9\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\nConnection: Upgrade\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\nUpgrade: SPDY/3.1\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"));
  EXPECT_TRUE(r.ends_with("\r\n\r\n"));
}

TEST(UpgradeTest, AcceptsA101AndKeepsTheBytesAfterIt) {
  const std::string ok =
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nupgrade: spdy/3.1\r\n"
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nDate: x\r\n\r\n";
  for (size_t n = 0; n < ok.size(); ++n) {
    auto partial = ParseUpgradeResponse(ok.substr(0, n));
    ASSERT_TRUE(partial.ok()) << n << partial.status();
    EXPECT_FALSE(partial->has_value()) << n;
  }
  auto full = ParseUpgradeResponse(ok + "\x80\x03");
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_TRUE(full->has_value());
  EXPECT_EQ(**full, ok.size());
}

TEST(UpgradeTest, RefusalsSayWhatTheServerSaid) {
  auto nf = ParseUpgradeResponse(
      "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n404 page not found\n");
  ASSERT_FALSE(nf.ok());
  EXPECT_THAT(nf.status().message(), HasSubstr("404 Not Found: 404 page not found"));
  EXPECT_EQ(nf.status().message().find('\n'), std::string::npos);

  auto no_upgrade = ParseUpgradeResponse(
      "HTTP/1.1 101 Switching Protocols\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n");
  EXPECT_THAT(no_upgrade.status().message(), HasSubstr("not to SPDY/3.1"));
  auto v2 = ParseUpgradeResponse(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: v2.channel.k8s.io\r\n\r\n");
  EXPECT_THAT(v2.status().message(), HasSubstr("\"v2.channel.k8s.io\""));
  EXPECT_FALSE(ParseUpgradeResponse("SSH-2.0-x\r\n\r\n").ok());
  EXPECT_FALSE(ParseUpgradeResponse(std::string(kMaxResponseHeaderBytes, 'a')).ok());
}

// Inflates header blocks the way the server does: one zlib stream across blocks.
class Inflater {
 public:
  Inflater() { inflateInit(&z_); }
  ~Inflater() { inflateEnd(&z_); }
  std::string Inflate(std::string_view in) {
    std::string out(64 * 1024, '\0');
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z_.avail_in = static_cast<uInt>(in.size());
    z_.next_out = reinterpret_cast<Bytef*>(out.data());
    z_.avail_out = static_cast<uInt>(out.size());
    EXPECT_EQ(inflate(&z_, Z_SYNC_FLUSH), Z_OK);
    EXPECT_EQ(z_.avail_in, 0u) << "a block must be complete after its sync flush";
    out.resize(out.size() - z_.avail_out);
    return out;
  }

 private:
  z_stream z_{};
};

std::string U32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

TEST(FrameTest, SynStreamCarriesACompressedHeaderBlockPerConnection) {
  HeaderCompressor hc;
  Inflater server;
  for (uint32_t id : {1u, 3u}) {
    auto f = EncodeSynStream(hc, id, {{"streamtype", "error"}});
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_GE(f->size(), 18u);
    EXPECT_EQ(f->substr(0, 4), std::string("\x80\x03\x00\x01", 4));
    const size_t len = (static_cast<uint8_t>((*f)[5]) << 16) |
                       (static_cast<uint8_t>((*f)[6]) << 8) | static_cast<uint8_t>((*f)[7]);
    EXPECT_EQ(len, f->size() - 8);
    EXPECT_EQ(f->substr(8, 4), U32(id));
    EXPECT_EQ(f->substr(12, 6), std::string(6, '\0'));
    EXPECT_EQ(server.Inflate(f->substr(18)), U32(1) + U32(10) + "streamtype" + U32(5) + "error");
  }
}

TEST(FrameTest, DecodesFramesFedAByteAtATime) {
  const std::string wire = EncodeData(5, "hello", false) + EncodePing(2) + EncodeRstStream(3, 5) +
                           EncodeWindowUpdate(1, 99) + EncodeGoAway(7, 0) + EncodeData(1, "", true);
  FrameDecoder d;
  std::vector<Frame> got;
  for (char c : wire) {
    d.Append(std::string_view(&c, 1));
    while (true) {
      auto f = d.Next();
      ASSERT_TRUE(f.ok()) << f.status();
      if (!f->has_value()) break;
      got.push_back(std::move(**f));
    }
  }
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got[0].type, FrameType::kData);
  EXPECT_EQ(got[0].stream_id, 5u);
  EXPECT_EQ(got[0].data, "hello");
  EXPECT_FALSE(got[0].fin());
  EXPECT_EQ(got[1].type, FrameType::kPing);
  EXPECT_EQ(got[1].value, 2u);
  EXPECT_EQ(got[2].type, FrameType::kRstStream);
  EXPECT_EQ(got[2].stream_id, 3u);
  EXPECT_EQ(got[2].value, 5u);
  EXPECT_EQ(got[3].type, FrameType::kWindowUpdate);
  EXPECT_EQ(got[3].value, 99u);
  EXPECT_EQ(got[4].type, FrameType::kGoAway);
  EXPECT_EQ(got[4].stream_id, 7u);
  EXPECT_TRUE(got[5].fin());
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(FrameTest, MalformedFramesAreErrorsNotCrashes) {
  {
    FrameDecoder d;  // SPDY/2
    d.Append(std::string("\x80\x02\x00\x06\x00\x00\x00\x04", 8) + U32(1));
    EXPECT_THAT(d.Next().status().message(), HasSubstr("SPDY/2"));
  }
  {
    FrameDecoder d(100);  // over the bound: refused from its header alone
    d.Append(std::string("\x00\x00\x00\x01\x00\x00\x00\x65", 8));
    EXPECT_THAT(d.Next().status().message(), HasSubstr("101-byte"));
  }
  {
    FrameDecoder d;  // an RST_STREAM too short for its fields
    d.Append(std::string("\x80\x03\x00\x03\x00\x00\x00\x04", 8) + U32(1));
    EXPECT_THAT(d.Next().status().message(), HasSubstr("needs 8"));
  }
  {
    FrameDecoder d;  // an unknown control frame is skipped
    d.Append(std::string("\x80\x03\x00\x63\x00\x00\x00\x02xy", 10) + EncodePing(4));
    auto a = d.Next();
    ASSERT_TRUE(a.ok() && a->has_value());
    auto b = d.Next();
    ASSERT_TRUE(b.ok() && b->has_value());
    EXPECT_EQ((*b)->type, FrameType::kPing);
  }
}

TEST(PayloadTest, Resize) { EXPECT_EQ(EncodeResize(111, 33), R"({"Width":111,"Height":33})"); }

TEST(PayloadTest, ExitStatusFromTheV4ErrorStream) {
  auto ok = ParseExitStatus(R"({"metadata":{},"status":"Success"})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->ran);
  EXPECT_EQ(ok->exit_code, 0);

  auto three = ParseExitStatus(
      R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}})");
  ASSERT_TRUE(three.ok()) << three.status();
  EXPECT_TRUE(three->ran);
  EXPECT_EQ(three->exit_code, 3);

  auto cannot = ParseExitStatus(
      R"({"status":"Failure","message":"error executing command in container: exec: \"nope\": executable file not found in $PATH","reason":"InternalError"})");
  ASSERT_TRUE(cannot.ok()) << cannot.status();
  EXPECT_FALSE(cannot->ran);
  EXPECT_THAT(cannot->message, HasSubstr("executable file not found"));
}

TEST(PayloadTest, MalformedStatusIsAnError) {
  for (
      std::string bad :
      {std::string(""), std::string("{"), std::string("[]"), std::string(R"({"status":"Maybe"})"),
       std::string(
           R"({"status":"Failure","details":{"causes":[{"reason":"ExitCode","message":"x"}]}})"),
       std::string(
           R"({"status":"Failure","details":{"causes":[{"reason":"ExitCode","message":"-1"}]}})"),
       std::string(
           R"({"status":"Failure","details":{"causes":[{"reason":"ExitCode","message":"99999999999"}]}})"),
       std::string(10000, '[') + std::string(10000, ']'), std::string(kMaxStatusBytes + 1, ' ')}) {
    auto r = ParseExitStatus(bad);
    EXPECT_FALSE(r.ok()) << bad.substr(0, 80);
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  }
  // Odd but harmless shapes: a Failure whose causes are not objects has no exit code.
  auto odd = ParseExitStatus(R"({"status":"Failure","details":{"causes":[1,"x",null]}})");
  ASSERT_TRUE(odd.ok());
  EXPECT_FALSE(odd->ran);
}

}  // namespace
}  // namespace fun::cri::stream
