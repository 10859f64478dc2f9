// fun-forward's flags in-process, and the real binary end to end: fun-forward in front of the
// real fun-guestd (both started as processes on loopback), an echo server in this process.
#include "tools/fun-forward/forward.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "lib/base/accept_loop.h"
#include "lib/base/process.h"
#include "lib/net/agent_client.h"

namespace fun::forward {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr std::chrono::milliseconds kDeadline = 60s;

struct Result {
  int code;
  std::string out, err;
};

Result RunForward(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  int p[2];
  EXPECT_EQ(::pipe(p), 0);
  ::close(p[1]);  // readable (EOF) at once: a run that gets going stops right away
  int code = Run(args, out, err, p[0]);
  ::close(p[0]);
  return {code, out.str(), err.str()};
}

TEST(ForwardToolTest, BadFlagsAreOneLineAndExit2) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"--agent", "tcp:127.0.0.1:1", "--token-file", "/x"},  // no -p
      {"--bogus"},
      {"-p", "8080:10.0.0.1:80"},                                // neither --agent nor --direct
      {"--agent", "tcp:127.0.0.1:1", "-p", "8080:10.0.0.1:80"},  // no token
      {"--agent", "nowhere", "--token-file", "/x", "-p", "8080:10.0.0.1:80"},
      {"--agent", "tcp:127.0.0.1:1", "--token-file", "/x", "-p", "8080:80"},
      {"--direct", "--agent", "tcp:127.0.0.1:1", "-p", "8080:10.0.0.1:80"},
      {"--direct", "-p", "8080:10.0.0.1:80", "--buffer-kib", "1"},
      {"--direct", "-p", "8080:10.0.0.1:80", "--splice-method", "magic"},
      {"--direct", "-p", "8080:10.0.0.1:80", "--log-level", "loud"},
      {"--direct", "-p", "5353:10.0.0.1:53/udp"},
      {"--direct", "-p", "8080:10.0.0.1:80", "extra"},
  };
  for (const auto& args : cases) {
    Result r = RunForward(args);
    std::string joined = fmt::format("{}", fmt::join(args, " "));
    EXPECT_EQ(r.code, 2) << joined;
    EXPECT_THAT(r.err, StartsWith("fun-forward: ")) << joined;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << joined << ": " << r.err;
    EXPECT_EQ(r.out, "") << joined;
  }
}

TEST(ForwardToolTest, HelpExits0) {
  Result r = RunForward({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("[HOSTIP:]HOSTPORT:TARGETIP:TARGETPORT[/udp]"));
}

TEST(ForwardToolTest, PortInUseExits1) {
  auto taken = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
  ASSERT_TRUE(taken.ok());
  const uint16_t port = ParseSocketAddress(*LocalAddress(taken->get()))->port;
  Result r = RunForward({"--direct", "-p", fmt::format("{}:127.0.0.1:9", port)});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, fmt::format("fun-forward: 127.0.0.1:{}/tcp is already in use on this host: "
                               "stop what uses it or publish another host port (-p OTHERPORT:{})\n",
                               port, port));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <typename F>
bool Eventually(F cond) {
  auto end = std::chrono::steady_clock::now() + kDeadline;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

TEST(ForwardToolTest, TheBinaryForwardsThroughTheRealAgentUntilSigterm) {
  std::string tmpl = "/tmp/fun-forward-tool-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl.data());
  auto token = agent::CreateTokenFile(dir + "/secret");
  ASSERT_TRUE(token.ok()) << token.status();
  auto echo =
      AcceptLoop::Create(*ParseSocketAddress("tcp:127.0.0.1:0"), [](UniqueFd c, std::string) {
        char buf[4096];
        for (;;) {
          ssize_t n = ::read(c.get(), buf, sizeof(buf));
          if (n <= 0 || !WriteAll(c.get(), std::string_view(buf, static_cast<size_t>(n))).ok()) {
            return;
          }
        }
      });
  ASSERT_TRUE(echo.ok());
  std::thread echo_thread([&] { (void)(*echo)->Run(); });

  auto probe = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
  const std::string agent = *LocalAddress(probe->get());
  probe->reset();
  auto guestd = ProcessRunner::Default().Start(
      {.program = FUN_GUESTD_BINARY,
       .args = {"--listen", agent, "--token-file", dir + "/secret", "--containerd-socket",
                dir + "/none.sock", "--no-timesync", "--log-level", "warning"},
       .capture_output = false,
       .stdout_file = dir + "/guestd.log",
       .stderr_file = dir + "/guestd.log"});
  ASSERT_TRUE(guestd.ok()) << guestd.status();
  agent::AgentEndpoint ep{.address = *ParseSocketAddress(agent), .token = *token};
  ASSERT_TRUE(Eventually([&] { return agent::PingAgent(ep, 1s).ok(); }));

  const std::string target = (*echo)->address().substr(4);
  auto fwd = ProcessRunner::Default().Start(
      {.program = FUN_FORWARD_BINARY,
       .args = {"--agent", agent, "--token-file", dir + "/secret", "-p", "0:" + target},
       .capture_output = false,
       .stdout_file = dir + "/forward.out",
       .stderr_file = dir + "/forward.err"});
  ASSERT_TRUE(fwd.ok()) << fwd.status();
  ASSERT_TRUE(Eventually([&] {
    return ReadFile(dir + "/forward.out").find("ready\n") != std::string::npos;
  })) << ReadFile(dir + "/forward.err");
  // "forwarding 127.0.0.1:PORT -> TARGET/tcp"
  std::string out = ReadFile(dir + "/forward.out");
  ASSERT_THAT(out, StartsWith("forwarding 127.0.0.1:"));
  const std::string host = out.substr(11, out.find(' ', 11) - 11);
  EXPECT_THAT(out, HasSubstr(" -> " + target + "/tcp\n"));
  {
    auto c = Connect(*ParseSocketAddress("tcp:" + host));
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_TRUE(WriteAll(c->get(), "through fun-forward").ok());
    std::string got(19, '\0');
    ASSERT_TRUE(ReadExactly(c->get(), got.data(), got.size()).ok());
    EXPECT_EQ(got, "through fun-forward");
  }
  ASSERT_TRUE((*fwd)->Signal(SIGTERM).ok());
  auto ended = (*fwd)->Wait(kDeadline);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_EQ(ended->exit_code, 0);
  EXPECT_THAT(ReadFile(dir + "/forward.out"),
              HasSubstr(host + "/tcp: 1 accepted, 0 dial failures, 0 refused, 19 bytes to the "
                               "target, 19 back"));
  EXPECT_EQ(ReadFile(dir + "/forward.err"), "");

  (void)(*guestd)->Terminate(5s);
  (*echo)->Stop();
  echo_thread.join();
  std::system(("rm -rf " + dir).c_str());  // NOLINT
}

}  // namespace
}  // namespace fun::forward
