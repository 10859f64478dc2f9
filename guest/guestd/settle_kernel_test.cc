// settle_kernel_test: what fun-guestd --settle-kernel does, on this host. CPUs go offline in a
// fake sysfs (never this host's); the device program is attached to a real cgroup v2 of this
// host (one of the test's own, removed after); the bridge is made in a network namespace of
// the test's own. That the VM's kernel then patches nothing when the first container starts is
// the harness's step first_container_patches_no_kernel_text.
#include "guest/guestd/settle_kernel.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "lib/base/files.h"
#include "lib/base/unique_fd.h"

namespace fun::guestd {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A fake /sys/devices/system/cpu: cpuN/online holding `state` ("" = no online file).
class FakeCpus {
 public:
  explicit FakeCpus(const std::vector<std::string>& states) {
    dir_ = fs::temp_directory_path() / ("fun-settle-cpus-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    for (size_t i = 0; i < states.size(); ++i) {
      fs::create_directories(dir_ / ("cpu" + std::to_string(i)));
      if (!states[i].empty()) std::ofstream(Online(static_cast<int>(i))) << states[i] << "\n";
    }
    // What else lives there: not CPUs.
    fs::create_directories(dir_ / "cpufreq");
    fs::create_directories(dir_ / "cpuidle");
    std::ofstream(dir_ / "online") << "0-3\n";
  }
  ~FakeCpus() { fs::remove_all(dir_); }
  std::string dir() const { return dir_.string(); }
  std::string Online(int cpu) const { return (dir_ / ("cpu" + std::to_string(cpu)) / "online"); }
  char State(int cpu) const { return Slurp(Online(cpu))[0]; }

 private:
  fs::path dir_;
};

TEST(SettleKernelTest, TakesEveryOnlineCpuButTheBootCpuOfflineAndBack) {
  FakeCpus cpus({"", "1", "0", "1"});  // cpu0 cannot go offline; cpu2 is offline already
  auto off = TakeSecondaryCpusOffline(cpus.dir());
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(*off, (std::vector<int>{1, 3}));
  EXPECT_EQ(cpus.State(1), '0');
  EXPECT_EQ(cpus.State(2), '0');
  EXPECT_EQ(cpus.State(3), '0');
  ASSERT_TRUE(BringCpusOnline(cpus.dir(), *off).ok());
  EXPECT_EQ(cpus.State(1), '1');
  EXPECT_EQ(cpus.State(2), '0');  // it was offline before: it stays so
  EXPECT_EQ(cpus.State(3), '1');
}

TEST(SettleKernelTest, KeepsTheLowestCpuWhenEveryCpuMayGoOffline) {
  FakeCpus cpus({"1", "1"});
  auto off = TakeSecondaryCpusOffline(cpus.dir());
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(*off, (std::vector<int>{1}));
  EXPECT_EQ(cpus.State(0), '1');
}

TEST(SettleKernelTest, OneCpuOrNoCpuDirectoryIsAnErrorOnlyWhenTheDirectoryIsMissing) {
  FakeCpus one({""});
  auto off = TakeSecondaryCpusOffline(one.dir());
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_TRUE(off->empty());
  auto missing = TakeSecondaryCpusOffline("/nonexistent/cpu");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/cpu"), std::string::npos);
}

// A cgroup v2 hierarchy of this host: the first cgroup2 mount in /proc/self/mounts.
std::string Cgroup2Root() {
  std::istringstream mounts(Slurp("/proc/self/mounts"));
  std::string dev, dir, type, rest;
  while (mounts >> dev >> dir >> type && std::getline(mounts, rest)) {
    if (type == "cgroup2") return dir;
  }
  return "";
}

class SettleCgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string root = Cgroup2Root();
    ASSERT_FALSE(root.empty()) << "no cgroup2 mount on this host (/proc/self/mounts)";
    cgroup_ = root + "/fun-settle-test-" + std::to_string(::getpid());
  }
  void TearDown() override { ::rmdir(cgroup_.c_str()); }
  std::string cgroup_;
};

TEST_F(SettleCgroupTest, AttachesOneAllowAllDeviceProgramAndOnlyOnce) {
  ASSERT_TRUE(AttachAllowAllDeviceProgram(cgroup_).ok());
  auto n = DeviceProgramsAttached(cgroup_);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1);
  // Again (a second settle): still one.
  ASSERT_TRUE(AttachAllowAllDeviceProgram(cgroup_).ok());
  EXPECT_EQ(DeviceProgramsAttached(cgroup_).value_or(-1), 1);
}

TEST_F(SettleCgroupTest, AProcessInTheCgroupStillOpensDevices) {
  ASSERT_TRUE(AttachAllowAllDeviceProgram(cgroup_).ok());
  // A child moves itself into the cgroup and opens /dev/null and /dev/zero for writing.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::ofstream(cgroup_ + "/cgroup.procs") << ::getpid() << "\n";
    if (Slurp("/proc/self/cgroup").find("fun-settle-test-") == std::string::npos) _exit(3);
    int a = ::open("/dev/null", O_RDWR);
    int b = ::open("/dev/zero", O_RDONLY);
    _exit(a >= 0 && b >= 0 ? 0 : 4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: not moved into the cgroup; 4: a device open failed";
}

TEST(SettleKernelTest, ADirectoryThatIsNoCgroupIsNamedInTheError) {
  const std::string dir =
      fs::temp_directory_path() / ("fun-settle-nocg-" + std::to_string(::getpid()));
  Status s = AttachAllowAllDeviceProgram(dir);
  ::rmdir(dir.c_str());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dir), std::string::npos) << s;
}

// Runs `f` in a child in a network namespace of its own; its exit status.
int InNewNetns(const std::function<int()>& f) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNET) != 0) _exit(90);
    _exit(f());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}

TEST(SettleKernelTest, CreatesAndDeletesABridge) {
  int rc = InNewNetns([] {
    if (!CreateAndDeleteBridge("fun-settle0").ok()) return 1;
    // Deleted: creating it again works, and so does deleting it.
    if (!CreateAndDeleteBridge("fun-settle0").ok()) return 2;
    return fs::exists("/sys/class/net/fun-settle0") ? 3 : 0;
  });
  EXPECT_EQ(rc, 0) << "90: unshare failed; 1, 2: the bridge ioctls failed; 3: left behind";
  Status s = CreateAndDeleteBridge("a-name-longer-than-fifteen");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
}

TEST(SettleKernelTest, LoopbackConnectIsRefusedAndLoopbackDownIsNamed) {
  EXPECT_TRUE(ConnectRefusedOnLoopback().ok());
  // A new network namespace has lo down: the error says so.
  int rc = InNewNetns([] {
    Status s = ConnectRefusedOnLoopback();
    return !s.ok() && s.message().find("is lo up?") != std::string::npos ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
}

TEST(SettleKernelTest, APacketOnLoopbackIsHashedAndLoopbackDownIsNamed) {
  // In a namespace of its own with lo up: this host's lo carries other tests' traffic.
  int rc = InNewNetns([] {
    UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "lo");
    if (!sock || ::ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) return 2;
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    if (::ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) return 2;
    Status s = HashAPacketOnLoopback();
    return s.ok() ? 0 : 1;
  });
  EXPECT_EQ(rc, 0) << "90: unshare failed; 2: setting lo up failed; 1: no frame seen";
  rc = InNewNetns([] {
    Status s = HashAPacketOnLoopback();
    return !s.ok() && s.message().find("is lo up?") != std::string::npos ? 0 : 1;
  });
  EXPECT_EQ(rc, 0);
}

TEST_F(SettleCgroupTest, SettleKernelDoesEveryStepAndBringsTheCpusBack) {
  FakeCpus cpus({"", "1"});
  SettleOptions o;
  o.cpu_dir = cpus.dir();
  o.cgroup = cgroup_;
  o.bridge = "";  // this host's namespace: no bridge
  SettleReport r = SettleKernel(o);
  EXPECT_TRUE(r.errors.empty()) << (r.errors.empty() ? "" : r.errors.front());
  EXPECT_EQ(r.cpus_offlined, (std::vector<int>{1}));
  EXPECT_EQ(cpus.State(1), '1');
  EXPECT_EQ(r.done.size(), 3u);
  EXPECT_EQ(DeviceProgramsAttached(cgroup_).value_or(-1), 1);
}

TEST(SettleKernelTest, AFailedStepIsReportedAndTheCpusStillComeBack) {
  FakeCpus cpus({"", "1"});
  SettleOptions o;
  o.cpu_dir = cpus.dir();
  o.cgroup = "/nonexistent/fun-static-keys";
  o.bridge = "";
  o.connect_loopback = false;
  o.hash_loopback_packet = false;
  SettleReport r = SettleKernel(o);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].find("/nonexistent/fun-static-keys"), std::string::npos) << r.errors[0];
  EXPECT_EQ(cpus.State(1), '1');
}

}  // namespace
}  // namespace fun::guestd
