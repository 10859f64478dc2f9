#include "lib/vm/accel.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace fun::vm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

HostFacts LinuxWithKvm() {
  return {.os = Os::kLinux, .dev_kvm_exists = true, .dev_kvm_usable = true, .kvm_standard = true};
}

TEST(AccelTest, AutoPicksKvmWhenItReallyWorks) {
  auto c = ChooseAccel(Accel::kAuto, Backend::kQemu, LinuxWithKvm());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->accel, Accel::kKvm);
}

TEST(AccelTest, PvmFallsBackToTcgAndSaysWhy) {
  // This machine: /dev/kvm is there and opens, but it is PVM.
  HostFacts f{.os = Os::kLinux, .dev_kvm_exists = true, .dev_kvm_usable = true, .kvm_pvm = true};
  auto c = ChooseAccel(Accel::kAuto, Backend::kQemu, f);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->accel, Accel::kTcg);
  EXPECT_THAT(c->reason, HasSubstr("PVM"));
  EXPECT_THAT(c->reason, HasSubstr("using TCG"));
  // Asking for KVM outright is refused with what to do, never a hang.
  auto k = ChooseAccel(Accel::kKvm, Backend::kQemu, f);
  ASSERT_FALSE(k.ok());
  EXPECT_THAT(k.status().message(), HasSubstr("set \"accel\" to \"auto\" or \"tcg\""));
}

TEST(AccelTest, NoKvmDeviceOrNoPermission) {
  HostFacts none{.os = Os::kLinux};
  EXPECT_THAT(ChooseAccel(Accel::kAuto, Backend::kQemu, none)->reason,
              HasSubstr("/dev/kvm is missing"));
  HostFacts denied = LinuxWithKvm();
  denied.dev_kvm_usable = false;
  denied.dev_kvm_error = "Permission denied";
  auto c = ChooseAccel(Accel::kAuto, Backend::kQemu, denied);
  EXPECT_EQ(c->accel, Accel::kTcg);
  EXPECT_THAT(c->reason, HasSubstr("kvm group"));
}

TEST(AccelTest, TcgWhenAsked) {
  auto c = ChooseAccel(Accel::kTcg, Backend::kQemu, LinuxWithKvm());
  EXPECT_EQ(c->accel, Accel::kTcg);
  EXPECT_THAT(c->reason, HasSubstr("config.json"));
}

TEST(AccelTest, MacosUsesHvf) {
  HostFacts mac{.os = Os::kMacos, .arch = "arm64", .hvf_supported = true};
  EXPECT_EQ(ChooseAccel(Accel::kAuto, Backend::kQemu, mac)->accel, Accel::kHvf);
  EXPECT_EQ(ChooseAccel(Accel::kAuto, Backend::kHyperkit, mac)->accel, Accel::kHvf);
  mac.hvf_supported = false;
  EXPECT_EQ(ChooseAccel(Accel::kAuto, Backend::kQemu, mac)->accel, Accel::kTcg);
  EXPECT_FALSE(ChooseAccel(Accel::kAuto, Backend::kHyperkit, mac).ok());
  EXPECT_FALSE(ChooseAccel(Accel::kKvm, Backend::kQemu, mac).ok());
}

TEST(AccelTest, HyperkitOnLinuxIsRefused) {
  auto c = ChooseAccel(Accel::kAuto, Backend::kHyperkit, LinuxWithKvm());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("only on macOS"));
}

TEST(AccelTest, NativeNeedsNone) {
  EXPECT_EQ(ChooseAccel(Accel::kAuto, Backend::kNative, HostFacts{})->accel, Accel::kNone);
}

TEST(AccelTest, ProbeOnThisHostIsConsistent) {
  HostFacts f = ProbeHostFacts();
  EXPECT_EQ(f.os, Os::kLinux);
  if (!f.dev_kvm_exists) {
    EXPECT_FALSE(f.dev_kvm_usable);
  }
  EXPECT_TRUE(ChooseAccel(Accel::kAuto, Backend::kQemu, f).ok());
}

TEST(HypervisorCandidates, FollowTheDocumentedContract) {
  auto names = [](const std::vector<HypervisorCandidate>& c) {
    std::vector<std::string> out;
    for (const auto& x : c) out.push_back(x.program + (x.search_path ? " (PATH)" : ""));
    return out;
  };
  EXPECT_THAT(names(HypervisorCandidates(Os::kLinux, "x86_64", Backend::kQemu, "/b")),
              ElementsAre("qemu-system-x86_64 (PATH)"));
  EXPECT_THAT(names(HypervisorCandidates(Os::kMacos, "arm64", Backend::kQemu, "/b")),
              ElementsAre("/b/qemu-system-aarch64", "qemu-system-aarch64 (PATH)"));
  EXPECT_THAT(names(HypervisorCandidates(Os::kMacos, "x86_64", Backend::kQemu, "/b")),
              ElementsAre("/b/qemu-system-x86_64", "qemu-system-x86_64 (PATH)"));
  EXPECT_THAT(names(HypervisorCandidates(Os::kMacos, "x86_64", Backend::kHyperkit, "/b")),
              ElementsAre("/b/hyperkit", "/usr/local/bin/hyperkit"));
  EXPECT_THAT(HypervisorCandidates(Os::kLinux, "x86_64", Backend::kHyperkit, "/b"), IsEmpty());
  EXPECT_THAT(HypervisorCandidates(Os::kLinux, "x86_64", Backend::kNative, "/b"), IsEmpty());
}

TEST(ChooseHypervisorTest, TheFirstExecutableFixedPathElseThePathName) {
  char tmpl[] = "/tmp/fun-hv-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string bundled = dir + "/hyperkit", other = dir + "/other";
  std::vector<HypervisorCandidate> hk = {{bundled}, {other}};
  EXPECT_EQ(ChooseHypervisor(hk), bundled) << "none there: the first, so the error names it";
  std::ofstream(other) << "#!/bin/sh\n";
  EXPECT_EQ(ChooseHypervisor(hk), bundled) << "not executable yet";
  ::chmod(other.c_str(), 0755);
  EXPECT_EQ(ChooseHypervisor(hk), other);
  std::ofstream(bundled) << "#!/bin/sh\n";
  ::chmod(bundled.c_str(), 0755);
  EXPECT_EQ(ChooseHypervisor(hk), bundled);
  EXPECT_EQ(ChooseHypervisor(HypervisorCandidates(Os::kLinux, "x86_64", Backend::kQemu, dir)),
            "qemu-system-x86_64");
  EXPECT_EQ(ChooseHypervisor({}), "");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fun::vm
