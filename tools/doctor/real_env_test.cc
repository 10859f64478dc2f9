// real_env_test.cc: smoke tests of RealDoctorEnv and of a whole fun-doctor run on this machine.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lib/base/process.h"
#include "lib/base/socket.h"
#include "lib/net/agent_client.h"
#include "lib/vm/instance_state.h"
#include "lib/vm/pidfile.h"
#include "lib/vm/port_publisher.h"
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

TEST_F(RealEnvTest, TcpConnectReachesARealListenerAndReportsARefusal) {
  auto l = Listen(SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = 0});
  ASSERT_TRUE(l.ok()) << l.status();
  auto bound = ParseSocketAddress(LocalAddress(l->get()).value());
  ASSERT_TRUE(bound.ok());
  Status s = env_.TcpConnect("127.0.0.1", bound->port, kPortProbeTimeout);
  EXPECT_TRUE(s.ok()) << s;
  l->reset();  // nothing listens there any more: refused at once on loopback
  s = env_.TcpConnect("127.0.0.1", bound->port, kPortProbeTimeout);
  EXPECT_EQ(s.code(), Code::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr(fmt::format("127.0.0.1:{}", bound->port)));
  EXPECT_EQ(env_.TcpConnect("not-an-ip", 80, kPortProbeTimeout).code(), Code::kInvalidArgument);
}

TEST_F(RealEnvTest, VmOutboundWithoutARecordedAgentPortFails) {
  auto r = env_.ProbeVmOutbound(dir_, "default", kOutboundTimeout);
  EXPECT_FALSE(r.ok());
}

#if defined(FUN_GUESTD_BINARY)
// The real fun-guestd, run natively on loopback as "the VM" of an instance that looks running.
// The host is 127.0.0.1 from where it runs, so the env is told that instead of 10.0.2.2.
class RealEnvWithGuestdTest : public RealEnvTest {
 protected:
  void SetUp() override {
    RealEnvTest::SetUp();
    in_ = {.os = CurrentOs(), .home = dir_, .fun_home = dir_ + "/state", .xdg_state_home = ""};
    paths_ = ResolvePaths(in_).value();
    inst_ = paths_.InstanceDir("default");
    ASSERT_TRUE(MakeDirs(inst_, 0700).ok());
    ASSERT_TRUE(MakeDirs(dir_ + "/proc-net", 0700).ok());
    for (const char* f : {"tcp", "tcp6", "udp", "udp6"}) Write(dir_ + "/proc-net/" + f, "", 0600);
    ASSERT_TRUE(agent::CreateTokenFile(inst_ + "/secret").ok());
    Command cmd{.program = FUN_GUESTD_BINARY,
                .args = {"--listen", "tcp:127.0.0.1:0", "--token-file", inst_ + "/secret",
                         "--containerd-socket", dir_ + "/containerd.sock", "--shutdown-command",
                         "/bin/true", "--no-timesync", "--proc-net-dir", dir_ + "/proc-net"},
                .capture_output = false};
    cmd.stdout_file = dir_ + "/guestd.out";
    cmd.stderr_file = dir_ + "/guestd.log";
    auto p = ProcessRunner::Default().Start(cmd);
    ASSERT_TRUE(p.ok()) << p.status();
    guestd_ = std::move(*p);
    // It prints "listening on tcp:127.0.0.1:PORT" once it accepts.
    const std::string prefix = "listening on tcp:127.0.0.1:";
    std::string out;
    for (int i = 0; i < 1000 && out.find('\n') == std::string::npos; ++i) {
      std::ifstream f(dir_ + "/guestd.out");
      out.assign(std::istreambuf_iterator<char>(f), {});
      if (out.find('\n') == std::string::npos) ::usleep(10'000);
    }
    ASSERT_EQ(out.rfind(prefix, 0), 0u) << out;
    auto port = static_cast<uint16_t>(std::stoi(out.substr(prefix.size())));
    ASSERT_TRUE(vm::WritePidFile(inst_ + "/hostd.pid", ::getpid()).ok());
    ASSERT_TRUE(vm::WritePidFile(inst_ + "/vm.pid", ::getpid()).ok());
    ASSERT_TRUE(vm::SaveInstanceState(
                    inst_, {.phase = vm::Phase::kRunning, .accel = "tcg", .agent_port = port})
                    .ok());
  }
  void TearDown() override {
    if (guestd_) (void)guestd_->Terminate(std::chrono::seconds(5));
    RealEnvTest::TearDown();
  }

  PathsInput in_;
  Paths paths_;
  std::string inst_;
  std::unique_ptr<Process> guestd_;
  RealDoctorEnv loopback_env_{"127.0.0.1"};
};

TEST_F(RealEnvWithGuestdTest, VmOutboundDialsTheHostThroughTheAgentAndExchangesBytes) {
  auto r = loopback_env_.ProbeVmOutbound(inst_, "default", kOutboundTimeout);
  ASSERT_TRUE(r.ok()) << r.status() << "\n" << dir_;
  EXPECT_EQ(r->target.rfind("127.0.0.1:", 0), 0u) << r->target;
  EXPECT_EQ(r->target, r->listener);
}

TEST_F(RealEnvWithGuestdTest, VmOutboundSaysWhenTheAgentCannotDial) {
  // A wrong token: the agent refuses before dialing anything.
  ASSERT_EQ(::unlink((inst_ + "/secret").c_str()), 0);
  ASSERT_TRUE(agent::CreateTokenFile(inst_ + "/secret").ok());
  auto r = loopback_env_.ProbeVmOutbound(inst_, "default", kOutboundTimeout);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kPermissionDenied) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr("the guest agent dialing 127.0.0.1:"));
}

// A whole run of the network checks against that instance: a published port that a real
// listener serves, and the outbound path through the real agent.
TEST_F(RealEnvWithGuestdTest, AWholeRunOfTheNetworkChecksPasses) {
  auto l = Listen(SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = 0});
  ASSERT_TRUE(l.ok()) << l.status();
  auto bound = ParseSocketAddress(LocalAddress(l->get()).value());
  ASSERT_TRUE(bound.ok());
  vm::PublishState row{.want = {.host = {.ip = "127.0.0.1", .port = bound->port},
                                .target = "10.88.0.5:80",
                                .owner = "web"},
                       .listening = true};
  Write(paths_.InstanceFile("default", InstanceFileKind::kPortsJson), vm::PublishTableJson({row}),
        0600);

  std::ostringstream out, err;
  int code = ::fun::doctor::Run(
      {"--json", "--check", "FUN0013", "--check", "FUN0014", "--check", "FUN0015"}, in_,
      loopback_env_, out, err);
  EXPECT_EQ(code, 0) << out.str() << err.str();
  nlohmann::json j = nlohmann::json::parse(out.str());
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["status"], "pass") << j[0];
  EXPECT_THAT(j[0]["detail"].dump(),
              HasSubstr(fmt::format("127.0.0.1:{}/tcp -> 10.88.0.5:80 (web)", bound->port)));
  EXPECT_EQ(j[1]["status"], "pass") << j[1];
  EXPECT_EQ(j[2]["status"], "pass") << j[2];
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
