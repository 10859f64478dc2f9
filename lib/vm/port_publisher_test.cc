// PortPublisher with real listening sockets as its forwards (net::BindHostPort): what Apply
// opens is bound on loopback, what it closes is free again.
#include "lib/vm/port_publisher.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "lib/base/unique_fd.h"

namespace fun::vm {
namespace {

uint16_t FreePort(Protocol t = Protocol::kTcp) {
  auto fd = net::BindHostPort({.protocol = t, .ip = "127.0.0.1", .port = 0});
  EXPECT_TRUE(fd.ok());
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

bool Bound(const net::HostPort& hp) {
  auto fd = net::BindHostPort(hp);
  return !fd.ok() && fd.status().code() == Code::kAlreadyExists;
}

PortPublisher::Opener BindOpener(int* opened) {
  return [opened](const PublishRequest& r) -> StatusOr<PortPublisher::Handle> {
    FUN_ASSIGN_OR_RETURN(UniqueFd fd, net::BindHostPort(r.host));
    ++*opened;
    return PortPublisher::Handle(std::make_shared<UniqueFd>(std::move(fd)));
  };
}

TEST(PortPublisherTest, OpensWhatIsWantedAndClosesWhatIsNot) {
  int opened = 0;
  PortPublisher pub(BindOpener(&opened));
  const net::HostPort a{.ip = "127.0.0.1", .port = FreePort()};
  const net::HostPort b{.protocol = Protocol::kUdp, .ip = "127.0.0.1", .port = FreePort()};
  auto table = pub.Apply({{.host = a, .target = "10.88.0.2:80", .owner = "web"},
                          {.host = b, .target = "10.88.0.2:53", .owner = "web"}});
  ASSERT_EQ(table.size(), 2u);
  for (const auto& s : table) EXPECT_TRUE(s.listening) << s.error;
  EXPECT_TRUE(Bound(a));
  EXPECT_TRUE(Bound(b));
  EXPECT_EQ(opened, 2);
  // The same wish again: nothing reopened (open connections through it survive).
  pub.Apply({{.host = a, .target = "10.88.0.2:80", .owner = "web"},
             {.host = b, .target = "10.88.0.2:53", .owner = "web"}});
  EXPECT_EQ(opened, 2);
  // b is no longer wanted; a leads elsewhere now (the container ran again with a new IP).
  table = pub.Apply({{.host = a, .target = "10.88.0.7:80", .owner = "web"}});
  ASSERT_EQ(table.size(), 1u);
  EXPECT_EQ(table[0].want.target, "10.88.0.7:80");
  EXPECT_EQ(opened, 3);
  EXPECT_FALSE(Bound(b));
  EXPECT_TRUE(Bound(a));
  pub.Clear();
  EXPECT_FALSE(Bound(a));
  EXPECT_TRUE(pub.Table().empty());
}

TEST(PortPublisherTest, APortInUseIsReportedAndRetried) {
  int opened = 0;
  PortPublisher pub(BindOpener(&opened));
  const net::HostPort a{.ip = "127.0.0.1", .port = FreePort()};
  auto squatter = net::BindHostPort(a);
  ASSERT_TRUE(squatter.ok());
  auto table = pub.Apply({{.host = a, .target = "10.88.0.2:80", .owner = "web"}});
  ASSERT_EQ(table.size(), 1u);
  EXPECT_FALSE(table[0].listening);
  EXPECT_NE(table[0].error.find("already in use"), std::string::npos) << table[0].error;
  squatter->reset();
  table = pub.Apply({{.host = a, .target = "10.88.0.2:80", .owner = "web"}});
  EXPECT_TRUE(table[0].listening) << table[0].error;
  EXPECT_TRUE(table[0].error.empty());
}

TEST(PortPublisherTest, TheFirstWishForAnAddressWinsAndAutoForwardsYieldQuietly) {
  int opened = 0;
  PortPublisher pub(BindOpener(&opened));
  const net::HostPort a{.ip = "127.0.0.1", .port = FreePort()};
  auto table =
      pub.Apply({{.host = a, .target = "10.88.0.2:80", .owner = "web"},
                 {.host = a, .target = "10.88.0.3:80", .owner = "other"},
                 {.host = a, .target = "127.0.0.1:80", .owner = "auto", .auto_forward = true}});
  ASSERT_EQ(table.size(), 2u);
  EXPECT_TRUE(table[0].listening);
  EXPECT_EQ(table[0].want.owner, "web");
  EXPECT_FALSE(table[1].listening);
  EXPECT_EQ(table[1].want.owner, "other");
  EXPECT_NE(table[1].error.find("published by web already"), std::string::npos) << table[1].error;
  EXPECT_EQ(opened, 1);
}

TEST(PortPublisherTest, TheTableSurvivesJsonBothWaysAndBadJsonIsRefused) {
  std::vector<PublishState> table = {
      {.want = {.host = {.protocol = Protocol::kUdp, .ip = "::1", .port = 53},
                .target = "10.88.0.2:53",
                .owner = "dns"},
       .listening = true},
      {.want = {.host = {.ip = "127.0.0.1", .port = 8080},
                .target = "127.0.0.1:8080",
                .owner = "auto",
                .auto_forward = true},
       .listening = false,
       .error = "in use"}};
  auto back = ParsePublishTableJson(PublishTableJson(table));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].want, table[0].want);
  EXPECT_TRUE((*back)[0].listening);
  EXPECT_EQ((*back)[1].want, table[1].want);
  EXPECT_EQ((*back)[1].error, "in use");
  for (const char* bad : {"", "[]", R"({"forwards": 1})",
                          R"({"forwards": [{"protocol": "sctp", "host_ip": "x", "host_port": 1}]})",
                          R"({"forwards": [{"protocol": "tcp", "host_ip": "x", "host_port": 0}]})",
                          R"({"forwards": [{"protocol": "tcp", "host_ip": "x", "host_port": 1,
                               "listening": "yes"}]})"}) {
    EXPECT_FALSE(ParsePublishTableJson(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace fun::vm
