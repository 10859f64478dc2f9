// checks_test.cc: every check made to pass and made to fail (and warn or skip where it can)
// through FakeDoctorEnv, plus the pure helpers.
#include "tools/doctor/checks.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <fstream>
#include <set>

#include "lib/net/dns.h"
#include "tools/doctor/fake_doctor_env.h"
#include "tools/doctor/runner.h"

namespace fun::doctor {

void PrintTo(const CheckResult& r, std::ostream* os) {
  *os << CheckStatusName(r.status) << ": " << r.summary;
  for (const auto& d : r.detail) *os << "\n    " << d;
  if (!r.hint.empty()) *os << "\n    hint: " << r.hint;
}

namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

MATCHER_P(HasStatus, status, "") { return arg.status == status; }

class ChecksTest : public ::testing::Test {
 protected:
  void SetUp() override { Use(Os::kLinux); }

  // A fresh healthy fake host of that OS; the instance "default" runs.
  void Use(Os os, std::string arch = "x86_64") {
    env_ = std::make_unique<FakeDoctorEnv>();
    paths_ =
        ResolvePaths({.os = os, .home = "/home/u", .fun_home = "", .xdg_state_home = ""}).value();
    env_->MakeHealthy(paths_, "default");
    env_->host.arch = arch;
    env_->facts.arch = arch;
    if (os == Os::kMacos) {
      env_->host.version = "14.2.1";
      env_->facts = vm::HostFacts{.os = Os::kMacos, .arch = arch, .hvf_supported = true};
    }
  }

  CheckResult Probe(std::string_view id) {
    const Check* c = FindCheck(id);
    EXPECT_NE(c, nullptr) << id;
    if (c == nullptr) return {};
    DoctorContext ctx(*env_, paths_, "default");
    return c->probe(ctx);
  }

  // FUN0010 over a console.log holding `text`.
  CheckResult ProbeConsole(const std::string& text) {
    env_->AddFile(File(InstanceFileKind::kConsoleLog), text);
    return Probe("FUN0010");
  }

  vm::InstanceStatus& Inst() { return env_->instances["default"]; }
  InstanceConfig& Config() { return *Inst().config; }
  std::string Dir() const { return paths_.InstanceDir("default"); }
  std::string File(InstanceFileKind k) const { return paths_.InstanceFile("default", k); }
  // The instance as after a clean `fun-vmctl stop`.
  void StopInstance() {
    Inst().hostd = {};
    Inst().vm = {};
    Inst().phase = "stopped";
    Inst().state->phase = vm::Phase::kStopped;
    Inst().state->last_exit = vm::LastExit{.reason = "stopped by fun-vmctl stop", .at_ms = 5000};
    Inst().uptime_s.reset();
    env_->Remove(File(InstanceFileKind::kContainerdSock));
    env_->Remove(Dir() + "/qmp.sock");
  }
  void RemoveInstance() { env_->instances.erase("default"); }

  std::unique_ptr<FakeDoctorEnv> env_;
  Paths paths_;
};

// --- the catalog --------------------------------------------------------------------------

TEST_F(ChecksTest, CatalogIdsAreStableOrderedAndEachHasItsPage) {
  std::vector<std::string> ids;
  for (const Check& c : AllChecks()) {
    ids.push_back(c.id);
    EXPECT_EQ(c.doc, "docs/troubleshooting/" + c.id + ".md");
    EXPECT_FALSE(c.title.empty());
    EXPECT_FALSE(c.hint.empty()) << c.id;
    EXPECT_TRUE(c.probe) << c.id;
    std::ifstream page(std::string(FUN_SOURCE_DIR) + "/" + c.doc);
    EXPECT_TRUE(page.good()) << c.doc << " is missing";
  }
  EXPECT_THAT(ids, ElementsAre("FUN0001", "FUN0002", "FUN0003", "FUN0004", "FUN0005", "FUN0006",
                               "FUN0007", "FUN0008", "FUN0009", "FUN0010", "FUN0011", "FUN0012",
                               "FUN0013", "FUN0014", "FUN0015", "FUN0016", "FUN0017", "FUN0018",
                               "FUN0019", "FUN0020", "FUN0021"));
}

TEST_F(ChecksTest, FindCheckIsCaseInsensitiveAndNullForUnknownIds) {
  ASSERT_NE(FindCheck("fun0011"), nullptr);
  EXPECT_EQ(FindCheck("fun0011")->id, "FUN0011");
  EXPECT_EQ(FindCheck("FUN9999"), nullptr);
  EXPECT_EQ(FindCheck(""), nullptr);
}

TEST_F(ChecksTest, EveryCheckPassesOnAHealthyLinuxHost) {
  for (const Check& c : AllChecks()) {
    EXPECT_THAT(Probe(c.id), HasStatus(CheckStatus::kPass)) << c.id;
  }
}

TEST_F(ChecksTest, EveryCheckPassesOnAHealthyMac) {
  Use(Os::kMacos, "arm64");
  env_->programs.clear();
  env_->AddFile(env_->exe_dir + "/qemu-system-aarch64", "", 0755);
  env_->command_results[env_->exe_dir + "/qemu-system-aarch64"] =
      ProcessResult::Exited(0, "QEMU emulator version 8.2.0\n");
  for (const Check& c : AllChecks()) {
    EXPECT_THAT(Probe(c.id), HasStatus(CheckStatus::kPass)) << c.id;
  }
}

// --- FUN0001 hypervisor -------------------------------------------------------------------

TEST_F(ChecksTest, HypervisorPassesWithQemuInPathAndSaysItsVersion) {
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary,
            "/usr/bin/qemu-system-x86_64 (QEMU emulator version 7.2.9 (Debian "
            "1:7.2+dfsg-7+deb12u6))");
  ASSERT_EQ(env_->commands_run.size(), 1u);
  EXPECT_THAT(env_->commands_run[0].args, ElementsAre("--version"));
  EXPECT_EQ(env_->commands_run[0].timeout, kVersionTimeout);
}

TEST_F(ChecksTest, HypervisorFailsWhenQemuIsNotInPath) {
  env_->programs.clear();
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "qemu-system-x86_64 not found");
  EXPECT_THAT(r.detail, Contains(HasSubstr("looked for qemu-system-x86_64 in $PATH")));
  EXPECT_TRUE(env_->commands_run.empty());
}

TEST_F(ChecksTest, HypervisorFailsWhenQemuInPathIsNotExecutable) {
  env_->programs.clear();
  env_->program_errors["qemu-system-x86_64"] =
      PermissionDeniedError("qemu-system-x86_64 in PATH is not executable");
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("not executable"));
  EXPECT_THAT(r.hint, HasSubstr("chmod +x"));
}

TEST_F(ChecksTest, HypervisorFailsWhenQemuDoesNotRun) {
  env_->command_results["/usr/bin/qemu-system-x86_64"] = ProcessResult::Exited(
      127, "", "qemu-system-x86_64: error while loading shared libraries: libslirp.so.0\n");
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, AllOf(HasSubstr("exited with 127"), HasSubstr("libslirp.so.0")));
}

TEST_F(ChecksTest, HypervisorFailsWhenQemuCannotBeStarted) {
  env_->command_errors["/usr/bin/qemu-system-x86_64"] =
      PermissionDeniedError("starting /usr/bin/qemu-system-x86_64: Permission denied");
  EXPECT_THAT(Probe("FUN0001"), HasStatus(CheckStatus::kFail));
}

TEST_F(ChecksTest, HypervisorOnMacosQemuPrefersTheBundledBinary) {
  Use(Os::kMacos, "arm64");
  env_->AddFile("/opt/fun/bin/qemu-system-aarch64", "", 0755);
  env_->command_results["/opt/fun/bin/qemu-system-aarch64"] =
      ProcessResult::Exited(0, "QEMU emulator version 8.2.0\n");
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.summary, HasSubstr("/opt/fun/bin/qemu-system-aarch64 (QEMU emulator version"));
}

TEST_F(ChecksTest, HypervisorOnMacosQemuFallsBackToPathAndFailsWithoutIt) {
  Use(Os::kMacos, "x86_64");
  Config().backend = Backend::kQemu;
  env_->programs = {{"qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"}};
  env_->command_results["/usr/local/bin/qemu-system-x86_64"] = ProcessResult::Exited(0, "QEMU\n");
  EXPECT_THAT(Probe("FUN0001"), HasStatus(CheckStatus::kPass));
  env_->programs.clear();
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.detail, Contains(HasSubstr("/opt/fun/bin/qemu-system-x86_64 (bundled next to "
                                           "the tools): not there")));
}

TEST_F(ChecksTest, HypervisorOnMacosHyperkitFallsBackToUsrLocalBin) {
  Use(Os::kMacos, "x86_64");
  Config().backend = Backend::kHyperkit;
  env_->AddFile("/usr/local/bin/hyperkit", "", 0755, 0);
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "/usr/local/bin/hyperkit");
  EXPECT_TRUE(env_->commands_run.empty());  // hyperkit's version flag is not relied on
}

TEST_F(ChecksTest, HypervisorOnMacosHyperkitFailsWhenMissingOrNotExecutable) {
  Use(Os::kMacos, "x86_64");
  Config().backend = Backend::kHyperkit;
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "hyperkit not found");
  env_->AddFile("/opt/fun/bin/hyperkit", "", 0644);
  r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "/opt/fun/bin/hyperkit is not executable (file 0644)");
}

TEST_F(ChecksTest, HypervisorFailsForHyperkitOnLinuxAndSkipsForNative) {
  Config().backend = Backend::kHyperkit;
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "backend hyperkit does not run on linux");
  Config().backend = Backend::kNative;
  EXPECT_THAT(Probe("FUN0001"), HasStatus(CheckStatus::kSkip));
}

TEST_F(ChecksTest, HypervisorUsesTheDefaultsWhenTheInstanceDoesNotExist) {
  RemoveInstance();
  CheckResult r = Probe("FUN0001");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.detail, Contains(HasSubstr("does not exist yet: assuming the defaults")));
}

// --- FUN0002 accelerator ------------------------------------------------------------------

TEST_F(ChecksTest, AcceleratorPassesWithKvm) {
  CheckResult r = Probe("FUN0002");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "KVM: KVM is available");
  EXPECT_THAT(r.detail, Contains("the running VM uses kvm (KVM is available)"));
}

TEST_F(ChecksTest, AcceleratorWarnsOnTcgWithTheReason) {
  env_->facts.kvm_standard = false;
  env_->facts.kvm_pvm = true;
  CheckResult r = Probe("FUN0002");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_EQ(r.summary,
            "TCG: /dev/kvm is PVM (kvm_pvm loaded), which cannot boot a standard kernel: using "
            "TCG (software emulation, slow)");
  EXPECT_THAT(r.hint, HasSubstr("kvm_intel"));
  EXPECT_THAT(r.detail, Contains("kvm_intel/kvm_amd loaded: no; kvm_pvm loaded: yes"));
}

TEST_F(ChecksTest, AcceleratorWarnsWhenKvmCannotBeOpened) {
  env_->facts.dev_kvm_usable = false;
  env_->facts.dev_kvm_error = "Permission denied";
  CheckResult r = Probe("FUN0002");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_THAT(r.summary, HasSubstr("/dev/kvm cannot be opened: Permission denied"));
}

TEST_F(ChecksTest, AcceleratorFailsWhenTheConfigDemandsKvmThatIsNotThere) {
  Config().accel = Accel::kKvm;
  env_->facts.dev_kvm_exists = false;
  CheckResult r = Probe("FUN0002");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("accel kvm is set in config.json, but /dev/kvm is missing"));
}

TEST_F(ChecksTest, AcceleratorOnMacosPassesWithHvfAndWarnsWithout) {
  Use(Os::kMacos, "arm64");
  Inst().state->accel = "hvf";
  EXPECT_EQ(Probe("FUN0002").summary, "HVF: Hypervisor.framework is available");
  env_->facts.hvf_supported = false;
  CheckResult r = Probe("FUN0002");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_THAT(r.summary, HasSubstr("kern.hv_support is 0"));
}

TEST_F(ChecksTest, AcceleratorFailsForHyperkitWithoutHvf) {
  Use(Os::kMacos, "x86_64");
  Config().backend = Backend::kHyperkit;
  env_->facts.hvf_supported = false;
  CheckResult r = Probe("FUN0002");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("hyperkit needs HVF"));
}

// --- FUN0003 memory -----------------------------------------------------------------------

TEST_F(ChecksTest, MemoryPassesWarnsAndFailsAtTheThresholds) {
  CheckResult r = Probe("FUN0003");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "16.0 GB of RAM");
  env_->total_memory = 7'700'000'000ULL;  // an "8 GB" machine after the kernel's share
  EXPECT_THAT(Probe("FUN0003"), HasStatus(CheckStatus::kWarn));
  env_->total_memory = 4'100'000'000ULL;  // a "4 GB" machine passes the minimum
  EXPECT_THAT(Probe("FUN0003"), HasStatus(CheckStatus::kWarn));
  env_->total_memory = 3'000'000'000ULL;
  r = Probe("FUN0003");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "3.0 GB of RAM; at least 4.0 GB is needed");
}

TEST_F(ChecksTest, MemoryFailsWhenTheInstanceAsksForMoreThanTheHostHas) {
  env_->total_memory = 6'000'000'000ULL;
  Config().memory_mib = 8192;
  CheckResult r = Probe("FUN0003");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("is given 8192 MiB: more than the host has"));
}

TEST_F(ChecksTest, MemoryWarnsWhenItCannotBeRead) {
  env_->total_memory.reset();
  EXPECT_THAT(Probe("FUN0003"), HasStatus(CheckStatus::kWarn));
}

// --- FUN0004 disk -------------------------------------------------------------------------

TEST_F(ChecksTest, DiskPassesWithEnoughFreeSpace) {
  CheckResult r = Probe("FUN0004");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "100.0 GB free at /home/u/.local/state/fun");
}

TEST_F(ChecksTest, DiskFailsUnder10GB) {
  env_->free_disk = 5'000'000'000ULL;
  CheckResult r = Probe("FUN0004");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("5.0 GB free at /home/u/.local/state/fun; at least 10.0 GB"));
}

TEST_F(ChecksTest, DiskWarnsWhenTheDataDiskMayOutgrowTheFreeSpace) {
  env_->free_disk = 15'000'000'000ULL;  // disk_gib 20 = 21.5 GB
  CheckResult r = Probe("FUN0004");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_THAT(r.summary, HasSubstr("less than the instance's data disk may grow to (20 GiB)"));
  // What data.img already holds counts as used.
  env_->AddEntry(File(InstanceFileKind::kDataImage), {.type = FileType::kRegular,
                                                      .mode = 0600,
                                                      .owner = FakeDoctorEnv::kUid,
                                                      .size = 10ULL << 30});
  EXPECT_THAT(Probe("FUN0004"), HasStatus(CheckStatus::kPass));
}

TEST_F(ChecksTest, DiskMeasuresTheNearestExistingParentOfTheStateDir) {
  env_ = std::make_unique<FakeDoctorEnv>();
  env_->AddDir("/home/u");
  CheckResult r = Probe("FUN0004");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "100.0 GB free at /home/u");
  EXPECT_THAT(r.detail, ElementsAre("state dir /home/u/.local/state/fun does not exist yet; "
                                    "measured /home/u"));
}

// --- FUN0005 host OS ----------------------------------------------------------------------

TEST_F(ChecksTest, HostOsPassesOnLinuxX86AndWarnsOnOtherArchitectures) {
  CheckResult r = Probe("FUN0005");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "Linux 6.1.0-18-amd64 on x86_64");
  env_->host.arch = "aarch64";
  EXPECT_THAT(Probe("FUN0005"), HasStatus(CheckStatus::kWarn));
}

TEST_F(ChecksTest, HostOsOnMacosNeeds1014AndIntelOrAppleSilicon) {
  Use(Os::kMacos, "arm64");
  EXPECT_EQ(Probe("FUN0005").summary, "macOS 14.2.1 on arm64");
  env_->host.version = "10.14";
  EXPECT_THAT(Probe("FUN0005"), HasStatus(CheckStatus::kPass));
  env_->host.version = "10.13.6";
  CheckResult r = Probe("FUN0005");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("10.14 (Mojave) or later is needed"));
  env_->host.version = "";
  EXPECT_THAT(Probe("FUN0005"), HasStatus(CheckStatus::kFail));
  env_->host.version = "12.6";
  env_->host.arch = "i386";
  EXPECT_THAT(Probe("FUN0005"), HasStatus(CheckStatus::kFail));
}

TEST(ParseMacosVersion, AcceptsOneToThreeNumbers) {
  EXPECT_EQ(ParseMacosVersion("10.14.6").value(), (std::array<int, 3>{10, 14, 6}));
  EXPECT_EQ(ParseMacosVersion("11").value(), (std::array<int, 3>{11, 0, 0}));
  EXPECT_EQ(ParseMacosVersion("14.2").value(), (std::array<int, 3>{14, 2, 0}));
  for (const char* bad : {"", "x", "10.", "10..1", "10.14.6.1", "-1", "10.14b", " 10"}) {
    EXPECT_FALSE(ParseMacosVersion(bad).ok()) << bad;
  }
}

// --- FUN0006 image ------------------------------------------------------------------------

TEST_F(ChecksTest, ImagePassesWithTheFirstCompleteDirectory) {
  CheckResult r = Probe("FUN0006");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, paths_.ImageDir("0.1.0"));
}

TEST_F(ChecksTest, ImageFailsSayingWhereItLookedAndWhatWasMissing) {
  std::string first = env_->image_search_path[0];
  env_->Remove(first + "/fun-initrd.img");
  env_->AddFile(first + "/fun-kernel", "", 0644);  // empty: a failed build
  CheckResult r = Probe("FUN0006");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "no VM image in the 2 places searched");
  EXPECT_THAT(r.detail, ElementsAre(first + ": missing fun-kernel (empty), fun-initrd.img",
                                    "/opt/fun/bin/../linuxkit: does not exist"));
}

TEST_F(ChecksTest, ImageUsesALaterDirectoryWhenAnEarlierOneIsIncomplete) {
  std::string first = env_->image_search_path[0];
  env_->DenyAccess(first + "/fun-cmdline");
  std::string second = env_->image_search_path[1];
  env_->AddDir(second, 0755);
  for (const char* f : {"fun-kernel", "fun-initrd.img", "fun-cmdline"}) {
    env_->AddFile(second + "/" + f, "x", 0644);
  }
  CheckResult r = Probe("FUN0006");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, second);
  EXPECT_THAT(r.detail, Contains(first + ": missing fun-cmdline (unreadable)"));
}

TEST_F(ChecksTest, ImageNeedsTheSystemDiskItsCommandLineNames) {
  std::string first = env_->image_search_path[0];
  env_->AddFile(first + "/fun-cmdline", "console=ttyS0 fun.system=fun-system\n", 0644);
  CheckResult r = Probe("FUN0006");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(
      r.detail,
      Contains(first + ": missing fun-system.img (fun-cmdline says fun.system=fun-system)"));
  env_->AddFile(first + "/fun-system.img", std::string(4096, 's'), 0644);
  r = Probe("FUN0006");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.detail, Contains(HasSubstr("fun-system.img 4.1 kB")));
}

// --- FUN0007 permissions ------------------------------------------------------------------

TEST_F(ChecksTest, PermissionsPassFor0700Dir0600SecretAndSocket) {
  CheckResult r = Probe("FUN0007");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "default 0700, secret 0600, containerd.sock 0600, owned by you");
}

TEST_F(ChecksTest, PermissionsFailForAnOpenDirectoryWithTheChmodToRun) {
  env_->AddDir(Dir(), 0755);
  CheckResult r = Probe("FUN0007");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, Dir() + " has mode 0755, expected 0700");
  EXPECT_THAT(r.hint, HasSubstr("chmod 0700 " + Dir()));
}

TEST_F(ChecksTest, PermissionsFailForAReadableSecretAndAnOpenSocket) {
  env_->AddFile(Dir() + "/secret", "s", 0644);
  env_->AddSocket(File(InstanceFileKind::kContainerdSock), 0777);
  CheckResult r = Probe("FUN0007");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, Dir() + "/secret has mode 0644, expected 0600 (and 1 more)");
  EXPECT_THAT(r.detail,
              Contains(File(InstanceFileKind::kContainerdSock) + " has mode 0777, expected 0600"));
}

TEST_F(ChecksTest, PermissionsFailWhenAnotherUserOwnsTheDirectory) {
  env_->AddDir(Dir(), 0700, 0);
  CheckResult r = Probe("FUN0007");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, Dir() + " is owned by uid 0, not by you (uid 501)");
  EXPECT_EQ(r.hint,
            "take it back (it was made by another user, e.g. with sudo): `sudo chown -R "
            "\"$(id -un)\" " +
                Dir() + "`");
}

TEST_F(ChecksTest, PermissionsFailWhenTheDirectoryIsASymlink) {
  env_->AddEntry(Dir(), {.type = FileType::kSymlink, .mode = 0777, .owner = FakeDoctorEnv::kUid});
  CheckResult r = Probe("FUN0007");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, Dir() + " is a symlink, expected a directory");
}

TEST_F(ChecksTest, PermissionsWarnWithoutASecretAndPassWithoutASocket) {
  env_->Remove(File(InstanceFileKind::kContainerdSock));
  EXPECT_THAT(Probe("FUN0007"), HasStatus(CheckStatus::kPass));
  env_->Remove(Dir() + "/secret");
  CheckResult r = Probe("FUN0007");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_EQ(r.summary, "missing: " + Dir() + "/secret");
}

TEST_F(ChecksTest, PermissionsSkipWhenTheInstanceDoesNotExist) {
  env_->Remove(Dir());
  CheckResult r = Probe("FUN0007");
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
  EXPECT_THAT(r.summary, HasSubstr("instance default does not exist yet"));
}

TEST_F(ChecksTest, PermissionsFailWhenTheDirectoryCannotBeExamined) {
  env_->FailPath(Dir(), ErrnoError(EACCES, Dir()));
  EXPECT_THAT(Probe("FUN0007"), HasStatus(CheckStatus::kFail));
}

// --- FUN0008 stale ------------------------------------------------------------------------

TEST_F(ChecksTest, StalePassesWhileHostdServesTheSocketsAndAfterACleanStop) {
  CheckResult r = Probe("FUN0008");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.detail, Contains("containerd.sock: served by fun-hostd (pid 4242)"));
  StopInstance();
  EXPECT_THAT(Probe("FUN0008"), HasStatus(CheckStatus::kPass));
}

TEST_F(ChecksTest, StaleWarnsForDeadAndReusedPidsAndOrphanedSockets) {
  Inst().hostd = {
      .status = vm::PidStatus::kStale, .pid = 4242, .detail = "hostd.pid: process 4242 is gone"};
  Inst().vm = {.status = vm::PidStatus::kStale,
               .pid = 4243,
               .detail = "vm.pid: pid 4243 now belongs to another process"};
  Inst().phase = "crashed";
  CheckResult r = Probe("FUN0008");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_EQ(r.summary, "stale: hostd.pid, vm.pid, containerd.sock, qmp.sock");
  EXPECT_THAT(r.detail, Contains("vm.pid: stale (vm.pid: pid 4243 now belongs to another "
                                 "process)"));
  EXPECT_THAT(r.detail, Contains("qmp.sock: left behind, no fun-hostd serves it"));
  const Check* c = FindCheck("FUN0008");
  EXPECT_THAT(c->hint, HasSubstr("fun-vmctl stop {instance}"));
}

TEST_F(ChecksTest, StaleWarnsForACorruptPidFile) {
  StopInstance();
  Inst().hostd = {.status = vm::PidStatus::kCorrupt, .detail = "not a pid file"};
  EXPECT_EQ(Probe("FUN0008").summary, "stale: hostd.pid");
}

TEST_F(ChecksTest, StaleSkipsWhenTheInstanceDoesNotExist) {
  RemoveInstance();
  EXPECT_THAT(Probe("FUN0008"), HasStatus(CheckStatus::kSkip));
}

// --- FUN0009 running ----------------------------------------------------------------------

TEST_F(ChecksTest, RunningPassesWithBothPidsAliveAndOurs) {
  CheckResult r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "running (fun-hostd 4242, VM 4243), up 12 min, accel kvm");
}

TEST_F(ChecksTest, RunningWarnsWhenStoppedOrAbsentOrStarting) {
  StopInstance();
  CheckResult r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_EQ(r.summary, "stopped (last exit: stopped by fun-vmctl stop)");
  Inst().hostd = {.status = vm::PidStatus::kAlive, .pid = 7};
  Inst().phase = "starting";
  Inst().state->started_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    env_->sim_clock.Now().time_since_epoch())
                                    .count() -
                                30'000;  // started 30 s ago: still booting
  EXPECT_THAT(Probe("FUN0009"), HasStatus(CheckStatus::kWarn));
  RemoveInstance();
  r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_THAT(r.summary, HasSubstr("does not exist yet"));
}

TEST_F(ChecksTest, RunningFailsWhenCrashedWithTheRecordedReason) {
  Inst().hostd = {.status = vm::PidStatus::kStale, .pid = 4242};
  Inst().vm = {.status = vm::PidStatus::kStale, .pid = 4243};
  Inst().phase = "crashed";
  CheckResult r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "crashed: state.json says running but fun-hostd is gone: fun-hostd was killed (or "
            "the host rebooted) before it recorded why");
  Inst().state->last_exit =
      vm::LastExit{.reason = "qemu killed by signal 9 (SIGKILL)", .at_ms = 2000};
  r = Probe("FUN0009");
  EXPECT_THAT(r.summary, HasSubstr("fun-hostd is gone: qemu killed by signal 9 (SIGKILL)"));
  Inst().state->last_exit->at_ms = 10;  // from an earlier run: not this crash's reason
  r = Probe("FUN0009");
  EXPECT_THAT(r.summary, HasSubstr("before it recorded why"));
  EXPECT_THAT(r.detail, Contains(HasSubstr("from an earlier run: qemu killed by signal 9")));
}

TEST_F(ChecksTest, RunningFailsWhenTheVmDiedWhileHostdRecordedIt) {
  // fun-hostd saw QEMU die (killed, crashed) and recorded it: the instance is stopped, but not
  // because anyone asked.
  StopInstance();
  Inst().state->last_exit = vm::LastExit{
      .reason = "qemu killed by signal 9 (SIGKILL)", .signal = 9, .at_ms = 2000, .clean = false};
  CheckResult r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "the VM died: qemu killed by signal 9 (SIGKILL)");
  Inst().state->last_exit->clean = true;
  EXPECT_THAT(Probe("FUN0009"), HasStatus(CheckStatus::kWarn));
}

TEST_F(ChecksTest, RunningFailsWhenTheLastStartFailed) {
  StopInstance();
  Inst().phase = "failed";
  Inst().state->phase = vm::Phase::kFailed;
  Inst().state->error = "starting the hypervisor: qemu-system-x86_64: not found";
  CheckResult r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "the last start failed: starting the hypervisor: qemu-system-x86_64: not found");
}

TEST_F(ChecksTest, RunningFailsForAnOrphanedVmOrAVanishedVm) {
  Inst().hostd = {.status = vm::PidStatus::kStale, .pid = 4242};
  Inst().phase = "crashed";
  CheckResult r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("the VM (pid 4243) runs without its fun-hostd"));
  EXPECT_THAT(r.hint, HasSubstr("fun-vmctl stop {instance}"));
  Use(Os::kLinux);
  Inst().vm = {.status = vm::PidStatus::kStale, .pid = 4243};
  r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "fun-hostd runs but the VM process is gone");
}

// --- FUN0010 console ----------------------------------------------------------------------

TEST_F(ChecksTest, ConsolePassesAndShowsTheReadyMarker) {
  CheckResult r = Probe("FUN0010");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.summary, HasSubstr("no known errors in 3 lines"));
  EXPECT_THAT(r.detail, Contains("last boot: fun-init: containerd ready after 1.84 s"));
}

TEST_F(ChecksTest, ConsoleFailsOnAKernelPanicWithTheLine) {
  CheckResult r = ProbeConsole(
      "[    0.1] Linux version\n"
      "[    1.2] Run /init as init process\n"
      "[    1.3] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "console.log: kernel panic (1x)");
  EXPECT_THAT(r.detail, ElementsAre("console.log:3: [    1.3] Kernel panic - not syncing: "
                                    "Attempted to kill init! exitcode=0x0000000b"));
}

TEST_F(ChecksTest, ConsoleFailsOnEachKnownPatternWithItsOwnLabel) {
  CheckResult r = ProbeConsole(
      "[ 1.0] Kernel panic - not syncing: No working init found.\n"
      "[ 2.0] containerd invoked oom-killer: gfp_mask=0x100cca\n"
      "[ 2.1] Out of memory: Killed process 312 (containerd)\n"
      "modprobe: module virtio_blk not found in modules.dep\n"
      "insmod: ERROR: could not insert module 9p.ko: Unknown symbol\n"
      "fun-init: error: kernel module vsock did not load\n"
      "fun-init: error: cannot mount cgroup2 on /sys/fs/cgroup\n"
      "fun-init: containerd ready after 2.00 s\n");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "console.log: no init (1x), out of memory (1x), module load failure (3x), init "
            "error (1x)");
  EXPECT_EQ(r.detail.size(), 6u);
  EXPECT_THAT(r.hint, AllOf(HasSubstr("/init"), HasSubstr("memory_mib"),
                            HasSubstr("modules do not match")));
}

// Lines as the Debian 6.1 guest kernel prints them (a `tail /dev/zero` in a container).
constexpr char kOomTrigger[] =
    "[  101.2] tail invoked oom-killer: gfp_mask=0x140dca, order=0, "
    "oom_score_adj=0\n";
constexpr char kOomKillOfAContainer[] =
    "[  101.9] Out of memory: Killed process 1234 (tail) total-vm:1843200kB, anon-rss:1789000kB, "
    "file-rss:4kB, shmem-rss:0kB, UID:0 pgtables:3552kB oom_score_adj:0\n";

TEST_F(ChecksTest, ConsoleWarnsWhenTheOomKillerEndsAContainersProcess) {
  CheckResult r = ProbeConsole(std::string("fun-init: containerd ready after 3.10 s\n") +
                               kOomTrigger + kOomKillOfAContainer +
                               "[  102.0] Memory cgroup out of memory: Killed process 1300 (node) "
                               "total-vm:10kB, anon-rss:9kB, file-rss:0kB, shmem-rss:0kB, UID:1000 "
                               "pgtables:1kB oom_score_adj:0\n");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_EQ(r.summary, "console.log: process killed for memory (2x)");
  EXPECT_THAT(r.detail, ElementsAre(HasSubstr("Killed process 1234 (tail)"),
                                    HasSubstr("Killed process 1300 (node)")));
  EXPECT_THAT(r.hint, AllOf(HasSubstr("a container used more memory"), HasSubstr("--memory")));
}

TEST_F(ChecksTest, ConsoleFailsWhenTheOomKillerEndsOneOfTheVmsServices) {
  for (const char* victim :
       {"(containerd) total-vm:1kB, oom_score_adj:-999", "(fun-guestd) total-vm:1kB",
        "(fun-p9-relay) total-vm:1kB", "(containerd-shim) total-vm:1kB, oom_score_adj:-998",
        "(pause) total-vm:1kB, anon-rss:4kB, oom_score_adj:-998"}) {
    CheckResult r = ProbeConsole(std::string(kOomKillOfAContainer) +
                                 "[  102.5] Out of memory: Killed process 9 " + victim + "\n");
    EXPECT_THAT(r, HasStatus(CheckStatus::kFail)) << victim;
    EXPECT_EQ(r.summary, "console.log: process killed for memory (1x), out of memory (1x)")
        << victim;
    EXPECT_THAT(r.hint, HasSubstr("ended one of its own services")) << victim;
  }
}

TEST_F(ChecksTest, ConsoleShowsAtMostAFewLinesAndSanitizesThem) {
  std::string log;
  for (int i = 0; i < 30; ++i) log += "fun-init: error: \x1b[31mred\x1b[0m thing\r\n";
  CheckResult r = ProbeConsole(log);
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  ASSERT_EQ(r.detail.size(), kMaxConsoleLinesShown + 1);
  EXPECT_EQ(r.detail[0], "console.log:1: fun-init: error: ?[31mred?[0m thing");
  EXPECT_EQ(r.detail.back(), "... and 18 more matching lines");
}

TEST_F(ChecksTest, ConsoleScansOnlyTheEndOfAHugeLogAndSaysSo) {
  std::string log = "Kernel panic - early, out of the window\n";
  log += std::string(kConsoleScanBytes, 'x') + "\nfun-init: error: late\n";
  CheckResult r = ProbeConsole(log);
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "console.log: init error (1x)");
  EXPECT_THAT(r.detail[0], HasSubstr("scanned its last"));
}

TEST_F(ChecksTest, ConsoleSkipsBeforeTheFirstBootAndFailsWhenUnreadable) {
  env_->DenyAccess(File(InstanceFileKind::kConsoleLog));
  EXPECT_THAT(Probe("FUN0010"), HasStatus(CheckStatus::kFail));
  env_->Remove(File(InstanceFileKind::kConsoleLog));
  CheckResult r = Probe("FUN0010");
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
  EXPECT_THAT(r.summary, HasSubstr("the instance has not booted"));
  RemoveInstance();
  EXPECT_THAT(Probe("FUN0010"), HasStatus(CheckStatus::kSkip));
}

TEST(ScanConsole, MatchesPartsInOrderAndNumbersLines) {
  auto m = ScanConsole(
      "ok\nmodprobe: FATAL: Module 9p not found in directory\nnot found: "
      "modprobe: x\nlast");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].line, 2u);
  EXPECT_EQ(m[0].kind, "module load failure");
  EXPECT_THAT(ScanConsole(""), IsEmpty());
  EXPECT_THAT(ScanConsole("\n\n\n"), IsEmpty());
  EXPECT_EQ(ScanConsole("a\nb\nKernel panic").at(0).line, 3u);
}

// Lines from real broken boots of this project's image under QEMU (session 6): the kind says
// what went wrong, not just that the kernel panicked.
TEST(ScanConsole, NamesTheCauseOfRealBrokenBoots) {
  // --memory 256: the 93 MB initrd does not fit.
  auto m = ScanConsole(
      "[    3.020532] Initramfs unpacking failed: write error\n"
      "[    3.990657] Failed to execute /init (error -2)\n"
      "[    3.992777] Kernel panic - not syncing: No working init found.  Try passing init= "
      "option to kernel. See Linux Documentation/admin-guide/init.rst for guidance.\n");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].kind, "out of memory");
  EXPECT_THAT(m[0].hint, HasSubstr("--memory"));
  EXPECT_EQ(m[1].kind, "no init");
  // --memory 256 with a ~200 MB initrd (session 7): the kernel panics before any process runs.
  m = ScanConsole("[    1.527942] Kernel panic - not syncing: System is deadlocked on memory\n");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].kind, "out of memory");
  EXPECT_THAT(m[0].hint, HasSubstr("--memory"));
  // rdinit= naming a missing file.
  m = ScanConsole(
      "[    3.489146] Kernel panic - not syncing: VFS: Unable to mount root fs on "
      "unknown-block(0,0)\n");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].kind, "no init");
  EXPECT_EQ(ScanConsole("[    2.1] Kernel panic - not syncing: Requested init /x failed (error "
                        "-2).\n")
                .at(0)
                .kind,
            "no init");
  // Stalls and hung tasks.
  EXPECT_EQ(ScanConsole("[  125.5] watchdog: BUG: soft lockup - CPU#0 stuck for 108s! "
                        "[runc:[2:INIT]:1234]\n")
                .at(0)
                .kind,
            "CPU stall");
  EXPECT_EQ(
      ScanConsole("[ 80.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n").at(0).kind,
      "CPU stall");
  EXPECT_EQ(ScanConsole("[ 242.9] INFO: task containerd:612 blocked for more than 120 "
                        "seconds.\n")
                .at(0)
                .kind,
            "hung task");
}

TEST(SanitizeLine, ReplacesControlsCutsLongLinesAndKeepsUtf8Whole) {
  EXPECT_EQ(SanitizeLine("a\tb\x01\x7f\r"), "a b??");
  EXPECT_EQ(SanitizeLine(std::string(300, 'x'), 10), std::string(10, 'x') + "...");
  EXPECT_EQ(SanitizeLine("ab\xc3\xa9", 3), "ab...");  // é is not cut in half
  EXPECT_EQ(SanitizeLine("caf\xc3\xa9"), "caf\xc3\xa9");
}

// --- FUN0011 CRI --------------------------------------------------------------------------

TEST_F(ChecksTest, CriPassesWhenContainerdAnswersVersionInTime) {
  CheckResult r = Probe("FUN0011");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary,
            "containerd 1.6.20~ds1 answered CRI Version (v1) in 12 ms; RuntimeReady, NetworkReady");
  ASSERT_EQ(env_->cri_calls.size(), 1u);
  EXPECT_EQ(env_->cri_calls[0].first, File(InstanceFileKind::kContainerdSock));
  EXPECT_EQ(env_->cri_calls[0].second, std::chrono::milliseconds(1000));
}

TEST_F(ChecksTest, CriFailsWhenNothingAnswersOrTooLateOrWithoutCri) {
  env_->cri_version.reset();
  env_->cri_error = UnavailableError("failed to connect to all addresses");
  CheckResult r = Probe("FUN0011");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("failed to connect to all addresses"));
  EXPECT_THAT(r.detail, ElementsAre("UNAVAILABLE: failed to connect to all addresses"));
  env_->cri_error = DeadlineExceededError("Deadline Exceeded");
  EXPECT_THAT(Probe("FUN0011").summary, HasSubstr("no answer within 1000 ms"));
  env_->cri_error = Status(Code::kUnimplemented, "unknown service runtime.v1.RuntimeService");
  EXPECT_THAT(Probe("FUN0011").summary, HasSubstr("CRI plugin is not serving"));
}

TEST_F(ChecksTest, CriFailsWhenTheSocketIsMissingWhileRunning) {
  env_->Remove(File(InstanceFileKind::kContainerdSock));
  CheckResult r = Probe("FUN0011");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("is missing although fun-hostd runs"));
  EXPECT_TRUE(env_->cri_calls.empty());
}

TEST_F(ChecksTest, CriSkipsWithoutCallingWhenTheVmIsNotRunning) {
  StopInstance();
  CheckResult r = Probe("FUN0011");
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
  EXPECT_EQ(r.summary, "the VM is not running (stopped; see FUN0009)");
  EXPECT_TRUE(env_->cri_calls.empty());
  RemoveInstance();
  EXPECT_THAT(Probe("FUN0011"), HasStatus(CheckStatus::kSkip));
}

// --- FUN0012 logs -------------------------------------------------------------------------

TEST_F(ChecksTest, LogsPassAndSayWhereTheyAre) {
  env_->AddFile(File(InstanceFileKind::kConsoleLog) + ".1", "old boot\n");
  CheckResult r = Probe("FUN0012");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "console and fun-hostd logs in " + Dir());
  EXPECT_THAT(r.detail, Contains(HasSubstr("previous boot's console: " +
                                           File(InstanceFileKind::kConsoleLog) + ".1")));
}

TEST_F(ChecksTest, LogsWarnWhenMissingAndFailWhenUnreadable) {
  env_->Remove(File(InstanceFileKind::kHostdLog));
  CheckResult r = Probe("FUN0012");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_EQ(r.summary, "missing: " + File(InstanceFileKind::kHostdLog));
  env_->Remove(File(InstanceFileKind::kConsoleLog));
  EXPECT_EQ(Probe("FUN0012").summary, "no logs yet: the instance has not started");
  env_->AddFile(File(InstanceFileKind::kHostdLog), "x", 0200);
  r = Probe("FUN0012");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "cannot read " + File(InstanceFileKind::kHostdLog));
}

TEST_F(ChecksTest, LogsOnMacosIncludeTheLinuxkitLogCopy) {
  Use(Os::kMacos, "arm64");
  CheckResult r = Probe("FUN0012");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.detail, Contains(HasSubstr("console copy: /home/u/Library/Logs/Fun/linuxkit.log")));
  env_->Remove("/home/u/Library/Logs/Fun/linuxkit.log");
  r = Probe("FUN0012");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_THAT(r.hint, HasSubstr("~/Library/Logs/Fun"));
}

TEST_F(ChecksTest, LogsSkipWhenTheInstanceDoesNotExist) {
  RemoveInstance();
  EXPECT_THAT(Probe("FUN0012"), HasStatus(CheckStatus::kSkip));
}

// --- FUN0013 published ports, FUN0014 conflicts -----------------------------------------

vm::PublishState Row(Protocol protocol, std::string ip, uint16_t port, std::string target,
                     std::string owner, bool listening, std::string error = "",
                     bool auto_forward = false) {
  return {.want = {.host = {.protocol = protocol, .ip = std::move(ip), .port = port},
                   .target = std::move(target),
                   .owner = std::move(owner),
                   .auto_forward = auto_forward},
          .listening = listening,
          .error = std::move(error)};
}

class PortsTest : public ChecksTest {
 protected:
  void Publish(const std::vector<vm::PublishState>& table) {
    env_->AddFile(File(InstanceFileKind::kPortsJson), vm::PublishTableJson(table), 0600);
  }
  std::vector<std::string> Connected() const {
    std::vector<std::string> out;
    for (const auto& [addr, timeout] : env_->tcp_connects) out.push_back(addr);
    return out;
  }
};

TEST_F(PortsTest, NoPortsJsonMeansNothingIsPublished) {
  CheckResult r = Probe("FUN0013");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "no ports are published");
  r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "no ports are published");
  EXPECT_TRUE(env_->tcp_connects.empty());
  Publish({});
  EXPECT_EQ(Probe("FUN0013").summary, "no ports are published");
}

TEST_F(PortsTest, PublishedPortsPassListingEachRowAndProbingOnlyTcp) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", true),
           Row(Protocol::kUdp, "127.0.0.1", 5353, "10.88.0.6:53", "dns", true),
           Row(Protocol::kTcp, "0.0.0.0", 9090, "127.0.0.1:9090", "auto", true, "", true),
           Row(Protocol::kTcp, "::1", 8443, "10.88.0.5:443", "config", true)});
  CheckResult r = Probe("FUN0013");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "3 published TCP ports accept connections, 1 UDP not probed");
  EXPECT_THAT(r.detail, Contains("127.0.0.1:8080/tcp -> 10.88.0.5:80 (web)"));
  EXPECT_THAT(r.detail, Contains("0.0.0.0:9090/tcp -> 127.0.0.1:9090 (auto)"));
  EXPECT_THAT(r.detail, Contains(AllOf(HasSubstr("127.0.0.1:5353/udp -> 10.88.0.6:53 (dns)"),
                                       HasSubstr("UDP: not probed"))));
  // The wildcard is probed on loopback; every probe is bounded.
  EXPECT_THAT(Connected(), ElementsAre("127.0.0.1:8080", "127.0.0.1:9090", "[::1]:8443"));
  for (const auto& [addr, timeout] : env_->tcp_connects) EXPECT_EQ(timeout, kPortProbeTimeout);
}

TEST_F(PortsTest, PublishedPortsFailNamingEachRowThatRefuses) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", true),
           Row(Protocol::kTcp, "127.0.0.1", 8081, "10.88.0.7:80", "api", true),
           Row(Protocol::kTcp, "127.0.0.1", 8082, "10.88.0.8:80", "ok", true)});
  env_->tcp_errors["127.0.0.1:8080"] =
      UnavailableError("connecting to tcp:127.0.0.1:8080: Connection refused");
  env_->tcp_errors["127.0.0.1:8081"] = DeadlineExceededError("slow");
  CheckResult r = Probe("FUN0013");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "127.0.0.1:8080/tcp -> 10.88.0.5:80 (web) is listed as listening but refuses: "
            "connecting to tcp:127.0.0.1:8080: Connection refused (and 1 more)");
  EXPECT_THAT(r.detail, Contains("127.0.0.1:8081/tcp -> 10.88.0.7:80 (api) is listed as "
                                 "listening but refuses: no answer within 300 ms"));
  EXPECT_THAT(r.detail, Contains("127.0.0.1:8082/tcp -> 10.88.0.8:80 (ok)"));
}

TEST_F(PortsTest, PublishedPortsFailForRowsNotListeningForAnotherReason) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 80, "10.88.0.5:80", "web", false,
               "127.0.0.1:80/tcp needs privileges: a port below 1024 ..."),
           Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.6:80", "api", false,
               "127.0.0.1:8080/tcp is already in use on this host: stop what uses it")});
  CheckResult r = Probe("FUN0013");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "127.0.0.1:80/tcp -> 10.88.0.5:80 (web) is not listening: 127.0.0.1:80/tcp needs "
            "privileges: a port below 1024 ...");
  // The conflict is FUN0014's to report.
  EXPECT_THAT(r.detail, Contains(HasSubstr("127.0.0.1:8080/tcp -> 10.88.0.6:80 (api): not "
                                           "listening, the host port is taken (FUN0014)")));
  EXPECT_TRUE(env_->tcp_connects.empty());
}

TEST_F(PortsTest, PublishedPortsPassWhenTheOnlyProblemIsAConflict) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", true),
           Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.6:80", "api", false,
               "127.0.0.1:8080/tcp is published by web already")});
  CheckResult r = Probe("FUN0013");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "1 published TCP port accepts connections, 1 taken by others (FUN0014)");
}

TEST_F(PortsTest, PublishedPortProbesStopWhenTheirBudgetIsSpent) {
  std::vector<vm::PublishState> table;
  for (uint16_t p = 8000; p < 8005; ++p) {
    table.push_back(Row(Protocol::kTcp, "127.0.0.1", p, "10.88.0.5:80", "web", true));
    env_->tcp_errors[fmt::format("127.0.0.1:{}", p)] = DeadlineExceededError("slow");
  }
  Publish(table);
  CheckResult r = Probe("FUN0013");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  // 300 + 300 + 300 + the 100 ms left: the whole check stays within its budget.
  std::vector<std::chrono::milliseconds> timeouts;
  for (const auto& [addr, timeout] : env_->tcp_connects) timeouts.push_back(timeout);
  EXPECT_THAT(timeouts,
              ElementsAre(std::chrono::milliseconds(300), std::chrono::milliseconds(300),
                          std::chrono::milliseconds(300), std::chrono::milliseconds(100)));
  EXPECT_THAT(r.detail, Contains(HasSubstr("127.0.0.1:8004/tcp -> 10.88.0.5:80 (web): listed as "
                                           "listening, not probed (the 1000 ms budget is spent)")));
}

TEST_F(PortsTest, ADamagedPortsJsonFailsWithHowToRecover) {
  env_->AddFile(File(InstanceFileKind::kPortsJson), "{\"forwards\": [{\"protocol\": ", 0600);
  CheckResult r = Probe("FUN0013");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr(File(InstanceFileKind::kPortsJson) + " is damaged: "));
  EXPECT_THAT(r.hint, HasSubstr("fun-hostd rewrites ports.json within seconds"));
  EXPECT_THAT(r.hint, HasSubstr("`fun-vmctl stop {instance}` then `fun-vmctl start {instance}`"));
  r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
  EXPECT_THAT(r.summary, AllOf(HasSubstr("is damaged"), HasSubstr("(see FUN0013)")));
  // Valid JSON of the wrong shape is damaged too.
  env_->AddFile(File(InstanceFileKind::kPortsJson), "{\"forwards\": [{\"host_port\": \"x\"}]}");
  EXPECT_THAT(Probe("FUN0013").summary, HasSubstr("is damaged"));
}

TEST_F(PortsTest, AnUnreadablePortsJsonFailsPointingAtPermissions) {
  Publish({});
  env_->DenyAccess(File(InstanceFileKind::kPortsJson));
  CheckResult r = Probe("FUN0013");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("cannot read " + File(InstanceFileKind::kPortsJson)));
  EXPECT_THAT(r.hint, HasSubstr("FUN0007"));
}

TEST_F(PortsTest, PortChecksSkipWithoutProbingWhenTheVmIsNotRunning) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", true)});
  StopInstance();
  for (const char* id : {"FUN0013", "FUN0014"}) {
    CheckResult r = Probe(id);
    EXPECT_THAT(r, HasStatus(CheckStatus::kSkip)) << id;
    EXPECT_EQ(r.summary, "the VM is not running (stopped; see FUN0009)") << id;
  }
  RemoveInstance();
  EXPECT_THAT(Probe("FUN0013"), HasStatus(CheckStatus::kSkip));
  EXPECT_THAT(Probe("FUN0014"), HasStatus(CheckStatus::kSkip));
  EXPECT_TRUE(env_->tcp_connects.empty());
}

TEST_F(PortsTest, ConflictsPassWhenEveryRowListens) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", true),
           Row(Protocol::kTcp, "127.0.0.1", 80, "10.88.0.5:80", "web", false,
               "127.0.0.1:80/tcp needs privileges")});
  CheckResult r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "no conflicts among 2 published ports");
}

TEST_F(PortsTest, ConflictsFailForAPortInUseWithTheCommandThatShowsTheHolder) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "config", false,
               "127.0.0.1:8080/tcp is already in use on this host: stop what uses it")});
  CheckResult r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "host port taken: 127.0.0.1:8080/tcp (config)");
  EXPECT_THAT(r.detail, ElementsAre("127.0.0.1:8080/tcp wanted by config (-> 10.88.0.5:80): "
                                    "127.0.0.1:8080/tcp is already in use on this host: stop what "
                                    "uses it"));
  EXPECT_EQ(r.hint,
            "stop what holds port 8080 (see it with `ss -ltnp 'sport = :8080'`) or publish "
            "another host port");

  Use(Os::kMacos, "arm64");
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "config", false,
               "127.0.0.1:8080/tcp is already in use on this host"),
           Row(Protocol::kUdp, "127.0.0.1", 5353, "10.88.0.6:53", "dns", false,
               "127.0.0.1:5353/udp is already in use on this host")});
  r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "host ports taken: 127.0.0.1:8080/tcp (config), 127.0.0.1:5353/udp (dns)");
  EXPECT_THAT(r.hint, HasSubstr("`lsof -nP -iTCP:8080 -sTCP:LISTEN`"));
  EXPECT_THAT(r.hint, HasSubstr("`lsof -nP -iUDP:5353`"));
}

TEST_F(PortsTest, ConflictsFailWhenTwoPublicationsWantOnePort) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", true),
           Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.6:80", "api", false,
               "127.0.0.1:8080/tcp is published by web already")});
  CheckResult r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "host port taken: 127.0.0.1:8080/tcp (api)");
  EXPECT_THAT(r.detail, ElementsAre(HasSubstr("is published by web already")));
  EXPECT_EQ(r.hint, "two publications want 127.0.0.1:8080/tcp: publish another host port for api");
}

TEST_F(PortsTest, HostdsFreshTableWinsOverAnOldPortsJson) {
  // ports.json (an older round) says all is well; fun-hostd, asked now, knows the conflict.
  Publish({Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", true)});
  env_->hostd_port_table = std::vector<vm::PublishState>{
      Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", false,
          "127.0.0.1:8080/tcp is already in use on this host")};
  CheckResult r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "host port taken: 127.0.0.1:8080/tcp (web)");
}

TEST_F(PortsTest, ConflictsOfAutoForwardsOnlyWarn) {
  Publish({Row(Protocol::kTcp, "127.0.0.1", 3000, "127.0.0.1:3000", "auto", false,
               "127.0.0.1:3000/tcp is already in use on this host", true)});
  CheckResult r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_EQ(r.summary,
            "auto-forward not published, the host port is taken: 127.0.0.1:3000/tcp "
            "(auto)");
  EXPECT_THAT(r.detail, ElementsAre(HasSubstr("(auto-forward of 127.0.0.1:3000 in the VM)")));
  EXPECT_THAT(r.hint, HasSubstr("best effort"));
  // With a real conflict next to it, the check fails and counts the auto-forward aside.
  Publish({Row(Protocol::kTcp, "127.0.0.1", 3000, "127.0.0.1:3000", "auto", false,
               "127.0.0.1:3000/tcp is already in use on this host", true),
           Row(Protocol::kTcp, "127.0.0.1", 8080, "10.88.0.5:80", "web", false,
               "127.0.0.1:8080/tcp is already in use on this host")});
  r = Probe("FUN0014");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "host port taken: 127.0.0.1:8080/tcp (web) (and 1 auto-forward)");
}

// --- FUN0015 VM outbound ------------------------------------------------------------------

TEST_F(ChecksTest, OutboundPassesWhenTheVmReachesTheHost) {
  CheckResult r = Probe("FUN0015");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "the VM reached the host at 10.0.2.2:40000 in 4 ms");
  EXPECT_THAT(r.detail, Contains(HasSubstr("arrived at 127.0.0.1:40000")));
  ASSERT_EQ(env_->outbound_calls.size(), 1u);
  EXPECT_EQ(env_->outbound_calls[0].first, Dir());
  EXPECT_EQ(env_->outbound_calls[0].second, kOutboundTimeout);
}

TEST_F(ChecksTest, OutboundFailsSayingWhichStepBroke) {
  env_->outbound_error =
      UnavailableError("the guest agent dialing 10.0.2.2:40000: connect: Network is unreachable");
  CheckResult r = Probe("FUN0015");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "the VM did not reach the host: the guest agent dialing 10.0.2.2:40000: connect: "
            "Network is unreachable");
  EXPECT_THAT(r.hint, HasSubstr("10.0.2.2"));
  env_->outbound_error = DeadlineExceededError("no connection arrived");
  r = Probe("FUN0015");
  EXPECT_THAT(r.detail, Contains("DEADLINE_EXCEEDED after 1000 ms (limit 1000 ms)"));
}

TEST_F(ChecksTest, OutboundSkipsWithoutDialingWhenTheVmIsNotRunningOrThereIsNone) {
  StopInstance();
  CheckResult r = Probe("FUN0015");
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
  EXPECT_EQ(r.summary, "the VM is not running (stopped; see FUN0009)");
  EXPECT_TRUE(env_->outbound_calls.empty());
  Use(Os::kLinux);
  Config().backend = Backend::kNative;
  EXPECT_THAT(Probe("FUN0015"), HasStatus(CheckStatus::kSkip));
  RemoveInstance();
  EXPECT_THAT(Probe("FUN0015"), HasStatus(CheckStatus::kSkip));
  EXPECT_TRUE(env_->outbound_calls.empty());
}

// --- FUN0016 VM resolves names -------------------------------------------------------------

class DnsCheckTest : public ChecksTest {
 protected:
  // The check's probe with these options (the flags' defaults unless changed).
  CheckResult ProbeDns(DoctorOptions options = {}) {
    DoctorContext ctx(*env_, paths_, "default", std::move(options));
    return FindCheck("FUN0016")->probe(ctx);
  }
  // The fake nameserver answers with `rcode` and these addresses.
  void Answer(uint8_t rcode, std::vector<std::array<uint8_t, 4>> addresses, uint16_t flags = 0) {
    env_->dns_answer = [=](std::string_view q) {
      return FakeDnsAnswer(q, rcode, addresses, flags);
    };
  }
};

TEST_F(DnsCheckTest, PassesWhenTheVmsNameserverAnswersWithAnAddress) {
  CheckResult r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "deb.debian.org resolves to 151.101.2.132 (and 1 more) in 3 ms");
  EXPECT_THAT(r.detail,
              ElementsAre("the VM asked 10.0.2.3:53 (QEMU's DNS, which relays to the host's "
                          "resolver) for deb.debian.org A",
                          "an answer came in 3 ms", "NOERROR: 151.101.2.132, 151.101.66.132"));
  // The query: one A question for the name, sent to the VM's nameserver, twice at most.
  ASSERT_EQ(env_->dns_calls.size(), 1u);
  const auto& call = env_->dns_calls[0];
  EXPECT_EQ(call.instance_dir, Dir());
  EXPECT_EQ(call.server, "10.0.2.3:53");
  EXPECT_EQ(call.attempts, kDnsAttempts);
  EXPECT_EQ(call.attempt_timeout, kDnsAttemptTimeout);
  auto id = static_cast<uint16_t>(static_cast<uint8_t>(call.query[0]) << 8 |
                                  static_cast<uint8_t>(call.query[1]));
  EXPECT_EQ(call.query, dns::BuildQuery(id, "deb.debian.org", dns::kTypeA).value());
}

TEST_F(DnsCheckTest, AsksForTheNameAndServerItIsGiven) {
  env_->dns_sends = 2;
  CheckResult r = ProbeDns({.dns_name = "registry.example", .dns_server = "10.0.2.53:5353"});
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.summary, HasSubstr("registry.example resolves to 151.101.2.132"));
  EXPECT_THAT(r.detail, Contains("the VM asked 10.0.2.53:5353 (--dns-server) for "
                                 "registry.example A"));
  EXPECT_THAT(r.detail, Contains("an answer came in 3 ms (after 2 queries: the first went "
                                 "unanswered)"));
  ASSERT_EQ(env_->dns_calls.size(), 1u);
  EXPECT_EQ(env_->dns_calls[0].server, "10.0.2.53:5353");
}

TEST_F(DnsCheckTest, FailsNamingNxdomain) {
  Answer(dns::kRcodeNxDomain, {});
  CheckResult r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "10.0.2.3:53 says deb.debian.org does not exist (NXDOMAIN)");
  EXPECT_THAT(r.hint, AllOf(HasSubstr("getent hosts deb.debian.org"), HasSubstr("--dns-name"),
                            HasSubstr("split DNS")));
  // On a Mac the hint says how to look the name up there.
  Use(Os::kMacos, "arm64");
  Answer(dns::kRcodeNxDomain, {});
  EXPECT_THAT(ProbeDns().hint, HasSubstr("`dscacheutil -q host -a name deb.debian.org`"));
}

TEST_F(DnsCheckTest, FailsNamingServfailAndOtherCodes) {
  Answer(dns::kRcodeServFail, {});
  CheckResult r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "10.0.2.3:53 could not resolve deb.debian.org (SERVFAIL)");
  EXPECT_THAT(r.hint, HasSubstr("the host's resolver failed"));
  Answer(dns::kRcodeRefused, {});
  r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "10.0.2.3:53 answered REFUSED for deb.debian.org");
  Answer(9, {});
  EXPECT_EQ(ProbeDns().summary, "10.0.2.3:53 answered RCODE9 for deb.debian.org");
  // An error code wins over addresses that came with it.
  Answer(dns::kRcodeServFail, {{192, 0, 2, 1}});
  EXPECT_THAT(ProbeDns(), HasStatus(CheckStatus::kFail));
}

TEST_F(DnsCheckTest, FailsWhenTheNameHasNoAddressAndWarnsWhenTheAnswerWasCut) {
  Answer(dns::kRcodeNoError, {});
  CheckResult r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "deb.debian.org has no IPv4 address (NOERROR, no A record)");
  Answer(dns::kRcodeNoError, {}, /*TC*/ 0x0200);
  r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kWarn));
  EXPECT_THAT(r.summary, HasSubstr("was cut (TC) before any address"));
  // Cut, but with an address: that is an answer.
  Answer(dns::kRcodeNoError, {{192, 0, 2, 1}}, 0x0200);
  EXPECT_THAT(ProbeDns(), HasStatus(CheckStatus::kPass));
}

TEST_F(DnsCheckTest, FailsWithATimeoutWhenNoAnswerComes) {
  env_->dns_error =
      DeadlineExceededError("no answer from 10.0.2.3:53 within 2000 ms (2 queries sent)");
  CheckResult r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "no answer from the VM's nameserver: no answer from 10.0.2.3:53 within 2000 ms (2 "
            "queries sent)");
  EXPECT_THAT(r.detail, Contains("DEADLINE_EXCEEDED after 2000 ms (at most 2 queries, 1000 ms "
                                 "each)"));
  EXPECT_THAT(r.hint, AllOf(HasSubstr("QEMU's DNS relays to the host's resolver"),
                            HasSubstr("getent hosts deb.debian.org"),
                            HasSubstr("`fun-vmctl stop {instance}`")));
  // Another server than QEMU's: the hint is about that one.
  r = ProbeDns({.dns_server = "10.0.2.53:53"});
  EXPECT_THAT(r.hint, HasSubstr("nothing answers DNS at 10.0.2.53:53 in the VM"));
}

TEST_F(DnsCheckTest, FailsWhenTheAgentCannotAsk) {
  env_->dns_error =
      UnavailableError("the guest agent opening a UDP channel to 10.0.2.3:53: connection refused");
  CheckResult r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "the VM could not ask its nameserver: the guest agent opening a UDP channel to "
            "10.0.2.3:53: connection refused");
  EXPECT_THAT(r.hint, HasSubstr("FUN0011"));
}

TEST_F(DnsCheckTest, FailsOnAMalformedAnswer) {
  // Garbage with the query's id (the env passes on only answers with it).
  env_->dns_answer = [](std::string_view q) {
    return std::string(q.substr(0, 2)) + "\x81\x80garbage";
  };
  CheckResult r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "malformed DNS answer from 10.0.2.3:53: malformed DNS response: 11 bytes, shorter "
            "than a header (12)");
  EXPECT_THAT(r.hint, HasSubstr("not an answer to the query"));
  // A well-formed answer to another question is no answer either.
  env_->dns_answer = [](std::string_view q) {
    std::string other = dns::BuildQuery(0, "other.example", dns::kTypeA).value();
    other[0] = q[0];
    other[1] = q[1];
    return FakeDnsAnswer(other, 0, {{192, 0, 2, 1}});
  };
  r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("it answers other.example A, not deb.debian.org A"));
  // Names compare case-insensitively.
  env_->dns_answer = [](std::string_view q) {
    std::string lower(q);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    lower[0] = q[0];
    lower[1] = q[1];
    return FakeDnsAnswer(lower, 0, {{192, 0, 2, 1}});
  };
  EXPECT_THAT(ProbeDns({.dns_name = "DEB.debian.ORG"}), HasStatus(CheckStatus::kPass));
}

TEST_F(DnsCheckTest, SkipsWithoutAskingWhenTheVmIsNotRunningOrThereIsNone) {
  StopInstance();
  CheckResult r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
  EXPECT_EQ(r.summary, "the VM is not running (stopped; see FUN0009)");
  Use(Os::kLinux);
  Config().backend = Backend::kNative;
  r = ProbeDns();
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
  EXPECT_THAT(r.summary, HasSubstr("host's resolver"));
  RemoveInstance();
  EXPECT_THAT(ProbeDns(), HasStatus(CheckStatus::kSkip));
  EXPECT_TRUE(env_->dns_calls.empty());
}

// --- FUN0017 shares ------------------------------------------------------------------------

TEST_F(ChecksTest, SharesPassWhenEveryShareIsMountedAndAnswers) {
  CheckResult r = Probe("FUN0017");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "1 shared folder mounted and answering");
  EXPECT_THAT(r.detail, ElementsAre("/Users/me -> /Users/me: mounted, answering"));
  Config().shares.clear();
  EXPECT_EQ(Probe("FUN0017").summary, "no shared folders configured");
}

TEST_F(ChecksTest, SharesFailNamingTheShareAndWhy) {
  Config().shares.push_back(
      {.host_path = "/srv/data", .guest_path = "/data", .read_only = true, .tag = "data"});
  // Not in the guest's list: added to config.json after the VM started.
  CheckResult r = Probe("FUN0017");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "1 of 2 shared folders not usable in the VM: /srv/data -> /data: not known to the VM "
            "(added after it started?)");
  EXPECT_THAT(r.hint, HasSubstr("fun-vmctl restart {instance}"));
  // The mount failed in the guest.
  env_->ping.shares.push_back({.tag = "data",
                               .path = "/data",
                               .read_only = true,
                               .status = "failed",
                               .error = "mount -t 9p ...: No such device"});
  r = Probe("FUN0017");
  EXPECT_EQ(r.summary,
            "1 of 2 shared folders not usable in the VM: /srv/data -> /data: failed: mount -t 9p "
            "...: No such device");
  EXPECT_THAT(r.detail, Contains("/Users/me -> /Users/me: mounted, answering"));
  // Mounted, but the server does not answer.
  env_->ping.shares.back().status = "mounted";
  env_->ping.shares.back().probe_error = "statfs /data has not returned for 3.0 s";
  r = Probe("FUN0017");
  EXPECT_THAT(r.summary, HasSubstr("/srv/data -> /data: mounted but not answering: statfs /data "
                                   "has not returned for 3.0 s"));
  // Answering: passes, read-only said.
  env_->ping.shares.back().answering = true;
  r = Probe("FUN0017");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.detail, Contains("/srv/data -> /data: mounted read-only, answering"));
}

TEST_F(ChecksTest, SharesSkipWhenTheAgentDoesNotAnswerAndWithoutAVm) {
  env_->ping_error = UnavailableError("connect 127.0.0.1:7070: Connection refused");
  CheckResult r = Probe("FUN0017");
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
  EXPECT_THAT(r.summary, HasSubstr("FUN0018"));
  StopInstance();
  EXPECT_THAT(Probe("FUN0017"), HasStatus(CheckStatus::kSkip));
  Use(Os::kLinux);
  Config().backend = Backend::kNative;
  r = Probe("FUN0017");
  EXPECT_THAT(r, HasStatus(CheckStatus::kSkip));
}

// --- FUN0018 agent -----------------------------------------------------------------------------

TEST_F(ChecksTest, AgentPassesWithItsVersionAndFailsWhenItDoesNotAnswer) {
  CheckResult r = Probe("FUN0018");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "fun-guestd 0.1.0 answered in 2 ms");
  EXPECT_THAT(r.detail, Contains("containerd's socket in the VM: accepting"));
  env_->ping_error = DeadlineExceededError("agent ping: no answer within 3000 ms");
  r = Probe("FUN0018");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("no answer within 3000 ms"));
  EXPECT_THAT(FindCheck("FUN0018")->hint, HasSubstr("fun-vmctl restart {instance}"));
  StopInstance();
  EXPECT_THAT(Probe("FUN0018"), HasStatus(CheckStatus::kSkip));
  Config().backend = Backend::kNative;
  EXPECT_THAT(Probe("FUN0018").summary, HasSubstr("native"));
}

// The VM's network down (or fun-guestd gone): everything reached through the agent channel
// fails with it. The doctor names the channel once, and the checks behind it say where to look.
TEST_F(ChecksTest, ASilentAgentIsNamedOnceNotByEveryCheckBehindIt) {
  env_->ping_error = DeadlineExceededError("agent ping: no answer within 3000 ms");
  env_->cri_error = UnavailableError("the agent channel: connection reset");
  env_->cri_version.reset();
  env_->outbound_error = UnavailableError("connect 127.0.0.1:7070: Connection refused");
  env_->dns_error = UnavailableError("connect 127.0.0.1:7070: Connection refused");
  DoctorContext ctx(*env_, paths_, "default");
  std::vector<const Check*> all;
  for (const Check& c : AllChecks()) all.push_back(&c);
  Report report = RunChecks(ctx, all);
  std::vector<std::string> failed;
  for (const Finding& f : report.findings) {
    if (f.result.status == CheckStatus::kFail) failed.push_back(f.check->id);
  }
  EXPECT_THAT(failed, ElementsAre("FUN0018"));
  for (std::string_view id : {"FUN0011", "FUN0015", "FUN0016", "FUN0017", "FUN0019", "FUN0020"}) {
    CheckResult r = Probe(id);
    EXPECT_THAT(r, HasStatus(CheckStatus::kSkip)) << id;
    EXPECT_THAT(r.summary, HasSubstr("see FUN0018")) << id;
  }
  // containerd itself down while the agent answers is FUN0011's.
  env_->ping_error = OkStatus();
  EXPECT_THAT(Probe("FUN0011"), HasStatus(CheckStatus::kFail));
}

// --- FUN0019 clock -----------------------------------------------------------------------------

TEST_F(ChecksTest, ClockPassesInStepAndFailsWhenTheVmIsSecondsOff) {
  CheckResult r = Probe("FUN0019");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  env_->ping.guest_time_unix_ns += 30'000'000'000LL;
  r = Probe("FUN0019");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "the VM's clock is 30.0 s ahead of the host's");
  EXPECT_THAT(FindCheck("FUN0019")->hint, HasSubstr("--fix"));
  // Within the limit, the round trip's uncertainty included: still in step.
  env_->ping.guest_time_unix_ns = env_->ping.host_sent_unix_ns - 1'500'000'000LL;
  EXPECT_THAT(Probe("FUN0019"), HasStatus(CheckStatus::kPass));
}

TEST_F(ChecksTest, ClockSkipsForAnOlderGuestAndWithoutAnAgent) {
  env_->ping.guest_time_unix_ns = 0;
  EXPECT_THAT(Probe("FUN0019").summary, HasSubstr("does not report its clock"));
  env_->ping_error = UnavailableError("refused");
  EXPECT_THAT(Probe("FUN0019").summary, HasSubstr("FUN0018"));
}

// --- FUN0020 data disk -------------------------------------------------------------------------

TEST(ClassifyDataDiskTest, FailsBelowFivePercentOrOneGbAndWarnsBelowFifteenOrThree) {
  const uint64_t gb = 1'000'000'000ULL;
  EXPECT_EQ(ClassifyDataDisk(20 * gb, 10 * gb), CheckStatus::kPass);
  EXPECT_EQ(ClassifyDataDisk(20 * gb, 2 * gb), CheckStatus::kWarn);
  EXPECT_EQ(ClassifyDataDisk(20 * gb, gb / 2), CheckStatus::kFail);
  EXPECT_EQ(ClassifyDataDisk(200 * gb, 9 * gb), CheckStatus::kFail);   // 4.5%
  EXPECT_EQ(ClassifyDataDisk(200 * gb, 20 * gb), CheckStatus::kWarn);  // 10%
  EXPECT_EQ(ClassifyDataDisk(2 * gb, 2 * gb), CheckStatus::kWarn);     // all free, but < 3 GB
  EXPECT_EQ(ClassifyDataDisk(0, 0), CheckStatus::kFail);
}

TEST_F(ChecksTest, DataDiskPassesWarnsAndFailsWithTheSizes) {
  CheckResult r = Probe("FUN0020");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "16.1 GB free of 21.5 GB on the VM's data disk");
  env_->ping.data_disk->avail_bytes = 2ULL << 30;
  EXPECT_THAT(Probe("FUN0020"), HasStatus(CheckStatus::kWarn));
  env_->ping.data_disk->avail_bytes = 100ULL << 20;
  r = Probe("FUN0020");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "the VM's data disk is full: 104.9 MB free of 21.5 GB");
  EXPECT_THAT(FindCheck("FUN0020")->hint, HasSubstr("fun rmi"));
}

TEST_F(ChecksTest, DataDiskFailsWhenTheGuestCannotMeasureItAndSkipsForAnOlderGuest) {
  env_->ping.data_disk->error = "statvfs /var/lib/containerd: No such file or directory";
  CheckResult r = Probe("FUN0020");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("No such file or directory"));
  env_->ping.data_disk.reset();
  EXPECT_THAT(Probe("FUN0020"), HasStatus(CheckStatus::kSkip));
}

// --- FUN0021 privileges ------------------------------------------------------------------------

TEST_F(ChecksTest, PrivilegesPassForQemuWithKvmAndFailWhenDevKvmIsNotYours) {
  CheckResult r = Probe("FUN0021");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_THAT(r.summary, HasSubstr("/dev/kvm is yours to use"));
  env_->DenyAccess("/dev/kvm");
  r = Probe("FUN0021");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_THAT(r.summary, HasSubstr("/dev/kvm read-write"));
  EXPECT_THAT(r.hint, HasSubstr("usermod -aG kvm"));
}

TEST_F(ChecksTest, PrivilegesPassForTcgWithoutDevKvm) {
  env_->facts = vm::HostFacts{.os = Os::kLinux, .arch = "x86_64"};
  env_->Remove("/dev/kvm");
  CheckResult r = Probe("FUN0021");
  EXPECT_THAT(r, HasStatus(CheckStatus::kPass));
  EXPECT_EQ(r.summary, "QEMU runs as you: user-mode networking needs no privileges");
}

TEST_F(ChecksTest, PrivilegesForHyperkitWantSetuidRootOrRoot) {
  Use(Os::kMacos);
  Config().backend = Backend::kHyperkit;
  env_->AddFile("/usr/local/bin/hyperkit", "", 0755, 0);
  CheckResult r = Probe("FUN0021");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary,
            "/usr/local/bin/hyperkit is not setuid root: vmnet (the VM's network) "
            "needs root");
  EXPECT_EQ(r.hint,
            "`sudo chown root:wheel /usr/local/bin/hyperkit && sudo chmod u+s "
            "/usr/local/bin/hyperkit`");
  env_->AddFile("/usr/local/bin/hyperkit", "", 04755, 0);
  EXPECT_THAT(Probe("FUN0021"), HasStatus(CheckStatus::kPass));
  env_->AddFile("/usr/local/bin/hyperkit", "", 0755, 0);
  env_->uid = 0;
  EXPECT_THAT(Probe("FUN0021").summary, HasSubstr("running as root"));
  // The bundled one comes first.
  env_->uid = FakeDoctorEnv::kUid;
  env_->AddFile(env_->exe_dir + "/hyperkit", "", 04755, 0);
  EXPECT_THAT(Probe("FUN0021").summary, HasSubstr(env_->exe_dir + "/hyperkit is setuid root"));
}

// --- --fix ---------------------------------------------------------------------------------------

class FixTest : public ChecksTest {
 protected:
  // Runs every check, then the repairs; returns them.
  std::vector<FixOutcome> Fix() {
    DoctorContext ctx(*env_, paths_, "default");
    std::vector<const Check*> all;
    for (const Check& c : AllChecks()) all.push_back(&c);
    Report report = RunChecks(ctx, all);
    DoctorContext again(*env_, paths_, "default");
    return RunFixes(again, report);
  }
  static std::vector<std::string> Actions(const std::vector<FixOutcome>& fixes) {
    std::vector<std::string> a;
    for (const auto& f : fixes) {
      for (const auto& line : f.actions) a.push_back(f.check->id + ": " + line);
      if (!f.error.empty()) a.push_back(f.check->id + " error: " + f.error);
    }
    return a;
  }
};

TEST_F(FixTest, AHealthyInstanceHasNothingToFix) { EXPECT_THAT(Actions(Fix()), IsEmpty()); }

TEST_F(FixTest, ModesAreSetBackAndTheSecondRunDoesNothing) {
  env_->AddDir(Dir(), 0755);
  env_->AddFile(Dir() + "/secret", "s", 0644);
  EXPECT_THAT(Actions(Fix()), ElementsAre("FUN0007: chmod 0700 " + Dir() + " (was 0755)",
                                          "FUN0007: chmod 0600 " + Dir() + "/secret (was 0644)"));
  EXPECT_THAT(Probe("FUN0007"), HasStatus(CheckStatus::kPass));
  EXPECT_THAT(Actions(Fix()), IsEmpty());
}

TEST_F(FixTest, AFileOfAnotherUserIsLeftToSudo) {
  env_->AddFile(Dir() + "/secret", "s", 0644, 0);
  EXPECT_THAT(Actions(Fix()), IsEmpty());
  EXPECT_THAT(Probe("FUN0007"), HasStatus(CheckStatus::kFail));
}

TEST_F(FixTest, StalePidFilesAndSocketsGoAndNothingElse) {
  StopInstance();
  Inst().phase = "crashed";
  Inst().hostd = {.status = vm::PidStatus::kStale, .pid = 4242, .detail = "gone"};
  Inst().vm = {.status = vm::PidStatus::kCorrupt, .detail = "not a pid file"};
  env_->AddFile(File(InstanceFileKind::kHostdPid), "4242 100\n");
  env_->AddFile(File(InstanceFileKind::kVmPid), "garbage");
  env_->AddSocket(File(InstanceFileKind::kContainerdSock));
  env_->AddSocket(Dir() + "/p9.sock");
  EXPECT_THAT(Probe("FUN0008"), HasStatus(CheckStatus::kWarn));
  EXPECT_THAT(Actions(Fix()),
              ElementsAre("FUN0008: removed " + File(InstanceFileKind::kHostdPid),
                          "FUN0008: removed " + File(InstanceFileKind::kVmPid),
                          "FUN0008: removed " + File(InstanceFileKind::kContainerdSock),
                          "FUN0008: removed " + Dir() + "/p9.sock"));
  EXPECT_THAT(Probe("FUN0008"), HasStatus(CheckStatus::kPass));
  // The instance's own files stay.
  EXPECT_TRUE(env_->Stat(Dir() + "/secret").ok());
  EXPECT_TRUE(env_->Stat(File(InstanceFileKind::kConfig)).ok());
  EXPECT_TRUE(env_->Stat(File(InstanceFileKind::kConsoleLog)).ok());
  EXPECT_THAT(Actions(Fix()), IsEmpty());
}

TEST_F(FixTest, SocketsOfALiveHostdAreNeverTouched) {
  env_->AddSocket(Dir() + "/p9.sock");
  EXPECT_THAT(Actions(Fix()), IsEmpty());
  EXPECT_TRUE(env_->Stat(Dir() + "/p9.sock").ok());
}

TEST_F(FixTest, AVmWithoutItsHostdIsStoppedAndARunningOneNever) {
  EXPECT_THAT(Actions(Fix()), IsEmpty());
  EXPECT_THAT(env_->stops, IsEmpty());
  Inst().hostd = {.status = vm::PidStatus::kStale, .pid = 4242, .detail = "gone"};
  EXPECT_THAT(Probe("FUN0009"), HasStatus(CheckStatus::kFail));
  EXPECT_THAT(Actions(Fix()),
              Contains("FUN0009: stopped the VM (pid 4243) that ran without its fun-hostd; "
                       "`fun-vmctl start default` starts it again"));
  EXPECT_THAT(env_->stops, ElementsAre("default force"));
  EXPECT_THAT(Actions(Fix()), IsEmpty());
  EXPECT_EQ(env_->stops.size(), 1u);
}

TEST_F(FixTest, AStartStuckForTenMinutesIsStoppedButNotAYoungerOne) {
  Inst().phase = "starting";
  Inst().state->phase = vm::Phase::kStarting;
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             env_->sim_clock.Now().time_since_epoch())
                             .count();
  Inst().state->started_at_ms = now_ms - 9 * 60 * 1000;
  EXPECT_THAT(Probe("FUN0009"), HasStatus(CheckStatus::kWarn));
  EXPECT_THAT(Actions(Fix()), IsEmpty());
  EXPECT_THAT(env_->stops, IsEmpty());
  Inst().state->started_at_ms = now_ms - 11 * 60 * 1000;
  CheckResult r = Probe("FUN0009");
  EXPECT_THAT(r, HasStatus(CheckStatus::kFail));
  EXPECT_EQ(r.summary, "the start has not finished in 11 min (fun-hostd pid 4242)");
  EXPECT_THAT(Actions(Fix()), ElementsAre(HasSubstr("FUN0009: stopped a start stuck for 11 min")));
  EXPECT_THAT(env_->stops, ElementsAre("default force"));
}

TEST_F(FixTest, TheClockIsSetOnceAndAFailedSyncIsReported) {
  env_->ping.guest_time_unix_ns -= 3600'000'000'000LL;
  auto fixes = Fix();
  ASSERT_EQ(Actions(fixes).size(), 1u);
  EXPECT_THAT(Actions(fixes)[0], HasSubstr("FUN0019: set the VM's clock to the host's"));
  EXPECT_EQ(env_->sync_calls, 1);
  EXPECT_THAT(Probe("FUN0019"), HasStatus(CheckStatus::kPass));
  EXPECT_THAT(Actions(Fix()), IsEmpty());
  EXPECT_EQ(env_->sync_calls, 1);
  env_->ping.guest_time_unix_ns -= 3600'000'000'000LL;
  env_->sync_error = FailedPreconditionError("time sync: the guest refused (--no-timesync)");
  EXPECT_THAT(Actions(Fix()), ElementsAre(HasSubstr("FUN0019 error: time sync: the guest "
                                                    "refused")));
}

}  // namespace
}  // namespace fun::doctor
