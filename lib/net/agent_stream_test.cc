#include "lib/net/agent_stream.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/base/socket.h"
#include "lib/base/unique_fd.h"

namespace fun::agent {
namespace {

using namespace std::chrono_literals;

struct Pair {
  UniqueFd a, b;
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a = UniqueFd(sv[0]);
    b = UniqueFd(sv[1]);
  }
};

TEST(AgentStreamTest, AReplyIsReadByteExactAndWhatFollowsStaysInTheStream) {
  Pair p;
  auto wire = EncodeReply({.status = ReplyStatus::kBadToken, .message = "no"});
  ASSERT_TRUE(wire.ok());
  ASSERT_TRUE(WriteAll(p.a.get(), *wire + "9P bytes").ok());
  auto r = ReadAgentReply(p.b.get(), std::chrono::steady_clock::now() + 5s);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, ReplyStatus::kBadToken);
  EXPECT_EQ(r->message, "no");
  char rest[16] = {};
  EXPECT_EQ(::read(p.b.get(), rest, sizeof(rest)), 8);
  EXPECT_EQ(std::string(rest), "9P bytes");
}

TEST(AgentStreamTest, AReplyCutShortOrLateOrWrongIsNamed) {
  {
    Pair p;
    ASSERT_TRUE(WriteAll(p.a.get(), "FUNR").ok());
    p.a.reset();
    auto r = ReadAgentReply(p.b.get(), std::chrono::steady_clock::now() + 5s);
    EXPECT_EQ(r.status().code(), Code::kOutOfRange) << r.status();
  }
  {
    Pair p;
    auto r = ReadAgentReply(p.b.get(), std::chrono::steady_clock::now() + 50ms);
    EXPECT_EQ(r.status().code(), Code::kDeadlineExceeded) << r.status();
  }
  {
    Pair p;
    ASSERT_TRUE(WriteAll(p.a.get(), "HTTP/1.1 200 OK\r\n").ok());
    auto r = ReadAgentReply(p.b.get(), std::chrono::steady_clock::now() + 5s);
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << r.status();
  }
}

TEST(AgentStreamTest, ARequestKeepsTheBytesAfterItAndAStopCancelsTheWait) {
  Pair p;
  auto wire = EncodeRequest({.kind = Kind::kP9, .target = "home"});
  ASSERT_TRUE(wire.ok());
  ASSERT_TRUE(WriteAll(p.a.get(), *wire + "early").ok());
  std::string buffered;
  auto got = ReadAgentRequest(p.b.get(), std::chrono::steady_clock::now() + 5s, -1, &buffered);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->request.kind, Kind::kP9);
  EXPECT_EQ(got->request.target, "home");
  EXPECT_EQ(got->early, "early");
  Pair stop;
  ASSERT_TRUE(WriteAll(stop.a.get(), "x").ok());
  std::string none;
  auto cancelled =
      ReadAgentRequest(p.b.get(), std::chrono::steady_clock::now() + 5s, stop.b.get(), &none);
  EXPECT_EQ(cancelled.status().code(), Code::kCancelled) << cancelled.status();
}

}  // namespace
}  // namespace fun::agent
