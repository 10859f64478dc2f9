#include "lib/net/splice.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <tuple>

#include "lib/base/socket.h"

namespace fun::net {
namespace {

using ::testing::HasSubstr;

enum class Transport { kUnix, kTcp };

struct StreamPair {
  UniqueFd left, right;
};

StreamPair UnixPair() {
  int sv[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0) << std::strerror(errno);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

StreamPair TcpPair() {
  auto addr = ParseSocketAddress("tcp:127.0.0.1:0");
  EXPECT_TRUE(addr.ok());
  auto listener = Listen(*addr);
  EXPECT_TRUE(listener.ok()) << listener.status();
  auto bound = ParseSocketAddress(*LocalAddress(listener->get()));
  auto client = Connect(*bound);
  EXPECT_TRUE(client.ok()) << client.status();
  auto server = Accept(listener->get());
  EXPECT_TRUE(server.ok()) << server.status();
  return {std::move(*client), std::move(*server)};
}

StreamPair MakePair(Transport t) { return t == Transport::kUnix ? UnixPair() : TcpPair(); }

std::string Payload(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(size, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Reads until EOF. A read error ends it too (and is reported through *err when given).
std::string ReadToEof(int fd, int* err = nullptr) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && err != nullptr) *err = errno;
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

std::string ReadExactlyN(int fd, size_t n) {
  std::string out(n, '\0');
  EXPECT_TRUE(ReadExactly(fd, out.data(), n).ok());
  return out;
}

// client <-> [a  Splice  b] <-> server, the relay on its own thread.
class Relay {
 public:
  Relay(Transport t, SpliceOptions options) : options_(options) {
    auto front = MakePair(t);
    auto back = MakePair(t);
    client = std::move(front.left);
    a_ = std::move(front.right);
    b_ = std::move(back.left);
    server = std::move(back.right);
    options_.stats = &stats;
    thread_ = std::thread([this] { result = Splice(a_.get(), b_.get(), options_); });
  }
  ~Relay() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  UniqueFd client, server;
  Status result;
  SpliceStats stats;

 private:
  SpliceOptions options_;
  UniqueFd a_, b_;
  std::thread thread_;
};

class SpliceTest : public ::testing::TestWithParam<std::tuple<Transport, SpliceMethod>> {
 protected:
  SpliceOptions Options() { return {.method = std::get<1>(GetParam())}; }
  Transport transport() { return std::get<0>(GetParam()); }
};

TEST_P(SpliceTest, HalfCloseLetsTheOtherSideAnswer) {
  Relay r(transport(), Options());
  ASSERT_TRUE(WriteAll(r.client.get(), "request").ok());
  ASSERT_EQ(::shutdown(r.client.get(), SHUT_WR), 0);
  // The server sees the request, then EOF, while its own direction is still open.
  EXPECT_EQ(ReadToEof(r.server.get()), "request");
  ASSERT_TRUE(WriteAll(r.server.get(), "response after EOF").ok());
  ASSERT_EQ(::shutdown(r.server.get(), SHUT_WR), 0);
  EXPECT_EQ(ReadToEof(r.client.get()), "response after EOF");
  r.Join();
  EXPECT_TRUE(r.result.ok()) << r.result;
  EXPECT_EQ(r.stats.a_to_b, 7u);
  EXPECT_EQ(r.stats.b_to_a, 18u);
}

TEST_P(SpliceTest, ServerClosingFirstEndsThatDirectionOnly) {
  Relay r(transport(), Options());
  ASSERT_TRUE(WriteAll(r.server.get(), "banner").ok());
  ASSERT_EQ(::shutdown(r.server.get(), SHUT_WR), 0);
  EXPECT_EQ(ReadToEof(r.client.get()), "banner");
  ASSERT_TRUE(WriteAll(r.client.get(), "still talking").ok());
  ASSERT_EQ(::shutdown(r.client.get(), SHUT_WR), 0);
  EXPECT_EQ(ReadToEof(r.server.get()), "still talking");
  r.Join();
  EXPECT_TRUE(r.result.ok()) << r.result;
}

TEST_P(SpliceTest, LargeTransfersBothWaysAtOnceDoNotDeadlock) {
  const std::string up = Payload(24 << 20, 1);
  const std::string down = Payload(24 << 20, 2);
  Relay r(transport(), Options());
  std::string got_up, got_down;
  // Each peer writes everything before it reads anything: the relay must keep both
  // directions moving on its own.
  std::thread client_writer([&] {
    EXPECT_TRUE(WriteAll(r.client.get(), up).ok());
    ::shutdown(r.client.get(), SHUT_WR);
  });
  std::thread server_writer([&] {
    EXPECT_TRUE(WriteAll(r.server.get(), down).ok());
    ::shutdown(r.server.get(), SHUT_WR);
  });
  std::thread server_reader([&] { got_up = ReadToEof(r.server.get()); });
  got_down = ReadToEof(r.client.get());
  client_writer.join();
  server_writer.join();
  server_reader.join();
  r.Join();
  EXPECT_TRUE(r.result.ok()) << r.result;
  EXPECT_TRUE(got_up == up) << "up: " << got_up.size() << " of " << up.size() << " bytes";
  EXPECT_TRUE(got_down == down) << "down: " << got_down.size() << " of " << down.size();
  EXPECT_EQ(r.stats.a_to_b, up.size());
  EXPECT_EQ(r.stats.b_to_a, down.size());
}

TEST_P(SpliceTest, StopFdCancels) {
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(stop.valid());
  SpliceOptions o = Options();
  o.stop_fd = stop.get();
  Relay r(transport(), o);
  ASSERT_TRUE(WriteAll(r.client.get(), "x").ok());
  EXPECT_EQ(ReadExactlyN(r.server.get(), 1), "x");  // the relay is up and running
  uint64_t one = 1;
  ASSERT_EQ(::write(stop.get(), &one, sizeof(one)), 8);
  r.Join();
  EXPECT_EQ(r.result.code(), Code::kCancelled) << r.result;
  EXPECT_EQ(r.stats.a_to_b, 1u);
}

TEST_P(SpliceTest, IdleTimeoutEndsAQuietRelay) {
  SpliceOptions o = Options();
  o.idle_timeout = std::chrono::milliseconds(20);
  Relay r(transport(), o);
  ASSERT_TRUE(WriteAll(r.client.get(), "ping").ok());
  EXPECT_EQ(ReadExactlyN(r.server.get(), 4), "ping");
  r.Join();  // nothing moves any more
  EXPECT_EQ(r.result.code(), Code::kDeadlineExceeded) << r.result;
  EXPECT_EQ(r.stats.a_to_b, 4u);
}

INSTANTIATE_TEST_SUITE_P(All, SpliceTest,
                         ::testing::Combine(::testing::Values(Transport::kUnix, Transport::kTcp),
                                            ::testing::Values(SpliceMethod::kAuto,
                                                              SpliceMethod::kPipe,
                                                              SpliceMethod::kReadWrite)),
                         [](const auto& param_info) {
                           std::string name =
                               std::get<0>(param_info.param) == Transport::kUnix ? "Unix" : "Tcp";
                           switch (std::get<1>(param_info.param)) {
                             case SpliceMethod::kAuto:
                               return name + "Auto";
                             case SpliceMethod::kPipe:
                               return name + "Pipe";
                             case SpliceMethod::kReadWrite:
                               return name + "ReadWrite";
                           }
                           return name;
                         });

TEST(SpliceResetTest, PeerResetIsAnErrorNamingTheSide) {
  Relay r(Transport::kTcp, {.a_name = "host", .b_name = "container"});
  ASSERT_TRUE(WriteAll(r.client.get(), "hello").ok());
  EXPECT_EQ(ReadExactlyN(r.server.get(), 5), "hello");
  // SO_LINGER 0: close() sends a RST instead of a FIN.
  linger l{.l_onoff = 1, .l_linger = 0};
  ASSERT_EQ(::setsockopt(r.server.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l)), 0);
  r.server.reset();
  r.Join();
  EXPECT_FALSE(r.result.ok());
  EXPECT_THAT(r.result.message(), HasSubstr("container"));
  EXPECT_EQ(r.result.sys_errno(), ECONNRESET) << r.result;
}

TEST(SpliceResetTest, WriteToAVanishedPeerIsAnErrorNotSigpipe) {
  // gtest leaves SIGPIPE at its default (kill the process): Splice must not raise it.
  for (SpliceMethod m : {SpliceMethod::kPipe, SpliceMethod::kReadWrite}) {
    Relay r(Transport::kUnix, {.method = m});
    r.server.reset();  // gone for good: reading b gives EOF, writing b gives EPIPE
    const std::string big = Payload(1 << 20, 3);
    // The writer fails or blocks once the relay has given up (nothing reads its side any
    // more); shutdown wakes it. Only the relay's result matters.
    std::thread writer([&] { WriteAll(r.client.get(), big).IgnoreError(); });
    r.Join();
    ::shutdown(r.client.get(), SHUT_RDWR);
    writer.join();
    EXPECT_FALSE(r.result.ok());
    EXPECT_EQ(r.result.sys_errno(), EPIPE) << r.result;
  }
}

TEST(SpliceEndsTest, PipesOnOneSide) {
  // stdin/stdout-style: the a side is two pipes, the b side a socket.
  int in[2], out[2];
  ASSERT_EQ(::pipe2(in, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  UniqueFd in_r(in[0]), in_w(in[1]), out_r(out[0]), out_w(out[1]);
  StreamPair s = UnixPair();
  Status result;
  SpliceStats stats;
  std::thread relay([&] {
    result = Splice(SpliceEnd{in_r.get(), out_w.get()}, SpliceEnd{s.left.get(), s.left.get()},
                    {.stats = &stats});
  });
  const std::string up = Payload(3 << 20, 4);
  std::thread writer([&] {
    EXPECT_TRUE(WriteAll(in_w.get(), up).ok());
    in_w.reset();  // EOF on the pipe becomes shutdown(SHUT_WR) on the socket
  });
  EXPECT_TRUE(ReadToEof(s.right.get()) == up);
  ASSERT_TRUE(WriteAll(s.right.get(), "answer").ok());
  ASSERT_EQ(::shutdown(s.right.get(), SHUT_WR), 0);
  writer.join();
  relay.join();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(stats.a_to_b, up.size());
  out_w.reset();  // the write side of a pipe is the caller's to close
  EXPECT_EQ(ReadToEof(out_r.get()), "answer");
}

// Writes `data` to fd in pieces of 1..max_piece bytes (sizes from `seed`), then half-closes.
std::thread WriteInPieces(int fd, const std::string& data, uint32_t seed, size_t max_piece) {
  return std::thread([fd, &data, seed, max_piece] {
    std::mt19937 rng(seed);
    size_t at = 0;
    while (at < data.size()) {
      size_t n = std::min<size_t>(data.size() - at, 1 + rng() % max_piece);
      EXPECT_TRUE(WriteAll(fd, std::string_view(data).substr(at, n)).ok());
      at += n;
    }
    ::shutdown(fd, SHUT_WR);
  });
}

TEST(SpliceEndsTest, SmallOddBufferWrapsAroundCorrectly) {
  // A 1000-byte ring with writes of every size exercises the wrap-around of the user-space
  // buffer; the pipe path rounds its size up to a page.
  for (SpliceMethod m : {SpliceMethod::kReadWrite, SpliceMethod::kPipe}) {
    Relay r(Transport::kUnix, {.buffer_size = 1000, .method = m});
    const std::string up = Payload(1 << 20, 5);
    std::thread writer = WriteInPieces(r.client.get(), up, 6, 3000);
    EXPECT_TRUE(ReadToEof(r.server.get()) == up);
    ::shutdown(r.server.get(), SHUT_WR);
    writer.join();
    r.Join();
    EXPECT_TRUE(r.result.ok()) << r.result;
  }
}

TEST(SpliceEndsTest, TheBufferGrowsUnderASlowReaderUpToTheBufferSizeAndKeepsTheOrder) {
  // The reader waits until the relay has filled its buffer several times over: it must grow
  // from 64 KiB (a ring moving what it holds, wrapped or not; a pipe resized with bytes in it)
  // but never past buffer_size (a pipe's rounded up to a power of two pages: 512 KiB here).
  for (auto [method, most] : {std::pair{SpliceMethod::kReadWrite, size_t{300} * 1024},
                              std::pair{SpliceMethod::kPipe, size_t{512} * 1024}}) {
    SCOPED_TRACE(method == SpliceMethod::kPipe ? "pipe" : "ring");
    Relay r(Transport::kUnix, {.buffer_size = 300 * 1024, .method = method});
    const std::string up = Payload(8 << 20, 7);
    std::thread writer = WriteInPieces(r.client.get(), up, 8, 100000);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_TRUE(ReadToEof(r.server.get()) == up);
    ::shutdown(r.server.get(), SHUT_WR);
    writer.join();
    r.Join();
    EXPECT_TRUE(r.result.ok()) << r.result;
    EXPECT_GT(r.stats.max_buffered, 64u * 1024);
    EXPECT_LE(r.stats.max_buffered, most);
  }
}

TEST(SpliceEndsTest, EndWithAReturnsWhileBStaysOpen) {
  // A relay to a device that never reaches EOF (a virtio-serial port): the connection ending
  // ends the relay, and the device stays usable for the next one.
  StreamPair conn = UnixPair();
  StreamPair device = UnixPair();
  Status result;
  SpliceStats stats;
  std::thread relay([&] {
    result = Splice(conn.right.get(), device.left.get(), {.end_with_a = true, .stats = &stats});
  });
  ASSERT_TRUE(WriteAll(conn.left.get(), "request").ok());
  char buf[16];
  ASSERT_EQ(::read(device.right.get(), buf, 7), 7);
  ASSERT_TRUE(WriteAll(device.right.get(), "reply").ok());
  ASSERT_EQ(::read(conn.left.get(), buf, 5), 5);
  EXPECT_EQ(std::string(buf, 5), "reply");
  conn.left.reset();  // the client goes away; the device does not
  relay.join();
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_EQ(stats.a_to_b, 7u);
  EXPECT_EQ(stats.b_to_a, 5u);
  // The device was not half-closed: it still takes bytes both ways.
  ASSERT_TRUE(WriteAll(device.left.get(), "x").ok());
  ASSERT_EQ(::read(device.right.get(), buf, 1), 1);
}

TEST(SpliceArgsTest, BadFdIsInvalidArgument) {
  StreamPair s = UnixPair();
  EXPECT_EQ(Splice(-1, s.left.get()).code(), Code::kInvalidArgument);
  int closed = ::dup(s.left.get());
  ::close(closed);
  EXPECT_EQ(Splice(closed, s.left.get()).code(), Code::kInvalidArgument);
}

TEST(SpliceArgsTest, AlreadyStoppedReturnsAtOnceAndRestoresFlags) {
  StreamPair x = UnixPair(), y = UnixPair();
  UniqueFd stop(::eventfd(1, EFD_CLOEXEC));
  SpliceStats stats{.a_to_b = 99, .b_to_a = 99};
  Status s = Splice(x.right.get(), y.left.get(), {.stop_fd = stop.get(), .stats = &stats});
  EXPECT_EQ(s.code(), Code::kCancelled);
  EXPECT_EQ(stats.a_to_b, 0u);
  EXPECT_EQ(stats.b_to_a, 0u);
  EXPECT_EQ(::fcntl(x.right.get(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_EQ(::fcntl(y.left.get(), F_GETFL) & O_NONBLOCK, 0);
}

}  // namespace
}  // namespace fun::net
