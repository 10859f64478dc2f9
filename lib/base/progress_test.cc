#include "lib/base/progress.h"

#include <gtest/gtest.h>

#include <sstream>

namespace fun {
namespace {

using namespace std::chrono_literals;

TEST(SpinnerTest, PipePrintsEachPhaseOnce) {
  std::ostringstream out;
  SimulatedClock clock;
  {
    Spinner s(out, false, clock);
    s.Update("booting");
    clock.Advance(500ms);
    s.Update("booting");
    clock.Advance(1s);
    s.Update("waiting for containerd");
    s.Done("ready");
  }
  EXPECT_EQ(out.str(), "booting (0.0s)\nwaiting for containerd (1.5s)\nready\n");
}

TEST(SpinnerTest, TerminalRedrawsOneLineAndClearsIt) {
  std::ostringstream out;
  SimulatedClock clock;
  Spinner s(out, true, clock);
  s.Update("booting");
  s.Update("booting");  // within 100 ms: no redraw
  clock.Advance(200ms);
  s.Update("booting");
  s.Done("ready");
  std::string o = out.str();
  EXPECT_EQ(std::count(o.begin(), o.end(), '\r'), 4);  // 2 draws + clear (\r ... \r)
  EXPECT_NE(o.find("booting  0.2s"), std::string::npos);
  EXPECT_EQ(o.substr(o.size() - 6), "ready\n");
}

}  // namespace
}  // namespace fun
