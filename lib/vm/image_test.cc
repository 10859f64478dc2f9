#include "lib/vm/image.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>

#include "lib/base/files.h"

namespace fun::vm {
namespace {

using ::testing::HasSubstr;

TEST(ImageTest, SystemDiskSerialIsTheLastFunSystemWord) {
  EXPECT_EQ(SystemDiskSerial("console=ttyS0 quiet"), "");
  EXPECT_EQ(SystemDiskSerial("console=ttyS0 fun.system=fun-system quiet\n"), "fun-system");
  EXPECT_EQ(SystemDiskSerial("fun.system=a\tfun.system=b"), "b");
  EXPECT_EQ(SystemDiskSerial("xfun.system=a fun.systemd=b"), "");
  EXPECT_EQ(SystemDiskSerial("fun.system="), "");
}

TEST(ImageTest, DiskSerials) {
  EXPECT_TRUE(IsValidDiskSerial("fun-system"));
  EXPECT_TRUE(IsValidDiskSerial(kDataDiskSerial));
  EXPECT_TRUE(IsValidDiskSerial(std::string(20, 'a')));
  EXPECT_FALSE(IsValidDiskSerial(std::string(21, 'a')));  // virtio-blk's ID is 20 bytes
  EXPECT_FALSE(IsValidDiskSerial(""));
  EXPECT_FALSE(IsValidDiskSerial("fun,system"));  // QEMU's option syntax
  EXPECT_FALSE(IsValidDiskSerial("Fun"));
}

class ImageFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fun-image-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }  // NOLINT
  void Write(const std::string& name, const std::string& data) {
    ASSERT_TRUE(WriteFileAtomically(dir_ + "/" + name, data, 0644).ok());
  }
  void WriteImage(const std::string& cmdline) {
    Write("fun-kernel", "k");
    Write("fun-initrd.img", "i");
    Write("fun-cmdline", cmdline);
  }
  Paths TestPaths() { return *ResolvePaths(PathsInput{.home = dir_, .fun_home = dir_ + "/state"}); }
  std::string dir_;
};

TEST_F(ImageFilesTest, AnImageWithoutASystemDisk) {
  WriteImage("console=ttyS0 quiet\n");
  auto f = ReadImageFiles(dir_);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->kernel, dir_ + "/fun-kernel");
  EXPECT_EQ(f->initrd, dir_ + "/fun-initrd.img");
  EXPECT_EQ(f->cmdline, "console=ttyS0 quiet");
  EXPECT_EQ(f->system_disk, "");
  Write("fun-kernel.pvh", "p");  // preferred: QEMU boots it without decompressing
  EXPECT_EQ(ReadImageFiles(dir_)->kernel, dir_ + "/fun-kernel.pvh");
}

TEST_F(ImageFilesTest, TheCommandLineMakesTheSystemDiskRequired) {
  WriteImage("console=ttyS0 fun.system=fun-system\n");
  auto f = ReadImageFiles(dir_);
  EXPECT_EQ(f.status().code(), Code::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("fun-system.img is missing"));
  EXPECT_THAT(f.status().message(), HasSubstr("linuxkit/build.sh"));
  // FindImageDir passes over it and says why.
  auto found = FindImageDir(TestPaths(), dir_);
  EXPECT_THAT(found.status().message(), HasSubstr("fun-system.img is missing"));

  Write("fun-system.img", "s");
  f = ReadImageFiles(dir_);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->system_disk, dir_ + "/fun-system.img");
  EXPECT_EQ(f->system_disk_serial, "fun-system");
  EXPECT_TRUE(FindImageDir(TestPaths(), dir_).ok());

  WriteImage("fun.system=Bad,Serial");
  EXPECT_THAT(ReadImageFiles(dir_).status().message(),
              HasSubstr("is neither a disk serial (1-20 of a-z, 0-9, -) nor a /dev/vdX path"));

  // By place (HyperKit names disks so; the last word wins, as in the guest): no serial.
  WriteImage("fun.system=fun-system fun.system=/dev/vdb");
  f = ReadImageFiles(dir_);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->system_disk, dir_ + "/fun-system.img");
  EXPECT_EQ(f->system_disk_serial, "");
  for (const char* bad : {"/dev/vd", "/dev/sda", "/dev/vdB", "/dev/vdabcd", "/dev/vdb/x"}) {
    EXPECT_FALSE(IsVirtioDiskPath(bad)) << bad;
  }
  EXPECT_TRUE(IsVirtioDiskPath("/dev/vdaa"));
}

TEST_F(ImageFilesTest, AnImageDirFromTheEnvironmentIsTheOnlyOneLookedAt) {
  // A broken $FUN_IMAGE_DIR is an error, not a reason to boot another image.
  WriteImage("console=ttyS0 fun.system=fun-system\n");  // no fun-system.img
  ::setenv("FUN_IMAGE_DIR", dir_.c_str(), 1);
  EXPECT_THAT(ImageSearchPath(TestPaths(), ""), ::testing::ElementsAre(dir_));
  auto found = FindImageDir(TestPaths(), "");
  ::unsetenv("FUN_IMAGE_DIR");
  EXPECT_THAT(found.status().message(), HasSubstr("fun-system.img is missing"));
}

TEST_F(ImageFilesTest, MissingFilesAreNamed) {
  Write("fun-cmdline", "quiet");
  EXPECT_THAT(ReadImageFiles(dir_).status().message(), HasSubstr("fun-kernel is missing"));
  Write("fun-kernel", "k");
  EXPECT_THAT(ReadImageFiles(dir_).status().message(), HasSubstr("fun-initrd.img is missing"));
}

}  // namespace
}  // namespace fun::vm
