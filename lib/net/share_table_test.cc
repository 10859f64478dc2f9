#include "lib/net/share_table.h"

#include <gtest/gtest.h>

namespace fun::net {
namespace {

TEST(ShareTableTest, RoundTrips) {
  std::vector<GuestShare> shares = {
      {.tag = "users-alice", .guest_path = "/Users/alice"},
      {.tag = "data", .guest_path = "/srv/my data", .read_only = true, .cache = "loose"}};
  auto wire = EncodeShareTable(shares);
  ASSERT_TRUE(wire.ok()) << wire.status();
  EXPECT_EQ(*wire, "fun-shares 1\nusers-alice rw mmap /Users/alice\ndata ro loose /srv/my data\n");
  auto back = DecodeShareTable(*wire);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, shares);
}

TEST(ShareTableTest, EmptyTableIsJustTheHeader) {
  auto wire = EncodeShareTable({});
  ASSERT_TRUE(wire.ok());
  EXPECT_EQ(*wire, "fun-shares 1\n");
  auto back = DecodeShareTable(*wire);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->empty());
}

TEST(ShareTableTest, EncodeRefusesBadShares) {
  auto refuse = [](GuestShare s) { return EncodeShareTable({s}).status(); };
  EXPECT_FALSE(refuse({.tag = "", .guest_path = "/a"}).ok());
  EXPECT_FALSE(refuse({.tag = "Upper", .guest_path = "/a"}).ok());
  EXPECT_FALSE(refuse({.tag = std::string(32, 'a'), .guest_path = "/a"}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "relative"}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "/"}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "/a/../b"}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "/a/./b"}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "/a//b"}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "/a/"}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "/a\nb"}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "/" + std::string(4095, 'x')}).ok());
  EXPECT_FALSE(refuse({.tag = "a", .guest_path = "/a", .cache = "fscache"}).ok());
  EXPECT_FALSE(
      EncodeShareTable({{.tag = "a", .guest_path = "/x"}, {.tag = "a", .guest_path = "/y"}}).ok());
  EXPECT_FALSE(
      EncodeShareTable({{.tag = "a", .guest_path = "/x"}, {.tag = "b", .guest_path = "/x"}}).ok());
  std::vector<GuestShare> many;
  for (size_t i = 0; i <= kMaxShares; ++i) {
    many.push_back({.tag = "t" + std::to_string(i), .guest_path = "/p" + std::to_string(i)});
  }
  EXPECT_FALSE(EncodeShareTable(many).ok());
  many.pop_back();
  EXPECT_TRUE(EncodeShareTable(many).ok());
}

TEST(ShareTableTest, DecodeNamesTheBadLine) {
  auto err = [](std::string_view text) {
    auto r = DecodeShareTable(text);
    EXPECT_FALSE(r.ok()) << text;
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  EXPECT_NE(err("").find("empty"), std::string::npos);
  EXPECT_NE(err("fun-shares 2\n").find("line 1"), std::string::npos);
  EXPECT_NE(err("fun-shares 1").find("no newline"), std::string::npos);
  EXPECT_NE(err("fun-shares 1\na rw mmap /x\nb xx mmap /y\n").find("line 3: mode"),
            std::string::npos);
  EXPECT_NE(err("fun-shares 1\na rw fscache /x\n").find("cache mode"), std::string::npos);
  EXPECT_NE(err("fun-shares 1\na rw mmap\n").find("line 2"), std::string::npos);
  EXPECT_NE(err("fun-shares 1\na rw mmap /x\na rw mmap /y\n").find("twice"), std::string::npos);
  EXPECT_NE(err("fun-shares 1\na rw mmap /x\nb rw mmap /x\n").find("twice"), std::string::npos);
  EXPECT_NE(err("fun-shares 1\nA rw mmap /x\n").find("tag"), std::string::npos);
  EXPECT_NE(err("fun-shares 1\na rw mmap x\n").find("absolute"), std::string::npos);
  EXPECT_NE(err("fun-shares 1\na rw mmap /x/..\n").find(".."), std::string::npos);
  EXPECT_NE(err("fun-shares 1\na  rw mmap /x\n").find("line 2"), std::string::npos);
  EXPECT_NE(err(std::string("fun-shares 1\na rw mmap /x\0y\n", 28)).find("control"),
            std::string::npos);
}

TEST(ShareTableTest, PortNameAndMountOptions) {
  EXPECT_EQ(SharePortName("home"), "fun.p9.home");
  GuestShare s{.tag = "home", .guest_path = "/root"};
  EXPECT_EQ(NinePMountOptions(s, {}),
            "trans=unix,version=9p2000.L,aname=home,msize=524288,cache=mmap,access=client");
  EXPECT_EQ(NinePMountOptions(s, {.msize = 65536, .cache_override = "loose"}),
            "trans=unix,version=9p2000.L,aname=home,msize=65536,cache=loose,access=client");
  // hyperkit's virtio-9p takes replies of at most 256 KiB.
  EXPECT_EQ(NinePMountOptions(s, {}, "virtio"),
            "trans=virtio,version=9p2000.L,aname=home,msize=262144,cache=mmap,access=client");
  EXPECT_EQ(NinePMountOptions(s, {.msize = 65536}, "virtio"),
            "trans=virtio,version=9p2000.L,aname=home,msize=65536,cache=mmap,access=client");
}

}  // namespace
}  // namespace fun::net
