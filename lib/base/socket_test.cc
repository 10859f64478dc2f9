#include "lib/base/socket.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <thread>

namespace fun {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(SocketAddressTest, Parses) {
  auto a = ParseSocketAddress("tcp:127.0.0.1:564");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 564);
  auto b = ParseSocketAddress("tcp:[::1]:0");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->ToString(), "tcp:[::1]:0");
  auto c = ParseSocketAddress("unix:/run/p9.sock");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->kind, SocketAddress::Kind::kUnix);
  EXPECT_EQ(c->path, "/run/p9.sock");
  EXPECT_EQ(ParseSocketAddress("tcp:localhost:80")->host, "127.0.0.1");
}

TEST(SocketAddressTest, RefusesBadForms) {
  for (const char* bad :
       {"", "tcp:", "tcp:1.2.3.4", "tcp:1.2.3.4:70000", "tcp:1.2.3.4:x", "tcp:::1:80",
        "tcp:[::1]80", "tcp:example.com:80", "udp:1.2.3.4:5", "unix:"}) {
    auto r = ParseSocketAddress(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("use tcp:HOST:PORT")) << bad;
  }
  EXPECT_FALSE(ParseSocketAddress("unix:/" + std::string(200, 'a')).ok());
}

TEST(SocketTest, TcpEchoOnAnyPort) {
  auto l = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_TRUE(l.ok()) << l.status();
  auto bound = LocalAddress(l->get());
  ASSERT_TRUE(bound.ok());
  EXPECT_THAT(*bound, StartsWith("tcp:127.0.0.1:"));
  std::thread server([&] {
    std::string peer;
    auto c = Accept(l->get(), &peer);
    ASSERT_TRUE(c.ok());
    EXPECT_THAT(peer, StartsWith("tcp:127.0.0.1:"));
    char buf[5];
    ASSERT_TRUE(ReadExactly(c->get(), buf, 5).ok());
    ASSERT_TRUE(WriteAll(c->get(), std::string_view(buf, 5)).ok());
  });
  auto c = Connect(*ParseSocketAddress(*bound));
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(WriteAll(c->get(), "hello").ok());
  char buf[5];
  ASSERT_TRUE(ReadExactly(c->get(), buf, 5).ok());
  EXPECT_EQ(std::string(buf, 5), "hello");
  server.join();
  char one;
  Status eof = ReadExactly(c->get(), &one, 1);
  EXPECT_EQ(eof.code(), Code::kOutOfRange);
}

sockaddr_storage Ip(const std::string& spec) {
  auto a = ParseSocketAddress(spec);
  EXPECT_TRUE(a.ok()) << spec;
  return a.ok() ? ToSockAddr(*a)->ss : sockaddr_storage{};
}

TEST(SocketTest, LoopbackAddresses) {
  for (const char* yes :
       {"tcp:127.0.0.1:1", "tcp:127.255.0.9:1", "tcp:[::1]:1", "tcp:[::ffff:127.0.0.1]:1"}) {
    EXPECT_TRUE(IsLoopback(Ip(yes))) << yes;
  }
  for (const char* no : {"tcp:10.0.2.2:1", "tcp:0.0.0.0:1", "tcp:128.0.0.1:1", "tcp:[::]:1",
                         "tcp:[fe80::1]:1", "tcp:[::ffff:10.0.0.1]:1", "tcp:[::2]:1"}) {
    EXPECT_FALSE(IsLoopback(Ip(no))) << no;
  }
  sockaddr_storage unix_addr{};
  unix_addr.ss_family = AF_UNIX;
  EXPECT_FALSE(IsLoopback(unix_addr));
}

#ifdef TCP_CONGESTION  // Linux: per-socket congestion control
std::string Congestion(int fd) {
  char name[16] = {};
  socklen_t len = sizeof(name);
  if (::getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &len) != 0) return "?";
  return std::string(name, strnlen(name, sizeof(name)));
}

bool SetCongestion(int fd, const std::string& name) {
  return ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name.data(),
                      static_cast<socklen_t>(name.size())) == 0;
}

TEST(SocketTest, LoopbackSocketsStopPacingOnlyWhenTheyUseBbr) {
  UniqueFd paced(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(paced.valid());
  if (!SetCongestion(paced.get(), "bbr")) {
    GTEST_SKIP() << "this kernel has no bbr (" << std::strerror(errno)
                 << "): nothing paces, nothing to switch off";
  }
  UnpaceIfLoopback(paced.get(), Ip("tcp:10.0.2.2:80"));
  EXPECT_EQ(Congestion(paced.get()), "bbr") << "not loopback: the host's choice stays";
  UnpaceIfLoopback(paced.get(), Ip("tcp:127.0.0.1:80"));
  EXPECT_THAT(Congestion(paced.get()), ::testing::AnyOf("cubic", "reno"));

  UniqueFd reno(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(reno.valid());
  ASSERT_TRUE(SetCongestion(reno.get(), "reno"));
  UnpaceIfLoopback(reno.get(), Ip("tcp:[::1]:80"));
  EXPECT_EQ(Congestion(reno.get()), "reno") << "an unpaced choice is left alone";
}

// On a host whose default congestion control is bbr (net.ipv4.tcp_congestion_control, as on
// this project's CI machines) every loopback socket fun makes would pace without
// UnpaceIfLoopback; elsewhere none does and this holds trivially.
TEST(SocketTest, ListenConnectAndAcceptLeaveNoLoopbackSocketOnBbr) {
  for (const char* listen_on : {"tcp:127.0.0.1:0", "tcp:0.0.0.0:0"}) {
    SCOPED_TRACE(listen_on);
    auto l = Listen(*ParseSocketAddress(listen_on));
    ASSERT_TRUE(l.ok()) << l.status();
    if (std::string(listen_on).find("127.") != std::string::npos) {
      EXPECT_NE(Congestion(l->get()), "bbr");
    }
    auto port = ParseSocketAddress(*LocalAddress(l->get()))->port;
    auto c = Connect(SocketAddress{.host = "127.0.0.1", .port = port});
    ASSERT_TRUE(c.ok()) << c.status();
    auto a = Accept(l->get());
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_NE(Congestion(c->get()), "bbr");
    EXPECT_NE(Congestion(a->get()), "bbr");
  }
}
#endif

TEST(SocketTest, PortInUseIsAClearError) {
  auto l = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_TRUE(l.ok());
  auto again = Listen(*ParseSocketAddress(*LocalAddress(l->get())));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("pick another port"));
}

TEST(SocketTest, UdpBindsAndNamesPeers) {
  auto u = BindUdp(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_TRUE(u.ok()) << u.status();
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ASSERT_EQ(::getsockname(u->get(), reinterpret_cast<sockaddr*>(&bound), &len), 0);
  std::string name = FormatIpPort(bound);
  EXPECT_THAT(name, StartsWith("127.0.0.1:"));
  // The same port again is EADDRINUSE, kept for the caller's message.
  auto again = BindUdp(*ParseSocketAddress("tcp:" + name));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().sys_errno(), EADDRINUSE);
  EXPECT_THAT(again.status().message(), HasSubstr(name + "/udp"));
  // A datagram to it arrives from a peer FormatIpPort names.
  auto c = BindUdp(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(::sendto(c->get(), "hi", 2, 0, reinterpret_cast<sockaddr*>(&bound), len), 2);
  char buf[8];
  sockaddr_storage from{};
  socklen_t from_len = sizeof(from);
  ASSERT_EQ(
      ::recvfrom(u->get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &from_len), 2);
  EXPECT_EQ(FormatIpPort(from), LocalAddress(c->get())->substr(4));
  EXPECT_FALSE(BindUdp(*ParseSocketAddress("unix:/tmp/x")).ok());
}

TEST(SocketTest, UnixSocketIsPrivateAndStaleFileReplaced) {
  std::string dir = "/tmp/fun-socket-test-" + std::to_string(::getpid());
  ::mkdir(dir.c_str(), 0700);
  SocketAddress addr = *ParseSocketAddress("unix:" + dir + "/s.sock");
  {
    auto l = Listen(addr);
    ASSERT_TRUE(l.ok()) << l.status();
    struct stat st {};
    ASSERT_EQ(::stat(addr.path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    // A live server's socket is not stolen.
    auto second = Listen(addr);
    ASSERT_FALSE(second.ok());
    EXPECT_THAT(second.status().message(), HasSubstr("in use by another server"));
  }
  // The first listener is gone; its file remains and is replaced.
  auto l = Listen(addr);
  ASSERT_TRUE(l.ok()) << l.status();
  auto c = Connect(addr);
  ASSERT_TRUE(c.ok());
  ::unlink(addr.path.c_str());
  ::rmdir(dir.c_str());
}

TEST(SocketTest, ConnectRefused) {
  auto l = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
  std::string addr = *LocalAddress(l->get());
  l->reset();
  auto c = Connect(*ParseSocketAddress(addr));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kUnavailable);
  EXPECT_THAT(c.status().message(), HasSubstr("connecting to " + addr));
}

TEST(SocketTest, ReadExactlyReportsTruncation) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  UniqueFd a(sv[0]), b(sv[1]);
  ASSERT_TRUE(WriteAll(a.get(), "abc").ok());
  a.reset();
  char buf[5];
  Status s = ReadExactly(b.get(), buf, 5);
  EXPECT_EQ(s.code(), Code::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("EOF after 3 of 5 bytes"));
}

}  // namespace
}  // namespace fun
