#include "lib/base/socket.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

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
