#include "lib/vm/instance.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <utility>

#include "lib/base/files.h"
#include "lib/vm/instance_agent.h"
#include "lib/vm/instance_state.h"
#include "lib/vm/pidfile.h"

namespace fun::vm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class InstanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/fun-instance-test-XXXXXX";
    home_ = ::mkdtemp(tmpl.data());
    paths_ = *ResolvePaths({.os = Os::kLinux, .home = home_, .fun_home = home_ + "/state"});
  }
  void TearDown() override { std::system(("rm -rf '" + home_ + "'").c_str()); }  // NOLINT
  std::string File(InstanceFileKind k) const { return paths_.InstanceFile("dev", k); }
  static unsigned Mode(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 ? st.st_mode & 0777 : 0;
  }

  std::string home_;
  Paths paths_;
};

TEST_F(InstanceTest, EnsureCreatesAPrivateInstanceWithASecret) {
  auto cfg = EnsureInstance(paths_, "dev", {});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->name, "dev");
  EXPECT_EQ(Mode(paths_.InstanceDir("dev")), 0700u);
  EXPECT_EQ(Mode(File(InstanceFileKind::kConfig)), 0600u);
  EXPECT_EQ(Mode(paths_.InstanceDir("dev") + "/secret"), 0600u);
  ASSERT_EQ(cfg->shares.size(), 1u);  // the home directory, as on a Mac
  EXPECT_EQ(cfg->shares[0].host_path, home_);
  EXPECT_THAT(ListInstances(paths_), ElementsAre("dev"));
}

TEST_F(InstanceTest, ShareFlagsAreAddedOrReplaceTheSameHostFolder) {
  ASSERT_TRUE(EnsureInstance(paths_, "dev", {}).ok());
  auto cfg = EnsureInstance(paths_, "dev",
                            {.shares = {{.host_path = "/srv/data", .read_only = true},
                                        {.host_path = "/opt/src", .guest_path = "/src"}}});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  ASSERT_EQ(cfg->shares.size(), 3u);
  EXPECT_EQ(cfg->shares[1].host_path, "/srv/data");
  EXPECT_EQ(cfg->shares[1].guest_path, "/srv/data");  // the same path, as Lima mounts
  EXPECT_TRUE(cfg->shares[1].read_only);
  EXPECT_FALSE(cfg->shares[1].tag.empty());
  EXPECT_EQ(cfg->shares[2].guest_path, "/src");
  // Saved; the same host folder again replaces its entry (keeping its tag).
  const std::string tag = cfg->shares[1].tag;
  auto again = EnsureInstance(paths_, "dev", {.shares = {{.host_path = "/srv/data"}}});
  ASSERT_TRUE(again.ok());
  ASSERT_EQ(again->shares.size(), 3u);
  EXPECT_FALSE(again->shares[1].read_only);
  EXPECT_EQ(again->shares[1].tag, tag);
  // Two host folders at one place in the VM: the config's own validation refuses it.
  auto clash =
      EnsureInstance(paths_, "dev", {.shares = {{.host_path = "/x", .guest_path = "/src"}}});
  EXPECT_FALSE(clash.ok());
  EXPECT_THAT(clash.status().message(), HasSubstr("guest_path"));
}

TEST(ParseShareFlagTest, FormsAndErrors) {
  auto s = ParseShareFlag("/srv/data");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->host_path, "/srv/data");
  EXPECT_EQ(s->guest_path, "");
  EXPECT_FALSE(s->read_only);
  s = ParseShareFlag("/srv/data/:/data:ro");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->host_path, "/srv/data");
  EXPECT_EQ(s->guest_path, "/data");
  EXPECT_TRUE(s->read_only);
  s = ParseShareFlag("/srv/data:ro");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->guest_path, "");
  EXPECT_TRUE(s->read_only);
  s = ParseShareFlag("/srv/data:/d:cache=loose:ro");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->cache, "loose");
  EXPECT_TRUE(s->read_only);
  EXPECT_EQ(s->guest_path, "/d");
  for (const char* bad : {"", "rel", "/a:rel", "/a:/b:/c", "/a::ro", ":/b", "/a:cache=fast"}) {
    auto r = ParseShareFlag(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("HOST[:GUEST][:ro]")) << bad;
  }
}

TEST_F(InstanceTest, OverridesAreSavedAndValidated) {
  ASSERT_TRUE(EnsureInstance(paths_, "dev", {}).ok());
  auto cfg = EnsureInstance(paths_, "dev", {.cpus = 4, .memory_mib = 4096});
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->cpus, 4);
  auto again = EnsureInstance(paths_, "dev", {});
  EXPECT_EQ(again->cpus, 4);
  EXPECT_EQ(again->memory_mib, 4096);
  auto bad = EnsureInstance(paths_, "dev", {.cpus = 500});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("cpus"));
  EXPECT_EQ(EnsureInstance(paths_, "dev", {})->cpus, 4);  // nothing lost
}

TEST_F(InstanceTest, BadNamesAndMismatchedConfigsAreRefused) {
  EXPECT_FALSE(EnsureInstance(paths_, "../x", {}).ok());
  ASSERT_TRUE(EnsureInstance(paths_, "dev", {}).ok());
  std::ofstream(File(InstanceFileKind::kConfig)) << R"({"name": "prod"})";
  auto r = EnsureInstance(paths_, "dev", {});
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("does not match its directory"));
}

TEST_F(InstanceTest, StatusOfAnAbsentAndAStoppedInstance) {
  EXPECT_EQ(GetInstanceStatus(paths_, "dev").phase, "absent");
  ASSERT_TRUE(EnsureInstance(paths_, "dev", {}).ok());
  InstanceStatus st = GetInstanceStatus(paths_, "dev");
  EXPECT_TRUE(st.exists);
  EXPECT_EQ(st.phase, "stopped");
  EXPECT_EQ(st.hostd.status, PidStatus::kMissing);
  auto j = StatusToJson(st);
  EXPECT_EQ(j["phase"], "stopped");
  EXPECT_EQ(j["config"]["name"], "dev");
}

TEST_F(InstanceTest, RunningStateWithoutALiveHostdIsCrashed) {
  ASSERT_TRUE(EnsureInstance(paths_, "dev", {}).ok());
  InstanceState s{.phase = Phase::kRunning, .accel = "tcg", .started_at_ms = 1000};
  ASSERT_TRUE(SaveInstanceState(paths_.InstanceDir("dev"), s).ok());
  // A pid file naming this very process with a wrong start time: a reused pid, not ours.
  uint64_t start = *ProcessStartTime(::getpid());
  std::ofstream(File(InstanceFileKind::kHostdPid)) << ::getpid() << " " << start + 1 << "\n";
  InstanceStatus st = GetInstanceStatus(paths_, "dev");
  EXPECT_EQ(st.hostd.status, PidStatus::kStale);
  EXPECT_EQ(st.phase, "crashed");
  // With a live hostd (this process stands in for it), the recorded phase is believed.
  ASSERT_TRUE(WritePidFile(File(InstanceFileKind::kHostdPid), ::getpid()).ok());
  EXPECT_EQ(GetInstanceStatus(paths_, "dev").phase, "running");
}

TEST_F(InstanceTest, StopCleansStaleFilesOfADeadInstance) {
  ASSERT_TRUE(EnsureInstance(paths_, "dev", {}).ok());
  InstanceState s{.phase = Phase::kRunning, .started_at_ms = 1000};
  ASSERT_TRUE(SaveInstanceState(paths_.InstanceDir("dev"), s).ok());
  uint64_t start = *ProcessStartTime(::getpid());
  std::ofstream(File(InstanceFileKind::kHostdPid)) << ::getpid() << " " << start + 7 << "\n";
  std::ofstream(File(InstanceFileKind::kVmPid)) << "not a pid file";
  std::ofstream(File(InstanceFileKind::kContainerdSock)) << "";
  Status stopped = StopInstance(paths_, "dev", {});
  ASSERT_TRUE(stopped.ok()) << stopped;
  EXPECT_NE(::access(File(InstanceFileKind::kHostdPid).c_str(), F_OK), 0);
  EXPECT_NE(::access(File(InstanceFileKind::kVmPid).c_str(), F_OK), 0);
  EXPECT_NE(::access(File(InstanceFileKind::kContainerdSock).c_str(), F_OK), 0);
  InstanceStatus st = GetInstanceStatus(paths_, "dev");
  EXPECT_EQ(st.phase, "stopped");
  ASSERT_TRUE(st.state && st.state->last_exit);
  EXPECT_THAT(st.state->last_exit->reason, HasSubstr("cleaned up by stop"));
  // Stopping again is fine; stopping nothing is a clear error.
  EXPECT_TRUE(StopInstance(paths_, "dev", {}).ok());
  EXPECT_EQ(StopInstance(paths_, "nope", {}).code(), Code::kNotFound);
}

TEST_F(InstanceTest, RemoveRefusesARunningInstanceAndDeletesAStoppedOne) {
  ASSERT_TRUE(EnsureInstance(paths_, "dev", {}).ok());
  ASSERT_TRUE(WritePidFile(File(InstanceFileKind::kHostdPid), ::getpid()).ok());
  Status running = RemoveInstance(paths_, "dev");
  EXPECT_EQ(running.code(), Code::kFailedPrecondition);
  EXPECT_THAT(running.message(), HasSubstr("fun-vmctl stop dev"));
  ::unlink(File(InstanceFileKind::kHostdPid).c_str());
  std::ofstream(File(InstanceFileKind::kDataImage)) << "disk";
  ASSERT_TRUE(RemoveInstance(paths_, "dev").ok());
  EXPECT_NE(::access(paths_.InstanceDir("dev").c_str(), F_OK), 0);
  EXPECT_TRUE(ListInstances(paths_).empty());
  EXPECT_EQ(RemoveInstance(paths_, "dev").code(), Code::kNotFound);
}

TEST_F(InstanceTest, OnLinuxTheConsoleIsWhereTheUserLooks) {
  ASSERT_TRUE(EnsureInstance(paths_, "default", {}).ok());
  ASSERT_TRUE(LinkConsoleForUser(paths_, "default").ok());
  EXPECT_EQ(paths_.ConsoleLogForUser("default"),
            paths_.InstanceFile("default", InstanceFileKind::kConsoleLog));
}

// The macOS layout (pure paths, so it runs here): ~/Library/Logs/Fun/linuxkit.log follows the
// instance's console.log, and a restart replaces a stale link or file.
TEST_F(InstanceTest, OnMacosLinuxkitLogFollowsTheConsole) {
  Paths mac = *ResolvePaths({.os = Os::kMacos, .home = home_ + "/mac"});
  ASSERT_TRUE(EnsureInstance(mac, "default", {}).ok());
  const std::string console = mac.InstanceFile("default", InstanceFileKind::kConsoleLog);
  const std::string user = mac.ConsoleLogForUser("default");
  EXPECT_EQ(user, home_ + "/mac/Library/Logs/Fun/linuxkit.log");
  std::ofstream(user) << "stale copy";
  ASSERT_TRUE(LinkConsoleForUser(mac, "default").ok());
  std::ofstream(console) << "fun-init: containerd ready after 4.2 s\n";
  EXPECT_EQ(TailFile(user, 5), "fun-init: containerd ready after 4.2 s\n");
  ASSERT_TRUE(LinkConsoleForUser(mac, "default").ok());  // idempotent
  char target[4096] = {};
  ASSERT_GT(::readlink(user.c_str(), target, sizeof(target) - 1), 0);
  EXPECT_EQ(std::string(target), console);
  ASSERT_TRUE(EnsureInstance(mac, "dev", {}).ok());
  ASSERT_TRUE(LinkConsoleForUser(mac, "dev").ok());
  EXPECT_EQ(mac.ConsoleLogForUser("dev"), home_ + "/mac/Library/Logs/Fun/dev-linuxkit.log");
  ASSERT_TRUE(RemoveInstance(mac, "dev").ok());
  struct stat st {};
  EXPECT_NE(::lstat(mac.ConsoleLogForUser("dev").c_str(), &st), 0) << "rm left the link";
}

// A stand-in fun-hostd (a forked child with hostd.pid naming it): it counts SIGTERMs and ends
// after `terms_to_exit` of them, reporting the count through a pipe.
// (A thread reaps it as soon as it exits, as a real hostd's parent would be gone: a zombie
// would look alive to StopInstance.)
struct StandInHostd {
  pid_t pid = -1;
  int report = -1;
  std::thread reaper;
  static StandInHostd Start(int terms_to_exit) {
    int p[2];
    EXPECT_EQ(::pipe(p), 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigset_t old;
    ::pthread_sigmask(SIG_BLOCK, &set, &old);  // no SIGTERM lost before the child waits
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(p[0]);
      int got = 0;
      while (got < terms_to_exit) {
        int sig = 0;
        if (::sigwait(&set, &sig) == 0 && sig == SIGTERM) ++got;
        char c = static_cast<char>('0' + got);
        (void)!::write(p[1], &c, 1);
      }
      ::_exit(0);
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::close(p[1]);
    StandInHostd h;
    h.pid = pid;
    h.report = p[0];
    h.reaper = std::thread([pid] {
      int st = 0;
      ::waitpid(pid, &st, 0);
    });
    return h;
  }
  std::string Reported() {
    std::string s;
    char c;
    while (::read(report, &c, 1) == 1) s.push_back(c);
    ::close(report);
    report = -1;
    reaper.join();
    return s;
  }
  // A test that failed before Reported(): the stand-in must not outlive it, and a joinable
  // thread destroyed would abort the test binary, hiding the failure's message.
  ~StandInHostd() {
    if (reaper.joinable()) {
      ::kill(pid, SIGKILL);
      reaper.join();
    }
    if (report >= 0) ::close(report);
  }
  StandInHostd() = default;
  StandInHostd(StandInHostd&& o) noexcept
      : pid(o.pid), report(std::exchange(o.report, -1)), reaper(std::move(o.reaper)) {}
  StandInHostd& operator=(StandInHostd&&) = delete;
};

TEST_F(InstanceTest, StopAsksALiveHostdWithOneSigtermAndCleansUp) {
  ASSERT_TRUE(EnsureInstance(paths_, "default", {}).ok());
  StandInHostd h = StandInHostd::Start(1);
  ASSERT_TRUE(
      WritePidFile(paths_.InstanceFile("default", InstanceFileKind::kHostdPid), h.pid).ok());
  InstanceState running{.phase = Phase::kRunning, .started_at_ms = 1};
  ASSERT_TRUE(SaveInstanceState(paths_.InstanceDir("default"), running).ok());
  std::vector<std::string> said;
  Status s = StopInstance(paths_, "default",
                          {.on_progress = [&](std::string_view m) { said.emplace_back(m); }});
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(h.Reported(), "1");
  EXPECT_THAT(said, ElementsAre("shutting the guest down"));
  InstanceStatus st = GetInstanceStatus(paths_, "default");
  EXPECT_EQ(st.hostd.status, PidStatus::kMissing);
  EXPECT_EQ(st.phase, "stopped");
}

TEST_F(InstanceTest, ForcedStopSendsASecondSigterm) {
  ASSERT_TRUE(EnsureInstance(paths_, "default", {}).ok());
  StandInHostd h = StandInHostd::Start(2);
  ASSERT_TRUE(
      WritePidFile(paths_.InstanceFile("default", InstanceFileKind::kHostdPid), h.pid).ok());
  Status s = StopInstance(paths_, "default", {.force = true});
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(h.Reported(), "12") << "hostd turns the second SIGTERM into a forced stop";
}

// A live hostd whose state says stopped: its own run ended (it is removing its pid files) ->
// "stopped"; the previous run's state (this hostd has not written its own yet) -> "starting".
TEST_F(InstanceTest, ALiveHostdWithAStoppedStateIsStoppedOnlyWhenItsOwnRunEnded) {
  ASSERT_TRUE(EnsureInstance(paths_, "default", {}).ok());
  ASSERT_TRUE(
      WritePidFile(paths_.InstanceFile("default", InstanceFileKind::kHostdPid), ::getpid()).ok());
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  InstanceState ended{.phase = Phase::kStopped, .started_at_ms = now_ms - 10};
  ended.last_exit = LastExit{.reason = "qemu killed by signal 9 (SIGKILL)", .at_ms = now_ms};
  ASSERT_TRUE(SaveInstanceState(paths_.InstanceDir("default"), ended).ok());
  EXPECT_EQ(GetInstanceStatus(paths_, "default").phase, "stopped");

  const double up = ProcessUptimeSeconds(::getpid()).value_or(0);
  InstanceState previous{.phase = Phase::kStopped,
                         .started_at_ms = now_ms - static_cast<int64_t>(up * 1000) - 60000};
  previous.last_exit =
      LastExit{.reason = "stopped on request", .at_ms = previous.started_at_ms + 1000};
  ASSERT_TRUE(SaveInstanceState(paths_.InstanceDir("default"), previous).ok());
  EXPECT_EQ(GetInstanceStatus(paths_, "default").phase, "starting");
  ::unlink(paths_.InstanceFile("default", InstanceFileKind::kHostdPid).c_str());
}

TEST_F(InstanceTest, TheAgentEndpointFollowsTheBackendInStateJson) {
  ASSERT_TRUE(EnsureInstance(paths_, "dev", {}).ok());
  std::string dir = paths_.InstanceDir("dev");
  EXPECT_FALSE(InstanceAgentEndpoint(dir, "dev").ok());  // never started: no state.json
  ASSERT_TRUE(SaveInstanceState(dir, {.phase = Phase::kStopped}).ok());
  EXPECT_EQ(InstanceAgentEndpoint(dir, "dev").status().code(), Code::kUnavailable);
  // qemu: the loopback port forwarded to the agent.
  ASSERT_TRUE(SaveInstanceState(dir, {.phase = Phase::kRunning, .agent_port = 41234}).ok());
  auto qemu = InstanceAgentEndpoint(dir, "dev");
  ASSERT_TRUE(qemu.ok()) << qemu.status();
  EXPECT_EQ(qemu->address.ToString(), "tcp:127.0.0.1:41234");
  EXPECT_EQ(qemu->vsock_connect_port, 0u);
  // hyperkit: the virtio-sock connect socket and the guest's vsock port, kept through a reload.
  InstanceState hk{.phase = Phase::kRunning,
                   .backend = "hyperkit",
                   .agent_vsock_connect = dir + "/vsock/connect",
                   .agent_vsock_port = 7070};
  ASSERT_TRUE(SaveInstanceState(dir, hk).ok());
  auto loaded = LoadInstanceState(dir);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(*loaded, hk);
  auto ep = InstanceAgentEndpoint(dir, "dev");
  ASSERT_TRUE(ep.ok()) << ep.status();
  EXPECT_EQ(ep->address.ToString(), "unix:" + dir + "/vsock/connect");
  EXPECT_EQ(ep->vsock_connect_port, 7070u);
  EXPECT_FALSE(StateFromJson(R"({"agent_vsock_port": "x"})").ok());
}

TEST(DescribeGuestEndTest, PanicRebootOrPowerOffFromTheConsole) {
  // The end of a real boot with too little memory for the initrd (session 6).
  EXPECT_EQ(DescribeGuestEnd("[    3.990657] Failed to execute /init (error -2)\n"
                             "[    3.992777] Kernel panic - not syncing: No working init found.  "
                             "Try passing init= option to kernel.\n"
                             "[    3.999115] Rebooting in 1 seconds..\n"),
            "the guest kernel panicked: No working init found.  Try passing init= option to "
            "kernel (the console has the lines before it)");
  EXPECT_EQ(DescribeGuestEnd("[ 9.1] reboot: Restarting system\n"),
            "the guest rebooted itself (the VM runs with -no-reboot: a reboot ends it)");
  EXPECT_EQ(DescribeGuestEnd("[ 9.1] reboot: Power down\n"), "the guest powered off");
  EXPECT_EQ(DescribeGuestEnd(""), "the guest powered off");
  // Control characters from the guest never reach state.json raw.
  EXPECT_EQ(DescribeGuestEnd("Kernel panic - not syncing: a\x1b[0mb"),
            "the guest kernel panicked: a?[0mb (the console has the lines before it)");
}

}  // namespace
}  // namespace fun::vm
