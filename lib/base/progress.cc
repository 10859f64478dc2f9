#include "lib/base/progress.h"

#include <fmt/format.h>
#include <unistd.h>

namespace fun {

bool IsTerminal(int fd) { return ::isatty(fd) == 1; }

namespace {
constexpr const char* kFrames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};
}  // namespace

Spinner::Spinner(std::ostream& out, bool terminal, Clock& clock)
    : out_(out), terminal_(terminal), clock_(clock), start_(clock.MonotonicNow()) {}

Spinner::~Spinner() {
  if (!done_) Done("");
}

double Spinner::elapsed_seconds() const {
  return std::chrono::duration<double>(clock_.MonotonicNow() - start_).count();
}

void Spinner::Update(std::string_view phase) {
  auto now = clock_.MonotonicNow();
  bool changed = phase != phase_;
  if (!terminal_) {
    if (changed) out_ << fmt::format("{} ({:.1f}s)", phase, elapsed_seconds()) << std::endl;
    phase_ = std::string(phase);
    return;
  }
  if (!changed && now - last_draw_ < std::chrono::milliseconds(100)) return;
  phase_ = std::string(phase);
  last_draw_ = now;
  std::string line =
      fmt::format("{} {}  {:.1f}s", kFrames[frame_++ % 10], phase_, elapsed_seconds());
  // Pad over a longer previous line; the spinner glyph is 3 bytes but 1 column.
  size_t width = line.size() - 2;
  out_ << "\r" << line << std::string(drawn_width_ > width ? drawn_width_ - width : 0, ' ')
       << std::flush;
  drawn_width_ = width;
}

void Spinner::Done(std::string_view line) {
  if (done_) return;
  done_ = true;
  if (terminal_ && drawn_width_ > 0) out_ << "\r" << std::string(drawn_width_, ' ') << "\r";
  if (!line.empty()) out_ << line << "\n";
  out_ << std::flush;
}

}  // namespace fun
