// ShareMounter's relay, with a pseudo-terminal in raw mode standing in for the virtio-serial
// port (both are character devices that carry bytes both ways; a VM is needed for the real
// port, and the harness mounts real shares with the kernel's v9fs through it).
#include "guest/guestd/shares.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "guest/guestd/guestd.h"
#include "lib/base/files.h"
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
    options_.virtio_devices_dir = dir_ + "/virtio";  // none unless a test makes some
    options_.mount = false;
    options_.settle_timeout = 2s;
    options_.relay_binary = FUN_GUESTD_BINARY;
  }
  void TearDown() override {
    // The relays outlive their ShareMounter by design: end them here.
    for (const auto& e : fs::directory_iterator(dir_ + "/p9", ec_)) {
      if (e.path().extension() == ".relay") {
        int pid = std::atoi(ReadFileToString(e.path()).value_or("0").c_str());
        if (pid > 1) ::kill(pid, SIGKILL);
      }
    }
    // A relay killed just now may still finish a write of its stats file (home.stats.tmp,
    // renamed over home.stats) while the tree is being removed: a file vanishing under
    // remove_all is an error, once seen in CI; try again.
    for (int i = 0; i < 100; ++i) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
      if (!ec) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // Waits until `pred(state of share 0)` holds (5 s at most).
  template <typename Pred>
  ShareMounter::State WaitFor(ShareMounter& m, Pred pred) {
    for (int i = 0; i < 250; ++i) {
      auto st = m.States();
      if (!st.empty() && pred(st[0])) return st[0];
      std::this_thread::sleep_for(20ms);
    }
    ADD_FAILURE() << "share 0 never reached the state; last: " << m.States()[0].status;
    return m.States()[0];
  }

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
  std::error_code ec_;
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
  EXPECT_GT(st[0].relay_pid, 1);
  EXPECT_FALSE(st[0].adopted);
  c2.reset();
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
  EXPECT_NE(st[1].error.find("neither a virtio-9p device tagged other nor a virtio-serial port "
                             "named fun.p9.other"),
            std::string::npos)
      << st[1].error;
}

// The relay is a process of its own: a new fun-guestd (a new ShareMounter) finds it running
// and keeps it, and the connection through it (the mount) never notices; when the relay dies,
// a new one takes over the port.
TEST_F(SharesTest, TheRelayOutlivesFunGuestdAndIsAdopted) {
  auto m = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home/me"}});
  ASSERT_TRUE(m.ok());
  const std::string sock = (*m)->SocketPath("home");
  UniqueFd c = ConnectWhenReady(sock);
  ASSERT_TRUE(WriteAll(c.get(), "x").ok());
  EXPECT_EQ(ReadN(master_.get(), 1), "x");
  const int relay = WaitFor(**m, [](const auto& s) { return s.relay_pid > 0; }).relay_pid;
  EXPECT_EQ(ReadFileToString((*m)->RelayPidPath("home")).value(), std::to_string(relay) + "\n");
  EXPECT_EQ(ReadFileToString("/proc/" + std::to_string(relay) + "/comm").value(), "fun-p9-relay\n");

  m->reset();  // fun-guestd goes away: the relay and the connection stay
  ASSERT_TRUE(WriteAll(c.get(), "y").ok());
  EXPECT_EQ(ReadN(master_.get(), 1), "y");
  ASSERT_TRUE(WriteAll(master_.get(), "z").ok());
  EXPECT_EQ(ReadN(c.get(), 1), "z");

  auto m2 = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home/me"}});
  ASSERT_TRUE(m2.ok());
  auto st = WaitFor(**m2, [](const auto& s) { return s.status == "relaying"; });
  EXPECT_TRUE(st.adopted);
  EXPECT_EQ(st.relay_pid, relay);
  ASSERT_TRUE(WriteAll(c.get(), "w").ok());
  EXPECT_EQ(ReadN(master_.get(), 1), "w");

  // The relay dies: its connection ends, and a new relay serves the next one.
  ASSERT_EQ(::kill(relay, SIGKILL), 0);
  char b;
  EXPECT_EQ(::read(c.get(), &b, 1), 0);
  st = WaitFor(**m2, [&](const auto& s) { return s.status == "relaying" && s.relay_pid != relay; });
  EXPECT_FALSE(st.adopted);
  UniqueFd c2 = ConnectWhenReady(sock);
  ASSERT_TRUE(WriteAll(c2.get(), "again").ok());
  EXPECT_EQ(ReadN(master_.get(), 5), "again");
}

TEST(ReadShareVsockPortTest, APortNumberNoFileOrAClearError) {
  fs::path dir = fs::temp_directory_path() / ("fun-vsock-port-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::string f = (dir / "raw").string();
  // No file: the host serves the shares on serial ports.
  EXPECT_EQ(ReadShareVsockPort(f).value_or(99), 0u);
  std::ofstream(f) << "564";  // fw_cfg's string= has no newline
  EXPECT_EQ(ReadShareVsockPort(f).value_or(0), 564u);
  std::ofstream(f) << "4294967295\n";
  EXPECT_EQ(ReadShareVsockPort(f).value_or(0), 4294967295u);
  for (const char* bad : {"", "0", "4294967296", "56a", "-1", "99999999999"}) {
    std::ofstream(f) << bad;
    auto p = ReadShareVsockPort(f);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_NE(p.status().message().find("no vsock port number"), std::string::npos) << p.status();
  }
  fs::remove_all(dir);
}

TEST(FindVirtioPortTest, FindsByNameOrSaysWhere) {
  EXPECT_FALSE(FindVirtioPort("/nonexistent", "x").ok());
  auto r = FindVirtioPort("/sys/class/virtio-ports", "fun.p9.surely-not-here");
  EXPECT_FALSE(r.ok());
}

// A virtio device as sysfs shows it: its id, and the 9P tag once 9pnet_virtio has bound it.
void MakeVirtioDevice(const std::string& dir, const std::string& name, const std::string& id,
                      const char* mount_tag) {
  fs::create_directories(dir + "/" + name);
  std::ofstream(dir + "/" + name + "/device") << id << "\n";
  if (mount_tag != nullptr) std::ofstream(dir + "/" + name + "/mount_tag") << mount_tag;
}

TEST_F(SharesTest, FindsAVirtio9pDeviceByItsTag) {
  const std::string v = dir_ + "/virtio";
  EXPECT_EQ(FindVirtio9pTag(v, "home"), Virtio9pTag::kAbsent);  // no directory at all
  MakeVirtioDevice(v, "virtio0", "0x0001", nullptr);            // a network device
  MakeVirtioDevice(v, "virtio1", "0x0009", "work");             // another share
  EXPECT_EQ(FindVirtio9pTag(v, "home"), Virtio9pTag::kAbsent);
  MakeVirtioDevice(v, "virtio2", "0x0009", nullptr);  // its driver is still loading
  EXPECT_EQ(FindVirtio9pTag(v, "home"), Virtio9pTag::kUnbound);
  // Older kernels print the tag bare, newer ones with a newline.
  std::ofstream(v + "/virtio2/mount_tag") << "home\n";
  EXPECT_EQ(FindVirtio9pTag(v, "home"), Virtio9pTag::kFound);
  EXPECT_EQ(FindVirtio9pTag(v, "work"), Virtio9pTag::kFound);
  EXPECT_EQ(FindVirtio9pTag(v, "hom"), Virtio9pTag::kAbsent);
}

TEST_F(SharesTest, AVirtio9pDeviceWinsOverThePortAndNeedsNoRelay) {
  // As with HyperKit: the device carries 9P to the host's server; nothing to relay.
  MakeVirtioDevice(dir_ + "/virtio", "virtio3", "0x0009", "home");
  auto m = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home"}});
  ASSERT_TRUE(m.ok()) << m.status();
  auto st = WaitFor(**m, [](const auto& s) { return s.status != "waiting"; });
  EXPECT_EQ(st.status, "found");
  EXPECT_EQ(st.relay_pid, 0);
  EXPECT_FALSE(fs::exists((*m)->SocketPath("home")));
}

TEST_F(SharesTest, AVirtio9pDeviceWinsOverTheVsockPortToo) {
  MakeVirtioDevice(dir_ + "/virtio", "virtio3", "0x0009", "home");
  options_.vsock_port = 564;
  auto m = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home"}});
  ASSERT_TRUE(m.ok()) << m.status();
  auto st = WaitFor(**m, [](const auto& s) { return s.status != "waiting"; });
  EXPECT_EQ(st.status, "found");
}

TEST_F(SharesTest, WithAVsockPortTheShareDialsTheHostAndSaysWhyItCannot) {
  // This host has no vsock transport to a CID 2 (it is no VM): the dial fails until the
  // deadline, and the share says so; no relay, no serial port is tried.
  options_.vsock_port = 564;
  options_.settle_timeout = 600ms;
  auto m = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home"}});
  ASSERT_TRUE(m.ok()) << m.status();
  auto st = WaitFor(**m, [](const auto& s) { return s.status == "failed"; });
  EXPECT_EQ(st.status, "failed");
  EXPECT_EQ(st.error.rfind("vsock: ", 0), 0u) << st.error;
  EXPECT_EQ(st.relay_pid, 0);
  EXPECT_FALSE(fs::exists((*m)->SocketPath("home")));
}

TEST_F(SharesTest, AnUnbound9pDeviceIsWaitedForThenThePortIsUsed) {
  // A 9P device whose driver never binds (a module missing): at the deadline the port serves.
  MakeVirtioDevice(dir_ + "/virtio", "virtio3", "0x0009", nullptr);
  options_.settle_timeout = 500ms;
  auto m = ShareMounter::Start(options_, {{.tag = "home", .guest_path = "/home"}});
  ASSERT_TRUE(m.ok()) << m.status();
  auto st = WaitFor(**m, [](const auto& s) { return s.status == "relaying"; });
  EXPECT_GT(st.relay_pid, 0);
}

}  // namespace
}  // namespace fun::guestd
