#include "lib/vm/qmp.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "lib/base/process.h"

namespace fun::vm {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

TEST(ParseQmpLineTest, Kinds) {
  auto g = ParseQmpLine(R"({"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": []}})");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->kind, QmpMessage::Kind::kGreeting);
  auto r = ParseQmpLine(R"({"return": {"status": "running", "running": true}})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->kind, QmpMessage::Kind::kReturn);
  EXPECT_EQ(r->body["status"], "running");
  auto e = ParseQmpLine(R"({"error": {"class": "CommandNotFound", "desc": "nope"}})");
  EXPECT_EQ(e->kind, QmpMessage::Kind::kError);
  auto ev = ParseQmpLine(R"({"event": "SHUTDOWN", "data": {"guest": true}})");
  EXPECT_EQ(ev->kind, QmpMessage::Kind::kEvent);
  for (const char* bad : {"", "[1]", "{", "{\"x\": 1}", "{\"event\": 3}", "\xff"}) {
    EXPECT_FALSE(ParseQmpLine(bad).ok()) << bad;
  }
}

// A real QEMU with no guest at all (-machine none): enough to speak QMP.
TEST(QmpClientTest, TalksToRealQemu) {
  std::string tmpl = "/tmp/fun-qmp-test-XXXXXX";
  std::string dir = ::mkdtemp(tmpl.data());
  std::string sock = dir + "/qmp.sock";
  Command cmd{.program = "qemu-system-x86_64",
              .args = {"-machine", "none", "-nodefaults", "-display", "none", "-qmp",
                       "unix:" + sock + ",server=on,wait=off"}};
  auto qemu = ProcessRunner::Default().Start(cmd);
  ASSERT_TRUE(qemu.ok()) << qemu.status() << " (run ci/setup.sh)";
  std::unique_ptr<QmpClient> qmp;
  for (int i = 0; i < 200 && !qmp; ++i) {
    auto c = QmpClient::Connect(sock, 5s);
    if (c.ok()) {
      qmp = std::move(*c);
    } else {
      ASSERT_TRUE((*qemu)->Running());
      std::this_thread::sleep_for(25ms);
    }
  }
  ASSERT_TRUE(qmp) << "QEMU never opened its QMP socket";
  auto st = qmp->QueryStatus();
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_FALSE(st->empty());
  auto bad = qmp->Execute("no-such-command");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("no-such-command"));
  ASSERT_TRUE(qmp->Execute("quit").ok());
  auto r = (*qemu)->Wait(30s);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0);
  std::system(("rm -rf " + dir).c_str());  // NOLINT
}

TEST(QmpClientTest, NoSocketIsUnavailable) {
  auto c = QmpClient::Connect("/tmp/fun-no-such-qmp.sock", 1s);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kNotFound);
}

}  // namespace
}  // namespace fun::vm
