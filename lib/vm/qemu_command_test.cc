#include "lib/vm/qemu_command.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

namespace fun::vm {
namespace {

using ::testing::HasSubstr;

QemuSpec Good() {
  return {.accel = Accel::kTcg,
          .cpus = 2,
          .memory_mib = 2048,
          .kernel = "/img/fun-kernel",
          .initrd = "/img/fun-initrd.img",
          .cmdline = "console=ttyS0 quiet",
          .data_disk = "/inst/data.img",
          .console_log = "/inst/console.log",
          .qmp_socket = "/inst/qmp.sock",
          .pid_file = "/inst/qemu.pid",
          .secret_file = "/inst/secret",
          .agent_host_port = 41234};
}

// The value following `flag` (the first occurrence after `from`), or "".
std::string After(const std::vector<std::string>& a, const std::string& flag, size_t nth = 0) {
  for (size_t i = 0; i + 1 < a.size(); ++i) {
    if (a[i] == flag && nth-- == 0) return a[i + 1];
  }
  return "";
}

TEST(QemuCommandTest, CoreFlags) {
  auto a = BuildQemuArgs(Good());
  // A host thread per vCPU unless asked: see InstanceConfig::tcg_threads.
  EXPECT_EQ(After(a, "-accel"), "tcg,thread=multi");
  EXPECT_EQ(After(a, "-cpu"), "max");
  QemuSpec single = Good();
  single.tcg_multi_thread = false;
  EXPECT_EQ(After(BuildQemuArgs(single), "-accel"), "tcg,thread=single");
  EXPECT_EQ(After(a, "-smp"), "2");
  EXPECT_EQ(After(a, "-m"), "2048M");
  EXPECT_EQ(After(a, "-kernel"), "/img/fun-kernel");
  EXPECT_EQ(After(a, "-append"), "console=ttyS0 quiet");
  EXPECT_EQ(After(a, "-qmp"), "unix:/inst/qmp.sock,server=on,wait=off");
  EXPECT_EQ(After(a, "-netdev"), "user,id=net0,hostfwd=tcp:127.0.0.1:41234-:7070");
  EXPECT_EQ(After(a, "-fw_cfg"), "name=opt/fun/secret,file=/inst/secret");
  EXPECT_THAT(After(a, "-drive"), HasSubstr("file=/inst/data.img,format=raw"));
  EXPECT_NE(std::find(a.begin(), a.end(), "-no-reboot"), a.end());
  EXPECT_NE(std::find(a.begin(), a.end(), "-nodefaults"), a.end());
  EXPECT_EQ(After(a, "-device"), "virtio-net-pci,netdev=net0,romfile=");
}

TEST(QemuCommandTest, TheSecretIsNeverOnTheCommandLine) {
  // Only the path of the secret file is, which is 0600 in the instance dir.
  for (const auto& arg : BuildQemuArgs(Good()))
    EXPECT_THAT(arg, ::testing::Not(HasSubstr("token")));
}

TEST(QemuCommandTest, HardwareAcceleratorsUseTheHostCpu) {
  QemuSpec s = Good();
  s.accel = Accel::kKvm;
  auto a = BuildQemuArgs(s);
  EXPECT_EQ(After(a, "-accel"), "kvm");
  EXPECT_EQ(After(a, "-cpu"), "host");
}

TEST(QemuCommandTest, MicrovmUsesMmioDevices) {
  QemuSpec s = Good();
  s.machine = "microvm";
  auto a = BuildQemuArgs(s);
  EXPECT_EQ(After(a, "-machine"), "microvm,rtc=on");
  EXPECT_EQ(After(a, "-device"), "virtio-net-device,netdev=net0");
}

TEST(QemuCommandTest, NoDataDiskNoDrive) {
  QemuSpec s = Good();
  s.data_disk.clear();
  auto a = BuildQemuArgs(s);
  EXPECT_EQ(std::find(a.begin(), a.end(), "-drive"), a.end());
}

TEST(QemuCommandTest, DisksCarryTheSerialsTheGuestFindsThemBy) {
  QemuSpec s = Good();
  s.system_disk = "/img/fun-system.img";
  s.system_disk_serial = "fun-system";
  ASSERT_TRUE(ValidateQemuSpec(s).ok());
  auto a = BuildQemuArgs(s);
  EXPECT_THAT(After(a, "-drive", 0), HasSubstr("id=data,file=/inst/data.img"));
  EXPECT_EQ(After(a, "-drive", 1),
            "if=none,id=system,file=/img/fun-system.img,format=raw,readonly=on");
  EXPECT_THAT(a, ::testing::Contains("virtio-blk-pci,drive=data,serial=fun-data"));
  EXPECT_THAT(a, ::testing::Contains("virtio-blk-pci,drive=system,serial=fun-system"));
  s.system_disk_serial = "Fun System";
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("system disk serial"));
  s.system_disk_serial = "fun-system";
  s.system_disk = "/a,b/fun-system.img";
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("','"));
  // An image that names the system disk by place (fun.system=/dev/vdb): no serial, second.
  s.system_disk = "/img/fun-system.img";
  s.system_disk_serial = "";
  ASSERT_TRUE(ValidateQemuSpec(s).ok());
  EXPECT_THAT(BuildQemuArgs(s), ::testing::Contains("virtio-blk-pci,drive=system"));
}

TEST(QemuCommandTest, Validation) {
  EXPECT_TRUE(ValidateQemuSpec(Good()).ok());
  QemuSpec s = Good();
  s.kernel.clear();
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("no kernel"));
  s = Good();
  s.qmp_socket = "/" + std::string(120, 'x');
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("set FUN_HOME to a shorter"));
  s = Good();
  s.data_disk = "/a,b/data.img";
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("','"));
  s = Good();
  s.accel = Accel::kAuto;
  EXPECT_FALSE(ValidateQemuSpec(s).ok());
  s = Good();
  s.machine = "virt";
  EXPECT_FALSE(ValidateQemuSpec(s).ok());
}

TEST(QemuCommandTest, SharesGetAVirtioSerialPortEachAndTheTable) {
  QemuSpec s = Good();
  s.share_tags = {"users-alice", "data"};
  s.p9_socket = "/inst/p9.sock";
  s.share_table_file = "/inst/shares";
  ASSERT_TRUE(ValidateQemuSpec(s).ok());
  auto a = BuildQemuArgs(s);
  EXPECT_EQ(After(a, "-fw_cfg", 1), "name=opt/fun/shares,file=/inst/shares");
  EXPECT_EQ(After(a, "-chardev", 1), "socket,id=p9-0,path=/inst/p9.sock");
  EXPECT_EQ(After(a, "-chardev", 2), "socket,id=p9-1,path=/inst/p9.sock");
  std::vector<std::string> devices;
  for (size_t i = 0; !After(a, "-device", i).empty(); ++i)
    devices.push_back(After(a, "-device", i));
  EXPECT_THAT(devices, ::testing::Contains("virtio-serial-pci,id=vser0,max_ports=3"));
  EXPECT_THAT(devices, ::testing::Contains(
                           "virtserialport,bus=vser0.0,nr=1,chardev=p9-0,name=fun.p9.users-alice"));
  EXPECT_THAT(devices,
              ::testing::Contains("virtserialport,bus=vser0.0,nr=2,chardev=p9-1,name=fun.p9.data"));
  // Without shares: no serial device, no table.
  auto plain = BuildQemuArgs(Good());
  EXPECT_EQ(After(plain, "-fw_cfg", 1), "");
}

TEST(QemuCommandTest, SharesOverVsockGetSharedMemoryTheDeviceAndThePortButNoSerialPorts) {
  QemuSpec s = Good();
  s.share_tags = {"home"};
  s.p9_socket = "/inst/p9.sock";
  s.share_table_file = "/inst/shares";
  s.p9_vsock_port = 5640;
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("vsock device's socket"));
  s.vsock_socket = "/inst/vsock.sock";
  ASSERT_TRUE(ValidateQemuSpec(s).ok());
  auto a = BuildQemuArgs(s);
  EXPECT_EQ(After(a, "-machine"), "q35,memory-backend=mem");
  EXPECT_EQ(After(a, "-object"), "memory-backend-memfd,id=mem,size=2048M,share=on");
  EXPECT_EQ(After(a, "-m"), "2048M");
  EXPECT_EQ(After(a, "-chardev", 1), "socket,id=vsock0,path=/inst/vsock.sock");
  std::vector<std::string> devices;
  for (size_t i = 0; !After(a, "-device", i).empty(); ++i)
    devices.push_back(After(a, "-device", i));
  EXPECT_THAT(devices, ::testing::Contains("vhost-user-vsock-pci,chardev=vsock0"));
  for (const auto& d : devices) EXPECT_THAT(d, ::testing::Not(HasSubstr("virtserialport")));
  EXPECT_EQ(After(a, "-fw_cfg", 1), "name=opt/fun/p9-vsock,string=5640");
  EXPECT_EQ(After(a, "-fw_cfg", 2), "name=opt/fun/shares,file=/inst/shares");
  s.machine = "microvm";
  a = BuildQemuArgs(s);
  EXPECT_EQ(After(a, "-machine"), "microvm,rtc=on,memory-backend=mem");
  devices.clear();
  for (size_t i = 0; !After(a, "-device", i).empty(); ++i)
    devices.push_back(After(a, "-device", i));
  EXPECT_THAT(devices, ::testing::Contains("vhost-user-vsock-device,chardev=vsock0"));
  s.vsock_socket = "/" + std::string(120, 'v');
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("107"));
}

TEST(QemuCommandTest, BadSharesAreRefused) {
  QemuSpec s = Good();
  s.share_tags = {"home"};
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("9P socket"));
  s.p9_socket = "/inst/p9.sock";
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("share table"));
  s.share_table_file = "/inst/shares";
  s.share_tags = {"Bad,tag"};
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("bad share tag"));
  s.share_tags = {"home"};
  s.p9_socket = "/" + std::string(120, 'x');
  EXPECT_THAT(ValidateQemuSpec(s).message(), HasSubstr("107"));
}

TEST(QemuCommandTest, ExtraArgsSplitOnSpacesAndTabs) {
  using V = std::vector<std::string>;
  EXPECT_EQ(SplitQemuExtraArgs(""), V{});
  EXPECT_EQ(SplitQemuExtraArgs("  \t "), V{});
  EXPECT_EQ(SplitQemuExtraArgs("-s"), V{"-s"});
  EXPECT_EQ(SplitQemuExtraArgs(" -virtfs  local,path=/d,mount_tag=t,security_model=none\t-s "),
            (V{"-virtfs", "local,path=/d,mount_tag=t,security_model=none", "-s"}));
  // No quoting: quotes are part of the argument, as QEMU would see them.
  EXPECT_EQ(SplitQemuExtraArgs("-name 'a b'"), (V{"-name", "'a", "b'"}));
}

TEST(QemuCommandTest, ExtraArgsComeLastAsGiven) {
  QemuSpec s = Good();
  s.share_tags = {"home"};
  s.p9_socket = "/inst/p9.sock";
  s.share_table_file = "/inst/shares";
  const std::vector<std::string> plain = BuildQemuArgs(s);
  s.extra_args = {"-virtfs", "local,path=/d,mount_tag=t,security_model=none"};
  ASSERT_TRUE(ValidateQemuSpec(s).ok());
  const std::vector<std::string> a = BuildQemuArgs(s);
  ASSERT_EQ(a.size(), plain.size() + 2);
  EXPECT_TRUE(std::equal(plain.begin(), plain.end(), a.begin()));
  EXPECT_EQ(a[a.size() - 2], "-virtfs");
  EXPECT_EQ(a.back(), "local,path=/d,mount_tag=t,security_model=none");
}

}  // namespace
}  // namespace fun::vm
