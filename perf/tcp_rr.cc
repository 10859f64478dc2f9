// tcp_rr: TCP request/response latency through whatever sits between a client and an echo
// server (a port forward, socat, haproxy), for perf/port_forward.sh.
//
//   build/perf/tcp_rr serve --listen tcp:127.0.0.1:5201
//   build/perf/tcp_rr ping --connect 127.0.0.1:5201 [--count 10000] [--size 1]
//   -> {"count": 10000, "size": 1, "median_us": 31.4, "p90_us": 35.0, "p99_us": 52.7}
//   build/perf/tcp_rr stream --connect 127.0.0.1:5201 [--seconds 5]
//   -> {"seconds": 5.0, "mib_per_s": 812.3}
//   build/perf/tcp_rr churn --connect 127.0.0.1:5201 [--count 2000] [--clients 8]
//   -> {"count": 2000, "clients": 8, "failed": 0, "per_s": 5120.4, "median_ms": 1.2, ...}
//
// stream sends 64 KiB writes for `seconds` on one connection while a second thread reads the
// echo, and reports the echoed bytes per second (each byte crossed the path both ways): the
// throughput test where no iperf3 server can run (fun/echo in a VM).
//
// ping opens one connection, exchanges `size` bytes back and forth `count` times (after 100
// untimed warm-up exchanges) and prints the round-trip percentiles on one line of JSON. The
// echo server answers each connection on its own thread (TCP_NODELAY both ends, as Fun's
// sockets are). A plain timed loop: no pass/fail, nothing but the numbers.
//
// churn opens `count` connections, `clients` at a time, each one: connect, 1 byte each way,
// close; it reports connections per second and the percentiles of one connection's life (what
// a burst of short HTTP requests costs through a forward: the dial behind each accept).
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lib/base/accept_loop.h"
#include "lib/base/flags.h"
#include "lib/base/socket.h"

namespace {

using Steady = std::chrono::steady_clock;

int Serve(const std::string& listen) {
  auto addr = fun::ParseSocketAddress(listen);
  if (!addr.ok()) {
    std::cerr << "tcp_rr: " << addr.status().message() << "\n";
    return 2;
  }
  auto loop = fun::AcceptLoop::Create(*addr, [](fun::UniqueFd c, std::string) {
    std::string buf(65536, '\0');
    for (;;) {
      ssize_t n = ::read(c.get(), buf.data(), buf.size());
      if (n <= 0) return;
      if (!fun::WriteAll(c.get(), std::string_view(buf.data(), static_cast<size_t>(n))).ok()) {
        return;
      }
    }
  });
  if (!loop.ok()) {
    std::cerr << "tcp_rr: " << loop.status().message() << "\n";
    return 1;
  }
  std::cout << "listening on " << (*loop)->address() << std::endl;
  fun::Status s = (*loop)->Run();  // until killed
  if (!s.ok()) std::cerr << "tcp_rr: " << s.message() << "\n";
  return s.ok() ? 0 : 1;
}

// target "HOST:PORT", connected. The error names it.
fun::StatusOr<fun::UniqueFd> ConnectTo(const std::string& target) {
  FUN_ASSIGN_OR_RETURN(fun::SocketAddress addr, fun::ParseSocketAddress("tcp:" + target));
  return fun::Connect(addr);
}

// The p-th percentile (0..1) of sorted samples.
double Percentile(const std::vector<double>& sorted, double p) {
  return sorted[static_cast<size_t>(p * static_cast<double>(sorted.size() - 1))];
}

int Ping(const std::string& target, int count, int size) {
  auto c = ConnectTo(target);
  if (!c.ok()) {
    std::cerr << "tcp_rr: " << c.status().message() << "\n";
    return 1;
  }
  std::string out(static_cast<size_t>(size), 'r'), in(static_cast<size_t>(size), '\0');
  std::vector<double> us;
  us.reserve(static_cast<size_t>(count));
  constexpr int kWarmup = 100;
  for (int i = 0; i < kWarmup + count; ++i) {
    auto t0 = Steady::now();
    fun::Status s = fun::WriteAll(c->get(), out);
    if (s.ok()) s = fun::ReadExactly(c->get(), in.data(), in.size());
    if (!s.ok()) {
      std::cerr << "tcp_rr: exchange " << i << ": " << s.message() << "\n";
      return 1;
    }
    if (i >= kWarmup) {
      us.push_back(std::chrono::duration<double, std::micro>(Steady::now() - t0).count());
    }
  }
  std::sort(us.begin(), us.end());
  std::cout
      << fmt::format(
             R"({{"count": {}, "size": {}, "median_us": {:.1f}, "p90_us": {:.1f}, "p99_us": {:.1f}}})",
             count, size, Percentile(us, 0.5), Percentile(us, 0.9), Percentile(us, 0.99))
      << std::endl;
  return 0;
}

int Churn(const std::string& target, int count, int clients) {
  std::atomic<int> next{0}, failed{0};
  std::mutex mu;
  std::vector<double> ms;
  std::string first_error;
  ms.reserve(static_cast<size_t>(count));
  const auto t0 = Steady::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&] {
      while (next.fetch_add(1) < count) {
        const auto start = Steady::now();
        char got = 0;
        fun::Status s;
        if (auto c = ConnectTo(target); !c.ok()) {
          s = c.status();
        } else if (s = fun::WriteAll(c->get(), "c"); s.ok()) {
          s = fun::ReadExactly(c->get(), &got, 1);
        }
        std::lock_guard lock(mu);
        if (!s.ok()) {
          if (failed++ == 0) first_error = s.message();
          continue;
        }
        ms.push_back(std::chrono::duration<double, std::milli>(Steady::now() - start).count());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(Steady::now() - t0).count();
  if (ms.empty()) {
    std::cerr << "tcp_rr: every connection failed: " << first_error << "\n";
    return 1;
  }
  std::sort(ms.begin(), ms.end());
  std::cout << fmt::format(R"({{"count": {}, "clients": {}, "failed": {}, "seconds": {:.2f}, )"
                           R"("per_s": {:.1f}, "median_ms": {:.2f}, "p99_ms": {:.2f}}})",
                           count, clients, failed.load(), secs,
                           static_cast<double>(ms.size()) / secs, Percentile(ms, 0.5),
                           Percentile(ms, 0.99))
            << std::endl;
  if (failed > 0) std::cerr << "tcp_rr: " << failed << " failed, first: " << first_error << "\n";
  return failed > 0 ? 1 : 0;
}

int Stream(const std::string& target, int seconds) {
  auto c = ConnectTo(target);
  if (!c.ok()) {
    std::cerr << "tcp_rr: " << c.status().message() << "\n";
    return 1;
  }
  uint64_t echoed = 0;
  const auto t0 = Steady::now();
  const auto until = t0 + std::chrono::seconds(seconds);
  std::thread reader([&] {
    std::string buf(1 << 16, '\0');
    for (ssize_t n; (n = ::read(c->get(), buf.data(), buf.size())) > 0;) {
      echoed += static_cast<uint64_t>(n);
    }
  });
  const std::string chunk(1 << 16, 's');
  while (Steady::now() < until) {
    if (!fun::WriteAll(c->get(), chunk).ok()) break;
  }
  ::shutdown(c->get(), SHUT_WR);  // the echo server finishes and closes
  reader.join();
  const double secs = std::chrono::duration<double>(Steady::now() - t0).count();
  std::cout << fmt::format(R"({{"seconds": {:.1f}, "mib_per_s": {:.1f}}})", secs,
                           static_cast<double>(echoed) / secs / (1 << 20))
            << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const char* usage =
      "usage: tcp_rr serve --listen tcp:HOST:PORT\n"
      "       tcp_rr ping --connect HOST:PORT [--count N] [--size BYTES]\n"
      "       tcp_rr stream --connect HOST:PORT [--seconds N]\n"
      "       tcp_rr churn --connect HOST:PORT [--count N] [--clients C]\n";
  if (args.empty() ||
      (args[0] != "serve" && args[0] != "ping" && args[0] != "stream" && args[0] != "churn")) {
    std::cerr << usage;
    return 2;
  }
  std::string listen, connect;
  int count = 10000, size = 1, seconds = 5, clients = 8;
  fun::FlagSet flags("tcp_rr " + args[0]);
  flags.String("listen", &listen, "serve: where to listen");
  flags.String("connect", &connect, "ping: HOST:PORT");
  flags.Int("count", &count, "ping: timed exchanges; churn: connections");
  flags.Int("clients", &clients, "churn: connections at once");
  flags.Int("size", &size, "ping: bytes each way per exchange");
  flags.Int("seconds", &seconds, "stream: how long to send");
  auto rest = flags.Parse(std::vector<std::string>(args.begin() + 1, args.end()));
  if (!rest.ok() || !rest->empty() || count < 1 || size < 1 || size > (1 << 20) || seconds < 1 ||
      clients < 1 || clients > 1024) {
    std::cerr << "tcp_rr: " << (rest.ok() ? "bad arguments" : rest.status().message()) << "\n"
              << usage;
    return 2;
  }
  if (args[0] == "serve") {
    if (listen.empty()) {
      std::cerr << usage;
      return 2;
    }
    return Serve(listen);
  }
  if (connect.empty()) {
    std::cerr << usage;
    return 2;
  }
  if (args[0] == "stream") return Stream(connect, seconds);
  if (args[0] == "churn") return Churn(connect, count, clients);
  return Ping(connect, count, size);
}
