// real_env_test.cc: smoke tests of RealDoctorEnv and of a whole fun-doctor run on this machine.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "lib/base/process.h"
#include "lib/base/socket.h"
#include "lib/net/agent_client.h"
#include "lib/net/dns.h"
#include "lib/vm/instance_state.h"
#include "lib/vm/pidfile.h"
#include "lib/vm/port_publisher.h"
#include "tools/doctor/checks.h"
#include "tools/doctor/doctor.h"
#include "tools/doctor/doctor_env.h"
#include "tools/doctor/fake_doctor_env.h"

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

#if defined(FUN_DOCTOR_HAVE_CONTAINERD_FIXTURE)
// A whole run against an instance that looks running: its pid files name this test process
// (alive and ours), its agent is the real fun-guestd, and its containerd.sock leads to a real
// containerd.
TEST_F(RealEnvWithGuestdTest, AWholeRunFindsARunningInstanceAndItsContainerd) {
  if (Status why = cri::testing::ContainerdFixture::CanRun(); !why.ok()) GTEST_SKIP() << why;
  auto ctd = cri::testing::ContainerdFixture::Create();
  ASSERT_TRUE(ctd.ok()) << ctd.status();
  PathsInput in = in_;
  ASSERT_EQ(::symlink((*ctd)->socket_path().c_str(), (inst_ + "/containerd.sock").c_str()), 0);
  ASSERT_EQ(::symlink((*ctd)->socket_path().c_str(), (dir_ + "/containerd.sock").c_str()), 0);

  // No CNI config yet: containerd answers, but CRI Status says NetworkReady false.
  {
    std::ostringstream out, err;
    int code = ::fun::doctor::Run({"--json", "--check", "FUN0011"}, in, env_, out, err);
    EXPECT_EQ(code, 1) << out.str() << err.str();
    nlohmann::json j = nlohmann::json::parse(out.str());
    ASSERT_EQ(j.size(), 1u);
    EXPECT_EQ(j[0]["status"], "fail") << j[0];
    EXPECT_THAT(j[0]["summary"].get<std::string>(), HasSubstr("network not ready")) << j[0];
  }
  // With a conflist, once the CRI plugin has loaded it, both conditions hold.
  ASSERT_TRUE((*ctd)->WriteCniConfig().ok());
  int code = 1;
  std::ostringstream out, err;
  std::chrono::steady_clock::duration took{};
  for (int i = 0; i < 200 && code != 0; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    out.str("");
    err.str("");
    auto t0 = std::chrono::steady_clock::now();
    code = ::fun::doctor::Run({"--json", "--check", "FUN0009", "--check", "FUN0011"}, in, env_, out,
                              err);
    took = std::chrono::steady_clock::now() - t0;
  }
  EXPECT_EQ(code, 0) << out.str() << err.str();
  EXPECT_LT(took, std::chrono::seconds(2));
  nlohmann::json j = nlohmann::json::parse(out.str());
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["status"], "pass") << j[0];
  EXPECT_EQ(j[1]["status"], "pass") << j[1];
  EXPECT_THAT(j[1]["summary"].get<std::string>(), HasSubstr("containerd "));
  EXPECT_THAT(j[1]["summary"].get<std::string>(), HasSubstr("RuntimeReady, NetworkReady"));
}
#endif

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

// --- FUN0016 through the real agent -------------------------------------------------------

// 127.0.0.1:PORT of a UDP socket.
std::string UdpAddress(int fd) {
  auto a = ParseSocketAddress(LocalAddress(fd).value()).value();
  return fmt::format("127.0.0.1:{}", a.port);
}

// A real DNS server on loopback: dnsmasq with names of its own and no upstream (ok.fun.test is
// 192.0.2.7; nx.fun.test and names under it do not exist; other names are REFUSED).
class Dnsmasq {
 public:
  // NotFound when dnsmasq is not installed (the tests skip then; ci/setup.sh installs
  // dnsmasq-base); any other error is a failure.
  static StatusOr<std::unique_ptr<Dnsmasq>> Start(const std::string& dir) {
    const char* path_env = std::getenv("PATH");  // NOLINT(concurrency-mt-unsafe)
    auto program = FindProgram(
        "dnsmasq", std::string(path_env != nullptr ? path_env : "") + ":/usr/sbin:/sbin");
    if (!program.ok()) {
      return program.status().WithContext("dnsmasq (the Debian package dnsmasq-base)");
    }
    const passwd* pw = ::getpwuid(::getuid());
    Status last;
    for (int attempt = 0; attempt < 5; ++attempt) {  // another process may take the port first
      auto probe = BindUdp(SocketAddress{.host = "127.0.0.1", .port = 0});
      if (!probe.ok()) return probe.status();
      std::string address = UdpAddress(probe->get());
      std::string port = address.substr(address.rfind(':') + 1);
      probe->reset();
      Command cmd{
          .program = *program,
          .args = {"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                   "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1", "--port=" + port,
                   "--pid-file=", "--log-facility=-", "--log-queries",
                   "--address=/ok.fun.test/192.0.2.7", "--server=/nx.fun.test/"},
          .capture_output = false};
      // As root it would switch to "nobody": stay who we are.
      if (pw != nullptr) cmd.args.push_back(std::string("--user=") + pw->pw_name);
      cmd.stderr_file = dir + "/dnsmasq.log";
      cmd.stdout_file = dir + "/dnsmasq.out";
      auto p = ProcessRunner::Default().Start(cmd);
      if (!p.ok()) return p.status();
      auto d = std::unique_ptr<Dnsmasq>(new Dnsmasq(std::move(*p), address));
      if (d->WaitUntilItAnswers()) return d;
      std::ifstream log(dir + "/dnsmasq.log");
      last = UnavailableError("dnsmasq did not answer on " + address + ": " +
                              std::string(std::istreambuf_iterator<char>(log), {}));
    }
    return last;
  }
  ~Dnsmasq() { (void)process_->Terminate(std::chrono::seconds(5)); }

  const std::string& address() const { return address_; }

 private:
  Dnsmasq(std::unique_ptr<Process> p, std::string address)
      : process_(std::move(p)), address_(std::move(address)) {}

  // Asks it directly (not through the agent) until it answers, it exits, or 5 s pass.
  bool WaitUntilItAnswers() {
    auto fd = BindUdp(SocketAddress{.host = "127.0.0.1", .port = 0});
    auto to = ParseSocketAddress("tcp:" + address_);
    if (!fd.ok() || !to.ok()) return false;
    SockAddr sa = ToSockAddr(*to).value();
    std::string q = dns::BuildQuery(1, "ok.fun.test", dns::kTypeA).value();
    for (int i = 0; i < 50 && process_->Running(); ++i) {
      ::sendto(fd->get(), q.data(), q.size(), 0, reinterpret_cast<const sockaddr*>(&sa.ss), sa.len);
      pollfd p{.fd = fd->get(), .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, 100) == 1) return true;
    }
    return false;
  }

  std::unique_ptr<Process> process_;
  std::string address_;
};

// A nameserver stand-in for what no real server does on purpose (answers with garbage, answers
// a later query only): a UDP socket on loopback and a thread that hands each query it receives
// (and its 1-based number) to `answer` and sends back what that returns, in order ("" sends
// nothing).
class ScriptedNameserver {
 public:
  using Answer = std::function<std::vector<std::string>(std::string_view query, int n)>;
  explicit ScriptedNameserver(Answer answer) : answer_(std::move(answer)) {
    fd_ = BindUdp(SocketAddress{.host = "127.0.0.1", .port = 0}).value();
    address_ = UdpAddress(fd_.get());
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedNameserver() {
    stop_ = true;
    thread_.join();
  }
  const std::string& address() const { return address_; }
  int queries() const { return queries_; }

 private:
  void Serve() {
    while (!stop_) {
      pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, 20) != 1) continue;
      char buf[2048];
      sockaddr_storage from{};
      socklen_t len = sizeof(from);
      ssize_t n =
          ::recvfrom(fd_.get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) continue;
      for (const std::string& reply :
           answer_(std::string_view(buf, static_cast<size_t>(n)), ++queries_)) {
        if (reply.empty()) continue;
        ::sendto(fd_.get(), reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
      }
    }
  }

  Answer answer_;
  UniqueFd fd_;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::atomic<int> queries_{0};
  std::thread thread_;
};

class RealDnsTest : public RealEnvWithGuestdTest {
 protected:
  // fun-doctor --check FUN0016 with these flags, on the instance whose agent is the real
  // fun-guestd; the one result.
  nlohmann::json RunFun0016(const std::string& name, const std::string& server, int* code) {
    std::ostringstream out, err;
    *code = ::fun::doctor::Run(
        {"--json", "--check", "FUN0016", "--dns-name", name, "--dns-server", server}, in_,
        loopback_env_, out, err);
    EXPECT_TRUE(err.str().empty()) << err.str();
    nlohmann::json j = nlohmann::json::parse(out.str());
    EXPECT_EQ(j.size(), 1u);
    return j[0];
  }
};

TEST_F(RealDnsTest, AnAnswerWithAnAddressFromARealServerPasses) {
  auto d = Dnsmasq::Start(dir_);
  if (d.status().code() == Code::kNotFound) GTEST_SKIP() << d.status();
  ASSERT_TRUE(d.ok()) << d.status();
  int code = -1;
  nlohmann::json r = RunFun0016("ok.fun.test", (*d)->address(), &code);
  EXPECT_EQ(code, 0) << r;
  EXPECT_EQ(r["status"], "pass") << r;
  EXPECT_THAT(r["summary"].get<std::string>(), HasSubstr("ok.fun.test resolves to 192.0.2.7 in "));
  EXPECT_THAT(r["detail"].dump(), HasSubstr("NOERROR: 192.0.2.7"));
}

TEST_F(RealDnsTest, NxdomainFromARealServerFailsNamingIt) {
  auto d = Dnsmasq::Start(dir_);
  if (d.status().code() == Code::kNotFound) GTEST_SKIP() << d.status();
  ASSERT_TRUE(d.ok()) << d.status();
  int code = -1;
  nlohmann::json r = RunFun0016("www.nx.fun.test", (*d)->address(), &code);
  EXPECT_EQ(code, 1) << r;
  EXPECT_EQ(r["status"], "fail") << r;
  EXPECT_EQ(r["summary"],
            fmt::format("{} says www.nx.fun.test does not exist (NXDOMAIN)", (*d)->address()));
  // A name it has no upstream for: the code is named too.
  r = RunFun0016("deb.debian.org", (*d)->address(), &code);
  EXPECT_EQ(r["summary"], fmt::format("{} answered REFUSED for deb.debian.org", (*d)->address()));
}

TEST_F(RealDnsTest, NoAnswerFailsWithATimeoutAfterOneRetry) {
  // A bound UDP socket nobody reads: the queries arrive and nothing ever answers.
  auto silent = BindUdp(SocketAddress{.host = "127.0.0.1", .port = 0});
  ASSERT_TRUE(silent.ok()) << silent.status();
  const std::string server = UdpAddress(silent->get());
  auto t0 = std::chrono::steady_clock::now();
  int code = -1;
  nlohmann::json r = RunFun0016("ok.fun.test", server, &code);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(code, 1) << r;
  EXPECT_EQ(r["status"], "fail") << r;
  EXPECT_THAT(r["summary"].get<std::string>(),
              HasSubstr(fmt::format("no answer from the VM's nameserver: no answer from {} within",
                                    server)));
  EXPECT_THAT(r["summary"].get<std::string>(), HasSubstr("(2 queries sent)"));
  EXPECT_THAT(r["detail"].dump(), HasSubstr("DEADLINE_EXCEEDED after"));
  EXPECT_THAT(r["hint"].get<std::string>(), HasSubstr("nothing answers DNS at " + server));
  EXPECT_GE(took, kDnsAttempts * kDnsAttemptTimeout);
  EXPECT_LT(took, kDnsAttempts * kDnsAttemptTimeout + std::chrono::milliseconds(800));
  // Both queries reached the socket.
  char buf[512];
  for (int i = 0; i < 2; ++i) {
    EXPECT_GT(::recv(silent->get(), buf, sizeof(buf), MSG_DONTWAIT), 12) << i;
  }
}

TEST_F(RealDnsTest, GarbageWithTheQueryIdFailsAsMalformed) {
  ScriptedNameserver ns([](std::string_view q, int) {
    return std::vector<std::string>{std::string(q.substr(0, 2)) + "\x81\x80garbage"};
  });
  int code = -1;
  nlohmann::json r = RunFun0016("ok.fun.test", ns.address(), &code);
  EXPECT_EQ(code, 1) << r;
  EXPECT_EQ(r["status"], "fail") << r;
  EXPECT_EQ(r["summary"], fmt::format("malformed DNS answer from {}: malformed DNS response: 11 "
                                      "bytes, shorter than a header (12)",
                                      ns.address()));
  EXPECT_EQ(ns.queries(), 1);
}

TEST_F(RealDnsTest, TheQueryIsSentAgainAndAnswersWithAnotherIdAreIgnored) {
  // The first query gets only an answer with another id; the second its own answer.
  ScriptedNameserver ns([](std::string_view q, int n) {
    std::string other(q);
    other[0] = static_cast<char>(~other[0]);
    if (n == 1) return std::vector<std::string>{FakeDnsAnswer(other, 0, {{192, 0, 2, 66}})};
    return std::vector<std::string>{FakeDnsAnswer(q, 0, {{192, 0, 2, 8}})};
  });
  int code = -1;
  nlohmann::json r = RunFun0016("ok.fun.test", ns.address(), &code);
  EXPECT_EQ(code, 0) << r;
  EXPECT_EQ(r["status"], "pass") << r;
  EXPECT_THAT(r["summary"].get<std::string>(), HasSubstr("ok.fun.test resolves to 192.0.2.8"));
  EXPECT_THAT(r["detail"].dump(), HasSubstr("after 2 queries: the first went unanswered"));
  EXPECT_EQ(ns.queries(), 2);
}

TEST_F(RealDnsTest, ExchangeSaysWhenTheAgentCannotOpenTheChannel) {
  // A wrong token: the agent refuses the kUdp request.
  ASSERT_EQ(::unlink((inst_ + "/secret").c_str()), 0);
  ASSERT_TRUE(agent::CreateTokenFile(inst_ + "/secret").ok());
  std::string q = dns::BuildQuery(7, "ok.fun.test", dns::kTypeA).value();
  auto x = loopback_env_.ExchangeVmDns(inst_, "default", "127.0.0.1:53", q, kDnsAttempts,
                                       kDnsAttemptTimeout);
  ASSERT_FALSE(x.ok());
  EXPECT_EQ(x.status().code(), Code::kPermissionDenied) << x.status();
  EXPECT_THAT(x.status().message(), HasSubstr("the guest agent opening a UDP channel to "
                                              "127.0.0.1:53"));
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
