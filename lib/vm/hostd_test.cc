// Unit tests of fun-hostd's core (Hostd) without a VM. A FakeProcessRunner stands in for QEMU
// (the test ends it, or watches the signals Hostd sends it); the guest agent is either a small
// in-test agent speaking lib/net/agent_protocol.h on loopback (TestAgent: it records shutdown and
// time sync requests) or the real fun-guestd binary running natively (for the containerd.sock
// relay); a fake QMP server on <instance>/qmp.sock records the ACPI step. Sockets and files are
// real, in a temp FUN_HOME.
//
// Timing: nothing asserts how fast anything is. Deadlines are generous (kDeadline) and only
// bound waits for what must happen; short stop timeouts appear only where a step is expected
// NOT to end the VM, so the test does not wait long for the next step.
#include "lib/vm/hostd.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "lib/base/accept_loop.h"
#include "lib/base/fake_process.h"
#include "lib/base/files.h"
#include "lib/base/socket.h"
#include "lib/net/agent_client.h"
#include "lib/net/agent_protocol.h"
#include "lib/net/port_check.h"
#include "lib/net/splice.h"
#include "lib/p9/codec.h"
#include "lib/p9/messages.h"
#include "lib/vm/instance.h"
#include "lib/vm/instance_agent.h"
#include "lib/vm/instance_state.h"
#include "lib/vm/pidfile.h"
#include "lib/vsock/packet.h"

namespace fun::vm {
namespace {

using namespace std::chrono_literals;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// Bounds every wait for something that must happen; never a measure of speed.
constexpr std::chrono::milliseconds kDeadline = 60s;
constexpr char kQemu[] = "qemu-system-x86_64";
constexpr char kHyperkit[] = "hyperkit";

// Polls `cond` until it holds or kDeadline passes (for files written by another process or
// thread, which have nothing to wait on).
template <typename F>
bool Eventually(F cond) {
  auto end = std::chrono::steady_clock::now() + kDeadline;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

int64_t WallMs(Clock& c) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(c.Now().time_since_epoch()).count();
}

// An AcceptLoop serving on a thread of its own until destroyed (the stand-ins below hold one,
// declared last, so it stops before the members its handler uses go away).
class ServingLoop {
 public:
  ServingLoop(const SocketAddress& address, AcceptLoop::Handler handler) {
    auto loop = AcceptLoop::Create(address, std::move(handler));
    EXPECT_TRUE(loop.ok()) << loop.status();
    loop_ = std::move(*loop);
    thread_ = std::thread([this] { (void)loop_->Run(); });
  }
  ~ServingLoop() {
    loop_->Stop();
    thread_.join();
  }
  std::string address() const { return loop_->address(); }

 private:
  std::unique_ptr<AcceptLoop> loop_;
  std::thread thread_;
};

// What the stand-ins saw, in order ("agent:shutdown", "qmp:system_powerdown", ...).
class Events {
 public:
  void Add(std::string e) {
    std::lock_guard lock(mu_);
    events_.push_back(std::move(e));
    cv_.notify_all();
  }
  std::vector<std::string> Get() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  // Without time syncs (they come every interval; the stop tests do not care).
  std::vector<std::string> StopSteps() const {
    std::vector<std::string> out;
    for (const std::string& e : Get()) {
      if (e != "agent:timesync") out.push_back(e);
    }
    return out;
  }
  // Waits until `e` has been seen `times` times.
  bool WaitFor(const std::string& e, int times = 1) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kDeadline,
                        [&] { return std::count(events_.begin(), events_.end(), e) >= times; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
};

// A guest agent on 127.0.0.1 speaking the agent protocol: answers pings (containerd ready or
// not, as the test says), records shutdown and time sync requests and runs the test's reaction
// to a shutdown before replying (as fun-guestd replies before the power-off it starts); its
// "containerd" is an echo.
class TestAgent {
 public:
  TestAgent(const agent::Token& token, Events* events) : token_(token), events_(events) {
    loop_ = std::make_unique<ServingLoop>(*ParseSocketAddress("tcp:127.0.0.1:0"),
                                          [this](UniqueFd c, std::string) { Serve(c.get()); });
  }
  uint16_t port() const { return ParseSocketAddress(loop_->address())->port; }
  void SetContainerdReady(bool ready) { containerd_ready_ = ready; }
  void OnShutdown(std::function<void()> f) {
    std::lock_guard lock(mu_);
    on_shutdown_ = std::move(f);
  }
  // The guest's clock against this machine's real one (> 0: ahead); time syncs step it.
  void SetClockSkew(std::chrono::nanoseconds skew) { clock_skew_ns_ = skew.count(); }
  static int64_t RealNowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  std::vector<int64_t> time_syncs() const {
    std::lock_guard lock(mu_);
    return time_syncs_;
  }

 private:
  void Serve(int fd) {
    std::string buf;
    std::optional<std::pair<agent::Request, size_t>> got;
    while (!got) {
      char b[512];
      ssize_t n = ::read(fd, b, sizeof(b));
      if (n <= 0) return;
      buf.append(b, static_cast<size_t>(n));
      auto d = agent::DecodeRequest(buf);
      if (!d.ok()) return;
      got = *d;
    }
    const agent::Request& r = got->first;
    agent::Reply reply;
    if (!agent::TokensEqual(r.token, token_)) {
      reply = {.status = agent::ReplyStatus::kBadToken, .message = "bad token"};
    } else {
      switch (r.kind) {
        case agent::Kind::kPing:
          reply.message = nlohmann::json{{"version", "test"},
                                         {"uptime_s", 1.5},
                                         {"containerd", containerd_ready_.load()},
                                         {"time_unix_ns", RealNowNs() + clock_skew_ns_.load()}}
                              .dump();
          break;
        case agent::Kind::kShutdown: {
          events_->Add("agent:shutdown");
          std::function<void()> f;
          {
            std::lock_guard lock(mu_);
            f = on_shutdown_;
          }
          if (f) f();
          break;
        }
        case agent::Kind::kTimeSync: {
          {
            std::lock_guard lock(mu_);
            time_syncs_.push_back(static_cast<int64_t>(r.arg));
          }
          clock_skew_ns_ += static_cast<int64_t>(r.arg);  // as the guest steps its clock
          events_->Add("agent:timesync");
          break;
        }
        case agent::Kind::kContainerd:
          // The guest's containerd: an echo, after the reply.
          if (!WriteAll(fd, *agent::EncodeReply(reply)).ok()) return;
          if (got->second < buf.size() &&
              !WriteAll(fd, std::string_view(buf).substr(got->second)).ok()) {
            return;
          }
          for (;;) {
            char b[4096];
            ssize_t n = ::read(fd, b, sizeof(b));
            if (n <= 0 || !WriteAll(fd, std::string_view(b, static_cast<size_t>(n))).ok()) return;
          }
        default:
          reply = {.status = agent::ReplyStatus::kBadRequest, .message = "not in this test"};
      }
    }
    (void)WriteAll(fd, *agent::EncodeReply(reply));
  }

  const agent::Token token_;
  Events* const events_;
  std::atomic<bool> containerd_ready_{true};
  mutable std::mutex mu_;
  std::function<void()> on_shutdown_;
  std::vector<int64_t> time_syncs_;
  std::atomic<int64_t> clock_skew_ns_{0};
  std::unique_ptr<ServingLoop> loop_;
};

// QEMU's QMP socket as far as Hostd uses it: a greeting, then one JSON command per line, each
// answered with {"return": {}}. Records every command but the capabilities handshake and runs
// the test's reaction before answering.
class FakeQmp {
 public:
  FakeQmp(const std::string& path, Events* events) : events_(events) {
    loop_ = std::make_unique<ServingLoop>(
        SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = path},
        [this](UniqueFd c, std::string) { Serve(c.get()); });
  }
  void OnCommand(std::function<void(const std::string&)> f) {
    std::lock_guard lock(mu_);
    on_command_ = std::move(f);
  }

 private:
  void Serve(int fd) {
    if (!WriteAll(fd, R"({"QMP": {"version": {}, "capabilities": []}})"
                      "\n")
             .ok())
      return;
    std::string buf;
    for (;;) {
      size_t nl;
      while ((nl = buf.find('\n')) == std::string::npos) {
        char b[512];
        ssize_t n = ::read(fd, b, sizeof(b));
        if (n <= 0) return;
        buf.append(b, static_cast<size_t>(n));
      }
      auto j = nlohmann::json::parse(buf.substr(0, nl), nullptr, false);
      buf.erase(0, nl + 1);
      std::string cmd = j.is_object() && j.contains("execute") ? j["execute"].dump() : "?";
      if (j.is_object() && j.contains("execute") && j["execute"].is_string()) {
        cmd = j["execute"].get<std::string>();
      }
      if (cmd != "qmp_capabilities") {
        events_->Add("qmp:" + cmd);
        std::function<void(const std::string&)> f;
        {
          std::lock_guard lock(mu_);
          f = on_command_;
        }
        if (f) f(cmd);
      }
      if (!WriteAll(fd, "{\"return\": {}}\n").ok()) return;
    }
  }

  Events* const events_;
  std::mutex mu_;
  std::function<void(const std::string&)> on_command_;
  std::unique_ptr<ServingLoop> loop_;
};

// A real process that stands in for QEMU's pid (pid files record a live pid's start time).
struct PidDonor {
  PidDonor() {
    auto p = ProcessRunner::Default().Start(
        Command{.program = "sleep", .args = {"600"}, .capture_output = false});
    EXPECT_TRUE(p.ok()) << p.status();
    process = std::move(*p);
  }
  ~PidDonor() { (void)process->Terminate(5s); }
  int pid() const { return process->pid(); }
  std::unique_ptr<Process> process;
};

// A Hostd running on a thread, and the fake QEMU it started.
struct RunningHostd {
  RunningHostd() = default;
  RunningHostd(RunningHostd&&) = default;
  // A test that failed half-way must not hang here: end the VM so Run returns.
  ~RunningHostd() {
    if (!run.valid()) return;
    if (vm) vm->KillBySignal(SIGKILL);
    run.wait();
  }

  std::unique_ptr<Hostd> hostd;
  std::future<Status> run;
  std::shared_ptr<FakeProcess> vm;

  // Run's result, once the VM has ended and Hostd has cleaned up.
  Status Join() {
    if (run.wait_for(kDeadline) != std::future_status::ready) {
      ADD_FAILURE() << "Hostd::Run did not return within " << kDeadline.count() << " ms";
      if (vm) vm->KillBySignal(SIGKILL);
    }
    return run.get();
  }
};

class HostdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/fun-hostd-test-XXXXXX";
    home_ = ::mkdtemp(tmpl.data());
    paths_ = *ResolvePaths({.os = Os::kLinux, .home = home_, .fun_home = home_ + "/s"});
    auto cfg = EnsureInstance(paths_, "dev", {});
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    dir_ = paths_.InstanceDir("dev");
    // The stand-in agent (TestAgent) listens on TCP: the fake QEMU serves no vsock device.
    cfg->agent_transport = "tcp";
    ASSERT_TRUE(
        SaveInstanceConfigFile(paths_.InstanceFile("dev", InstanceFileKind::kConfig), *cfg).ok());
    auto token = agent::ReadTokenFile(dir_ + "/secret");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = *token;
    image_ = home_ + "/image";
    ASSERT_TRUE(MakeDirs(image_, 0700).ok());
    std::ofstream(image_ + "/fun-kernel") << "kernel";
    std::ofstream(image_ + "/fun-initrd.img") << "initrd";
    std::ofstream(image_ + "/fun-cmdline") << "console=ttyS0 quiet\n";
    agent_ = std::make_unique<TestAgent>(token_, &events_);
  }
  void TearDown() override {
    qmp_.reset();
    agent_.reset();
    std::system(("rm -rf '" + home_ + "'").c_str());  // NOLINT
  }

  std::string File(InstanceFileKind k) const { return paths_.InstanceFile("dev", k); }
  std::string QmpPath() const { return dir_ + "/qmp.sock"; }

  HostdOptions Options() {
    return HostdOptions{.instance = "dev",
                        .paths = paths_,
                        .image_dir = image_,
                        .qemu_binary = kQemu,
                        .stop_timeout = kDeadline,
                        .kill_grace = kDeadline,
                        .agent_port = agent_->port(),
                        .runner = &runner_};
  }

  // Creates a Hostd and runs it on a thread until the fake hypervisor (QEMU unless said) has
  // been started.
  RunningHostd Start(HostdOptions o, int vm_pid = ::getpid(), const char* hypervisor = kQemu) {
    runner_.Expect(hypervisor).WithPid(vm_pid).StartsRunning().Times(1);
    RunningHostd r;
    auto h = Hostd::Create(std::move(o));
    EXPECT_TRUE(h.ok()) << h.status();
    if (!h.ok()) return r;
    r.hostd = std::move(*h);
    r.run = std::async(std::launch::async, [h = r.hostd.get()] { return h->Run(); });
    auto vm = runner_.WaitForStart(hypervisor, kDeadline);
    EXPECT_TRUE(vm.ok()) << vm.status();
    if (vm.ok()) r.vm = *vm;
    return r;
  }

  std::optional<InstanceState> State() const {
    auto s = LoadInstanceState(dir_);
    if (!s.ok()) return std::nullopt;
    return *s;
  }
  bool AwaitPhase(Phase p) {
    return Eventually([&] {
      auto s = State();
      return s && s->phase == p;
    });
  }
  // Hostd serves containerd.sock once QEMU runs and vm.pid is written.
  bool AwaitServing() {
    return Eventually([&] {
      return Connect(SocketAddress{.kind = SocketAddress::Kind::kUnix,
                                   .path = File(InstanceFileKind::kContainerdSock)})
          .ok();
    });
  }
  void ServeQmp() { qmp_ = std::make_unique<FakeQmp>(QmpPath(), &events_); }

  // Runs a Hostd whose VM is ended by `end` (on its own: no stop was requested) and returns
  // the state it left.
  InstanceState RunUntilTheVmEnds(const std::function<void(FakeProcess&)>& end) {
    ServeQmp();
    RunningHostd r = Start(Options());
    EXPECT_TRUE(r.vm != nullptr);
    if (r.vm == nullptr) return {};
    EXPECT_TRUE(AwaitServing());
    end(*r.vm);
    Status s = r.Join();
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_THAT(r.vm->signals(), IsEmpty());  // nothing was stopped
    EXPECT_THAT(events_.StopSteps(), IsEmpty());
    return State().value_or(InstanceState{});
  }

  std::string home_, dir_, image_;
  Paths paths_;
  agent::Token token_{};
  FakeProcessRunner runner_;
  Events events_;
  std::unique_ptr<TestAgent> agent_;
  std::unique_ptr<FakeQmp> qmp_;
};

TEST_F(HostdTest, ASecondHostdOnTheSameInstanceFailsAtOnce) {
  RunningHostd first = Start(Options());
  ASSERT_TRUE(first.vm);
  ASSERT_TRUE(AwaitServing());
  std::string pid_file = ReadFile(File(InstanceFileKind::kHostdPid));

  FakeProcessRunner other;
  HostdOptions o = Options();
  o.runner = &other;
  auto second = Hostd::Create(o);
  ASSERT_TRUE(second.ok());
  Status s = (*second)->Run();  // returns at once: no VM, no wait
  EXPECT_EQ(s.code(), Code::kAlreadyExists) << s;
  EXPECT_THAT(s.message(), HasSubstr("already run by another fun-hostd"));
  EXPECT_THAT(other.calls(), IsEmpty());  // it never tried to start QEMU
  // ... and left the first one's files alone.
  EXPECT_EQ(ReadFile(File(InstanceFileKind::kHostdPid)), pid_file);
  EXPECT_TRUE(Exists(File(InstanceFileKind::kContainerdSock)));
  EXPECT_NE(State()->phase, Phase::kStopped);

  first.vm->Exit(0);
  ASSERT_TRUE(first.Join().ok());
  first.hostd.reset();  // the lock goes with the process (here: the object)
  second->reset();
  RunningHostd third = Start(Options());
  ASSERT_TRUE(third.vm);
  ASSERT_TRUE(AwaitServing());  // (a QEMU that exits at once counts as a failed start)
  third.vm->Exit(0);
  Status ended = third.Join();
  EXPECT_TRUE(ended.ok()) << ended;
}

TEST_F(HostdTest, RunWritesPidFilesAndRemovesThemAndItsSocketsWhenTheVmEnds) {
  PidDonor qemu_pid;
  ServeQmp();  // QEMU would create qmp.sock; Hostd removes it when the VM ends
  RunningHostd r = Start(Options(), qemu_pid.pid());
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());

  PidFileState hostd = CheckPidFile(File(InstanceFileKind::kHostdPid));
  EXPECT_EQ(hostd.status, PidStatus::kAlive) << hostd.detail;
  EXPECT_EQ(hostd.pid, ::getpid());
  EXPECT_EQ(hostd.start_time, *ProcessStartTime(::getpid()));
  PidFileState vm = CheckPidFile(File(InstanceFileKind::kVmPid));
  EXPECT_EQ(vm.status, PidStatus::kAlive) << vm.detail;
  EXPECT_EQ(vm.pid, qemu_pid.pid());
  EXPECT_EQ(vm.start_time, *ProcessStartTime(qemu_pid.pid()));
  InstanceStatus st = GetInstanceStatus(paths_, "dev");
  EXPECT_EQ(st.hostd.status, PidStatus::kAlive);
  EXPECT_EQ(st.vm.status, PidStatus::kAlive);
  EXPECT_THAT(st.phase, ::testing::AnyOf("starting", "running"));

  // The QEMU command names the QMP socket and forwards the agent port.
  const std::vector<std::string>& args = r.vm->command().args;
  EXPECT_THAT(args, Contains(HasSubstr("unix:" + QmpPath())));
  EXPECT_THAT(args,
              Contains(HasSubstr(fmt::format("hostfwd=tcp:127.0.0.1:{}-:7070", agent_->port()))));

  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
  for (const std::string& f : {File(InstanceFileKind::kHostdPid), File(InstanceFileKind::kVmPid),
                               File(InstanceFileKind::kContainerdSock), QmpPath()}) {
    EXPECT_FALSE(Exists(f)) << f;
  }
  st = GetInstanceStatus(paths_, "dev");
  EXPECT_EQ(st.phase, "stopped");
  EXPECT_EQ(st.hostd.status, PidStatus::kMissing);
}

TEST_F(HostdTest, ExtraQemuArgsComeLastOnQemusCommandLine) {
  HostdOptions o = Options();
  o.qemu_extra_args = {"-virtfs", "local,path=/tmp/d,mount_tag=perf,security_model=none"};
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  const std::vector<std::string>& args = r.vm->command().args;
  ASSERT_GE(args.size(), 2u);
  EXPECT_EQ(args[args.size() - 2], "-virtfs");
  EXPECT_EQ(args.back(), "local,path=/tmp/d,mount_tag=perf,security_model=none");
  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
}

// Sends one 9P request and returns the reply's type byte (0 when none came).
uint8_t NinePRoundTrip(int fd, uint16_t tag, const p9::Message& m) {
  std::string req;
  if (!p9::Encode(tag, m, &req).ok() || !WriteAll(fd, req).ok()) return 0;
  std::string reply;
  while (reply.size() < 7 || reply.size() < p9::DecodeHeader(reply)->size) {
    char b[4096];
    ssize_t n = ::read(fd, b, sizeof b);
    if (n <= 0) return 0;
    reply.append(b, static_cast<size_t>(n));
  }
  return p9::DecodeHeader(reply)->type;
}

// What QEMU's port and hyperkit's virtio-9p device do first on the share server at `sock`:
// Tversion, then Tattach with the share's tag as the attach name.
void ExpectAttaches(const std::string& sock, const std::string& tag) {
  auto c = Connect(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = sock});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(
      NinePRoundTrip(c->get(), p9::kNoTag, p9::Tversion{.msize = 65536, .version = "9P2000.L"}),
      static_cast<uint8_t>(p9::Rversion::kType));
  EXPECT_EQ(NinePRoundTrip(c->get(), 1, p9::Tattach{.fid = 1, .uname = "", .aname = tag}),
            static_cast<uint8_t>(p9::Rattach::kType));
}

TEST_F(HostdTest, SharesAreServedOverNinePForTheVmsSerialPorts) {
  // The default config shares the home folder (home_ here) at the same path.
  auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  ASSERT_EQ(cfg->shares.size(), 1u);
  cfg->share_transport = "serial";
  ASSERT_TRUE(SaveInstanceConfigFile(File(InstanceFileKind::kConfig), *cfg).ok());
  const Share share = cfg->shares[0];
  RunningHostd r = Start(Options());
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  const std::string sock = dir_ + "/p9.sock";
  // QEMU connects a port named after the share to the server, which listens before QEMU runs.
  const std::vector<std::string>& args = r.vm->command().args;
  EXPECT_THAT(args, Contains(fmt::format("socket,id=p9-0,path={}", sock)));
  EXPECT_THAT(args, Contains(HasSubstr("name=fun.p9." + share.tag)));
  EXPECT_THAT(args, Contains(fmt::format("name=opt/fun/shares,file={}/shares", dir_)));
  EXPECT_EQ(ReadFile(dir_ + "/shares"),
            fmt::format("fun-shares 1\n{} rw mmap {}\n", share.tag, share.guest_path));
  struct stat st {};
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  ExpectAttaches(sock, share.tag);

  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
  EXPECT_FALSE(Exists(sock));  // the server stops only once the VM is gone
}

// The default on Linux: QEMU gets the vhost-user vsock device fun-hostd serves (its socket up
// before QEMU starts), shared guest memory and the port in fw_cfg; no serial ports. The device
// itself: vsock_device_test; with the real QEMU and guest: the harness.
TEST_F(HostdTest, SharesOverVsockGiveQemuTheDeviceAndThePortInsteadOfSerialPorts) {
  auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->share_transport, "vsock");
  RunningHostd r = Start(Options());
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  const std::string vsock = dir_ + "/vsock.sock";
  const std::vector<std::string>& args = r.vm->command().args;
  EXPECT_THAT(args, Contains(fmt::format("socket,id=vsock0,path={}", vsock)));
  EXPECT_THAT(args, Contains("vhost-user-vsock-pci,chardev=vsock0"));
  EXPECT_THAT(args, Contains(HasSubstr("memory-backend-memfd,id=mem")));
  EXPECT_THAT(args, Contains("name=opt/fun/p9-vsock,string=564"));
  EXPECT_THAT(args, Contains(fmt::format("name=opt/fun/shares,file={}/shares", dir_)));
  EXPECT_THAT(args, Not(Contains(HasSubstr("virtserialport"))));
  struct stat st {};
  ASSERT_EQ(::stat(vsock.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
  EXPECT_FALSE(Exists(vsock));  // the device stops once the VM is gone
}

TEST_F(HostdTest, TheAgentOverVsockGoesThroughTheDevicesConnectSocket) {
  auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  cfg->agent_transport = "vsock";
  cfg->shares.clear();  // the device serves the agent alone
  ASSERT_TRUE(SaveInstanceConfigFile(File(InstanceFileKind::kConfig), *cfg).ok());
  RunningHostd r = Start(Options());
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  const std::string connect = dir_ + "/vsock.connect";
  const std::vector<std::string>& args = r.vm->command().args;
  EXPECT_THAT(args, Contains(fmt::format("socket,id=vsock0,path={}/vsock.sock", dir_)));
  EXPECT_THAT(args, Contains(HasSubstr("fun.agent=tcp+vsock")));    // the guest listens there too
  EXPECT_THAT(args, Not(Contains(HasSubstr("opt/fun/p9-vsock"))));  // no shares over it
  auto state = State();
  ASSERT_TRUE(state);
  EXPECT_EQ(state->agent_vsock_connect, connect);  // where the CLIs dial the agent
  EXPECT_EQ(state->agent_vsock_port, agent::kGuestAgentPort);
  EXPECT_NE(state->agent_port, 0);  // QEMU's hostfwd stays
  struct stat st {};
  ASSERT_EQ(::stat(connect.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // No QEMU front-end here: a dial through the socket is closed, not left hanging.
  auto c = Connect(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = connect});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(WriteAll(c->get(), vsock::ConnectLine(agent::kGuestCid, 7070)).ok());
  char b;
  EXPECT_EQ(::read(c->get(), &b, 1), 0);
  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
  EXPECT_FALSE(Exists(connect));
  EXPECT_FALSE(Exists(dir_ + "/vsock.sock"));
}

TEST_F(HostdTest, AShareWhoseFolderIsMissingFailsTheStartNamingIt) {
  auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
  ASSERT_TRUE(cfg.ok());
  cfg->shares = {{.host_path = home_ + "/gone", .guest_path = "/gone", .tag = "gone"}};
  ASSERT_TRUE(SaveInstanceConfigFile(File(InstanceFileKind::kConfig), *cfg).ok());
  auto h = Hostd::Create(Options());
  ASSERT_TRUE(h.ok());
  Status s = (*h)->Run();  // QEMU is never started
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("shared folder " + home_ + "/gone"));
  EXPECT_THAT(s.message(), HasSubstr("\"shares\" in " + File(InstanceFileKind::kConfig)));
  EXPECT_FALSE(Exists(dir_ + "/p9.sock"));
  auto state = State();
  ASSERT_TRUE(state);
  EXPECT_EQ(state->phase, Phase::kFailed);
}

TEST_F(HostdTest, QemuExitingWithinItsFirstMomentIsStartedOnceMore) {
  // QEMU fails at once when, say, the agent port was taken between our pick and its bind.
  auto& first = runner_.Expect(kQemu).Returns(ProcessResult::Exited(1, "", "")).Times(1);
  RunningHostd r = Start(Options());  // Start's WaitForStart hands out the one that exited
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  EXPECT_EQ(first.call_count(), 1);
  ASSERT_EQ(runner_.started().size(), 2u);
  r.vm = runner_.started()[1];  // the QEMU that runs
  EXPECT_TRUE(r.vm->Running());
  r.vm->Exit(0);
  EXPECT_TRUE(r.Join().ok());
}

TEST_F(HostdTest, QemuExitingAtOnceTwiceFailsTheStartSayingWhereToLook) {
  runner_.Expect(kQemu).Returns(ProcessResult::Exited(1, "", "")).Times(2);
  auto h = Hostd::Create(Options());
  ASSERT_TRUE(h.ok());
  Status s = (*h)->Run();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("qemu-system-x86_64 exited with 1 (QEMU's messages are in"));
  EXPECT_THAT(s.message(), HasSubstr(File(InstanceFileKind::kHostdLog)));
  auto st = State();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->phase, Phase::kFailed);
  EXPECT_FALSE(Exists(File(InstanceFileKind::kVmPid)));
}

TEST_F(HostdTest, StaleFilesOfADeadHostdDoNotStopANewStart) {
  // The previous hostd was killed: its pid is reused by another process (this one, with a
  // different start time), QEMU's pid is gone, state.json still says running, and both sockets
  // are left behind with nobody serving them.
  uint64_t start = *ProcessStartTime(::getpid());
  std::ofstream(File(InstanceFileKind::kHostdPid)) << ::getpid() << " " << start + 1 << "\n";
  auto dead = ProcessRunner::Default().Start(Command{.program = "true"});
  ASSERT_TRUE(dead.ok());
  ASSERT_TRUE((*dead)->Wait(std::nullopt).ok());
  std::ofstream(File(InstanceFileKind::kVmPid)) << (*dead)->pid() << " 12345\n";
  ASSERT_TRUE(SaveInstanceState(dir_, {.phase = Phase::kRunning, .started_at_ms = 1}).ok());
  for (const std::string& sock : {File(InstanceFileKind::kContainerdSock), QmpPath()}) {
    auto l = Listen(SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = sock});
    ASSERT_TRUE(l.ok()) << l.status();  // closed at once: the file stays, nobody listens
  }
  InstanceStatus before = GetInstanceStatus(paths_, "dev");
  EXPECT_EQ(before.phase, "crashed");
  EXPECT_EQ(before.hostd.status, PidStatus::kStale);
  EXPECT_EQ(before.vm.status, PidStatus::kStale);

  RunningHostd r = Start(Options());
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());  // the stale containerd.sock was replaced
  InstanceStatus st = GetInstanceStatus(paths_, "dev");
  EXPECT_EQ(st.hostd.status, PidStatus::kAlive) << st.hostd.detail;
  EXPECT_EQ(st.vm.status, PidStatus::kAlive) << st.vm.detail;
  EXPECT_NE(st.phase, "crashed");
  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
  EXPECT_EQ(State()->last_exit->reason, "the guest powered off");
}

TEST_F(HostdTest, PhasesAndTimeSyncOfACleanStop) {
  SimulatedClock clock;
  agent_->SetContainerdReady(false);
  HostdOptions o = Options();
  o.clock = &clock;
  agent_->SetClockSkew(-21s);
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);

  // QEMU runs, containerd does not answer yet: starting.
  ASSERT_TRUE(Eventually([&] {
    auto s = State();
    return s && s->started_at_ms != 0;
  }));
  InstanceState s = *State();
  EXPECT_EQ(s.phase, Phase::kStarting);
  EXPECT_EQ(s.started_at_ms, WallMs(clock));
  EXPECT_EQ(s.backend, "qemu");
  EXPECT_FALSE(s.accel.empty());
  EXPECT_FALSE(s.accel_reason.empty());
  EXPECT_EQ(s.agent_port, agent_->port());

  // containerd answers through the agent: running, and the guest clock is set at once.
  agent_->SetContainerdReady(true);
  ASSERT_TRUE(AwaitPhase(Phase::kRunning));
  s = *State();
  EXPECT_EQ(s.ready_at_ms, WallMs(clock));
  EXPECT_EQ(s.guest_uptime_at_ready_s, 1.5);
  // The guest clock 21 s behind: measured with a ping, the guest is told to step it forward
  // by that much, within the measurement's uncertainty (hostd measures again when half the
  // round trip exceeds 250 ms).
  ASSERT_TRUE(events_.WaitFor("agent:timesync"));
  EXPECT_NEAR(static_cast<double>(agent_->time_syncs()[0]), 21e9, 250e6);
  // ... and again once the interval has passed (simulated time): now 2 s ahead.
  agent_->SetClockSkew(2s);
  clock.Advance(o.time_sync_interval + 1s);
  ASSERT_TRUE(events_.WaitFor("agent:timesync", 2));
  EXPECT_NEAR(static_cast<double>(agent_->time_syncs()[1]), -2e9, 250e6);

  // A stop: the agent sees "stopping" on disk when asked to shut down; the guest powers off.
  std::optional<Phase> phase_during_shutdown;
  agent_->OnShutdown([&] {
    if (auto st = State()) phase_during_shutdown = st->phase;
    r.vm->Exit(0);
  });
  r.hostd->RequestStop();
  ASSERT_TRUE(r.Join().ok());
  EXPECT_EQ(phase_during_shutdown, Phase::kStopping);
  s = *State();
  EXPECT_EQ(s.phase, Phase::kStopped);
  ASSERT_TRUE(s.last_exit);
  EXPECT_EQ(s.last_exit->reason, "stopped on request");
  EXPECT_TRUE(s.last_exit->clean);
  EXPECT_EQ(s.last_exit->exit_code, 0);
  EXPECT_EQ(s.last_exit->signal, 0);
  EXPECT_EQ(s.last_exit->at_ms, WallMs(clock));
  EXPECT_THAT(events_.StopSteps(), ElementsAre("agent:shutdown"));
  EXPECT_THAT(r.vm->signals(), IsEmpty());
}

TEST_F(HostdTest, AGuestPowerOffIsACleanExit) {
  InstanceState s = RunUntilTheVmEnds([](FakeProcess& vm) { vm.Exit(0); });
  EXPECT_EQ(s.phase, Phase::kStopped);
  ASSERT_TRUE(s.last_exit);
  EXPECT_EQ(s.last_exit->reason, "the guest powered off");
  EXPECT_TRUE(s.last_exit->clean);
}

TEST_F(HostdTest, QemuExitingWithAnErrorIsRecorded) {
  InstanceState s = RunUntilTheVmEnds([](FakeProcess& vm) { vm.Exit(1); });
  EXPECT_EQ(s.phase, Phase::kStopped);
  ASSERT_TRUE(s.last_exit);
  EXPECT_EQ(s.last_exit->reason, "qemu exited with 1");
  EXPECT_FALSE(s.last_exit->clean);
  EXPECT_EQ(s.last_exit->exit_code, 1);
  EXPECT_EQ(s.last_exit->signal, 0);
}

TEST_F(HostdTest, QemuKilledBySomeoneElseIsRecorded) {
  InstanceState s = RunUntilTheVmEnds([](FakeProcess& vm) { vm.KillBySignal(SIGKILL); });
  EXPECT_EQ(s.phase, Phase::kStopped);
  ASSERT_TRUE(s.last_exit);
  EXPECT_THAT(s.last_exit->reason, HasSubstr("qemu killed by"));
  EXPECT_THAT(s.last_exit->reason, HasSubstr("SIGKILL"));
  EXPECT_FALSE(s.last_exit->clean);
  EXPECT_EQ(s.last_exit->signal, SIGKILL);
}

TEST_F(HostdTest, AHypervisorThatCannotStartFailsTheStart) {
  FakeProcessRunner failing;
  failing.Expect(kQemu).Fails(NotFoundError("starting qemu-system-x86_64: not found"));
  HostdOptions o = Options();
  o.runner = &failing;
  auto h = Hostd::Create(o);
  ASSERT_TRUE(h.ok());
  Status s = (*h)->Run();
  EXPECT_EQ(s.code(), Code::kNotFound) << s;
  InstanceState st = *State();
  EXPECT_EQ(st.phase, Phase::kFailed);
  EXPECT_THAT(st.error, HasSubstr("not found"));
  ASSERT_TRUE(st.last_exit);
  EXPECT_EQ(st.last_exit->reason, "the hypervisor did not start");
  EXPECT_FALSE(st.last_exit->clean);
  EXPECT_FALSE(Exists(File(InstanceFileKind::kHostdPid)));
}

// ---- stop escalation: agent shutdown -> ACPI (QMP) -> SIGTERM -> SIGKILL ----

TEST_F(HostdTest, StopEndsAtTheAgentWhenTheGuestShutsDown) {
  ServeQmp();
  RunningHostd r = Start(Options());  // generous stop timeout: the VM ends in the first step
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  agent_->OnShutdown([&] { r.vm->Exit(0); });
  r.hostd->RequestStop();
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(events_.StopSteps(), ElementsAre("agent:shutdown"));  // no ACPI
  EXPECT_THAT(r.vm->signals(), IsEmpty());
  EXPECT_EQ(State()->last_exit->reason, "stopped on request");
}

TEST_F(HostdTest, StopUsesAcpiWhenTheAgentDoesNotEndTheVm) {
  ServeQmp();
  HostdOptions o = Options();
  o.stop_timeout = 2s;  // the agent step is expected to pass without effect
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  qmp_->OnCommand([&](const std::string& cmd) {
    EXPECT_THAT(r.vm->signals(), IsEmpty());  // no signal before the power button
    if (cmd == "system_powerdown") r.vm->Exit(0);
  });
  r.hostd->RequestStop();
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(events_.StopSteps(), ElementsAre("agent:shutdown", "qmp:system_powerdown"));
  EXPECT_THAT(r.vm->signals(), IsEmpty());
  InstanceState s = *State();
  EXPECT_EQ(s.phase, Phase::kStopped);
  EXPECT_EQ(s.last_exit->reason, "stopped on request");
  EXPECT_TRUE(s.last_exit->clean);
}

// The agent unreachable (the VM's network down): the power button comes at once, not after
// the share of the budget meant for an agent shutdown nobody accepted. With an hour's budget, a
// wait for it would hang this test until ctest's timeout.
TEST_F(HostdTest, StopGoesToAcpiAtOnceWhenTheAgentCannotBeReached) {
  ServeQmp();
  HostdOptions o = Options();
  o.stop_timeout = std::chrono::hours(1);
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  agent_.reset();  // its port now refuses
  qmp_->OnCommand([&](const std::string& cmd) {
    if (cmd == "system_powerdown") r.vm->Exit(0);
  });
  r.hostd->RequestStop();
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(events_.StopSteps(), ElementsAre("qmp:system_powerdown"));
  EXPECT_THAT(r.vm->signals(), IsEmpty());
  EXPECT_EQ(State()->last_exit->reason, "stopped on request");
}

TEST_F(HostdTest, StopSendsSigtermWhenAcpiDoesNotEndTheVm) {
  ServeQmp();
  HostdOptions o = Options();
  o.stop_timeout = 500ms;  // agent and ACPI are expected to pass without effect
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  r.hostd->RequestStop();
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(events_.StopSteps(), ElementsAre("agent:shutdown", "qmp:system_powerdown"));
  EXPECT_THAT(r.vm->signals(), ElementsAre(SIGTERM));  // QEMU exits on SIGTERM: no SIGKILL
  InstanceState s = *State();
  EXPECT_EQ(s.phase, Phase::kStopped);
  EXPECT_EQ(s.last_exit->reason, "stopped on request");
  EXPECT_EQ(s.last_exit->signal, SIGTERM);
}

TEST_F(HostdTest, StopSendsSigkillWhenSigtermIsIgnored) {
  ServeQmp();
  HostdOptions o = Options();
  o.stop_timeout = 500ms;
  o.kill_grace = 200ms;  // SIGTERM is expected to pass without effect
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  r.vm->IgnoreSignal(SIGTERM);
  ASSERT_TRUE(AwaitServing());
  r.hostd->RequestStop();
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(events_.StopSteps(), ElementsAre("agent:shutdown", "qmp:system_powerdown"));
  EXPECT_THAT(r.vm->signals(), ElementsAre(SIGTERM, SIGKILL));
  InstanceState s = *State();
  EXPECT_EQ(s.phase, Phase::kStopped);
  EXPECT_EQ(s.last_exit->signal, SIGKILL);
  EXPECT_EQ(s.last_exit->exit_code, -1);
}

TEST_F(HostdTest, AForcedStopSkipsTheAgentAndAcpi) {
  ServeQmp();
  RunningHostd r = Start(Options());
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  r.hostd->RequestStop(/*force=*/true);
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(events_.StopSteps(), IsEmpty());
  EXPECT_THAT(r.vm->signals(), ElementsAre(SIGTERM));
  InstanceState s = *State();
  EXPECT_EQ(s.phase, Phase::kStopped);
  ASSERT_TRUE(s.last_exit);
  EXPECT_EQ(s.last_exit->reason, "stopped on request");
  EXPECT_EQ(s.last_exit->signal, SIGTERM);
  EXPECT_EQ(s.last_exit->exit_code, -1);
  EXPECT_TRUE(s.last_exit->clean);
}

// `fun-vmctl stop --force` sends SIGTERM twice: fun-hostd begins a graceful stop on the first
// and must cut it short on the second instead of waiting out the graceful steps.
TEST_F(HostdTest, AForcedStopDuringAGracefulOneSkipsTheStepsLeft) {
  ServeQmp();
  HostdOptions o = Options();
  o.stop_timeout = std::chrono::minutes(10);  // the graceful steps would take this long
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitServing());
  r.hostd->RequestStop();
  ASSERT_TRUE(events_.WaitFor("agent:shutdown"));
  r.hostd->RequestStop(/*force=*/true);
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(events_.StopSteps(), ElementsAre("agent:shutdown"));  // no ACPI
  EXPECT_THAT(r.vm->signals(), ElementsAre(SIGTERM));
}

// ---- containerd.sock through the real guest agent ----

class HostdWithGuestdTest : public HostdTest {
 protected:
  void SetUp() override {
    HostdTest::SetUp();
    if (HasFatalFailure()) return;
    // The guest's "containerd": an echo server on a unix socket.
    echo_ = std::move(*AcceptLoop::Create(
        SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = home_ + "/containerd.sock"},
        [](UniqueFd c, std::string) {
          char buf[65536];
          for (;;) {
            ssize_t n = ::read(c.get(), buf, sizeof(buf));
            if (n <= 0 || !WriteAll(c.get(), std::string_view(buf, static_cast<size_t>(n))).ok()) {
              return;
            }
          }
        }));
    echo_thread_ = std::thread([this] { (void)echo_->Run(); });
    std::ofstream(home_ + "/poweroff.sh") << "#!/bin/sh\nexit 0\n";
    ::chmod((home_ + "/poweroff.sh").c_str(), 0755);
    // What "the VM" listens on, for auto-forward: fun-guestd runs on this host, whose own
    // listeners (hostd's forwards among them) are not the VM's. The /proc/net files it reads
    // are the test's: empty unless a test lists a socket.
    ASSERT_TRUE(MakeDirs(home_ + "/proc-net", 0700).ok());
    for (const char* f : {"tcp", "tcp6", "udp", "udp6"}) SetProcNet(f, {});
    // fun-guestd on a port of its choosing; it prints "listening on tcp:127.0.0.1:PORT".
    Command cmd{
        .program = FUN_GUESTD_BINARY,
        .args = {"--listen", "tcp:127.0.0.1:0", "--token-file", dir_ + "/secret",
                 "--containerd-socket", home_ + "/containerd.sock", "--shutdown-command",
                 home_ + "/poweroff.sh", "--no-timesync", "--proc-net-dir", home_ + "/proc-net"},
        .capture_output = false};
    cmd.stdout_file = home_ + "/guestd.out";
    cmd.stderr_file = home_ + "/guestd.log";
    auto p = ProcessRunner::Default().Start(cmd);
    ASSERT_TRUE(p.ok()) << p.status();
    guestd_ = std::move(*p);
    std::string prefix = "listening on tcp:127.0.0.1:";
    ASSERT_TRUE(Eventually([&] {
      return ReadFile(home_ + "/guestd.out").find('\n') != std::string::npos;
    })) << ReadFile(home_ + "/guestd.log");
    std::string out = ReadFile(home_ + "/guestd.out");
    ASSERT_EQ(out.rfind(prefix, 0), 0u) << out;
    guestd_port_ = static_cast<uint16_t>(std::stoi(out.substr(prefix.size())));
    // No shares: this fun-guestd runs on the host and mounts none, so hostd would wait its
    // kSharesSettleTimeout (30 s) for them before calling the VM ready.
    auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    cfg->shares.clear();
    ASSERT_TRUE(SaveInstanceConfigFile(File(InstanceFileKind::kConfig), *cfg).ok());
  }
  void TearDown() override {
    if (guestd_) (void)guestd_->Terminate(5s);
    if (echo_) echo_->Stop();
    if (echo_thread_.joinable()) echo_thread_.join();
    echo_.reset();
    HostdTest::TearDown();
  }

  // Writes <home>/proc-net/<file> as the kernel formats /proc/net/tcp: a header, then one
  // listening socket per "HEXADDR:HEXPORT" (e.g. "0200007F:1F90" is 127.0.0.2:8080).
  void SetProcNet(const std::string& file, const std::vector<std::string>& listening) {
    std::string text =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n";
    int slot = 0;
    for (const std::string& local : listening) {
      text += fmt::format(
          "{:4}: {} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 "
          "{} 1 0000000000000000 100 0 0 10 0\n",
          slot, local, 100000 + slot);
      ++slot;
    }
    ASSERT_TRUE(WriteFileAtomically(home_ + "/proc-net/" + file, text, 0600).ok());
  }

  std::unique_ptr<AcceptLoop> echo_;
  std::thread echo_thread_;
  std::unique_ptr<Process> guestd_;
  uint16_t guestd_port_ = 0;
};

TEST_F(HostdWithGuestdTest, ContainerdSockIsPrivateAndRelaysThroughTheAgent) {
  HostdOptions o = Options();
  o.agent_port = guestd_port_;
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  // fun-guestd reaches the "containerd" socket: the instance is running.
  ASSERT_TRUE(AwaitPhase(Phase::kRunning));
  EXPECT_EQ(State()->agent_port, guestd_port_);

  std::string sock = File(InstanceFileKind::kContainerdSock);
  struct stat st {};
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  SocketAddress addr{.kind = SocketAddress::Kind::kUnix, .path = sock};
  auto c = Connect(addr);
  ASSERT_TRUE(c.ok()) << c.status();
  std::string payload(1 << 20, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 31 + 7);
  std::thread writer([&] { EXPECT_TRUE(WriteAll(c->get(), payload).ok()); });
  std::string got(payload.size(), '\0');
  Status read = ReadExactly(c->get(), got.data(), got.size());
  writer.join();
  ASSERT_TRUE(read.ok()) << read;
  EXPECT_TRUE(got == payload) << "the relay changed bytes";

  // A client that keeps its connection open must not keep Hostd from ending with the VM.
  auto idle = Connect(addr);
  ASSERT_TRUE(idle.ok()) << idle.status();
  ASSERT_TRUE(WriteAll(idle->get(), "ping").ok());
  char echo[4];
  ASSERT_TRUE(ReadExactly(idle->get(), echo, sizeof(echo)).ok());
  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
  char b;
  EXPECT_LE(::read(idle->get(), &b, 1), 0);  // the relay was cut
  EXPECT_FALSE(Exists(sock));
  EXPECT_EQ(State()->last_exit->reason, "the guest powered off");
}

TEST_F(HostdWithGuestdTest, ConfigPortsArePublishedWhileTheVmRunsAndTheTableIsOnHostdSock) {
  // A TCP echo server "in the VM" (fun-guestd runs here, so 127.0.0.1 is this host's).
  auto target = AcceptLoop::Create(
      SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = 0},
      [](UniqueFd c, std::string) {
        char buf[4096];
        for (ssize_t n; (n = ::read(c.get(), buf, sizeof(buf))) > 0;) {
          if (!WriteAll(c.get(), std::string_view(buf, static_cast<size_t>(n))).ok()) return;
        }
      });
  ASSERT_TRUE(target.ok()) << target.status();
  std::thread target_thread([&] { (void)(*target)->Run(); });
  auto target_addr = ParseSocketAddress((*target)->address());
  ASSERT_TRUE(target_addr.ok());
  // The host port: one that is free now.
  auto probe = net::BindHostPort({.ip = "127.0.0.1", .port = 0});
  ASSERT_TRUE(probe.ok());
  auto local = ParseSocketAddress(*LocalAddress(probe->get()));
  ASSERT_TRUE(local.ok());
  const uint16_t host_port = local->port;
  probe->reset();
  auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  cfg->ports = {PortForward{.host_port = host_port, .guest_port = target_addr->port}};
  ASSERT_TRUE(SaveInstanceConfigFile(File(InstanceFileKind::kConfig), *cfg).ok());

  HostdOptions o = Options();
  o.agent_port = guestd_port_;
  o.publish_interval = 200ms;
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitPhase(Phase::kRunning));
  // hostd.sock answers with the table once a publish round is done.
  auto table = RequestPublish(dir_, 30s);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->size(), 1u);
  EXPECT_TRUE((*table)[0].listening) << (*table)[0].error;
  EXPECT_EQ((*table)[0].want.owner, "config");
  EXPECT_EQ((*table)[0].want.target, fmt::format("127.0.0.1:{}", target_addr->port));
  auto on_disk = ParsePublishTableJson(ReadFile(File(InstanceFileKind::kPortsJson)));
  ASSERT_TRUE(on_disk.ok()) << on_disk.status();
  EXPECT_EQ(on_disk->size(), 1u);

  // Bytes go host port -> hostd -> agent channel -> fun-guestd -> the target, and back.
  auto c = Connect(
      SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = host_port});
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(WriteAll(c->get(), "through the forward").ok());
  std::string got(19, '\0');
  ASSERT_TRUE(ReadExactly(c->get(), got.data(), got.size()).ok());
  EXPECT_EQ(got, "through the forward");

  // When the VM ends, the port is free again and ports.json is gone.
  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
  EXPECT_TRUE(net::BindHostPort({.ip = "127.0.0.1", .port = host_port}).ok());
  EXPECT_FALSE(Exists(File(InstanceFileKind::kPortsJson)));
  EXPECT_FALSE(Exists(File(InstanceFileKind::kHostdSock)));
  (*target)->Stop();
  target_thread.join();
}

TEST_F(HostdWithGuestdTest, WhatListensInTheVmIsAutoForwardedWithinTheConfiguredRanges) {
  // "The VM" is this host here: a server bound to 127.0.0.2 (a loopback address the forward
  // does not use) stands for a service listening in the VM, listed in the /proc/net file that
  // fun-guestd reads; its port on 127.0.0.1 is free for the auto-forward.
  auto service = AcceptLoop::Create(
      SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.2", .port = 0},
      [](UniqueFd c, std::string) { (void)WriteAll(c.get(), "served in the vm\n"); });
  ASSERT_TRUE(service.ok()) << service.status();
  std::thread service_thread([&] { (void)(*service)->Run(); });
  const uint16_t port = ParseSocketAddress((*service)->address())->port;
  // Listed: the service, and one more outside the configured range (not forwarded).
  const uint16_t other = port == 65535 ? 65534 : port + 1;
  SetProcNet("tcp", {fmt::format("0200007F:{:04X}", port), fmt::format("0200007F:{:04X}", other)});
  auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  cfg->auto_forward = fmt::format("1-{}", port);
  ASSERT_TRUE(SaveInstanceConfigFile(File(InstanceFileKind::kConfig), *cfg).ok());

  HostdOptions o = Options();
  o.agent_port = guestd_port_;
  o.publish_interval = 200ms;
  RunningHostd r = Start(o);
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitPhase(Phase::kRunning));
  auto table = RequestPublish(dir_, 30s);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->size(), 1u) << PublishTableJson(*table);
  EXPECT_TRUE((*table)[0].want.auto_forward);
  EXPECT_TRUE((*table)[0].listening) << (*table)[0].error;
  EXPECT_EQ((*table)[0].want.target, fmt::format("127.0.0.2:{}", port));
  auto c =
      Connect(SocketAddress{.kind = SocketAddress::Kind::kTcp, .host = "127.0.0.1", .port = port});
  ASSERT_TRUE(c.ok()) << c.status();
  std::string got(17, '\0');
  ASSERT_TRUE(ReadExactly(c->get(), got.data(), got.size()).ok());
  EXPECT_EQ(got, "served in the vm\n");

  // The service goes away: so does its forward, on the next round.
  (*service)->Stop();
  service_thread.join();
  service->reset();
  SetProcNet("tcp", {});
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    auto t = RequestPublish(dir_, 30s);
    gone = t.ok() && t->empty();
    if (!gone) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(gone);
  EXPECT_TRUE(net::BindHostPort({.ip = "127.0.0.1", .port = port}).ok());
  r.vm->Exit(0);
  ASSERT_TRUE(r.Join().ok());
}

// --- The hyperkit backend (macOS on Intel), on Linux: a fake hyperkit process and a stand-in
// for its virtio-sock connect socket, both as HyperKit's documented contract says
// (../shared/PROTOCOLS.md section 3). Nothing here has run against a real hyperkit.

// hyperkit's `<dir>/connect`: reads the 18-byte "%08x.%08x\n" line and, for the agent's port,
// joins the stream to the in-test agent; for any other port it closes it (nothing listens).
class FakeHyperkitVsock {
 public:
  FakeHyperkitVsock(const std::string& path, uint16_t agent_tcp_port) : port_(agent_tcp_port) {
    loop_ = std::make_unique<ServingLoop>(
        SocketAddress{.kind = SocketAddress::Kind::kUnix, .path = path},
        [this](UniqueFd c, std::string) { Serve(std::move(c)); });
  }
  std::vector<std::string> lines() const {
    std::lock_guard lock(mu_);
    return lines_;
  }

 private:
  void Serve(UniqueFd c) {
    std::string line(18, '\0');
    if (!ReadExactly(c.get(), line.data(), line.size()).ok()) return;
    {
      std::lock_guard lock(mu_);
      lines_.push_back(line);
    }
    if (line != vsock::ConnectLine(3, agent::kGuestAgentPort)) return;
    auto guest = Connect(*ParseSocketAddress("tcp:127.0.0.1:" + std::to_string(port_)));
    if (guest.ok()) (void)net::Splice(c.get(), guest->get());
  }

  const uint16_t port_;
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
  std::unique_ptr<ServingLoop> loop_;
};

class HyperkitHostdTest : public HostdTest {
 protected:
  void SetUp() override {
    HostdTest::SetUp();
    auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    cfg->backend = Backend::kHyperkit;
    cfg->accel = Accel::kAuto;
    ASSERT_TRUE(SaveInstanceConfigFile(File(InstanceFileKind::kConfig), *cfg).ok());
    std::ofstream(image_ + "/fun-kernel.pvh") << "pvh kernel (QEMU's)";
    std::ofstream(image_ + "/fun-system.img") << "system disk";
    std::ofstream(image_ + "/fun-cmdline", std::ios::trunc)
        << "console=ttyS0 quiet initcall_blacklist=a,b fun.system=fun-system\n";
  }
  HostdOptions HyperkitOptions() {
    HostdOptions o = Options();
    o.hyperkit_binary = kHyperkit;
    o.host_facts = HostFacts{.os = Os::kMacos, .arch = "x86_64", .hvf_supported = true};
    return o;
  }
  // Runs a Hostd until the fake hyperkit started; the connect socket appears then, as hyperkit
  // makes it.
  RunningHostd StartHyperkit(HostdOptions o) {
    RunningHostd r = Start(std::move(o), ::getpid(), kHyperkit);
    if (r.vm) {
      vsock_ = std::make_unique<FakeHyperkitVsock>(dir_ + "/vsock/connect", agent_->port());
    }
    return r;
  }
  static std::vector<std::string> Values(const std::vector<std::string>& a, const std::string& f) {
    std::vector<std::string> out;
    for (size_t i = 0; i + 1 < a.size(); ++i) {
      if (a[i] == f) out.push_back(a[i + 1]);
    }
    return out;
  }
  void TearDown() override {
    vsock_.reset();
    HostdTest::TearDown();
  }
  std::unique_ptr<FakeHyperkitVsock> vsock_;
};

TEST_F(HyperkitHostdTest, BootsTheInstanceInitrdAndReachesTheAgentOverVsock) {
  auto cfg = LoadInstanceConfigFile(File(InstanceFileKind::kConfig), DefaultInstanceConfig({}));
  ASSERT_TRUE(cfg.ok());
  ASSERT_EQ(cfg->shares.size(), 1u);
  const Share share = cfg->shares[0];
  RunningHostd r = StartHyperkit(HyperkitOptions());
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitPhase(Phase::kRunning));

  const Command& cmd = r.vm->command();
  EXPECT_EQ(cmd.program, kHyperkit);
  EXPECT_EQ(cmd.stdout_file, File(InstanceFileKind::kConsoleLog)) << "com1 is hyperkit's stdio";
  EXPECT_EQ(cmd.parent_death_signal, SIGTERM);
  // The bzImage (not QEMU's PVH build), the instance's initrd, the image's command line plus
  // the hyperkit knobs: DHCP on vmnet, disks by slot order.
  EXPECT_THAT(Values(cmd.args, "-f"),
              ElementsAre(fmt::format("kexec,{}/fun-kernel,{}/initrd.img,console=ttyS0 quiet "
                                      "initcall_blacklist=a,b fun.system=fun-system fun.ip=dhcp "
                                      "fun.agent=vsock fun.disk=/dev/vda fun.system=/dev/vdb",
                                      image_, dir_)));
  std::vector<std::string> slots = Values(cmd.args, "-s");
  EXPECT_THAT(slots,
              Contains(fmt::format("2:0,virtio-blk,{}", File(InstanceFileKind::kDataImage))));
  EXPECT_THAT(slots, Contains(fmt::format("3:0,virtio-blk,{}/fun-system.img,ro", image_)));
  EXPECT_THAT(slots, Contains(fmt::format("4:0,virtio-sock,guest_cid=3,path={}/vsock", dir_)));
  EXPECT_THAT(slots,
              Contains(fmt::format("6:0,virtio-9p,path={}/p9.sock,tag={}", dir_, share.tag)));
  // The vmnet UUID is kept for the next start (the same MAC, the same lease).
  std::string uuid = ReadFile(dir_ + "/vmnet-uuid");
  ASSERT_EQ(uuid.size(), 37u);
  EXPECT_THAT(Values(cmd.args, "-U"), ElementsAre(uuid.substr(0, 36)));
  EXPECT_THAT(Values(cmd.args, "-F"), ElementsAre(dir_ + "/hyperkit.pid"));

  // The instance initrd: the image's, then a cpio with the secret and the share table; GNU
  // cpio reads the appended archive back.
  std::string initrd = ReadFile(dir_ + "/initrd.img");
  ASSERT_EQ(initrd.substr(0, 8), std::string("initrd\0\0", 8));
  std::ofstream(dir_ + "/tail.cpio") << initrd.substr(8);
  ASSERT_TRUE(MakeDirs(home_ + "/x", 0700).ok());
  auto x = ProcessRunner::Default().Run(
      Command{.program = "sh",
              .args = {"-c", "cpio -idm --quiet < " + dir_ + "/tail.cpio"},
              .working_dir = home_ + "/x"});
  ASSERT_TRUE(x.ok() && x->ok()) << (x.ok() ? x->stderr_data : x.status().message());
  EXPECT_EQ(ReadFile(home_ + "/x/etc/fun/instance/secret"), ReadFile(dir_ + "/secret"));
  EXPECT_EQ(ReadFile(home_ + "/x/etc/fun/instance/shares"), ReadFile(dir_ + "/shares"));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/initrd.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // The agent through the connect socket: state.json says where, and a CLI gets there.
  auto state = State();
  ASSERT_TRUE(state);
  EXPECT_EQ(state->backend, "hyperkit");
  EXPECT_EQ(state->accel, "hvf");
  EXPECT_EQ(state->agent_port, 0);
  EXPECT_EQ(state->agent_vsock_connect, dir_ + "/vsock/connect");
  EXPECT_EQ(state->agent_vsock_port, agent::kGuestAgentPort);
  auto ep = InstanceAgentEndpoint(dir_, "dev");
  ASSERT_TRUE(ep.ok()) << ep.status();
  EXPECT_TRUE(agent::PingAgent(*ep, 5s).ok());
  EXPECT_THAT(vsock_->lines(), Contains("00000003.00001b9e\n"));

  // hyperkit's virtio-9p relay connects to the server and attaches by the share's tag.
  ExpectAttaches(dir_ + "/p9.sock", share.tag);

  // A stop: the agent powers the guest off, hyperkit exits 0.
  agent_->OnShutdown([vm = r.vm] { vm->Exit(0); });
  r.hostd->RequestStop();
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(r.vm->signals(), IsEmpty());
  EXPECT_EQ(State()->last_exit->reason, "stopped on request");
  EXPECT_FALSE(Exists(dir_ + "/hyperkit.pid"));
  EXPECT_FALSE(Exists(File(InstanceFileKind::kVmPid)));
}

TEST_F(HyperkitHostdTest, StopPressesThePowerButtonWithSigtermThenKills) {
  HostdOptions o = HyperkitOptions();
  o.stop_timeout = 300ms;  // the agent takes the request but nothing happens
  RunningHostd r = StartHyperkit(o);
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitPhase(Phase::kRunning));
  r.vm->IgnoreSignal(SIGTERM);  // a guest without acpid: the power button does nothing
  r.hostd->RequestStop();
  ASSERT_TRUE(r.Join().ok());
  EXPECT_THAT(events_.StopSteps(), ElementsAre("agent:shutdown"));
  // No QMP with hyperkit: SIGTERM is its power button; then SIGKILL, not a second SIGTERM.
  EXPECT_THAT(r.vm->signals(), ElementsAre(SIGTERM, SIGKILL));
}

TEST_F(HyperkitHostdTest, ExitStatusesSayHowTheGuestEnded) {
  RunningHostd r = StartHyperkit(HyperkitOptions());
  ASSERT_TRUE(r.vm);
  ASSERT_TRUE(AwaitPhase(Phase::kRunning));
  r.vm->Exit(3);
  ASSERT_TRUE(r.Join().ok());
  auto state = State();
  ASSERT_TRUE(state && state->last_exit);
  EXPECT_THAT(state->last_exit->reason, HasSubstr("triple-faulted"));
  EXPECT_FALSE(state->last_exit->clean);
  EXPECT_EQ(state->last_exit->exit_code, 3);
}

TEST_F(HyperkitHostdTest, AHyperkitThatCannotStartSaysWhereItsMessagesAre) {
  // As without vmnet rights: hyperkit exits 1 at once. A stale pid file (hyperkit creates it
  // O_EXCL) is removed first.
  std::ofstream(dir_ + "/hyperkit.pid") << "12345";
  runner_.Expect(kHyperkit).Returns(ProcessResult::Exited(1, "", "vmnet: permission denied"));
  auto h = Hostd::Create(HyperkitOptions());
  ASSERT_TRUE(h.ok());
  Status s = (*h)->Run();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(),
              HasSubstr("hyperkit's messages are in " + File(InstanceFileKind::kHostdLog)));
  EXPECT_FALSE(Exists(dir_ + "/hyperkit.pid"));
  EXPECT_EQ(State()->phase, Phase::kFailed);
}

TEST_F(HyperkitHostdTest, OnLinuxTheHyperkitBackendIsRefused) {
  HostdOptions o = HyperkitOptions();
  o.host_facts = HostFacts{.os = Os::kLinux};
  auto h = Hostd::Create(o);
  ASSERT_TRUE(h.ok());
  Status s = (*h)->Run();
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("backend hyperkit runs only on macOS"));
}

}  // namespace
}  // namespace fun::vm
