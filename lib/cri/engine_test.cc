// The engine's pure parts: the io.fun.spec annotation's JSON and the checks of bind mounts.
// (The engine against a real containerd: tools/fun/fun_test.cc.)
#include "lib/cri/engine.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace fun::cri {
namespace {

using ::testing::HasSubstr;

TEST(RunSpecJsonTest, MountsRoundTrip) {
  RunSpec spec;
  spec.image = "busybox";
  spec.name = "web";
  spec.mounts = {
      {.host_path = "/Users/a/src", .source = "/mnt/src", .container_path = "/src"},
      {.host_path = "/etc/x", .source = "/etc/x", .container_path = "/x", .readonly = true},
  };
  auto back = RunSpecFromJson(RunSpecToJson(spec));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->mounts, spec.mounts);
}

TEST(RunSpecJsonTest, FlagsRoundTripAndAreChecked) {
  RunSpec spec;
  spec.image = "busybox";
  spec.privileged = true;
  spec.host_network = true;
  spec.host_pid = true;
  auto back = RunSpecFromJson(RunSpecToJson(spec));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->privileged);
  EXPECT_TRUE(back->host_network);
  EXPECT_TRUE(back->host_pid);
  // A spec stored before --privileged (or --pid) existed runs unprivileged in its own PIDs.
  auto old = RunSpecFromJson(R"({"image":"busybox"})");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_FALSE(old->privileged);
  EXPECT_FALSE(old->host_pid);
  auto bad = RunSpecFromJson(R"({"image":"busybox","privileged":"yes"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("privileged is not a boolean"));
}

TEST(RunSpecJsonTest, MountsAreCheckedFieldByField) {
  auto parse = [](std::string_view mounts) {
    return RunSpecFromJson(fmt::format(R"({{"image":"busybox","mounts":{}}})", mounts));
  };
  // host_path is optional (the source is on this host then).
  auto no_host = parse(R"([{"container_path":"/d","source":"/s"}])");
  ASSERT_TRUE(no_host.ok()) << no_host.status();
  EXPECT_EQ(no_host->mounts[0].host_path, "/s");
  EXPECT_FALSE(no_host->mounts[0].readonly);
  struct Case {
    std::string mounts;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {R"({})", "mounts is not a list"},
           {R"([1])", "mounts[0]: expected an object"},
           {R"([{"source":"/s"}])", "mounts[0]: container_path is missing"},
           {R"([{"container_path":"/d"}])", "mounts[0]: source is missing"},
           {R"([{"container_path":"/d","source":7}])", "source is missing"},
           {R"([{"container_path":"/d","source":"/s","readonly":"yes"}])",
            "readonly is not a boolean"},
           {R"([{"container_path":"d","source":"/s"}])", "is not absolute"},
           {R"([{"container_path":"/d","source":"/s/../t"}])", "is not a clean path"},
           {R"([{"container_path":"/","source":"/s"}])", "is the container's root"},
           {R"([{"container_path":"/d","source":"/s"},{"container_path":"/d","source":"/t"}])",
            "mount 2: the container path \"/d\" is mounted twice"},
       }) {
    auto r = parse(c.mounts);
    ASSERT_FALSE(r.ok()) << c.mounts;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(c.says)) << c.mounts;
  }
}

TEST(ValidateBindMountsTest, PathsMustBeAbsoluteAndClean) {
  EXPECT_TRUE(ValidateBindMounts({}).ok());
  EXPECT_TRUE(ValidateBindMounts({{.host_path = "/", .source = "/", .container_path = "/d"}}).ok());
  for (const char* bad : {"", "rel", "/a/", "/a//b", "/a/./b", "/a/.."}) {
    Status s = ValidateBindMounts({{.host_path = "/h", .source = "/s", .container_path = bad}});
    EXPECT_EQ(s.code(), Code::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("mount 1: the container path")) << bad;
  }
  Status host = ValidateBindMounts({{.host_path = "h", .source = "/s", .container_path = "/d"}});
  EXPECT_THAT(host.message(), HasSubstr("the host path \"h\" is not absolute"));
}

}  // namespace
}  // namespace fun::cri
