// clock.h: the injectable clock. Logic never calls now() or sleep directly; it takes a Clock&.
//
// RealClock reads the system clocks. SimulatedClock is a twin for tests: time moves only when a
// test (or a SleepFor) moves it, so tests never depend on wall-clock time.
//
//   fun::SimulatedClock clock;                 // starts at a fixed instant
//   Retry(clock, ...);                        // code under test sleeps via clock.SleepFor
//   EXPECT_EQ(clock.TotalSlept(), 3s);
//
// Thread-safety: both are safe to share between threads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

namespace fun {

class Clock {
 public:
  using WallTime = std::chrono::system_clock::time_point;
  using MonoTime = std::chrono::steady_clock::time_point;
  using Duration = std::chrono::nanoseconds;

  virtual ~Clock() = default;
  // Wall-clock time (for timestamps shown to people and compared with the guest's clock).
  virtual WallTime Now() const = 0;
  // Monotonic time (for deadlines and elapsed time).
  virtual MonoTime MonotonicNow() const = 0;
  // Blocks for d (a simulated clock advances instead).
  virtual void SleepFor(Duration d) = 0;

  // The process-wide real clock.
  static Clock& Real();
};

class RealClock final : public Clock {
 public:
  WallTime Now() const override { return std::chrono::system_clock::now(); }
  MonoTime MonotonicNow() const override { return std::chrono::steady_clock::now(); }
  void SleepFor(Duration d) override;
};

// Time stands still until Advance() or SleepFor() moves it. SleepFor advances both clocks by d
// and returns at once, so code that sleeps in a loop runs instantly and deterministically.
class SimulatedClock final : public Clock {
 public:
  // Starts at 2026-01-01T00:00:00Z wall time.
  SimulatedClock();
  explicit SimulatedClock(WallTime start);

  WallTime Now() const override;
  MonoTime MonotonicNow() const override;
  void SleepFor(Duration d) override;

  // Moves both clocks forward by d (negative d is ignored: time never runs backwards).
  void Advance(Duration d);
  // Sets the wall clock only (to simulate a host/guest clock step); the monotonic one is untouched.
  void SetWallTime(WallTime t);
  // Sum of every SleepFor so far.
  Duration TotalSlept() const;
  int SleepCount() const;

 private:
  mutable std::mutex mu_;
  WallTime wall_;
  MonoTime mono_;
  Duration slept_{0};
  int sleeps_ = 0;
};

// "2026-11-29T10:40:28.123Z": UTC, millisecond precision (for logs).
std::string FormatRfc3339Millis(Clock::WallTime t);

}  // namespace fun
