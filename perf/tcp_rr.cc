// tcp_rr: TCP request/response latency through whatever sits between a client and an echo
// server (a port forward, socat, haproxy), for perf/port_forward.sh.
//
//   build/perf/tcp_rr serve --listen tcp:127.0.0.1:5201
//   build/perf/tcp_rr ping --connect 127.0.0.1:5201 [--count 10000] [--size 1]
//   -> {"count": 10000, "size": 1, "median_us": 31.4, "p90_us": 35.0, "p99_us": 52.7}
//   build/perf/tcp_rr stream --connect 127.0.0.1:5201 [--seconds 5]
//   -> {"seconds": 5.0, "mib_per_s": 812.3}
//
// stream sends 64 KiB writes for `seconds` on one connection while a second thread reads the
// echo, and reports the echoed bytes per second (each byte crossed the path both ways): the
// throughput test where no iperf3 server can run (fun/echo in a VM).
//
// ping opens one connection, exchanges `size` bytes back and forth `count` times (after 100
// untimed warm-up exchanges) and prints the round-trip percentiles on one line of JSON. The
// echo server answers each connection on its own thread (TCP_NODELAY both ends, as Fun's
// sockets are). A plain timed loop: no pass/fail, nothing but the numbers.
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
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

int Ping(const std::string& target, int count, int size) {
  auto addr = fun::ParseSocketAddress("tcp:" + target);
  if (!addr.ok()) {
    std::cerr << "tcp_rr: " << addr.status().message() << "\n";
    return 2;
  }
  auto c = fun::Connect(*addr);
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
  auto pct = [&](double p) {
    return us[static_cast<size_t>(p * static_cast<double>(us.size() - 1))];
  };
  std::cout
      << fmt::format(
             R"({{"count": {}, "size": {}, "median_us": {:.1f}, "p90_us": {:.1f}, "p99_us": {:.1f}}})",
             count, size, pct(0.5), pct(0.9), pct(0.99))
      << std::endl;
  return 0;
}

int Stream(const std::string& target, int seconds) {
  auto addr = fun::ParseSocketAddress("tcp:" + target);
  if (!addr.ok()) {
    std::cerr << "tcp_rr: " << addr.status().message() << "\n";
    return 2;
  }
  auto c = fun::Connect(*addr);
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
      "       tcp_rr stream --connect HOST:PORT [--seconds N]\n";
  if (args.empty() || (args[0] != "serve" && args[0] != "ping" && args[0] != "stream")) {
    std::cerr << usage;
    return 2;
  }
  std::string listen, connect;
  int count = 10000, size = 1, seconds = 5;
  fun::FlagSet flags("tcp_rr " + args[0]);
  flags.String("listen", &listen, "serve: where to listen");
  flags.String("connect", &connect, "ping: HOST:PORT");
  flags.Int("count", &count, "ping: timed exchanges");
  flags.Int("size", &size, "ping: bytes each way per exchange");
  flags.Int("seconds", &seconds, "stream: how long to send");
  auto rest = flags.Parse(std::vector<std::string>(args.begin() + 1, args.end()));
  if (!rest.ok() || !rest->empty() || count < 1 || size < 1 || size > (1 << 20) || seconds < 1) {
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
  return Ping(connect, count, size);
}
