#include "lib/vm/initrd_cpio.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "lib/base/files.h"
#include "lib/base/process.h"

namespace fun::vm {
namespace {

using ::testing::HasSubstr;

class InitrdCpioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fun-cpio-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // GNU cpio, the peer, run on `archive_path` with `args` in `cwd`.
  ProcessResult Cpio(const std::string& cwd, const std::vector<std::string>& args,
                     const std::string& archive_path) {
    std::string data = *ReadFileToString(archive_path);
    auto r = ProcessRunner::Default().Run(
        Command{.program = "cpio", .args = args, .working_dir = cwd, .stdin_data = data});
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? *r : ProcessResult{};
  }

  std::string dir_;
};

TEST_F(InitrdCpioTest, GnuCpioExtractsWhatWasPacked) {
  std::string secret(32, '\0');
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<char>(i * 7 + 1);
  secret[5] = '\0';  // binary data, NUL included
  auto archive = BuildNewcArchive({
      {.path = "etc", .mode = S_IFDIR | 0755},
      {.path = "etc/fun", .mode = S_IFDIR | 0755},
      {.path = "etc/fun/instance", .mode = S_IFDIR | 0700},
      {.path = "etc/fun/instance/secret", .mode = S_IFREG | 0600, .data = secret},
      {.path = "etc/fun/instance/shares", .mode = S_IFREG | 0644, .data = "odd size: 13\n"},
      {.path = "etc/fun/instance/empty", .mode = S_IFREG | 0644},
  });
  ASSERT_TRUE(archive.ok()) << archive.status().message();
  EXPECT_EQ(archive->size() % 4, 0u);
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/a.cpio", *archive, 0600).ok());
  std::filesystem::create_directory(dir_ + "/out");
  ProcessResult x =
      Cpio(dir_ + "/out", {"-idm", "--quiet", "--no-absolute-filenames"}, dir_ + "/a.cpio");
  ASSERT_TRUE(x.ok()) << x.Describe() << " " << x.stderr_data;
  EXPECT_EQ(*ReadFileToString(dir_ + "/out/etc/fun/instance/secret"), secret);
  EXPECT_EQ(*ReadFileToString(dir_ + "/out/etc/fun/instance/shares"), "odd size: 13\n");
  EXPECT_EQ(*ReadFileToString(dir_ + "/out/etc/fun/instance/empty"), "");
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/out/etc/fun/instance/secret").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat((dir_ + "/out/etc/fun/instance").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  // The listing, in archive order, with owners root and one link for files.
  ProcessResult list = Cpio(dir_, {"-itv", "--quiet"}, dir_ + "/a.cpio");
  ASSERT_TRUE(list.ok()) << list.stderr_data;
  EXPECT_THAT(list.stdout_data, HasSubstr("-rw-------   1 root     root           32"));
  EXPECT_THAT(list.stdout_data, HasSubstr("etc/fun/instance/secret"));
}

TEST_F(InitrdCpioTest, AppendedToAnInitrdAtAFourByteBoundary) {
  // A base of 5 bytes: 3 zero bytes pad it before the archive starts.
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/base", "12345", 0644).ok());
  auto archive = BuildNewcArchive({{.path = "f", .mode = S_IFREG | 0644, .data = "x"}});
  ASSERT_TRUE(archive.ok());
  ASSERT_TRUE(WriteAppendedInitrd(dir_ + "/base", *archive, dir_ + "/initrd.img").ok());
  std::string all = *ReadFileToString(dir_ + "/initrd.img");
  EXPECT_EQ(all, std::string("12345\0\0\0", 8) + *archive);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/initrd.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "it may hold the instance secret";

  Status missing = WriteAppendedInitrd(dir_ + "/nope", *archive, dir_ + "/x.img");
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.message(), HasSubstr(dir_ + "/nope"));
}

TEST_F(InitrdCpioTest, AnArchiveAfterAGnuCpioArchiveIsReadByGnuCpioToo) {
  // GNU cpio reads concatenated archives one at a time: the second, read from where the first
  // ended, lists ours (the kernel reads both in one pass).
  std::ofstream(dir_ + "/first.txt") << "first";
  auto r = ProcessRunner::Default().Run(Command{.program = "sh",
                                                .args = {"-c",
                                                         "echo first.txt | cpio -o -H newc "
                                                         "--quiet > base.cpio"},
                                                .working_dir = dir_});
  ASSERT_TRUE(r.ok() && r->ok());
  auto archive = BuildNewcArchive({{.path = "second.txt", .mode = S_IFREG | 0644, .data = "2"}});
  ASSERT_TRUE(archive.ok());
  ASSERT_TRUE(WriteAppendedInitrd(dir_ + "/base.cpio", *archive, dir_ + "/both.img").ok());
  std::string both = *ReadFileToString(dir_ + "/both.img");
  std::string base = *ReadFileToString(dir_ + "/base.cpio");
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/tail.cpio", both.substr(base.size()), 0600).ok());
  ProcessResult list = Cpio(dir_, {"-it", "--quiet"}, dir_ + "/tail.cpio");
  EXPECT_EQ(list.stdout_data, "second.txt\n");
}

TEST(InitrdCpioRefusals, PathsAndTypes) {
  for (const char* bad : {"", "/etc/x", "etc/", "etc//x", "./x", "etc/../x", ".."}) {
    auto a = BuildNewcArchive({{.path = bad, .mode = S_IFREG | 0644}});
    EXPECT_FALSE(a.ok()) << bad;
  }
  EXPECT_THAT(BuildNewcArchive({{.path = "l", .mode = S_IFLNK | 0777}}).status().message(),
              HasSubstr("only regular files and directories"));
  EXPECT_THAT(
      BuildNewcArchive({{.path = "d", .mode = S_IFDIR | 0755, .data = "x"}}).status().message(),
      HasSubstr("a directory with data"));
  auto empty = BuildNewcArchive({});
  ASSERT_TRUE(empty.ok());
  EXPECT_NE(empty->find("TRAILER!!!"), std::string::npos);
}

}  // namespace
}  // namespace fun::vm
