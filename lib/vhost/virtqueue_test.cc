#include "lib/vhost/virtqueue.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace fun::vhost {
namespace {

// Guest memory is one host buffer holding two regions, laid out differently in each address
// space so a translation through the wrong base shows:
//
//   region  guest-physical      user (QEMU)               host (buf_)
//   A       0x10000..0x12000    0x7000'0000..0x7000'2000  buf_ + 0x0000..0x2000
//   B       0x12000..0x14000    0x5000'0000..0x5000'2000  buf_ + 0x4000..0x6000
//
// A and B are adjacent in guest-physical addresses but not in host memory, so a range across
// their boundary must be refused. buf_ + 0x2000..0x4000 belongs to neither.
constexpr uint64_t kGpaA = 0x10000, kGpaB = 0x12000, kRegionSize = 0x2000;
constexpr uint64_t kUserA = 0x7000'0000, kUserB = 0x5000'0000;
constexpr size_t kHostA = 0x0000, kHostB = 0x4000;

// The ring: descriptors at the start of A, the available and used rings in B.
constexpr uint64_t kDescUser = kUserA;
constexpr uint64_t kAvailUser = kUserB + 0x100;
constexpr uint64_t kUsedUser = kUserB + 0x200;
constexpr size_t kDescHost = kHostA, kAvailHost = kHostB + 0x100, kUsedHost = kHostB + 0x200;

constexpr uint16_t kNext = 1, kWrite = 2, kIndirect = 4;

template <typename T>
std::string ErrorOf(const StatusOr<T>& r) {
  EXPECT_FALSE(r.ok());
  return r.ok() ? std::string() : r.status().message();
}

std::string ErrorOf(const Status& s) {
  EXPECT_FALSE(s.ok());
  return s.message();
}

class VirtqueueTest : public ::testing::Test {
 protected:
  VirtqueueTest() : buf_(0x6000, 0xee) {
    mem_.AddRegion({.guest_phys_addr = kGpaA, .size = kRegionSize, .user_addr = kUserA},
                   buf_.data() + kHostA);
    mem_.AddRegion(
        {.guest_phys_addr = kGpaB, .size = kRegionSize, .user_addr = kUserB, .mmap_offset = 0x2000},
        buf_.data() + kHostB);
  }

  VringAddr Addr() const { return {.desc = kDescUser, .used = kUsedUser, .avail = kAvailUser}; }

  // A guest that zeroed its rings, and a queue over them.
  void Configure(uint32_t num, uint16_t base = 0) {
    num_ = num;
    std::fill(buf_.begin() + kDescHost, buf_.begin() + kDescHost + 16 * num, 0);
    std::fill(buf_.begin() + kAvailHost, buf_.begin() + kAvailHost + 6 + 2 * num, 0);
    std::fill(buf_.begin() + kUsedHost, buf_.begin() + kUsedHost + 6 + 8 * num, 0);
    Put16(kAvailHost + 2, base);
    Put16(kUsedHost + 2, base);
    avail_idx_ = base;
    Status s = q_.Configure(mem_, num, Addr(), base);
    ASSERT_TRUE(s.ok()) << s;
  }

  void Put16(size_t at, uint16_t v) {
    buf_[at] = static_cast<uint8_t>(v);
    buf_[at + 1] = static_cast<uint8_t>(v >> 8);
  }
  void Put32(size_t at, uint32_t v) {
    Put16(at, static_cast<uint16_t>(v));
    Put16(at + 2, static_cast<uint16_t>(v >> 16));
  }
  void Put64(size_t at, uint64_t v) {
    Put32(at, static_cast<uint32_t>(v));
    Put32(at + 4, static_cast<uint32_t>(v >> 32));
  }
  uint16_t Get16(size_t at) const { return static_cast<uint16_t>(buf_[at] | buf_[at + 1] << 8); }
  uint32_t Get32(size_t at) const { return Get16(at) | static_cast<uint32_t>(Get16(at + 2)) << 16; }

  void Desc(uint16_t i, uint64_t gpa, uint32_t len, uint16_t flags = 0, uint16_t next = 0) {
    size_t at = kDescHost + 16 * i;
    Put64(at, gpa);
    Put32(at + 8, len);
    Put16(at + 12, flags);
    Put16(at + 14, next);
  }
  // The guest makes `head` available: ring entry, then the index.
  void MakeAvailable(uint16_t head) {
    Put16(kAvailHost + 4 + 2 * (avail_idx_ % num_), head);
    ++avail_idx_;
    Put16(kAvailHost + 2, avail_idx_);
  }
  void SetAvailIdx(uint16_t idx) {
    avail_idx_ = idx;
    Put16(kAvailHost + 2, idx);
  }
  uint16_t UsedIdx() const { return Get16(kUsedHost + 2); }
  std::pair<uint32_t, uint32_t> UsedElem(uint32_t slot) const {
    return {Get32(kUsedHost + 4 + 8 * slot), Get32(kUsedHost + 8 + 8 * slot)};
  }
  uint8_t* Host(size_t offset) { return buf_.data() + offset; }

  Chain PopOne() {
    auto c = q_.Pop(mem_);
    EXPECT_TRUE(c.ok()) << c.status();
    if (!c.ok() || !c->has_value()) {
      ADD_FAILURE() << "no chain";
      return {};
    }
    return std::move(**c);
  }

  std::vector<uint8_t> buf_;
  GuestMemory mem_;
  SplitQueue q_;
  uint32_t num_ = 0;
  uint16_t avail_idx_ = 0;
};

TEST_F(VirtqueueTest, TranslatesThroughTheRightRegion) {
  EXPECT_EQ(mem_.Translate(kGpaA, kRegionSize), Host(kHostA));
  EXPECT_EQ(mem_.Translate(kGpaA + 0x123, 1), Host(kHostA + 0x123));
  EXPECT_EQ(mem_.Translate(kGpaB, 1), Host(kHostB));
  EXPECT_EQ(mem_.Translate(kGpaB + 0x1fff, 1), Host(kHostB + 0x1fff));
  EXPECT_EQ(mem_.TranslateUser(kUserA + 0x10, 0x10), Host(kHostA + 0x10));
  EXPECT_EQ(mem_.TranslateUser(kUserB + 0x10, 0x10), Host(kHostB + 0x10));
  // The other address space's numbers mean nothing here.
  EXPECT_EQ(mem_.Translate(kUserA, 1), nullptr);
  EXPECT_EQ(mem_.TranslateUser(kGpaA, 1), nullptr);
}

TEST_F(VirtqueueTest, TranslateRefusesRangesOutsideOneRegion) {
  // Across the A/B boundary: both halves are guest memory, but not contiguous on the host.
  EXPECT_EQ(mem_.Translate(kGpaB - 1, 2), nullptr);
  EXPECT_EQ(mem_.Translate(kGpaA, kRegionSize + 1), nullptr);
  EXPECT_EQ(mem_.TranslateUser(kUserA + kRegionSize - 8, 16), nullptr);
  EXPECT_EQ(mem_.Translate(kGpaB + kRegionSize - 1, 2), nullptr);
  EXPECT_EQ(mem_.Translate(kGpaA - 1, 1), nullptr);
  EXPECT_EQ(mem_.Translate(0, 1), nullptr);
  // Lengths and addresses that would wrap a naive addr + len.
  EXPECT_EQ(mem_.Translate(kGpaA + 1, ~0ull), nullptr);
  EXPECT_EQ(mem_.Translate(~0ull, 2), nullptr);
  EXPECT_EQ(mem_.TranslateUser(kUserA, ~0ull - kUserA + 2), nullptr);
  // Length 0: the address must still be inside a region.
  EXPECT_EQ(mem_.Translate(kGpaB + kRegionSize - 1, 0), Host(kHostB + kRegionSize - 1));
  EXPECT_EQ(mem_.Translate(kGpaB + kRegionSize, 0), nullptr);
  EXPECT_FALSE(mem_.empty());
  mem_.Clear();
  EXPECT_TRUE(mem_.empty());
  EXPECT_EQ(mem_.Translate(kGpaA, 1), nullptr);
}

TEST_F(VirtqueueTest, ConfigureChecksTheSize) {
  for (uint32_t bad : {0u, 3u, 12u, 65536u, 1u << 31}) {
    EXPECT_EQ(ErrorOf(q_.Configure(mem_, bad, Addr(), 0)),
              "virtqueue 0: size " + std::to_string(bad) + " is not a power of two from 1 to 32768")
        << bad;
    EXPECT_FALSE(q_.configured());
  }
  // The largest ring is legal but its 512 KiB descriptor table does not fit in region A.
  EXPECT_EQ(ErrorOf(q_.Configure(mem_, SplitQueue::kMaxSize, Addr(), 0)),
            "virtqueue 0: descriptor table at user address 0x70000000 (524288 bytes) is not "
            "inside one memory region");
  EXPECT_TRUE(q_.Configure(mem_, 1, Addr(), 0).ok());
  EXPECT_TRUE(q_.Configure(mem_, 256, Addr(), 0).ok());
  EXPECT_EQ(q_.size(), 256u);
}

TEST_F(VirtqueueTest, ConfigureChecksAlignment) {
  VringAddr a = Addr();
  a.index = 1;
  a.desc += 8;
  EXPECT_EQ(ErrorOf(q_.Configure(mem_, 8, a, 0)),
            "virtqueue 1: descriptor table at user address 0x70000008 is not 16-byte aligned");
  a = Addr();
  a.avail += 1;
  EXPECT_EQ(ErrorOf(q_.Configure(mem_, 8, a, 0)),
            "virtqueue 0: available ring at user address 0x50000101 is not 2-byte aligned");
  a = Addr();
  a.used += 2;
  EXPECT_EQ(ErrorOf(q_.Configure(mem_, 8, a, 0)),
            "virtqueue 0: used ring at user address 0x50000202 is not 4-byte aligned");
  EXPECT_FALSE(q_.configured());

  // An aligned user address in a region whose host start is odd cannot be accessed atomically.
  GuestMemory odd;
  odd.AddRegion({.guest_phys_addr = 0, .size = 0x1000, .user_addr = 0x1000}, Host(1));
  EXPECT_EQ(ErrorOf(q_.Configure(odd, 8, {.desc = 0x1000, .used = 0x1200, .avail = 0x1100}, 0)),
            "virtqueue 0: available ring at user address 0x1100 maps to a host address that is "
            "not 2-byte aligned");
}

TEST_F(VirtqueueTest, ConfigureChecksTheRingsAreMapped) {
  VringAddr a = Addr();
  a.avail = 0x1000;
  EXPECT_EQ(ErrorOf(q_.Configure(mem_, 8, a, 0)),
            "virtqueue 0: available ring at user address 0x1000 (22 bytes) is not inside one "
            "memory region");
  a = Addr();
  a.used = kUserB + kRegionSize - 64;  // 70 bytes do not fit in the last 64
  EXPECT_EQ(ErrorOf(q_.Configure(mem_, 8, a, 0)),
            "virtqueue 0: used ring at user address 0x50001fc0 (70 bytes) is not inside one "
            "memory region");
  // The same addresses as guest-physical ones do not count.
  a = {.desc = kGpaA, .used = kGpaB + 0x200, .avail = kGpaB + 0x100};
  EXPECT_FALSE(q_.Configure(mem_, 8, a, 0).ok());
  EXPECT_FALSE(q_.configured());
}

TEST_F(VirtqueueTest, NothingAvailable) {
  Configure(8);
  EXPECT_FALSE(q_.HasAvailable());
  auto c = q_.Pop(mem_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->has_value());
  EXPECT_EQ(q_.last_avail_idx(), 0);
}

TEST_F(VirtqueueTest, PopsAChainOfReadableThenWritableParts) {
  Configure(8);
  // head 3: 16 readable bytes in A, 32 readable in B, 0 bytes, 100 writable in A.
  Desc(3, kGpaA + 0x1000, 16, kNext, 5);
  Desc(5, kGpaB + 0x1000, 32, kNext, 0);
  Desc(0, kGpaA + 0x1800, 0, kNext, 7);
  Desc(7, kGpaA + 0x1100, 100, kWrite);
  MakeAvailable(3);
  EXPECT_TRUE(q_.HasAvailable());

  Chain c = PopOne();
  EXPECT_EQ(c.head, 3);
  ASSERT_EQ(c.readable.size(), 2u);
  EXPECT_EQ(c.readable[0].data, Host(kHostA + 0x1000));
  EXPECT_EQ(c.readable[0].len, 16u);
  EXPECT_EQ(c.readable[1].data, Host(kHostB + 0x1000));
  EXPECT_EQ(c.readable[1].len, 32u);
  ASSERT_EQ(c.writable.size(), 1u);  // the empty descriptor gives no segment
  EXPECT_EQ(c.writable[0].data, Host(kHostA + 0x1100));
  EXPECT_EQ(c.writable[0].len, 100u);
  EXPECT_EQ(c.readable_len, 48u);
  EXPECT_EQ(c.writable_len, 100u);
  EXPECT_EQ(q_.last_avail_idx(), 1);
  EXPECT_FALSE(q_.HasAvailable());

  q_.Push(c.head, 42);
  EXPECT_EQ(UsedIdx(), 1);
  EXPECT_EQ(UsedElem(0), std::make_pair(3u, 42u));

  auto none = q_.Pop(mem_);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_F(VirtqueueTest, PopsSeveralChainsInOrder) {
  Configure(4);
  Desc(0, kGpaA, 1);
  Desc(1, kGpaA + 0x10, 2, kWrite);
  Desc(2, kGpaB, 3);
  MakeAvailable(2);
  MakeAvailable(0);
  MakeAvailable(1);
  Chain a = PopOne(), b = PopOne(), c = PopOne();
  EXPECT_EQ(a.head, 2);
  EXPECT_EQ(a.readable_len, 3u);
  EXPECT_EQ(b.head, 0);
  EXPECT_EQ(b.readable_len, 1u);
  EXPECT_EQ(c.head, 1);
  EXPECT_TRUE(c.readable.empty());
  EXPECT_EQ(c.writable_len, 2u);
  // Used in the order pushed, not the order popped.
  q_.Push(c.head, 2);
  q_.Push(a.head, 0);
  EXPECT_EQ(UsedIdx(), 2);
  EXPECT_EQ(UsedElem(0), std::make_pair(1u, 2u));
  EXPECT_EQ(UsedElem(1), std::make_pair(2u, 0u));
}

TEST_F(VirtqueueTest, AChainAsLongAsTheRing) {
  Configure(8);
  for (uint16_t i = 0; i < 8; ++i) {
    Desc(i, kGpaA + 0x100 * i, 8, i < 7 ? kNext : 0, static_cast<uint16_t>(i + 1));
  }
  MakeAvailable(0);
  Chain c = PopOne();
  EXPECT_EQ(c.readable.size(), 8u);
  EXPECT_EQ(c.readable_len, 64u);
}

TEST_F(VirtqueueTest, RefusesALoop) {
  Configure(8);
  Desc(1, kGpaA, 8, kNext, 2);
  Desc(2, kGpaA + 8, 8, kNext, 1);
  MakeAvailable(1);
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: the chain from descriptor 1 is longer than the ring's 8 entries (a loop)");
  // A failed Pop takes nothing.
  EXPECT_EQ(q_.last_avail_idx(), 0);
  // A descriptor that links to itself.
  Desc(1, kGpaA, 8, kNext, 1);
  EXPECT_NE(ErrorOf(q_.Pop(mem_)).find("(a loop)"), std::string::npos);
}

TEST_F(VirtqueueTest, RefusesIndexesPastTheRing) {
  Configure(8);
  Desc(0, kGpaA, 8, kNext, 8);
  MakeAvailable(0);
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: descriptor 0 links to descriptor 8, past the ring's 8");
  Desc(0, kGpaA, 8, kNext, 0xffff);
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: descriptor 0 links to descriptor 65535, past the ring's 8");
  // A head past the ring.
  Put16(kAvailHost + 4, 8);
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: available ring entry 0 names descriptor 8, past the ring's 8");
}

TEST_F(VirtqueueTest, RefusesDescriptorsOutsideGuestMemory) {
  Configure(8);
  // Straddles the end of region A, even though region B's first byte follows in the guest.
  Desc(0, kGpaB - 8, 16);
  MakeAvailable(0);
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: descriptor 0 at guest address 0x11ff8 (16 bytes) is not inside one "
            "memory region");
  // Up to the end is fine.
  Desc(0, kGpaB - 8, 8);
  EXPECT_EQ(PopOne().readable[0].data, Host(kHostA + kRegionSize - 8));

  // Wholly outside, and a length running past 2^64.
  Desc(1, 0x100000, 1, kWrite);
  MakeAvailable(1);
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: descriptor 1 at guest address 0x100000 (1 bytes) is not inside one "
            "memory region");
  Desc(1, ~0ull - 1, 0xffffffff, kWrite);
  EXPECT_NE(ErrorOf(q_.Pop(mem_)).find("is not inside one memory region"), std::string::npos);
  // A later descriptor of the chain.
  Desc(1, kGpaA, 4, kNext, 2);
  Desc(2, kGpaB + kRegionSize, 4, kWrite);
  EXPECT_NE(ErrorOf(q_.Pop(mem_)).find("descriptor 2 at guest address 0x14000"), std::string::npos);
}

TEST_F(VirtqueueTest, RefusesAnAvailableIndexTooFarAhead) {
  Configure(8);
  for (uint16_t i = 0; i < 8; ++i) Desc(i, kGpaA, 1);
  SetAvailIdx(9);
  EXPECT_TRUE(q_.HasAvailable());
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: the guest moved the available index to 9 with 0 taken, more than the "
            "ring's 8 entries ahead");
  // Moving it backwards is the same as a huge jump.
  SetAvailIdx(0xffff);
  EXPECT_FALSE(q_.Pop(mem_).ok());
  // Exactly a ring's worth is fine.
  SetAvailIdx(8);
  for (int i = 0; i < 8; ++i) PopOne();
  EXPECT_EQ(q_.last_avail_idx(), 8);
}

TEST_F(VirtqueueTest, RefusesIndirectDescriptors) {
  Configure(8);
  Desc(0, kGpaA, 16, kIndirect);
  MakeAvailable(0);
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: descriptor 0 is indirect, a feature this device does not offer");
}

TEST_F(VirtqueueTest, RefusesReadableAfterWritable) {
  Configure(8);
  Desc(0, kGpaA, 16, kWrite | kNext, 1);
  Desc(1, kGpaA + 16, 16, 0);
  MakeAvailable(0);
  EXPECT_EQ(ErrorOf(q_.Pop(mem_)),
            "virtqueue: descriptor 1 is device-readable after a writable one");
  // An empty writable descriptor still counts.
  Desc(0, kGpaA, 0, kWrite | kNext, 1);
  EXPECT_FALSE(q_.Pop(mem_).ok());
}

TEST_F(VirtqueueTest, UnpopGivesTheLastChainBackForTheNextPop) {
  Configure(8);
  Desc(3, kGpaA + 0x100, 64, kWrite);
  Desc(5, kGpaA + 0x200, 32, kWrite);
  MakeAvailable(3);
  MakeAvailable(5);
  EXPECT_EQ(PopOne().head, 3);
  q_.Unpop();
  EXPECT_TRUE(q_.HasAvailable());
  EXPECT_EQ(q_.last_avail_idx(), 0);
  Chain again = PopOne();
  EXPECT_EQ(again.head, 3);
  EXPECT_EQ(again.writable_len, 64u);
  EXPECT_EQ(PopOne().head, 5);
  EXPECT_EQ(q_.last_avail_idx(), 2);
}

TEST_F(VirtqueueTest, ShouldNotifyFollowsPushesAndTheGuestsFlag) {
  Configure(8);
  EXPECT_FALSE(q_.ShouldNotify());
  Desc(0, kGpaA, 1);
  MakeAvailable(0);
  MakeAvailable(0);
  q_.Push(PopOne().head, 0);
  EXPECT_TRUE(q_.ShouldNotify());
  EXPECT_FALSE(q_.ShouldNotify());  // reset by the call

  Put16(kAvailHost, 1);  // VRING_AVAIL_F_NO_INTERRUPT
  q_.Push(PopOne().head, 0);
  EXPECT_FALSE(q_.ShouldNotify());
  Put16(kAvailHost, 0);
  EXPECT_FALSE(q_.ShouldNotify());  // the push was consumed by the suppressed call
  EXPECT_EQ(UsedIdx(), 2);
}

TEST_F(VirtqueueTest, IndexesWrapAround) {
  Configure(8, 65534);
  EXPECT_EQ(q_.last_avail_idx(), 65534);
  for (uint16_t i = 0; i < 4; ++i) {
    Desc(i, kGpaB + 0x100 * i, 10 + i, kWrite);
    MakeAvailable(i);  // ring slots 6, 7, 0, 1
  }
  EXPECT_EQ(avail_idx_, 2);
  for (uint16_t i = 0; i < 4; ++i) {
    Chain c = PopOne();
    EXPECT_EQ(c.head, i);
    ASSERT_EQ(c.writable.size(), 1u);
    EXPECT_EQ(c.writable[0].data, Host(kHostB + 0x100 * i));
    EXPECT_EQ(c.writable_len, 10u + i);
    q_.Push(c.head, c.writable[0].len);
  }
  EXPECT_EQ(q_.last_avail_idx(), 2);
  EXPECT_FALSE(q_.HasAvailable());
  EXPECT_EQ(UsedIdx(), 2);
  EXPECT_EQ(UsedElem(6), std::make_pair(0u, 10u));
  EXPECT_EQ(UsedElem(7), std::make_pair(1u, 11u));
  EXPECT_EQ(UsedElem(0), std::make_pair(2u, 12u));
  EXPECT_EQ(UsedElem(1), std::make_pair(3u, 13u));
  // Across the wrap, "too far ahead" is still measured modulo 2^16.
  SetAvailIdx(11);
  EXPECT_FALSE(q_.Pop(mem_).ok());
}

TEST_F(VirtqueueTest, ConfigureContinuesTheUsedIndexInTheRing) {
  Configure(8);
  Desc(0, kGpaA, 1);
  MakeAvailable(0);
  q_.Push(PopOne().head, 0);
  ASSERT_EQ(UsedIdx(), 1);
  // GET_VRING_BASE, then SET_VRING_BASE and the same rings again.
  uint16_t base = q_.last_avail_idx();
  q_.Reset();
  ASSERT_TRUE(q_.Configure(mem_, 8, Addr(), base).ok());
  MakeAvailable(0);
  q_.Push(PopOne().head, 7);
  EXPECT_EQ(UsedIdx(), 2);
  EXPECT_EQ(UsedElem(1), std::make_pair(0u, 7u));
}

TEST_F(VirtqueueTest, ResetStopsTheRing) {
  Configure(8);
  Desc(0, kGpaA, 1);
  MakeAvailable(0);
  PopOne();
  MakeAvailable(0);
  q_.Reset();
  EXPECT_FALSE(q_.configured());
  EXPECT_EQ(q_.last_avail_idx(), 1);  // still there for GET_VRING_BASE's reply
  EXPECT_FALSE(q_.HasAvailable());
  auto r = q_.Pop(mem_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kFailedPrecondition);
  q_.Push(0, 1);  // ignored
  EXPECT_EQ(UsedIdx(), 0);
  EXPECT_FALSE(q_.ShouldNotify());
}

}  // namespace
}  // namespace fun::vhost
