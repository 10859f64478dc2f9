#include "lib/base/files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "lib/base/unique_fd.h"

namespace fun {
namespace {

TEST(FilesTest, WriteFileAtomicallyReplacesWithTheMode) {
  char tmpl[] = "/tmp/fun-files-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/f";
  ASSERT_TRUE(WriteFileAtomically(path, "one", 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(path, "two", 0644).ok());
  auto read = ReadFileToString(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, "two");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  std::system(("rm -rf " + std::string(tmpl)).c_str());  // NOLINT
}

TEST(FilesTest, ReadFileToStringReadsLargeFilesWholeAndNamesMissingOnes) {
  char tmpl[] = "/tmp/fun-files-test.XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/big";
  std::string data;
  for (int i = 0; i < 5000; ++i) data += std::to_string(i) + "\n";  // > one 8 KiB read
  ASSERT_TRUE(WriteFileAtomically(path, data, 0600).ok());
  auto read = ReadFileToString(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, data);
  auto missing = ReadFileToString(std::string(tmpl) + "/none");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("/none"), std::string::npos);
  std::system(("rm -rf " + std::string(tmpl)).c_str());  // NOLINT
}

TEST(FilesTest, CountOpenFdsSeesEachNewFd) {
  auto before = CountOpenFds();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(CountOpenFds(::getpid()).value(), *before);
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 3; ++i) fds.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(CountOpenFds().value(), *before + 3);
  fds.clear();
  EXPECT_EQ(CountOpenFds().value(), *before);
  // A pid that cannot exist (above the kernel's pid_max limit of 2^22).
  EXPECT_FALSE(CountOpenFds(1 << 23).ok());
}

TEST(FilesTest, RaiseOpenFileLimitReturnsTheSoftLimitInEffect) {
  rlimit before{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &before), 0);
  auto limit = RaiseOpenFileLimit();
  ASSERT_TRUE(limit.ok()) << limit.status();
  rlimit after{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(*limit, after.rlim_cur);
  EXPECT_GE(after.rlim_cur, before.rlim_cur);
  EXPECT_GE(after.rlim_cur, before.rlim_max == RLIM_INFINITY ? before.rlim_cur : before.rlim_max);
}

TEST(TailFileTest, LastLines) {
  std::string path = "/tmp/fun-tail-test-" + std::to_string(::getpid());
  std::ofstream(path) << "a\nb\nc\nd\n";
  EXPECT_EQ(TailFile(path, 2), "c\nd\n");
  EXPECT_EQ(TailFile(path, 10), "a\nb\nc\nd\n");
  EXPECT_EQ(TailFile(path + ".missing", 3), "");
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace fun
