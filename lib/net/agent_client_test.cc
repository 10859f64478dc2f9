// The host end of the agent channel against the real guest end: the fun-guestd binary, started
// on loopback with a temp token and a stand-in "containerd" socket (an echo server).
#include "lib/net/agent_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "lib/base/accept_loop.h"
#include "lib/base/process.h"
#include "lib/net/splice.h"
#include "lib/vsock/packet.h"

namespace fun::agent {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class AgentClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/fun-agent-client-XXXXXX";
    dir_ = ::mkdtemp(tmpl.data());
    auto token = CreateTokenFile(dir_ + "/secret");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = *token;
    echo_ = std::move(*AcceptLoop::Create(
        *ParseSocketAddress("unix:" + dir_ + "/containerd.sock"), [](UniqueFd c, std::string) {
          char buf[65536];
          for (;;) {
            ssize_t n = ::read(c.get(), buf, sizeof(buf));
            if (n <= 0 || !WriteAll(c.get(), std::string_view(buf, static_cast<size_t>(n))).ok()) {
              return;
            }
          }
        }));
    echo_thread_ = std::thread([this] { (void)echo_->Run(); });
    // A free port for the agent.
    auto probe = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
    port_ = ParseSocketAddress(*LocalAddress(probe->get()))->port;
    probe->reset();
    std::ofstream(dir_ + "/shutdown.sh") << "#!/bin/sh\ntouch " << dir_ << "/shutdown-ran\n";
    ::chmod((dir_ + "/shutdown.sh").c_str(), 0755);
    Command cmd{.program = FUN_GUESTD_BINARY,
                .args = {"--listen", "tcp:127.0.0.1:" + std::to_string(port_), "--token-file",
                         dir_ + "/secret", "--containerd-socket", dir_ + "/containerd.sock",
                         "--shutdown-command", dir_ + "/shutdown.sh", "--no-timesync"},
                .capture_output = false};
    cmd.stderr_file = dir_ + "/guestd.log";
    auto p = ProcessRunner::Default().Start(cmd);
    ASSERT_TRUE(p.ok()) << p.status();
    guestd_ = std::move(*p);
    ep_ = {.address = *ParseSocketAddress("tcp:127.0.0.1:" + std::to_string(port_)),
           .token = token_};
    for (int i = 0; i < 200; ++i) {
      if (PingAgent(ep_, 1s).ok()) return;
      std::this_thread::sleep_for(20ms);
    }
    FAIL() << "fun-guestd did not answer";
  }
  void TearDown() override {
    if (guestd_) (void)guestd_->Terminate(5s);
    if (echo_) echo_->Stop();
    if (echo_thread_.joinable()) echo_thread_.join();
    echo_.reset();
    std::system(("rm -rf " + dir_).c_str());  // NOLINT
  }

  std::string dir_;
  Token token_{};
  uint16_t port_ = 0;
  AgentEndpoint ep_;
  std::unique_ptr<AcceptLoop> echo_;
  std::thread echo_thread_;
  std::unique_ptr<Process> guestd_;
};

TEST_F(AgentClientTest, PingReportsContainerd) {
  auto p = PingAgent(ep_, 2s);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->containerd_ready);
  EXPECT_GT(p->uptime_s, 0.0);
  // Its listener, the log, the ping's connection: a few fds, never none.
  EXPECT_GT(p->open_fds, 2);
  // Connections that come and go leave no fds behind. A count is a snapshot: connections the
  // host has just closed may not be closed in the agent yet (seen both ways in CI: 8 then 7,
  // 7 then 9), so the count must come back down to the first one, not be equal at once.
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(PingAgent(ep_, 2s).ok());
  int later = -1;
  for (int i = 0; i < 100; ++i) {
    auto again = PingAgent(ep_, 2s);
    ASSERT_TRUE(again.ok()) << again.status();
    later = again->open_fds;
    if (later <= p->open_fds) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_LE(later, p->open_fds) << "fun-guestd holds more fds after 50 pings than before";
}

TEST_F(AgentClientTest, PingCarriesTheGuestsClockAndDataDisk) {
  auto p = PingAgent(ep_, 2s);
  ASSERT_TRUE(p.ok()) << p.status();
  // The same clock on both ends here: the guest's time lies between the host's two stamps.
  EXPECT_GT(p->host_sent_unix_ns, 0);
  EXPECT_LE(p->host_sent_unix_ns, p->guest_time_unix_ns);
  EXPECT_LE(p->guest_time_unix_ns, p->host_received_unix_ns);
  // The default data dir (/var/lib/containerd) may or may not exist on this host: either the
  // sizes or why not.
  ASSERT_TRUE(p->data_disk.has_value()) << p->raw;
  EXPECT_EQ(p->data_disk->path, "/var/lib/containerd");
  if (p->data_disk->error.empty()) {
    EXPECT_GT(p->data_disk->total_bytes, 0u);
  } else {
    EXPECT_THAT(p->data_disk->error, HasSubstr("/var/lib/containerd"));
  }
}

TEST(ParseAgentPingTest, ReadsEveryFieldAndKeepsTheText) {
  const std::string json =
      R"({"version":"0.1.0","uptime_s":12.5,"containerd":true,"time_unix_ns":1767225600000000000,)"
      R"("open_fds":9,"shares":[{"tag":"home","path":"/home/u","status":"mounted",)"
      R"("answering":true,"read_only":true}],)"
      R"("data_disk":{"path":"/var/lib/containerd","total_bytes":1000,"avail_bytes":250,"error":""}})";
  auto p = ParseAgentPing(json);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->raw, json);
  EXPECT_EQ(p->version, "0.1.0");
  EXPECT_DOUBLE_EQ(p->uptime_s, 12.5);
  EXPECT_TRUE(p->containerd_ready);
  EXPECT_EQ(p->guest_time_unix_ns, 1767225600000000000);
  EXPECT_EQ(p->open_fds, 9);
  ASSERT_EQ(p->shares.size(), 1u);
  EXPECT_TRUE(p->shares[0].answering);
  EXPECT_TRUE(p->shares[0].read_only);
  ASSERT_TRUE(p->data_disk.has_value());
  EXPECT_EQ(p->data_disk->total_bytes, 1000u);
  EXPECT_EQ(p->data_disk->avail_bytes, 250u);
  EXPECT_EQ(p->data_disk->error, "");
}

TEST(ParseAgentPingTest, WrongTypesAreLeftAtTheirDefaults) {
  auto p = ParseAgentPing(R"({"containerd":"yes","time_unix_ns":"now","open_fds":1.5,"shares":{},)"
                          R"("data_disk":{"total_bytes":-1,"avail_bytes":5}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->containerd_ready);
  EXPECT_EQ(p->guest_time_unix_ns, 0);
  EXPECT_EQ(p->open_fds, -1);
  EXPECT_FALSE(p->reports_shares);
  ASSERT_TRUE(p->data_disk.has_value());
  EXPECT_EQ(p->data_disk->error, "the guest sent no sizes");
  // An older guest says nothing of its disk.
  auto old = ParseAgentPing(R"({"containerd":true})");
  ASSERT_TRUE(old.ok());
  EXPECT_FALSE(old->data_disk.has_value());
}

TEST(ParseAgentPingTest, SizesThatDoNotAddUpAreAnError) {
  auto p = ParseAgentPing(R"({"data_disk":{"total_bytes":10,"avail_bytes":11}})");
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(p->data_disk->error, HasSubstr("do not add up"));
}

TEST(ParseAgentPingTest, NotAJsonObjectIsDataLoss) {
  for (std::string_view bad : {"", "[1,2]", "{\"a\":", "\xff\xfe", "null"}) {
    auto p = ParseAgentPing(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), Code::kDataLoss) << bad;
  }
}

TEST(MeasureClockOffsetTest, OffsetFromTheMiddleOfTheRoundTripAndWhatLiesBeyondIt) {
  agent::AgentPing p;
  p.host_sent_unix_ns = 1'000'000'000;
  p.host_received_unix_ns = 1'400'000'000;  // a 400 ms round trip: +/- 200 ms
  p.guest_time_unix_ns = 1'200'000'000;
  ClockOffset d = MeasureClockOffset(p);
  EXPECT_EQ(d.offset_ns, 0);
  EXPECT_EQ(d.uncertainty_ns, 200'000'000);
  EXPECT_EQ(d.excess_ns, 0);
  p.guest_time_unix_ns = 1'200'000'000 - 5'000'000'000LL;  // 5 s behind
  d = MeasureClockOffset(p);
  EXPECT_EQ(d.offset_ns, -5'000'000'000LL);
  EXPECT_EQ(d.excess_ns, 4'800'000'000LL);
  // Stamps out of order (a host clock stepped back) count as no round trip.
  p.host_received_unix_ns = 0;
  EXPECT_EQ(MeasureClockOffset(p).uncertainty_ns, 0);
}

TEST_F(AgentClientTest, StepGuestClockSaysWhenTheGuestRefuses) {
  // This fun-guestd runs with --no-timesync (it would step the test machine's clock).
  auto r = StepGuestClock(ep_, -1'500'000'000LL, 5s);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("time sync"));
  EXPECT_THAT(r.status().message(), HasSubstr("turned off"));
}

TEST_F(AgentClientTest, ContainerdStreamIsRelayedByteForByte) {
  auto s = DialAgent(ep_, {.kind = Kind::kContainerd}, 2s);
  ASSERT_TRUE(s.ok()) << s.status();
  std::string payload(1 << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 31);
  std::thread writer([&] { ASSERT_TRUE(WriteAll(s->get(), payload).ok()); });
  std::string got(payload.size(), '\0');
  ASSERT_TRUE(ReadExactly(s->get(), got.data(), got.size()).ok());
  writer.join();
  EXPECT_TRUE(got == payload);
}

// A stand-in for hyperkit's virtio-sock `<dir>/connect` socket, as its contract goes (no Mac
// here to check it against): it reads the 18-byte line, connects the stream to the guest port
// it names (here: fun-guestd on loopback when the port is the agent's), and closes it when
// nothing listens there. It never replies.
TEST_F(AgentClientTest, ThroughHyperkitsVsockConnectSocket) {
  std::string connect = dir_ + "/connect";
  std::mutex mu;
  std::vector<std::string> lines;
  auto fake =
      AcceptLoop::Create(*ParseSocketAddress("unix:" + connect), [&](UniqueFd c, std::string) {
        std::string line(18, '\0');
        if (!ReadExactly(c.get(), line.data(), line.size()).ok()) return;
        {
          std::lock_guard lock(mu);
          lines.push_back(line);
        }
        if (line != vsock::ConnectLine(3, 7070)) return;  // no listener: closed
        auto guest = Connect(ep_.address);
        if (!guest.ok()) return;
        (void)net::Splice(c.get(), guest->get());
      });
  ASSERT_TRUE(fake.ok()) << fake.status();
  std::thread t([&] { (void)(*fake)->Run(); });

  AgentEndpoint hk{.address = *ParseSocketAddress("unix:" + connect),
                   .token = token_,
                   .vsock_connect_port = 7070};
  auto ping = PingAgent(hk, 5s);
  EXPECT_TRUE(ping.ok()) << ping.status();
  auto s = DialAgent(hk, {.kind = Kind::kContainerd}, 5s);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(WriteAll(s->get(), "through vsock").ok());
  std::string got(13, '\0');
  ASSERT_TRUE(ReadExactly(s->get(), got.data(), got.size()).ok());
  EXPECT_EQ(got, "through vsock");

  // A port nothing listens on: hyperkit closes the stream, the dial says so and names the port.
  hk.vsock_connect_port = 7071;
  auto refused = PingAgent(hk, 5s);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("vsock port 7071"));
  EXPECT_THAT(refused.status().message(), HasSubstr("closed the connection"));

  (*fake)->Stop();
  t.join();
  std::lock_guard lock(mu);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "00000003.00001b9e\n");
  EXPECT_EQ(lines[2], "00000003.00001b9f\n");
}

TEST_F(AgentClientTest, WrongTokenIsPermissionDenied) {
  AgentEndpoint bad = ep_;
  bad.token[0] ^= 1;
  auto s = DialAgent(bad, {.kind = Kind::kContainerd}, 2s);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kPermissionDenied);
  EXPECT_THAT(s.status().message(), HasSubstr("refused the token"));
}

TEST_F(AgentClientTest, ContainerdDownIsUnavailable) {
  echo_->Stop();
  echo_thread_.join();
  echo_.reset();  // removes the socket
  auto s = DialAgent(ep_, {.kind = Kind::kContainerd}, 2s);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kUnavailable);
  auto p = PingAgent(ep_, 2s);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->containerd_ready);
}

TEST_F(AgentClientTest, ShutdownRunsTheGuestCommand) {
  auto r = CallAgent(ep_, {.kind = Kind::kShutdown}, 2s);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, ReplyStatus::kOk);
  for (int i = 0; i < 250 && ::access((dir_ + "/shutdown-ran").c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(::access((dir_ + "/shutdown-ran").c_str(), F_OK), 0);
}

// The agent's own listener and a UDP socket of ours, from the real /proc/net.
TEST_F(AgentClientTest, ListGuestPortsSeesWhatListens) {
  UniqueFd udp(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  auto at = ToSockAddr(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_EQ(::bind(udp.get(), reinterpret_cast<const sockaddr*>(&at->ss), at->len), 0);
  const uint16_t udp_port = ParseSocketAddress(*LocalAddress(udp.get()))->port;
  bool truncated = true;
  auto ports = ListGuestPorts(ep_, 2s, &truncated);
  ASSERT_TRUE(ports.ok()) << ports.status();
  if (truncated) GTEST_SKIP() << "more sockets listen here than one report holds";
  EXPECT_THAT(*ports, ::testing::Contains(net::ListenPort{
                          .protocol = net::Protocol::kTcp, .address = "127.0.0.1", .port = port_}));
  EXPECT_THAT(*ports,
              ::testing::Contains(net::ListenPort{
                  .protocol = net::Protocol::kUdp, .address = "127.0.0.1", .port = udp_port}));
}

// One datagram each way through the binary; the test's own socket is the target.
TEST_F(AgentClientTest, UdpDatagramsRoundTrip) {
  UniqueFd target(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  auto at = ToSockAddr(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_EQ(::bind(target.get(), reinterpret_cast<const sockaddr*>(&at->ss), at->len), 0);
  auto s =
      DialAgent(ep_, {.kind = Kind::kUdp, .target = LocalAddress(target.get())->substr(4)}, 2s);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE(WriteAll(s->get(), *EncodeDatagram("question")).ok());
  char buf[64];
  sockaddr_storage from{};
  socklen_t from_len = sizeof(from);
  ssize_t n =
      ::recvfrom(target.get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &from_len);
  ASSERT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))), "question");
  ASSERT_EQ(::sendto(target.get(), "answer", 6, 0, reinterpret_cast<sockaddr*>(&from), from_len),
            6);
  std::string frame(8, '\0');
  ASSERT_TRUE(ReadExactly(s->get(), frame.data(), frame.size()).ok());
  EXPECT_EQ(frame, *EncodeDatagram("answer"));
}

TEST_F(AgentClientTest, NoAgentIsUnavailable) {
  (void)guestd_->Terminate(5s);
  auto p = PingAgent(ep_, 1s);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kUnavailable);
}

// What QEMU's port forward does when the VM's network is down: it accepts, and nothing answers.
TEST(AgentClientSilentTest, AnAcceptedButUnansweredPingIsANamedDeadline) {
  auto l = Listen(SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = 0});
  ASSERT_TRUE(l.ok()) << l.status();
  auto bound = ParseSocketAddress(LocalAddress(l->get()).value());
  ASSERT_TRUE(bound.ok());
  AgentEndpoint ep{.address = *bound, .token = Token{}};
  auto p = PingAgent(ep, 200ms);  // the kernel completes the handshake into the backlog
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kDeadlineExceeded) << p.status();
  EXPECT_THAT(p.status().message(), HasSubstr("no answer within 200 ms"));
}

// Two `fun-vmctl start` racing on a fresh instance both ensure the secret: each must end up
// with the one token that landed, never an error and never a partial file.
TEST(TokenFileTest, ConcurrentEnsureAgreesOnOneToken) {
  for (int round = 0; round < 20; ++round) {
    std::string path = "/tmp/fun-token-race-" + std::to_string(::getpid());
    ::unlink(path.c_str());
    constexpr int kProcs = 4;
    pid_t kids[kProcs];
    for (int i = 0; i < kProcs; ++i) {
      kids[i] = ::fork();
      if (kids[i] == 0) {
        auto t = EnsureTokenFile(path);
        auto back = ReadTokenFile(path);
        ::_exit(t.ok() && back.ok() && TokensEqual(*t, *back) ? 0 : 1);
      }
    }
    for (pid_t k : kids) {
      int st = 0;
      ASSERT_EQ(::waitpid(k, &st, 0), k);
      EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "round " << round;
    }
    ::unlink(path.c_str());
  }
}

TEST(TokenFileTest, CreateAndReadBackWithMode0600) {
  std::string path = "/tmp/fun-token-test-" + std::to_string(::getpid());
  auto t = CreateTokenFile(path);
  ASSERT_TRUE(t.ok());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = ReadTokenFile(path);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(TokensEqual(*t, *back));
  auto again = CreateTokenFile(path);  // never overwrites a secret
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().sys_errno(), EEXIST);
  auto ensured = EnsureTokenFile(path);
  ASSERT_TRUE(ensured.ok());
  EXPECT_TRUE(TokensEqual(*t, *ensured));
  std::ofstream(path, std::ios::app) << "x";
  EXPECT_THAT(ReadTokenFile(path).status().message(), HasSubstr("not exactly 32 bytes"));
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace fun::agent
