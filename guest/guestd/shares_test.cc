// ShareMounter's relay, with a pseudo-terminal in raw mode standing in for the virtio-serial
// port (both are character devices that carry bytes both ways; a VM is needed for the real
// port, and the harness mounts real shares with the kernel's v9fs through it).
#include "guest/guestd/shares.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "lib/base/socket.h"

namespace fun::guestd {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class SharesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/fun-shares-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ + "/ports/vport1p1");
    fs::create_directories(dir_ + "/dev");
    std::ofstream(dir_ + "/ports/vport1p1/name") << "fun.p9.home\n";
    // The host end of the "port": a pty master; the guest opens the slave by its /dev name.
    master_ = UniqueFd(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    ASSERT_TRUE(master_.valid());
    ASSERT_EQ(::grantpt(master_.get()), 0);
    ASSERT_EQ(::unlockpt(master_.get()), 0);
    std::string slave = ::ptsname(master_.get());
    // Raw mode on the slave side, as a virtio port is: no echo, no line discipline.
    UniqueFd s(::open(slave.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
    ASSERT_TRUE(s.valid());
    termios t{};
    ASSERT_EQ(::tcgetattr(s.get(), &t), 0);
    ::cfmakeraw(&t);
    ASSERT_EQ(::tcsetattr(s.get(), TCSANOW, &t), 0);
    slave_keep_ = std::move(s);
    fs::create_symlink(slave, dir_ + "/dev/vport1p1");
    options_.socket_dir = dir_ + "/p9";
    options_.ports_dir = dir_ + "/ports";
    options_.dev_dir = dir_ + "/dev";
    options_.mount = false;
    options_.settle_timeout = 2s;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Reads exactly n bytes from fd (5 s at most).
  std::string ReadN(int fd, size_t n) {
    std::string out;
    while (out.size() < n) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) break;
      char buf[4096];
      ssize_t r = ::read(fd, buf, std::min(sizeof buf, n - out.size()));
      if (r <= 0) break;
      out.append(buf, static_cast<size_t>(r));
    }
    return out;
  }

  UniqueFd ConnectWhenReady(const std::string& path) {
    for (int i = 0; i < 100; ++i) {
      auto c = Connect(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = path});
      if (c.ok()) return std::move(*c);
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << "nothing listens on " << path;
    return UniqueFd();
  }

  std::string dir_;
  UniqueFd master_, slave_keep_;
  ShareMounter::Options options_;
};

TEST_F(SharesTest, RelaysEachConnectionToThePortAndDropsStaleBytes) {
  auto m = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home/me"}});
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string sock = (*m)->SocketPath("home");
  EXPECT_EQ(sock, dir_ + "/p9/home.sock");

  UniqueFd c = ConnectWhenReady(sock);
  ASSERT_TRUE(c.valid());
  ASSERT_TRUE(WriteAll(c.get(), "Tversion").ok());
  EXPECT_EQ(ReadN(master_.get(), 8), "Tversion");
  ASSERT_TRUE(WriteAll(master_.get(), "Rversion").ok());
  EXPECT_EQ(ReadN(c.get(), 8), "Rversion");
  // The socket and its directory are the VM's root's only.
  EXPECT_EQ(fs::status(dir_ + "/p9").permissions() & fs::perms::all, fs::perms::owner_all);

  // The mount goes away with a reply still in flight: the next session must not see it.
  c.reset();
  for (int i = 0; i < 100 && (*m)->States()[0].connections == 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ((*m)->States()[0].connections, 1u);
  ASSERT_TRUE(WriteAll(master_.get(), "stale").ok());
  std::this_thread::sleep_for(100ms);  // the stale bytes reach the slave side
  UniqueFd c2 = ConnectWhenReady(sock);
  ASSERT_TRUE(WriteAll(c2.get(), "again").ok());
  EXPECT_EQ(ReadN(master_.get(), 5), "again");
  ASSERT_TRUE(WriteAll(master_.get(), "fresh").ok());
  EXPECT_EQ(ReadN(c2.get(), 5), "fresh");

  auto st = (*m)->States();
  ASSERT_EQ(st.size(), 1u);
  EXPECT_EQ(st[0].status, "relaying");
  EXPECT_EQ(st[0].bytes_to_host, 8u);  // the first connection's, counted when it ended
  EXPECT_EQ(st[0].bytes_from_host, 8u);
  c2.reset();
  (*m)->Stop();
  m->reset();
  EXPECT_FALSE(fs::exists(sock));
}

TEST_F(SharesTest, AMissingPortFailsThatShareOnlyWithAReason) {
  options_.settle_timeout = 300ms;
  auto m = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home/me"},
                                          {.tag = "other", .guest_path = "/srv"}});
  ASSERT_TRUE(m.ok()) << m.status();
  for (int i = 0; i < 100; ++i) {
    if ((*m)->States()[1].status == "failed") break;
    std::this_thread::sleep_for(20ms);
  }
  auto st = (*m)->States();
  EXPECT_EQ(st[0].status, "relaying");
  EXPECT_EQ(st[1].status, "failed");
  EXPECT_NE(st[1].error.find("no virtio-serial port named fun.p9.other"), std::string::npos)
      << st[1].error;
}

TEST_F(SharesTest, StopEndsALiveRelay) {
  auto m = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home/me"}});
  ASSERT_TRUE(m.ok());
  UniqueFd c = ConnectWhenReady((*m)->SocketPath("home"));
  ASSERT_TRUE(WriteAll(c.get(), "x").ok());
  EXPECT_EQ(ReadN(master_.get(), 1), "x");
  m->reset();  // returns: the relay was cancelled, the client sees EOF
  char b;
  EXPECT_EQ(::read(c.get(), &b, 1), 0);
}

TEST(FindVirtioPortTest, FindsByNameOrSaysWhere) {
  EXPECT_FALSE(FindVirtioPort("/nonexistent", "x").ok());
  auto r = FindVirtioPort("/sys/class/virtio-ports", "fun.p9.surely-not-here");
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace fun::guestd
