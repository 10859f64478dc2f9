#include "lib/base/clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace fun {
namespace {

using namespace std::chrono_literals;

TEST(SimulatedClockTest, StandsStillUntilMoved) {
  SimulatedClock clock;
  auto w0 = clock.Now();
  auto m0 = clock.MonotonicNow();
  EXPECT_EQ(clock.Now(), w0);
  EXPECT_EQ(clock.MonotonicNow(), m0);
  clock.Advance(5s);
  EXPECT_EQ(clock.Now() - w0, 5s);
  EXPECT_EQ(clock.MonotonicNow() - m0, 5s);
}

TEST(SimulatedClockTest, SleepAdvancesAndIsRecorded) {
  SimulatedClock clock;
  auto m0 = clock.MonotonicNow();
  for (int i = 0; i < 3; ++i) clock.SleepFor(250ms);
  EXPECT_EQ(clock.MonotonicNow() - m0, 750ms);
  EXPECT_EQ(clock.TotalSlept(), 750ms);
  EXPECT_EQ(clock.SleepCount(), 3);
}

TEST(SimulatedClockTest, NeverRunsBackwards) {
  SimulatedClock clock;
  auto m0 = clock.MonotonicNow();
  clock.Advance(-10s);
  clock.SleepFor(-1s);
  EXPECT_EQ(clock.MonotonicNow(), m0);
}

TEST(SimulatedClockTest, WallStepLeavesMonotonicAlone) {
  SimulatedClock clock;
  auto m0 = clock.MonotonicNow();
  clock.SetWallTime(Clock::WallTime(std::chrono::seconds(0)));
  EXPECT_EQ(FormatRfc3339Millis(clock.Now()), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(clock.MonotonicNow(), m0);
}

TEST(SimulatedClockTest, StartsAtKnownInstant) {
  SimulatedClock clock;
  EXPECT_EQ(FormatRfc3339Millis(clock.Now()), "2026-01-01T00:00:00.000Z");
}

TEST(SimulatedClockTest, SafeFromManyThreads) {
  SimulatedClock clock;
  auto m0 = clock.MonotonicNow();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) clock.SleepFor(1ms);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(clock.MonotonicNow() - m0, 4000ms);
}

TEST(FormatTest, Rfc3339Millis) {
  Clock::WallTime t(std::chrono::milliseconds(1764412828123));
  EXPECT_EQ(FormatRfc3339Millis(t), "2025-11-29T10:40:28.123Z");
  Clock::WallTime before_epoch(std::chrono::milliseconds(-1));
  EXPECT_EQ(FormatRfc3339Millis(before_epoch), "1969-12-31T23:59:59.999Z");
}

TEST(RealClockTest, MonotonicDoesNotGoBack) {
  Clock& c = Clock::Real();
  auto a = c.MonotonicNow();
  c.SleepFor(1ms);
  EXPECT_GE(c.MonotonicNow(), a);
}

}  // namespace
}  // namespace fun
