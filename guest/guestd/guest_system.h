// guest_system.h: the outside effects of fun-guestd on the VM it runs in (the wall clock,
// uptime and load, starting the power-off command), behind an interface so tests can replace
// any of them: a test derives from LinuxGuestSystem and overrides StepWallClock, so a time
// sync request is recorded instead of stepping the test machine's clock.
//
//   fun::guestd::LinuxGuestSystem sys;
//   FUN_RETURN_IF_ERROR(sys.StepWallClock(-1500ms));   // clock_adjtime(ADJ_SETOFFSET)
//   FUN_RETURN_IF_ERROR(sys.StartDetached("/usr/sbin/poweroff"));
//
// Thread-safety: implementations are safe to call from many threads at once.
#pragma once

#include <array>
#include <chrono>
#include <string>

#include "lib/base/clock.h"
#include "lib/base/status.h"

namespace fun::guestd {

class GuestSystem {
 public:
  virtual ~GuestSystem() = default;

  // The wall clock, and stepping it by `delta` in one atomic adjustment (needs CAP_SYS_TIME:
  // the agent runs as root in the VM).
  virtual Clock::WallTime Now() = 0;
  virtual Status StepWallClock(std::chrono::nanoseconds delta) = 0;
  // Time since the VM booted.
  virtual std::chrono::duration<double> Uptime() = 0;
  // The 1, 5 and 15 minute load averages.
  virtual std::array<double, 3> LoadAverage() = 0;
  // Starts `program` (no arguments) detached: in a session of its own, reparented to init, so
  // it outlives the agent (the power-off command stops the agent on its way). Its stdin is
  // /dev/null; stdout and stderr are the agent's (its log). Returns once the program is
  // exec'd; an error if it could not be (not found, not executable).
  virtual Status StartDetached(const std::string& program) = 0;
};

// The real thing, for Linux (guest_system_linux.cc).
class LinuxGuestSystem : public GuestSystem {
 public:
  Clock::WallTime Now() override;
  Status StepWallClock(std::chrono::nanoseconds delta) override;
  std::chrono::duration<double> Uptime() override;
  std::array<double, 3> LoadAverage() override;
  Status StartDetached(const std::string& program) override;
};

}  // namespace fun::guestd
