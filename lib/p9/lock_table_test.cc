#include "lib/p9/lock_table.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <random>
#include <thread>
#include <vector>

namespace fun::p9 {
namespace {

using L = LockTable;
constexpr L::File kF{.dev = 1, .ino = 2};
constexpr L::File kG{.dev = 1, .ino = 3};

bool Set(L& t, L::Owner o, L::Type type, uint64_t start, uint64_t len, L::File f = kF) {
  auto r = t.Set(f, o, type, start, len);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() && *r;
}

std::optional<L::Lock> Probe(const L& t, L::Owner o, L::Type type, uint64_t start, uint64_t len) {
  auto r = t.Test(kF, o, type, start, len);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::nullopt;
}

// Compact description of the table for one file: "owner:type[start,+len)" ...
std::string Dump(const L& t, L::File f = kF) {
  std::string s;
  for (const auto& l : t.LocksOf(f)) {
    if (!s.empty()) s += ' ';
    s += std::to_string(l.owner) + (l.type == L::kRead ? "r" : "w") + "[" +
         std::to_string(l.start) + "," + (l.length == 0 ? "eof" : std::to_string(l.length)) + ")";
  }
  return s;
}

TEST(LockTableTest, WriteConflictsWithEverythingOfOthers) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kWrite, 0, 10));
  EXPECT_FALSE(Set(t, 2, L::kWrite, 0, 10));
  EXPECT_FALSE(Set(t, 2, L::kRead, 9, 1));
  EXPECT_TRUE(Set(t, 2, L::kRead, 10, 1));  // [10, 11) only touches [0, 10)
  EXPECT_TRUE(Set(t, 1, L::kWrite, 5, 1));  // an owner never conflicts with itself
  EXPECT_EQ(Dump(t), "1w[0,10) 2r[10,1)");
  // A refused request changes nothing.
  EXPECT_FALSE(Set(t, 2, L::kWrite, 0, 0));
  EXPECT_EQ(Dump(t), "1w[0,10) 2r[10,1)");
}

TEST(LockTableTest, ReadLocksShare) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kRead, 0, 100));
  EXPECT_TRUE(Set(t, 2, L::kRead, 50, 100));
  EXPECT_TRUE(Set(t, 3, L::kRead, 0, 0));
  EXPECT_FALSE(Set(t, 4, L::kWrite, 149, 1));
  EXPECT_TRUE(Set(t, 1, L::kUnlock, 0, 0));
  EXPECT_TRUE(Set(t, 3, L::kUnlock, 0, 0));
  EXPECT_FALSE(Set(t, 4, L::kWrite, 149, 1));  // 2 still reads [50, 150)
  EXPECT_TRUE(Set(t, 4, L::kWrite, 150, 0));
}

TEST(LockTableTest, LengthZeroReachesAnyOffset) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kWrite, 100, 0));
  EXPECT_FALSE(Set(t, 2, L::kRead, L::kMaxOffset, 1));
  EXPECT_TRUE(Set(t, 2, L::kRead, 0, 100));
  EXPECT_EQ(Dump(t), "1w[100,eof) 2r[0,100)");
}

TEST(LockTableTest, SameTypeRangesMerge) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kRead, 0, 5));
  EXPECT_TRUE(Set(t, 1, L::kRead, 10, 5));
  EXPECT_EQ(Dump(t), "1r[0,5) 1r[10,5)");
  EXPECT_TRUE(Set(t, 1, L::kRead, 5, 5));  // adjacent on both sides
  EXPECT_EQ(Dump(t), "1r[0,15)");
  EXPECT_TRUE(Set(t, 1, L::kRead, 3, 20));  // overlapping
  EXPECT_EQ(Dump(t), "1r[0,23)");
  EXPECT_TRUE(Set(t, 1, L::kRead, 23, 0));
  EXPECT_EQ(Dump(t), "1r[0,eof)");
}

TEST(LockTableTest, UnlockInTheMiddleSplits) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kWrite, 0, 0));
  EXPECT_TRUE(Set(t, 1, L::kUnlock, 10, 5));
  EXPECT_EQ(Dump(t), "1w[0,10) 1w[15,eof)");
  EXPECT_TRUE(Set(t, 2, L::kWrite, 10, 5));
  EXPECT_FALSE(Set(t, 2, L::kWrite, 9, 1));
  EXPECT_FALSE(Set(t, 2, L::kWrite, 15, 1));
  // Unlocking what is not held is fine, and changes nothing.
  EXPECT_TRUE(Set(t, 3, L::kUnlock, 0, 0));
  EXPECT_TRUE(Set(t, 1, L::kUnlock, 100, 0, kG));
  EXPECT_EQ(Dump(t), "1w[0,10) 1w[15,eof) 2w[10,5)");
}

TEST(LockTableTest, ChangingTypeReplacesThePartCovered) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kWrite, 0, 30));
  EXPECT_TRUE(Set(t, 1, L::kRead, 10, 10));  // downgrade the middle
  EXPECT_EQ(Dump(t), "1w[0,10) 1r[10,10) 1w[20,10)");
  EXPECT_TRUE(Set(t, 2, L::kRead, 12, 2));  // shares the downgraded part
  EXPECT_FALSE(Set(t, 2, L::kRead, 5, 10));
  // Upgrading back conflicts with 2's read lock, and leaves everything as it was.
  EXPECT_FALSE(Set(t, 1, L::kWrite, 0, 30));
  EXPECT_EQ(Dump(t), "1w[0,10) 1r[10,10) 1w[20,10) 2r[12,2)");
  EXPECT_TRUE(Set(t, 2, L::kUnlock, 0, 0));
  EXPECT_TRUE(Set(t, 1, L::kWrite, 0, 30));
  EXPECT_EQ(Dump(t), "1w[0,30)");
}

TEST(LockTableTest, TestReportsTheFirstConflict) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kRead, 50, 10));
  EXPECT_TRUE(Set(t, 2, L::kWrite, 20, 5));
  EXPECT_TRUE(Set(t, 3, L::kWrite, 100, 0));
  auto l = Probe(t, 9, L::kWrite, 0, 0);
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->owner, 2u);
  EXPECT_EQ(l->type, L::kWrite);
  EXPECT_EQ(l->start, 20u);
  EXPECT_EQ(l->length, 5u);
  // A read lock only conflicts with write locks.
  l = Probe(t, 9, L::kRead, 40, 0);
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->owner, 3u);
  EXPECT_EQ(l->length, 0u);  // to the end of file
  // Own locks never conflict; nothing elsewhere.
  EXPECT_FALSE(Probe(t, 2, L::kWrite, 20, 5).has_value());
  EXPECT_FALSE(Probe(t, 9, L::kWrite, 25, 25).has_value());
  // Test changes nothing.
  EXPECT_EQ(Dump(t), "1r[50,10) 2w[20,5) 3w[100,eof)");
}

TEST(LockTableTest, FilesAreIndependent) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kWrite, 0, 0, kF));
  EXPECT_TRUE(Set(t, 2, L::kWrite, 0, 0, kG));
  EXPECT_EQ(t.file_count(), 2u);
}

TEST(LockTableTest, ReleaseOwnerDropsEverythingItHeld) {
  L t;
  EXPECT_TRUE(Set(t, 1, L::kWrite, 0, 10, kF));
  EXPECT_TRUE(Set(t, 1, L::kRead, 20, 10, kF));
  EXPECT_TRUE(Set(t, 1, L::kWrite, 0, 0, kG));
  EXPECT_TRUE(Set(t, 2, L::kRead, 20, 10, kF));
  t.ReleaseOwner(1);
  EXPECT_EQ(Dump(t), "2r[20,10)");
  EXPECT_EQ(Dump(t, kG), "");
  EXPECT_EQ(t.file_count(), 1u);
  EXPECT_TRUE(Set(t, 3, L::kWrite, 0, 20));
  t.ReleaseOwner(2);
  t.ReleaseOwner(3);
  EXPECT_EQ(t.file_count(), 0u);
}

TEST(LockTableTest, InvalidRequests) {
  L t;
  EXPECT_EQ(t.Set(kF, 1, static_cast<L::Type>(7), 0, 0).status().sys_errno(), EINVAL);
  EXPECT_EQ(t.Test(kF, 1, L::kUnlock, 0, 0).status().sys_errno(), EINVAL);
  EXPECT_EQ(t.Set(kF, 1, L::kWrite, L::kMaxOffset + 1, 0).status().sys_errno(), EINVAL);
  EXPECT_EQ(t.Set(kF, 1, L::kWrite, L::kMaxOffset, 2).status().sys_errno(), EOVERFLOW);
  EXPECT_EQ(t.Set(kF, 1, L::kWrite, 1, UINT64_MAX).status().sys_errno(), EOVERFLOW);
  EXPECT_TRUE(Set(t, 1, L::kWrite, L::kMaxOffset, 1));  // the very last byte
  EXPECT_TRUE(Set(t, 2, L::kWrite, 0, L::kMaxOffset));  // everything before it
  EXPECT_EQ(t.file_count(), 1u);
}

// Random operations against a byte-by-byte model: per byte of [0, kBytes) and per owner, the
// lock held (a lock "to EOF" covers every byte from its start, so the model's last byte stands
// for everything beyond). After every step the table must say what the model says, and keep
// its invariants (sorted, no overlap, same-type neighbours merged).
TEST(LockTableTest, RandomOperationsMatchAByteModel) {
  constexpr int kBytes = 24, kOwners = 3;
  enum : uint8_t { kNone = 0, kR = 1, kW = 2 };
  std::mt19937 rng(12345);
  for (int round = 0; round < 200; ++round) {
    L t;
    std::array<std::array<uint8_t, kBytes>, kOwners> model{};
    for (int step = 0; step < 60; ++step) {
      L::Owner o = rng() % kOwners;
      auto type = static_cast<L::Type>(rng() % 3);
      uint64_t start = rng() % (kBytes - 1);
      // length 0 (to EOF) often enough to matter; other ranges stop before the last byte.
      uint64_t len = rng() % 4 == 0 ? 0 : 1 + rng() % (kBytes - 1 - start);
      uint64_t end = len == 0 ? kBytes : start + len;
      bool conflict = false;
      for (L::Owner other = 0; other < kOwners; ++other) {
        if (other == o || type == L::kUnlock) continue;
        for (uint64_t b = start; b < end; ++b) {
          uint8_t held = model[other][b];
          if (held == kW || (held == kR && type == L::kWrite)) conflict = true;
        }
      }
      // Test agrees with the model before the change.
      if (type != L::kUnlock) {
        auto got = t.Test(kF, o, type, start, len);
        ASSERT_TRUE(got.ok());
        ASSERT_EQ(got->has_value(), conflict) << "round " << round << " step " << step;
      }
      auto r = t.Set(kF, o, type, start, len);
      ASSERT_TRUE(r.ok());
      ASSERT_EQ(*r, !conflict) << "round " << round << " step " << step;
      if (!conflict) {
        uint8_t v = type == L::kUnlock ? kNone : type == L::kRead ? kR : kW;
        for (uint64_t b = start; b < end; ++b) model[o][b] = v;
      }
      // Compare: rebuild per-byte state from the table.
      std::array<std::array<uint8_t, kBytes>, kOwners> seen{};
      const L::Lock* prev = nullptr;
      auto locks = t.LocksOf(kF);
      for (const auto& l : locks) {
        uint64_t lend = l.length == 0 ? kBytes : l.start + l.length;
        ASSERT_LE(lend, static_cast<uint64_t>(kBytes));
        ASSERT_LT(l.start, lend);
        if (prev != nullptr && prev->owner == l.owner) {
          uint64_t pend = prev->start + prev->length;
          ASSERT_NE(prev->length, 0u) << "a lock to EOF must be the owner's last";
          ASSERT_LE(pend, l.start) << "overlap";
          ASSERT_FALSE(pend == l.start && prev->type == l.type) << "unmerged neighbours";
        }
        prev = &l;
        for (uint64_t b = l.start; b < lend; ++b) seen[l.owner][b] = l.type == L::kRead ? kR : kW;
      }
      ASSERT_EQ(seen, model) << "round " << round << " step " << step << ": " << Dump(t);
    }
  }
}

TEST(LockTableTest, ConcurrentOwnersNeverBothHoldAWriteLock) {
  L t;
  std::atomic<int> holders{0};
  std::atomic<bool> overlap{false};
  std::vector<std::thread> threads;
  for (L::Owner o = 1; o <= 4; ++o) {
    threads.emplace_back([&, o] {
      for (int i = 0; i < 2000; ++i) {
        auto r = t.Set(kF, o, L::kWrite, 0, 0);
        if (r.ok() && *r) {
          if (holders.fetch_add(1) != 0) overlap = true;
          holders.fetch_sub(1);
          (void)t.Set(kF, o, L::kUnlock, 0, 0);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(overlap);
  EXPECT_EQ(t.file_count(), 0u);
}

}  // namespace
}  // namespace fun::p9
