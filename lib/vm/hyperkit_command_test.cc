#include "lib/vm/hyperkit_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace fun::vm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

HyperkitSpec Good() {
  return {.cpus = 2,
          .memory_mib = 2048,
          .kernel = "/img/fun-kernel",
          .initrd = "/inst/initrd.img",
          .cmdline = "console=ttyS0 quiet",
          .data_disk = "/inst/data.img",
          .system_disk = "/img/fun-system.img",
          .pid_file = "/inst/hyperkit.pid",
          .vsock_dir = "/inst/vsock",
          .uuid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"};
}

// Every value following `flag`, in order.
std::vector<std::string> All(const std::vector<std::string>& a, const std::string& flag) {
  std::vector<std::string> out;
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    if (a[i] == flag) out.push_back(a[i + 1]);
  }
  return out;
}

TEST(HyperkitCommandTest, TheDocumentedCommandLine) {
  auto a = BuildHyperkitArgs(Good());
  // ACPI (SIGTERM presses the power button), RTC in UTC, the pid file.
  EXPECT_EQ(a[0], "-A");
  EXPECT_EQ(a[1], "-u");
  EXPECT_THAT(All(a, "-F"), ElementsAre("/inst/hyperkit.pid"));
  EXPECT_THAT(All(a, "-c"), ElementsAre("2"));
  EXPECT_THAT(All(a, "-m"), ElementsAre("2048M"));
  EXPECT_THAT(All(a, "-U"), ElementsAre("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"));
  EXPECT_THAT(
      All(a, "-s"),
      ElementsAre("0:0,hostbridge", "1:0,virtio-net", "2:0,virtio-blk,/inst/data.img",
                  "3:0,virtio-blk,/img/fun-system.img,ro",
                  "4:0,virtio-sock,guest_cid=3,path=/inst/vsock", "5:0,virtio-rnd", "31:0,lpc"));
  EXPECT_THAT(All(a, "-l"), ElementsAre("com1,stdio"));
  EXPECT_THAT(All(a, "-f"),
              ElementsAre("kexec,/img/fun-kernel,/inst/initrd.img,console=ttyS0 quiet"));
  EXPECT_TRUE(ValidateHyperkitSpec(Good()).ok());
}

TEST(HyperkitCommandTest, TheCommandLineMayHoldCommasThePathsMayNot) {
  // hyperkit's -f parser splits only the first three commas: the rest is the command line.
  HyperkitSpec s = Good();
  s.cmdline = "initcall_blacklist=a,b,c quiet";
  EXPECT_TRUE(ValidateHyperkitSpec(s).ok());
  EXPECT_THAT(All(BuildHyperkitArgs(s), "-f"),
              ElementsAre("kexec,/img/fun-kernel,/inst/initrd.img,initcall_blacklist=a,b,c quiet"));
  for (std::string HyperkitSpec::*field :
       {&HyperkitSpec::kernel, &HyperkitSpec::initrd, &HyperkitSpec::data_disk,
        &HyperkitSpec::system_disk, &HyperkitSpec::vsock_dir}) {
    HyperkitSpec bad = Good();
    bad.*field = "/a,b/file";
    Status st = ValidateHyperkitSpec(bad);
    EXPECT_FALSE(st.ok());
    EXPECT_THAT(st.message(), HasSubstr("a path with ',' cannot be given to hyperkit: /a,b/file"));
  }
}

TEST(HyperkitCommandTest, OneVirtio9pDevicePerShareOnTheOneServer) {
  HyperkitSpec s = Good();
  s.shares = {{.tag = "home"}, {.tag = "work-2"}};
  s.p9_socket = "/inst/p9.sock";
  ASSERT_TRUE(ValidateHyperkitSpec(s).ok());
  auto slots = All(BuildHyperkitArgs(s), "-s");
  EXPECT_NE(std::find(slots.begin(), slots.end(), "6:0,virtio-9p,path=/inst/p9.sock,tag=home"),
            slots.end());
  EXPECT_NE(std::find(slots.begin(), slots.end(), "7:0,virtio-9p,path=/inst/p9.sock,tag=work-2"),
            slots.end());
  EXPECT_EQ(slots.back(), "31:0,lpc");

  s.shares.push_back({.tag = "Bad Tag"});
  EXPECT_THAT(ValidateHyperkitSpec(s).message(), HasSubstr("bad share tag Bad Tag"));
  s.shares.pop_back();
  s.p9_socket.clear();
  EXPECT_THAT(ValidateHyperkitSpec(s).message(), HasSubstr("no 9P socket"));
}

TEST(HyperkitCommandTest, SocketPathsFitMacOs) {
  // sun_path is 104 bytes on macOS; <vsock_dir>/connect is the longest socket hyperkit makes.
  HyperkitSpec s = Good();
  s.vsock_dir = "/" + std::string(94, 'd');  // + "/connect" = 103 bytes: fits
  EXPECT_TRUE(ValidateHyperkitSpec(s).ok());
  s.vsock_dir += "d";
  Status st = ValidateHyperkitSpec(s);
  EXPECT_THAT(st.message(), HasSubstr("macOS allows 103: set FUN_HOME to a shorter directory"));
  s = Good();
  s.shares = {{.tag = "home"}};
  s.p9_socket = "/" + std::string(110, 'p');
  EXPECT_THAT(ValidateHyperkitSpec(s).message(), HasSubstr("macOS allows 103"));
}

TEST(HyperkitCommandTest, WithoutVmnetThereIsNoNetworkDeviceAndNoUuid) {
  HyperkitSpec s = Good();
  s.vmnet = false;
  s.uuid.clear();
  ASSERT_TRUE(ValidateHyperkitSpec(s).ok());
  auto a = BuildHyperkitArgs(s);
  EXPECT_TRUE(All(a, "-U").empty());
  for (const std::string& slot : All(a, "-s")) EXPECT_THAT(slot, ::testing::Not(HasSubstr("net")));
}

TEST(HyperkitCommandTest, RefusesWhatCannotWork) {
  auto message = [](HyperkitSpec s) { return ValidateHyperkitSpec(s).message(); };
  HyperkitSpec s = Good();
  s.kernel.clear();
  EXPECT_THAT(message(s), HasSubstr("no kernel"));
  s = Good();
  s.pid_file.clear();
  EXPECT_THAT(message(s), HasSubstr("no pid file"));
  s = Good();
  s.memory_mib = 64;
  EXPECT_THAT(message(s), HasSubstr("cpus/memory"));
  for (const char* uuid :
       {"", "not-a-uuid", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4",
        "0a1b2c3d+4e5f-4a6b-8c7d-9e0f1a2b3c4d", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4g"}) {
    s = Good();
    s.uuid = uuid;
    EXPECT_THAT(message(s), HasSubstr("vmnet needs a UUID")) << uuid;
  }
}

TEST(HyperkitCommandTest, ExitStatusesInWords) {
  EXPECT_EQ(DescribeHyperkitExit(0), "the guest powered off");
  EXPECT_EQ(DescribeHyperkitExit(2), "the guest rebooted itself");
  EXPECT_THAT(DescribeHyperkitExit(3), HasSubstr("triple-faulted"));
  EXPECT_THAT(DescribeHyperkitExit(1), HasSubstr("hostd.log"));
  EXPECT_THAT(DescribeHyperkitExit(100), HasSubstr("suspend"));
  EXPECT_EQ(DescribeHyperkitExit(7), "hyperkit exited with status 7");
}

}  // namespace
}  // namespace fun::vm
