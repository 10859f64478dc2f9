#include "lib/vhost/message.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fun::vhost {
namespace {

// A little-endian byte builder for payloads.
class Bytes {
 public:
  Bytes& U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b_.push_back(static_cast<uint8_t>(v >> (8 * i)));
    return *this;
  }
  Bytes& U64(uint64_t v) {
    U32(static_cast<uint32_t>(v));
    return U32(static_cast<uint32_t>(v >> 32));
  }
  Bytes& Raw(std::vector<uint8_t> v) {
    b_.insert(b_.end(), v.begin(), v.end());
    return *this;
  }
  Bytes& Zeros(size_t n) {
    b_.resize(b_.size() + n);
    return *this;
  }
  Bytes& Region(const MemoryRegion& r) {
    return U64(r.guest_phys_addr).U64(r.size).U64(r.user_addr).U64(r.mmap_offset);
  }
  std::span<const uint8_t> span() const { return b_; }
  size_t size() const { return b_.size(); }

 private:
  std::vector<uint8_t> b_;
};

std::span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

template <typename T>
std::string ErrorOf(const StatusOr<T>& r) {
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.status().message();
}

bool operator==(const MemoryRegion& a, const MemoryRegion& b) {
  return a.guest_phys_addr == b.guest_phys_addr && a.size == b.size && a.user_addr == b.user_addr &&
         a.mmap_offset == b.mmap_offset;
}

TEST(VhostMessageTest, RequestNames) {
  EXPECT_EQ(RequestName(1), "GET_FEATURES");
  EXPECT_EQ(RequestName(static_cast<uint32_t>(Request::kSetMemTable)), "SET_MEM_TABLE");
  EXPECT_EQ(RequestName(static_cast<uint32_t>(Request::kSetVringAddr)), "SET_VRING_ADDR");
  EXPECT_EQ(RequestName(static_cast<uint32_t>(Request::kGetConfig)), "GET_CONFIG");
  EXPECT_EQ(RequestName(static_cast<uint32_t>(Request::kGetStatus)), "GET_STATUS");
  EXPECT_EQ(RequestName(static_cast<uint32_t>(Request::kSetBackendReqFd)), "SET_BACKEND_REQ_FD");
  EXPECT_EQ(RequestName(static_cast<uint32_t>(Request::kGetMaxMemSlots)), "GET_MAX_MEM_SLOTS");
  EXPECT_EQ(RequestName(28), "POSTCOPY_ADVISE");  // not handled, but named
  EXPECT_EQ(RequestName(0), "request 0");
  EXPECT_EQ(RequestName(41), "request 41");
  EXPECT_EQ(RequestName(1000), "request 1000");
}

TEST(VhostMessageTest, HeaderRoundTrips) {
  Header h{.request = 9, .flags = kVersion | kFlagNeedReply, .size = 40};
  std::string wire = EncodeHeader(h);
  ASSERT_EQ(wire.size(), kHeaderSize);
  EXPECT_EQ(wire, std::string("\x09\0\0\0\x09\0\0\0\x28\0\0\0", 12));
  auto back = DecodeHeader(AsBytes(wire));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->request, 9u);
  EXPECT_EQ(back->flags, kVersion | kFlagNeedReply);
  EXPECT_EQ(back->size, 40u);
}

TEST(VhostMessageTest, HeaderErrors) {
  EXPECT_EQ(ErrorOf(DecodeHeader(Bytes().U32(1).U32(1).span())),
            "vhost-user header: 8 bytes, expected 12");
  EXPECT_EQ(ErrorOf(DecodeHeader(Bytes().U32(1).U32(1).U32(0).U32(0).span())),
            "vhost-user header: 16 bytes, expected 12");
  EXPECT_EQ(ErrorOf(DecodeHeader(Bytes().U32(1).U32(0).U32(0).span())),
            "vhost-user GET_FEATURES: protocol version 0, expected 1");
  EXPECT_EQ(ErrorOf(DecodeHeader(Bytes().U32(99).U32(2 | kFlagReply).U32(0).span())),
            "vhost-user request 99: protocol version 2, expected 1");
  EXPECT_EQ(ErrorOf(DecodeHeader(Bytes().U32(5).U32(1).U32(kMaxPayload + 1).span())),
            "vhost-user SET_MEM_TABLE: payload of 4097 bytes, at most 4096 allowed");
  EXPECT_TRUE(DecodeHeader(Bytes().U32(5).U32(1).U32(kMaxPayload).span()).ok());
}

TEST(VhostMessageTest, U64) {
  auto v = DecodeU64(Bytes().U64(kFeatureVersion1 | kFeatureProtocolFeatures).span());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(*v, kFeatureVersion1 | kFeatureProtocolFeatures);
  EXPECT_EQ(ErrorOf(DecodeU64(Bytes().U32(1).span())),
            "vhost-user u64 message: payload of 4 bytes, expected 8");
  EXPECT_EQ(ErrorOf(DecodeU64(Bytes().U64(1).U32(0).span())),
            "vhost-user u64 message: payload of 12 bytes, expected 8");
}

TEST(VhostMessageTest, ReplyU64) {
  std::string r = EncodeReplyU64(1, 0x0102030405060708);
  ASSERT_EQ(r.size(), kHeaderSize + 8);
  auto h = DecodeHeader(AsBytes(r).first(kHeaderSize));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->request, 1u);
  EXPECT_EQ(h->flags, kVersion | kFlagReply);
  EXPECT_EQ(h->size, 8u);
  EXPECT_EQ(r.substr(kHeaderSize), std::string("\x08\x07\x06\x05\x04\x03\x02\x01"));
  auto v = DecodeU64(AsBytes(r).subspan(kHeaderSize));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 0x0102030405060708u);
}

TEST(VhostMessageTest, VringStateRoundTrips) {
  auto s = DecodeVringState(Bytes().U32(1).U32(256).span());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->index, 1u);
  EXPECT_EQ(s->num, 256u);
  std::string r = EncodeReplyVringState(11, {.index = 3, .num = 65535});
  ASSERT_EQ(r.size(), kHeaderSize + 8);
  auto h = DecodeHeader(AsBytes(r).first(kHeaderSize));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->request, 11u);
  EXPECT_EQ(h->flags, kVersion | kFlagReply);
  EXPECT_EQ(h->size, 8u);
  auto back = DecodeVringState(AsBytes(r).subspan(kHeaderSize));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->index, 3u);
  EXPECT_EQ(back->num, 65535u);
  EXPECT_EQ(ErrorOf(DecodeVringState(Bytes().U32(1).span())),
            "vhost-user vring state message: payload of 4 bytes, expected 8");
}

TEST(VhostMessageTest, VringAddr) {
  auto a =
      DecodeVringAddr(Bytes().U32(1).U32(0).U64(0x1000).U64(0x3000).U64(0x2000).U64(0xdead).span());
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->index, 1u);
  EXPECT_EQ(a->flags, 0u);
  EXPECT_EQ(a->desc, 0x1000u);
  EXPECT_EQ(a->used, 0x3000u);
  EXPECT_EQ(a->avail, 0x2000u);
  EXPECT_EQ(a->log, 0xdeadu);
  EXPECT_EQ(ErrorOf(DecodeVringAddr(Bytes().U32(1).U64(0).span())),
            "vhost-user SET_VRING_ADDR: payload of 12 bytes, expected 40");
  EXPECT_EQ(
      ErrorOf(DecodeVringAddr(Bytes().U32(0).U32(0).U64(0).U64(0).U64(0).U64(0).U32(0).span())),
      "vhost-user SET_VRING_ADDR: payload of 44 bytes, expected 40");
  EXPECT_NE(ErrorOf(DecodeVringAddr(Bytes().U32(2).U32(1).U64(0).U64(0).U64(0).U64(0).span()))
                .find("ring 2 asks for used ring logging"),
            std::string::npos);
}

TEST(VhostMessageTest, VringFd) {
  auto f = DecodeVringFd(Bytes().U64(5).span());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->index, 5u);
  EXPECT_FALSE(f->no_fd);
  f = DecodeVringFd(Bytes().U64(0x1ff).span());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->index, 255u);
  EXPECT_TRUE(f->no_fd);
  EXPECT_EQ(ErrorOf(DecodeVringFd(Bytes().U64(0x200).span())),
            "vhost-user SET_VRING_KICK/CALL/ERR: value 0x200 has bits set above bit 8");
  EXPECT_EQ(ErrorOf(DecodeVringFd(Bytes().U32(1).span())),
            "vhost-user SET_VRING_KICK/CALL/ERR: payload of 4 bytes, expected 8");
}

const MemoryRegion kLow{
    .guest_phys_addr = 0, .size = 0x8000'0000, .user_addr = 0x7f00'0000'0000, .mmap_offset = 0};
const MemoryRegion kHigh{.guest_phys_addr = 0x1'0000'0000,
                         .size = 0x4000'0000,
                         .user_addr = 0x7f00'8000'0000,
                         .mmap_offset = 0x8000'0000};

TEST(VhostMessageTest, MemTableSizedForItsRegions) {
  Bytes b;
  b.U32(2).U32(0).Region(kLow).Region(kHigh);
  ASSERT_EQ(b.size(), 8u + 2 * 32);
  auto t = DecodeMemTable(b.span());
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_TRUE((*t)[0] == kLow);
  EXPECT_TRUE((*t)[1] == kHigh);
}

TEST(VhostMessageTest, MemTableWithTheFullArray) {
  Bytes b;
  b.U32(1).U32(0).Region(kHigh).Zeros(7 * 32);
  ASSERT_EQ(b.size(), 8u + 8 * 32);
  auto t = DecodeMemTable(b.span());
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 1u);
  EXPECT_TRUE((*t)[0] == kHigh);
  // Eight regions, exactly the array.
  Bytes eight;
  eight.U32(8).U32(0);
  for (uint64_t i = 0; i < 8; ++i) {
    eight.Region({.guest_phys_addr = i << 32,
                  .size = 0x1000,
                  .user_addr = 0x7f00'0000'0000 + (i << 32),
                  .mmap_offset = 0});
  }
  auto t8 = DecodeMemTable(eight.span());
  ASSERT_TRUE(t8.ok()) << t8.status();
  EXPECT_EQ(t8->size(), 8u);
}

TEST(VhostMessageTest, MemTableErrors) {
  auto err = [](const Bytes& b) { return ErrorOf(DecodeMemTable(b.span())); };
  EXPECT_EQ(err(Bytes().U32(1)),
            "vhost-user SET_MEM_TABLE: payload of 4 bytes, expected at least 8");
  EXPECT_EQ(err(Bytes().U32(0).U32(0).Zeros(8 * 32)),
            "vhost-user SET_MEM_TABLE: 0 regions, expected 1 to 8");
  EXPECT_EQ(err(Bytes().U32(9).U32(0).Zeros(9 * 32)),
            "vhost-user SET_MEM_TABLE: 9 regions, expected 1 to 8");
  EXPECT_EQ(err(Bytes().U32(2).U32(0).Region(kLow)),
            "vhost-user SET_MEM_TABLE: payload of 40 bytes, expected 72 to 264 for 2 regions");
  EXPECT_EQ(err(Bytes().U32(1).U32(0).Region(kLow).Zeros(8 * 32)),
            "vhost-user SET_MEM_TABLE: payload of 296 bytes, expected 40 to 264 for 1 regions");
  EXPECT_EQ(err(Bytes().U32(1).U32(0).Region({.guest_phys_addr = 0, .size = 0})),
            "vhost-user SET_MEM_TABLE: region 0 has size 0");
  EXPECT_EQ(err(Bytes().U32(1).U32(0).Region({.guest_phys_addr = ~0ull - 0xfff, .size = 0x1000})),
            "vhost-user SET_MEM_TABLE: region 0 at guest address 0xfffffffffffff000 with size "
            "0x1000 wraps past 2^64");
  EXPECT_EQ(err(Bytes().U32(1).U32(0).Region({.size = 0x1000, .user_addr = ~0ull})),
            "vhost-user SET_MEM_TABLE: region 0 at user address 0xffffffffffffffff with size "
            "0x1000 wraps past 2^64");
  EXPECT_EQ(err(Bytes().U32(1).U32(0).Region({.size = 2, .mmap_offset = ~0ull})),
            "vhost-user SET_MEM_TABLE: region 0 at mmap offset 0xffffffffffffffff with size 0x2 "
            "wraps past 2^64");
  MemoryRegion guest_overlap = kHigh;
  guest_overlap.guest_phys_addr = kLow.size - 1;
  EXPECT_EQ(err(Bytes().U32(2).U32(0).Region(kLow).Region(guest_overlap)),
            "vhost-user SET_MEM_TABLE: region 1 overlaps region 0 in guest addresses");
  MemoryRegion user_overlap = kHigh;
  user_overlap.user_addr = kLow.user_addr + 0x1000;
  EXPECT_EQ(err(Bytes().U32(2).U32(0).Region(kLow).Region(user_overlap)),
            "vhost-user SET_MEM_TABLE: region 1 overlaps region 0 in user addresses");
  // Adjacent ranges do not overlap.
  MemoryRegion adjacent = kHigh;
  adjacent.guest_phys_addr = kLow.size;
  adjacent.user_addr = kLow.user_addr + kLow.size;
  EXPECT_TRUE(DecodeMemTable(Bytes().U32(2).U32(0).Region(kLow).Region(adjacent).span()).ok());
}

TEST(VhostMessageTest, Config) {
  auto c = DecodeConfig(Bytes().U32(4).U32(3).U32(1).Raw({0xaa, 0xbb, 0xcc}).span());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->offset, 4u);
  EXPECT_EQ(c->size, 3u);
  EXPECT_EQ(c->flags, 1u);
  EXPECT_EQ(c->data, (std::vector<uint8_t>{0xaa, 0xbb, 0xcc}));
  auto empty = DecodeConfig(Bytes().U32(0).U32(0).U32(0).span());
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->data.empty());
  auto full = DecodeConfig(Bytes().U32(0).U32(kMaxConfigSize).U32(0).Zeros(kMaxConfigSize).span());
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->data.size(), kMaxConfigSize);

  EXPECT_EQ(ErrorOf(DecodeConfig(Bytes().U32(0).U32(0).span())),
            "vhost-user GET_CONFIG/SET_CONFIG: payload of 8 bytes, expected at least 12");
  EXPECT_EQ(ErrorOf(DecodeConfig(Bytes().U32(0).U32(257).U32(0).Zeros(257).span())),
            "vhost-user GET_CONFIG/SET_CONFIG: config size 257, at most 256 allowed");
  EXPECT_EQ(
      ErrorOf(DecodeConfig(Bytes().U32(0).U32(4).U32(0).Zeros(3).span())),
      "vhost-user GET_CONFIG/SET_CONFIG: payload of 15 bytes, expected 16 for 4 config bytes");
  EXPECT_EQ(
      ErrorOf(DecodeConfig(Bytes().U32(0).U32(4).U32(0).Zeros(5).span())),
      "vhost-user GET_CONFIG/SET_CONFIG: payload of 17 bytes, expected 16 for 4 config bytes");
}

TEST(VhostMessageTest, ReplyConfigRoundTrips) {
  ConfigRequest req{.offset = 8, .size = 4, .flags = 0};
  std::vector<uint8_t> config = {1, 2, 3, 4};
  std::string r = EncodeReplyConfig(24, req, config);
  ASSERT_EQ(r.size(), kHeaderSize + 12 + 4);
  auto h = DecodeHeader(AsBytes(r).first(kHeaderSize));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->request, 24u);
  EXPECT_EQ(h->flags, kVersion | kFlagReply);
  EXPECT_EQ(h->size, 16u);
  auto back = DecodeConfig(AsBytes(r).subspan(kHeaderSize));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->offset, 8u);
  EXPECT_EQ(back->size, 4u);
  EXPECT_EQ(back->data, config);
}

}  // namespace
}  // namespace fun::vhost
