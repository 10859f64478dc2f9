#include "lib/net/port_check.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>

#include "lib/base/socket.h"

namespace fun::net {
namespace {

uint16_t BoundPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len), 0);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

TEST(PortCheckTest, FormatsAddressesAsDockerShowsThem) {
  EXPECT_EQ(FormatHostPort({.protocol = ::fun::Protocol::kTcp, .ip = "127.0.0.1", .port = 8080}),
            "127.0.0.1:8080/tcp");
  EXPECT_EQ(FormatHostPort({.protocol = ::fun::Protocol::kUdp, .ip = "::1", .port = 53}),
            "[::1]:53/udp");
}

TEST(PortCheckTest, ATcpPortInUseIsNamedWithWhatToDo) {
  auto first = BindHostPort({.ip = "127.0.0.1", .port = 0});
  ASSERT_TRUE(first.ok()) << first.status();
  const uint16_t port = BoundPort(first->get());
  auto second = BindHostPort({.ip = "127.0.0.1", .port = port});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kAlreadyExists);
  EXPECT_NE(second.status().message().find(fmt::format("127.0.0.1:{}/tcp is already in use", port)),
            std::string::npos)
      << second.status();
  EXPECT_NE(second.status().message().find("-p OTHERPORT"), std::string::npos);
  // Free again once the first closes (SO_REUSEADDR: no TIME_WAIT wait for a listener).
  first->reset();
  EXPECT_TRUE(BindHostPort({.ip = "127.0.0.1", .port = port}).ok());
}

TEST(PortCheckTest, UdpAndTcpOfOnePortAreIndependent) {
  auto tcp = BindHostPort({.protocol = ::fun::Protocol::kTcp, .ip = "127.0.0.1", .port = 0});
  ASSERT_TRUE(tcp.ok()) << tcp.status();
  const uint16_t port = BoundPort(tcp->get());
  auto udp = BindHostPort({.protocol = ::fun::Protocol::kUdp, .ip = "127.0.0.1", .port = port});
  ASSERT_TRUE(udp.ok()) << udp.status();
  auto udp2 = BindHostPort({.protocol = ::fun::Protocol::kUdp, .ip = "127.0.0.1", .port = port});
  ASSERT_FALSE(udp2.ok());
  EXPECT_NE(udp2.status().message().find("/udp is already in use"), std::string::npos);
}

TEST(PortCheckTest, Ipv6LoopbackBinds) {
  auto fd = BindHostPort({.ip = "::1", .port = 0});
  if (!fd.ok() && fd.status().code() == Code::kUnavailable) {
    GTEST_SKIP() << "no IPv6 on this host: " << fd.status();
  }
  ASSERT_TRUE(fd.ok()) << fd.status();
  auto c = Connect(SocketAddress{
      .kind = SocketAddress::Kind::kTcp, .host = "::1", .port = BoundPort(fd->get())});
  EXPECT_TRUE(c.ok()) << c.status();
}

TEST(PortCheckTest, BadAddressesSayWhatIsExpected) {
  auto bad = BindHostPort({.ip = "localhost", .port = 8080});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("is not an IP address"), std::string::npos);
  // 192.0.2.1 (TEST-NET-1) is no address of this host.
  auto foreign = BindHostPort({.ip = "192.0.2.1", .port = 0});
  ASSERT_FALSE(foreign.ok());
  EXPECT_NE(foreign.status().message().find("is not an address of this host"), std::string::npos)
      << foreign.status();
}

TEST(PortCheckTest, PrivilegedPortsGetTheHint) {
  // Tests run as root here, where bind(2) never says EACCES: the explanation is checked alone.
  Status s = ExplainBindError(EACCES, {.ip = "127.0.0.1", .port = 80});
  EXPECT_EQ(s.code(), Code::kPermissionDenied);
  EXPECT_NE(s.message().find("ip_unprivileged_port_start"), std::string::npos);
  EXPECT_NE(s.message().find("127.0.0.1:80/tcp: port 80 is a privileged port"), std::string::npos)
      << s;
}

}  // namespace
}  // namespace fun::net
