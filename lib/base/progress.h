// progress.h: a spinner with a phase and the elapsed time, for long waits (boot, pull).
// On a terminal it redraws one line ("⠹ starting default: booting the kernel  3.2s"); when
// output is a file or a pipe it prints each new phase once, so logs stay readable.
//
//   Spinner sp(std::cerr, IsTerminal(2), Clock::Real());
//   sp.Update("booting");           // call often; it redraws at most every 100 ms
//   sp.Done("default is running (4.8 s)");
//
// Thread-safety: one thread.
#pragma once

#include <ostream>
#include <string>
#include <string_view>

#include "lib/base/clock.h"

namespace fun {

bool IsTerminal(int fd);

class Spinner {
 public:
  Spinner(std::ostream& out, bool terminal, Clock& clock);
  ~Spinner();
  void Update(std::string_view phase);
  // Ends the spinner line and prints `line` (if any) on its own line.
  void Done(std::string_view line);
  double elapsed_seconds() const;

 private:
  std::ostream& out_;
  bool terminal_;
  Clock& clock_;
  Clock::MonoTime start_;
  Clock::MonoTime last_draw_{};
  std::string phase_;
  size_t frame_ = 0;
  size_t drawn_width_ = 0;
  bool done_ = false;
};

}  // namespace fun
