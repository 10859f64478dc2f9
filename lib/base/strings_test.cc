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

TEST(ParseHex32Test, OneToEightHexDigitsOfEitherCase) {
  EXPECT_EQ(ParseHex32("0"), 0u);
  EXPECT_EQ(ParseHex32("1b9E"), 0x1b9eu);
  EXPECT_EQ(ParseHex32("FFFFFFFF"), 0xffffffffu);
  EXPECT_EQ(ParseHex32("0100007F"), 0x0100007fu);
  for (const char* bad : {"", "123456789", "0x1", "1 ", "-1", "g", "1b9e\n"}) {
    EXPECT_EQ(ParseHex32(bad), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace fun
