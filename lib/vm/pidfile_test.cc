#include "lib/vm/pidfile.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace fun::vm {
namespace {

using ::testing::HasSubstr;

class PidFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/fun-pidfile-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl.data());
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }  // NOLINT
  std::string dir_;
};

TEST_F(PidFileTest, OwnProcessIsAlive) {
  std::string path = dir_ + "/x.pid";
  ASSERT_TRUE(WritePidFile(path, ::getpid()).ok());
  PidFileState s = CheckPidFile(path);
  EXPECT_EQ(s.status, PidStatus::kAlive) << s.detail;
  EXPECT_EQ(s.pid, ::getpid());
  auto up = ProcessUptimeSeconds(::getpid());
  ASSERT_TRUE(up.has_value());
  EXPECT_GE(*up, 0.0);
}

TEST_F(PidFileTest, ReusedPidIsStaleNotOurs) {
  // Our own pid with a start time that is not ours: what a reused pid looks like.
  std::string path = dir_ + "/x.pid";
  uint64_t start = *ProcessStartTime(::getpid());
  std::ofstream(path) << ::getpid() << " " << start + 12345 << "\n";
  PidFileState s = CheckPidFile(path);
  EXPECT_EQ(s.status, PidStatus::kStale);
  EXPECT_THAT(s.detail, HasSubstr("belongs to another process"));
}

TEST_F(PidFileTest, DeadProcessIsStale) {
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  std::string path = dir_ + "/x.pid";
  ASSERT_TRUE(WritePidFile(path, child).ok());
  int st = 0;
  ::waitpid(child, &st, 0);
  PidFileState s = CheckPidFile(path);
  EXPECT_EQ(s.status, PidStatus::kStale);
  EXPECT_THAT(s.detail, HasSubstr("is gone"));
}

TEST_F(PidFileTest, MissingAndCorrupt) {
  EXPECT_EQ(CheckPidFile(dir_ + "/none.pid").status, PidStatus::kMissing);
  std::ofstream(dir_ + "/bad.pid") << "hello";
  PidFileState s = CheckPidFile(dir_ + "/bad.pid");
  EXPECT_EQ(s.status, PidStatus::kCorrupt);
  EXPECT_THAT(s.detail, HasSubstr("not a pid file"));
}

TEST(ParsePidFileTest, Forms) {
  auto p = ParsePidFile("123 456\n");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->first, 123);
  EXPECT_EQ(p->second, 456u);
  for (const char* bad :
       {"", "123", "123 ", "x 1", "1 x", "-1 5", "0 5", "1 2 3", "99999999999 1"}) {
    EXPECT_FALSE(ParsePidFile(bad).ok()) << bad;
  }
}

TEST(ProcessStartTimeTest, NoSuchProcess) {
  EXPECT_EQ(ProcessStartTime(0x3ffffff0).status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace fun::vm
