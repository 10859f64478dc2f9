#include "lib/base/strings.h"

#include <gtest/gtest.h>

namespace fun {
namespace {

using Words = std::vector<std::string>;

TEST(SplitWordsTest, DropsEmptyRuns) {
  EXPECT_EQ(SplitWords(" -s  -m 1G", " \t"), (Words{"-s", "-m", "1G"}));
  EXPECT_EQ(SplitWords("a\tb \t c", " \t"), (Words{"a", "b", "c"}));
  EXPECT_EQ(SplitWords("one", " "), (Words{"one"}));
  EXPECT_EQ(SplitWords("", " "), Words{});
  EXPECT_EQ(SplitWords("   ", " "), Words{});
}

TEST(TrimSpaceTest, TrimsBothEnds) {
  EXPECT_EQ(TrimSpace(" 1234\n"), "1234");
  EXPECT_EQ(TrimSpace("\t a b \r\n"), "a b");
  EXPECT_EQ(TrimSpace("x"), "x");
  EXPECT_EQ(TrimSpace(""), "");
  EXPECT_EQ(TrimSpace(" \n\t\r"), "");
}

}  // namespace
}  // namespace fun
