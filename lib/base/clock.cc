#include "lib/base/clock.h"

#include <fmt/format.h>

#include <ctime>
#include <thread>

namespace fun {

Clock& Clock::Real() {
  static RealClock* clock = new RealClock();  // never destroyed: usable during exit
  return *clock;
}

void RealClock::SleepFor(Duration d) {
  if (d > Duration::zero()) std::this_thread::sleep_for(d);
}

SimulatedClock::SimulatedClock()
    : SimulatedClock(WallTime(std::chrono::seconds(1767225600))) {}  // 2026-01-01T00:00:00Z

SimulatedClock::SimulatedClock(WallTime start) : wall_(start), mono_(std::chrono::hours(1)) {}

Clock::WallTime SimulatedClock::Now() const {
  std::lock_guard lock(mu_);
  return wall_;
}

Clock::MonoTime SimulatedClock::MonotonicNow() const {
  std::lock_guard lock(mu_);
  return mono_;
}

void SimulatedClock::SleepFor(Duration d) {
  std::lock_guard lock(mu_);
  ++sleeps_;
  if (d <= Duration::zero()) return;
  slept_ += d;
  wall_ += std::chrono::duration_cast<WallTime::duration>(d);
  mono_ += std::chrono::duration_cast<MonoTime::duration>(d);
}

void SimulatedClock::Advance(Duration d) {
  if (d <= Duration::zero()) return;
  std::lock_guard lock(mu_);
  wall_ += std::chrono::duration_cast<WallTime::duration>(d);
  mono_ += std::chrono::duration_cast<MonoTime::duration>(d);
}

void SimulatedClock::SetWallTime(WallTime t) {
  std::lock_guard lock(mu_);
  wall_ = t;
}

Clock::Duration SimulatedClock::TotalSlept() const {
  std::lock_guard lock(mu_);
  return slept_;
}

int SimulatedClock::SleepCount() const {
  std::lock_guard lock(mu_);
  return sleeps_;
}

std::string FormatRfc3339Millis(Clock::WallTime t) {
  using namespace std::chrono;
  auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  auto secs = static_cast<std::time_t>(ms / 1000);
  long millis = static_cast<long>(ms % 1000);
  if (millis < 0) {  // before 1970: floor, not truncate
    millis += 1000;
    secs -= 1;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
}

}  // namespace fun
