#include "lib/base/flags.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace fun {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Opts {
  bool json = false;
  bool detach = false;
  bool interactive = false;
  std::string name;
  int cpus = 2;
  std::vector<std::string> env;
};

FlagSet MakeFlags(Opts& o) {
  FlagSet f("fun run");
  f.Bool("json", &o.json, "print JSON");
  f.Bool("detach", &o.detach, "run in the background", 'd');
  f.Bool("interactive", &o.interactive, "keep stdin open", 'i');
  f.String("name", &o.name, "container name");
  f.Int("cpus", &o.cpus, "virtual CPUs");
  f.Repeated("env", &o.env, "set an environment variable", 'e');
  return f;
}

TEST(FlagsTest, LongShortAndPositionals) {
  Opts o;
  FlagSet f = MakeFlags(o);
  auto rest = f.Parse({"--cpus", "4", "a", "--name=web", "-d", "-e", "A=1", "-eB=2", "b"});
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_THAT(*rest, ElementsAre("a", "b"));
  EXPECT_EQ(o.cpus, 4);
  EXPECT_EQ(o.name, "web");
  EXPECT_TRUE(o.detach);
  EXPECT_THAT(o.env, ElementsAre("A=1", "B=2"));
}

TEST(FlagsTest, GroupedShortBools) {
  Opts o;
  FlagSet f = MakeFlags(o);
  ASSERT_TRUE(f.Parse({"-di"}).ok());
  EXPECT_TRUE(o.detach);
  EXPECT_TRUE(o.interactive);
}

TEST(FlagsTest, StopAtFirstPositionalKeepsCommandFlags) {
  Opts o;
  FlagSet f = MakeFlags(o);
  auto rest = f.Parse({"-d", "busybox", "ls", "-l", "--json"}, true);
  ASSERT_TRUE(rest.ok());
  EXPECT_THAT(*rest, ElementsAre("busybox", "ls", "-l", "--json"));
  EXPECT_FALSE(o.json);
}

TEST(FlagsTest, DoubleDashEndsFlags) {
  Opts o;
  FlagSet f = MakeFlags(o);
  auto rest = f.Parse({"--json", "--", "--cpus", "-"});
  ASSERT_TRUE(rest.ok());
  EXPECT_THAT(*rest, ElementsAre("--cpus", "-"));
  EXPECT_TRUE(o.json);
}

TEST(FlagsTest, Errors) {
  Opts o;
  FlagSet f = MakeFlags(o);
  auto e1 = f.Parse({"--cpu", "4"});
  ASSERT_FALSE(e1.ok());
  EXPECT_EQ(e1.status().message(), "unknown flag --cpu: see 'fun run --help'");
  auto e2 = f.Parse({"--cpus", "four"});
  EXPECT_EQ(e2.status().message(), "--cpus: \"four\" is not an integer");
  auto e3 = f.Parse({"--cpus"});
  EXPECT_THAT(e3.status().message(), HasSubstr("--cpus needs a value"));
  auto e4 = f.Parse({"--json=yes"});
  EXPECT_EQ(e4.status().message(), "--json takes no value");
  auto e5 = f.Parse({"-x"});
  EXPECT_EQ(e5.status().message(), "unknown flag -x: see 'fun run --help'");
  auto e6 = f.Parse({"-e"});
  EXPECT_THAT(e6.status().message(), HasSubstr("-e needs a value"));
  EXPECT_EQ(e1.status().code(), Code::kInvalidArgument);
}

TEST(FlagsTest, ParseInt) {
  EXPECT_EQ(*ParseInt("42", "x"), 42);
  EXPECT_EQ(*ParseInt("-3", "x"), -3);
  EXPECT_FALSE(ParseInt("", "x").ok());
  EXPECT_FALSE(ParseInt("4x", "x").ok());
  EXPECT_FALSE(ParseInt("99999999999", "x").ok());
  EXPECT_FALSE(ParseInt(" 4", "x").ok());
}

TEST(FlagsTest, UsageListsEveryFlag) {
  Opts o;
  FlagSet f = MakeFlags(o);
  std::string u = f.Usage();
  EXPECT_THAT(u, HasSubstr("--cpus N"));
  EXPECT_THAT(u, HasSubstr("-d, --detach"));
  EXPECT_THAT(u, HasSubstr("-e, --env VALUE"));
}

}  // namespace
}  // namespace fun
