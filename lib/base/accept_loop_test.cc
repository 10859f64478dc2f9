#include "lib/base/accept_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace fun {
namespace {

TEST(AcceptLoopTest, ServesManyConnectionsAndReapsThreads) {
  std::atomic<int> served{0};
  auto loop =
      AcceptLoop::Create(*ParseSocketAddress("tcp:127.0.0.1:0"), [&](UniqueFd c, std::string) {
        char b[4];
        if (ReadExactly(c.get(), b, 4).ok()) {
          (void)WriteAll(c.get(), std::string_view(b, 4));
        }
        ++served;
      });
  ASSERT_TRUE(loop.ok()) << loop.status();
  std::thread t([&] { EXPECT_TRUE((*loop)->Run().ok()); });
  auto addr = *ParseSocketAddress((*loop)->address());
  for (int i = 0; i < 200; ++i) {
    auto c = Connect(addr);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(WriteAll(c->get(), "ping").ok());
    char b[4];
    ASSERT_TRUE(ReadExactly(c->get(), b, 4).ok());
    EXPECT_EQ(std::string(b, 4), "ping");
  }
  // All 200 ended; at most the last few threads are still being reaped.
  for (int i = 0; i < 100 && served.load() < 200; ++i) std::this_thread::yield();
  EXPECT_LE((*loop)->live_connections(), 200u);
  (*loop)->Stop();
  t.join();
  while (served.load() < 200) std::this_thread::yield();
  EXPECT_EQ((*loop)->live_connections(), 0u);
}

TEST(AcceptLoopTest, UnixSocketRemovedOnDestruction) {
  std::string path = "/tmp/fun-accept-loop-" + std::to_string(::getpid()) + ".sock";
  {
    auto loop =
        AcceptLoop::Create(*ParseSocketAddress("unix:" + path), [](UniqueFd, std::string) {});
    ASSERT_TRUE(loop.ok()) << loop.status();
    EXPECT_EQ(::access(path.c_str(), F_OK), 0);
  }
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
}

TEST(AcceptLoopTest, StopBeforeRunReturnsAtOnce) {
  auto loop =
      AcceptLoop::Create(*ParseSocketAddress("tcp:127.0.0.1:0"), [](UniqueFd, std::string) {});
  ASSERT_TRUE(loop.ok());
  (*loop)->Stop();
  EXPECT_TRUE((*loop)->Run().ok());
}

}  // namespace
}  // namespace fun
