#include "lib/p9/codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace fun::p9 {
namespace {

using ::testing::HasSubstr;

// Fills every field of a message with distinct non-zero values, so a round trip that drops or
// swaps a field is caught.
struct Filler {
  uint64_t next = 1;
  std::string storage[4];
  int used = 0;
  void operator()(uint8_t& v) { v = static_cast<uint8_t>(next++); }
  void operator()(uint16_t& v) { v = static_cast<uint16_t>(0x100 + next++); }
  void operator()(uint32_t& v) { v = static_cast<uint32_t>(0x10000 + next++); }
  void operator()(uint64_t& v) { v = 0x100000000ull + next++; }
  void operator()(std::string& s) { s = "name-" + std::to_string(next++); }
  void operator()(Qid& q) {
    q.type = kQidDir;
    q.version = static_cast<uint32_t>(next++);
    q.path = 0xdeadbeef00ull + next++;
  }
  void operator()(std::vector<std::string>& names) { names = {"a", "bb", std::string(300, 'c')}; }
  void operator()(std::vector<Qid>& qids) {
    qids.resize(3);
    for (auto& q : qids) (*this)(q);
  }
  void operator()(Data& d) { d.bytes = "payload \x00\x01\xff bytes"; }
};

template <size_t I = 0>
void RoundTripAll() {
  if constexpr (I < std::variant_size_v<Message>) {
    using M = std::variant_alternative_t<I, Message>;
    M m;
    Filler f;
    m.Fields(f);
    std::string wire;
    ASSERT_TRUE(Encode(0x1234, m, &wire).ok()) << MsgTypeName(static_cast<uint8_t>(M::kType));
    auto decoded = Decode(wire);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->tag, 0x1234);
    ASSERT_TRUE(std::holds_alternative<M>(decoded->msg))
        << MsgTypeName(static_cast<uint8_t>(M::kType));
    // Re-encoding the decoded message gives the same bytes: every field survived.
    std::string again;
    ASSERT_TRUE(Encode(0x1234, decoded->msg, &again).ok());
    EXPECT_EQ(again, wire) << MsgTypeName(static_cast<uint8_t>(M::kType));
    // Every strict prefix is refused (the size field then lies), never read past.
    for (size_t cut : {size_t{0}, size_t{3}, size_t{7}, wire.size() - 1}) {
      if (cut >= wire.size()) continue;
      EXPECT_FALSE(Decode(std::string_view(wire).substr(0, cut)).ok());
    }
    RoundTripAll<I + 1>();
  }
}

TEST(CodecTest, EveryMessageRoundTrips) { RoundTripAll(); }

TEST(CodecTest, EveryTypeHasAName) {
  EXPECT_EQ(MsgTypeName(100), "Tversion");
  EXPECT_EQ(MsgTypeName(7), "Rlerror");
  EXPECT_EQ(MsgTypeName(200), "type 200");
}

TEST(CodecTest, TversionGoldenBytes) {
  std::string wire;
  ASSERT_TRUE(Encode(kNoTag, Tversion{.msize = 131072, .version = "9P2000.L"}, &wire).ok());
  const unsigned char expected[] = {0x15, 0,    0,   0,   100, 0xff, 0xff, 0x00, 0x00, 0x02, 0x00,
                                    0x08, 0x00, '9', 'P', '2', '0',  '0',  '0',  '.',  'L'};
  EXPECT_EQ(wire, std::string(reinterpret_cast<const char*>(expected), sizeof(expected)));
}

TEST(CodecTest, RwalkGoldenBytes) {
  std::string wire;
  ASSERT_TRUE(
      Encode(1, Rwalk{.wqids = {Qid{.type = kQidDir, .version = 2, .path = 3}}}, &wire).ok());
  const unsigned char expected[] = {22, 0, 0, 0, 111, 1, 0, 1, 0, 0x80, 2,
                                    0,  0, 0, 3, 0,   0, 0, 0, 0, 0,    0};
  EXPECT_EQ(wire, std::string(reinterpret_cast<const char*>(expected), sizeof(expected)));
}

TEST(CodecTest, SizeFieldThatLies) {
  std::string wire;
  ASSERT_TRUE(Encode(1, Tclunk{.fid = 5}, &wire).ok());
  wire[0] = static_cast<char>(wire[0] + 1);
  auto r = Decode(wire);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("size field says 12 bytes, the message has 11"));
}

TEST(CodecTest, StringLongerThanItsBuffer) {
  std::string wire;
  ASSERT_TRUE(Encode(1, Tunlinkat{.dirfd = 1, .name = "abc", .flags = 0}, &wire).ok());
  // name length field sits after size[4] type[1] tag[2] dirfd[4].
  wire[11] = static_cast<char>(0xff);
  wire[12] = static_cast<char>(0x7f);
  auto r = Decode(wire);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("Tunlinkat"));
  EXPECT_THAT(r.status().message(), HasSubstr("a string needs 32767 bytes"));
}

TEST(CodecTest, MoreThanSixteenWalkNames) {
  Twalk w{.fid = 1, .newfid = 2};
  w.wnames.assign(17, "x");
  std::string wire;
  Status s = Encode(1, w, &wire);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(wire.empty());
  // Forge one on the wire: 16 names encoded, then patch the count to 17.
  w.wnames.resize(16);
  ASSERT_TRUE(Encode(1, w, &wire).ok());
  wire[15] = 17;
  auto r = Decode(wire);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("17 walk names (at most 16)"));
}

TEST(CodecTest, CountBeyondBuffer) {
  std::string wire;
  ASSERT_TRUE(Encode(1, Twrite{.fid = 1, .offset = 0, .data = {"hello"}}, &wire).ok());
  wire[19] = 6;  // count[4] at 7+4+8
  auto r = Decode(wire);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("a payload needs 6 bytes"));
}

TEST(CodecTest, UnknownTypeAndTrailingBytes) {
  std::string wire;
  ASSERT_TRUE(Encode(1, Tclunk{.fid = 5}, &wire).ok());
  std::string unknown = wire;
  unknown[4] = static_cast<char>(200);
  EXPECT_THAT(Decode(unknown).status().message(), HasSubstr("type 200): unknown message type"));
  std::string tlerror = wire;
  tlerror[4] = 6;  // Tlerror is not a message anyone sends
  EXPECT_FALSE(Decode(tlerror).ok());
  std::string trailing = wire + "x";
  trailing[0] = static_cast<char>(trailing.size());
  EXPECT_THAT(Decode(trailing).status().message(), HasSubstr("1 trailing bytes"));
}

TEST(CodecTest, ShortHeader) {
  EXPECT_THAT(Decode("abc").status().message(), HasSubstr("shorter than the 7-byte header"));
}

TEST(CodecTest, EncodeRefusesOversizedString) {
  std::string wire = "keep";
  Status s = Encode(1, Tmkdir{.dfid = 1, .name = std::string(70000, 'a')}, &wire);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("a string of 70000 bytes"));
  EXPECT_EQ(wire, "keep");
}

TEST(CodecTest, DataPointsIntoTheBuffer) {
  std::string wire;
  ASSERT_TRUE(Encode(9, Twrite{.fid = 1, .offset = 77, .data = {"abc"}}, &wire).ok());
  auto f = Decode(wire);
  ASSERT_TRUE(f.ok());
  const auto& w = std::get<Twrite>(f->msg);
  EXPECT_EQ(w.offset, 77u);
  EXPECT_EQ(w.data.bytes, "abc");
  EXPECT_EQ(w.data.bytes.data(), wire.data() + wire.size() - 3);
}

TEST(CodecTest, NextMessageSize) {
  EXPECT_FALSE(NextMessageSize("abc", 8192)->has_value());
  std::string wire;
  ASSERT_TRUE(Encode(1, Tclunk{.fid = 5}, &wire).ok());
  EXPECT_EQ(NextMessageSize(wire, 8192)->value(), 11u);
  EXPECT_EQ(NextMessageSize(std::string_view(wire).substr(0, 4), 8192)->value(), 11u);
  EXPECT_THAT(NextMessageSize(wire, 10).status().message(), HasSubstr("exceeds msize 10"));
  std::string tiny("\x03\x00\x00\x00", 4);
  EXPECT_THAT(NextMessageSize(tiny, 8192).status().message(), HasSubstr("at least 7"));
}

TEST(CodecTest, RreadHeaderInPlace) {
  std::string buf(kRreadHeaderSize, '\0');
  buf += "data!";
  WriteRreadHeader(buf.data(), 42, 5);
  auto f = Decode(buf);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->tag, 42);
  EXPECT_EQ(std::get<Rread>(f->msg).data.bytes, "data!");
}

TEST(CodecTest, DirentsPackAndParse) {
  std::string data;
  DirentWriter w(&data, 100);
  EXPECT_TRUE(w.Add(Qid{kQidDir, 1, 2}, 1, 4, "."));
  EXPECT_TRUE(w.Add(Qid{kQidFile, 0, 3}, 2, 8, "file.txt"));
  // 24 + 1 + 24 + 8 = 57 used; 24 + 30 = 54 more would exceed 100.
  EXPECT_FALSE(w.Add(Qid{}, 3, 8, std::string(30, 'x')));
  auto parsed = ParseDirents(data);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[1].name, "file.txt");
  EXPECT_EQ((*parsed)[1].offset, 2u);
  EXPECT_EQ((*parsed)[0].qid.type, kQidDir);
  EXPECT_FALSE(ParseDirents(data.substr(0, data.size() - 1)).ok());
}

TEST(CodecTest, DescribeIsOneReadableLine) {
  EXPECT_EQ(Describe(Twalk{.fid = 1, .newfid = 2, .wnames = {"etc", "pa\nss"}}),
            "Twalk 1 2 [\"etc\" \"pa\\x0ass\"]");
  EXPECT_EQ(Describe(Rread{.data = {"abcd"}}), "Rread <4 bytes>");
  EXPECT_EQ(Describe(Rclunk{}), "Rclunk");
}

}  // namespace
}  // namespace fun::p9
