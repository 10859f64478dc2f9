// splice_bench: the two data paths of net::Splice side by side, 1 GiB per iteration.
//
//   build/perf/splice_bench --benchmark_filter=Unix
//
// writer -> [x0 x1] -> Splice(x1, y0) -> [y0 y1] -> reader, over unix socketpairs, TCP
// loopback, or TCP in and unix out (the agent's containerd relay); "BothWays" runs 1 GiB in
// each direction at once. The writer and the reader are
// plain write(2)/read(2) loops with 1 MiB buffers, so the relay is the bottleneck. Besides
// the throughput, relay_cpu_ms_per_GiB is the CPU time the relay thread spent per GiB moved,
// which stays meaningful on a busy machine where wall time does not.
#include <benchmark/benchmark.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>

#include "lib/base/socket.h"
#include "lib/net/splice.h"

namespace fun::net {
namespace {

constexpr size_t kTotal = size_t{1} << 30;
constexpr size_t kChunk = size_t{1} << 20;

struct Pair {
  UniqueFd left, right;
};

Pair UnixPair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

Pair TcpPair() {
  auto listener = Listen(*ParseSocketAddress("tcp:127.0.0.1:0"));
  if (!listener.ok()) std::abort();
  auto client = Connect(*ParseSocketAddress(*LocalAddress(listener->get())));
  auto server = Accept(listener->get());
  if (!client.ok() || !server.ok()) std::abort();
  return {std::move(*client), std::move(*server)};
}

void Pump(int fd, size_t total) {
  std::string buf(kChunk, 'x');
  while (total > 0) {
    size_t n = std::min(total, buf.size());
    if (!WriteAll(fd, std::string_view(buf).substr(0, n)).ok()) std::abort();
    total -= n;
  }
  ::shutdown(fd, SHUT_WR);
}

size_t Drain(int fd) {
  std::string buf(kChunk, '\0');
  size_t got = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return got;
    got += static_cast<size_t>(n);
  }
}

enum class Link { kUnix, kTcp, kTcpToUnix };

double ProcessCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

void BM_Splice(benchmark::State& state, Link link, bool both_ways, SpliceMethod method,
               size_t buffer_size) {
  double relay_cpu_s = 0;  // CPU time of the relay thread alone: steadier than wall time
  double total_cpu_s = 0;  // writers, readers and relay: what the whole path costs
  for (auto _ : state) {
    // x: writer side (TCP unless kUnix); y: reader side (unix unless kTcp).
    Pair x = link == Link::kUnix ? UnixPair() : TcpPair();
    Pair y = link == Link::kTcp ? TcpPair() : UnixPair();
    double cpu0 = ProcessCpuSeconds();
    Status result;
    std::thread relay([&] {
      timespec t0{}, t1{};
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
      result = Splice(x.right.get(), y.left.get(), {.buffer_size = buffer_size, .method = method});
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
      relay_cpu_s += static_cast<double>(t1.tv_sec - t0.tv_sec) +
                     static_cast<double>(t1.tv_nsec - t0.tv_nsec) / 1e9;
    });
    std::thread up_writer([&] { Pump(x.left.get(), kTotal); });
    std::thread down_writer([&] {
      if (both_ways) {
        Pump(y.right.get(), kTotal);
      } else {
        ::shutdown(y.right.get(), SHUT_WR);
      }
    });
    size_t down = 0;
    std::thread down_reader([&] { down = Drain(x.left.get()); });
    size_t up = Drain(y.right.get());
    up_writer.join();
    down_writer.join();
    down_reader.join();
    relay.join();
    total_cpu_s += ProcessCpuSeconds() - cpu0;
    if (!result.ok() || up != kTotal || down != (both_ways ? kTotal : 0)) {
      state.SkipWithError("relay failed");
      break;
    }
  }
  double gib = static_cast<double>(state.iterations()) * (both_ways ? 2 : 1);
  state.counters["relay_cpu_ms_per_GiB"] = relay_cpu_s * 1000 / gib;
  state.counters["total_cpu_ms_per_GiB"] = total_cpu_s * 1000 / gib;
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(both_ways ? 2 * kTotal : kTotal));
}

#define FUN_SPLICE_BENCH(name, link, both, method, buffer)                     \
  BENCHMARK_CAPTURE(BM_Splice, name, link, both, SpliceMethod::method, buffer) \
      ->Unit(benchmark::kMillisecond)                                          \
      ->UseRealTime()                                                          \
      ->Iterations(3)

constexpr size_t k256K = 256 * 1024;
constexpr size_t k1M = 1024 * 1024;
FUN_SPLICE_BENCH(Unix_Pipe, Link::kUnix, false, kPipe, k256K);
FUN_SPLICE_BENCH(Unix_ReadWrite, Link::kUnix, false, kReadWrite, k256K);
FUN_SPLICE_BENCH(Unix_BothWays_Pipe, Link::kUnix, true, kPipe, k256K);
FUN_SPLICE_BENCH(Unix_BothWays_ReadWrite, Link::kUnix, true, kReadWrite, k256K);
// fun-guestd's and fun-hostd's case: TCP on one side, a unix socket (containerd's) on the other.
FUN_SPLICE_BENCH(TcpUnix_BothWays_Pipe, Link::kTcpToUnix, true, kPipe, k256K);
FUN_SPLICE_BENCH(TcpUnix_BothWays_ReadWrite, Link::kTcpToUnix, true, kReadWrite, k256K);
FUN_SPLICE_BENCH(Tcp_Pipe, Link::kTcp, false, kPipe, k256K);
FUN_SPLICE_BENCH(Tcp_ReadWrite, Link::kTcp, false, kReadWrite, k256K);
FUN_SPLICE_BENCH(Tcp_Pipe_1MiB, Link::kTcp, false, kPipe, k1M);
FUN_SPLICE_BENCH(Tcp_ReadWrite_1MiB, Link::kTcp, false, kReadWrite, k1M);
// Smaller buffers stay in the CPU's caches between the read and the write.
FUN_SPLICE_BENCH(Tcp_ReadWrite_16K, Link::kTcp, false, kReadWrite, 16 * 1024);
FUN_SPLICE_BENCH(Tcp_ReadWrite_64K, Link::kTcp, false, kReadWrite, 64 * 1024);

}  // namespace
}  // namespace fun::net
