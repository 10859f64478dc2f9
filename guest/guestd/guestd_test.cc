#include "guest/guestd/guestd.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "lib/base/log.h"
#include "lib/base/socket.h"
#include "lib/base/version.h"
#include "lib/net/listen_ports.h"

namespace fun::guestd {
namespace {

using agent::Kind;
using agent::ReplyStatus;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "guestd_test.XXXXXX").string();
    char* p = ::mkdtemp(tmpl.data());
    EXPECT_NE(p, nullptr);
    path_ = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string Join(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, std::string_view data, mode_t mode = 0600) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
  f.close();
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

agent::Token MakeToken(uint8_t seed) {
  agent::Token t;
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<uint8_t>(seed * 31 + i);
  return t;
}

std::string Payload(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(size, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Reads until EOF or an error (a reset); *err gets the errno of an error.
std::string ReadToEnd(int fd, int* err = nullptr) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && err != nullptr) *err = errno;
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// Echoes every connection's bytes back until EOF, then half-closes: a stand-in for containerd
// (on a unix socket) and for a container's TCP port.
class EchoServer {
 public:
  explicit EchoServer(const std::string& spec) {
    auto l = Listen(*ParseSocketAddress(spec));
    EXPECT_TRUE(l.ok()) << l.status();
    listener_ = std::move(*l);
    address_ = *LocalAddress(listener_.get());
    stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { Loop(); });
  }
  ~EchoServer() {
    uint64_t one = 1;
    EXPECT_EQ(::write(stop_.get(), &one, sizeof(one)), 8);
    thread_.join();
    for (auto& t : connections_) t.join();
  }
  const std::string& address() const { return address_; }

 private:
  void Loop() {
    for (;;) {
      pollfd p[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents != 0) return;
      auto c = Accept(listener_.get());
      if (!c.ok()) continue;
      connections_.emplace_back([this, fd = std::move(*c)] { Echo(fd.get()); });
    }
  }
  void Echo(int fd) {
    char buf[65536];
    for (;;) {
      pollfd p[2] = {{fd, POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents != 0) return;
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::shutdown(fd, SHUT_WR);
        return;
      }
      if (!WriteAll(fd, std::string_view(buf, static_cast<size_t>(n))).ok()) return;
    }
  }

  UniqueFd listener_, stop_;
  std::string address_;
  std::thread thread_;
  std::vector<std::thread> connections_;  // touched by thread_ only, until it is joined
};

// Echoes every datagram back to its sender: a stand-in for a container's UDP service.
class UdpEchoServer {
 public:
  // `host` is "127.0.0.1" or "::1"; port 0 picks a free port. ok() is false when the address
  // cannot be bound (no IPv6 on this machine's loopback).
  explicit UdpEchoServer(const std::string& host, uint16_t port = 0) {
    auto sa = ToSockAddr({.kind = SocketAddress::Kind::kTcp, .host = host, .port = port});
    EXPECT_TRUE(sa.ok()) << sa.status();
    fd_ = UniqueFd(::socket(sa->ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&sa->ss), sa->len) != 0) {
      error_ = std::strerror(errno);
      return;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len);
    port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    target_ = host.find(':') == std::string::npos ? fmt::format("{}:{}", host, port_)
                                                  : fmt::format("[{}]:{}", host, port_);
    stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { Loop(); });
  }
  ~UdpEchoServer() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    EXPECT_EQ(::write(stop_.get(), &one, sizeof(one)), 8);
    thread_.join();
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  uint16_t port() const { return port_; }
  // The agent's target: "127.0.0.1:PORT" or "[::1]:PORT".
  const std::string& target() const { return target_; }

 private:
  void Loop() {
    std::vector<char> buf(65536);
    for (;;) {
      pollfd p[2] = {{fd_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      if (::poll(p, 2, -1) < 0) continue;
      if (p[1].revents != 0) return;
      sockaddr_storage from{};
      socklen_t len = sizeof(from);
      ssize_t n = ::recvfrom(fd_.get(), buf.data(), buf.size(), 0,
                             reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      ::sendto(fd_.get(), buf.data(), static_cast<size_t>(n), 0,
               reinterpret_cast<const sockaddr*>(&from), len);
    }
  }

  UniqueFd fd_, stop_;
  std::string error_;
  uint16_t port_ = 0;
  std::string target_;
  std::thread thread_;
};

// The real system, except that the clock is fixed and setting it is recorded.
class TestSystem : public LinuxGuestSystem {
 public:
  static Clock::WallTime Fixed() {
    return Clock::WallTime(std::chrono::seconds(1767225600));  // 2026-01-01T00:00:00Z
  }
  Clock::WallTime Now() override { return Fixed(); }
  Status StepWallClock(std::chrono::nanoseconds delta) override {
    std::lock_guard lock(mu_);
    set_.push_back(delta);
    return OkStatus();
  }
  std::vector<std::chrono::nanoseconds> set() {
    std::lock_guard lock(mu_);
    return set_;
  }

 private:
  std::mutex mu_;
  std::vector<std::chrono::nanoseconds> set_;
};

class GuestdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    token_ = MakeToken(7);
    containerd_ = std::make_unique<EchoServer>("unix:" + dir_.Join("containerd.sock"));
    options_.listen = {"tcp:127.0.0.1:0"};
    options_.containerd_socket = dir_.Join("containerd.sock");
    options_.shutdown_command = dir_.Join("poweroff");
    log::Default().SetStderrLevel(log::Level::kInfo);
    log::Default().SetStderrSink([this](std::string_view line) {
      std::lock_guard lock(log_mu_);
      log_ += line;
    });
  }
  void TearDown() override {
    StopAgent();
    log::Default().SetStderrSink({});
    log::Default().SetStderrLevel(log::Level::kWarning);
  }

  void StartAgent() {
    auto a = Agent::Create(options_, token_, system_);
    ASSERT_TRUE(a.ok()) << a.status();
    agent_ = std::move(*a);
    address_ = *ParseSocketAddress(agent_->addresses().at(0));
    run_ = std::thread([this] { run_result_ = agent_->Run(); });
  }
  // Run returns once every connection has ended (and logged its line).
  void StopAgent() {
    if (!agent_) return;
    agent_->Stop();
    run_.join();
    EXPECT_TRUE(run_result_.ok()) << run_result_;
    agent_.reset();
  }
  std::string Logs() {
    std::lock_guard lock(log_mu_);
    return log_;
  }

  UniqueFd Dial() {
    auto c = Connect(address_);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : UniqueFd();
  }
  agent::Request Req(Kind kind, std::string target = "", uint64_t arg = 0) {
    return {.token = token_, .kind = kind, .arg = arg, .target = std::move(target)};
  }
  static void Send(int fd, const agent::Request& r, std::string_view then = "") {
    auto wire = agent::EncodeRequest(r);
    ASSERT_TRUE(wire.ok());
    ASSERT_TRUE(WriteAll(fd, *wire + std::string(then)).ok());
  }
  // Byte by byte, so nothing after the reply is consumed.
  static StatusOr<agent::Reply> ReadReply(int fd) {
    std::string buf;
    for (;;) {
      FUN_ASSIGN_OR_RETURN(auto got, agent::DecodeReply(buf));
      if (got) return std::move(got->first);
      char c;
      FUN_RETURN_IF_ERROR(ReadExactly(fd, &c, 1));
      buf.push_back(c);
    }
  }
  // A kUdp channel to `target` that got its kOk; `then` goes in the request's write.
  UniqueFd OpenUdp(const std::string& target, std::string_view then = "") {
    UniqueFd c = Dial();
    Send(c.get(), Req(Kind::kUdp, target), then);
    auto reply = ReadReply(c.get());
    EXPECT_TRUE(reply.ok()) << reply.status();
    if (reply.ok()) {
      EXPECT_EQ(reply->status, ReplyStatus::kOk) << reply->message;
    }
    return c;
  }
  static std::string Frame(std::string_view payload) {
    auto f = agent::EncodeDatagram(payload);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *f : "";
  }
  static StatusOr<std::string> ReadDatagram(int fd) {
    char len[2];
    FUN_RETURN_IF_ERROR(ReadExactly(fd, len, 2));
    std::string p(
        static_cast<uint8_t>(len[0]) | (static_cast<size_t>(static_cast<uint8_t>(len[1])) << 8),
        '\0');
    if (!p.empty()) FUN_RETURN_IF_ERROR(ReadExactly(fd, p.data(), p.size()));
    return p;
  }

  // One request, one reply, then the agent must close.
  agent::Reply Call(const agent::Request& r) {
    UniqueFd c = Dial();
    Send(c.get(), r);
    auto reply = ReadReply(c.get());
    EXPECT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(ReadToEnd(c.get()), "");
    return reply.ok() ? *reply : agent::Reply{.status = ReplyStatus::kFailed};
  }

  TempDir dir_;
  agent::Token token_;
  std::unique_ptr<EchoServer> containerd_;
  Options options_;
  TestSystem system_;
  std::unique_ptr<Agent> agent_;
  std::thread run_;
  Status run_result_;
  SocketAddress address_;
  std::mutex log_mu_;
  std::string log_;
};

TEST_F(GuestdTest, PingReportsStateAsJson) {
  StartAgent();
  agent::Reply r = Call(Req(Kind::kPing));
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  EXPECT_EQ(r.message.find('\n'), std::string::npos);
  auto j = nlohmann::json::parse(r.message, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.message;
  EXPECT_EQ(j["version"], kVersion);
  EXPECT_EQ(j["containerd"], true);
  EXPECT_TRUE(j["uptime_s"].is_number());
  EXPECT_GE(j["uptime_s"].get<double>(), 0);
  ASSERT_TRUE(j["load"].is_array());
  EXPECT_EQ(j["load"].size(), 3u);
  EXPECT_EQ(j["time_unix_ns"].get<int64_t>(), 1767225600ll * 1000000000ll);
}

TEST_F(GuestdTest, PingReportsTheDataDisksSpace) {
  options_.data_dir = dir_.path();
  StartAgent();
  agent::Reply r = Call(Req(Kind::kPing));
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  auto j = nlohmann::json::parse(r.message, nullptr, false);
  ASSERT_TRUE(j["data_disk"].is_object()) << r.message;
  const auto& d = j["data_disk"];
  struct statvfs sv {};
  ASSERT_EQ(::statvfs(dir_.path().c_str(), &sv), 0);
  EXPECT_EQ(d["path"], dir_.path());
  EXPECT_EQ(d["error"], "");
  EXPECT_EQ(d["total_bytes"].get<uint64_t>(), uint64_t{sv.f_blocks} * sv.f_frsize);
  EXPECT_LE(d["avail_bytes"].get<uint64_t>(), d["total_bytes"].get<uint64_t>());
  EXPECT_GT(d["avail_bytes"].get<uint64_t>(), 0u);
}

TEST_F(GuestdTest, PingSaysWhyTheDataDiskCannotBeMeasured) {
  options_.data_dir = dir_.Join("no-such-dir");
  StartAgent();
  agent::Reply r = Call(Req(Kind::kPing));
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  auto j = nlohmann::json::parse(r.message, nullptr, false);
  EXPECT_FALSE(j["data_disk"].contains("total_bytes")) << r.message;
  EXPECT_NE(j["data_disk"]["error"].get<std::string>().find("no-such-dir"), std::string::npos)
      << r.message;
}

TEST_F(GuestdTest, PingReportsContainerdDown) {
  options_.containerd_socket = dir_.Join("nobody-listens.sock");
  StartAgent();
  agent::Reply r = Call(Req(Kind::kPing));
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  auto j = nlohmann::json::parse(r.message, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.message;
  EXPECT_EQ(j["containerd"], false);
}

TEST_F(GuestdTest, ContainerdRelayEchoes10MiBBothWays) {
  StartAgent();
  UniqueFd c = Dial();
  Send(c.get(), Req(Kind::kContainerd));
  auto reply = ReadReply(c.get());
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->status, ReplyStatus::kOk) << reply->message;
  const std::string sent = Payload(10 << 20, 1);
  std::thread writer([&] {
    EXPECT_TRUE(WriteAll(c.get(), sent).ok());
    ::shutdown(c.get(), SHUT_WR);  // the echo server sees EOF and half-closes back
  });
  std::string got = ReadToEnd(c.get());
  writer.join();
  EXPECT_EQ(got.size(), sent.size());
  EXPECT_TRUE(got == sent);
  c.reset();
  StopAgent();
  EXPECT_THAT(Logs(), HasSubstr(" containerd: ok; host->target 10485760 bytes, target->host "
                                "10485760 bytes"));
}

TEST_F(GuestdTest, BytesSentRightAfterTheRequestReachTheTarget) {
  StartAgent();
  UniqueFd c = Dial();
  Send(c.get(), Req(Kind::kContainerd), "early bytes");
  auto reply = ReadReply(c.get());
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->status, ReplyStatus::kOk);
  ::shutdown(c.get(), SHUT_WR);
  EXPECT_EQ(ReadToEnd(c.get()), "early bytes");
}

TEST_F(GuestdTest, ContainerdDownIsUnavailable) {
  options_.containerd_socket = dir_.Join("nobody-listens.sock");
  StartAgent();
  agent::Reply r = Call(Req(Kind::kContainerd));
  EXPECT_EQ(r.status, ReplyStatus::kUnavailable);
  EXPECT_THAT(r.message, HasSubstr("nobody-listens.sock"));
}

TEST_F(GuestdTest, TcpRelayToAnEchoServer) {
  EchoServer echo("tcp:127.0.0.1:0");
  StartAgent();
  UniqueFd c = Dial();
  std::string target = echo.address().substr(4);  // "127.0.0.1:PORT"
  Send(c.get(), Req(Kind::kTcp, target));
  auto reply = ReadReply(c.get());
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->status, ReplyStatus::kOk) << reply->message;
  const std::string sent = Payload(1 << 20, 2);
  std::thread writer([&] {
    EXPECT_TRUE(WriteAll(c.get(), sent).ok());
    ::shutdown(c.get(), SHUT_WR);
  });
  std::string got = ReadToEnd(c.get());
  writer.join();
  EXPECT_TRUE(got == sent) << got.size() << " of " << sent.size() << " bytes";
}

TEST_F(GuestdTest, TcpToAClosedPortIsUnavailable) {
  std::string target;
  {
    auto l = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
    ASSERT_TRUE(l.ok());
    target = LocalAddress(l->get())->substr(4);
  }  // closed: nothing listens on that port any more
  StartAgent();
  agent::Reply r = Call(Req(Kind::kTcp, target));
  EXPECT_EQ(r.status, ReplyStatus::kUnavailable);
  EXPECT_THAT(r.message, HasSubstr("Connection refused"));
}

TEST_F(GuestdTest, TcpToAHostNameIsBadRequest) {
  StartAgent();
  agent::Reply r = Call(Req(Kind::kTcp, "example.com:80"));
  EXPECT_EQ(r.status, ReplyStatus::kBadRequest);
  EXPECT_THAT(r.message, HasSubstr("IP address"));
}

TEST_F(GuestdTest, UdpToAHostNameIsBadRequest) {
  StartAgent();
  agent::Reply r = Call(Req(Kind::kUdp, "example.com:53"));
  EXPECT_EQ(r.status, ReplyStatus::kBadRequest);
  EXPECT_THAT(r.message, HasSubstr("IP address"));
}

// --- kUdp -------------------------------------------------------------------------------------

class GuestdUdpTest : public GuestdTest, public ::testing::WithParamInterface<std::string> {};

// Datagrams of every size the framing and the address family allow, one at a time (the first
// in the request's own write); a datagram too big for the family is dropped, not fatal.
TEST_P(GuestdUdpTest, DatagramsOfEverySizeRoundTrip) {
  UdpEchoServer echo(GetParam());
  if (!echo.ok()) GTEST_SKIP() << GetParam() << ": " << echo.error();
  const bool v6 = GetParam() == "::1";
  StartAgent();
  // 65507 is IPv4's largest UDP payload, 65527 IPv6's; the framing allows 65535.
  std::vector<size_t> sizes = {0, 1, 1400, 65507};
  if (v6) sizes.push_back(65527);
  UniqueFd c = OpenUdp(echo.target(), Frame(Payload(sizes[0], 0)));
  size_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string sent = Payload(sizes[i], static_cast<uint32_t>(i));
    if (i > 0) {
      ASSERT_TRUE(WriteAll(c.get(), Frame(sent)).ok());
    }
    auto got = ReadDatagram(c.get());
    ASSERT_TRUE(got.ok()) << sizes[i] << ": " << got.status();
    EXPECT_EQ(got->size(), sent.size());
    EXPECT_TRUE(*got == sent) << sizes[i];
    total += sizes[i];
  }
  // 65535 frames fine but fits no UDP packet: dropped and counted; the session goes on.
  ASSERT_TRUE(WriteAll(c.get(), Frame(std::string(65535, 'x')) + Frame("after")).ok());
  auto after = ReadDatagram(c.get());
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, "after");
  total += 5;
  ::shutdown(c.get(), SHUT_WR);
  EXPECT_EQ(ReadToEnd(c.get()), "");  // the host closed: the session ends
  StopAgent();
  const size_t n = sizes.size() + 1;
  EXPECT_THAT(Logs(), HasSubstr(fmt::format(
                          " udp {}: ok: the host closed the channel; host->target {} datagrams {} "
                          "bytes (1 dropped), target->host {} datagrams {} bytes (0 dropped)",
                          echo.target(), n, total, n, total)));
}

// Loopback drops nothing here: even if no reader ran until the last datagram was sent, 64
// datagrams of 100 bytes (about 2 KiB of buffer each, at most) fit every socket buffer on the
// way (the default 208 KiB), and loopback keeps one flow's order.
TEST_P(GuestdUdpTest, ABurstArrivesCompleteAndInOrder) {
  UdpEchoServer echo(GetParam());
  if (!echo.ok()) GTEST_SKIP() << GetParam() << ": " << echo.error();
  StartAgent();
  UniqueFd c = OpenUdp(echo.target());
  constexpr int kCount = 64;
  std::string burst;
  for (int i = 0; i < kCount; ++i) burst += Frame(fmt::format("{:03}", i) + Payload(97, i));
  ASSERT_TRUE(WriteAll(c.get(), burst).ok());
  for (int i = 0; i < kCount; ++i) {
    auto got = ReadDatagram(c.get());
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, fmt::format("{:03}", i) + Payload(97, i)) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Loopback, GuestdUdpTest, ::testing::Values("127.0.0.1", "::1"),
                         [](const auto& p) { return p.param == "::1" ? "Ipv6" : "Ipv4"; });

TEST_F(GuestdTest, UdpMalformedFrameClosesThatChannelOnly) {
  UdpEchoServer echo("127.0.0.1");
  ASSERT_TRUE(echo.ok()) << echo.error();
  StartAgent();
  UniqueFd good = OpenUdp(echo.target());
  ASSERT_TRUE(WriteAll(good.get(), Frame("first")).ok());
  ASSERT_EQ(*ReadDatagram(good.get()), "first");

  // A valid frame, then a frame that declares 16 bytes and carries 5, then EOF.
  UniqueFd truncated = OpenUdp(echo.target(), Frame("one") + std::string("\x10\x00short", 7));
  ::shutdown(truncated.get(), SHUT_WR);
  std::string got = ReadToEnd(truncated.get());  // returns: the agent closed the channel
  EXPECT_TRUE(got.empty() || got == Frame("one")) << got.size();
  // Not frames at all (an HTTP client on the wrong port): the first two bytes declare 17735.
  const std::string garbage = "GET / HTTP/1.1\r\nHost: fun\r\n\r\n";
  UniqueFd http = OpenUdp(echo.target(), garbage);
  ::shutdown(http.get(), SHUT_WR);
  EXPECT_EQ(ReadToEnd(http.get()), "");

  ASSERT_TRUE(WriteAll(good.get(), Frame("still here")).ok());
  EXPECT_EQ(*ReadDatagram(good.get()), "still here");
  good.reset();
  StopAgent();
  EXPECT_THAT(Logs(), HasSubstr("closed: malformed frame from the host: the stream ended 5 bytes "
                                "into a frame of 16"));
  EXPECT_THAT(Logs(), HasSubstr(fmt::format("closed: malformed frame from the host: the stream "
                                            "ended {} bytes into a frame of 17735",
                                            garbage.size() - 2)));
}

TEST_F(GuestdTest, UdpIdleSessionIsClosed) {
  UdpEchoServer echo("127.0.0.1");
  ASSERT_TRUE(echo.ok()) << echo.error();
  options_.udp_idle_timeout = 100ms;
  StartAgent();
  UniqueFd c = OpenUdp(echo.target());
  ASSERT_TRUE(WriteAll(c.get(), Frame("ping")).ok());
  ASSERT_EQ(*ReadDatagram(c.get()), "ping");
  EXPECT_EQ(ReadToEnd(c.get()), "");  // returns once the agent gives up on the session
  StopAgent();
  EXPECT_THAT(Logs(), HasSubstr("idle: no datagram either way for 0.1 s; host->target 1 "
                                "datagrams 4 bytes"));
}

// ICMP port unreachable (ECONNREFUSED on the connected socket) is a UDP server restarting, not
// the end of the session.
TEST_F(GuestdTest, UdpTargetNotListeningYetDoesNotEndTheSession) {
  uint16_t port = 0;
  {
    UdpEchoServer probe("127.0.0.1");
    ASSERT_TRUE(probe.ok()) << probe.error();
    port = probe.port();
  }  // closed: nothing is bound to that port any more
  StartAgent();
  UniqueFd c = OpenUdp(fmt::format("127.0.0.1:{}", port));
  ASSERT_TRUE(WriteAll(c.get(), Frame("into the void") + Frame("again")).ok());
  UdpEchoServer echo("127.0.0.1", port);
  ASSERT_TRUE(echo.ok()) << echo.error();
  ASSERT_TRUE(WriteAll(c.get(), Frame("hello")).ok());
  // The first two may have reached the server too, if the agent sent them after it bound.
  for (;;) {
    auto got = ReadDatagram(c.get());
    ASSERT_TRUE(got.ok()) << got.status();
    if (*got == "hello") break;
    EXPECT_THAT(*got, ::testing::AnyOf("into the void", "again"));
  }
  ::shutdown(c.get(), SHUT_WR);
  ReadToEnd(c.get());
  StopAgent();
  EXPECT_THAT(Logs(), HasSubstr(fmt::format(" udp 127.0.0.1:{}: ok: the host closed", port)));
}

// A host that stops reading: datagrams from the target fill the stream, then the bounded queue
// (256 KiB), then are dropped and counted, while datagrams to the target still flow.
TEST_F(GuestdTest, UdpDatagramsForAHostThatDoesNotReadAreDroppedNotBuffered) {
  // The target is the test's own socket, so it can send whenever it likes.
  UniqueFd target(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  auto bind_at = ToSockAddr(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_EQ(::bind(target.get(), reinterpret_cast<const sockaddr*>(&bind_at->ss), bind_at->len), 0);
  const std::string target_address = *LocalAddress(target.get());  // "tcp:127.0.0.1:PORT"
  StartAgent();
  // The host's end with a small receive buffer (set before connect, so the window is small).
  auto agent_at = ToSockAddr(address_);
  UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int small = 4096;
  ASSERT_EQ(::setsockopt(c.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  ASSERT_EQ(::connect(c.get(), reinterpret_cast<const sockaddr*>(&agent_at->ss), agent_at->len), 0);
  Send(c.get(), Req(Kind::kUdp, target_address.substr(4)), Frame("hello"));
  ASSERT_EQ(ReadReply(c.get())->status, ReplyStatus::kOk);
  sockaddr_storage agent_udp{};
  socklen_t agent_udp_len = sizeof(agent_udp);
  char buf[64];
  ASSERT_EQ(::recvfrom(target.get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&agent_udp),
                       &agent_udp_len),
            5);
  // Twice what the stream's socket buffers can hold (the agent's send buffer grows up to
  // tcp_wmem's maximum; the host's receive buffer is small) and the queue, 8 MiB at least. In
  // batches, each followed by a datagram the host sends through the agent: once it arrives,
  // the agent's one thread has come round to read from the target again, so its UDP socket's
  // buffer never overflows in the kernel (drops we could not count).
  size_t wmem_max = 4 << 20;
  std::istringstream(ReadFile("/proc/sys/net/ipv4/tcp_wmem")) >> wmem_max >> wmem_max >> wmem_max;
  const std::string payload(1000, 'd');
  constexpr int kPerBatch = 32;
  const size_t batches =
      std::max<size_t>(8 << 20, 2 * (wmem_max + (256 << 10))) / (kPerBatch * payload.size()) + 1;
  for (size_t b = 0; b < batches; ++b) {
    for (int i = 0; i < kPerBatch; ++i) {
      ASSERT_EQ(::sendto(target.get(), payload.data(), payload.size(), 0,
                         reinterpret_cast<const sockaddr*>(&agent_udp), agent_udp_len),
                static_cast<ssize_t>(payload.size()));
    }
    const std::string sync = fmt::format("sync {}", b);
    ASSERT_TRUE(WriteAll(c.get(), Frame(sync)).ok());
    ssize_t n = ::recv(target.get(), buf, sizeof(buf), 0);
    ASSERT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))), sync);
  }
  ::shutdown(c.get(), SHUT_WR);  // the session ends; what the stream holds still arrives
  const std::string got = ReadToEnd(c.get());
  StopAgent();
  std::smatch m;
  const std::string logs = Logs();
  ASSERT_TRUE(std::regex_search(
      logs, m,
      std::regex(
          R"(target->host (\d+) datagrams (\d+) bytes \((\d+) dropped\).*?(?:\((\d+) bytes for the host unsent\))?\n)")))
      << logs;
  const uint64_t framed = std::stoull(m[1]), bytes = std::stoull(m[2]), dropped = std::stoull(m[3]),
                 unsent = m[4].matched ? std::stoull(m[4]) : 0;
  EXPECT_GT(dropped, 0u) << logs;
  EXPECT_EQ(bytes, framed * payload.size());
  EXPECT_EQ(got.size(), bytes + 2 * framed - unsent) << logs;
  for (size_t at = 0; at + 2 + payload.size() <= got.size(); at += 2 + payload.size()) {
    ASSERT_EQ(got.substr(at, 2 + payload.size()), Frame(payload)) << "at byte " << at;
  }
}

TEST_F(GuestdTest, StopEndsLiveUdpSessions) {
  UdpEchoServer echo("127.0.0.1");
  ASSERT_TRUE(echo.ok()) << echo.error();
  StartAgent();
  UniqueFd c = OpenUdp(echo.target());
  StopAgent();  // returns only once the session has ended
  EXPECT_EQ(ReadToEnd(c.get()), "");
  EXPECT_THAT(Logs(), HasSubstr(" udp " + echo.target() + ": agent stopping;"));
}

TEST_F(GuestdTest, BadTokenIsRefusedAndClosed) {
  StartAgent();
  agent::Request r = Req(Kind::kContainerd);
  r.token[5] ^= 1;
  agent::Reply reply = Call(r);
  EXPECT_EQ(reply.status, ReplyStatus::kBadToken);
  StopAgent();
  EXPECT_THAT(Logs(), HasSubstr("bad token"));
}

TEST_F(GuestdTest, GarbageIsClosedWithoutAReplyAndOthersGoOn) {
  StartAgent();
  // A relay in progress while the garbage arrives.
  UniqueFd relay = Dial();
  Send(relay.get(), Req(Kind::kContainerd));
  ASSERT_EQ(ReadReply(relay.get())->status, ReplyStatus::kOk);

  UniqueFd bad = Dial();
  ASSERT_TRUE(WriteAll(bad.get(), "GET / HTTP/1.1\r\nHost: fun\r\n\r\n").ok());
  int err = 0;
  EXPECT_EQ(ReadToEnd(bad.get(), &err), "");  // EOF (or a reset): no reply at all
  EXPECT_TRUE(err == 0 || err == ECONNRESET) << std::strerror(err);

  ASSERT_TRUE(WriteAll(relay.get(), "still here").ok());
  char buf[10];
  ASSERT_TRUE(ReadExactly(relay.get(), buf, sizeof(buf)).ok());
  EXPECT_EQ(std::string(buf, sizeof(buf)), "still here");
  EXPECT_EQ(Call(Req(Kind::kPing)).status, ReplyStatus::kOk);
}

TEST_F(GuestdTest, OurMagicWithAnUnknownKindGetsBadRequest) {
  StartAgent();
  std::string wire = *agent::EncodeRequest(Req(Kind::kPing));
  wire[4 + 1 + agent::kTokenSize] = 99;  // the kind byte
  UniqueFd c = Dial();
  ASSERT_TRUE(WriteAll(c.get(), wire).ok());
  auto reply = ReadReply(c.get());
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->status, ReplyStatus::kBadRequest);
  EXPECT_THAT(reply->message, HasSubstr("unknown request kind 99"));
}

TEST_F(GuestdTest, SlowlorisIsClosedAfterTheDeadline) {
  options_.request_deadline = 200ms;
  StartAgent();
  UniqueFd silent = Dial();
  UniqueFd partial = Dial();
  std::string wire = *agent::EncodeRequest(Req(Kind::kPing));
  ASSERT_TRUE(WriteAll(partial.get(), wire.substr(0, 20)).ok());
  EXPECT_EQ(ReadToEnd(silent.get()), "");  // returns once the agent gives up
  EXPECT_EQ(ReadToEnd(partial.get()), "");
  StopAgent();
  EXPECT_THAT(Logs(), HasSubstr("no complete request within the deadline (0 bytes arrived)"));
  EXPECT_THAT(Logs(), HasSubstr("no complete request within the deadline (20 bytes arrived)"));
}

TEST_F(GuestdTest, TooManyConnectionsAreRefusedWithUnavailable) {
  options_.max_connections = 1;
  StartAgent();
  UniqueFd holder = Dial();  // takes the one slot, waiting for its request
  agent::Reply r = Call(Req(Kind::kPing));
  EXPECT_EQ(r.status, ReplyStatus::kUnavailable);
  EXPECT_THAT(r.message, HasSubstr("busy"));
}

TEST_F(GuestdTest, StopEndsLiveRelays) {
  StartAgent();
  UniqueFd c = Dial();
  Send(c.get(), Req(Kind::kContainerd));
  ASSERT_EQ(ReadReply(c.get())->status, ReplyStatus::kOk);
  UniqueFd idle = Dial();  // and one that never sent its request
  StopAgent();             // returns only once both connections have ended
  EXPECT_EQ(ReadToEnd(c.get()), "");
  EXPECT_EQ(ReadToEnd(idle.get()), "");
}

TEST_F(GuestdTest, ShutdownRunsTheCommandDetached) {
  const std::string fifo = dir_.Join("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  WriteFile(options_.shutdown_command,
            "#!/bin/sh\necho \"powered off by $0\" > " + dir_.Join("marker") + "\necho done > " +
                fifo + "\n",
            0700);
  // Opened before the request so the script's write finds a reader; the read waits for it.
  UniqueFd reader(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(reader.valid());
  StartAgent();
  agent::Reply r = Call(Req(Kind::kShutdown));
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  pollfd p{reader.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 60000), 1) << "the shutdown script never ran";
  char buf[5] = {};
  ASSERT_EQ(::read(reader.get(), buf, 5), 5);
  EXPECT_EQ(std::string(buf, 5), "done\n");
  EXPECT_EQ(ReadFile(dir_.Join("marker")), "powered off by " + options_.shutdown_command + "\n");
}

TEST_F(GuestdTest, ShutdownWithoutTheCommandFails) {
  StartAgent();  // options_.shutdown_command does not exist
  agent::Reply r = Call(Req(Kind::kShutdown));
  EXPECT_EQ(r.status, ReplyStatus::kFailed);
  EXPECT_THAT(r.message, HasSubstr(options_.shutdown_command));
  EXPECT_THAT(r.message, HasSubstr("No such file"));
}

TEST_F(GuestdTest, TimeSyncStepsTheClockByTheOffset) {
  StartAgent();
  agent::Reply r = Call(Req(Kind::kTimeSync, "", 1'500'000'000ull));
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  EXPECT_EQ(r.message, "clock stepped by +1.500 s");
  r = Call(Req(Kind::kTimeSync, "", static_cast<uint64_t>(-21'250'000'000LL)));  // back 21.25 s
  ASSERT_EQ(r.status, ReplyStatus::kOk) << r.message;
  EXPECT_EQ(r.message, "clock stepped by -21.250 s");
  ASSERT_EQ(system_.set().size(), 2u);
  EXPECT_EQ(system_.set()[0], 1500ms);
  EXPECT_EQ(system_.set()[1], -21250ms);
}

TEST_F(GuestdTest, TimeSyncRefusesNonsense) {
  StartAgent();
  // An absolute time (what an older fun-hostd sent): it would land in 2082.
  agent::Reply r = Call(Req(Kind::kTimeSync, "", 1767225600ull * 1000000000ull));
  EXPECT_EQ(r.status, ReplyStatus::kBadRequest);
  EXPECT_THAT(r.message, HasSubstr("not a plausible clock offset"));
  // Back before 2000 (the fixed clock says 2026-01-01); the extremes of the type.
  r = Call(Req(Kind::kTimeSync, "", static_cast<uint64_t>(-27LL * 366 * 86400 * 1'000'000'000LL)));
  EXPECT_EQ(r.status, ReplyStatus::kBadRequest);
  r = Call(Req(Kind::kTimeSync, "", static_cast<uint64_t>(std::numeric_limits<int64_t>::min())));
  EXPECT_EQ(r.status, ReplyStatus::kBadRequest);
  r = Call(Req(Kind::kTimeSync, "", static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
  EXPECT_EQ(r.status, ReplyStatus::kBadRequest);
  EXPECT_TRUE(system_.set().empty());
  // A clock 25 years behind (set to 2001 by hand) is stepped forward: decades are fine.
  r = Call(Req(Kind::kTimeSync, "", static_cast<uint64_t>(25LL * 365 * 86400 * 1'000'000'000LL)));
  EXPECT_EQ(r.status, ReplyStatus::kOk) << r.message;
  EXPECT_EQ(system_.set().size(), 1u);
}

TEST_F(GuestdTest, TimeSyncTurnedOff) {
  options_.allow_timesync = false;
  StartAgent();
  agent::Reply r = Call(Req(Kind::kTimeSync, "", 1767225600ull * 1000000000ull));
  EXPECT_EQ(r.status, ReplyStatus::kBadRequest);
  EXPECT_THAT(r.message, HasSubstr("turned off"));
  EXPECT_TRUE(system_.set().empty());
}

TEST_F(GuestdTest, ListensOnVsockOrSaysWhyNot) {
  options_.listen = {"tcp:127.0.0.1:0", "vsock:40123"};
  auto a = Agent::Create(options_, token_, system_);
  if (a.ok()) {
    EXPECT_EQ((*a)->addresses().at(1), "vsock:40123");
  } else {
    // Without AF_VSOCK (no vsock transport), the error says so; a bind error names the port.
    EXPECT_THAT(a.status().message(),
                ::testing::AnyOf(StartsWith("vsock not supported on this build"),
                                 HasSubstr("vsock:40123")));
  }
}

TEST_F(GuestdTest, UnixListenerWorksAndIsRemovedAfterwards) {
  options_.listen = {"unix:" + dir_.Join("agent.sock")};
  StartAgent();
  EXPECT_EQ(Call(Req(Kind::kPing)).status, ReplyStatus::kOk);
  StopAgent();
  EXPECT_FALSE(std::filesystem::exists(dir_.Join("agent.sock")));
}

// --- kPorts ----------------------------------------------------------------------------------

class GuestdPortsTest : public GuestdTest {
 protected:
  net::ListenPortReport Ports() {
    agent::Reply r = Call(Req(Kind::kPorts));
    EXPECT_EQ(r.status, ReplyStatus::kOk) << r.message;
    auto report = net::DecodeListenPorts(r.message);
    EXPECT_TRUE(report.ok()) << report.status() << ": " << r.message;
    return report.ok() ? *report : net::ListenPortReport{};
  }
  void Fixture(std::string_view name, std::string_view text) {
    ::mkdir(dir_.Join("net").c_str(), 0755);
    WriteFile(dir_.Join("net/" + std::string(name)), text);
    options_.proc_net_dir = dir_.Join("net");
  }
  static net::ListenPort Tcp(std::string address, uint16_t port) {
    return {.protocol = net::Protocol::kTcp, .address = std::move(address), .port = port};
  }
  static net::ListenPort Udp(std::string address, uint16_t port) {
    return {.protocol = net::Protocol::kUdp, .address = std::move(address), .port = port};
  }
};

constexpr std::string_view kV4Header =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
    "inode\n";
constexpr std::string_view kV6Header =
    "  sl  local_address                         remote_address                        st "
    "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

TEST_F(GuestdPortsTest, ReportsTheFourFilesMergedAndSorted) {
  Fixture("tcp", std::string(kV4Header) +
                     "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 "
                     "    0        0 1 1 0 100 0 0 10 0\n"
                     "   1: 0100007F:B648 0100007F:1389 01 00000000:00000000 00:00000000 00000000 "
                     "    0        0 2 2 0 20 0 0 10 -1\n");
  Fixture("tcp6", std::string(kV6Header) +
                      "   0: 00000000000000000000000001000000:2328 "
                      "00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 "
                      "00000000     0        0 3 1 0 100 0 0 10 0\n");
  Fixture("udp", std::string(kV4Header) +
                     " 2636: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 "
                     "00000000     0        0 4 2 0 0\n");
  Fixture("udp6", std::string(kV6Header) +
                      " 3129: 00000000000000000000000000000000:0222 "
                      "00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 "
                      "00000000     0        0 5 2 0 0\n");
  StartAgent();
  net::ListenPortReport r = Ports();
  EXPECT_FALSE(r.truncated);
  EXPECT_THAT(r.ports, ::testing::ElementsAre(Tcp("0.0.0.0", 8080), Tcp("::1", 9000),
                                              Udp("127.0.0.1", 53), Udp("::", 546)));
  StopAgent();
  EXPECT_THAT(Logs(), HasSubstr(" ports: ok: 4 listening sockets"));
}

TEST_F(GuestdPortsTest, NoIpv6FilesIsNoIpv6Sockets) {
  Fixture("tcp", std::string(kV4Header) + "   0: 00000000:0016 00000000:0000 0A\n");
  Fixture("udp", kV4Header);
  StartAgent();
  EXPECT_THAT(Ports().ports, ::testing::ElementsAre(Tcp("0.0.0.0", 22)));
}

TEST_F(GuestdPortsTest, MissingOrMalformedFilesFail) {
  Fixture("udp", kV4Header);  // no tcp
  StartAgent();
  agent::Reply r = Call(Req(Kind::kPorts));
  EXPECT_EQ(r.status, ReplyStatus::kFailed);
  EXPECT_THAT(r.message, HasSubstr(dir_.Join("net/tcp") + ": No such file"));
  Fixture("tcp", std::string(kV4Header) + "   0: 00000000:0016\n");
  r = Call(Req(Kind::kPorts));
  EXPECT_EQ(r.status, ReplyStatus::kFailed);
  EXPECT_THAT(r.message, HasSubstr("/proc/net/tcp line 2 "));
}

// Against this machine's real /proc/net: sockets opened here are in the report.
TEST_F(GuestdPortsTest, SeesRealListenersOnLoopback) {
  auto tcp = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  const uint16_t tcp_port = ParseSocketAddress(*LocalAddress(tcp->get()))->port;
  auto tcp6 = Listen(*ParseSocketAddress("tcp:[::1]:0"));
  UdpEchoServer udp("127.0.0.1");
  ASSERT_TRUE(udp.ok()) << udp.error();
  UdpEchoServer udp6("::1");
  StartAgent();
  net::ListenPortReport r = Ports();
  if (r.truncated) GTEST_SKIP() << "more sockets listen here than one report holds";
  EXPECT_THAT(r.ports, ::testing::Contains(Tcp("127.0.0.1", tcp_port)));
  EXPECT_THAT(r.ports, ::testing::Contains(Tcp("127.0.0.1", address_.port)));  // the agent's own
  EXPECT_THAT(r.ports, ::testing::Contains(Udp("127.0.0.1", udp.port())));
  if (tcp6.ok()) {
    EXPECT_THAT(r.ports, ::testing::Contains(
                             Tcp("::1", ParseSocketAddress(*LocalAddress(tcp6->get()))->port)));
  }
  if (udp6.ok()) {
    EXPECT_THAT(r.ports, ::testing::Contains(Udp("::1", udp6.port())));
  }
  tcp->reset();
  EXPECT_THAT(Ports().ports, ::testing::Not(::testing::Contains(Tcp("127.0.0.1", tcp_port))));
}

// ---------------------------------------------------------------------------------------
// The token file, the flags, and Main.

TEST(ReadTokenFileTest, ReadsExactly32Bytes) {
  TempDir dir;
  agent::Token t = MakeToken(3);
  WriteFile(dir.Join("secret"),
            std::string_view(reinterpret_cast<const char*>(t.data()), t.size()));
  auto got = ReadTokenFile(dir.Join("secret"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, t);
}

TEST(ReadTokenFileTest, MissingFileSaysWhereTheSecretComesFrom) {
  TempDir dir;
  auto got = ReadTokenFile(dir.Join("missing"));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr(dir.Join("missing")));
  EXPECT_THAT(got.status().message(), HasSubstr("-fw_cfg name=opt/fun/secret"));
}

TEST(ReadTokenFileTest, WrongSizesAreRefused) {
  TempDir dir;
  for (size_t n : {0, 31, 33, 64, 10000}) {
    WriteFile(dir.Join("secret"), std::string(n, 'k'));
    auto got = ReadTokenFile(dir.Join("secret"));
    ASSERT_FALSE(got.ok()) << n;
    EXPECT_EQ(got.status().code(), Code::kInvalidArgument);
    EXPECT_THAT(got.status().message(), HasSubstr("it must hold exactly 32"));
    if (n < 4096) {
      EXPECT_THAT(got.status().message(), HasSubstr(fmt::format("holds {} bytes", n)));
    }
  }
}

TEST(ParseArgsTest, DefaultsServeTheVm) {
  auto o = ParseArgs({});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->listen, std::vector<std::string>{"tcp:0.0.0.0:7070"});
  EXPECT_EQ(o->token_file, "/sys/firmware/qemu_fw_cfg/by_name/opt/fun/secret/raw");
  EXPECT_EQ(o->containerd_socket, "/run/containerd/containerd.sock");
  EXPECT_EQ(o->shutdown_command, "/usr/sbin/poweroff");
  EXPECT_TRUE(o->allow_timesync);
  EXPECT_EQ(o->max_connections, 4096);
  EXPECT_EQ(o->udp_idle_timeout, 60s);
  EXPECT_EQ(o->data_dir, "/var/lib/containerd");
}

TEST(ParseArgsTest, Flags) {
  auto o = ParseArgs({"--listen", "tcp:127.0.0.1:1", "--listen=vsock:7070", "--no-timesync",
                      "--token-file", "/t", "--max-connections", "8", "--udp-idle-timeout", "5"});
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->listen, (std::vector<std::string>{"tcp:127.0.0.1:1", "vsock:7070"}));
  EXPECT_FALSE(o->allow_timesync);
  EXPECT_EQ(o->token_file, "/t");
  EXPECT_EQ(o->max_connections, 8);
  EXPECT_EQ(o->udp_idle_timeout, 5s);
  EXPECT_TRUE(ParseArgs({"--allow-timesync"}).ok());
}

TEST(ParseArgsTest, Refusals) {
  // The token is never accepted on the command line (ps would show it).
  EXPECT_THAT(ParseArgs({"--token", "abc"}).status().message(), HasSubstr("unknown flag --token"));
  EXPECT_FALSE(ParseArgs({"stray"}).ok());
  EXPECT_THAT(ParseArgs({"--listen", "vsock:x"}).status().message(), HasSubstr("vsock:PORT"));
  EXPECT_THAT(ParseArgs({"--listen", "udp:1.2.3.4:5"}).status().message(), HasSubstr("--listen"));
  EXPECT_FALSE(ParseArgs({"--allow-timesync", "--no-timesync"}).ok());
  EXPECT_THAT(ParseArgs({"--shutdown-command", "poweroff"}).status().message(),
              HasSubstr("absolute path"));
  EXPECT_FALSE(ParseArgs({"--max-connections", "0"}).ok());
  EXPECT_THAT(ParseArgs({"--udp-idle-timeout", "0"}).status().message(),
              HasSubstr("--udp-idle-timeout: 0 is out of range"));
  EXPECT_FALSE(ParseArgs({"--log-level", "loud"}).ok());
  EXPECT_THAT(ParseArgs({"--data-dir", "var/lib"}).status().message(),
              HasSubstr("--data-dir \"var/lib\": must be an absolute path"));
}

TEST(ParseListenAddressTest, Kinds) {
  auto v = ParseListenAddress("vsock:1024");
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->vsock);
  EXPECT_EQ(v->vsock_port, 1024u);
  EXPECT_EQ(v->ToString(), "vsock:1024");
  auto t = ParseListenAddress("tcp:[::1]:7070");
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->vsock);
  EXPECT_EQ(t->ToString(), "tcp:[::1]:7070");
}

TEST(MainTest, MissingTokenFileExits1WithAClearMessage) {
  TempDir dir;
  std::ostringstream out, err;
  int code =
      Main({"--listen", "tcp:127.0.0.1:0", "--token-file", dir.Join("secret")}, out, err, -1);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(err.str(),
              HasSubstr("fun-guestd: reading the instance secret " + dir.Join("secret")));
}

TEST(MainTest, WrongSizeTokenExits1) {
  TempDir dir;
  WriteFile(dir.Join("secret"), "too short");
  std::ostringstream out, err;
  EXPECT_EQ(Main({"--listen", "tcp:127.0.0.1:0", "--token-file", dir.Join("secret")}, out, err, -1),
            1);
  EXPECT_THAT(err.str(), HasSubstr("holds 9 bytes; it must hold exactly 32"));
}

TEST(MainTest, ServesUntilTheStopFdAndExits0) {
  TempDir dir;
  WriteFile(dir.Join("secret"), std::string(32, 's'));
  UniqueFd stop(::eventfd(1, EFD_CLOEXEC));  // already readable: SIGTERM came in
  std::ostringstream out, err;
  int code = Main(
      {"--listen", "tcp:127.0.0.1:0", "--token-file", dir.Join("secret"), "--log-level", "warning"},
      out, err, stop.get());
  EXPECT_EQ(code, 0) << err.str();
  EXPECT_THAT(out.str(), StartsWith("listening on tcp:127.0.0.1:"));
  log::Default().SetStderrFormat(log::StderrFormat::kBrief);
}

TEST(MainTest, UsageErrorsExit2) {
  std::ostringstream out, err;
  EXPECT_EQ(Main({"--bogus"}, out, err, -1), 2);
  EXPECT_THAT(err.str(), HasSubstr("unknown flag --bogus"));
  EXPECT_EQ(Main({"--help"}, out, err, -1), 0);
  EXPECT_THAT(out.str(), HasSubstr("usage: fun-guestd"));
}

// --- kLog -------------------------------------------------------------------------------------

class GuestdLogTest : public GuestdTest {
 protected:
  void SetUp() override {
    GuestdTest::SetUp();
    root_ = dir_.Join("logs");
    ::mkdir(root_.c_str(), 0755);
    ::mkdir((root_ + "/pod_1").c_str(), 0755);
    file_ = root_ + "/pod_1/c.log";
    options_.log_root = root_;
  }
  void Append(std::string_view bytes) {
    std::ofstream(file_, std::ios::app | std::ios::binary) << bytes;
  }
  std::string root_;
  std::string file_;
};

TEST_F(GuestdLogTest, SendsTheFileFromAnOffsetAndCloses) {
  Append("0123456789");
  StartAgent();
  UniqueFd c = Dial();
  Send(c.get(), Req(Kind::kLog, file_, agent::LogArg(4, false)));
  auto reply = ReadReply(c.get());
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->status, ReplyStatus::kOk) << reply->message;
  EXPECT_EQ(ReadToEnd(c.get()), "456789");
}

TEST_F(GuestdLogTest, FollowSendsWhatIsAppendedUntilTheHostHalfCloses) {
  Append("first\n");
  StartAgent();
  UniqueFd c = Dial();
  Send(c.get(), Req(Kind::kLog, file_, agent::LogArg(0, true)));
  auto reply = ReadReply(c.get());
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->status, ReplyStatus::kOk) << reply->message;
  std::string got(6, '\0');
  ASSERT_TRUE(ReadExactly(c.get(), got.data(), got.size()).ok());
  EXPECT_EQ(got, "first\n");
  Append("second\n");
  std::string more(7, '\0');
  ASSERT_TRUE(ReadExactly(c.get(), more.data(), more.size()).ok());
  EXPECT_EQ(more, "second\n");
  // The writer finished: whatever it wrote last still arrives after the host half-closes.
  Append("last\n");
  ::shutdown(c.get(), SHUT_WR);
  EXPECT_EQ(ReadToEnd(c.get()), "last\n");
}

TEST_F(GuestdLogTest, PathsOutsideTheLogRootAreRefused) {
  Append("x");
  ASSERT_EQ(::symlink("/etc/passwd", (root_ + "/pod_1/link.log").c_str()), 0);
  StartAgent();
  for (const std::string& bad :
       {std::string("/etc/passwd"), root_, root_ + "/", root_ + "/../logs/pod_1/c.log",
        root_ + "/pod_1/./c.log", root_ + "//pod_1/c.log", root_ + "x/pod_1/c.log",
        std::string("relative/c.log")}) {
    agent::Reply r = Call(Req(Kind::kLog, bad));
    EXPECT_EQ(r.status, ReplyStatus::kBadRequest) << bad << ": " << r.message;
  }
  // A symlink under the root is not followed.
  agent::Reply link = Call(Req(Kind::kLog, root_ + "/pod_1/link.log"));
  EXPECT_EQ(link.status, ReplyStatus::kFailed) << link.message;
  // A directory is not a log.
  agent::Reply dir = Call(Req(Kind::kLog, root_ + "/pod_1"));
  EXPECT_EQ(dir.status, ReplyStatus::kBadRequest) << dir.message;
  // A missing file is Unavailable (the container may not have started yet).
  agent::Reply missing = Call(Req(Kind::kLog, root_ + "/pod_1/none.log"));
  EXPECT_EQ(missing.status, ReplyStatus::kUnavailable) << missing.message;
}

}  // namespace
}  // namespace fun::guestd
