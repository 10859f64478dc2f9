// real_env_test.cc: smoke tests of RealDoctorEnv and of a whole fun-doctor run on this machine.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lib/vm/instance_state.h"
#include "lib/vm/pidfile.h"
#include "tools/doctor/checks.h"
#include "tools/doctor/doctor.h"
#include "tools/doctor/doctor_env.h"

#if defined(FUN_DOCTOR_HAVE_CONTAINERD_FIXTURE)
#include "lib/cri/testing/containerd_fixture.h"
#endif

namespace fun::doctor {
namespace {

using ::testing::HasSubstr;

class RealEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/fun-doctor-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }  // NOLINT

  void Write(const std::string& path, const std::string& text, mode_t mode) {
    std::ofstream(path) << text;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
  }

  std::string dir_;
  RealDoctorEnv env_;
};

TEST_F(RealEnvTest, StatReportsTypeModeOwnerAndSizeWithoutFollowingSymlinks) {
  Write(dir_ + "/f", "hello", 0640);
  ASSERT_EQ(::symlink("f", (dir_ + "/l").c_str()), 0);
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::string sock = dir_ + "/s.sock";
  std::snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);

  auto f = env_.Stat(dir_ + "/f");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->type, FileType::kRegular);
  EXPECT_EQ(f->mode, 0640u);
  EXPECT_EQ(f->owner, ::getuid());
  EXPECT_EQ(f->size, 5u);
  EXPECT_EQ(env_.Stat(dir_ + "/l")->type, FileType::kSymlink);
  EXPECT_EQ(env_.Stat(sock)->type, FileType::kSocket);
  EXPECT_EQ(env_.Stat(dir_)->type, FileType::kDirectory);
  EXPECT_EQ(env_.Stat(dir_)->mode, 0700u);  // mkdtemp
  EXPECT_EQ(env_.Stat(dir_ + "/none").status().code(), Code::kNotFound);
  ::close(fd);
}

TEST_F(RealEnvTest, ReadFileTailReadsTheEndOfLongFilesAndProcFiles) {
  Write(dir_ + "/log", "0123456789abcdef", 0600);
  EXPECT_EQ(env_.ReadFileTail(dir_ + "/log", 4).value(), "cdef");
  EXPECT_EQ(env_.ReadFileTail(dir_ + "/log", 100).value(), "0123456789abcdef");
  EXPECT_EQ(env_.ReadFileTail(dir_ + "/none", 4).status().code(), Code::kNotFound);
  EXPECT_FALSE(env_.ReadFileTail(dir_, 4).ok());  // a directory
#if defined(__linux__)
  // /proc files say size 0: they are read from the start.
  EXPECT_THAT(env_.ReadFileTail("/proc/meminfo", 1 << 16).value(), HasSubstr("MemTotal:"));
#endif
}

TEST_F(RealEnvTest, HostFactsAreReadable) {
  auto mem = env_.TotalMemoryBytes();
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_GT(*mem, 100'000'000u);
  auto free = env_.FreeDiskBytes(dir_);
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_GT(*free, 0u);
  HostOs h = env_.GetHostOs();
  EXPECT_EQ(h.os, CurrentOs());
  EXPECT_FALSE(h.arch.empty());
  EXPECT_FALSE(h.version.empty());
  EXPECT_TRUE(env_.FindProgram("sh").ok());
  EXPECT_EQ(env_.FindProgram("fun-no-such-program").status().code(), Code::kNotFound);
  EXPECT_FALSE(env_.ExecutableDir().empty());
  Write(dir_ + "/a", "x", 0600);
  Write(dir_ + "/b", "x", 0600);
  EXPECT_EQ(env_.ListDir(dir_).value(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(RealEnvTest, CriVersionOnAMissingSocketFailsWithinTheDeadline) {
  auto t0 = std::chrono::steady_clock::now();
  auto v = env_.CriVersion(dir_ + "/containerd.sock", kCriDeadline);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(v.ok());
  EXPECT_TRUE(v.status().code() == Code::kUnavailable ||
              v.status().code() == Code::kDeadlineExceeded)
      << v.status();
  EXPECT_LT(took, kCriDeadline + std::chrono::milliseconds(500));
}

#if defined(FUN_DOCTOR_HAVE_CONTAINERD_FIXTURE)
TEST_F(RealEnvTest, CriVersionAnswersFromARealContainerd) {
  if (Status why = cri::testing::ContainerdFixture::CanRun(); !why.ok()) GTEST_SKIP() << why;
  auto ctd = cri::testing::ContainerdFixture::Create();
  ASSERT_TRUE(ctd.ok()) << ctd.status();
  auto v = env_.CriVersion((*ctd)->socket_path(), kCriDeadline);
  ASSERT_TRUE(v.ok()) << v.status() << "\n" << (*ctd)->LogTail();
  EXPECT_EQ(v->runtime_name, "containerd");
  EXPECT_EQ(v->runtime_api_version, "v1");
}

// A whole run against an instance that looks running: its pid files name this test process
// (alive and ours), and its containerd.sock leads to a real containerd.
TEST_F(RealEnvTest, AWholeRunFindsARunningInstanceAndItsContainerd) {
  if (Status why = cri::testing::ContainerdFixture::CanRun(); !why.ok()) GTEST_SKIP() << why;
  auto ctd = cri::testing::ContainerdFixture::Create();
  ASSERT_TRUE(ctd.ok()) << ctd.status();
  PathsInput in{.os = CurrentOs(), .home = dir_, .fun_home = dir_ + "/state", .xdg_state_home = ""};
  Paths paths = ResolvePaths(in).value();
  std::string inst = paths.InstanceDir("default");
  ASSERT_TRUE(MakeDirs(inst, 0700).ok());
  ASSERT_TRUE(vm::WritePidFile(inst + "/hostd.pid", ::getpid()).ok());
  ASSERT_TRUE(vm::WritePidFile(inst + "/vm.pid", ::getpid()).ok());
  ASSERT_TRUE(vm::SaveInstanceState(inst, {.phase = vm::Phase::kRunning, .accel = "tcg"}).ok());
  ASSERT_EQ(::symlink((*ctd)->socket_path().c_str(), (inst + "/containerd.sock").c_str()), 0);

  std::ostringstream out, err;
  auto t0 = std::chrono::steady_clock::now();
  int code = ::fun::doctor::Run({"--json", "--check", "FUN0009", "--check", "FUN0011"}, in, env_,
                                out, err);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(code, 0) << out.str() << err.str();
  EXPECT_LT(took, std::chrono::seconds(2));
  nlohmann::json j = nlohmann::json::parse(out.str());
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["status"], "pass") << j[0];
  EXPECT_EQ(j[1]["status"], "pass") << j[1];
  EXPECT_THAT(j[1]["summary"].get<std::string>(), HasSubstr("containerd "));
}
#endif

// A whole run on this machine, on an empty state dir: fast, and a real answer (0 or 1, never 2).
TEST_F(RealEnvTest, AWholeRunOnThisMachineIsFastAndParses) {
  PathsInput in{.os = CurrentOs(), .home = dir_, .fun_home = dir_ + "/state", .xdg_state_home = ""};
  std::ostringstream out, err;
  auto t0 = std::chrono::steady_clock::now();
  int code = ::fun::doctor::Run({"--json"}, in, env_, out, err);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(code == 0 || code == 1) << code << " " << err.str();
  EXPECT_LT(took, std::chrono::seconds(2));
  nlohmann::json j = nlohmann::json::parse(out.str());
  ASSERT_EQ(j.size(), AllChecks().size());
  EXPECT_EQ(j[8]["id"], "FUN0009");
  EXPECT_EQ(j[8]["status"], "warn");  // no instance in an empty state dir
  EXPECT_EQ(j[10]["status"], "skip");
}

}  // namespace
}  // namespace fun::doctor
