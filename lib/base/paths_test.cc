#include "lib/base/paths.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace fun {
namespace {

using ::testing::HasSubstr;

TEST(PathsTest, LinuxDefaultUsesXdgStateHomeFallback) {
  auto p =
      ResolvePaths({.os = Os::kLinux, .home = "/home/ann/", .fun_home = "", .xdg_state_home = ""});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->state_dir, "/home/ann/.local/state/fun");
  EXPECT_EQ(p->logs_dir, "/home/ann/.local/state/fun/logs");
  EXPECT_EQ(p->instances_dir, "/home/ann/.local/state/fun/instances");
  EXPECT_EQ(p->images_dir, "/home/ann/.local/state/fun/images");
}

TEST(PathsTest, LinuxHonoursXdgStateHome) {
  auto p = ResolvePaths(
      {.os = Os::kLinux, .home = "/home/ann", .fun_home = "", .xdg_state_home = "/var/state/"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->state_dir, "/var/state/fun");
}

TEST(PathsTest, LinuxIgnoresRelativeXdgStateHome) {
  auto p = ResolvePaths(
      {.os = Os::kLinux, .home = "/home/ann", .fun_home = "", .xdg_state_home = "state"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->state_dir, "/home/ann/.local/state/fun");
}

TEST(PathsTest, MacosUsesLibraryFolders) {
  auto p = ResolvePaths(
      {.os = Os::kMacos, .home = "/Users/ann", .fun_home = "", .xdg_state_home = "/ignored"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->state_dir, "/Users/ann/Library/Application Support/Fun");
  EXPECT_EQ(p->logs_dir, "/Users/ann/Library/Logs/Fun");
  EXPECT_EQ(p->ConsoleLogForUser("default"), "/Users/ann/Library/Logs/Fun/linuxkit.log");
  EXPECT_EQ(p->ConsoleLogForUser("dev"), "/Users/ann/Library/Logs/Fun/dev-linuxkit.log");
}

TEST(PathsTest, FunHomeOverridesOnEveryPlatform) {
  for (Os os : {Os::kLinux, Os::kMacos}) {
    auto p = ResolvePaths(
        {.os = os, .home = "/home/ann", .fun_home = "/opt/fun/", .xdg_state_home = "/x"});
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(p->state_dir, "/opt/fun");
    EXPECT_EQ(p->logs_dir, "/opt/fun/logs");
  }
}

TEST(PathsTest, FunHomeWorksWithoutHome) {
  auto p =
      ResolvePaths({.os = Os::kLinux, .home = "", .fun_home = "/srv/fun", .xdg_state_home = ""});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->state_dir, "/srv/fun");
}

TEST(PathsTest, RelativeFunHomeIsRefused) {
  auto p = ResolvePaths(
      {.os = Os::kLinux, .home = "/home/ann", .fun_home = "fun", .xdg_state_home = ""});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kFailedPrecondition);
  EXPECT_THAT(p.status().message(), HasSubstr("FUN_HOME=\"fun\" is relative"));
}

TEST(PathsTest, NoHomeAtAllIsAClearError) {
  auto p = ResolvePaths({.os = Os::kLinux, .home = "", .fun_home = "", .xdg_state_home = ""});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(p.status().message(), HasSubstr("set FUN_HOME"));
}

TEST(PathsTest, InstanceFiles) {
  auto p = ResolvePaths({.os = Os::kLinux, .home = "/h", .fun_home = "", .xdg_state_home = ""});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->InstanceDir("default"), "/h/.local/state/fun/instances/default");
  EXPECT_EQ(p->InstanceFile("default", InstanceFileKind::kContainerdSock),
            "/h/.local/state/fun/instances/default/containerd.sock");
  EXPECT_EQ(p->InstanceFile("a", InstanceFileKind::kConfig),
            "/h/.local/state/fun/instances/a/config.json");
  EXPECT_EQ(p->InstanceFile("a", InstanceFileKind::kVmPid),
            "/h/.local/state/fun/instances/a/vm.pid");
  EXPECT_EQ(p->ConsoleLogForUser("a"), "/h/.local/state/fun/instances/a/console.log");
  EXPECT_EQ(p->ImageDir("0.1.0"), "/h/.local/state/fun/images/0.1.0");
}

TEST(PathsTest, EnvironmentIsRead) {
  ::setenv("FUN_HOME", "/tmp/fun-home-from-env", 1);  // NOLINT(concurrency-mt-unsafe)
  PathsInput in = PathsInputFromEnvironment();
  ::unsetenv("FUN_HOME");  // NOLINT(concurrency-mt-unsafe)
  EXPECT_EQ(in.fun_home, "/tmp/fun-home-from-env");
  EXPECT_EQ(in.os, Os::kLinux);
  EXPECT_FALSE(in.home.empty());
}

TEST(MakeDirsTest, CreatesNestedWithModeAndIsIdempotent) {
  std::string base = std::string("/tmp/fun-paths-test-") + std::to_string(::getpid());
  std::string deep = base + "/a/b/c";
  ASSERT_TRUE(MakeDirs(deep).ok());
  ASSERT_TRUE(MakeDirs(deep).ok());
  struct stat st {};
  ASSERT_EQ(::stat(deep.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0077, 0u);
  // A file in the way is a clear error.
  std::ofstream(base + "/file") << "x";
  Status s = MakeDirs(base + "/file/sub");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("is not a directory"));
  std::system(("rm -rf " + base).c_str());  // NOLINT
}

}  // namespace
}  // namespace fun
