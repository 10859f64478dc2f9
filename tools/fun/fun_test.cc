// The fun CLI against a real containerd (started by the fixture, natively, as root) pulling
// from a real registry seeded with the project's own busybox and pause images. No mocks.
#include "tools/fun/fun.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "lib/cri/client.h"
#include "lib/cri/engine.h"
#include "lib/cri/testing/containerd_fixture.h"
#include "lib/cri/testing/registry_fixture.h"
#include "lib/net/port_check.h"

namespace fun::cli {
namespace {

using cri::testing::ContainerdFixture;
using cri::testing::RegistryFixture;
using ::testing::HasSubstr;
using ::testing::Not;

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

class FunCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (Status why = ContainerdFixture::CanRun(); !why.ok()) {
      skip_ = why.message();
      return;
    }
    if (Status why = RegistryFixture::CanRun(); !why.ok()) {
      skip_ = why.message();
      return;
    }
    auto reg = RegistryFixture::Create();
    ASSERT_TRUE(reg.ok()) << reg.status();
    registry_ = std::move(*reg).release();
    ContainerdFixture::Options o;
    o.plain_http_registries = {registry_->host()};
    o.sandbox_image = registry_->pause_ref();
    auto ctd = ContainerdFixture::Create(o);
    ASSERT_TRUE(ctd.ok()) << ctd.status();
    containerd_ = std::move(*ctd).release();
    auto cni = containerd_->WriteCniConfig();
    ASSERT_TRUE(cni.ok()) << cni.status();
    log_root_ = containerd_->dir() + "/logs";
  }
  static void TearDownTestSuite() {
    delete containerd_;
    containerd_ = nullptr;
    delete registry_;
    registry_ = nullptr;
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_NE(containerd_, nullptr);
  }

  static Result Fun(std::vector<std::string> args, int stdin_fd = 0) {
    std::vector<std::string> full = {"--host", "unix:" + containerd_->socket_path(), "--log-root",
                                     log_root_};
    full.insert(full.end(), args.begin(), args.end());
    Environment env;
    env.paths = PathsInputFromEnvironment();
    env.stdin_fd = stdin_fd;
    std::ostringstream out, err;
    Result r;
    r.code = fun::cli::Run(full, env, out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }
  static std::string Busybox() { return registry_->busybox_ref(); }
  // Our pod sandboxes in the fixture's containerd (a failed or --rm run must leave none).
  static size_t OurPods() {
    auto cri = cri::CriClient::Connect(containerd_->socket_path());
    EXPECT_TRUE(cri.ok());
    auto pods = (*cri)->ListPodSandbox({{"io.fun.managed", "true"}});
    EXPECT_TRUE(pods.ok()) << pods.status();
    return pods.ok() ? pods->size() : 999;
  }

  // `fun exec -i` with `input` as its stdin (a pipe, closed after the input: EOF).
  static Result FunWithInput(std::vector<std::string> args, const std::string& input) {
    int p[2];
    EXPECT_EQ(::pipe(p), 0);
    // A writer thread: the input may be larger than the pipe's buffer.
    std::thread writer([&] {
      size_t off = 0;
      while (off < input.size()) {
        const ssize_t n = ::write(p[1], input.data() + off, input.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::close(p[1]);
    });
    Result r = Fun(std::move(args), p[0]);
    writer.join();
    ::close(p[0]);
    return r;
  }

  static inline std::string skip_;
  static inline RegistryFixture* registry_ = nullptr;
  static inline ContainerdFixture* containerd_ = nullptr;
  static inline std::string log_root_;
};

TEST_F(FunCliTest, PublishedPortsAreRecordedAndShown) {
  auto free_port = [] {
    auto fd = net::BindHostPort({.ip = "127.0.0.1", .port = 0});
    EXPECT_TRUE(fd.ok());
    sockaddr_in a{};
    socklen_t len = sizeof(a);
    ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
  };
  const uint16_t port = free_port();
  Result r = Fun({"run", "-d", "--name", "published", "-p", fmt::format("{}:80", port), "-p",
                  fmt::format("[::1]:{}:53/udp", port), Busybox(), "sleep", "60"});
  ASSERT_EQ(r.code, 0) << r.err;
  Result ps = Fun({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("PORTS"));
  EXPECT_THAT(ps.out, HasSubstr(fmt::format("127.0.0.1:{}->80/tcp, [::1]:{}->53/udp", port, port)));
  Result inspect = Fun({"inspect", "published"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  auto j = nlohmann::json::parse(inspect.out);
  ASSERT_EQ(j[0]["ports"].size(), 2u) << inspect.out;
  EXPECT_EQ(j[0]["ports"][0]["host_ip"], "127.0.0.1");
  EXPECT_EQ(j[0]["ports"][0]["host_port"], port);
  EXPECT_EQ(j[0]["ports"][0]["container_port"], 80);
  EXPECT_EQ(j[0]["ports"][1]["protocol"], "udp");
  EXPECT_EQ(j[0]["network"], "bridge");
  EXPECT_EQ(Fun({"rm", "-f", "published"}).code, 0);
}

TEST_F(FunCliTest, AHostPortInUseFailsTheRunBeforeAContainerExists) {
  auto taken = net::BindHostPort({.ip = "127.0.0.1", .port = 0});
  ASSERT_TRUE(taken.ok()) << taken.status();
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  ::getsockname(taken->get(), reinterpret_cast<sockaddr*>(&a), &len);
  const uint16_t port = ntohs(a.sin_port);
  const size_t pods = OurPods();
  Result r = Fun({"run", "-d", "-p", fmt::format("{}:80", port), Busybox(), "true"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr(fmt::format("127.0.0.1:{}/tcp is already in use", port)));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(OurPods(), pods);
  // Bad specs are usage errors (exit 2), as is the same host port twice.
  Result bad = Fun({"run", "-p", "80", Busybox(), "true"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.err, HasSubstr("invalid port spec"));
  Result twice = Fun({"run", "-p", "18080:80", "-p", "18080:81", Busybox(), "true"});
  EXPECT_EQ(twice.code, 1);
  EXPECT_THAT(twice.err, HasSubstr("published twice"));
  EXPECT_EQ(OurPods(), pods);
}

TEST_F(FunCliTest, StartRunsAnExitedContainerAgainAsItWasRun) {
  Result r = Fun({"run", "--name", "again", "-e", "WHO=world", "-w", "/tmp", Busybox(), "sh", "-c",
                  "echo hello $WHO from $(pwd); exit 4"});
  ASSERT_EQ(r.code, 4) << r.err;
  EXPECT_EQ(r.out, "hello world from /tmp\n");
  Result first = Fun({"inspect", "again"});
  ASSERT_EQ(first.code, 0) << first.err;
  const std::string first_id = nlohmann::json::parse(first.out)[0]["id"];

  Result started = Fun({"start", "again"});
  ASSERT_EQ(started.code, 0) << started.err;
  EXPECT_EQ(started.out, "again\n");
  // One container of that name, a new one, running the same command with the same options.
  Result psa = Fun({"ps", "-a", "--json"});
  auto all = nlohmann::json::parse(psa.out);
  size_t named = 0;
  for (const auto& c : all) named += c["name"] == "again" ? 1 : 0;
  EXPECT_EQ(named, 1u) << psa.out;
  Result logs;
  for (int i = 0; i < 100; ++i) {
    logs = Fun({"logs", "again"});
    if (logs.out.find("hello") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(logs.out, "hello world from /tmp\n");
  Result second = Fun({"inspect", "again"});
  EXPECT_NE(nlohmann::json::parse(second.out)[0]["id"], first_id);
  EXPECT_EQ(Fun({"rm", "-f", "again"}).code, 0);
  // Unknown containers: one line, exit 1.
  Result unknown = Fun({"start", "no-such-container"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("no container named"));
}

TEST_F(FunCliTest, ForegroundRunPrintsOutputAndExitsWithTheContainersCode) {
  Result r = Fun({"run", "--rm", Busybox(), "sh", "-c", "echo hello; echo oops >&2; exit 3"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_EQ(r.out, "hello\n");
  EXPECT_THAT(r.err, HasSubstr("oops\n"));
  // --rm: nothing left behind.
  Result ps = Fun({"ps", "-a", "--json"});
  ASSERT_EQ(ps.code, 0) << ps.err;
  EXPECT_EQ(nlohmann::json::parse(ps.out).size(), 0u) << ps.out;
  EXPECT_EQ(OurPods(), 0u) << "--rm left a pod sandbox behind";
}

// A containerd that lets ContainerStatus calls run out their deadline (a VM short of memory:
// seen with a container eating the VM's memory) while fun waits for a container: Wait keeps
// asking and returns the container's code once containerd answers; a containerd that stays
// silent past the patience is one clear error. (Engine directly, with a 1 s call deadline.)
TEST_F(FunCliTest, WaitOutlastsAContainerdThatDoesNotAnswer) {
  auto cri = cri::CriClient::Connect(containerd_->socket_path(),
                                     {.default_timeout = std::chrono::seconds(1)});
  ASSERT_TRUE(cri.ok()) << cri.status();
  cri::Engine engine(cri->get(), {.log_root = log_root_, .wait_patience = std::chrono::seconds(4)});
  auto run = engine.Run({.image = Busybox(), .name = "patient", .cmd = {"sh", "-c", "exit 7"}});
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(containerd_->Signal(SIGSTOP).ok());
  std::thread thaw([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    EXPECT_TRUE(containerd_->Signal(SIGCONT).ok());
  });
  auto code = engine.Wait(run->container_id);
  thaw.join();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 7);

  // Silent for longer than the patience: DeadlineExceeded, saying what to look at.
  auto again = engine.Run({.image = Busybox(), .name = "impatient", .cmd = {"sleep", "300"}});
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(containerd_->Signal(SIGSTOP).ok());
  auto gave_up = engine.Wait(again->container_id);
  ASSERT_TRUE(containerd_->Signal(SIGCONT).ok());
  ASSERT_FALSE(gave_up.ok());
  EXPECT_EQ(gave_up.status().code(), Code::kDeadlineExceeded);
  EXPECT_THAT(gave_up.status().message(), HasSubstr("containerd has not answered for"));
  EXPECT_THAT(gave_up.status().message(), HasSubstr("fun-doctor"));
  EXPECT_EQ(Fun({"rm", "-f", "patient", "impatient"}).code, 0);
}

// The same through `fun run` in the foreground: a status call that runs out its deadline while
// the log is followed is no exit, so what the container prints after containerd comes back
// still reaches the terminal (seen in the VM: the output after an OOM kill went missing).
TEST_F(FunCliTest, ForegroundRunKeepsPrintingThroughAContainerdThatDoesNotAnswer) {
  Result r;
  std::thread run([&] {
    r = Fun({"run", "--rm", "--name", "late", Busybox(), "sh", "-c",
             "echo early; sleep 14; echo late; exit 7"});
  });
  bool running = false;
  for (int i = 0; i < 300 && !running; ++i) {
    running = Fun({"ps", "--json"}).out.find("\"late\"") != std::string::npos;
    if (!running) ::usleep(50 * 1000);
  }
  EXPECT_TRUE(running) << "the container never ran";
  ASSERT_TRUE(containerd_->Signal(SIGSTOP).ok());
  // Longer than one call's deadline (10 s), shorter than the container's sleep.
  std::this_thread::sleep_for(std::chrono::seconds(12));
  ASSERT_TRUE(containerd_->Signal(SIGCONT).ok());
  run.join();
  EXPECT_EQ(r.code, 7) << r.err;
  EXPECT_EQ(r.out, "early\nlate\n") << r.err;
}

TEST_F(FunCliTest, DetachedLifecyclePsExecStopRm) {
  Result run = Fun({"run", "-d", "--name", "web", Busybox(), "sleep", "300"});
  ASSERT_EQ(run.code, 0) << run.err;
  const std::string id = run.out.substr(0, run.out.find('\n'));
  EXPECT_EQ(id.size(), 64u) << run.out;

  Result ps = Fun({"ps"});
  ASSERT_EQ(ps.code, 0) << ps.err;
  EXPECT_THAT(ps.out, HasSubstr(id.substr(0, 12)));
  EXPECT_THAT(ps.out, HasSubstr("web"));
  EXPECT_THAT(ps.out, HasSubstr("Up "));
  EXPECT_THAT(ps.out, HasSubstr("\"sleep 300\""));

  Result ex = Fun({"exec", "web", "sh", "-c", "echo in-$((6*7)); exit 5"});
  EXPECT_EQ(ex.code, 5) << ex.err;
  EXPECT_EQ(ex.out, "in-42\n");

  Result byprefix = Fun({"exec", id.substr(0, 8), "true"});
  EXPECT_EQ(byprefix.code, 0) << byprefix.err;

  Result inspect = Fun({"inspect", "web"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  auto j = nlohmann::json::parse(inspect.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["id"], id);
  EXPECT_EQ(j[0]["state"], "running");
  EXPECT_EQ(j[0]["command"], nlohmann::json({"sleep", "300"}));
  EXPECT_FALSE(j[0]["ip"].get<std::string>().empty()) << "the pod has a CNI address";

  Result rm_running = Fun({"rm", "web"});
  EXPECT_EQ(rm_running.code, 1);
  EXPECT_THAT(rm_running.err, HasSubstr("is running"));

  Result stop = Fun({"stop", "-t", "1", "web"});
  ASSERT_EQ(stop.code, 0) << stop.err;
  Result psa = Fun({"ps", "-a", "--json"});
  auto all = nlohmann::json::parse(psa.out);
  ASSERT_EQ(all.size(), 1u) << psa.out;
  EXPECT_EQ(all[0]["state"], "exited");
  EXPECT_THAT(all[0]["status"].get<std::string>(), HasSubstr("Exited (137)"))
      << "sleep ignores SIGTERM as PID 1, so the grace ran out and SIGKILL ended it";
  Result running_only = Fun({"ps", "--json"});
  EXPECT_EQ(nlohmann::json::parse(running_only.out).size(), 0u);

  Result rm = Fun({"rm", "web"});
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(nlohmann::json::parse(Fun({"ps", "-a", "--json"}).out).size(), 0u);
}

TEST_F(FunCliTest, ExecInteractivePipesStdinThroughTheStreamingUrl) {
  ASSERT_EQ(Fun({"run", "-d", "--name", "cat", Busybox(), "sleep", "300"}).code, 0);
  // echo hi | fun exec -i cat cat: stdin's EOF reaches cat, so it ends and fun with it.
  Result hi = FunWithInput({"exec", "-i", "cat", "cat"}, "hi\n");
  EXPECT_EQ(hi.code, 0) << hi.err;
  EXPECT_EQ(hi.out, "hi\n");
  EXPECT_EQ(hi.err, "");

  // stdout and stderr stay apart; the exit code comes through the v4 status.
  Result both =
      FunWithInput({"exec", "-i", "cat", "sh", "-c", "cat; echo err >&2; exit 3"}, "one\ntwo\n");
  EXPECT_EQ(both.code, 3) << both.err;
  EXPECT_EQ(both.out, "one\ntwo\n");
  EXPECT_EQ(both.err, "err\n");

  // More than SPDY's 64 KiB window each way, and output that comes only after stdin's EOF.
  std::string big;
  for (int i = 0; big.size() < 300 * 1024; ++i) big += "line " + std::to_string(i) + "\n";
  Result echo = FunWithInput({"exec", "-i", "cat", "cat"}, big);
  EXPECT_EQ(echo.code, 0) << echo.err;
  EXPECT_EQ(echo.out.size(), big.size());
  EXPECT_TRUE(echo.out == big);
  Result count = FunWithInput({"exec", "-i", "cat", "wc", "-c"}, big);
  EXPECT_EQ(count.code, 0) << count.err;
  EXPECT_THAT(count.out, HasSubstr(std::to_string(big.size())));

  Result exit42 = FunWithInput({"exec", "-i", "cat", "sh", "-c", "exit 42"}, "");
  EXPECT_EQ(exit42.code, 42) << exit42.err;

  Result missing = FunWithInput({"exec", "-i", "cat", "/no/such/program"}, "");
  EXPECT_EQ(missing.code, 126);
  EXPECT_THAT(missing.err, HasSubstr("/no/such/program"));
  EXPECT_EQ(std::count(missing.err.begin(), missing.err.end(), '\n'), 1) << missing.err;

  Result not_running = FunWithInput({"exec", "-i", "nosuch", "cat"}, "");
  EXPECT_EQ(not_running.code, 1);
  EXPECT_THAT(not_running.err, HasSubstr("no container named \"nosuch\""));
  EXPECT_EQ(Fun({"rm", "-f", "cat"}).code, 0);
}

TEST_F(FunCliTest, ExecWithATerminal) {
  ASSERT_EQ(Fun({"run", "-d", "--name", "term", Busybox(), "sleep", "300"}).code, 0);
  int master = -1, slave = -1;
  winsize ws{};
  ws.ws_row = 33;
  ws.ws_col = 111;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, &ws), 0);
  termios before{};
  ASSERT_EQ(::tcgetattr(slave, &before), 0);

  // -t: the command gets a terminal of its own, as large as ours (the size may land a moment
  // after the command starts, so it asks until it is set; busybox's stty fails on 0x0).
  Result t =
      Fun({"exec", "-t", "term", "sh", "-c",
           "tty; for i in $(seq 50); do s=$(stty size 2>/dev/null); case \"$s\" in \"\"|\"0 0\") "
           "sleep 0.1;; *) break;; esac; done; echo \"size $s\""},
          slave);
  EXPECT_EQ(t.code, 0) << t.err;
  EXPECT_THAT(t.out, ::testing::MatchesRegex("/dev/pts/[0-9]+\r\nsize 33 111\r\n"));

  // -it: our terminal goes raw while keys go to the container's, and is restored after.
  const std::string typed = "abc\n";
  ASSERT_EQ(::write(master, typed.data(), typed.size()), static_cast<ssize_t>(typed.size()));
  Result it =
      Fun({"exec", "-it", "term", "sh", "-c", "read line; echo \"got:$line\"; exit 7"}, slave);
  EXPECT_EQ(it.code, 7) << it.err;
  EXPECT_THAT(it.out, HasSubstr("got:abc\r\n"));
  termios after{};
  ASSERT_EQ(::tcgetattr(slave, &after), 0);
  EXPECT_EQ(after.c_lflag, before.c_lflag);
  EXPECT_EQ(after.c_iflag, before.c_iflag);
  EXPECT_EQ(after.c_oflag, before.c_oflag);

  // -it from something that is not a terminal: Docker's refusal.
  Result notty = FunWithInput({"exec", "-it", "term", "sh"}, "");
  EXPECT_EQ(notty.code, 1);
  EXPECT_THAT(notty.err, HasSubstr("not a TTY"));
  ::close(master);
  ::close(slave);
  EXPECT_EQ(Fun({"rm", "-f", "term"}).code, 0);
}

TEST_F(FunCliTest, RunInteractiveAttachesToTheContainersProcess) {
  // run -i: stdin reaches the container's own process (CRI Attach), its EOF too.
  Result i = FunWithInput({"run", "-i", "--rm", Busybox(), "sh", "-c", "cat; echo err >&2; exit 4"},
                          "in\n");
  EXPECT_EQ(i.code, 4) << i.err;
  EXPECT_EQ(i.out, "in\n");
  EXPECT_THAT(i.err, HasSubstr("err\n"));

  // run -it with a pty: keys in, the exit code out, --rm honoured.
  int master = -1, slave = -1;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  const std::string typed = "xyz\n";
  ASSERT_EQ(::write(master, typed.data(), typed.size()), static_cast<ssize_t>(typed.size()));
  Result it =
      Fun({"run", "-it", "--rm", Busybox(), "sh", "-c", "read l; echo \"got:$l\"; exit 5"}, slave);
  EXPECT_EQ(it.code, 5) << it.err;
  EXPECT_THAT(it.out, HasSubstr("got:xyz\r\n"));
  ::close(master);
  ::close(slave);
  EXPECT_EQ(nlohmann::json::parse(Fun({"ps", "-a", "--json"}).out).size(), 0u);
}

TEST_F(FunCliTest, NamesAreUniqueAndAFailedRunLeavesNothing) {
  ASSERT_EQ(Fun({"run", "-d", "--name", "dup", Busybox(), "sleep", "300"}).code, 0);
  Result again = Fun({"run", "-d", "--name", "dup", Busybox(), "true"});
  EXPECT_EQ(again.code, 1);
  EXPECT_THAT(again.err, HasSubstr("\"dup\" is in use"));
  EXPECT_EQ(Fun({"rm", "-f", "dup"}).code, 0);

  // A command that does not exist in the image: CreateContainer or StartContainer fails, and
  // the pod made for it is gone again.
  Result bad = Fun({"run", "--name", "nocmd", Busybox(), "/no/such/program"});
  EXPECT_NE(bad.code, 0);
  Result ps = Fun({"ps", "-a", "--json"});
  for (const auto& c : nlohmann::json::parse(ps.out)) {
    EXPECT_NE(c["name"], "nocmd") << "a failed run left its container";
  }
}

TEST_F(FunCliTest, EnvWorkdirEntrypointAndUser) {
  Result r = Fun({"run", "--rm", "-e", "GREETING=hi there", "-w", "/tmp", "--user", "1000:1001",
                  "--entrypoint", "sh", Busybox(), "-c", "echo \"$GREETING\"; pwd; id -u; id -g"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "hi there\n/tmp\n1000\n1001\n");
}

// As with Docker, a container's processes (its command and what `fun exec` starts) are at
// oom_score_adj 0, not at the runtime's score they would inherit (one above containerd's: in the
// VM containerd runs at -999, which would make containers as hard to kill as the runtime).
TEST_F(FunCliTest, ContainersStartAtOomScoreZero) {
  Result run = Fun({"run", "-d", "--name", "oom", Busybox(), "sh", "-c",
                    "cat /proc/self/oom_score_adj > /tmp/score; sleep 300"});
  ASSERT_EQ(run.code, 0) << run.err;
  Result first =
      Fun({"exec", "oom", "sh", "-c", "sleep 0.2; cat /tmp/score /proc/1/oom_score_adj"});
  EXPECT_EQ(first.code, 0) << first.err;
  EXPECT_EQ(first.out, "0\n0\n");
  Result exec = Fun({"exec", "oom", "cat", "/proc/self/oom_score_adj"});
  EXPECT_EQ(exec.code, 0) << exec.err;
  EXPECT_EQ(exec.out, "0\n");
  EXPECT_EQ(Fun({"rm", "-f", "oom"}).code, 0);
}

TEST_F(FunCliTest, HostNetworkSharesTheHostsNameAndInterfaces) {
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof(host) - 1), 0);
  Result r = Fun({"run", "--rm", "--network", "host", Busybox(), "hostname"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, std::string(host) + "\n");
  Result bad = Fun({"run", "--network", "overlay", Busybox()});
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.err, HasSubstr("use bridge or host"));
}

TEST_F(FunCliTest, PrivilegedContainersMayMountAndStartKeepsIt) {
  const std::string mount =
      "mkdir -p /mnt && mount -t tmpfs none /mnt && grep -q ' /mnt tmpfs ' /proc/mounts && "
      "echo mounted";
  // Unprivileged (no CAP_SYS_ADMIN): the mount is refused.
  Result plain = Fun({"run", "--name", "plain", Busybox(), "sh", "-c", mount});
  EXPECT_NE(plain.code, 0);
  EXPECT_EQ(plain.out, "");
  EXPECT_THAT(plain.err, HasSubstr("ermission denied")) << plain.err;
  Result plain_inspect = Fun({"inspect", "plain"});
  ASSERT_EQ(plain_inspect.code, 0) << plain_inspect.err;
  EXPECT_EQ(nlohmann::json::parse(plain_inspect.out)[0]["privileged"], false);
  EXPECT_EQ(Fun({"rm", "-f", "plain"}).code, 0);

  Result priv = Fun({"run", "--name", "priv", "--privileged", Busybox(), "sh", "-c", mount});
  ASSERT_EQ(priv.code, 0) << priv.err;
  EXPECT_EQ(priv.out, "mounted\n");
  Result inspect = Fun({"inspect", "priv"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_EQ(nlohmann::json::parse(inspect.out)[0]["privileged"], true);
  // `fun start` runs it again from the io.fun.spec annotation: still privileged.
  Result started = Fun({"start", "priv"});
  ASSERT_EQ(started.code, 0) << started.err;
  nlohmann::json again;
  for (int i = 0; i < 100; ++i) {
    again = nlohmann::json::parse(Fun({"inspect", "priv"}).out)[0];
    if (again["state"] == "exited") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(again["state"], "exited");
  EXPECT_EQ(again["exit_code"], 0) << again.dump();
  EXPECT_EQ(again["privileged"], true);
  EXPECT_EQ(Fun({"logs", "priv"}).out, "mounted\n");
  EXPECT_EQ(Fun({"rm", "-f", "priv"}).code, 0);
}

TEST_F(FunCliTest, PidHostSeesTheHostsProcesses) {
  // In a PID namespace of its own the container's command is PID 1; with --pid host, PID 1 is
  // this machine's init and this test's own process is visible.
  const std::string me = std::to_string(::getpid());
  const std::string probe = "if [ -d /proc/" + me + " ]; then echo sees-host; else echo own; fi";
  Result own = Fun({"run", "--rm", Busybox(), "sh", "-c", probe});
  ASSERT_EQ(own.code, 0) << own.err;
  EXPECT_EQ(own.out, "own\n");
  Result host = Fun({"run", "--name", "pidhost", "--pid", "host", Busybox(), "sh", "-c", probe});
  ASSERT_EQ(host.code, 0) << host.err;
  EXPECT_EQ(host.out, "sees-host\n");
  Result inspect = Fun({"inspect", "pidhost"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_EQ(nlohmann::json::parse(inspect.out)[0]["pid"], "host");
  EXPECT_EQ(Fun({"rm", "-f", "pidhost"}).code, 0);
  Result bad = Fun({"run", "--pid", "container:x", Busybox()});
  EXPECT_EQ(bad.code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--pid \"container:x\": use host"));
}

TEST_F(FunCliTest, LogsWithTailAndBothStreams) {
  ASSERT_EQ(Fun({"run", "-d", "--name", "talker", Busybox(), "sh", "-c",
                 "echo err >&2; sleep 0.3; for i in 1 2 3 4 5; do echo line$i; done"})
                .code,
            0);
  // -f follows until the container exits, so the output is complete when it returns.
  Result all = Fun({"logs", "-f", "talker"});
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_EQ(all.out, "line1\nline2\nline3\nline4\nline5\n");
  EXPECT_EQ(all.err, "err\n");
  Result tail = Fun({"logs", "--tail", "2", "talker"});
  ASSERT_EQ(tail.code, 0) << tail.err;
  // (stdout and stderr reach the log through two pipes: the test orders them by time.)
  EXPECT_EQ(tail.out, "line4\nline5\n");
  EXPECT_EQ(tail.err, "");
  EXPECT_EQ(Fun({"rm", "talker"}).code, 0);
}

TEST_F(FunCliTest, ImagesPullAndRmi) {
  Result pulled = Fun({"pull", Busybox()});
  ASSERT_EQ(pulled.code, 0) << pulled.err;
  // Not a terminal: plain progress lines (layer counts only if a poll saw the download, which on
  // loopback may end between two polls; lib/cri/pull_progress_registry_test.cc covers those).
  EXPECT_THAT(pulled.err, ::testing::StartsWith("pulling " + Busybox() + " ("));
  EXPECT_THAT(pulled.out, HasSubstr("pulled " + Busybox() + " (sha256:"));
  Result images = Fun({"images", "--json"});
  ASSERT_EQ(images.code, 0) << images.err;
  bool found = false;
  for (const auto& i : nlohmann::json::parse(images.out)) {
    for (const auto& t : i["repo_tags"]) found = found || t == Busybox();
  }
  EXPECT_TRUE(found) << images.out;
  Result table = Fun({"images"});
  EXPECT_THAT(table.out, HasSubstr("REPOSITORY"));
  EXPECT_THAT(table.out, HasSubstr("fun/busybox"));

  Result missing = Fun({"pull", registry_->host() + "/fun/nothing:here"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.err, HasSubstr("fun/nothing:here"));
  EXPECT_THAT(missing.err, HasSubstr("not found"));

  Result rmi_missing = Fun({"rmi", "no/such:image"});
  EXPECT_EQ(rmi_missing.code, 1);
  EXPECT_THAT(rmi_missing.err, HasSubstr("no image"));
}

TEST_F(FunCliTest, BadInputIsAOneLineErrorWithANonZeroExit) {
  struct Case {
    std::vector<std::string> args;
    int code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"frobnicate"}, 2, "unknown command"},
      {{"run"}, 2, "needs an IMAGE"},
      {{"run", "--name", "bad name!", "busybox"}, 2, "invalid container name"},
      {{"run", "--user", "bob:staff", "busybox"}, 2, "numeric GID"},
      {{"run", "-e", "=x", "busybox"}, 2, "name is empty"},
      {{"run", "--bogus", "busybox"}, 2, "--bogus"},
      {{"run", "-it", "busybox"}, 1, "not a TTY"},
      {{"stop", "-t", "-1", "x"}, 2, "-t"},
      {{"logs", "--tail", "many", "x"}, 2, "--tail"},
      {{"exec", "x"}, 2, "needs a CONTAINER and a CMD"},
      {{"exec", "-i", "--timeout", "5", "x", "cat"}, 2, "--timeout works only without"},
      {{"stop", "nosuch"}, 1, "no container named \"nosuch\""},
  };
  for (const Case& c : cases) {
    Result r = Fun(c.args);
    EXPECT_EQ(r.code, c.code) << c.args[0] << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.says)) << c.args[0];
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST_F(FunCliTest, FailuresLeakNoSandbox) {
  const size_t before = OurPods();
  // One error line (progress lines of the pull may come before it).
  auto one_line = [](const Result& r) {
    size_t errors = 0;
    for (size_t at = 0; (at = r.err.find("fun: ", at)) != std::string::npos; ++at) ++errors;
    return errors == 1 && r.err.back() == '\n' &&
           r.err.find('\n', r.err.rfind("fun: ")) == r.err.size() - 1;
  };
  // An image the registry does not have.
  Result unknown = Fun({"run", "--rm", registry_->host() + "/fun/nothing:here", "true"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("not found"));
  EXPECT_TRUE(one_line(unknown)) << unknown.err;
  // An invalid reference never reaches containerd.
  Result invalid = Fun({"run", "Fun/BusyBox:", "true"});
  EXPECT_EQ(invalid.code, 2);
  EXPECT_THAT(invalid.err, HasSubstr("invalid image reference"));
  // A registry that is down: one of our own, started and stopped again.
  auto down = RegistryFixture::Create({.seed = false});
  ASSERT_TRUE(down.ok()) << down.status();
  ASSERT_TRUE(containerd_->TrustPlainHttpRegistry((*down)->host()).ok());
  ASSERT_TRUE((*down)->Stop().ok());
  Result refused = Fun({"run", "--rm", (*down)->host() + "/fun/busybox:latest", "true"});
  EXPECT_EQ(refused.code, 1);
  EXPECT_THAT(refused.err, HasSubstr("connection refused"));
  EXPECT_TRUE(one_line(refused)) << refused.err;
  // A command the image does not have: the pod made for it is removed again.
  Result nocmd = Fun({"run", "--rm", Busybox(), "/no/such/program"});
  EXPECT_NE(nocmd.code, 0);
  EXPECT_TRUE(one_line(nocmd)) << nocmd.err;
  EXPECT_EQ(OurPods(), before) << "a failed run leaked a pod sandbox";
}

// A fresh folder under the test's temp dir (resolved: no symlink in it), removed by the caller.
std::string MakeTempDir(std::string_view name) {
  std::string tmpl = ::testing::TempDir() + "/" + std::string(name) + "_XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return std::filesystem::canonical(tmpl).string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

TEST_F(FunCliTest, VolumesBindMountHostFolders) {
  const std::string dir = MakeTempDir("fun_volume");
  WriteFile(dir + "/from-host", "hello from the host\n");
  // The host's file read in the container, the container's file seen on the host.
  Result r = Fun({"run", "--rm", "-v", dir + ":/data", Busybox(), "sh", "-c",
                  "cat /data/from-host; echo from the container > /data/from-ctr"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "hello from the host\n");
  EXPECT_EQ(ReadFile(dir + "/from-ctr"), "from the container\n");

  // :ro refuses writes (EROFS) and still reads.
  Result ro = Fun({"run", "--rm", "--volume", dir + ":/data:ro", Busybox(), "sh", "-c",
                   "cat /data/from-host; echo x > /data/nope"});
  EXPECT_NE(ro.code, 0);
  EXPECT_EQ(ro.out, "hello from the host\n");
  EXPECT_THAT(ro.err, HasSubstr("Read-only file system"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/nope"));

  // inspect (and ps --json) list the mounts as Docker's "Mounts"; a symlink is mounted as what
  // it leads to, and a file can be mounted too.
  std::filesystem::create_directory(dir + "/sub");
  std::filesystem::create_directory_symlink(dir + "/sub", dir + "/link");
  ASSERT_EQ(Fun({"run", "-d", "--name", "mounts", "-v", dir + ":/data:ro", "-v", dir + "/link:/sub",
                 "-v", dir + "/from-host:/etc/greeting:ro", Busybox(), "sleep", "300"})
                .code,
            0);
  Result inspect = Fun({"inspect", "mounts"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  const auto mounts = nlohmann::json::parse(inspect.out)[0]["mounts"];
  ASSERT_EQ(mounts.size(), 3u) << inspect.out;
  EXPECT_EQ(mounts[0], nlohmann::json({{"type", "bind"},
                                       {"source", dir},
                                       {"destination", "/data"},
                                       {"mode", "ro"},
                                       {"rw", false},
                                       {"propagation", "private"}}));
  EXPECT_EQ(mounts[1]["source"], dir + "/sub");
  EXPECT_EQ(mounts[1]["destination"], "/sub");
  EXPECT_EQ(mounts[1]["rw"], true);
  EXPECT_FALSE(mounts[1].contains("vm_path")) << "natively the host path is mounted as it is";
  Result greeting = Fun({"exec", "mounts", "cat", "/etc/greeting"});
  EXPECT_EQ(greeting.out, "hello from the host\n");
  // What is written on the host is seen at once in the running container.
  WriteFile(dir + "/sub/later", "later\n");
  EXPECT_EQ(Fun({"exec", "mounts", "cat", "/sub/later"}).out, "later\n");
  Result ps = Fun({"ps", "--json"});
  bool listed = false;
  for (const auto& c : nlohmann::json::parse(ps.out)) {
    if (c["name"] == "mounts") listed = c["mounts"].size() == 3;
  }
  EXPECT_TRUE(listed) << ps.out;
  EXPECT_EQ(Fun({"rm", "-f", "mounts"}).code, 0);
  std::filesystem::remove_all(dir);
}

TEST_F(FunCliTest, StartKeepsTheMounts) {
  const std::string dir = MakeTempDir("fun_volume_start");
  Result r = Fun({"run", "--name", "vol-again", "-v", dir + ":/data", Busybox(), "sh", "-c",
                  "echo ran >> /data/runs"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(ReadFile(dir + "/runs"), "ran\n");
  Result started = Fun({"start", "vol-again"});
  ASSERT_EQ(started.code, 0) << started.err;
  for (int i = 0; i < 100 && ReadFile(dir + "/runs") != "ran\nran\n"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ReadFile(dir + "/runs"), "ran\nran\n");
  Result inspect = Fun({"inspect", "vol-again"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_EQ(nlohmann::json::parse(inspect.out)[0]["mounts"][0]["source"], dir);
  // Its host folder gone, start refuses (containerd would make an empty one), in one line.
  for (int i = 0; i < 100; ++i) {
    auto j = nlohmann::json::parse(Fun({"inspect", "vol-again"}).out);
    if (j[0]["state"] == "exited") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::filesystem::remove_all(dir);
  Result gone = Fun({"start", "vol-again"});
  EXPECT_EQ(gone.code, 1);
  EXPECT_THAT(gone.err, HasSubstr(fmt::format("starting vol-again: the host path {} of the mount "
                                              "on /data is gone",
                                              dir)));
  EXPECT_EQ(std::count(gone.err.begin(), gone.err.end(), '\n'), 1) << gone.err;
  EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_EQ(Fun({"rm", "-f", "vol-again"}).code, 0);
}

TEST_F(FunCliTest, BadVolumesFailBeforeAnythingIsCreated) {
  const std::string dir = MakeTempDir("fun_volume_bad");
  const size_t pods = OurPods();
  struct Case {
    std::string volume;
    int code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {dir + "/missing:/data", 1,
       fmt::format("fun: -v {0}/missing:/data: {0}/missing does not exist; create it first", dir)},
      {"relative/dir:/data", 2, "the host path relative/dir is relative"},
      {"data:/data", 2, "named volumes are not supported; give an absolute host path"},
      {dir + ":data", 2, "the container path data is relative"},
      {dir + ":/", 2, "the container path is \"/\""},
      {dir + ":/data:z", 2, "option \"z\" is not supported"},
      {"C:\\data:/data", 2, "Windows paths are not supported"},
      {":/data", 2, "the host path is empty"},
  };
  for (const Case& c : cases) {
    Result r = Fun({"run", "-d", "--name", "badvol", "-v", c.volume, Busybox(), "true"});
    EXPECT_EQ(r.code, c.code) << c.volume << ": " << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.says)) << c.volume;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  Result twice = Fun({"run", "-d", "--name", "badvol", "-v", dir + ":/data", "-v", dir + ":/data/",
                      Busybox(), "true"});
  EXPECT_EQ(twice.code, 2);
  EXPECT_THAT(twice.err, HasSubstr("/data is already mounted"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/missing")) << "fun does not create host folders";
  EXPECT_EQ(OurPods(), pods);
  Result ps = Fun({"ps", "-a", "--json"});
  for (const auto& c : nlohmann::json::parse(ps.out)) {
    EXPECT_NE(c["name"], "badvol") << "a refused -v left a container";
  }
  std::filesystem::remove_all(dir);
}

// A VM instance's -v goes through its shares (config.json, or this machine's defaults for an
// instance not made yet); a path outside them fails before any VM is started or created. (A
// real VM mounting through a share is the harness's.)
TEST(FunCliHostTest, VolumesOutsideTheVmsSharesFailBeforeTheVmStarts) {
  const std::string home = MakeTempDir("fun_vm_home");
  const std::string outside = MakeTempDir("fun_vm_outside");
  std::filesystem::create_directories(home + "/share/sub");
  std::filesystem::create_directories(home + "/ro");
  Environment env;
  env.paths = {.os = Os::kLinux, .home = home, .fun_home = home + "/state"};
  auto fun = [&](std::vector<std::string> args) {
    std::ostringstream out, err;
    Result r;
    r.code = fun::cli::Run(args, env, out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  };
  Result fresh = fun({"--host", "fresh", "run", "-v", outside + ":/data", "busybox", "true"});
  EXPECT_EQ(fresh.code, 1);
  EXPECT_EQ(fresh.err,
            fmt::format("fun: -v {0}:/data: {0} is not under a shared folder (shares: {1}); "
                        "share it: fun-vmctl stop fresh && fun-vmctl start fresh --share {0} (or "
                        "add it to \"shares\" in {1}/state/instances/fresh/config.json)\n",
                        outside, home));
  EXPECT_FALSE(std::filesystem::exists(home + "/state/instances/fresh"));

  const std::string dir = home + "/state/instances/vmtest";
  std::filesystem::create_directories(dir);
  WriteFile(dir + "/config.json",
            nlohmann::json({{"name", "vmtest"},
                            {"shares",
                             {{{"host_path", home + "/share"}, {"guest_path", "/mnt/share"}},
                              {{"host_path", home + "/ro"}, {"read_only", true}}}}})
                .dump());
  Result home_not_shared =
      fun({"--host", "vmtest", "run", "-v", home + ":/data", "busybox", "true"});
  EXPECT_EQ(home_not_shared.code, 1);
  EXPECT_THAT(home_not_shared.err,
              HasSubstr(fmt::format("(shares: {0}/share, {0}/ro (read-only)); share it: "
                                    "fun-vmctl stop vmtest && fun-vmctl start vmtest --share {0} "
                                    "(or add it to \"shares\" in {1}/config.json)",
                                    home, dir)));
  Result rw = fun({"--host", "vmtest", "run", "-v", home + "/ro:/ro:rw", "busybox", "true"});
  EXPECT_EQ(rw.code, 1);
  EXPECT_THAT(rw.err, HasSubstr("is in the read-only shared folder"));
  EXPECT_EQ(std::count(rw.err.begin(), rw.err.end(), '\n'), 1) << rw.err;
  // Nothing was started.
  EXPECT_FALSE(std::filesystem::exists(dir + "/hostd.pid"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/state.json"));
  std::filesystem::remove_all(home);
  std::filesystem::remove_all(outside);
}

TEST(FunCliHostTest, HelpNamesTheFlags) {
  Environment env;
  env.paths = PathsInputFromEnvironment();
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"}, {"-h"}, {"help"}, {"ps", "--help"}}) {
    std::ostringstream out, err;
    EXPECT_EQ(fun::cli::Run(args, env, out, err), 0) << args[0] << err.str();
    EXPECT_THAT(out.str(), HasSubstr("[-v HOSTPATH:CTRPATH[:ro]]..."));
  }
  std::ostringstream out, err;
  EXPECT_EQ(fun::cli::Run({"run", "--help"}, env, out, err), 0) << err.str();
  EXPECT_THAT(out.str(), HasSubstr("usage: fun run [OPTIONS] IMAGE [CMD...]"));
  EXPECT_THAT(out.str(), HasSubstr("-v, --volume VALUE"));
  EXPECT_THAT(out.str(), HasSubstr("--privileged"));
}

TEST(FunCliHostTest, ContainerdGoneIsOneLineAndExit1) {
  Environment env;
  env.paths = PathsInputFromEnvironment();
  std::ostringstream out, err;
  EXPECT_EQ(fun::cli::Run({"--host", "unix:/tmp/fun-no-such-containerd.sock", "ps"}, env, out, err),
            1);
  const std::string e = err.str();
  EXPECT_THAT(e, HasSubstr("cannot reach containerd"));
  EXPECT_EQ(std::count(e.begin(), e.end(), '\n'), 1) << e;
}

TEST(FunCliHostTest, AHostThatIsNoInstanceNameIsRefused) {
  Environment env;
  env.paths = PathsInputFromEnvironment();
  env.fun_host = "bad/host";
  std::ostringstream out, err;
  EXPECT_EQ(fun::cli::Run({"ps"}, env, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("neither an instance name, native, nor unix:PATH"));
}

}  // namespace
}  // namespace fun::cli
