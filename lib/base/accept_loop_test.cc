#include "lib/base/accept_loop.h"

#include <gtest/gtest.h>
#include <pthread.h>

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

// A server holding thousands of connections asks for small stacks; each handler gets one.
TEST(AcceptLoopTest, ConnectionThreadsGetTheStackSizeAskedFor) {
  std::atomic<size_t> stack{0};
  auto loop = AcceptLoop::Create(*ParseSocketAddress("tcp:127.0.0.1:0"),
                                 [&](UniqueFd c, std::string) {
                                   pthread_attr_t attr;
                                   size_t size = 0;
                                   if (pthread_getattr_np(pthread_self(), &attr) == 0) {
                                     pthread_attr_getstacksize(&attr, &size);
                                     pthread_attr_destroy(&attr);
                                   }
                                   stack = size;
                                   (void)WriteAll(c.get(), "x");
                                 },
                                 {.thread_stack_size = 128 * 1024});
  ASSERT_TRUE(loop.ok()) << loop.status();
  std::thread t([&] { EXPECT_TRUE((*loop)->Run().ok()); });
  auto c = Connect(*ParseSocketAddress((*loop)->address()));
  ASSERT_TRUE(c.ok());
  char b;
  ASSERT_TRUE(ReadExactly(c->get(), &b, 1).ok());
  EXPECT_GE(stack.load(), 128u * 1024);
  EXPECT_LT(stack.load(), 1024u * 1024);  // not the 8 MiB default
  (*loop)->Stop();
  t.join();
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
